"""An approximate gallery index (``serve.index=ivf|hnsw``) behind the live service: filtered searches go
through the faiss index with its selector and still equal the offline ranking restricted to the matching
items, after adds and enough deletes to re-pack and rebuild the index."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServeAssets, Service, service_config
from serve_reference import Offline, Synth, add_items, assert_same_ranking, b64, item_id, scores_by_id

PREFIX = "x-"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_filtered_search_through_an_approximate_index(
    deploy: Callable[..., Service], serve_assets: ServeAssets, tmp_path: Path, kind: str
) -> None:
    synth = Synth.load(serve_assets.synth)
    visible, queries = synth.of("visible"), synth.of("ir", (3,))[:3]
    approximate = {"index": kind, "index_min_items": 10, "index_exact_subset_max": 0}
    config = service_config(serve_assets, str(tmp_path / "gallery"), ir_captioner=None, **approximate)
    svc = deploy(config, f"index-{kind}")
    deleted = visible[::3]  # a third of the slots dead: the index is re-packed and rebuilt
    kept = [s for s in visible if s not in deleted]
    offline = Offline.load(serve_assets.model_a)
    g_emb, q_emb = offline.gallery(kept), offline.gallery(queries)  # IR queries embed like IR images
    ids = [item_id(s, PREFIX) for s in kept]
    with svc.client() as client:
        add_items(client, visible, PREFIX, "visible")
        for sample in deleted:
            assert client.delete(f"/v1/gallery/{item_id(sample, PREFIX)}").status_code == 200
        stats = client.get("/v1/gallery/stats").json()
        assert stats["index"] == kind and stats["approximate"] == {"visible": True, "ir": False}
        for query, emb in zip(queries, q_emb, strict=True):
            everything = scores_by_id(emb, ids, g_emb)
            for where, admits in (({"camera": [1, 4]}, lambda s: s.cam in (1, 4)), (None, lambda s: True)):
                body = {"mode": "ir", "image": b64(query), "top_k": 100, "filter": where}
                response = client.post("/v1/search", json=body)
                assert response.status_code == 200, response.text
                hits = response.json()["results"]
                matching = {item_id(s, PREFIX) for s in kept if admits(s)}
                assert {h["id"] for h in hits} == matching
                assert_same_ranking(hits, {k: v for k, v in everything.items() if k in matching})
