"""Where nightly results live: SQLAlchemy Core tables and the few queries the run, report and export need.

SQLite (one file) by default, any SQLAlchemy URL (PostgreSQL) by option. An
article is identified by (article id, brand): the same article can be watched
for two brands. Re-scoring replaces an article's paragraph rows and summary in
place; no history of earlier scores is kept (the inputs are the history). Each
chunk of a run is written in one transaction, and unique constraints make a
write that would duplicate a row fail instead of succeed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from lichang.analysis import ArticleSummary, ParagraphResult
from lichang.schema import STANCES, TOPICS
from lichang.service.batch.sources import Article, BadRecord

metadata = MetaData()

articles = Table(
    "lichang_articles", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("article_id", String(512), nullable=False),
    Column("brand", String(200), nullable=False),
    Column("aliases", JSON, nullable=False),
    Column("title", Text),
    Column("source", Text),
    Column("published_at", Date),
    Column("report_date", Date, nullable=False, index=True),  # published_at, else the run's date
    Column("text", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(100), nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
    Column("run_id", Integer),
    Column("origin", Text),  # the input file:line it was last read from
    Column("paragraphs", Integer, nullable=False),
    UniqueConstraint("article_id", "brand", name="uq_lichang_articles_article_brand"),
)

paragraphs = Table(
    "lichang_paragraphs", metadata,
    Column("article_pk", Integer, ForeignKey("lichang_articles.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("boilerplate", Boolean, nullable=False),
    Column("stance", String(16), nullable=False),
    *[Column(f"stance_{s}", Float, nullable=False) for s in STANCES],
    Column("topics", JSON, nullable=False),
    *[Column(f"topic_{t}", Float, nullable=False) for t in TOPICS],
    Column("windows", Integer, nullable=False),
    PrimaryKeyConstraint("article_pk", "idx", name="pk_lichang_paragraphs"),
)

summaries = Table(
    "lichang_summaries", metadata,
    Column("article_pk", Integer, ForeignKey("lichang_articles.id", ondelete="CASCADE"), primary_key=True),
    Column("paragraphs", Integer, nullable=False),
    Column("scored_paragraphs", Integer, nullable=False),
    *[Column(f"count_{s}", Integer, nullable=False) for s in STANCES],
    *[Column(f"share_{s}", Float, nullable=False) for s in STANCES],
    Column("net_stance", Float, nullable=False),
    Column("summary", JSON, nullable=False),  # the whole ArticleSummary, as the REST service answers it
)

failures = Table(
    "lichang_failures", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("input_file", Text, nullable=False),
    Column("line", Integer, nullable=False),
    Column("raw_hash", String(64), nullable=False),  # the same bad line seen again is one row, not two
    Column("record_id", String(512)),
    Column("reason", Text, nullable=False),
    Column("report_date", Date, nullable=False, index=True),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("run_id", Integer),
    UniqueConstraint("input_file", "line", "raw_hash", name="uq_lichang_failures_where_what"),
)

runs = Table(
    "lichang_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", String(16), nullable=False),  # running | finished | interrupted
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(100), nullable=False),
    Column("inputs", JSON, nullable=False),
    *[Column(name, Integer, nullable=False, default=0) for name in ("scored", "skipped", "failed", "paragraphs")],
    Column("seconds", Float),
)


class StoreError(RuntimeError):
    """The store cannot be opened or written."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: everything stored is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def store_url(store: str, create: bool = True) -> str:
    """A path means SQLite; a URL is used as given, `postgresql://` getting the psycopg (3) driver."""
    if "://" not in store:
        path = Path(store).expanduser().resolve()
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise StoreError(f"{store}: no such store; write one first with `lichang batch run --store {store} …`")
        return f"sqlite:///{path}"
    for bare in ("postgresql://", "postgres://"):
        if store.startswith(bare):
            return "postgresql+psycopg://" + store[len(bare):]
    return store


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # the report can read while a run writes
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@dataclass
class Existing:
    """What the store already holds for an article: enough to decide skip or re-score."""

    pk: int
    content_hash: str
    model_name: str
    model_version: str
    title: str | None
    source: str | None
    published_at: date | None
    report_date: date


