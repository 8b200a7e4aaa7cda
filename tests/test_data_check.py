import json

import pytest
from conftest import write_jsonl

from lichang.cli import main
from lichang.config import SPLITS_DIR
from lichang.data import check_files, load_records


def row(article="a1", index=0, **overrides):
    record = {"id": f"{article}-p{index:03d}", "article_id": article, "brand": "比亚迪",
              "text": f"第{index}段:比亚迪发布新车。", "stance": "neutral", "topics": ["marketing"]}
    record.update(overrides)
    return json.dumps(record, ensure_ascii=False)


def good_lines():
    return [row(index=0), row(index=1, stance="praise", topics=[]), row(index=2, stance="critique")]


def test_a_good_file_passes_and_prints_counts(tmp_path, capsys):
    path = write_jsonl(tmp_path / "train.jsonl", good_lines())
    assert main(["data", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 paragraph rows in 1 articles" in out
    assert "OK: 3 records" in out
    assert "比亚迪" in out


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": "a1-p003", "article_id": "a1"', "malformed JSON"),
        (row(index=3, stance="positive"), "unknown stance 'positive'"),
        (row(index=3, topics=["finance"]), "unknown topic"),
        (row(index=3, text="   "), "empty or whitespace-only text"),
        (row(index=3, text=""), "empty or whitespace-only text"),
        (json.dumps({"id": "a1-p003", "article_id": "a1", "brand": "x", "text": "t", "stance": "neutral"}),
         "missing field(s) topics"),
        (row(index=3, colour="red"), "unknown field(s) colour"),
        (row(index=1), "duplicate id 'a1-p001'"),
        (b'{"id": "a1-p003", "text": "\xb1\xc8\xd1\xc7\xb5\xcf"}', "not valid UTF-8"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_each_bad_line_is_reported_with_file_and_line(tmp_path, capsys, bad_line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [*good_lines(), bad_line])
    result = check_files([path])
    assert not result.ok
    assert any(f"{path}:4" in str(issue) and message in str(issue) for issue in result.issues), result.issues
    assert main(["data", "check", str(path)]) == 1
    assert f"{path}:4" in capsys.readouterr().err


def test_paragraph_order_that_cannot_rebuild_the_article(tmp_path):
    path = write_jsonl(tmp_path / "order.jsonl", [row(index=0), row(index=2), row(index=1)])
    issues = [str(i) for i in check_files([path]).issues]
    assert any("cannot be rebuilt" in i and "'a1'" in i for i in issues)
    gap = write_jsonl(tmp_path / "gap.jsonl", [row(index=0), row(index=2)])
    assert any("cannot be rebuilt" in str(i) for i in check_files([gap]).issues)


def test_second_target_rows_must_copy_their_paragraph(tmp_path):
    good = row(index=0, brand="蔚来", stance="praise").replace('"id": "a1-p000"', '"id": "a1-p000-t2"')
    ok = write_jsonl(tmp_path / "ok.jsonl", [row(index=0), good, row(index=1)])
    assert check_files([ok]).ok
    changed = row(index=0, brand="蔚来", text="另一段话").replace('"id": "a1-p000"', '"id": "a1-p000-t2"')
    bad = write_jsonl(tmp_path / "bad.jsonl", [row(index=0), changed, row(index=1)])
    assert any("second-target row" in str(i) for i in check_files([bad]).issues)


def test_missing_file_is_an_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope.jsonl")]) == 1
    assert "file not found" in capsys.readouterr().err


def test_a_row_that_repeats_a_held_out_paragraph_is_reported(tmp_path, capsys):
    """Briefs that quoted dev paragraphs as examples once leaked them into train; check must catch it."""
    dev = next(r for r in load_records([SPLITS_DIR / "dev.jsonl"]) if len(r["text"]) >= 40)
    nearly = dev["text"][:-6] + "(记者补充)" + dev["text"][-6:]
    path = write_jsonl(tmp_path / "new.jsonl", [
        row(index=0, text="据说:" + dev["text"]),  # holds the whole dev paragraph
        row(index=1, text=nearly),  # the same paragraph with a few words added
        row(index=2, text=dev["text"][:8] + "——这一句只是借了开头几个字,后面说的是另一回事,不算重复。"),
    ])
    assert main(["data", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count(f"repeats held-out paragraph {dev['id']!r}") == 2
    assert "a1-p000" in err and "a1-p001" in err and "a1-p002" not in err
