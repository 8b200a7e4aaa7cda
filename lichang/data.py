"""Labeled paragraphs on disk: reading JSONL strictly, checking it against LABELS.md, and counting it.

Every problem is reported with its file and line, so a person can fix the data;
`lichang data check` prints them all and a table of counts.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lichang.paragraphs import is_boilerplate
from lichang.schema import (
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    STANCES,
    TOPICS,
    LabelError,
    check_stance,
    check_topics,
)

# `<article_id>-p<index>` for an article's paragraphs in reading order; a `-t2`
# suffix marks the same paragraph labeled again for a second target brand.
SECOND_TARGET_SUFFIX = "-t2"
PARAGRAPH_ID = re.compile(rf"^(?P<article>.+)-p(?P<index>\d+)(?P<second>{SECOND_TARGET_SUFFIX})?$")


class DataError(ValueError):
    """Labeled data that cannot be used; the message names file and line."""


@dataclass
class Issue:
    path: str
    line: int  # 0 when the problem concerns a whole article
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


@dataclass
class CheckResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # the file each record came from

    @property
    def ok(self) -> bool:
        return not self.issues


def _validate_record(value: Any) -> str | None:
    """The problem with one parsed JSONL value, or None when it is a valid record."""
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    missing = [f for f in REQUIRED_FIELDS if f not in value]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    for name in ("id", "article_id", "brand", "text"):
        if not isinstance(value[name], str):
            return f"field {name} must be a string, got {type(value[name]).__name__}"
    if not value["text"].strip():
        return f"record {value['id']!r} has empty or whitespace-only text"
    if not value["brand"].strip():
        return f"record {value['id']!r} has an empty brand"
    try:
        check_stance(value["stance"])
        check_topics(value["topics"])
    except LabelError as exc:
        return f"record {value['id']!r}: {exc}"
    aliases = value.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        return f"record {value['id']!r}: aliases must be a list of strings"
    unknown = sorted(set(value) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        return f"record {value['id']!r}: unknown field(s) {', '.join(unknown)}"
    return None


def read_records(paths: Sequence[str | Path]) -> CheckResult:
    """Parse and validate every line of every file; collect issues instead of stopping at the first."""
    result = CheckResult()
    seen_ids: dict[str, str] = {}
    for path in map(Path, paths):
        if not path.is_file():
            result.issues.append(Issue(str(path), 0, "file not found"))
            continue
        raw = path.read_bytes()
        for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
            try:
                line = line_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                problem = f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
                result.issues.append(Issue(str(path), number, problem))
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                result.issues.append(Issue(str(path), number, f"malformed JSON: {exc.msg} (column {exc.colno})"))
                continue
            problem = _validate_record(value)
            if problem:
                result.issues.append(Issue(str(path), number, problem))
                continue
            if value["id"] in seen_ids:
                problem = f"duplicate id {value['id']!r} (first at {seen_ids[value['id']]})"
                result.issues.append(Issue(str(path), number, problem))
                continue
            seen_ids[value["id"]] = f"{path}:{number}"
            value.setdefault("aliases", [])
            result.records.append(value)
            result.sources.append(str(path))
    return result


def primary_id(row_id: str) -> str | None:
    """The id of the paragraph a second-target row repeats, or None for a primary row."""
    return row_id[: -len(SECOND_TARGET_SUFFIX)] if row_id.endswith(SECOND_TARGET_SUFFIX) else None


def check_article_order(result: CheckResult) -> None:
    """Each article's paragraphs must be p0..pN in file order, and second-target rows must copy a paragraph."""
    by_article: dict[str, list[tuple[int, dict[str, Any], str]]] = defaultdict(list)
    primary_by_id: dict[str, dict[str, Any]] = {}
    for record, source in zip(result.records, result.sources, strict=True):
        match = PARAGRAPH_ID.match(record["id"])
        if not match or match.group("article") != record["article_id"]:
            problem = f"id {record['id']!r} is not '<article_id>-p<index>' for article {record['article_id']!r}"
            result.issues.append(Issue(source, 0, problem))
            continue
        if match.group("second"):
            continue
        by_article[record["article_id"]].append((int(match.group("index")), record, source))
        primary_by_id[record["id"]] = record
    for article, rows in by_article.items():
        indices = [i for i, _, _ in rows]
        if indices != list(range(len(indices))):
            problem = (f"article {article!r}: paragraphs are not p0..p{len(indices) - 1} in order "
                       f"(got {indices[:8]}…); the article cannot be rebuilt")
            result.issues.append(Issue(rows[0][2], 0, problem))
        brands = {r["brand"] for _, r, _ in rows}
        if len(brands) > 1:
            problem = f"article {article!r}: its paragraphs name several target brands {sorted(brands)}"
            result.issues.append(Issue(rows[0][2], 0, problem))
    for record, source in zip(result.records, result.sources, strict=True):
        if (base_id := primary_id(record["id"])) is not None:
            base = primary_by_id.get(base_id)
            if base is None or base["text"] != record["text"] or base["brand"] == record["brand"]:
                problem = f"{record['id']!r}: a second-target row must repeat its paragraph's text with another brand"
                result.issues.append(Issue(source, 0, problem))


