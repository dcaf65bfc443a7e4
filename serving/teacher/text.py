"""The ONE function that turns a pin's text features into the teacher's input text.

Training (`freshlabel teacher train`), evaluation, the Triton model and the continuous
labeler all call `build_pin_text`, so a model only ever sees text built the same way.
It is pure and fast (string work only, no tokenizer): the labeler calls it on every row.

Each present field becomes `<marker>: <text>` and fields are joined by ` | `, in order of
how much they say about relevance (title first, the long description last). Absent
fields (None, empty, or only whitespace) are skipped, never filled with placeholders.
Each field is cut to a budget of whitespace-separated words (roughly 0.75 WordPiece
tokens each), so one long description cannot crowd out the title inside `max_length`.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# (field, marker, word budget), in output order.
FIELDS: tuple[tuple[str, str, int], ...] = (
    ("title", "title", 32),
    ("link_title", "link", 16),
    ("caption", "caption", 32),
    ("board_titles", "boards", 24),
    ("top_queries", "searches", 16),
    ("description", "description", 48),
)
FIELD_SEPARATOR = " | "
LIST_SEPARATOR = "; "
# Board titles and top queries beyond these many entries add little and cost tokens.
MAX_LIST_ITEMS = 5

_TAG = re.compile(r"<[^>]{0,200}>")
_SPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Unescape HTML entities, drop tags, collapse whitespace (descriptions are scraped)."""
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return _SPACE.sub(" ", text).strip()


def _cut(text: str, budget: int) -> str:
    words = text.split(" ")
    return text if len(words) <= budget else " ".join(words[:budget])


