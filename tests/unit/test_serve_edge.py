"""The HTTP edge in process (FastAPI's test client, a fake backend): upload limits, body timeouts, JSON
errors for malformed and failing requests, per-request pixel budgets, and an OpenAPI schema that states
the rules the handlers enforce. The same paths over real HTTP against Ray Serve:
tests/integration/serve/test_service_edge.py."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
from typing import Any

import jsonschema
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.requests import Request

from tvifm.serve import api
from tvifm.serve.config import serve_config
from tvifm.serve.edge import ApiError, UploadGate, read_body
from tvifm.serve.encoder import BadImageError, ImageTooLargeError, image_pixels

LIMITS = {"max_image_pixels": 10_000, "max_request_pixels": 15_000, "max_items_per_request": 4}


class FakeBackend:
    """Answers every call at once; ``fail`` makes the embedding step raise an unexpected error."""

    def __init__(self, has_captioner: bool = False, fail: bool = False, ready_after: float = 0.0) -> None:
        self.has_captioner, self.fail, self.ready_after = has_captioner, fail, ready_after
        self.queries: list[api.Query] = []
        self.added: list[api.NewItem] = []

    async def model_info(self) -> dict[str, Any]:
        return {"fingerprint": "f", "dim": 4}

    async def query(self, query: api.Query) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("secret internal state /srv/model")
        self.queries.append(query)
        return {"embedding": np.zeros(4), "ir_caption": query.ir_caption, "generated": False}

    async def embed_gallery(self, items: list[api.NewItem]) -> Any:
        return np.zeros((len(items), 4))

    async def search(self, embedding: Any, modality: str, top_k: int, **options: Any) -> dict[str, Any]:
        return {"hits": [], "version": 1, "size": 0}

    async def add(self, items: list[api.NewItem], embeddings: Any) -> dict[str, Any]:
        self.added.extend(items)
        return {"replaced": [], "version": 2, "size": len(items)}

    async def delete(self, item_id: str) -> dict[str, Any]:
        return {"version": 3, "size": 0}

    async def stats(self) -> dict[str, Any]:
        return {}

    async def ready(self) -> dict[str, Any]:
        await asyncio.sleep(self.ready_after)
        return {"ready": True, "reason": None, "gallery_size": 0}


def _client(backend: FakeBackend | None = None, **settings: Any) -> TestClient:
    cfg = serve_config({**LIMITS, **settings})
    return TestClient(api.create_api(cfg, backend or FakeBackend()), raise_server_exceptions=False)


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 80, 120)).save(buf, format="PNG")
    return buf.getvalue()


def _json_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["detail"]


# --- the upload gate --------------------------------------------------------------------------------------
def test_gate_bounds_each_client_and_the_replica_and_frees_places() -> None:
    gate = UploadGate(max_total=3, max_per_client=2)
    with gate.admit("a"), gate.admit("a"):
        with pytest.raises(ApiError) as per_client, gate.admit("a"):
            pass
        assert per_client.value.status == 429 and per_client.value.headers == {"Retry-After": "1"}
        with gate.admit("b"):
            with pytest.raises(ApiError) as full, gate.admit("c"):
                pass
            assert full.value.status == 503 and "serve.max_uploads=3" in full.value.detail
    assert gate.total == 0 and not gate.by_client
    with gate.admit("a"), gate.admit("a"), gate.admit("c"):  # every place is free again
        assert gate.total == 3


def test_a_failing_request_gives_its_place_back() -> None:
    gate = UploadGate(max_total=1, max_per_client=1)
    with pytest.raises(ValueError), gate.admit("a"):
        raise ValueError("boom")
    with gate.admit("a"):
        assert gate.by_client["a"] == 1


# --- reading bodies ---------------------------------------------------------------------------------------
def _request(chunks: list[bytes], stall: bool, length: int) -> Request:
    messages = iter(chunks)

    async def receive() -> dict[str, Any]:
        chunk = next(messages, None)
        if chunk is None:
            if stall:
                await asyncio.sleep(3600)
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    headers = [(b"content-length", str(length).encode())]
    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


def test_a_body_that_stalls_is_refused_with_408_after_the_timeout() -> None:
    with pytest.raises(ApiError) as info:
        asyncio.run(read_body(_request([b"{", b'"mode"'], stall=True, length=100), 1000, timeout_s=0.2))
    assert info.value.status == 408 and "serve.body_timeout_s" in info.value.detail
    assert info.value.headers == {"Connection": "close"}
    body = asyncio.run(read_body(_request([b"ab", b"cd"], stall=False, length=4), 1000, timeout_s=5))
    assert body == b"abcd"


def test_bodies_over_the_limit_are_refused_declared_or_streamed() -> None:
    with pytest.raises(ApiError, match="of 5000 bytes exceeds"):
        asyncio.run(read_body(_request([], stall=False, length=5000), 1000, timeout_s=5))
    with pytest.raises(ApiError, match="exceeds the limit of 10 bytes"):
        asyncio.run(read_body(_request([b"x" * 8, b"x" * 8], stall=False, length=3), 10, timeout_s=5))


# --- malformed and failing requests: JSON 4xx and 500 -----------------------------------------------------
@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ("[" * 100_000, "recursion limit"),
        ("1" * 5000, "number out of range"),
        ('{"k": ' + "1" * 4000 + "}", "metadata.k"),  # parses, but is no 64-bit integer
        ('{"k": 1e400}', "metadata.k"),  # infinite
        ("[1]", "must be a JSON object"),
    ],
)
def test_malformed_multipart_metadata_is_a_json_422(metadata: str, message: str) -> None:
    backend = FakeBackend()
    files = [("images", ("a.png", _png(8, 8), "image/png"))]
    response = _client(backend).post("/v1/gallery", files=files, data={"ids": "a", "metadata": metadata})
    assert message in _json_error(response, 422)
    assert not backend.added


def test_too_many_files_is_a_422_naming_the_limit() -> None:
    files = [("images", (f"{i}.png", _png(8, 8), "image/png")) for i in range(5)]
    response = _client().post("/v1/gallery", files=files, data={"ids": [str(i) for i in range(5)]})
    assert "at most 4 items per request" in _json_error(response, 422)
    two = [("image", ("a.png", _png(8, 8), "image/png"))] * 2
    response = _client().post("/v1/search", files=two, data={"mode": "ir"})
    assert "at most one 'image'" in _json_error(response, 422)


def test_delete_checks_the_id_pattern() -> None:
    client = _client()
    assert "item_id: String should match pattern" in _json_error(client.delete("/v1/gallery/-bad"), 422)
    assert "item_id" in _json_error(client.delete("/v1/gallery/" + "a" * 129), 422)
    assert client.delete("/v1/gallery/p1-c1.jpg").json()["deleted"] == "p1-c1.jpg"


def test_an_empty_image_string_is_a_422() -> None:
    response = _client().post("/v1/search", json={"mode": "ir", "image": ""})
    assert "image: String should have at least 1 character" in _json_error(response, 422)
    items = [{"id": "a", "image": ""}]
    assert "items.0.image" in _json_error(_client().post("/v1/gallery", json={"items": items}), 422)


def test_an_unanticipated_parse_error_is_a_json_400(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(text: str) -> Any:
        raise RecursionError("deep inside a parser")

    monkeypatch.setattr(api, "parse_json", broken)
    files = [("images", ("a.png", _png(8, 8), "image/png"))]
    response = _client().post("/v1/gallery", files=files, data={"ids": "a", "metadata": "{}"})
    detail = _json_error(response, 400)
    assert "RecursionError" in detail and "deep inside" not in detail


def test_a_server_error_is_a_json_500_without_internals() -> None:
    response = _client(FakeBackend(fail=True)).post("/v1/search", json={"mode": "text", "description": "a"})
    detail = _json_error(response, 500)
    assert "internal server error" in detail
    assert "Traceback" not in response.text and "/srv/model" not in response.text


def test_readyz_answers_not_ready_instead_of_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "READY_TIMEOUT_S", 0.1)
    response = _client(FakeBackend(ready_after=5)).get("/readyz")
    assert response.status_code == 503 and "did not answer within" in response.json()["reason"]
    assert _client().get("/readyz").json()["ready"] is True


# --- pixels ------------------------------------------------------------------------------------------------
def test_image_pixels_reads_only_the_header() -> None:
    data = _png(300, 200)
    assert image_pixels(data, 60_000) == 60_000
    assert image_pixels(data[:100], 60_000) == 60_000  # a truncated body still has its header
    with pytest.raises(ImageTooLargeError, match="300x200"):
        image_pixels(data, 59_999)
    with pytest.raises(BadImageError, match="empty"):
        image_pixels(b"", 10)


def test_the_pixels_of_a_request_are_budgeted_before_any_embedding() -> None:
    backend = FakeBackend()
    client = _client(backend)
    images = [_png(100, 80), _png(100, 80)]  # 8,000 pixels each: under the per-image limit, 16,000 together
    items = [{"id": f"i{n}", "image": base64.b64encode(img).decode()} for n, img in enumerate(images)]
    detail = _json_error(client.post("/v1/gallery", json={"items": items}), 413)
    assert "16000 pixels in all" in detail and "serve.max_request_pixels" in detail
    files = [("images", (f"{n}.png", img, "image/png")) for n, img in enumerate(images)]
    response = client.post("/v1/gallery", files=files, data={"ids": ["i0", "i1"]})
    assert "16000 pixels in all" in _json_error(response, 413)
    assert not backend.added
    assert client.post("/v1/gallery", json={"items": items[:1]}).status_code == 200
    assert [it.id for it in backend.added] == ["i0"]


# --- the schema states the rules --------------------------------------------------------------------------
def _search_schema(client: TestClient) -> dict[str, Any]:
    spec = client.get("/openapi.json").json()
    return spec["components"]["schemas"]["SearchRequest"]


@pytest.mark.parametrize("captioner", [False, True])
def test_the_search_schema_accepts_exactly_the_bodies_the_handler_accepts(captioner: bool) -> None:
    """Every combination of mode and inputs: the OpenAPI schema and the handler agree on a 422."""
    settings = {"ir_captioner": "runs/captioner"} if captioner else {}
    client = _client(FakeBackend(has_captioner=captioner), **settings)
    validator = jsonschema.Draft202012Validator(_search_schema(client))
    image = base64.b64encode(_png(8, 8)).decode()
    inputs = {"image": image, "description": "a man in a coat", "ir_caption": "a man"}
    for mode in (None, "ir", "text", "fusion", "ensemble", "rgb2ir"):
        for present in itertools.product([None, "value", "blank"], repeat=3):
            body: dict[str, Any] = {} if mode is None else {"mode": mode}
            for (name, value), state in zip(inputs.items(), present, strict=True):
                if state == "blank" and name != "image":
                    body[name] = "   "
                elif state is not None:
                    body[name] = value
            status = client.post("/v1/search", json=body).status_code
            assert status in (200, 422), (body, status)
            assert validator.is_valid(body) == (status == 200), (body, status)


def test_the_schema_states_the_limits_and_error_codes() -> None:
    spec = _client().get("/openapi.json").json()
    delete = spec["paths"]["/v1/gallery/{item_id}"]["delete"]
    (param,) = delete["parameters"]
    assert param["schema"]["pattern"] == api.schemas.ID_PATTERN
    for path in ("/v1/search", "/v1/gallery"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"400", "408", "413", "415", "422", "429", "500", "503"} <= set(responses)
    form = spec["paths"]["/v1/gallery"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["images"]["maxItems"] == 4
    assert "15000 pixels" in form["properties"]["images"]["description"]
    item = spec["components"]["schemas"]["GalleryItem"]
    assert item["properties"]["image"]["minLength"] == 1
