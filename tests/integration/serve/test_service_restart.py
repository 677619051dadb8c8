"""The gallery survives restarts: after its gallery-index replica is killed, the service (gallery on the
local S3 server) comes back with the same items, version and rankings; a service redeployed with another
model re-embeds the stored images."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import ray
from conftest import ServeAssets, Service, service_config, wait_ready
from ray import serve
from serve_reference import Offline, Synth, add_items, assert_same_ranking, b64, item_id, scores_by_id

pytestmark = pytest.mark.slow


def _rankings(svc: Service, queries: list[Any]) -> list[list[tuple[str, float]]]:
    out = []
    with svc.client() as client:
        for q in queries:
            for mode in ("ir", "rgb2ir"):
                image = b64(q[mode])
                body = {"mode": mode, "image": image, "top_k": 100}
                response = client.post("/v1/search", json=body)
                assert response.status_code == 200, response.text
                out.append([(h["id"], round(h["score"], 5)) for h in response.json()["results"]])
    return out


def _kill_index_replica(app: str) -> str:
    """Kill the gallery-index replica actor of ``app`` (Serve starts a new one); returns its name."""
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::") and f"{app}#GalleryIndex#" in a["name"]
    ]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    return names[0]


def _wait_for_stats(svc: Service, old: str, timeout: float = 240) -> dict[str, Any]:
    """Gallery stats once a replica other than ``old`` answers them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        if old not in alive and any("restart#GalleryIndex#" in n for n in alive):
            with svc.client() as client:
                response = client.get("/v1/gallery/stats")
            if response.status_code == 200:
                return response.json()
        time.sleep(0.5)
    raise AssertionError("the gallery index did not come back")


def test_restart_and_model_change_keep_the_gallery(
    deploy: Callable[..., Service], serve_assets: ServeAssets, serve_bucket: str
) -> None:
    synth = Synth.load(serve_assets.synth)
    visible, ir = synth.of("visible", (1, 2)), synth.of("ir", (3,))
    config = service_config(serve_assets, f"s3://{serve_bucket}/restart", ir_captioner=None)
    svc = deploy(config, "restart")
    with svc.client() as client:
        add_items(client, visible, "r-", "visible")
        add_items(client, ir, "r-", "ir")
        assert client.delete(f"/v1/gallery/{item_id(visible[0], 'r-')}").status_code == 200
        stats = client.get("/v1/gallery/stats").json()
    queries = [{"ir": ir[1], "rgb2ir": visible[3]}, {"ir": ir[4], "rgb2ir": visible[6]}]
    before = _rankings(svc, queries)

    old = _kill_index_replica("restart")
    assert _wait_for_stats(svc, old) == stats  # a new replica reloaded the persisted gallery
    assert _rankings(svc, queries) == before

    serve.delete("restart")
    svc = deploy({**config, "model": str(serve_assets.model_b)}, "restart", wait=False)
    wait_ready(svc.url)  # not ready while the gallery is re-embedded for model_b
    with svc.client() as client:
        after = client.get("/v1/gallery/stats").json()
        assert after["size"] == stats["size"] and after["by_modality"] == stats["by_modality"]
        assert after["fingerprint"] == client.get("/v1/model").json()["fingerprint"] != stats["fingerprint"]
        response = client.post("/v1/search", json={"mode": "ir", "image": b64(ir[1]), "top_k": 100})
    offline = Offline.load(serve_assets.model_b)
    kept = visible[1:]
    expected = scores_by_id(
        offline.gallery([ir[1]])[0], [item_id(s, "r-") for s in kept], offline.gallery(kept)
    )
    # an IR query embeds through the IR stem exactly like an IR gallery image
    assert_same_ranking(response.json()["results"], expected)
