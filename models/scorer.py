"""Scoring paragraphs with a trained model: batching, long-paragraph windows, calibration.

Paragraphs are sorted by length before batching (far less padding than file
order), batches are bounded by a token budget, and a paragraph longer than the
model's window is scored as overlapping windows whose probabilities are
averaged, weighted by each window's length, so nothing is silently cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lichang.models.classifier import StanceTopicModel
from lichang.schema import STANCES, TOPICS


@dataclass(frozen=True)
class ParagraphInput:
    text: str
    brand: str
    aliases: tuple[str, ...] = ()


@dataclass
class ParagraphScore:
    stance: str
    stance_scores: dict[str, float]  # calibrated probabilities
    topics: list[str]  # topics over their thresholds
    topic_scores: dict[str, float]
    windows: int  # >1 when the paragraph was longer than the model window
    stance_logits: list[float]  # raw (uncalibrated) logits, averaged over windows


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


class Scorer:
    def __init__(self, model: StanceTopicModel, max_batch_tokens: int = 4096, max_batch_size: int = 64) -> None:
        self.model = model.eval()
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def count_tokens(self, inputs: Sequence[ParagraphInput]) -> list[int]:
        """Token count of each paragraph's full (unwindowed) input, for batching decisions."""
        encoded = self.model.tokenizer([f"passage: {p.text}" for p in inputs], add_special_tokens=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped into length-sorted batches under the token and size budgets."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order:
            longest = max([lengths[i] for i in current] + [lengths[index]])
            if current and (longest * (len(current) + 1) > self.max_batch_tokens
                            or len(current) >= self.max_batch_size):
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches

    @torch.no_grad()
    def logits(self, inputs: Sequence[ParagraphInput]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw stance and topic logits per paragraph (windows averaged), and window counts."""
        if not inputs:
            return np.zeros((0, len(STANCES))), np.zeros((0, len(TOPICS))), np.zeros(0, dtype=int)
        encoded = self.model.encode(
            [p.text for p in inputs], [p.brand for p in inputs], [list(p.aliases) for p in inputs], overflow=True,
        )
        owners = encoded["overflow_to_sample_mapping"]
        ids = encoded["input_ids"]
        window_lengths = [len(x) for x in ids]
        stance_sum = np.zeros((len(inputs), len(STANCES)))
        topic_sum = np.zeros((len(inputs), len(TOPICS)))
        weight = np.zeros(len(inputs))
        windows = np.zeros(len(inputs), dtype=int)
        for batch in self._batches(window_lengths):
            tensors = self.model.pad_batch([ids[i] for i in batch], [encoded["target_mask"][i] for i in batch])
            stance, topic = self.model(**{k: v.to(self.device) for k, v in tensors.items()})
            stance, topic = stance.float().cpu().numpy(), topic.float().cpu().numpy()
            for row, i in enumerate(batch):
                owner = owners[i]
                stance_sum[owner] += window_lengths[i] * stance[row]
                topic_sum[owner] += window_lengths[i] * topic[row]
                weight[owner] += window_lengths[i]
                windows[owner] += 1
        return stance_sum / weight[:, None], topic_sum / weight[:, None], windows

    def score(self, inputs: Sequence[ParagraphInput]) -> list[ParagraphScore]:
        stance_logits, topic_logits, windows = self.logits(inputs)
        calibration = self.model.calibration
        stance_probs = softmax(stance_logits / calibration.temperature)
        topic_probs = 1.0 / (1.0 + np.exp(-topic_logits))
        results = []
        for row in range(len(inputs)):
            stance_scores = {s: float(stance_probs[row, k]) for k, s in enumerate(STANCES)}
            topic_scores = {t: float(topic_probs[row, k]) for k, t in enumerate(TOPICS)}
            results.append(ParagraphScore(
                stance=STANCES[int(stance_probs[row].argmax())],
                stance_scores=stance_scores,
                topics=[t for t in TOPICS if topic_scores[t] >= calibration.topic_thresholds[t]],
                topic_scores=topic_scores,
                windows=int(windows[row]),
                stance_logits=[float(x) for x in stance_logits[row]],
            ))
        return results


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
