"""What an analyst could use instead of the model, trained and scored on the same splits.

- majority: the most frequent training stance, no topics
- tfidf_logreg: character n-gram TF-IDF + logistic regression (scikit-learn), one classifier for
  stance and one per topic, trained on the model's own training split
- snownlp: SnowNLP's shopping-review sentiment mapped to stance with two thresholds chosen on dev
"""

from __future__ import annotations

from collections import Counter
from itertools import product

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline

from lichang.eval.metrics import stance_metrics, topic_matrix, topic_metrics
from lichang.schema import STANCES


class MajorityBaseline:
    name = "majority"

    def fit(self, train: list[dict], dev: list[dict]) -> MajorityBaseline:
        self.stance = Counter(r["stance"] for r in train).most_common(1)[0][0]
        return self

    def predict(self, records: list[dict]) -> tuple[list[str], np.ndarray]:
        return [self.stance] * len(records), topic_matrix([[] for _ in records])


class TfidfLogRegBaseline:
    name = "tfidf_logreg"

    def _vectoriser(self) -> TfidfVectorizer:
        return TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2)

    def fit(self, train: list[dict], dev: list[dict]) -> TfidfLogRegBaseline:
        texts = [r["text"] for r in train]
        self.stance_model = make_pipeline(
            self._vectoriser(), LogisticRegression(max_iter=2000, C=4.0, class_weight="balanced"))
        self.stance_model.fit(texts, [r["stance"] for r in train])
        self.topic_model = make_pipeline(
            self._vectoriser(),
            OneVsRestClassifier(LogisticRegression(max_iter=2000, C=4.0, class_weight="balanced")))
        self.topic_model.fit(texts, topic_matrix([r["topics"] for r in train]))
        return self

    def predict(self, records: list[dict]) -> tuple[list[str], np.ndarray]:
        texts = [r["text"] for r in records]
        return list(self.stance_model.predict(texts)), np.asarray(self.topic_model.predict(texts))


class SnowNLPBaseline:
    name = "snownlp"

    @staticmethod
    def _sentiments(records: list[dict]) -> np.ndarray:
        from snownlp import SnowNLP

        return np.array([SnowNLP(r["text"]).sentiments for r in records])

    @staticmethod
    def _map(scores: np.ndarray, low: float, high: float) -> list[str]:
        return ["praise" if s >= high else "critique" if s <= low else "neutral" for s in scores]

    def fit(self, train: list[dict], dev: list[dict]) -> SnowNLPBaseline:
        scores = self._sentiments(dev)
        truth = [r["stance"] for r in dev]
        grid = np.round(np.arange(0.05, 1.0, 0.05), 2)
        best = max(
            ((f1_score(truth, self._map(scores, lo, hi), labels=list(STANCES), average="macro", zero_division=0),
              lo, hi) for lo, hi in product(grid, grid) if lo < hi),
        )
        _, self.low, self.high = best
        return self

    def predict(self, records: list[dict]) -> tuple[list[str], np.ndarray]:
        return self._map(self._sentiments(records), self.low, self.high), topic_matrix([[] for _ in records])


ALL_BASELINES = (MajorityBaseline, TfidfLogRegBaseline, SnowNLPBaseline)


def score_baselines(train: list[dict], dev: list[dict], test: list[dict]) -> dict[str, dict]:
    """Each baseline fitted on train (and dev where it chooses thresholds), scored on test."""
    truth_topics = topic_matrix([r["topics"] for r in test])
    results = {}
    for baseline_class in ALL_BASELINES:
        baseline = baseline_class().fit(train, dev)
        stances, topics = baseline.predict(test)
        results[baseline.name] = {
            "stance": stance_metrics([r["stance"] for r in test], stances),
            "topics": topic_metrics(truth_topics, topics),
            "predicted_stances": stances,
        }
    return results
