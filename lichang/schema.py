"""The one definition of label names in code (mirrors ../shared/LABELS.md)."""

from __future__ import annotations

from typing import Final

STANCES: Final[tuple[str, ...]] = ("praise", "critique", "neutral")
TOPICS: Final[tuple[str, ...]] = ("marketing", "quality", "legal", "user_community")

STANCE_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(STANCES)}
TOPIC_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(TOPICS)}

# Fields every labeled record carries (LABELS.md "Record format").
REQUIRED_FIELDS: Final[tuple[str, ...]] = ("id", "article_id", "brand", "text", "stance", "topics")
# Fields our own data adds; optional for data that users bring.
OPTIONAL_FIELDS: Final[tuple[str, ...]] = (
    "aliases", "industry", "genre", "lang", "source_file",
)

# Net stance of a paragraph, used for article summaries: praise=+1, critique=-1.
STANCE_SIGN: Final[dict[str, int]] = {"praise": 1, "critique": -1, "neutral": 0}


class LabelError(ValueError):
    """A record names a stance or topic that LABELS.md does not define."""


def check_stance(value: object) -> str:
    if value not in STANCE_INDEX:
        raise LabelError(f"unknown stance {value!r}; expected one of {', '.join(STANCES)}")
    return str(value)


def check_topics(value: object) -> list[str]:
    if not isinstance(value, list):
        raise LabelError(f"topics must be a list, got {type(value).__name__}")
    unknown = [t for t in value if t not in TOPIC_INDEX]
    if unknown:
        raise LabelError(f"unknown topic(s) {unknown!r}; expected any of {', '.join(TOPICS)}")
    if len(set(value)) != len(value):
        raise LabelError(f"topics repeat a label: {value!r}")
    return list(value)
