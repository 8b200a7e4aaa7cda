"""The evaluation report: every figure of `lichang eval`, computed from predictions, and written as HTML/Markdown/JSON.

Nothing here runs a model. A report is computed from labeled records and a
system's predictions given as plain arrays (`Predictions`), so a test can feed
hand-made predictions and check each number; `lichang.eval.evaluate` produces
the predictions from a model folder and passes them in.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve

from lichang.analysis import ParagraphResult, summarise
from lichang.data import primary_id
from lichang.eval import plots
from lichang.eval.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_intervals
from lichang.eval.metrics import (
    CALIBRATION_BINS,
    expected_calibration_error,
    reliability_bins,
    stance_macro_f1,
    stance_metrics,
    topic_matrix,
    topic_metrics,
)
from lichang.paragraphs import is_boilerplate
from lichang.schema import STANCE_INDEX, STANCES, TOPICS

# Paragraph length buckets in characters: (label, lowest, highest or None).
LENGTH_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("1-20", 1, 20), ("21-50", 21, 50), ("51-100", 51, 100), ("101-200", 101, 200), ("201+", 201, None),
)
UNKNOWN_GENRE = "(unknown)"
FEW_ARTICLES = 10  # below this, the report warns that article-bootstrap intervals say little
FIGURES = ("confusion_matrix", "precision_recall", "reliability", "net_stance")


@dataclass
class Predictions:
    """One system's outputs for the evaluated records, row k for record k (labels in schema order)."""

    stance_probs: np.ndarray  # (n, 3) calibrated probabilities; the predicted stance is their argmax
    topic_probs: np.ndarray  # (n, 4)
    topic_thresholds: dict[str, float]
    stance_probs_uncalibrated: np.ndarray | None = None  # softmax of the raw logits (temperature 1)
    temperature: float | None = None

    def __post_init__(self) -> None:
        self.stance_probs = np.asarray(self.stance_probs, dtype=float)
        self.topic_probs = np.asarray(self.topic_probs, dtype=float)
        if self.stance_probs_uncalibrated is not None:
            self.stance_probs_uncalibrated = np.asarray(self.stance_probs_uncalibrated, dtype=float)

    @property
    def stances(self) -> list[str]:
        return [STANCES[k] for k in self.stance_probs.argmax(axis=1)]

    def topic_matrix(self) -> np.ndarray:
        thresholds = np.array([self.topic_thresholds[t] for t in TOPICS])
        return (self.topic_probs >= thresholds).astype(int)


@dataclass
class EvalSettings:
    resamples: int = DEFAULT_RESAMPLES  # 0: no confidence intervals
    seed: int = DEFAULT_SEED
    level: float = DEFAULT_LEVEL
    top_errors: int = 20
    calibration_bins: int = CALIBRATION_BINS
    show_progress: bool = False


# Baselines arrive as what their `predict` returns: stance labels and a 0/1 topic matrix.
BaselineOutput = tuple[list[str], np.ndarray]


