"""Fuzzing the live service from its own OpenAPI schema: no request it documents causes a 5xx, and
responses match the documented status codes, content types and schemas. The schema states every rule
the handlers enforce (per-mode inputs, id patterns, limits), so every request that violates it is
rejected with a 4xx (``negative_data_rejection``)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from conftest import Service
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = 25  # per operation and generation mode: bounded so the module stays well under a minute


OPERATIONS = [
    ("POST", "/v1/search"),
    ("POST", "/v1/gallery"),
    ("DELETE", "/v1/gallery/{item_id}"),
    ("GET", "/v1/gallery/stats"),
    ("GET", "/v1/model"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(service: Service) -> Any:
    return schemathesis.openapi.from_url(f"{service.url}/openapi.json")


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


WITH_INPUT = {("POST", "/v1/search"), ("POST", "/v1/gallery"), ("DELETE", "/v1/gallery/{item_id}")}
CASES = [(*op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (*op, GenerationMode.NEGATIVE)
    for op in OPERATIONS
    if op in WITH_INPUT  # schema-violating inputs
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=lambda v: str(v))
def test_no_server_errors_and_documented_responses(
    api_schema: Any, service: Service, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    auth = {"Authorization": f"Bearer {service.token}"}

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def fuzz(case: schemathesis.Case) -> None:
        checks = [*CHECKS, negative_data_rejection] if mode == GenerationMode.NEGATIVE else CHECKS
        case.call_and_validate(base_url=service.url, headers=auth, checks=checks, timeout=60)

    fuzz()
