"""Splitting labeled articles into train / dev / test, by article, stratified by industry.

The assignment is a pure function of article ids (a salted hash), so re-running
it after adding articles moves no existing article between splits unless the
per-industry quotas change; the splits are committed as data.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path

from lichang.data import load_records

TEST_SHARE = 0.18
DEV_SHARE = 0.12
SALT = "lichang-splits-v1"


def _rank(article_id: str) -> str:
    return hashlib.sha256(f"{SALT}:{article_id}".encode()).hexdigest()


def assign_splits(written: list[dict], test_seed_articles: set[str], seed_records: list[dict]) -> dict[str, str]:
    """article_id → split. Written articles: per industry, the lowest-ranked 18% test, next 12% dev."""
    industry_of: dict[str, str] = {}
    for record in written:
        if not record["id"].endswith("-t2"):
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
                 out_dir: Path) -> dict[str, int]:
    written = load_records(written_files, require_order=True)
    seeds = load_records(seed_files, require_order=True)
    split_of = assign_splits(written, test_seed_articles, seeds)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for split in ("train", "dev", "test"):
        rows = [r for r in seeds + written if split_of[r["article_id"]] == split]
        with (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts[split] = len(rows)
    return counts