# ------------------------------------------------------------------ metrics
def compute_metrics(records: Sequence[dict], predictions: Predictions,
                    baselines: dict[str, BaselineOutput] | None = None,
                    settings: EvalSettings | None = None) -> dict[str, Any]:
    """Every number of the report (metrics.json without model, data and cost provenance)."""
    settings = settings or EvalSettings()
    if len(records) != len(predictions.stance_probs) or len(records) != len(predictions.topic_probs):
        raise ValueError(f"{len(records)} records but {len(predictions.stance_probs)} stance and "
                         f"{len(predictions.topic_probs)} topic predictions")
    if not records:
        raise ValueError("nothing to evaluate: no records")
    true = [r["stance"] for r in records]
    predicted = predictions.stances
    true_topics = topic_matrix([r["topics"] for r in records])
    predicted_topics = predictions.topic_matrix()
    baselines = baselines or {}

    stance = _stance_section(true, predicted)
    topics = _topic_section(true_topics, predicted_topics, predictions)
    metrics: dict[str, Any] = {
        "n_paragraphs": len(records),
        "n_articles": len({r["article_id"] for r in records}),
        "n_brands": len({r["brand"] for r in records}),
        "stance": stance,
        "topics": topics,
        "calibration": _calibration_section(true, predictions, settings.calibration_bins),
        "breakdowns": _breakdowns(records, predictions),
        "errors": _errors(records, predictions, settings.top_errors),
        "baselines": {name: _baseline_section(true, true_topics, output, stance, topics)
                      for name, output in baselines.items()},
        "bootstrap": {"unit": "article", "resamples": settings.resamples, "seed": settings.seed,
                      "level": settings.level},
    }
    if settings.resamples > 0:
        statistic = _bootstrap_statistic(true, predicted, true_topics, predicted_topics, baselines)
        intervals = bootstrap_intervals([r["article_id"] for r in records], statistic, settings.resamples,
                                        settings.seed, settings.level, settings.show_progress)
        _attach_intervals(metrics, intervals)
        for section in metrics["baselines"].values():
            difference = section["model_minus_baseline"]
            low, high = difference.get("stance_macro_f1_ci", (0.0, 0.0))
            difference["ci_excludes_zero"] = bool(low > 0 or high < 0)
    return metrics


def _stance_section(true: list[str], predicted: list[str]) -> dict:
    section = stance_metrics(true, predicted)
    section["true_counts"] = {s: true.count(s) for s in STANCES}
    section["predicted_counts"] = {s: predicted.count(s) for s in STANCES}
    section["confusion_matrix"] = {
        "labels": list(STANCES), "rows": "true", "columns": "predicted",
        "matrix": confusion_matrix(true, predicted, labels=list(STANCES)).tolist(),
    }
    return section


def _topic_section(true: np.ndarray, predicted: np.ndarray, predictions: Predictions) -> dict:
    section = topic_metrics(true, predicted)
    section["thresholds"] = {t: float(predictions.topic_thresholds[t]) for t in TOPICS}
    for k, topic in enumerate(TOPICS):
        row = section["per_label"][topic]
        row["threshold"] = section["thresholds"][topic]
        row["predicted"] = int(predicted[:, k].sum())
        # average precision is undefined for a topic that never occurs in the labels
        row["average_precision"] = (float(average_precision_score(true[:, k], predictions.topic_probs[:, k]))
                                    if true[:, k].any() else None)
    return section


def _calibration_section(true: list[str], predictions: Predictions, bins: int) -> dict:
    labels = np.array([STANCE_INDEX[s] for s in true])
    section: dict[str, Any] = {
        "confidence": "max stance probability", "bins": bins, "temperature": predictions.temperature,
        "ece_before": None,
        "ece_after": expected_calibration_error(predictions.stance_probs, labels, bins),
        "reliability": {"before": None, "after": reliability_bins(predictions.stance_probs, labels, bins)},
    }
    if predictions.stance_probs_uncalibrated is not None:
        section["ece_before"] = expected_calibration_error(predictions.stance_probs_uncalibrated, labels, bins)
        section["reliability"]["before"] = reliability_bins(predictions.stance_probs_uncalibrated, labels, bins)
    return section


def _baseline_section(true: list[str], true_topics: np.ndarray, output: BaselineOutput, model_stance: dict,
                      model_topics: dict) -> dict:
    stances, topics = output
    stance, topic = stance_metrics(true, list(stances)), topic_metrics(true_topics, np.asarray(topics))
    return {
        "stance": stance,
        "topics": topic,
        "model_minus_baseline": {
            "stance_macro_f1": model_stance["macro_f1"] - stance["macro_f1"],
            "stance_accuracy": model_stance["accuracy"] - stance["accuracy"],
            "topics_micro_f1": model_topics["micro_f1"] - topic["micro_f1"],
        },
    }