# A training row "repeats" a held-out row when one's text holds the other's whole and the held part is
# at least this long and at least half of the holder (punctuation and spaces ignored), or when they share
# most of a longer paragraph's 4-character pieces.
REPEAT_MIN_CHARS = 8
REPEAT_SHARE = 0.8
REPEAT_SHARE_MIN_PIECES = 15
_NOT_TEXT = re.compile(r"[\s\W_]+")


def _normalised(text: str) -> str:
    return _NOT_TEXT.sub("", text).lower()


def _pieces(text: str) -> set[str]:
    return {text[i : i + 4] for i in range(len(text) - 3)}


def held_out_repeats(rows: Sequence[dict[str, Any]], held_out: Sequence[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """(row, held-out row) pairs where a row repeats a dev or test paragraph, word for word or nearly.

    Training on such a row leaks the held-out split (briefs that quote dev errors as examples did
    this once). Boilerplate (bylines, credits, disclaimers) and rows of the same article are exempt."""

    def comparable_text(record: dict[str, Any]) -> str | None:
        text = _normalised(record["text"])
        boilerplate = is_boilerplate(record["text"]) or is_boilerplate(text)
        return text if len(text) >= REPEAT_MIN_CHARS and not boilerplate else None

    held = [(record, text, _pieces(text)) for record in held_out if (text := comparable_text(record))]
    held_with_piece: dict[str, list[int]] = defaultdict(list)
    for index, (_, _, pieces) in enumerate(held):
        for piece in pieces:
            held_with_piece[piece].append(index)
    found = []
    for row in rows:
        text = comparable_text(row)
        if text is None:
            continue
        pieces = _pieces(text)
        shared = Counter(i for piece in pieces for i in held_with_piece.get(piece, ()))
        for index, count in shared.items():
            other, other_text, other_pieces = held[index]
            if other["article_id"] == row["article_id"]:
                continue
            short, long = sorted((text, other_text), key=len)
            contained = short in long and 2 * len(short) >= len(long)
            smaller = min(len(pieces), len(other_pieces))
            if contained or (smaller >= REPEAT_SHARE_MIN_PIECES and count / smaller >= REPEAT_SHARE):
                found.append((row, other))
    return found


def check_held_out(result: CheckResult, held_out: Sequence[dict[str, Any]]) -> None:
    """Report each checked row that repeats a held-out row (see `held_out_repeats`)."""
    source_of = {id(record): source for record, source in zip(result.records, result.sources, strict=True)}
    for row, other in held_out_repeats(result.records, held_out):
        problem = (f"{row['id']!r} repeats held-out paragraph {other['id']!r} ({other['text'][:30]!r}); "
                   "training on it would leak dev/test: rewrite it in new words")
        result.issues.append(Issue(source_of[id(row)], 0, problem))


def check_files(paths: Sequence[str | Path]) -> CheckResult:
    result = read_records(paths)
    check_article_order(result)
    return result


def load_records(paths: Sequence[str | Path], require_order: bool = False) -> list[dict[str, Any]]:
    """Valid records, or a DataError listing every problem (first 20)."""
    result = check_files(paths) if require_order else read_records(paths)
    if not result.ok:
        listed = "\n".join(f"  {issue}" for issue in result.issues[:20])
        more = f"\n  … and {len(result.issues) - 20} more" if len(result.issues) > 20 else ""
        raise DataError(f"{len(result.issues)} problem(s) in labeled data:\n{listed}{more}")
    return result.records


def split_name(source: str) -> str:
    return Path(source).stem


def count_table(result: CheckResult) -> str:
    """Counts by split (file), brand, industry, stance and topic, as plain-text tables."""
    records, sources = result.records, result.sources
    sections: list[str] = []

    def table(title: str, key_of, items: Iterable[tuple[dict[str, Any], str]]) -> None:
        rows: dict[str, Counter] = defaultdict(Counter)
        for record, source in items:
            for key in key_of(record, source):
                rows[key]["paragraphs"] += 1
                rows[key][record["stance"]] += 1
                for topic in record["topics"]:
                    rows[key][topic] += 1
                if not record["topics"]:
                    rows[key]["no topic"] += 1
        columns = ["paragraphs", *STANCES, *TOPICS, "no topic"]
        width = max([len(title), *(len(k) for k in rows)]) + 2
        lines = [title.ljust(width) + "".join(c.rjust(15) for c in columns)]
        for key in sorted(rows, key=lambda k: -rows[k]["paragraphs"]):
            lines.append(key.ljust(width) + "".join(str(rows[key][c]).rjust(15) for c in columns))
        sections.append("\n".join(lines))

    pairs = list(zip(records, sources, strict=True))
    table("split", lambda r, s: [split_name(s)], pairs)
    table("industry", lambda r, s: [r.get("industry", "(none)")], pairs)
    table("brand", lambda r, s: [r["brand"]], pairs)
    table("genre", lambda r, s: [r.get("genre", "(none)")], pairs)
    articles = {r["article_id"] for r in records}
    summary = (f"{len(records)} paragraph rows in {len(articles)} articles, "
               f"{len({r['brand'] for r in records})} brands, "
               f"{len({r.get('industry') for r in records if r.get('industry')})} industries")
    return summary + "\n\n" + "\n\n".join(sections)
