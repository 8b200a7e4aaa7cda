"""Bootstrap confidence intervals that resample articles, not paragraphs.

Paragraphs of one article share its writer, topic and tone, so they are not
independent: resampling them one by one would give intervals that are too
narrow. Each resample draws whole articles with replacement and keeps all
their paragraphs. The seed is fixed, so a report is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95


def article_groups(article_ids: Sequence[str]) -> list[np.ndarray]:
    """Paragraph indices of each article, articles in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, article in enumerate(article_ids):
        groups.setdefault(article, []).append(index)
    return [np.array(indices, dtype=int) for indices in groups.values()]


def article_resamples(article_ids: Sequence[str], resamples: int = DEFAULT_RESAMPLES,
                      seed: int = DEFAULT_SEED) -> Iterator[np.ndarray]:
    """Paragraph indices of each resample: as many articles as there are, drawn with replacement."""
    groups = article_groups(article_ids)
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        drawn = rng.integers(0, len(groups), size=len(groups))
        yield np.concatenate([groups[g] for g in drawn])


def bootstrap_intervals(article_ids: Sequence[str], statistic: Callable[[np.ndarray], dict[str, float]],
                        resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL,
                        show_progress: bool = False) -> dict[str, tuple[float, float]]:
    """Percentile interval of each value `statistic` returns, over article resamples.

    `statistic` gets the paragraph indices of one resample and returns named values; computing
    all of them on the same resample makes differences between two systems paired. A value that
    is undefined in a resample (NaN, e.g. the recall of a class the resample lacks) is left out.
    """
    if not len(article_ids) or resamples < 1:
        return {}
    values: dict[str, list[float]] = {}
    draws = article_resamples(article_ids, resamples, seed)
    for indices in tqdm(draws, total=resamples, desc="bootstrap", unit="resample", disable=not show_progress,
                        mininterval=1.0):
        for name, value in statistic(indices).items():
            values.setdefault(name, []).append(value)
    tail = (1.0 - level) / 2 * 100
    intervals = {}
    for name, drawn_values in values.items():
        defined = np.array(drawn_values, dtype=float)
        defined = defined[~np.isnan(defined)]
        if len(defined):
            intervals[name] = (float(np.percentile(defined, tail)), float(np.percentile(defined, 100 - tail)))
    return intervals