def _bootstrap_statistic(true: list[str], predicted: list[str], true_topics: np.ndarray,
                         predicted_topics: np.ndarray, baselines: dict[str, BaselineOutput]):
    """Named values of one resample; keys are metrics.json paths, so intervals attach where they belong."""

    def statistic(indices: np.ndarray) -> dict[str, float]:
        sample_true, sample_predicted = [true[i] for i in indices], [predicted[i] for i in indices]
        stance = stance_metrics(sample_true, sample_predicted)
        values = {"stance.accuracy": stance["accuracy"], "stance.macro_f1": stance["macro_f1"]}
        for label, row in stance["per_class"].items():
            # undefined (NaN, left out of the interval) rather than 0 when the resample lacks the class
            labeled, chosen = row["support"] > 0, label in sample_predicted
            values[f"stance.per_class.{label}.precision"] = row["precision"] if chosen else np.nan
            values[f"stance.per_class.{label}.recall"] = row["recall"] if labeled else np.nan
            values[f"stance.per_class.{label}.f1"] = row["f1"] if labeled or chosen else np.nan
        topics = topic_metrics(true_topics[indices], predicted_topics[indices])
        values["topics.micro_f1"], values["topics.macro_f1"] = topics["micro_f1"], topics["macro_f1"]
        for name, (stances, _) in baselines.items():
            values[f"baselines.{name}.model_minus_baseline.stance_macro_f1"] = (
                stance["macro_f1"] - stance_macro_f1(sample_true, [stances[i] for i in indices]))
        return values

    return statistic


def _attach_intervals(metrics: dict, intervals: dict[str, tuple[float, float]]) -> None:
    """`a.b.c` → metrics['a']['b']['c_ci'] = [low, high]."""
    for path, (low, high) in intervals.items():
        *parents, name = path.split(".")
        node = metrics
        for key in parents:
            node = node[key]
        node[f"{name}_ci"] = [low, high]


def _group_scores(records: Sequence[dict], stances: list[str], topics_predicted: np.ndarray,
                  indices: list[int]) -> dict:
    stance = stance_metrics([records[i]["stance"] for i in indices], [stances[i] for i in indices])
    topics = topic_metrics(topic_matrix([records[i]["topics"] for i in indices]), topics_predicted[indices])
    return {"n_paragraphs": len(indices), "n_articles": len({records[i]["article_id"] for i in indices}),
            "stance_accuracy": stance["accuracy"], "stance_macro_f1": stance["macro_f1"],
            "topics_micro_f1": topics["micro_f1"], "topics_macro_f1": topics["macro_f1"]}


def _grouped(records: Sequence[dict], predictions: Predictions, key_of) -> dict[str, dict]:
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(key_of(record), []).append(index)
    stances, topics = predictions.stances, predictions.topic_matrix()
    return {key: _group_scores(records, stances, topics, indices) for key, indices in groups.items()}


def length_bucket(text: str) -> str:
    """The LENGTH_BUCKETS label of a paragraph's character count."""
    length = len(text)
    for label, _, highest in LENGTH_BUCKETS:
        if highest is None or length <= highest:
            return label
    raise AssertionError("the last bucket is open-ended")


def _breakdowns(records: Sequence[dict], predictions: Predictions) -> dict:
    by_brand = _grouped(records, predictions, lambda r: r["brand"])
    has_genre = any(r.get("genre") for r in records)
    by_genre = _grouped(records, predictions, lambda r: r.get("genre") or UNKNOWN_GENRE) if has_genre else {}
    by_length = _grouped(records, predictions, lambda r: length_bucket(r["text"]))
    order = [label for label, _, _ in LENGTH_BUCKETS]
    articles = article_breakdown(records, predictions)
    errors = np.array([a["net_stance_error"] for a in articles])
    true_net = np.array([a["true"]["net_stance"] for a in articles])
    predicted_net = np.array([a["predicted"]["net_stance"] for a in articles])
    correlation = None
    if len(articles) > 1 and true_net.std() > 0 and predicted_net.std() > 0:
        correlation = float(np.corrcoef(true_net, predicted_net)[0, 1])
    return {
        "by_brand": dict(sorted(by_brand.items(), key=lambda kv: -kv[1]["n_paragraphs"])),
        "by_genre": dict(sorted(by_genre.items(), key=lambda kv: -kv[1]["n_paragraphs"])),
        "by_length": {label: by_length[label] for label in order if label in by_length},
        "by_article": articles,
        "article_net_stance_mae": float(np.abs(errors).mean()),
        "article_net_stance_correlation": correlation,
        "two_brand_pairs": two_brand_pairs(records, predictions.stances),
    }