def _field_text(value: str | Sequence[str] | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return clean_text(value)
    items = [clean_text(v) for v in value if v is not None]
    items = [v for v in items if v]
    # Keep order (most relevant first) but drop repeats, e.g. the same board name twice.
    unique = list(dict.fromkeys(items))[:MAX_LIST_ITEMS]
    return LIST_SEPARATOR.join(unique)


def build_pin_text(
    *,
    title: str | None = None,
    description: str | None = None,
    caption: str | None = None,
    board_titles: Sequence[str] | None = None,
    top_queries: Sequence[str] | None = None,
    link_title: str | None = None,
) -> str:
    """The pin's text for the teacher, e.g. `title: Oak desk | description: Solid oak ...`.

    Takes exactly the text features of `schemas.enriched_impression.EnrichedImpression`.
    Returns "" when no field is present (the teacher then sees the query alone).
    """
    values = {
        "title": title,
        "description": description,
        "caption": caption,
        "board_titles": board_titles,
        "top_queries": top_queries,
        "link_title": link_title,
    }
    parts = []
    for field, marker, budget in FIELDS:
        text = _field_text(values[field])
        if text:
            parts.append(f"{marker}: {_cut(text, budget)}")
    return FIELD_SEPARATOR.join(parts)


def clean_query(query: str) -> str:
    return clean_text(query).lower()


_MARKERS = {marker: field for field, marker, _ in FIELDS}
_FIELD_NAMES = tuple(field for field, _, _ in FIELDS)


def split_pin_text(pin_text: str) -> dict[str, str]:
    """Inverse of `build_pin_text` for the lexical features: {field: text} of each part.

    Text that a pin's own content put after ` | ` stays with the field before it.
    """
    fields: dict[str, str] = {}
    current: str | None = None
    for part in pin_text.split(FIELD_SEPARATOR):
        marker, sep, rest = part.partition(": ")
        if sep and marker in _MARKERS and _MARKERS[marker] not in fields:
            current = _MARKERS[marker]
            fields[current] = rest
        elif current is not None:
            fields[current] += FIELD_SEPARATOR + part
    return fields


def trim_pin_text(pin_text: str, budgets: Mapping[str, int], markers: bool = True) -> str:
    """`pin_text` with some fields cut to smaller word budgets: another model's view of
    the same pin (the bi-encoder reads the title and a description's first words).

    Args:
        pin_text: a text from `build_pin_text`.
        budgets: {field: words}; 0 drops the field; fields not named keep their text.
        markers: keep `build_pin_text`'s format (`title: ... | description: ...`); False
            joins the fields' words with single spaces (a zero-shot sentence encoder was
            never trained on the markers: they only cost tokens there).

    Returns:
        The trimmed text, fields in `build_pin_text`'s order.

    Raises:
        ValueError: a budget names no field of `FIELDS` or is negative.
    """
    return PinView(budgets, markers)(pin_text)


def _trim(
    pin_text: str,
    budgets: Mapping[str, int],
    markers: bool,
    stopwords: frozenset[str] = frozenset(),
    stopword_fields: tuple[str, ...] = (),
) -> str:
    """`trim_pin_text` for budgets already checked (a `PinView`'s, once, not per pin)."""
    if not budgets and markers and not stopword_fields:
        return pin_text
    fields = split_pin_text(pin_text)
    parts = []
    for field, marker, _ in FIELDS:
        text = fields.get(field)
        budget = budgets.get(field)
        if text and field in stopword_fields:
            text = drop_stopwords(text, stopwords)
        if text and budget != 0:
            text = text if budget is None else _cut(text, budget)
            parts.append(f"{marker}: {text}" if markers else text)
    return (FIELD_SEPARATOR if markers else " ").join(parts)


_NOT_WORD = re.compile(r"[^\w]+")


def drop_stopwords(text: str, stopwords: frozenset[str]) -> str:
    """`text` without the words in `stopwords` (matched lowercased, punctuation ignored:
    "The" and "with," go, "180°" and "-" stay); the other words keep their form."""
    kept = [w for w in text.split(" ") if _NOT_WORD.sub("", w.lower()) not in stopwords]
    return " ".join(kept)


def english_stopwords() -> frozenset[str]:
    """scikit-learn's English stop words (318 function words). Needed only to train: a
    teacher's manifest records the list its cross-encoder was trained with, and serving
    reads that list, so the two cannot drift apart."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


@dataclass(frozen=True)
class PinView:
    """What one model reads of a pin text: `trim_pin_text` with fixed budgets and format,
    and the fields whose stop words it drops.

    The default view is the pin text unchanged. A teacher's manifest records both
    encoders' views (`bi_encoder_budgets`, `bi_encoder_markers`; the cross-encoder's
    `cross_encoder_stopword_fields` with the `cross_encoder_stopwords` list), so serving
    reads pins exactly as training did.
    """

    budgets: Mapping[str, int] = dataclasses.field(default_factory=dict)
    markers: bool = True
    stopwords: frozenset[str] = frozenset()
    # Fields whose words in `stopwords` are dropped (before any budget cut).
    stopword_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_budgets(self.budgets)
        check_fields(self.stopword_fields)

    def __call__(self, pin_text: str) -> str:
        return _trim(pin_text, self.budgets, self.markers, self.stopwords, self.stopword_fields)


def check_fields(fields: Sequence[str], what: str = "") -> Sequence[str]:
    """Refuse field names that `build_pin_text` does not write (names the fix).

    Args:
        fields: field names.
        what: what the names are for, to start the message with (e.g. "word budget for ").

    Raises:
        ValueError: an unknown field.
    """
    for field in fields:
        if field not in _FIELD_NAMES:
            raise ValueError(
                f"{what}unknown pin text field {field!r}: use one of {', '.join(_FIELD_NAMES)}"
            )
    return fields


def check_budgets(budgets: Mapping[str, int]) -> Mapping[str, int]:
    """Refuse word budgets for unknown fields or below 0 (names the field and the fix).

    Raises:
        ValueError: an unknown field or a negative budget.
    """
    check_fields(list(budgets), "word budget for ")
    for field, words in budgets.items():
        if not isinstance(words, int) or words < 0:
            raise ValueError(
                f"word budget of {field!r} is {words!r}: give a whole number of words, "
                "0 to drop the field"
            )
    return budgets
