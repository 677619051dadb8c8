"""The edge of the live service over real HTTP: clients that send half a body and stall cannot starve
/healthz, /readyz or other clients' searches (a bounded number is held per client and per replica, and
those get 408 after serve.body_timeout_s); malformed fields are JSON 4xx, never 500 or plain text; the
pixels of a request are budgeted."""

from __future__ import annotations

import base64
import io
import json
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SMALL_REPLICAS, ServeAssets, Service, run_app, service_config, wait_ready
from PIL import Image

pytestmark = pytest.mark.slow

MAX_ONGOING = 8  # the ingress replica's max_ongoing_requests in this deployment
PER_CLIENT = 2
MAX_UPLOADS = 5
BODY_TIMEOUT_S = 20.0
PROMPT_S = 10.0  # a probe or search waiting behind the stalled bodies would take BODY_TIMEOUT_S at least
EDGE = {
    "ir_captioner": None,
    "ingress": {**SMALL_REPLICAS["ingress"], "max_ongoing_requests": MAX_ONGOING},
    "max_uploads": MAX_UPLOADS,
    "max_uploads_per_client": PER_CLIENT,
    "body_timeout_s": BODY_TIMEOUT_S,
    "max_request_pixels": 60_000,  # max_image_pixels is 40,000 (conftest.LIMITS)
}


