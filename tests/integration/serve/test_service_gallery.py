"""Managing the gallery over HTTP: bulk add (JSON and multipart), replace, delete, stats."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ServeAssets, Service
from serve_reference import Synth, b64, item_id


@pytest.fixture(scope="module")
def synth(serve_assets: ServeAssets) -> Synth:
    return Synth.load(serve_assets.synth)


def _hits(client, image: str, top_k: int = 100) -> list[dict]:  # type: ignore[no-untyped-def]
    response = client.post("/v1/search", json={"mode": "ir", "image": image, "top_k": top_k})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_add_replace_delete_and_stats(service: Service, synth: Synth) -> None:
    first, second = synth.of("visible", (4,))[:2]
    query = b64(synth.of("ir")[0])
    with service.client() as client:
        before = client.get("/v1/gallery/stats").json()
        added = client.post(
            "/v1/gallery",
            json={"items": [{"id": "g-one", "image": b64(first), "metadata": {"camera": "north", "n": 1}}]},
        ).json()
        assert added["added"] == 1 and added["replaced"] == [] and added["gallery_size"] == before["size"] + 1
        hit = next(h for h in _hits(client, query) if h["id"] == "g-one")
        assert hit["metadata"] == {"camera": "north", "n": 1} and hit["modality"] == "visible"

        replaced = client.post(
            "/v1/gallery",
            json={"items": [{"id": "g-one", "image": b64(second), "modality": "ir", "metadata": {"v": 2}}]},
        ).json()
        assert replaced["replaced"] == ["g-one"] and replaced["gallery_size"] == before["size"] + 1
        assert replaced["gallery_version"] > added["gallery_version"]
        stats = client.get("/v1/gallery/stats").json()
        assert stats["by_modality"]["ir"] == before["by_modality"]["ir"] + 1
        assert stats["by_modality"]["visible"] == before["by_modality"]["visible"]
        assert "g-one" not in [h["id"] for h in _hits(client, query)]  # now an IR item
        rgb2ir = client.post("/v1/search", json={"mode": "rgb2ir", "image": b64(first), "top_k": 100}).json()
        assert next(h for h in rgb2ir["results"] if h["id"] == "g-one")["metadata"] == {"v": 2}

        deleted = client.delete("/v1/gallery/g-one")
        assert deleted.status_code == 200 and deleted.json()["deleted"] == "g-one"
        assert client.get("/v1/gallery/stats").json()["size"] == before["size"]
        again = client.delete("/v1/gallery/g-one")
        assert again.status_code == 404 and "g-one" in again.json()["detail"]


def test_multipart_add_with_per_item_modality_and_metadata(service: Service, synth: Synth) -> None:
    vis, ir = synth.of("visible", (5,))[0], synth.of("ir", (6,))[0]
    files = [("images", ("a.jpg", Path(p.path).read_bytes(), "image/jpeg")) for p in (vis, ir)]
    data = {"ids": ["g-mp-vis", "g-mp-ir"], "modality": ["visible", "ir"], "metadata": ['{"k": "a"}', "{}"]}
    with service.client() as client:
        response = client.post("/v1/gallery", files=files, data=data)
        assert response.status_code == 200, response.text
        assert response.json()["ids"] == ["g-mp-vis", "g-mp-ir"]
        rgb2ir = client.post("/v1/search", json={"mode": "rgb2ir", "image": b64(vis), "top_k": 100}).json()
        assert "g-mp-ir" in [h["id"] for h in rgb2ir["results"]]
        assert "g-mp-vis" not in [h["id"] for h in rgb2ir["results"]]
        top = _hits(client, b64(ir))
        assert next(h for h in top if h["id"] == "g-mp-vis")["metadata"] == {"k": "a"}
        for name in ("g-mp-vis", "g-mp-ir"):
            assert client.delete(f"/v1/gallery/{name}").status_code == 200


def test_the_same_image_added_twice_scores_identically(service: Service, synth: Synth) -> None:
    sample = synth.of("visible", (2,))[1]
    with service.client() as client:
        items = [{"id": item_id(sample, f"g-dup{i}-"), "image": b64(sample)} for i in range(2)]
        assert client.post("/v1/gallery", json={"items": items}).status_code == 200
        hits = {h["id"]: h["score"] for h in _hits(client, b64(synth.of("ir")[1]))}
        assert hits[items[0]["id"]] == pytest.approx(hits[items[1]["id"]], abs=1e-6)
        for item in items:
            client.delete(f"/v1/gallery/{item['id']}")
