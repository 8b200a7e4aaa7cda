"""Reading the night's articles: folders of .txt/.md files, JSONL files, or globs of either.

Every input becomes either an `Article` or a `BadRecord` naming the file and
line, so one unreadable record is reported and recorded instead of stopping the
run. Inputs are read lazily, in a stable (sorted) order, so a rerun sees the
same articles in the same order.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from lichang.paragraphs import split_paragraphs

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)
SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES
MAX_ID_CHARS = 512
MAX_BRAND_CHARS = 200


class InputError(ValueError):
    """The inputs named on the command line cannot be used at all (a usage error, not a bad record)."""


@dataclass(frozen=True)
class Article:
    """One article to score for one brand, read from `file` at `line` (line 1 for a .txt/.md file)."""

    id: str
    brand: str
    text: str
    paragraphs: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    title: str | None = None
    source: str | None = None
    published_at: date | None = None
    file: str = ""
    line: int = 0

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def key(self) -> tuple[str, str]:
        return self.id, self.brand

    @property
    def content_hash(self) -> str:
        """What the scores depend on: the paragraphs, the brand and the aliases (whitespace-only edits don't count)."""
        payload = json.dumps(["\n".join(self.paragraphs), self.brand, list(self.aliases)], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class BadRecord:
    """A record that cannot be scored, with where it is and why."""

    file: str
    line: int
    reason: str
    record_id: str | None = None
    raw: bytes = field(default=b"", repr=False)

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def raw_hash(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def __str__(self) -> str:
        named = f" (id {self.record_id!r})" if self.record_id else ""
        return f"{self.origin}: {self.reason}{named}"


Record = Article | BadRecord


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: str  # how the file is named in ids, reports and the store: relative to the folder or glob base


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard: ids are relative to it."""
    parts: list[str] = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _relative_name(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def find_inputs(specs: Sequence[str]) -> list[InputFile]:
    """Expand folders (recursively) and globs into readable files; a path that does not exist is a usage error.

    A glob that matches nothing is not an error: an empty inbox is a normal night.
    """
    found: dict[Path, InputFile] = {}
    for spec in specs:
        path = Path(spec)
        if glob.has_magic(spec):
            base = _glob_base(spec)
            matches = [Path(m) for m in sorted(glob.glob(spec, recursive=True))]
            candidates = [m for m in matches if m.is_file() and m.suffix.lower() in SUFFIXES]
            for folder in (m for m in matches if m.is_dir()):
                candidates += _walk(folder)
        elif path.is_dir():
            base = path
            candidates = _walk(path)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise InputError(f"{spec}: unsupported file type {path.suffix!r}; give .txt, .md or .jsonl files")
            base = path.parent
            candidates = [path]
        else:
            raise InputError(f"{spec}: no such file or folder (give a folder, a .txt/.md/.jsonl file or a glob)")
        for candidate in candidates:
            found.setdefault(candidate.resolve(), InputFile(candidate, _relative_name(candidate, base)))
    return sorted(found.values(), key=lambda f: (f.name, str(f.path)))


def _walk(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # skip .git, editor folders …
        files += [Path(root) / n for n in sorted(names)
                  if not n.startswith(".") and Path(n).suffix.lower() in SUFFIXES]
    return files


def count_records(files: Sequence[InputFile]) -> int:
    """A cheap estimate of the records ahead (files + non-blank JSONL lines), for the progress bar."""
    total = 0
    for f in files:
        if f.path.suffix.lower() in JSONL_SUFFIXES:
            with f.path.open("rb") as handle:
                total += sum(1 for line in handle if line.strip())
        else:
            total += 1
    return total


def read_records(files: Sequence[InputFile], brand: str | None = None,
                 aliases: Sequence[str] = ()) -> Iterator[Record]:
    """Every article of every file in order; `brand`/`aliases` apply where a record gives none."""
    for f in files:
        if f.path.suffix.lower() in JSONL_SUFFIXES:
            yield from _read_jsonl(f, brand, tuple(aliases))
        else:
            yield _read_text_file(f, brand, tuple(aliases))


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8-sig") if raw.startswith(b"\xef\xbb\xbf") else raw.decode("utf-8")


def _read_text_file(f: InputFile, brand: str | None, aliases: tuple[str, ...]) -> Record:
    raw = f.path.read_bytes()
    try:
        text = _decode(raw)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return BadRecord(f.name, line, f"not valid UTF-8 (byte {exc.start}); convert it, e.g. iconv -f GBK -t UTF-8",
                         f.name, raw)
    return _article(f.name, 1, {"id": f.name, "text": text}, brand, aliases, raw)


def _read_jsonl(f: InputFile, brand: str | None, aliases: tuple[str, ...]) -> Iterator[Record]:
    with f.path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                line = _decode(raw) if number == 1 else raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadRecord(f.name, number, f"not valid UTF-8 (byte {exc.start} of the line)", None, raw)
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield BadRecord(f.name, number, f"not valid JSON ({exc.msg} at column {exc.colno})", None, raw)
                continue
            if not isinstance(value, dict):
                yield BadRecord(f.name, number, f"expected a JSON object, got {type(value).__name__}", None, raw)
                continue
            yield _article(f.name, number, value, brand, aliases, raw)


def _article(file: str, line: int, value: dict, default_brand: str | None, default_aliases: tuple[str, ...],
             raw: bytes) -> Record:
    """Validate one record's fields into an Article, or say what is wrong with it."""
    record_id = value.get("id")
    shown_id = str(record_id) if isinstance(record_id, str | int) and not isinstance(record_id, bool) else None

    def bad(reason: str) -> BadRecord:
        return BadRecord(file, line, reason, shown_id, raw)

    if shown_id is None or not shown_id.strip():
        return bad("missing 'id' (a non-empty string or number)")
    if len(shown_id) > MAX_ID_CHARS:
        return bad(f"'id' is longer than {MAX_ID_CHARS} characters")
    text = value.get("text")
    if not isinstance(text, str):
        return bad("missing 'text' (a string)" if text is None
                   else f"'text' must be a string, got {type(text).__name__}")
    paragraphs = tuple(split_paragraphs(text))
    if not paragraphs:
        return bad("empty text: nothing to score")
    brand = value.get("brand") or default_brand
    if not isinstance(brand, str) or not brand.strip():
        return bad("no brand: give 'brand' in the record or a default with --brand")
    if len(brand.strip()) > MAX_BRAND_CHARS:
        return bad(f"'brand' is longer than {MAX_BRAND_CHARS} characters")
    aliases = value.get("aliases")
    if aliases is None or aliases == "":
        alias_list = default_aliases if not value.get("brand") or value.get("brand") == default_brand else ()
    elif isinstance(aliases, str):
        alias_list = tuple(a.strip() for a in aliases.split(",") if a.strip())
    elif isinstance(aliases, list) and all(isinstance(a, str) for a in aliases):
        alias_list = tuple(a.strip() for a in aliases if a.strip())
    else:
        return bad("'aliases' must be a list of strings or a comma-separated string")
    optional: dict[str, str | None] = {}
    for name in ("title", "source"):
        item = value.get(name)
        if item is not None and not isinstance(item, str):
            return bad(f"'{name}' must be a string, got {type(item).__name__}")
        optional[name] = (item.strip() or None) if isinstance(item, str) else None
    try:
        published = parse_date(value.get("published_at"))
    except ValueError as exc:
        return bad(str(exc))
    return Article(id=shown_id.strip(), brand=brand.strip(), text=text, paragraphs=paragraphs, aliases=alias_list,
                   title=optional["title"], source=optional["source"], published_at=published, file=file, line=line)


def parse_date(value: object) -> date | None:
    """`published_at` as a date: ISO date or datetime (its calendar date as written, no time-zone shift)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text[:10]) if len(text) == 10 else datetime.fromisoformat(text).date()
        except ValueError:
            pass
    raise ValueError(f"'published_at' {value!r} is not an ISO date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)")


def parse_day(text: str | None, option: str = "--date") -> date:
    """A YYYY-MM-DD command-line date; today (local time) when not given."""
    if not text:
        return date.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option} {text!r} is not a date: use YYYY-MM-DD") from None
