"""Auth, size limits and bad input: every client mistake is a 4xx with a clear JSON message."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from conftest import LIMITS, ServeAssets, Service
from PIL import Image
from serve_reference import Synth, b64


@pytest.fixture(scope="module")
def image(serve_assets: ServeAssets) -> str:
    return b64(Synth.load(serve_assets.synth).of("ir")[0])


def _png(width: int, height: int, noise: bool = False) -> bytes:
    img = (
        Image.effect_noise((width, height), 80).convert("RGB") if noise else Image.new("RGB", (width, height))
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_bearer_token_is_required_on_the_api_but_not_on_probes(service: Service) -> None:
    for token in (None, "wrong-token"):
        with service.client(token=token) as client:
            for method, path in (
                ("GET", "/v1/model"),
                ("GET", "/v1/gallery/stats"),
                ("DELETE", "/v1/gallery/x"),
            ):
                response = client.request(method, path)
                assert response.status_code == 401, (token, path)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "bearer token" in response.json()["detail"]
            response = client.post("/v1/search", json={"mode": "text", "description": "a man"})
            assert response.status_code == 401
            assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    with service.client() as client:
        assert client.get("/v1/model").status_code == 200


def _status(service: Service, path: str, **kwargs: Any) -> tuple[int, str]:
    with service.client() as client:
        response = client.post(path, **kwargs)
    return response.status_code, response.json()["detail"]


def test_size_limits_answer_413(service: Service, image: str) -> None:
    big_body = {"mode": "text", "description": "x", "pad": "y" * LIMITS["max_request_bytes"]}
    code, detail = _status(service, "/v1/search", json=big_body)
    assert code == 413 and "exceeds the limit" in detail
    large = _png(120, 200, noise=True)  # more bytes than max_image_bytes
    assert len(large) > LIMITS["max_image_bytes"]
    code, detail = _status(
        service, "/v1/search", json={"mode": "ir", "image": base64.b64encode(large).decode()}
    )
    assert code == 413 and "image" in detail
    code, detail = _status(
        service, "/v1/search", files={"image": ("x.png", large, "image/png")}, data={"mode": "ir"}
    )
    assert code == 413
    many_pixels = _png(400, 400)  # compresses well but exceeds max_image_pixels
    assert len(many_pixels) < LIMITS["max_image_bytes"]
    code, detail = _status(
        service, "/v1/search", json={"mode": "ir", "image": base64.b64encode(many_pixels).decode()}
    )
    assert code == 413 and "400x400 pixels" in detail
    items = [{"id": "big", "image": base64.b64encode(large).decode()}]
    code, detail = _status(service, "/v1/gallery", json={"items": items})
    assert code == 413 and "items[0]" in detail


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"mode": "ir", "image": base64.b64encode(b"not an image").decode()}, 400, "cannot decode the image"),
        ({"mode": "ir", "image": "%%%not base64%%%"}, 422, "not valid base64"),
        ({"mode": "ir", "image": ""}, 422, "image: String should have at least 1 character"),
        ({"mode": "ir", "image": "data:image/png;base64,"}, 400, "empty"),
        ({"mode": "ir", "image_path": "/etc/passwd"}, 422, "image_path: Extra inputs are not permitted"),
        ({"mode": "sketch", "description": "a"}, 422, "mode: Input should be"),
        (
            {"mode": "text", "description": "a", "top_k": 0},
            422,
            "top_k: Input should be greater than or equal to 1",
        ),
        (
            {"mode": "text", "description": "a", "top_k": 101},
            422,
            "top_k: Input should be less than or equal to 100",
        ),
        ({"mode": "text", "description": "a" * 401}, 422, "description: String should have at most 400"),
    ],
)
def test_bad_search_input(service: Service, body: dict[str, Any], status: int, message: str) -> None:
    code, detail = _status(service, "/v1/search", json=body)
    assert (code, message in detail) == (status, True), detail


def test_malformed_bodies_and_content_types(service: Service) -> None:
    code, detail = _status(
        service, "/v1/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert code == 422 and "JSON" in detail
    code, detail = _status(service, "/v1/search", content=b"mode=ir", headers={"content-type": "text/plain"})
    assert code == 415 and "application/json" in detail
    code, detail = _status(
        service,
        "/v1/search",
        content=b"garbage",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert code in (400, 422)


@pytest.mark.parametrize(
    ("items", "status", "message"),
    [
        ([], 422, "items: List should have at least 1 item"),
        ([{"id": "../../etc", "image": "AAAA"}], 422, "String should match pattern"),
        ([{"id": "a", "image": "IMG"}, {"id": "a", "image": "IMG"}], 422, "appears more than once"),
        ([{"id": "a", "image": "IMG", "modality": "thermal"}], 422, "modality"),
        ([{"id": "a", "image": "IMG", "metadata": {"nested": {"x": 1}}}], 422, "metadata.nested"),
        ([{"id": "a", "image": "IMG", "metadata": {"k": "v" * 5000}}], 422, "exceeds the limit"),
        ([{"id": "a", "image": base64.b64encode(b"junk").decode()}], 400, "items[0] (a): cannot decode"),
        ([{"id": f"n{i}", "image": "IMG"} for i in range(17)], 422, "at most 16 items"),
    ],
)
def test_bad_gallery_input(service: Service, image: str, items: list, status: int, message: str) -> None:
    items = [{**it, "image": image} if it.get("image") == "IMG" else it for it in items]
    with service.client() as client:
        before = client.get("/v1/gallery/stats").json()["version"]
        response = client.post("/v1/gallery", json={"items": items})
        assert response.status_code == status, response.text
        assert message in response.json()["detail"]
        assert client.get("/v1/gallery/stats").json()["version"] == before  # nothing was stored


def test_bad_multipart_gallery_input(service: Service, image: str) -> None:
    data = base64.b64decode(image)
    files = [("images", ("a.jpg", data, "image/jpeg")), ("images", ("b.jpg", data, "image/jpeg"))]
    cases = [
        ({"ids": ["only-one"]}, "one id per image"),
        ({"ids": ["a", "b"], "metadata": ["{}"]}, "one value per image"),
        ({"ids": ["a", "b"], "metadata": ["[1]", "{}"]}, "must be a JSON object"),
        ({"ids": ["a", "b"], "path": "/tmp/x"}, "unknown form field 'path'"),
    ]
    for data_fields, message in cases:
        code, detail = _status(service, "/v1/gallery", files=files, data=data_fields)
        assert code == 422 and message in detail, detail
