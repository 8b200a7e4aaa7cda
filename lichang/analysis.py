"""An article's stance breakdown: paragraph scores plus the summary an analyst reads.

Shared by the REST service, the nightly batch job and `lichang predict`, so all
three report the same numbers for the same article.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from lichang.models.scorer import ParagraphInput, ParagraphScore, Scorer
from lichang.paragraphs import is_boilerplate
from lichang.schema import STANCE_SIGN, STANCES, TOPICS

STRONGEST_SHOWN = 3


@dataclass
class ParagraphResult:
    index: int
    text: str
    boilerplate: bool
    stance: str
    stance_scores: dict[str, float]
    topics: list[str]
    topic_scores: dict[str, float]
    windows: int = 1

    def to_api(self) -> dict:
        return {
            "index": self.index, "text": self.text, "boilerplate": self.boilerplate,
            "stance": {"label": self.stance, "scores": self.stance_scores},
            "topics": {"labels": self.topics, "scores": self.topic_scores},
            "windows": self.windows,
        }


@dataclass
class ArticleSummary:
    paragraphs: int  # all paragraphs
    scored_paragraphs: int  # non-boilerplate paragraphs, the ones the summary counts
    counts: dict[str, int]
    shares: dict[str, float]  # length-weighted, over non-boilerplate paragraphs
    net_stance: float  # praise share − critique share, in [-1, 1]
    by_topic: dict[str, dict[str, int]]  # stance counts among paragraphs with each topic
    strongest_praise: list[dict] = field(default_factory=list)
    strongest_critique: list[dict] = field(default_factory=list)

    def to_api(self) -> dict:
        return asdict(self)


def summarise(results: Sequence[ParagraphResult]) -> ArticleSummary:
    content = [r for r in results if not r.boilerplate]
    counts = {s: sum(r.stance == s for r in content) for s in STANCES}
    total_chars = sum(len(r.text) for r in content)
    shares = {s: (sum(len(r.text) for r in content if r.stance == s) / total_chars if total_chars else 0.0)
              for s in STANCES}
    net = sum(STANCE_SIGN[s] * shares[s] for s in STANCES)
    by_topic = {t: {s: sum(r.stance == s and t in r.topics for r in content) for s in STANCES} for t in TOPICS}

    def strongest(label: str) -> list[dict]:
        chosen = sorted((r for r in content if r.stance == label), key=lambda r: -r.stance_scores[label])
        return [{"index": r.index, "text": r.text, "score": r.stance_scores[label]}
                for r in chosen[:STRONGEST_SHOWN]]

    return ArticleSummary(
        paragraphs=len(results), scored_paragraphs=len(content), counts=counts,
        shares={s: round(v, 4) for s, v in shares.items()}, net_stance=round(max(-1.0, min(1.0, net)), 4),
        by_topic=by_topic, strongest_praise=strongest("praise"), strongest_critique=strongest("critique"),
    )


def to_results(paragraphs: Sequence[str], scores: Sequence[ParagraphScore]) -> list[ParagraphResult]:
    return [
        ParagraphResult(index=i, text=text, boilerplate=is_boilerplate(text), stance=score.stance,
                        stance_scores=score.stance_scores, topics=score.topics, topic_scores=score.topic_scores,
                        windows=score.windows)
        for i, (text, score) in enumerate(zip(paragraphs, scores, strict=True))
    ]


def analyse_paragraphs(scorer: Scorer, paragraphs: Sequence[str], brand: str,
                       aliases: Sequence[str] = ()) -> tuple[list[ParagraphResult], ArticleSummary]:
    scores = scorer.score([ParagraphInput(p, brand, tuple(aliases)) for p in paragraphs])
    results = to_results(paragraphs, scores)
    return results, summarise(results)