@pytest.fixture(scope="module")
def edge(
    serve_http: str, serve_assets: ServeAssets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One deployment with small edge limits for the module (gallery in a local folder)."""
    from ray import serve

    folder = tmp_path_factory.mktemp("edge")
    token = "edge-token-" + folder.name
    run_app(service_config(serve_assets, str(folder / "gallery"), **EDGE), "edge", "/edge", token, folder)
    url = f"{serve_http}/edge"
    wait_ready(url)
    try:
        yield Service(url, token, EDGE)
    finally:
        serve.delete("edge")


class Stalled:
    """A raw connection from ``source`` that sent the headers and half the body of a search, then stops."""

    def __init__(self, svc: Service, source: str) -> None:
        url = httpx.URL(svc.url)
        self.sock = socket.create_connection((url.host, url.port), timeout=5, source_address=(source, 0))
        body = json.dumps({"mode": "text", "description": "x" * 200}).encode()
        head = (
            f"POST {url.path}/v1/search HTTP/1.1\r\nHost: {url.host}\r\n"
            f"Authorization: Bearer {svc.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body[: len(body) // 2])
        self.buffer = b""

    def response(self, timeout: float) -> tuple[int, dict[str, str], Any]:
        """Status, headers and JSON body of the answer (reads until complete or closed)."""
        self.sock.settimeout(timeout)
        while not _complete(self.buffer):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        head, _, body = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), headers, json.loads(body)

    def close(self) -> None:
        self.sock.close()


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.decode("latin-1").lower().split("\r\n"):
        if line.startswith("content-length:"):
            return len(body) >= int(line.split(":", 1)[1])
    return False


def _answered(conns: list[Stalled], count: int, timeout: float) -> list[Stalled]:
    """The first ``count`` connections that received something within ``timeout`` seconds."""
    selector = selectors.DefaultSelector()
    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    found: list[Stalled] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            found.append(key.data)
            selector.unregister(key.fileobj)
    selector.close()
    return found


def _search(svc: Service, timeout: float = PROMPT_S) -> httpx.Response:
    headers = {"Authorization": f"Bearer {svc.token}"}
    body = {"mode": "text", "description": "a man in a dark coat", "top_k": 3}
    return httpx.post(f"{svc.url}/v1/search", json=body, headers=headers, timeout=timeout)


def test_stalled_uploads_cannot_starve_probes_or_searches(edge: Service) -> None:
    assert _search(edge, timeout=120).status_code == 200  # warm: the model has answered once
    sources = ["127.0.0.2", "127.0.0.3"]
    conns = [Stalled(edge, sources[i % 2]) for i in range(MAX_ONGOING + 4)]  # more than the replica takes
    held: list[Stalled] = []
    try:
        refused = _answered(conns, len(conns) - 2 * PER_CLIENT, timeout=60)
        assert len(refused) == len(conns) - 2 * PER_CLIENT  # each client's extra uploads, refused at once
        for conn in refused:
            status, headers, body = conn.response(timeout=30)
            assert status == 429 and headers["retry-after"] == "1"
            assert "serve.max_uploads_per_client=2" in body["detail"]
        held = [c for c in conns if c not in refused]

        # PROMPT_S < BODY_TIMEOUT_S: waiting for a stalled body to time out would miss this
        assert httpx.get(f"{edge.url}/healthz", timeout=PROMPT_S).json() == {"status": "ok"}
        assert httpx.get(f"{edge.url}/readyz", timeout=PROMPT_S).json()["ready"] is True
        found = _search(edge)
        assert found.status_code == 200 and found.json()["mode"] == "text"

        held.append(Stalled(edge, "127.0.0.4"))  # the replica's last place for a body
        busy = _wait_for_status(edge, 503)
        assert busy.headers["retry-after"] == "1" and "serve.max_uploads=5" in busy.json()["detail"]
        assert httpx.get(f"{edge.url}/healthz", timeout=PROMPT_S).status_code == 200

        for conn in held:  # each stalled body is given up on after serve.body_timeout_s
            status, _, body = conn.response(timeout=BODY_TIMEOUT_S + 60)
            assert status == 408 and "serve.body_timeout_s" in body["detail"]
        assert _search(edge).status_code == 200  # and every place is free again
    finally:
        for conn in conns + held:
            conn.close()


def _wait_for_status(svc: Service, status: int, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = _search(svc)
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response
        time.sleep(0.2)


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _json_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["detail"]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ("[" * 100_000, "recursion limit"),
        ("9" * 5000, "number out of range"),
        ('{"n": ' + "9" * 4000 + "}", "metadata.n"),
    ],
    ids=["deep", "huge-number", "huge-int-value"],
)
def test_malformed_multipart_metadata_is_a_json_422(service: Service, metadata: str, message: str) -> None:
    files = [("images", ("a.png", _png(20, 40), "image/png"))]
    with service.client() as client:
        response = client.post("/v1/gallery", files=files, data={"ids": "meta-1", "metadata": metadata})
    assert message in _json_error(response, 422)


def test_field_rules_answer_422(service: Service) -> None:
    n = service.config["max_items_per_request"]
    files = [("images", (f"{i}.png", _png(20, 40), "image/png")) for i in range(n + 1)]
    with service.client() as client:
        response = client.post("/v1/gallery", files=files, data={"ids": [f"f{i}" for i in range(n + 1)]})
        assert f"at most {n} items per request" in _json_error(response, 422)
        assert "item_id" in _json_error(client.delete("/v1/gallery/..bad"), 422)
        response = client.post("/v1/search", json={"mode": "ir", "image": ""})
        assert "at least 1 character" in _json_error(response, 422)


def test_the_pixels_of_a_request_are_budgeted(edge: Service, tmp_path: Path) -> None:
    images = [_png(200, 150) for _ in range(3)]  # 30,000 pixels each: 90,000 over the budget of 60,000
    items = [{"id": f"px-{i}", "image": base64.b64encode(img).decode()} for i, img in enumerate(images)]
    with edge.client() as client:
        before = client.get("/v1/gallery/stats").json()["version"]
        detail = _json_error(client.post("/v1/gallery", json={"items": items}), 413)
        assert "90000 pixels in all" in detail and "serve.max_request_pixels" in detail
        assert client.get("/v1/gallery/stats").json()["version"] == before
        stored = client.post("/v1/gallery", json={"items": items[:2]})
        assert stored.status_code == 200 and stored.json()["added"] == 2
