"""Filters on an index's entries: a user's filter parsed and checked against the fields' types
(:func:`parse_filter`) into :data:`Condition` s, and conditions turned into a Qdrant library's types
through its :class:`Dialect` (:func:`build_filter`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from uniembed.errors import InvalidInput

ENTRY_FIELDS = {"id": "keyword", "kind": "keyword", "page": "integer"}  # indexed on every index
FIELD_TYPES = ("keyword", "integer", "float", "bool")
RANGE_KEYS = ("gte", "gt", "lte", "lt")


@dataclass(frozen=True)
class Match:
    key: str
    value: str | int | bool


@dataclass(frozen=True)
class MatchAny:
    key: str
    values: tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True)
class Range:
    key: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None


@dataclass(frozen=True)
class HasIds:
    ids: tuple[str, ...]


Condition = Match | MatchAny | Range | HasIds


def parse_filter(
    spec: Mapping[str, Any] | None, fields: Mapping[str, str] | None = None
) -> tuple[Condition, ...]:
    """A user filter (all keys must match) → conditions. Keys are ``id``, ``kind``, ``page`` or
    ``metadata.<field>`` (dotted for nested fields); values are a scalar (equal), a list (any of) or
    ``{"gte"|"gt"|"lte"|"lt": number}`` (a range). Values are checked against the field's type in
    ``fields`` (path → keyword | integer | float | bool; default: the fields of every index), so a
    filter that could never match says why instead of finding nothing.

    >>> parse_filter({"metadata.lang": "en", "page": {"gte": 2}, "id": ["a", "b"]})
    ... # doctest: +NORMALIZE_WHITESPACE
    (Match(key='metadata.lang', value='en'), Range(key='page', gte=2, gt=None, lte=None, lt=None),
     MatchAny(key='id', values=('a', 'b')))
    >>> parse_filter({"page": "3"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    uniembed.errors.InvalidInput: filter field 'page' is an integer field: give an integer, ...
    """
    if spec is None:
        return ()
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"filter must be an object of field → value, got {type(spec).__name__}")
    types = ENTRY_FIELDS if fields is None else fields
    return tuple(_condition(str(key), value, types.get(str(key))) for key, value in spec.items())


FILTER_FORMS = {  # what a filter on each field type may give
    "keyword": "a string or a list of strings",
    "integer": "an integer, a list of integers or a range",
    "float": "a range",
    "bool": "true or false",
}
KINDS = ("text", "image", "page")  # the values of ``kind``
_SEGMENT = r'(?:[\w-]+|"[^"]*")(?:\[\d{0,18}\])*'
FIELD_PATH = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")  # Qdrant's JSON paths, as both parse them
PATH_RULE = (
    'dotted names of letters, digits, _ and -, or "quoted", each optionally followed by [] (every '
    "element) or [n]"
)


def _condition(key: str, value: Any, kind: str | None) -> Condition:
    """One condition, ``value`` checked against the field type ``kind`` (``None``: undeclared)."""
    if key not in ENTRY_FIELDS and not (
        key.startswith("metadata.") and len(key) > len("metadata.")
    ):
        raise InvalidInput(f"filter field {key!r:.80}: use id, kind, page or metadata.<field>")
    _check_filter_text(key, key)
    if not FIELD_PATH.fullmatch(key):
        raise InvalidInput(f"filter field {key!r:.80} is not a valid field path: {PATH_RULE}")
    condition = _untyped_condition(key, value)
    if kind is not None and not _fits(condition, kind):
        raise InvalidInput(
            f"filter field {key!r} is {'an' if kind == 'integer' else 'a'} {kind} field: give "
            f"{FILTER_FORMS[kind]}"
        )
    if key == "kind":
        values = [condition.value] if isinstance(condition, Match) else condition.values  # type: ignore[union-attr]
        if any(v not in KINDS for v in values):
            raise InvalidInput(f"filter field 'kind': kind is one of {', '.join(KINDS)}")
    return condition


def _untyped_condition(key: str, value: Any) -> Condition:
    """The condition ``value`` asks for, each value checked for what the store can take."""
    if isinstance(value, Mapping):
        unknown = set(value) - set(RANGE_KEYS)
        if unknown or not value or not all(_is_number(v) for v in value.values()):
            raise InvalidInput(
                f"filter field {key!r}: a range is an object of {', '.join(RANGE_KEYS)} → number"
            )
        if not all(math.isfinite(v) for v in value.values()):
            raise InvalidInput(f"filter field {key!r}: range bounds must be finite numbers")
        return Range(key, **{k: v for k, v in value.items()})
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            for v in value:
                _check_filter_text(key, v)
            return MatchAny(key, tuple(value))
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            for v in value:
                _check_filter_integer(key, v)
            return MatchAny(key, tuple(value))
        raise InvalidInput(f"filter field {key!r}: a list must hold only strings or only integers")
    if isinstance(value, str):
        _check_filter_text(key, value)
    elif isinstance(value, int) and not isinstance(value, bool):
        _check_filter_integer(key, value)
    elif not isinstance(value, bool):
        raise InvalidInput(
            f"filter field {key!r}: expected a string, integer, boolean, list or range"
        )
    return Match(key, value)


def _fits(condition: Condition, kind: str) -> bool:
    """Whether ``condition`` can match a value of field type ``kind``."""
    if isinstance(condition, Range):
        return kind in ("integer", "float")
    values = [condition.value] if isinstance(condition, Match) else list(condition.values)  # type: ignore[union-attr]
    if kind == "keyword":
        return all(isinstance(v, str) for v in values)
    if kind == "integer":
        return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if kind == "bool":
        return isinstance(condition, Match) and isinstance(condition.value, bool)
    return False  # float: ranges only


def _check_filter_text(key: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"filter field {key!r:.80}: a lone surrogate is not valid Unicode"
        ) from None


def _check_filter_integer(key: str, value: int) -> None:
    if not -(2**63) <= value < 2**63:
        raise InvalidInput(f"filter field {key!r}: {value} is beyond a signed 64-bit integer")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Dialect(Protocol):
    """A library's constructors for filter conditions (what an adapter supplies)."""

    def match(self, key: str, value: str | int | bool) -> Any: ...
    def match_any(self, key: str, values: Sequence[str] | Sequence[int]) -> Any: ...
    def range(
        self, key: str, gte: float | None, gt: float | None, lte: float | None, lt: float | None
    ) -> Any: ...
    def has_ids(self, ids: Sequence[str]) -> Any: ...
    def all_of(self, conditions: list[Any]) -> Any: ...


def build_filter(conditions: Sequence[Condition], dialect: Dialect) -> Any:
    """``conditions`` in a library's types (all must hold), or ``None`` for no filter."""
    if not conditions:
        return None
    return dialect.all_of([_build_condition(condition, dialect) for condition in conditions])


def _build_condition(condition: Condition, dialect: Dialect) -> Any:
    if isinstance(condition, Match):
        return dialect.match(condition.key, condition.value)
    if isinstance(condition, MatchAny):
        return dialect.match_any(condition.key, list(condition.values))
    if isinstance(condition, Range):
        return dialect.range(
            condition.key, condition.gte, condition.gt, condition.lte, condition.lt
        )
    return dialect.has_ids(list(condition.ids))
