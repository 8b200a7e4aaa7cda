"""Agreement between two labelers on the same rows.

A second labeler's pass over rows that already carry labels shows how consistent
the labels are, and so roughly how high any model can score against them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sklearn.metrics import cohen_kappa_score, confusion_matrix

from lichang.eval.metrics import stance_metrics, topic_matrix, topic_metrics
from lichang.schema import STANCES, TOPICS


class AgreementError(ValueError):
    """The two label sets do not cover the same rows."""


def label_agreement(reference: Sequence[dict], second: Sequence[dict]) -> dict:
    """Scores of `second` against `reference` on the rows `second` labels (matched by id)."""
    if not second:
        raise AgreementError("the second labeling has no rows")
    for name, records in (("reference", reference), ("second labeling", second)):
        repeated = sorted(i for i, n in Counter(record["id"] for record in records).items() if n > 1)
        if repeated:
            raise AgreementError(f"the {name} repeats id(s) {', '.join(repeated[:5])}")
    by_id = {record["id"]: record for record in reference}
    missing = [record["id"] for record in second if record["id"] not in by_id]
    if missing:
        raise AgreementError(f"{len(missing)} row(s) of the second labeling are not in the reference, "
                             f"e.g. {', '.join(missing[:5])}; pass the labeled file(s) that hold them")
    changed = [record["id"] for record in second
               if (record["text"], record["brand"]) != (by_id[record["id"]]["text"], by_id[record["id"]]["brand"])]
    if changed:
        raise AgreementError(f"{len(changed)} row(s) have another text or brand in the reference, "
                             f"e.g. {', '.join(changed[:5])}; the two labelings must label the same paragraphs")
    first = [by_id[record["id"]] for record in second]
    true_stance = [r["stance"] for r in first]
    other_stance = [r["stance"] for r in second]
    true_topics, other_topics = topic_matrix([r["topics"] for r in first]), topic_matrix([r["topics"] for r in second])
    topics = topic_metrics(true_topics, other_topics)
    for k, topic in enumerate(TOPICS):
        topics["per_label"][topic]["kappa"] = _kappa(true_topics[:, k], other_topics[:, k])
    return {
        "n_rows": len(second),
        "n_articles": len({r["article_id"] for r in first}),
        "stance": {
            **stance_metrics(true_stance, other_stance),
            "kappa": _kappa(true_stance, other_stance),
            "confusion": confusion_matrix(true_stance, other_stance, labels=list(STANCES)).tolist(),
        },
        "topics": {**topics, "exact_set_match": float((true_topics == other_topics).all(axis=1).mean())},
    }


def _kappa(first: Sequence, second: Sequence) -> float | None:
    """Cohen's kappa; None when both sides use one and the same label throughout (kappa is undefined)."""
    if len(set(first) | set(second)) == 1:
        return None
    return float(cohen_kappa_score(first, second))


def _kappa_text(kappa: float | None) -> str:
    return "n/a (one label only)" if kappa is None else f"{kappa:.3f}"


def format_agreement(result: dict) -> str:
    stance, topics = result["stance"], result["topics"]
    lines = [
        f"{result['n_rows']} rows in {result['n_articles']} article(s) labeled twice",
        f"stance: agreement {stance['accuracy']:.3f}, Cohen's kappa {_kappa_text(stance['kappa'])}, "
        f"macro-F1 of the second labeling against the first {stance['macro_f1']:.3f}",
        "stance confusion (rows: first labeling, columns: second): " + ", ".join(STANCES),
        *(f"  {label:<9} {row}" for label, row in zip(STANCES, stance["confusion"], strict=True)),
        f"topics: micro-F1 {topics['micro_f1']:.3f}, macro-F1 {topics['macro_f1']:.3f}, "
        f"identical topic sets {topics['exact_set_match']:.3f}",
        *(f"  {topic:<15} F1 {scores['f1']:.3f}  kappa {_kappa_text(scores['kappa'])}  "
          f"(first {scores['support']})" for topic, scores in topics["per_label"].items()),
    ]
    return "\n".join(lines)
