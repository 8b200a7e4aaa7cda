"""Scores of predictions against labels: the one implementation used by training, the model card and reports."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from lichang.schema import STANCES, TOPICS

CALIBRATION_BINS = 10


def stance_macro_f1(true: list[str], predicted: list[str]) -> float:
    """Macro-F1 over all three stances (a stance absent from both lists counts as 0)."""
    return float(f1_score(true, predicted, labels=list(STANCES), average="macro", zero_division=0))


def stance_metrics(true: list[str], predicted: list[str]) -> dict:
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=list(STANCES), zero_division=0,
    )
    return {
        "accuracy": float(accuracy_score(true, predicted)) if true else 0.0,
        "macro_f1": stance_macro_f1(true, predicted),
        "per_class": {
            label: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                    "support": int(support[k])}
            for k, label in enumerate(STANCES)
        },
    }


def topic_matrix(topic_lists: list[list[str]]) -> np.ndarray:
    matrix = np.zeros((len(topic_lists), len(TOPICS)), dtype=int)
    for row, topics in enumerate(topic_lists):
        for topic in topics:
            matrix[row, TOPICS.index(topic)] = 1
    return matrix


def topic_metrics(true: np.ndarray, predicted: np.ndarray) -> dict:
    """`true` and `predicted` are 0/1 matrices, one column per topic in schema order."""
    precision, recall, f1, support = precision_recall_fscore_support(true, predicted, zero_division=0)
    return {
        "micro_f1": float(f1_score(true, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(true, predicted, average="macro", zero_division=0)),
        "per_label": {
            topic: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                    "support": int(support[k])}
            for k, topic in enumerate(TOPICS)
        },
    }


def reliability_bins(probabilities: np.ndarray, true: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Max-probability confidence against accuracy in equal-width bins over [0, 1] (the last bin includes 1).

    `probabilities` is (n, classes); `true` holds class indices. Empty bins are kept, with count 0.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(true)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        rows.append({
            "low": b / bins, "high": (b + 1) / bins, "count": count,
            "confidence": float(confidence[inside].mean()) if count else 0.0,
            "accuracy": float(correct[inside].mean()) if count else 0.0,
        })
    return rows


def expected_calibration_error(probabilities: np.ndarray, true: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over the reliability bins."""
    total = len(probabilities)
    if not total:
        return 0.0
    return float(sum(row["count"] / total * abs(row["accuracy"] - row["confidence"])
                     for row in reliability_bins(probabilities, true, bins)))
