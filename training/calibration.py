"""Post-training calibration on the dev split: a stance temperature and per-topic thresholds."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import f1_score

from lichang.schema import TOPICS

THRESHOLD_GRID = np.round(np.arange(0.10, 0.91, 0.05), 2)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising dev negative log-likelihood of softmax(logits / T)."""
    logits_t = torch.tensor(logits, dtype=torch.float64)
    labels_t = torch.tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_t.exp(), labels_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))


def choose_thresholds(probabilities: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Per topic, the grid threshold with the best dev F1 (ties: the one closest to 0.5)."""
    thresholds = {}
    for k, topic in enumerate(TOPICS):
        scored = [
            (f1_score(truth[:, k], probabilities[:, k] >= t, zero_division=0), -abs(t - 0.5), float(t))
            for t in THRESHOLD_GRID
        ]
        thresholds[topic] = max(scored)[2]
    return thresholds
