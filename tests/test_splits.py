"""Splits: first assignment by hash, then committed dev/test frozen and new articles sent to train."""

import json
from pathlib import Path

import pytest

from lichang.config import DATA_DIR, REPO_ROOT
from lichang.splits import SplitError, read_assignment, write_splits


def write_articles(path: Path, industry: str, articles: list[str]) -> Path:
    rows = []
    for article in articles:
        for index in range(2):
            rows.append({"id": f"{article}-p{index:03d}", "article_id": article, "brand": "岚拓",
                         "industry": industry, "text": f"{article} 第{index}段", "stance": "neutral",
                         "topics": []})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def articles_in(split_dir: Path, split: str) -> set[str]:
    return {a for a, s in read_assignment(split_dir).items() if s == split}


def test_first_split_takes_per_industry_quotas_and_holds_out_the_test_seed(tmp_path):
    written = [write_articles(tmp_path / "cars.jsonl", "cars", [f"car-{i:03d}" for i in range(10)]),
               write_articles(tmp_path / "fin.jsonl", "finance", [f"fin-{i:03d}" for i in range(5)])]
    seeds = [write_articles(tmp_path / "seed.jsonl", "cars", ["seed000", "seed001"])]
    counts = write_splits(written, seeds, {"seed001"}, tmp_path / "splits")
    test, dev = articles_in(tmp_path / "splits", "test"), articles_in(tmp_path / "splits", "dev")
    # ceil(18% of 10) = 2 and ceil(12% of 10) = 2 car articles; ceil of 0.9 and 0.6 = 1 each for finance.
    assert len({a for a in test if a.startswith("car")}) == 2 and len({a for a in dev if a.startswith("car")}) == 2
    assert len({a for a in test if a.startswith("fin")}) == 1 and len({a for a in dev if a.startswith("fin")}) == 1
    assert "seed001" in test and "seed000" in articles_in(tmp_path / "splits", "train")
    assert counts == {"train": 2 * 10, "dev": 2 * 3, "test": 2 * 4}


def test_adding_articles_keeps_dev_and_test_frozen_and_trains_on_the_new_ones(tmp_path):
    out = tmp_path / "splits"
    cars = write_articles(tmp_path / "cars.jsonl", "cars", [f"car-{i:03d}" for i in range(10)])
    write_splits([cars], [], set(), out)
    before = {split: (out / f"{split}.jsonl").read_bytes() for split in ("dev", "test")}
    old = read_assignment(out)
    more = write_articles(tmp_path / "cars2.jsonl", "cars", [f"car2-{i:03d}" for i in range(30)])
    write_splits([cars, more], [], set(), out)
    assert {split: (out / f"{split}.jsonl").read_bytes() for split in ("dev", "test")} == before
    new = read_assignment(out)
    assert all(new[a] == s for a, s in old.items())
    assert {a for a, s in new.items() if a.startswith("car2-")} == {f"car2-{i:03d}" for i in range(30)}
    assert all(new[f"car2-{i:03d}"] == "train" for i in range(30))
    # --reshuffle recomputes from the hash: with 40 articles the quotas grow to 8 test and 5 dev.
    write_splits([cars, more], [], set(), out, reshuffle=True)
    assert len(articles_in(out, "test")) == 8 and len(articles_in(out, "dev")) == 5


def test_committed_splits_are_what_lichang_data_split_builds_from_the_labeled_files(tmp_path):
    committed = DATA_DIR / "splits"
    rebuilt = tmp_path / "splits"
    rebuilt.mkdir()
    for split in ("train", "dev", "test"):
        (rebuilt / f"{split}.jsonl").write_bytes((committed / f"{split}.jsonl").read_bytes())
    write_splits(sorted((DATA_DIR / "written").glob("*.jsonl")),
                 sorted((REPO_ROOT / "seeds" / "labeled").glob("*.jsonl")), {"seed002"}, rebuilt)
    for split in ("train", "dev", "test"):
        assert (rebuilt / f"{split}.jsonl").read_bytes() == (committed / f"{split}.jsonl").read_bytes(), split


def test_a_new_test_seed_goes_to_test_when_the_splits_are_frozen(tmp_path):
    out = tmp_path / "splits"
    cars = write_articles(tmp_path / "cars.jsonl", "cars", [f"car-{i:03d}" for i in range(10)])
    write_splits([cars], [], set(), out)
    seeds = [write_articles(tmp_path / "seed.jsonl", "cars", ["seed000", "seed001"])]
    write_splits([cars], seeds, {"seed001"}, out)
    assignment = read_assignment(out)
    assert assignment["seed001"] == "test" and assignment["seed000"] == "train"


def test_split_files_that_contradict_each_other_or_are_incomplete_are_refused(tmp_path):
    out = tmp_path / "splits"
    cars = write_articles(tmp_path / "cars.jsonl", "cars", [f"car-{i:03d}" for i in range(10)])
    write_splits([cars], [], set(), out)
    dev_line = (out / "dev.jsonl").read_text(encoding="utf-8").splitlines()[0]
    article = json.loads(dev_line)["article_id"]
    with (out / "test.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(dev_line + "\n")
    with pytest.raises(SplitError, match=f"article {article} is in both dev.jsonl and test.jsonl"):
        write_splits([cars], [], set(), out)
    (out / "test.jsonl").unlink()
    with pytest.raises(SplitError, match="but not test.jsonl"):
        write_splits([cars], [], set(), out)
    (out / "train.jsonl").write_text("not json\n", encoding="utf-8")
    (out / "test.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(SplitError, match="train.jsonl:1: no article_id"):
        read_assignment(out)


def test_a_new_article_that_repeats_a_dev_or_test_paragraph_is_refused(tmp_path):
    out = tmp_path / "splits"
    cars = write_articles(tmp_path / "cars.jsonl", "cars", [f"car-{i:03d}" for i in range(10)])
    write_splits([cars], [], set(), out)
    held = json.loads((out / "dev.jsonl").read_text(encoding="utf-8").splitlines()[0])
    copy = json.loads(json.dumps(held))
    copy.update(id="copy-001-p000", article_id="copy-001", text="转载:" + held["text"] + "。")
    leak = tmp_path / "leak.jsonl"
    leak.write_text(json.dumps(copy, ensure_ascii=False) + "\n", encoding="utf-8")
    before = (out / "train.jsonl").read_bytes()
    with pytest.raises(SplitError, match=f"copy-001-p000 repeats {held['id']}"):
        write_splits([cars, leak], [], set(), out)
    assert (out / "train.jsonl").read_bytes() == before  # nothing written