def two_brand_pairs(records: Sequence[dict], predicted: list[str]) -> dict:
    """How well the model reads the target where it matters most: a paragraph labeled for two brands
    (`<id>` and `<id>-t2`) with different stances. Both right means it told the brands apart."""
    index = {r["id"]: k for k, r in enumerate(records)}
    pairs = [(index[base], k) for k, r in enumerate(records) if (base := primary_id(r["id"])) in index]
    opposed = [(a, b) for a, b in pairs if records[a]["stance"] != records[b]["stance"]]
    both_right = sum(predicted[a] == records[a]["stance"] and predicted[b] == records[b]["stance"]
                     for a, b in opposed)
    told_apart = sum(predicted[a] != predicted[b] for a, b in opposed)
    return {"pairs": len(pairs), "pairs_with_different_stances": len(opposed),
            "both_right": both_right, "predicted_different": told_apart,
            "both_right_share": both_right / len(opposed) if opposed else None}


def article_breakdown(records: Sequence[dict], predictions: Predictions) -> list[dict]:
    """Per (article, brand): stance counts and shares, labeled against predicted, as the service summarises them.

    Shares and net stance come from `lichang.analysis.summarise`: weighted by paragraph length,
    boilerplate excluded, so they are the numbers an analyst sees in the service's breakdown.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault((record["article_id"], record["brand"]), []).append(index)
    stances = predictions.stances
    predicted_topics = predictions.topic_matrix()
    rows = []
    for (article, brand), indices in groups.items():
        def results(labeled: bool, indices: list[int] = indices) -> list[ParagraphResult]:
            out = []
            for position, i in enumerate(indices):
                record = records[i]
                if labeled:
                    stance, topics = record["stance"], list(record["topics"])
                    scores = {s: float(s == stance) for s in STANCES}
                else:
                    stance = stances[i]
                    topics = [t for k, t in enumerate(TOPICS) if predicted_topics[i, k]]
                    scores = {s: float(predictions.stance_probs[i, k]) for k, s in enumerate(STANCES)}
                out.append(ParagraphResult(index=position, text=record["text"],
                                           boilerplate=is_boilerplate(record["text"]), stance=stance,
                                           stance_scores=scores, topics=topics, topic_scores={}))
            return out

        labeled, predicted = summarise(results(True)), summarise(results(False))
        correct = sum(records[i]["stance"] == stances[i] for i in indices)
        rows.append({
            "article_id": article, "brand": brand, "n_paragraphs": len(indices),
            "scored_paragraphs": labeled.scored_paragraphs, "stance_accuracy": correct / len(indices),
            "true": {"counts": labeled.counts, "shares": labeled.shares, "net_stance": labeled.net_stance},
            "predicted": {"counts": predicted.counts, "shares": predicted.shares,
                          "net_stance": predicted.net_stance},
            "net_stance_error": round(predicted.net_stance - labeled.net_stance, 4),
        })
    return rows


def _errors(records: Sequence[dict], predictions: Predictions, top: int) -> dict:
    """Stance mistakes, most confident first (ties keep record order)."""
    stances = predictions.stances
    predicted_topics = predictions.topic_matrix()
    confidence = predictions.stance_probs.max(axis=1)
    wrong = [i for i, record in enumerate(records) if record["stance"] != stances[i]]
    wrong.sort(key=lambda i: -confidence[i])
    rows = [{
        "id": records[i]["id"], "article_id": records[i]["article_id"], "brand": records[i]["brand"],
        "text": records[i]["text"], "true": records[i]["stance"], "predicted": stances[i],
        "confidence": float(confidence[i]),
        "true_probability": float(predictions.stance_probs[i, STANCE_INDEX[records[i]["stance"]]]),
        "true_topics": list(records[i]["topics"]),
        "predicted_topics": [t for k, t in enumerate(TOPICS) if predicted_topics[i, k]],
    } for i in wrong[:top]]
    return {"stance_mistakes": len(wrong), "most_confident": rows}


# ------------------------------------------------------------------ figures
def draw_figures(metrics: dict, records: Sequence[dict], predictions: Predictions) -> dict[str, bytes]:
    """PNG bytes of each figure, by name (FIGURES)."""
    confusion = metrics["stance"]["confusion_matrix"]
    figures = {"confusion_matrix": plots.confusion_matrix_png(confusion["matrix"], confusion["labels"])}
    true_topics = topic_matrix([r["topics"] for r in records])
    curves = {}
    for k, topic in enumerate(TOPICS):
        row = metrics["topics"]["per_label"][topic]
        if row["average_precision"] is None:
            continue
        precision, recall, _ = precision_recall_curve(true_topics[:, k], predictions.topic_probs[:, k])
        curves[topic] = {"precision": precision, "recall": recall, "average_precision": row["average_precision"],
                         "point_precision": row["precision"], "point_recall": row["recall"]}
    if curves:
        figures["precision_recall"] = plots.precision_recall_png(curves)
    calibration = metrics["calibration"]
    before = calibration["reliability"]["before"] or calibration["reliability"]["after"]
    figures["reliability"] = plots.reliability_png(
        before, calibration["reliability"]["after"],
        calibration["ece_before"] if calibration["ece_before"] is not None else calibration["ece_after"],
        calibration["ece_after"])
    articles = metrics["breakdowns"]["by_article"]
    figures["net_stance"] = plots.net_stance_png([a["true"]["net_stance"] for a in articles],
                                                 [a["predicted"]["net_stance"] for a in articles])
    return figures


# ---------------------------------------------------------------- rendering
@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    title: str = ""


@dataclass
class Section:
    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_ci(node: dict, key: str) -> str:
    interval = node.get(f"{key}_ci")
    text = _number(node[key])
    return f"{text} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else text


def _share_cells(summary: dict) -> list[str]:
    return [f"{summary['counts'][s]} ({summary['shares'][s]:.0%})" for s in STANCES]


def report_sections(metrics: dict) -> list[Section]:
    """The report's content, shared by the HTML and Markdown renderings."""
    stance, topics, calibration = metrics["stance"], metrics["topics"], metrics["calibration"]
    breakdowns, baselines = metrics["breakdowns"], metrics["baselines"]
    level = f"{metrics['bootstrap']['level']:.0%}"
    sections: list[Section] = []

    model, data, cost = metrics.get("model", {}), metrics.get("data", {}), metrics.get("cost", {})
    summary_rows = [
        ["paragraphs / articles / brands", f"{metrics['n_paragraphs']} / {metrics['n_articles']} / "
                                           f"{metrics['n_brands']}"],
        ["stance accuracy", _with_ci(stance, "accuracy")],
        ["stance macro-F1", _with_ci(stance, "macro_f1")],
        ["topic micro-F1", _with_ci(topics, "micro_f1")],
        ["topic macro-F1", _with_ci(topics, "macro_f1")],
        ["stance ECE before → after temperature",
         f"{_number(calibration['ece_before'])} → {_number(calibration['ece_after'])}"],
    ]
    for name, section in baselines.items():
        summary_rows.append([f"macro-F1 gain over {name}", _with_ci(section["model_minus_baseline"],
                                                                   "stance_macro_f1")])
    if cost.get("paragraphs_per_second") is not None:
        summary_rows.append(["paragraphs per second", _number(cost["paragraphs_per_second"], 1)])
    notes = []
    if model:
        notes.append(f"Model: {model.get('name')} {model.get('version')} from {model.get('dir')}.")
    if data:
        brand = f", restricted to brand {data['brand']}" if data.get("brand") else ""
        notes.append(f"Data: {', '.join(data.get('files', []))}{brand}.")
    if data.get("overlap_with_train"):
        notes.append(f"Warning: {data['overlap_with_train']} evaluated paragraph(s) also appear (same brand and "
                     "text) in the model's training split; scores on them are not held-out.")
    if metrics["bootstrap"]["resamples"]:
        notes.append(f"Intervals in brackets are {level} bootstrap intervals over {metrics['bootstrap']['resamples']}"
                     f" resamples of whole articles (seed {metrics['bootstrap']['seed']}).")
        if metrics["n_articles"] < FEW_ARTICLES:
            notes.append(f"Only {metrics['n_articles']} article(s): intervals from so few articles are not "
                         "meaningful.")
    sections.append(Section("Summary", notes, [Table(["measure", "value"], summary_rows)]))

    per_class = [[s, _with_ci(stance["per_class"][s], "precision"), _with_ci(stance["per_class"][s], "recall"),
                  _with_ci(stance["per_class"][s], "f1"), stance["per_class"][s]["support"],
                  stance["predicted_counts"][s]] for s in STANCES]
    matrix = stance["confusion_matrix"]
    sections.append(Section(
        "Stance",
        [f"Accuracy {_with_ci(stance, 'accuracy')}; macro-F1 {_with_ci(stance, 'macro_f1')}."],
        [Table(["stance", "precision", "recall", "F1", "labeled", "predicted"], per_class, "Per class"),
         Table(["true ↓ predicted →", *matrix["labels"]],
               [[label, *row] for label, row in zip(matrix["labels"], matrix["matrix"], strict=True)],
               "Confusion matrix")],
        ["confusion_matrix"]))

    topic_rows = [[t, _number(r["precision"]), _number(r["recall"]), _number(r["f1"]), r["support"], r["predicted"],
                   _number(r["average_precision"]), _number(r["threshold"], 2)]
                  for t, r in topics["per_label"].items()]
    sections.append(Section(
        "Topics",
        [f"At the model's thresholds: micro-F1 {_with_ci(topics, 'micro_f1')}, "
         f"macro-F1 {_with_ci(topics, 'macro_f1')}. AP is the area under the precision-recall curve."],
        [Table(["topic", "precision", "recall", "F1", "labeled", "predicted", "AP", "threshold"], topic_rows)],
        ["precision_recall"]))

    bins = [[f"{b['low']:.1f}-{b['high']:.1f}", b["count"], _number(b["confidence"]), _number(b["accuracy"])]
            for b in calibration["reliability"]["after"] if b["count"]]
    sections.append(Section(
        "Calibration",
        [f"Expected calibration error of the stance (max-probability confidence, {calibration['bins']} equal-width "
         f"bins): {_number(calibration['ece_before'])} with raw softmax (temperature 1), "
         f"{_number(calibration['ece_after'])} with the model's temperature {_number(calibration['temperature'])}."],
        [Table(["confidence bin", "paragraphs", "mean confidence", "accuracy"], bins, "Bins after temperature")],
        ["reliability"]))

    if baselines:
        rows = [["model", _number(stance["accuracy"]), _number(stance["macro_f1"]), _number(topics["micro_f1"]),
                 "", ""]]
        for name, section in baselines.items():
            difference = section["model_minus_baseline"]
            excludes = difference.get("ci_excludes_zero")
            rows.append([name, _number(section["stance"]["accuracy"]), _number(section["stance"]["macro_f1"]),
                         _number(section["topics"]["micro_f1"]), _with_ci(difference, "stance_macro_f1"),
                         "–" if excludes is None else ("yes" if excludes else "no")])
        setup = metrics.get("baseline_setup", {})
        notes = ["Baselines are scored on the same paragraphs. The gain is model macro-F1 minus baseline macro-F1, "
                 f"with a paired {level} article bootstrap interval; 'excludes 0': the whole interval lies above "
                 "(or below) 0, so the difference is unlikely to be chance."]
        if setup:
            notes.append(f"Trained on {', '.join(setup.get('train_files', []))}; SnowNLP thresholds chosen on "
                         f"{', '.join(setup.get('dev_files', []))}.")
        sections.append(Section("Baselines", notes, [Table(
            ["system", "stance accuracy", "stance macro-F1", "topic micro-F1", "model gain (macro-F1)",
             "excludes 0"], rows)]))

    def group_table(title: str, groups: dict[str, dict], key: str) -> Table:
        return Table([key, "paragraphs", "articles", "stance accuracy", "stance macro-F1", "topic micro-F1"],
                     [[name, g["n_paragraphs"], g["n_articles"], _number(g["stance_accuracy"]),
                       _number(g["stance_macro_f1"]), _number(g["topics_micro_f1"])] for name, g in groups.items()],
                     title)

    tables = [group_table("By brand", breakdowns["by_brand"], "brand")]
    if breakdowns["by_genre"]:
        tables.append(group_table("By genre", breakdowns["by_genre"], "genre"))
    tables.append(group_table("By paragraph length (characters)", breakdowns["by_length"], "length"))
    article_rows = [[a["article_id"], a["brand"], a["n_paragraphs"], _number(a["stance_accuracy"]),
                     *_share_cells(a["true"]), *_share_cells(a["predicted"]),
                     f"{a['true']['net_stance']:+.2f}", f"{a['predicted']['net_stance']:+.2f}"]
                    for a in breakdowns["by_article"]]
    tables.append(Table(["article", "brand", "paragraphs", "accuracy",
                         *(f"labeled {s}" for s in STANCES), *(f"predicted {s}" for s in STANCES),
                         "labeled net", "predicted net"], article_rows, "By article: labeled against predicted"))
    notes = ["Article counts and shares are those of the service's article summary: boilerplate lines are left out "
             "and shares are weighted by paragraph length; net stance = praise share − critique share.",
             f"Mean absolute error of article net stance: {_number(breakdowns['article_net_stance_mae'])}; "
             f"correlation labeled vs predicted: {_number(breakdowns['article_net_stance_correlation'])}."]
    if not breakdowns["by_genre"]:
        notes.append("Genre is not recorded in this data, so there is no genre breakdown.")
    pairs = breakdowns["two_brand_pairs"]
    if pairs["pairs_with_different_stances"]:
        notes.append("Paragraphs labeled for two brands with different stances: "
                     f"{pairs['pairs_with_different_stances']} (of {pairs['pairs']} two-brand paragraphs). "
                     "The model gets both stances right in "
                     f"{pairs['both_right']} ({_number(pairs['both_right_share'], 2)}) and gives the two brands "
                     f"different stances in {pairs['predicted_different']}.")
    sections.append(Section("Breakdowns", notes, tables, ["net_stance"]))

    errors = metrics["errors"]
    sections.append(Section(
        "Most confident stance mistakes",
        [f"{errors['stance_mistakes']} of {metrics['n_paragraphs']} paragraphs have a wrong stance; "
         f"the {len(errors['most_confident'])} the model was surest of:"],
        [Table(["id", "brand", "true", "predicted", "confidence", "text"],
               [[e["id"], e["brand"], e["true"], e["predicted"], _number(e["confidence"]), e["text"]]
                for e in errors["most_confident"]])]))

    if cost:
        def mib(value: int | None) -> str:
            if value is None:
                return "–"
            return f"{value / 2**20:.1f} MiB" if value >= 2**20 else f"{value / 2**10:.1f} KiB"

        rows = [["device", f"{cost.get('device')} ({cost.get('threads')} threads)"],
                ["scoring time", f"{_number(cost.get('scoring_seconds'), 2)} s for {metrics['n_paragraphs']} "
                                 "paragraphs"],
                ["paragraphs per second", _number(cost.get("paragraphs_per_second"), 1)],
                ["model load time", f"{_number(cost.get('load_seconds'), 2)} s"],
                ["model folder on disk", mib(cost.get("model_dir_bytes"))],
                ["base encoder on disk", mib(cost.get("base_encoder_bytes"))],
                ["parameters + buffers in memory", mib(cost.get("memory_bytes"))],
                ["resident memory increase after loading", mib(cost.get("rss_increase_load_bytes"))],
                ["resident memory increase after scoring", mib(cost.get("rss_increase_scoring_bytes"))]]
        notes = ["Measured on the machine that ran this evaluation. The model folder holds only the fine-tuned "
                 "layers and heads; the frozen encoder is rebuilt from the base encoder when the model loads. "
                 "Resident memory also counts the tokenizer and the libraries loaded on first use."]
        sections.append(Section("Cost", notes,
                                [Table(["measure", "value"], rows)]))
    return sections


