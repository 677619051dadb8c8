"""Search filters: what a filter object means (equality, lists, time windows on numbers and ISO-8601
date-times) and which shapes are refused, with a message naming the problem; the request models of the
HTTP API apply the same rules (422)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tvifm.serve.api import ApiError, validate
from tvifm.serve.config import serve_config
from tvifm.serve.filters import FilterError, parse_filter, to_seconds
from tvifm.serve.schemas import request_models

T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC).timestamp()


def _matches(filter_: dict[str, Any], metadata: dict[str, Any]) -> bool:
    return parse_filter(filter_).matches(metadata)


@pytest.mark.parametrize(
    ("filter_", "metadata", "expected"),
    [
        ({"camera": 1}, {"camera": 1}, True),
        ({"camera": 1}, {"camera": 1.0}, True),  # numbers compare as numbers
        ({"camera": 1}, {"camera": True}, False),  # booleans only equal booleans
        ({"camera": 1}, {"camera": "1"}, False),
        ({"camera": 1}, {}, False),  # a missing key never matches
        ({"camera": [1, 2]}, {"camera": 2}, True),  # OR within a list
        ({"camera": [1, 2]}, {"camera": 3}, False),
        ({"camera": 1, "site": "gate"}, {"camera": 1, "site": "gate"}, True),  # AND across keys
        ({"camera": 1, "site": "gate"}, {"camera": 1, "site": "hall"}, False),
        ({"note": None}, {"note": None}, True),
        ({"note": None}, {}, False),
        ({"ts": {"gte": T0}}, {"ts": T0}, True),
        ({"ts": {"gt": T0}}, {"ts": T0}, False),
        ({"ts": {"lt": T0 + 1}}, {"ts": T0}, True),
        ({"ts": {"lte": T0 - 1}}, {"ts": T0}, False),
        # ISO-8601 values against numeric bounds and the other way round; no offset means UTC
        ({"ts": {"gte": T0, "lt": T0 + 3600}}, {"ts": "2024-05-01T00:30:00Z"}, True),
        ({"ts": {"gte": T0, "lt": T0 + 3600}}, {"ts": "2024-05-01T01:30:00+02:00"}, False),  # 23:30 UTC
        ({"ts": {"gte": "2024-05-01", "lt": "2024-05-02T00:00:00Z"}}, {"ts": T0 + 60}, True),
        ({"ts": {"gte": "2024-05-01T00:00:00"}}, {"ts": T0 - 1}, False),
        ({"ts": {"gte": "2024-05-01T03:00:00+02:00"}}, {"ts": "2024-05-01T01:00:00Z"}, True),
        ({"ts": {"gte": T0}}, {"ts": "yesterday"}, False),  # text that is no date-time
        ({"ts": {"gte": 0}}, {"ts": True}, False),
    ],
)
def test_filter_semantics(filter_: dict[str, Any], metadata: dict[str, Any], expected: bool) -> None:
    assert _matches(filter_, metadata) is expected


def test_iso_and_numeric_times_agree() -> None:
    assert to_seconds("2024-05-01T00:00:00Z") == T0 == to_seconds("2024-05-01")
    assert to_seconds("2024-05-01T02:00:00+02:00") == T0
    assert to_seconds("red") is None and to_seconds(None) is None and to_seconds(False) is None


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ([1, 2], "must be an object of metadata key"),
        ({"camera": []}, "camera: an empty list matches nothing"),
        ({"camera": [1, [2]]}, "camera: values are strings, finite numbers, booleans or null"),
        ({"camera": [{"gte": 1}]}, "camera: values are strings"),
        (
            {"camera": {"eq": 1}},
            "camera: an object is a range whose only keys are gt, gte, lt, lte; got 'eq'",
        ),
        ({"place": {"city": {"name": "x"}}}, "place: an object is a range"),
        ({"ts": {}}, "ts: a range needs at least one of gt, gte, lt, lte"),
        ({"ts": {"gt": 1, "gte": 2}}, "ts: give either gt or gte, not both"),
        ({"ts": {"gte": "2024-13-01"}}, "ts.gte: '2024-13-01' is neither a number nor an ISO-8601 date-time"),
        ({"ts": {"lt": "tomorrow"}}, "ts.lt: 'tomorrow' is neither a number"),
        ({"ts": {"lt": True}}, "ts.lt: bool is neither a number"),
        ({"ts": {"gte": 5, "lt": 3}}, "ts: the window {'gte': 5, 'lt': 3} is empty"),
        ({"ts": {"gt": 5, "lte": 5}}, "is empty"),
        ({f"k{i}": 1 for i in range(17)}, "at most 16 keys"),
        ({"": 1}, "keys are metadata names of 1-128 characters"),
        ({"n": 10**400}, "n: values are strings, finite numbers"),  # beyond the float range
        ({"n": float("nan")}, "n: values are strings, finite numbers"),
        ({"ts": {"gte": -(10**400)}}, "ts.gte: int is neither a number nor"),
    ],
)
def test_bad_filters_are_refused_naming_the_problem(filter_: Any, message: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(filter_)
    assert message in str(info.value)


def test_search_requests_validate_filter_min_score_and_rerank() -> None:
    models = request_models(serve_config({}))
    body = (
        b'{"mode": "text", "description": "a man", "filter": {"camera": [1, 2], "ts": {"gte": '
        b'"2024-05-01T00:00:00Z"}}, "min_score": 0.4, "rerank": true}'
    )
    req = validate(models.search, body)
    assert req.filter == {"camera": [1, 2], "ts": {"gte": "2024-05-01T00:00:00Z"}}
    assert req.min_score == 0.4 and req.rerank is True
    form = validate(
        models.search_fields,
        {"mode": "text", "filter": '{"site": "gate"}', "min_score": "0.5", "rerank": "1"},
    )
    assert form.filter == {"site": "gate"} and form.min_score == 0.5 and form.rerank is True
    assert validate(models.search, b'{"mode": "ir"}').filter is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"filter": {"ts": {"gte": "2024-02-30"}}}',
            "filter: Value error, ts.gte: '2024-02-30' is neither",
        ),
        (b'{"filter": {"camera": []}}', "filter: Value error, camera: an empty list matches nothing"),
        (b'{"filter": {"a": {"b": 1}}}', "filter: Value error, a: an object is a range"),
        (b'{"filter": "camera=1"}', "filter: Value error, must be an object"),
        (b'{"min_score": 1.5}', "min_score: Input should be less than or equal to 1"),
    ],
)
def test_bad_search_fields_are_422_naming_the_field(body: bytes, message: str) -> None:
    models = request_models(serve_config({}))
    with pytest.raises(ApiError) as info:
        validate(models.search, body)
    assert info.value.status == 422 and message in info.value.detail, info.value.detail


def test_a_multipart_filter_must_be_json() -> None:
    models = request_models(serve_config({}))
    with pytest.raises(ApiError) as info:
        validate(models.search_fields, {"filter": "{camera: 1}"})
    assert info.value.status == 422 and "filter: Value error, not valid JSON" in info.value.detail
