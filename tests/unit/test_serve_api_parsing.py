"""Request parsing helpers of the HTTP API (the routes themselves are tested on a live Serve deployment)."""

from __future__ import annotations

import base64
import textwrap

import pytest

from tvifm.serve.api import ApiError, decode_base64, validate
from tvifm.serve.config import serve_config
from tvifm.serve.schemas import request_models


def test_base64_forms_clients_send() -> None:
    data = bytes(range(256)) * 4
    plain = base64.b64encode(data).decode()
    assert decode_base64(plain, "image", 2048) == data
    assert decode_base64("data:image/png;base64," + plain, "image", 2048) == data
    assert decode_base64(textwrap.fill(plain, 76), "image", 2048) == data  # `base64` wraps lines


@pytest.mark.parametrize(
    ("text", "limit", "status", "message"),
    [
        ("abc$", 100, 422, "image: not valid base64"),
        (base64.b64encode(b"x" * 200).decode(), 100, 413, "exceeds the limit of 100 bytes"),
        (base64.b64encode(b"x" * 101).decode(), 100, 413, "image of 101 bytes"),
    ],
)
def test_bad_base64_and_oversized_images(text: str, limit: int, status: int, message: str) -> None:
    with pytest.raises(ApiError) as info:
        decode_base64(text, "image", limit)
    assert info.value.status == status and message in info.value.detail


def test_validation_errors_name_the_fields() -> None:
    models = request_models(serve_config({"max_top_k": 20}))
    with pytest.raises(ApiError) as info:
        validate(models.search, b'{"mode": "ir", "top_k": 21, "extra": 1}')
    assert info.value.status == 422
    assert "top_k: Input should be less than or equal to 20" in info.value.detail
    assert "extra: Extra inputs are not permitted" in info.value.detail
    item = validate(models.gallery_fields, {"id": "a-1", "metadata": {"k": 1.5, "b": True}})
    assert item.modality == "visible" and item.metadata == {"k": 1.5, "b": True}
