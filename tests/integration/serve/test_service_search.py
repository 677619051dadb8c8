"""Search over HTTP on a real Serve deployment equals the offline ranking of the same model and gallery,
filtered searches the offline ranking restricted to the matching items; min_score, bad filters, OpenAPI."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServeAssets, Service
from PIL import Image
from serve_reference import T0, Offline, Synth, add_items, assert_same_ranking, b64, item_id, scores_by_id

from tvifm.config.loader import config_hash, read_saved_config
from tvifm.eval.embeddings import encode_images
from tvifm.serve.captioner import load_ir_captioner

PREFIX = "s-"
TOP = 100  # every item of the test gallery comes back


@pytest.fixture(scope="module")
def world(service: Service, serve_assets: ServeAssets) -> dict[str, Any]:
    """The gallery (all visible and IR images) added over HTTP, and the offline reference."""
    synth = Synth.load(serve_assets.synth)
    visible, ir = synth.of("visible"), synth.of("ir")
    with service.client() as client:
        add_items(client, visible, PREFIX, "visible")
        add_items(client, ir, PREFIX, "ir")
    offline = Offline.load(serve_assets.model_a)
    queries = [s for s in ir if s.cam == 3][::4]
    return {
        "synth": synth,
        "offline": offline,
        "visible": (visible, offline.gallery(visible)),
        "ir": (ir, offline.gallery(ir)),
        "queries": queries,
        "bank": offline.queries(queries, visible, synth.text),
    }


def _search(
    client: httpx.Client, body: dict[str, Any], multipart_image: Path | None = None
) -> dict[str, Any]:
    if multipart_image is None:
        response = client.post("/v1/search", json=body)
    else:
        files = {"image": (multipart_image.name, multipart_image.read_bytes(), "image/jpeg")}
        response = client.post("/v1/search", files=files, data={k: str(v) for k, v in body.items()})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("mode", ["ir", "text", "fusion", "ensemble"])
def test_search_equals_offline_ranking(service: Service, world: dict[str, Any], mode: str) -> None:
    visible, g_emb = world["visible"]
    ids = [item_id(s, PREFIX) for s in visible]
    bank = world["bank"]
    with service.client() as client:
        for i, query in enumerate(world["queries"]):
            body: dict[str, Any] = {"mode": mode, "top_k": TOP}
            if mode != "text":
                body["image"] = b64(query)
            if mode != "ir":
                body["description"] = bank["descriptions"][i]
            if mode in ("fusion", "ensemble"):
                body["ir_caption"] = bank["captions"][i]
            upload = Path(query.path) if i % 2 and mode != "text" else None
            if upload is not None:
                body.pop("image")
            result = _search(client, body, upload)
            expected = scores_by_id(bank["embeddings"][mode][i], ids, g_emb)
            assert_same_ranking(result["results"], expected)
            assert all(h["modality"] == "visible" for h in result["results"])
            assert result["ir_caption_generated"] is False and result["mode"] == mode


def test_rgb2ir_ranks_ir_items_like_offline(service: Service, world: dict[str, Any]) -> None:
    ir, ir_emb = world["ir"]
    ids = [item_id(s, PREFIX) for s in ir]
    queries = world["synth"].of("visible", (1,))[:3]
    q_emb = world["offline"].gallery(queries)  # a visible query embeds like a visible gallery image
    with service.client() as client:
        for query, emb in zip(queries, q_emb, strict=True):
            result = _search(client, {"mode": "rgb2ir", "image": b64(query), "top_k": TOP})
            assert {h["modality"] for h in result["results"]} == {"ir"}
            assert_same_ranking(result["results"], scores_by_id(emb, ids, ir_emb))


def test_missing_ir_caption_is_generated_by_the_captioner(
    service: Service, world: dict[str, Any], serve_assets: ServeAssets
) -> None:
    query = world["queries"][0]
    description = world["bank"]["descriptions"][0]
    captioner = load_ir_captioner(str(serve_assets.captioner), device="cpu")
    caption = captioner.caption([Image.open(query.path).convert("RGB")])[0]
    model, size = world["offline"].model, world["offline"].size
    f_ir = encode_images(model, [query], size)
    t_rgb, t_ir = model.encode_texts([description, caption]).chunk(2)
    fusion = model.embed(model.fuse(f_ir, t_rgb, t_ir))[0]
    ensemble = (fusion + model.embed(f_ir)[0] + model.embed(t_rgb)[0]) / 3
    visible, g_emb = world["visible"]
    ids = [item_id(s, PREFIX) for s in visible]
    with service.client() as client:
        for mode, q in (("fusion", fusion), ("ensemble", ensemble)):
            result = _search(
                client, {"mode": mode, "image": b64(query), "description": description, "top_k": TOP}
            )
            assert result["ir_caption_generated"] is True
            assert result["ir_caption"] == caption
            assert_same_ranking(result["results"], scores_by_id(q, ids, g_emb))


def test_concurrent_searches_are_batched_without_changing_results(
    service: Service, world: dict[str, Any]
) -> None:
    queries = world["queries"] * 3
    bank = world["bank"]
    n = len(world["queries"])

    def body(i: int) -> dict[str, Any]:
        j = i % n
        return {
            "image": b64(queries[i]),
            "description": bank["descriptions"][j],
            "ir_caption": bank["captions"][j],
            "top_k": 10,
        }

    with service.client() as client:
        sequential = [_search(client, body(i))["results"] for i in range(len(queries))]
        with ThreadPoolExecutor(len(queries)) as pool:
            concurrent = list(pool.map(lambda i: _search(client, body(i))["results"], range(len(queries))))
    for one, other in zip(sequential, concurrent, strict=True):
        assert [h["id"] for h in one] == [h["id"] for h in other]
        assert [h["score"] for h in one] == pytest.approx([h["score"] for h in other], abs=1e-5)


def test_modes_without_their_inputs_are_rejected_with_what_is_missing(
    service: Service, world: dict[str, Any]
) -> None:
    image = b64(world["queries"][0])
    cases = [
        ({"mode": "text"}, "needs a description"),
        ({"mode": "text", "description": "   "}, "needs a description"),
        ({"mode": "ir"}, "needs an IR image"),
        ({"mode": "rgb2ir"}, "needs an visible image"),
        ({"mode": "fusion", "image": image}, "needs a description"),
        ({"mode": "ensemble", "description": "a man"}, "needs an IR image"),
    ]
    with service.client() as client:
        for body, message in cases:
            response = client.post("/v1/search", json=body)
            assert response.status_code == 422, (body, response.text)
            assert message in response.json()["detail"]


def test_model_info_probes_and_openapi(service: Service, serve_assets: ServeAssets) -> None:
    with service.client() as client:
        info = client.get("/v1/model").json()
        assert info["config_hash"] == config_hash(read_saved_config(serve_assets.model_a))
        assert info["source"] == "checkpoint" and info["name"] is None and info["stage"] == "joint"
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/v1/search", "/v1/gallery", "/v1/gallery/{item_id}", "/v1/gallery/stats", "/v1/model"} <= set(
        paths
    )
    assert {"/healthz", "/readyz"} <= set(paths)
    content = paths["/v1/search"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert spec["components"]["schemas"]["SearchRequest"]["properties"]["top_k"]["maximum"] == 100
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


# --- filters and thresholds -------------------------------------------------------------------------------
def _stem(sample: Any) -> int:
    return int(Path(sample.rel).stem)


# filter -> which SynthTri images it admits, written out by hand from their metadata (serve_reference's
# metadata_of: camera hour, identity minute, image second after T0; epoch seconds or ISO text)
FILTERS = [
    ({"pid": [1, 4]}, lambda s: s.pid in (1, 4)),
    ({"camera": 2, "pid": [1, 2, 3, 5]}, lambda s: s.cam == 2 and s.pid in (1, 2, 3, 5)),
    ({"timestamp": {"gte": T0 + 7200, "lt": "2024-05-01T05:00:00Z"}}, lambda s: s.cam in (2, 3, 4)),
    (
        {"timestamp": {"gt": "2024-05-01T01:03:00Z", "lte": T0 + 3600 + 60 * 6 + 2}, "camera": [1, 5]},
        lambda s: s.cam == 1 and 180 < 60 * s.pid + _stem(s) <= 362,
    ),
]


def _body(world: dict[str, Any], mode: str, i: int, **extra: Any) -> dict[str, Any]:
    bank = world["bank"]
    body: dict[str, Any] = {"mode": mode, "image": b64(world["queries"][i]), **extra}
    if mode != "ir":
        body |= {"description": bank["descriptions"][i], "ir_caption": bank["captions"][i]}
    return body


@pytest.mark.parametrize("mode", ["ir", "ensemble"])
@pytest.mark.parametrize("case", range(len(FILTERS)))
def test_filtered_search_equals_the_offline_ranking_of_the_matching_items(
    service: Service, world: dict[str, Any], mode: str, case: int
) -> None:
    where, admits = FILTERS[case]
    visible, g_emb = world["visible"]
    matching = {item_id(s, PREFIX) for s in visible if admits(s)}
    assert 0 < len(matching) < len(visible)
    with service.client() as client:
        for i in range(2):
            everything = scores_by_id(
                world["bank"]["embeddings"][mode][i], [item_id(s, PREFIX) for s in visible], g_emb
            )
            expected = {k: v for k, v in everything.items() if k in matching}
            result = _search(client, _body(world, mode, i, top_k=TOP, filter=where))
            assert {h["id"] for h in result["results"]} == matching  # nothing else, every match
            assert_same_ranking(result["results"], expected)
            top3 = _search(client, _body(world, mode, i, top_k=3, filter=where))["results"]
            order = sorted(expected, key=lambda k: -expected[k])
            assert len(top3) == min(3, len(matching))
            assert [h["score"] for h in top3] == pytest.approx([expected[k] for k in order[:3]], abs=1e-4)


def test_a_multipart_filter_ranks_like_the_json_one(service: Service, world: dict[str, Any]) -> None:
    where = FILTERS[2][0]
    query = Path(world["queries"][1].path)
    with service.client() as client:
        as_json = _search(
            client, {"mode": "ir", "image": b64(world["queries"][1]), "filter": where, "top_k": 20}
        )
        as_form = _search(client, {"mode": "ir", "filter": json.dumps(where), "top_k": 20}, query)
    assert [h["id"] for h in as_form["results"]] == [h["id"] for h in as_json["results"]]


def test_min_score_keeps_exactly_the_hits_at_or_above_it(service: Service, world: dict[str, Any]) -> None:
    visible, g_emb = world["visible"]
    ids = [item_id(s, PREFIX) for s in visible]
    expected = scores_by_id(world["bank"]["embeddings"]["ir"][0], ids, g_emb)
    threshold = float(sorted(expected.values())[len(expected) // 2])
    with service.client() as client:
        result = _search(client, _body(world, "ir", 0, top_k=TOP, min_score=threshold))["results"]
        nothing = _search(client, _body(world, "ir", 0, top_k=TOP, min_score=1.0))["results"]
    kept = {h["id"] for h in result}
    assert all(h["score"] >= threshold - 1e-6 for h in result)
    assert {k for k, v in expected.items() if v > threshold + 1e-4} <= kept
    assert kept <= {k for k, v in expected.items() if v >= threshold - 1e-4}
    assert nothing == []


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ({"place": {"city": "x"}}, "place: an object is a range whose only keys are gt, gte, lt, lte"),
        ({"timestamp": {"gte": "2024-02-30T00:00:00Z"}}, "timestamp.gte: '2024-02-30T00:00:00Z' is neither"),
        ({"camera": []}, "camera: an empty list matches nothing"),
        ({"timestamp": {"gt": 5, "gte": 4}}, "give either gt or gte"),
    ],
)
def test_bad_filters_are_422_json(
    service: Service, world: dict[str, Any], filter_: Any, message: str
) -> None:
    image = Path(world["queries"][0].path)
    with service.client() as client:
        as_json = client.post(
            "/v1/search", json={"mode": "ir", "image": b64(world["queries"][0]), "filter": filter_}
        )
        files = {"image": (image.name, image.read_bytes(), "image/jpeg")}
        as_form = client.post("/v1/search", files=files, data={"mode": "ir", "filter": json.dumps(filter_)})
    for response in (as_json, as_form):
        assert response.status_code == 422 and response.headers["content-type"] == "application/json"
        assert "filter" in response.json()["detail"] and message in response.json()["detail"]


def test_the_openapi_schema_documents_filters_with_examples(service: Service) -> None:
    with service.client() as client:
        spec = client.get("/openapi.json").json()
    search = spec["components"]["schemas"]["SearchRequest"]
    assert {"filter", "min_score", "rerank"} <= set(search["properties"])
    assert search["examples"][0]["filter"]["timestamp"] == {
        "gte": "2024-05-01T00:00:00Z",
        "lt": "2024-05-02T00:00:00Z",
    }
    filter_schema = search["properties"]["filter"]["anyOf"][0]
    assert filter_schema["examples"] and "gte" in str(filter_schema["additionalProperties"])
    form = spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"filter", "min_score", "rerank"} <= set(form["properties"])


def test_a_reranked_search_keeps_the_filter_and_top_k(service: Service, world: dict[str, Any]) -> None:
    where, admits = FILTERS[2]
    visible, _ = world["visible"]
    matching = {item_id(s, PREFIX) for s in visible if admits(s)}
    with service.client() as client:
        hits = _search(client, _body(world, "ir", 0, top_k=5, filter=where, rerank=True))["results"]
    assert len(hits) == min(5, len(matching)) and {h["id"] for h in hits} <= matching
