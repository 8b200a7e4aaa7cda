"""The resumable nightly run: read records in chunks, skip what is already scored, score the rest, commit.

Each chunk's paragraphs, from all its articles, go to the scorer in one call
(the scorer sorts them by length into large batches), and the chunk's articles,
paragraphs, summaries and failures are committed in one transaction. A run
killed at any moment loses at most the chunk in flight; the next run skips
everything committed (same content hash, same model) and scores the rest.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import islice

from tqdm import tqdm

from lichang.analysis import summarise, to_results
from lichang.models.scorer import ParagraphInput, Scorer
from lichang.service.batch.sources import Article, BadRecord, Record
from lichang.service.batch.store import Existing, ScoredArticle, Store


@dataclass
class RunStats:
    scored: int = 0
    skipped: int = 0
    failed: int = 0
    paragraphs: int = 0  # paragraphs scored by the model in this run
    seconds: float = 0.0
    run_id: int | None = None
    failures: list[BadRecord] = field(default_factory=list)

    @property
    def paragraphs_per_second(self) -> float:
        return self.paragraphs / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"articles scored {self.scored}, skipped {self.skipped}, failed {self.failed}; "
                f"{self.paragraphs} paragraphs in {self.seconds:.1f} s ({self.paragraphs_per_second:.0f} paragraphs/s)")

    def to_dict(self) -> dict:
        return {"scored": self.scored, "skipped": self.skipped, "failed": self.failed, "paragraphs": self.paragraphs,
                "seconds": round(self.seconds, 2), "paragraphs_per_second": round(self.paragraphs_per_second, 1),
                "run_id": self.run_id}


def chunked(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


class BatchRunner:
    def __init__(self, store: Store, scorer: Scorer, run_date: date, chunk_articles: int = 128,
                 progress: bool | None = None, warn: Callable[[str], None] | None = None) -> None:
        """`run_date` dates new articles that carry no published_at (and the failures) for the report."""
        if chunk_articles < 1:
            raise ValueError(f"chunk size must be at least 1 article, got {chunk_articles}")
        self.store = store
        self.scorer = scorer
        self.model_name = scorer.model.config.name
        self.model_version = scorer.model.config.version
        self.run_date = run_date
        self.chunk_articles = chunk_articles
        self.progress = progress  # None: show the bar only on a terminal
        self.warn = warn or (lambda message: tqdm.write(message, file=sys.stderr))

    def run(self, records: Iterable[Record], total: int | None = None, inputs: Sequence[str] = (),
            input_files: Sequence[str] = ()) -> RunStats:
        """Score `records`; `inputs` are recorded with the run, and once every record has been read, failures
        of `input_files` (the files read, as records name them) that this run did not meet again are removed."""
        stats = RunStats()
        stats.run_id = self.store.start_run(self.model_name, self.model_version, inputs)
        started = time.perf_counter()
        status = "interrupted"
        disable = None if self.progress is None else not self.progress  # tqdm: None = only on a terminal
        bar = tqdm(total=total, unit="article", disable=disable, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        try:
            for chunk in chunked(records, self.chunk_articles):
                self._run_chunk(chunk, stats)
                stats.seconds = time.perf_counter() - started
                bar.update(len(chunk))
                bar.set_postfix_str(f"{stats.paragraphs_per_second:.0f} paragraphs/s, scored {stats.scored}, "
                                    f"skipped {stats.skipped}, failed {stats.failed}", refresh=False)
            self.store.clear_fixed_failures(stats.run_id, input_files)
            status = "finished"
        finally:
            bar.close()
            stats.seconds = time.perf_counter() - started
            try:
                self.store.finish_run(stats.run_id, status, stats.scored, stats.skipped, stats.failed,
                                      stats.paragraphs, stats.seconds)
            except Exception:  # the original error matters more than the bookkeeping
                if status == "finished":
                    raise
        return stats

    def _run_chunk(self, chunk: list[Record], stats: RunStats) -> None:
        bad = [r for r in chunk if isinstance(r, BadRecord)]
        for record in bad:
            self.warn(f"lichang batch: {record}")
        latest: dict[tuple[str, str], Article] = {}
        for record in chunk:
            if isinstance(record, Article):
                latest.pop(record.key, None)  # the same article twice in a chunk: the later one wins
                latest[record.key] = record
        duplicates = sum(isinstance(r, Article) for r in chunk) - len(latest)
        existing = self.store.existing(latest)
        to_score: list[tuple[Article, Existing | None]] = []
        touched: list[tuple[Existing, Article, date]] = []
        for key, article in latest.items():
            old = existing.get(key)
            if old and (old.content_hash, old.model_name, old.model_version) == (
                    article.content_hash, self.model_name, self.model_version):
                report_date = article.published_at or old.report_date
                if (old.title, old.source, old.published_at, old.report_date) != (
                        article.title, article.source, article.published_at, report_date):
                    touched.append((old, article, report_date))
            else:
                to_score.append((article, old))
        scored = self._score(to_score)
        self.store.write_chunk(scored, touched, bad, stats.run_id or 0, self.model_name, self.model_version,
                               self.run_date)
        stats.scored += len(scored)
        stats.skipped += len(latest) - len(scored) + duplicates
        stats.failed += len(bad)
        stats.paragraphs += sum(len(s.results) for s in scored)
        stats.failures += bad

    def _score(self, to_score: list[tuple[Article, Existing | None]]) -> list[ScoredArticle]:
        """All paragraphs of the chunk in one scorer call, then split back into articles."""
        inputs = [ParagraphInput(p, a.brand, a.aliases) for a, _ in to_score for p in a.paragraphs]
        scores = self.scorer.score(inputs)
        scored, offset = [], 0
        for article, old in to_score:
            results = to_results(article.paragraphs, scores[offset : offset + len(article.paragraphs)])
            offset += len(article.paragraphs)
            # an undated article keeps the day it was first reported under when a new model re-scores it
            report_date = article.published_at or (old.report_date if old else self.run_date)
            scored.append(ScoredArticle(article, results, summarise(results), report_date))
        return scored
