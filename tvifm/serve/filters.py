"""Metadata filters of gallery searches: the one definition of what a ``filter`` object means.

A filter is a JSON object of metadata key -> condition; an item matches when it satisfies every key's
condition (AND across keys):

- a scalar (string, number, boolean or null): the item's value for that key equals it (numbers compare
  as numbers, so ``1`` equals ``1.0``; booleans equal only booleans; ``null`` matches a stored null);
- a non-empty list of scalars: the item's value equals one of them (OR within the list);
- a range, an object of ``gt``/``gte``/``lt``/``lte`` bounds: the item's value lies in the window. Bounds
  and stored values are numbers or ISO-8601 date-times and compare as seconds since the Unix epoch
  (``"2024-05-01T12:00:00Z"``; a date-time without an offset is UTC, a date alone is its midnight UTC), so
  a ``timestamp`` stored as epoch seconds or as an ISO string answers the same window.

An item without the key, or whose value is of another kind (a string against a number, text that is not
a date-time against a range), does not match. :func:`parse_filter` validates a filter object and raises
:class:`FilterError` naming the key and what is allowed; :class:`MetadataFilter` evaluates it, one item
at a time (:meth:`MetadataFilter.matches`) or, through :func:`value_key` and :func:`to_seconds`, on the
columns of a gallery index (``tvifm.serve.vectors``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tvifm.errors import TvifmError

RANGE_OPS = ("gt", "gte", "lt", "lte")
MAX_KEYS = 16
MAX_VALUES = 256
MAX_KEY_CHARS = 128
Scalar = str | int | float | bool | None


class FilterError(TvifmError, ValueError):
    """A search filter has a shape or value the service does not accept (the message says which)."""


def value_key(value: Any) -> tuple[str, Any] | None:
    """The equality class of a scalar metadata value (``None`` for a non-scalar): booleans apart from
    numbers, numbers by value (``1 == 1.0``), strings by text, null."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value) if _finite(value) is not None else None
    if isinstance(value, str):
        return ("str", value)
    return None


def _finite(value: int | float) -> float | None:
    """``value`` as a finite float, or None (NaN, infinities, integers beyond the float range)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def to_seconds(value: Any) -> float | None:
    """A number, or an ISO-8601 date-time as seconds since the Unix epoch; ``None`` for anything else
    (booleans, null, other text)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return _finite(value)
    if isinstance(value, str):
        return _iso_seconds(value)
    return None


def _iso_seconds(text: str) -> float | None:
    if not 8 <= len(text) <= 64 or not text[:4].isdigit():  # fromisoformat needs a date first
        return None
    try:
        when = dt.datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    except (ValueError, OverflowError):  # not ISO-8601, or beyond the years datetime can shift
        return None


@dataclass(frozen=True)
class Equals:
    """The item's value for ``key`` is one of ``values`` (equality classes of :func:`value_key`)."""

    key: str
    values: frozenset[tuple[str, Any]]

    def accepts(self, value: Any) -> bool:
        """Whether a stored value satisfies the condition."""
        return value_key(value) in self.values


@dataclass(frozen=True)
class Window:
    """The item's value for ``key`` (in seconds, :func:`to_seconds`) lies between the bounds."""

    key: str
    low: float = -math.inf
    low_inclusive: bool = True
    high: float = math.inf
    high_inclusive: bool = True

    def accepts(self, value: Any) -> bool:
        """Whether a stored value satisfies the condition."""
        seconds = to_seconds(value)
        return seconds is not None and self.contains(seconds)

    def contains(self, seconds: float) -> bool:
        """Whether ``seconds`` lies in the window."""
        above = seconds >= self.low if self.low_inclusive else seconds > self.low
        below = seconds <= self.high if self.high_inclusive else seconds < self.high
        return above and below


Condition = Equals | Window


@dataclass(frozen=True)
class MetadataFilter:
    """A validated filter: every condition must hold (see the module docstring)."""

    conditions: tuple[Condition, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """Whether an item with ``metadata`` matches (a missing key never does)."""
        return all(c.key in metadata and c.accepts(metadata[c.key]) for c in self.conditions)


def parse_filter(data: Any) -> MetadataFilter:
    """Validate a filter object (see the module docstring) into a :class:`MetadataFilter`.

    Raises :class:`FilterError` for anything else: a non-object, too many keys, an empty or over-long
    key, an empty or over-long list, a list holding lists or objects, an object other than a range, a
    range with an unknown operator, no bound, both ``gt`` and ``gte`` (or ``lt`` and ``lte``), a bound
    that is neither a number nor an ISO-8601 date-time, or an empty window.
    """
    if not isinstance(data, Mapping):
        raise FilterError(
            "must be an object of metadata key -> value, list of values or range, e.g. "
            '{"camera": [1, 2], "timestamp": {"gte": "2024-05-01T00:00:00Z"}}'
        )
    if len(data) > MAX_KEYS:
        raise FilterError(f"at most {MAX_KEYS} keys, got {len(data)}")
    return MetadataFilter(tuple(_condition(key, value) for key, value in data.items()))


def _condition(key: Any, value: Any) -> Condition:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
        raise FilterError(f"keys are metadata names of 1-{MAX_KEY_CHARS} characters, got {key!r}")
    if isinstance(value, Mapping):
        return _window(key, value)
    if isinstance(value, list | tuple):
        if not value:
            raise FilterError(f"{key}: an empty list matches nothing; give one or more values")
        if len(value) > MAX_VALUES:
            raise FilterError(f"{key}: at most {MAX_VALUES} values, got {len(value)}")
        return Equals(key, frozenset(_scalar(key, v) for v in value))
    return Equals(key, frozenset([_scalar(key, value)]))


def _scalar(key: str, value: Any) -> tuple[str, Any]:
    found = value_key(value)
    if found is None:
        raise FilterError(
            f"{key}: values are strings, finite numbers, booleans or null (a list may hold only those), "
            f"got {type(value).__name__}"
        )
    return found


def _window(key: str, ops: Mapping[str, Any]) -> Window:
    unknown = sorted(str(op) for op in ops if op not in RANGE_OPS)
    if unknown:
        raise FilterError(
            f"{key}: an object is a range whose only keys are {', '.join(RANGE_OPS)}; got {unknown[0]!r}"
        )
    if not ops:
        raise FilterError(f"{key}: a range needs at least one of {', '.join(RANGE_OPS)}")
    for a, b in (("gt", "gte"), ("lt", "lte")):
        if a in ops and b in ops:
            raise FilterError(f"{key}: give either {a} or {b}, not both")
    bounds = {op: _bound(key, op, v) for op, v in ops.items()}
    low_op = "gt" if "gt" in bounds else "gte"
    high_op = "lt" if "lt" in bounds else "lte"
    window = Window(
        key,
        bounds.get(low_op, -math.inf),
        low_op == "gte",
        bounds.get(high_op, math.inf),
        high_op == "lte",
    )
    empty = window.low > window.high or (
        window.low == window.high and not (window.low_inclusive and window.high_inclusive)
    )
    if empty:
        raise FilterError(f"{key}: the window {dict(ops)} is empty (its lower bound is above its upper)")
    return window


def _bound(key: str, op: str, value: Any) -> float:
    seconds = to_seconds(value)
    if seconds is None:
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise FilterError(
            f"{key}.{op}: {shown} is neither a number nor an ISO-8601 date-time "
            '(e.g. 1714560000 or "2024-05-01T12:00:00Z")'
        )
    return seconds
