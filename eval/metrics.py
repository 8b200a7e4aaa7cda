"""Scores of predictions against labels: the one implementation used by training, the model card and reports."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from lichang.schema import STANCES, TOPICS


def stance_metrics(true: list[str], predicted: list[str]) -> dict:
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=list(STANCES), zero_division=0,
    )
    return {
        "accuracy": float(accuracy_score(true, predicted)) if true else 0.0,
        "macro_f1": float(f1_score(true, predicted, labels=list(STANCES), average="macro", zero_division=0)),
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
