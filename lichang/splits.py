"""Splitting labeled articles into train / dev / test, by article, stratified by industry.

The first assignment is a pure function of article ids (a salted hash). After
that the committed dev and test splits are frozen: re-running the split keeps
every article where the committed files put it and sends new articles to train,
so held-out scores of successive models stay comparable and no test article can
drift into training. `reshuffle=True` recomputes everything from the hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path

from lichang.data import held_out_repeats, load_records, primary_id

TEST_SHARE = 0.18
DEV_SHARE = 0.12
SALT = "lichang-splits-v1"


def _rank(article_id: str) -> str:
    return hashlib.sha256(f"{SALT}:{article_id}".encode()).hexdigest()


SPLITS: tuple[str, ...] = ("train", "dev", "test")


class SplitError(ValueError):
    """The committed split files contradict each other or are incomplete."""


def read_assignment(split_dir: Path) -> dict[str, str]:
    """article_id → split, as the committed split files have it (empty when there are none).

    Only `article_id` is read, so labels can be fixed in data/written and the split rebuilt even when
    the committed files still hold the old labels."""
    present = [split for split in SPLITS if (split_dir / f"{split}.jsonl").exists()]
    if not present:
        return {}
    if len(present) < len(SPLITS):
        missing = ", ".join(f"{split}.jsonl" for split in SPLITS if split not in present)
        raise SplitError(f"{split_dir} has {', '.join(f'{p}.jsonl' for p in present)} but not {missing}; "
                         "restore the missing files (git checkout) or pass --reshuffle to start new splits")
    assignment: dict[str, str] = {}
    for split in SPLITS:
        path = split_dir / f"{split}.jsonl"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                article = json.loads(line)["article_id"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SplitError(f"{path}:{number}: no article_id ({exc})") from exc
            if assignment.setdefault(article, split) != split:
                raise SplitError(f"article {article} is in both {assignment[article]}.jsonl and {split}.jsonl "
                                 f"({path}:{number}); move all its rows to one split by hand")
    return assignment


def assign_splits(written: list[dict], test_seed_articles: set[str], seed_records: list[dict],
                  frozen: dict[str, str] | None = None) -> dict[str, str]:
    """article_id → split. Articles in `frozen` keep their split; a new article goes to test when it is
    one of `test_seed_articles` and to train otherwise. Without `frozen`, written articles are ranked per
    industry: the lowest-ranked 18% test, next 12% dev."""
    if frozen:
        return {record["article_id"]: frozen.get(record["article_id"],
                                                 "test" if record["article_id"] in test_seed_articles else "train")
                for record in seed_records + written}
    industry_of: dict[str, str] = {}
    for record in written:
        if primary_id(record["id"]) is None:
            industry_of.setdefault(record["article_id"], record.get("industry", "unknown"))
    by_industry: dict[str, list[str]] = defaultdict(list)
    for article, industry in industry_of.items():
        by_industry[industry].append(article)
    split_of: dict[str, str] = {}
    for articles in by_industry.values():
        articles.sort(key=_rank)
        n_test = max(1, math.ceil(TEST_SHARE * len(articles)))
        n_dev = max(1, math.ceil(DEV_SHARE * len(articles)))
        for position, article in enumerate(articles):
            split_of[article] = "test" if position < n_test else "dev" if position < n_test + n_dev else "train"
    for record in seed_records:
        split_of[record["article_id"]] = "test" if record["article_id"] in test_seed_articles else "train"
    return split_of


def write_splits(written_files: list[Path], seed_files: list[Path], test_seed_articles: set[str],
                 out_dir: Path, reshuffle: bool = False) -> dict[str, int]:
    written = load_records(written_files, require_order=True)
    seeds = load_records(seed_files, require_order=True)
    frozen = {} if reshuffle else read_assignment(out_dir)
    split_of = assign_splits(written, test_seed_articles, seeds, frozen)
    rows_in = {split: [r for r in seeds + written if split_of[r["article_id"]] == split] for split in SPLITS}
    repeats = held_out_repeats(rows_in["train"], rows_in["dev"] + rows_in["test"])
    if repeats:
        listed = "; ".join(f"{row['id']} repeats {other['id']}" for row, other in repeats[:10])
        raise SplitError(f"{len(repeats)} training row(s) repeat a dev or test paragraph ({listed}); "
                         "rewrite them in new words so the held-out splits stay unseen")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split, rows in rows_in.items():
        with (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts[split] = len(rows)
    return counts