@dataclass
class ScoredArticle:
    article: Article
    results: list[ParagraphResult]
    summary: ArticleSummary
    report_date: date  # the day the morning report counts it under


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, store: str, create: bool = True) -> Store:
        """Open (and by default create the tables of) a store given as a file path or a database URL."""
        url = store_url(store, create)
        try:
            engine = create_engine(url, future=True)
        except NoSuchModuleError as exc:
            raise StoreError(f"{make_url(url).drivername}: no SQLAlchemy dialect or driver for this URL ({exc})"
                             ) from exc
        except ArgumentError as exc:
            raise StoreError(f"--store {store!r} is neither a file path nor a database URL ({exc})") from exc
        except ModuleNotFoundError as exc:
            raise StoreError(f"the database driver for {make_url(url).drivername} is not installed ({exc}); "
                             "for PostgreSQL: pip install 'lichang[postgres]' (psycopg 3)") from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        try:
            if create:
                metadata.create_all(engine)
            else:
                with engine.connect() as connection:
                    connection.execute(select(func.count()).select_from(runs))
        except DBAPIError as exc:
            shown = make_url(url).render_as_string(hide_password=True)
            hint = "" if create else " (is it a lichang batch store?)"
            raise StoreError(f"cannot open the store {shown}{hint}: {str(exc.orig).strip()}") from exc
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ runs
    def start_run(self, model_name: str, model_version: str, inputs: Sequence[str]) -> int:
        """Record a new run; runs left 'running' by a killed process become 'interrupted' (one run at a time)."""
        with self.engine.begin() as connection:
            connection.execute(update(runs).where(runs.c.status == "running").values(status="interrupted"))
            result = connection.execute(insert(runs).values(
                started_at=utc_now(), status="running", model_name=model_name, model_version=model_version,
                inputs=list(inputs), scored=0, skipped=0, failed=0, paragraphs=0))
            return int(result.inserted_primary_key[0])

    def finish_run(self, run_id: int, status: str, scored: int, skipped: int, failed: int, paragraph_count: int,
                   seconds: float) -> None:
        with self.engine.begin() as connection:
            connection.execute(update(runs).where(runs.c.id == run_id).values(
                finished_at=utc_now(), status=status, scored=scored, skipped=skipped, failed=failed,
                paragraphs=paragraph_count, seconds=round(seconds, 3)))

    # --------------------------------------------------------------- writing
    def existing(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Existing]:
        keys = list(dict.fromkeys(keys))
        found: dict[tuple[str, str], Existing] = {}
        if not keys:
            return found
        with self.engine.connect() as connection:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                query = select(articles.c.article_id, articles.c.brand, articles.c.id, articles.c.content_hash,
                               articles.c.model_name, articles.c.model_version, articles.c.title,
                               articles.c.source, articles.c.published_at, articles.c.report_date).where(
                    tuple_(articles.c.article_id, articles.c.brand).in_(part))
                for row in connection.execute(query):
                    found[(row.article_id, row.brand)] = Existing(*row[2:])
        return found

    def write_chunk(self, scored: Sequence[ScoredArticle], touched: Sequence[tuple[Existing, Article, date]],
                    bad: Sequence[BadRecord], run_id: int, model_name: str, model_version: str,
                    run_date: date) -> None:
        """One chunk in one transaction: new and re-scored articles with their paragraphs and summaries,
        metadata updates of skipped articles, and failures. A kill before the commit loses only this chunk."""
        now = utc_now()
        with self.engine.begin() as connection:
            current = self._pks(connection, [s.article.key for s in scored])
            for item in scored:
                a = item.article
                values = {
                    "aliases": list(a.aliases), "title": a.title, "source": a.source, "published_at": a.published_at,
                    "report_date": item.report_date, "text": a.text, "content_hash": a.content_hash,
                    "model_name": model_name, "model_version": model_version, "scored_at": now, "run_id": run_id,
                    "origin": a.origin, "paragraphs": len(item.results),
                }
                pk = current.get(a.key)
                if pk is None:
                    pk = connection.execute(insert(articles).values(article_id=a.id, brand=a.brand, **values)
                                            ).inserted_primary_key[0]
                else:
                    connection.execute(delete(paragraphs).where(paragraphs.c.article_pk == pk))
                    connection.execute(delete(summaries).where(summaries.c.article_pk == pk))
                    connection.execute(update(articles).where(articles.c.id == pk).values(**values))
                connection.execute(insert(paragraphs), [_paragraph_row(pk, r) for r in item.results])
                connection.execute(insert(summaries).values(_summary_row(pk, item.summary)))
            for existing, article, report_date in touched:
                connection.execute(update(articles).where(articles.c.id == existing.pk).values(
                    title=article.title, source=article.source, published_at=article.published_at,
                    report_date=report_date, origin=article.origin))
            for record in bad:
                self._record_failure(connection, record, run_id, run_date, now)

    def clear_fixed_failures(self, run_id: int, input_files: Sequence[str]) -> int:
        """After a complete run: failures of the files it read that it did not meet again were fixed or removed."""
        removed = 0
        files = list(dict.fromkeys(input_files))
        with self.engine.begin() as connection:
            for start in range(0, len(files), 500):
                removed += connection.execute(delete(failures).where(
                    failures.c.input_file.in_(files[start : start + 500]),
                    (failures.c.run_id != run_id) | failures.c.run_id.is_(None))).rowcount
        return removed

    @staticmethod
    def _pks(connection: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        for start in range(0, len(keys), 500):
            query = select(articles.c.article_id, articles.c.brand, articles.c.id).where(
                tuple_(articles.c.article_id, articles.c.brand).in_(keys[start : start + 500]))
            found.update({(row.article_id, row.brand): row.id for row in connection.execute(query)})
        return found

    @staticmethod
    def _record_failure(connection: Connection, record: BadRecord, run_id: int, report_date: date,
                        now: datetime) -> None:
        where = and_(failures.c.input_file == record.file, failures.c.line == record.line,
                     failures.c.raw_hash == record.raw_hash)
        if connection.execute(select(failures.c.id).where(where)).first():
            connection.execute(update(failures).where(where).values(
                last_seen_at=now, run_id=run_id, report_date=report_date, reason=record.reason))
        else:
            connection.execute(insert(failures).values(
                input_file=record.file, line=record.line, raw_hash=record.raw_hash, record_id=record.record_id,
                reason=record.reason, report_date=report_date, first_seen_at=now, last_seen_at=now, run_id=run_id))

    # --------------------------------------------------------------- reading
    def counts(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            return {table.name.removeprefix("lichang_"): connection.execute(
                select(func.count()).select_from(table)).scalar_one()
                for table in (articles, paragraphs, summaries, failures, runs)}

    def day_paragraphs(self, day: date) -> list[dict[str, Any]]:
        """One row per paragraph of the day's articles, with the article's fields: what exports and reports use."""
        columns = [
            articles.c.article_id, articles.c.brand, articles.c.title, articles.c.source, articles.c.published_at,
            articles.c.report_date, articles.c.aliases, articles.c.model_name, articles.c.model_version,
            articles.c.scored_at, articles.c.content_hash, summaries.c.net_stance.label("article_net_stance"),
            paragraphs.c.idx.label("paragraph_index"), paragraphs.c.text, paragraphs.c.boilerplate,
            paragraphs.c.stance, *[paragraphs.c[f"stance_{s}"] for s in STANCES], paragraphs.c.topics,
            *[paragraphs.c[f"topic_{t}"] for t in TOPICS], paragraphs.c.windows,
        ]
        query = (select(*columns)
                 .select_from(articles.join(paragraphs, paragraphs.c.article_pk == articles.c.id)
                              .join(summaries, summaries.c.article_pk == articles.c.id))
                 .where(articles.c.report_date == day)
                 .order_by(articles.c.brand, articles.c.article_id, paragraphs.c.idx))
        with self.engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
        for row in rows:
            row["scored_at"] = as_utc(row["scored_at"])
        return rows

    def stance_chars(self, start: date, end: date) -> list[tuple[date, str, str, int, int]]:
        """(day, brand, stance, characters, paragraphs) over non-boilerplate paragraphs, for the trend plot."""
        query = (select(articles.c.report_date, articles.c.brand, paragraphs.c.stance,
                        func.sum(func.length(paragraphs.c.text)), func.count())
                 .select_from(articles.join(paragraphs, paragraphs.c.article_pk == articles.c.id))
                 .where(articles.c.report_date >= start, articles.c.report_date <= end,
                        paragraphs.c.boilerplate.is_(False))
                 .group_by(articles.c.report_date, articles.c.brand, paragraphs.c.stance))
        with self.engine.connect() as connection:
            return [(row[0], row[1], row[2], int(row[3] or 0), int(row[4])) for row in connection.execute(query)]

    def day_failures(self, day: date) -> list[dict[str, Any]]:
        query = (select(failures.c.input_file, failures.c.line, failures.c.record_id, failures.c.reason)
                 .where(failures.c.report_date == day).order_by(failures.c.input_file, failures.c.line))
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def last_run(self) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(runs).order_by(runs.c.id.desc()).limit(1)).first()
        return dict(row._mapping) if row else None


def _paragraph_row(pk: int, result: ParagraphResult) -> dict[str, Any]:
    return {
        "article_pk": pk, "idx": result.index, "text": result.text, "boilerplate": result.boilerplate,
        "stance": result.stance, **{f"stance_{s}": float(result.stance_scores[s]) for s in STANCES},
        "topics": list(result.topics), **{f"topic_{t}": float(result.topic_scores[t]) for t in TOPICS},
        "windows": result.windows,
    }


def _summary_row(pk: int, summary: ArticleSummary) -> dict[str, Any]:
    return {
        "article_pk": pk, "paragraphs": summary.paragraphs, "scored_paragraphs": summary.scored_paragraphs,
        **{f"count_{s}": summary.counts[s] for s in STANCES}, **{f"share_{s}": summary.shares[s] for s in STANCES},
        "net_stance": summary.net_stance, "summary": summary.to_api(),
    }
