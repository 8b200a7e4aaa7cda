"""The nightly batch job: inputs, the store, skipping by content hash, kill-safety, failures, report and exports.

The model is a tiny randomly initialised one: these tests check plumbing, not quality.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from datetime import date
from pathlib import Path

import pytest
import torch
from conftest import write_jsonl

from lichang.analysis import analyse_paragraphs
from lichang.cli import main
from lichang.config import LichangConfig
from lichang.models.classifier import StanceTopicModel
from lichang.models.scorer import Scorer
from lichang.paragraphs import split_paragraphs
from lichang.schema import STANCES
from lichang.service.batch.report import build_report, export_day
from lichang.service.batch.runner import BatchRunner
from lichang.service.batch.sources import Article, BadRecord, InputError, find_inputs, read_records
from lichang.service.batch.store import Store

REPO = Path(__file__).resolve().parents[1]
DAY = date(2025, 3, 2)
LINES = [
    "小米汽车本月交付量再创新高,订单已经排到明年。",
    "车主集体投诉小米SU7刹车异响,维权群已有三百人。",
    "小米将于下周在北京举行新品发布会。",
    "法院判决小米赔偿车主十万元。",
    "图源:微博",
    "雷军在直播中回应了网友的质疑。",
]


def article_text(i: int) -> str:
    return "\n".join(LINES[(i + j) % len(LINES)] for j in range(1 + i % 5))


def record(i: int, **extra) -> str:
    values = {"id": f"art{i:04d}", "brand": "小米" if i % 3 else "理想", "text": article_text(i),
              "published_at": "2025-03-02" if i % 2 else None, "title": f"标题{i}"}
    values.update(extra)
    return json.dumps(values, ensure_ascii=False)


def write_articles(path: Path, count: int) -> Path:
    return write_jsonl(path, [record(i) for i in range(count)])


def expected_paragraphs(count: int) -> dict[str, list[str]]:
    return {f"art{i:04d}": split_paragraphs(article_text(i)) for i in range(count)}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_encoder_dir) -> Path:
    config = LichangConfig(base_encoder=str(tiny_encoder_dir), name="tiny-batch", version="0.0.1",
                           trainable_layers=1, max_length=48, window_stride=8)
    torch.manual_seed(3)
    return StanceTopicModel.from_base(config).save_pretrained(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def scorer(tiny_model_dir) -> Scorer:
    return Scorer(StanceTopicModel.from_pretrained(tiny_model_dir))


def run(store: Store, scorer: Scorer, inputs: list[Path], chunk: int = 4, brand: str | None = None):
    files = find_inputs([str(p) for p in inputs])
    runner = BatchRunner(store, scorer, DAY, chunk_articles=chunk, progress=False, warn=lambda _: None)
    return runner.run(read_records(files, brand), inputs=[str(p) for p in inputs])


def table(store: Store, sql: str) -> list[tuple]:
    with store.engine.connect() as connection:
        return [tuple(row) for row in connection.exec_driver_sql(sql)]


def assert_complete(store: Store, count: int) -> None:
    """Exactly the expected articles, each with all its paragraphs (in order) and one summary."""
    expected = expected_paragraphs(count)
    rows = table(store, "SELECT a.article_id, p.idx, p.text FROM lichang_articles a JOIN lichang_paragraphs p "
                        "ON p.article_pk = a.id ORDER BY a.article_id, p.idx")
    got: dict[str, list[str]] = {}
    for article_id, index, text in rows:
        assert index == len(got.setdefault(article_id, []))
        got[article_id].append(text)
    assert got == expected
    assert store.counts()["articles"] == count
    assert store.counts()["summaries"] == count


# ------------------------------------------------------------------ inputs
def test_inputs_from_folders_files_and_globs(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "sub" / "one.txt").write_text("小米汽车很好。\n\n  车主很满意。\n", encoding="utf-8")
    (inbox / "two.md").write_text("\ufeff# 标题\n小米被罚款。\n", encoding="utf-8")
    (inbox / "notes.csv").write_text("ignored", encoding="utf-8")
    write_jsonl(inbox / "feed.jsonl", [record(1), "", json.dumps({"id": 7, "text": "理想发布新车。",
                                                                  "aliases": "Li Auto, 理想汽车"})])
    files = find_inputs([str(inbox)])
    assert [f.name for f in files] == ["feed.jsonl", "sub/one.txt", "two.md"]
    records = list(read_records(files, brand="小米", aliases=["Xiaomi"]))
    assert [r.id for r in records] == ["art0001", "7", "sub/one.txt", "two.md"]
    assert all(isinstance(r, Article) for r in records)
    assert records[1].brand == "小米" and records[1].aliases == ("Li Auto", "理想汽车")
    assert records[2].paragraphs == ("小米汽车很好。", "车主很满意。") and records[2].aliases == ("Xiaomi",)
    assert records[3].paragraphs[0] == "# 标题"  # BOM removed
    assert records[0].published_at == date(2025, 3, 2) and records[0].origin == "feed.jsonl:1"
    assert records[1].origin == "feed.jsonl:3"
    # a glob names files relative to its folder part, and an empty glob is an empty night, not an error
    assert [f.name for f in find_inputs([str(inbox / "**" / "*.txt")])] == ["sub/one.txt"]
    assert find_inputs([str(tmp_path / "empty" / "*.jsonl")]) == []
    with pytest.raises(InputError, match="no such file or folder"):
        find_inputs([str(tmp_path / "missing")])
    with pytest.raises(InputError, match="unsupported file type"):
        find_inputs([str(inbox / "notes.csv")])


def test_content_hash_counts_text_brand_and_aliases_only():
    base = Article(id="a", brand="小米", text="一\n二", paragraphs=("一", "二"), aliases=("Xiaomi",))
    same = Article(id="a", brand="小米", text="  一\r\n\r\n二  ", paragraphs=("一", "二"), aliases=("Xiaomi",),
                   title="new title")
    assert base.content_hash == same.content_hash
    for changed in (Article(id="a", brand="小米", text="一", paragraphs=("一",), aliases=("Xiaomi",)),
                    Article(id="a", brand="理想", text="一\n二", paragraphs=("一", "二"), aliases=("Xiaomi",)),
                    Article(id="a", brand="小米", text="一\n二", paragraphs=("一", "二"))):
        assert changed.content_hash != base.content_hash


# ------------------------------------------------------- skip and re-score
def test_skip_and_rescore_by_content_hash(tmp_path, scorer, tiny_model_dir):
    feed = write_articles(tmp_path / "feed.jsonl", 10)
    store = Store.open(str(tmp_path / "store.sqlite"))
    first = run(store, scorer, [feed])
    assert (first.scored, first.skipped, first.failed) == (10, 0, 0)
    assert first.paragraphs == sum(len(p) for p in expected_paragraphs(10).values())
    before = table(store, "SELECT article_id, scored_at, content_hash FROM lichang_articles ORDER BY article_id")

    second = run(store, scorer, [feed])
    assert (second.scored, second.skipped, second.paragraphs) == (0, 10, 0)
    assert table(store, "SELECT article_id, scored_at, content_hash FROM lichang_articles ORDER BY article_id") \
        == before
    assert_complete(store, 10)

    # one text changed, one alias list changed, one title changed (metadata only: no re-score)
    lines = [record(i) for i in range(10)]
    lines[2] = record(2, text="小米回应了质疑。\n小米股价大涨。")
    lines[5] = record(5, aliases=["Xiaomi"])
    lines[7] = record(7, title="改过的标题", published_at="2025-03-01")
    write_jsonl(feed, lines)
    third = run(store, scorer, [feed])
    assert (third.scored, third.skipped, third.paragraphs) == (2, 8, 2 + len(split_paragraphs(article_text(5))))
    rows = dict(table(store, "SELECT a.article_id, count(*) FROM lichang_articles a JOIN lichang_paragraphs p "
                             "ON p.article_pk = a.id GROUP BY a.article_id"))
    assert rows["art0002"] == 2 and len(rows) == 10
    assert table(store, "SELECT title, published_at FROM lichang_articles WHERE article_id = 'art0007'") \
        == [("改过的标题", "2025-03-01")]
    assert store.counts()["articles"] == 10 and store.counts()["summaries"] == 10

    # a new model version scores everything again, in place
    model = StanceTopicModel.from_pretrained(tiny_model_dir)
    model.config.version = "0.0.2"
    fourth = run(store, Scorer(model), [feed])
    assert (fourth.scored, fourth.skipped) == (10, 0)
    assert table(store, "SELECT DISTINCT model_name, model_version FROM lichang_articles") \
        == [("tiny-batch", "0.0.2")]
    assert store.counts()["articles"] == 10


def test_batch_numbers_match_the_single_article_analysis(tmp_path, scorer):
    """The store holds what the REST service would answer for the same article (shared analysis code)."""
    feed = write_articles(tmp_path / "feed.jsonl", 6)
    store = Store.open(str(tmp_path / "store.sqlite"))
    run(store, scorer, [feed], chunk=6)
    stored = dict(table(store, "SELECT a.article_id, s.summary FROM lichang_articles a JOIN lichang_summaries s "
                               "ON s.article_pk = a.id"))
    for i in range(6):
        brand = "小米" if i % 3 else "理想"
        _, summary = analyse_paragraphs(scorer, split_paragraphs(article_text(i)), brand)
        got = json.loads(stored[f"art{i:04d}"])
        assert got["counts"] == summary.counts and got["paragraphs"] == summary.paragraphs
        assert got["net_stance"] == pytest.approx(summary.net_stance, abs=1e-3)


# -------------------------------------------------------------- bad input
def test_malformed_records_are_reported_recorded_and_do_not_stop_the_run(tmp_path, tiny_model_dir, capsys):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_jsonl(inbox / "feed.jsonl", [
        record(0),
        '{"id": "broken", "text": ',  # bad JSON
        b'{"id": "gbk", "brand": "\xd0\xa1\xc3\xd7", "text": "x"}',  # GBK bytes: invalid UTF-8
        record(3, text="  \n \t"),  # empty text
        json.dumps({"id": "nobrand", "text": "没有品牌的文章。"}, ensure_ascii=False),
        record(5),
        "[1, 2]",
    ])
    (inbox / "gbk.txt").write_bytes("第一行\n".encode() + "小米".encode("gbk") + b"\n")
    store_path = tmp_path / "store.sqlite"
    args = ["batch", "run", str(inbox), "--store", str(store_path), "--model", str(tiny_model_dir),
            "--date", "2025-03-02", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err
    for where, why in [("feed.jsonl:2", "not valid JSON"), ("feed.jsonl:3", "not valid UTF-8"),
                       ("feed.jsonl:4", "empty text"), ("feed.jsonl:5", "no brand"),
                       ("feed.jsonl:7", "expected a JSON object"), ("gbk.txt:2", "not valid UTF-8")]:
        assert f"{where}: {why}" in err, err
    store = Store.open(str(store_path), create=False)
    assert sorted(table(store, "SELECT article_id FROM lichang_articles")) == [("art0000",), ("art0005",)]
    failed = table(store, "SELECT input_file, line, record_id FROM lichang_failures ORDER BY input_file, line")
    assert failed == [("feed.jsonl", 2, None), ("feed.jsonl", 3, None), ("feed.jsonl", 4, "art0003"),
                      ("feed.jsonl", 5, "nobrand"), ("feed.jsonl", 7, None), ("gbk.txt", 2, "gbk.txt")]

    # the same bad records again: reported again, recorded once; a default brand rescues 'nobrand'
    assert main([*args, "--brand", "小米"]) == 1
    capsys.readouterr()
    assert store.counts()["failures"] == 5
    assert ("nobrand",) in table(store, "SELECT article_id FROM lichang_articles")

    # fixed inputs: exit 0, and a complete run clears the failures it did not meet again
    (inbox / "feed.jsonl").write_text(record(0) + "\n" + record(5) + "\n", encoding="utf-8")
    (inbox / "gbk.txt").write_text("第一行\n小米\n", encoding="utf-8")
    assert main([*args, "--brand", "小米"]) == 0
    assert "articles scored 1, skipped 2, failed 0" in capsys.readouterr().out
    assert store.counts()["failures"] == 0


def test_usage_errors_exit_2(tmp_path, tiny_model_dir, capsys, monkeypatch):
    base = ["batch", "run", "--model", str(tiny_model_dir), "--no-progress"]
    assert main([*base, str(tmp_path / "missing"), "--store", str(tmp_path / "s.sqlite")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    monkeypatch.delenv("LICHANG_STORE", raising=False)
    assert main([*base, str(tmp_path)]) == 2
    assert "--store" in capsys.readouterr().err
    assert main([*base, str(tmp_path), "--store", str(tmp_path / "s.sqlite"), "--date", "2025-13-01"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
    assert main(["batch", "report", "--store", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "r.html")]) == 2
    assert "no such store" in capsys.readouterr().err
    assert main([*base, str(tmp_path), "--store", str(tmp_path / "s.sqlite")]) == 0  # an empty inbox is fine
    assert "nothing to do" in capsys.readouterr().err


# ------------------------------------------------------------ kill safety
def _committed(db: Path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as connection:
            return connection.execute("SELECT count(*) FROM lichang_articles").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_a_killed_run_resumes_with_no_article_lost_or_duplicated(tmp_path, tiny_model_dir):
    count, chunk = 300, 3
    feed = write_articles(tmp_path / "feed.jsonl", count)
    db = tmp_path / "store.sqlite"
    command = [sys.executable, "-m", "lichang.cli", "batch", "run", str(feed), "--store", str(db), "--model",
               str(tiny_model_dir), "--chunk-articles", str(chunk), "--date", "2025-03-02", "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    seen = 0
    while time.monotonic() < deadline and process.poll() is None:
        seen = _committed(db)
        if seen >= 2 * chunk:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err.decode()[-2000:]}"
    killed_at = _committed(db)
    assert 0 < killed_at < count, killed_at
    assert killed_at % chunk == 0, "a chunk was committed in part"
    store = Store.open(str(db), create=False)
    partial = table(store, "SELECT count(*) FROM lichang_articles a JOIN lichang_summaries s ON s.article_pk = a.id")
    assert partial == [(killed_at,)]

    rerun = subprocess.run([*command, "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    stats = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert (stats["scored"], stats["skipped"], stats["failed"]) == (count - killed_at, killed_at, 0)
    assert_complete(store, count)
    assert table(store, "SELECT count(*), count(DISTINCT article_id) FROM lichang_articles") == [(count, count)]
    assert [s for (s,) in table(store, "SELECT status FROM lichang_runs ORDER BY id")] == ["interrupted", "finished"]


# -------------------------------------------------------- report and export
def test_report_and_exports(tmp_path, scorer):
    feed = write_articles(tmp_path / "feed.jsonl", 12)
    store = Store.open(str(tmp_path / "store.sqlite"))
    write_jsonl(tmp_path / "bad.jsonl", ["not json"])
    run(store, scorer, [feed, tmp_path / "bad.jsonl"])
    page = build_report(store, DAY, days=7, top=3)
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "小米" in page and "理想" in page and "bad.jsonl:1" in page
    assert "Most critical paragraphs" in page
    empty = build_report(store, date(2024, 1, 1))
    assert "No articles are dated 2024-01-01" in empty

    rows = store.day_paragraphs(DAY)
    assert rows and {r["report_date"] for r in rows} == {DAY}
    assert export_day(store, DAY, "jsonl", tmp_path / "day.jsonl") == len(rows)
    lines = [json.loads(line) for line in (tmp_path / "day.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(rows) and lines[0]["report_date"] == "2025-03-02"
    assert {"article_id", "brand", "title", "paragraph_index", "text", "stance", "topics",
            *(f"stance_{s}" for s in STANCES)} <= set(lines[0])

    import pyarrow.parquet as pq

    assert export_day(store, DAY, "parquet", tmp_path / "day.parquet") == len(rows)
    parquet = pq.read_table(tmp_path / "day.parquet").to_pylist()
    assert [(r["article_id"], r["paragraph_index"], r["stance"]) for r in parquet] == \
        [(r["article_id"], r["paragraph_index"], r["stance"]) for r in lines]
    assert parquet[0]["report_date"] == DAY

    assert main(["batch", "report", "--store", str(tmp_path / "store.sqlite"), "--date", "2025-03-02",
                 "--out", str(tmp_path / "out" / "report.html")]) == 0
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000


# ---------------------------------------------------------- SQLite = PostgreSQL
@pytest.fixture
def postgres_url():
    """A fresh database on the server named by LICHANG_TEST_POSTGRES_URL (scripts/start-postgres.sh), dropped after."""
    url = os.environ.get("LICHANG_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("LICHANG_TEST_POSTGRES_URL is not set: start a server with "
                    "`eval \"$(bash scripts/start-postgres.sh)\"` to run the PostgreSQL store test")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from lichang.service.batch.store import store_url

    server = make_url(store_url(url))
    name = f"lichang_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # unreachable server, no driver, no CREATEDB right
        pytest.skip(f"PostgreSQL at {server.render_as_string(hide_password=True)} is not usable: {exc}")
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_sqlite_and_postgres_stores_hold_the_same_results(tmp_path, scorer, postgres_url):
    feed = write_articles(tmp_path / "feed.jsonl", 15)
    write_jsonl(tmp_path / "bad.jsonl", ["{oops", record(99, text="")])
    inputs = [feed, tmp_path / "bad.jsonl"]
    results = {}
    for name, spec in (("sqlite", str(tmp_path / "store.sqlite")), ("postgres", postgres_url)):
        store = Store.open(spec)
        first, again = run(store, scorer, inputs), run(store, scorer, inputs)
        results[name] = {
            "runs": [(s.scored, s.skipped, s.failed, s.paragraphs) for s in (first, again)],
            "rows": [{k: v for k, v in r.items() if k != "scored_at"} for r in store.day_paragraphs(DAY)],
            "counts": store.counts(),
            "failures": store.day_failures(DAY),
            "trend": sorted(store.stance_chars(date(2025, 2, 24), DAY)),
        }
        store.close()
    assert results["sqlite"]["runs"][1] == (0, 15, 2, 0)
    assert results["sqlite"]["rows"]
    for key, value in results["sqlite"].items():
        assert results["postgres"][key] == value, key


def test_bad_record_shows_where_and_why():
    bad = BadRecord("feed.jsonl", 12, "not valid JSON", "a1")
    assert str(bad) == "feed.jsonl:12: not valid JSON (id 'a1')"