def _markdown_cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(metrics: dict, figure_paths: dict[str, str] | None = None) -> str:
    """The report as Markdown; figures are linked from `figure_paths` (name → relative path)."""
    figure_paths = figure_paths or {}
    lines = ["# lichang evaluation report", ""]
    for section in report_sections(metrics):
        lines += [f"## {section.title}", ""]
        for note in section.notes:
            lines += [note, ""]
        for table in section.tables:
            if table.title:
                lines += [f"**{table.title}**", ""]
            lines.append("| " + " | ".join(_markdown_cell(c) for c in table.columns) + " |")
            lines.append("|" + "|".join(" --- " for _ in table.columns) + "|")
            lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in table.rows]
            lines.append("")
        lines += [f"![{name}]({figure_paths[name]})\n" for name in section.figures if name in figure_paths]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", "Noto Sans CJK SC", "PingFang SC", sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.45; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; margin: 0.4em 1em 1em 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
"""


def render_html(metrics: dict, figures: dict[str, bytes]) -> str:
    """The report as one self-contained HTML page (figures inlined as base64 PNG, no external links)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>lichang evaluation report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>lichang evaluation report</h1>"]
    for section in report_sections(metrics):
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(note)}</p>" for note in section.notes]
        for table in section.tables:
            if table.title:
                parts.append(f"<h3>{html.escape(table.title)}</h3>")
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
                         + "</tr></thead><tbody>")
            for row in table.rows:
                cells = "".join(
                    f'<td class="num">{html.escape(str(c))}</td>' if isinstance(c, int | float) else
                    f"<td>{html.escape(str(c))}</td>" for c in row)
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</tbody></table>")
        for name in section.figures:
            if name in figures:
                encoded = base64.b64encode(figures[name]).decode("ascii")
                parts.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{encoded}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(out_dir: str | Path, metrics: dict, figures: dict[str, bytes]) -> dict[str, Path]:
    """report.html, report.md (+ its figures under plots/) and metrics.json in `out_dir`."""
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    figure_paths = {}
    for name, png in figures.items():
        (out / "plots" / f"{name}.png").write_bytes(png)
        figure_paths[name] = f"plots/{name}.png"
    written = {"html": out / "report.html", "markdown": out / "report.md", "metrics": out / "metrics.json"}
    written["html"].write_text(render_html(metrics, figures), encoding="utf-8")
    written["markdown"].write_text(render_markdown(metrics, figure_paths), encoding="utf-8")
    written["metrics"].write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return written
