"""The Ray Serve deployments of the retrieval service.

``Ingress`` (FastAPI, autoscaled) validates requests and orchestrates; ``Embedder`` (autoscaled) holds the
model and the optional IR captioner and encodes images, texts and captions with ``@serve.batch``;
``GalleryIndex`` (exactly one replica) owns the gallery embeddings, answers searches (exact, IVF or HNSW;
filtered before the top-k; batched too) and persists every change before applying it. Only
``GalleryIndex`` writes the gallery, so replicas of the other two deployments can come and go freely; a
restarted ``GalleryIndex`` reloads the persisted gallery and, when the served model changed, re-embeds
it from the stored images in the background. A write refused because another writer changed the stored
gallery first (two clusters during an upgrade) answers 503 and reloads the gallery, so the client's
retry applies to the current content.

Expected failures cross deployment boundaries as ``{"error": {"status", "detail"}}`` results, which the
ingress turns into HTTP errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle

from tvifm.data import storage
from tvifm.eval.rerank import k_reciprocal_rerank
from tvifm.models.query import MODE_NEEDS, query_modality
from tvifm.serve.api import ApiError, Backend, NewItem, Query, create_api
from tvifm.serve.config import ServeConfig, index_spec, read_token, serve_config
from tvifm.serve.encoder import Encoder, decode_image
from tvifm.serve.filters import FilterError, parse_filter
from tvifm.serve.gallery import (
    ConcurrentWriteError,
    GalleryError,
    IndexHit,
    PersistentGallery,
    Record,
    StaleGalleryError,
    UnknownItemError,
)
from tvifm.serve.vectors import set_threads

log = logging.getLogger("ray.serve")
REEMBED_CHUNK = 64
# one search request to the gallery index: embedding, modality, top_k, filter, min_score, rerank
SearchCall = tuple[np.ndarray, str, int, dict[str, Any] | None, float | None, bool]


def _error(status: int, detail: str) -> dict[str, Any]:
    return {"error": {"status": status, "detail": detail}}


def _raise_if_error(result: Any) -> Any:
    if isinstance(result, dict) and "error" in result:
        raise ApiError(int(result["error"]["status"]), str(result["error"]["detail"]))
    return result


def _fill(out: list[dict[str, Any]], idx: list[int], value: dict[str, Any]) -> list[dict[str, Any]]:
    for i in idx:
        out[i] = value
    return out


def _configure_batching(cfg: ServeConfig, *methods: Any) -> None:
    for method in methods:
        method.set_max_batch_size(cfg.max_batch_size)
        method.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)


@serve.deployment(name="Embedder")
class Embedder:
    """The model (and optional IR captioner): batched image/text encoding and query embeddings."""

    def __init__(self, config: dict[str, Any]) -> None:
        from tvifm.models.factory import load_model

        cfg = serve_config(config)
        torch.set_num_threads(cfg.threads)
        loaded = load_model(
            cfg.model, device=cfg.device, tracking_uri=cfg.mlflow_tracking_uri, endpoint=cfg.s3_endpoint
        )
        self.info = loaded.info
        self.encoder = Encoder(loaded.model, self.info.image_size)
        self.max_pixels = cfg.max_image_pixels
        self.captioner = self._load_captioner(cfg)
        _configure_batching(cfg, self.image_features, self.text_features, self.ir_captions)

    @staticmethod
    def _load_captioner(cfg: ServeConfig) -> Any:
        if not cfg.ir_captioner:
            return None
        from tvifm.serve.captioner import load_ir_captioner

        return load_ir_captioner(cfg.ir_captioner, cfg.s3_endpoint, cfg.device)

    async def model_info(self) -> dict[str, Any]:
        """The served model's identity (name, version, alias, config hash, fingerprint, dim)."""
        return self.info.to_dict()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def image_features(self, items: list[tuple[bytes, str]]) -> list[torch.Tensor]:
        """Backbone features of ``(image bytes, modality)`` items, one batch through the model."""
        return list(await asyncio.to_thread(self._encode_images, items))

    def _encode_images(self, items: Sequence[tuple[bytes, str]]) -> torch.Tensor:
        # one decoded image at a time: a batch holds its small model inputs, never all its full-size
        # pixels (16 images near serve.max_image_pixels would be about 1 GB)
        inputs = [self.encoder.prepare(decode_image(data, self.max_pixels)) for data, _ in items]
        return self.encoder.input_features(inputs, [m for _, m in items])

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def text_features(self, texts: list[str]) -> list[torch.Tensor]:
        """Text features of a batch of descriptions/captions."""
        return list(await asyncio.to_thread(self.encoder.text_features, texts))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def ir_captions(self, images: list[bytes]) -> list[str]:
        """IR captions generated for a batch of IR images."""
        return await asyncio.to_thread(self._caption, images)

    def _caption(self, images: Sequence[bytes]) -> list[str]:
        return self.captioner.caption([decode_image(data, self.max_pixels) for data in images])

    async def query(
        self, mode: str, image: bytes | None, description: str | None, ir_caption: str | None
    ) -> dict:
        """The query embedding of ``mode``, generating the IR caption when needed and not given."""
        needs = MODE_NEEDS[mode]
        generated = False
        if needs.ir_caption and ir_caption is None:
            if self.captioner is None:
                return _error(422, f"mode '{mode}' needs an IR caption and no IR captioner is configured")
            ir_caption, generated = await self.ir_captions(image), True
        parts = await asyncio.gather(
            self.image_features((image, query_modality(mode))) if needs.image else _none(),
            self.text_features(description) if needs.description else _none(),
            self.text_features(ir_caption) if needs.ir_caption else _none(),
        )
        embedding = self.encoder.query_embedding(mode, *parts)  # one BNNeck row: cheap, inline
        return {"embedding": embedding.numpy(), "ir_caption": ir_caption, "generated": generated}

    async def gallery_embedding(self, image: bytes, modality: str) -> np.ndarray:
        """The retrieval embedding of one gallery image (batched with concurrent calls)."""
        features = await self.image_features((image, modality))
        return self.encoder.embed(features.reshape(1, -1))[0].numpy()


async def _none() -> None:
    return None


@serve.deployment(name="GalleryIndex", num_replicas=1)
class GalleryIndex:
    """The single owner of the gallery: filtered search, persisted adds and deletes, re-embedding."""

    async def __init__(self, config: dict[str, Any], embedder: DeploymentHandle) -> None:
        cfg = serve_config(config)
        set_threads(cfg.index_threads)
        self.embedder = embedder
        self.lock = asyncio.Lock()
        self.rerank_candidates = cfg.rerank_candidates
        self.info = await embedder.model_info.remote()
        self.gallery = await asyncio.to_thread(
            PersistentGallery,
            cfg.gallery_uri,
            int(self.info["dim"]),
            self.info["fingerprint"],
            cfg.s3_endpoint,
            cfg.max_segments,
            index=index_spec(cfg),
        )
        self.reason: str | None = None
        self.maintenance: asyncio.Task[None] | None = None
        self.task = asyncio.get_running_loop().create_task(self._reembed()) if self.gallery.stale else None
        _configure_batching(cfg, self.search)

    # --- reading ------------------------------------------------------------------------------------------
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def search(self, requests: list[SearchCall]) -> list[dict[str, Any]]:
        """Top-k searches; requests with the same modality, filter, threshold and re-ranking share one
        search call (one matrix product when exact)."""
        if self.gallery.stale:
            return [_error(503, self.reason or self.gallery.stale_message())] * len(requests)
        out: list[dict[str, Any]] = [{} for _ in requests]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, call in enumerate(requests):
            _, modality, _, where, min_score, rerank = call
            groups.setdefault((modality, json.dumps(where, sort_keys=True), min_score, rerank), []).append(i)
        for (modality, _, min_score, rerank), idx in groups.items():
            try:
                where = parse_filter(requests[idx[0]][3]) if requests[idx[0]][3] is not None else None
            except FilterError as err:
                out = _fill(out, idx, _error(422, f"filter: {err}"))
                continue
            queries = np.stack([np.asarray(requests[i][0], dtype=np.float32) for i in idx])
            k = max(requests[i][2] for i in idx)
            k = max(k, self.rerank_candidates) if rerank else k
            hits = self.gallery.index.search(torch.from_numpy(queries), modality, k, where, min_score)
            for i, query, found in zip(idx, queries, hits, strict=True):
                top_k = requests[i][2]
                ranked = self._rerank(query, found)[:top_k] if rerank else found[:top_k]
                out[i] = {"hits": [h.__dict__ for h in ranked], **self._version()}
        return out

    def _rerank(self, query: np.ndarray, hits: list[IndexHit]) -> list[IndexHit]:
        """The candidate hits (the filtered top ``serve.rerank_candidates``) re-ordered by k-reciprocal
        re-ranking (:func:`tvifm.eval.rerank.k_reciprocal_rerank`, the offline evaluation's) of ``query``
        against their embeddings; each hit keeps its cosine score."""
        if len(hits) < 2:
            return hits
        gallery = np.stack([np.asarray(self.gallery.index.embedding(h.id), dtype=np.float32) for h in hits])
        distances = k_reciprocal_rerank(query[None, :], gallery)[0]
        return [hits[i] for i in np.argsort(distances, kind="stable")]

    def _version(self) -> dict[str, int]:
        return {"version": int(self.gallery.manifest["version"]), "size": len(self.gallery.index)}

    async def stats(self) -> dict[str, Any]:
        """Size, counts per modality, version, fingerprint, segments."""
        return self.gallery.stats()

    async def status(self) -> dict[str, Any]:
        """Readiness of the gallery."""
        if self.gallery.stale:
            return {"ready": False, "reason": self.reason or self.gallery.stale_message()}
        return {"ready": True, "reason": None, "gallery_size": len(self.gallery.index)}

    # --- writing ------------------------------------------------------------------------------------------
    async def add(
        self, records: list[dict[str, Any]], embeddings: np.ndarray, images: list[bytes | None]
    ) -> dict:
        """Insert or replace items (persisted before they become searchable)."""
        recs = [Record(r["id"], r["modality"], r.get("metadata") or {}) for r in records]
        emb = torch.from_numpy(np.array(embeddings, dtype=np.float32))
        return await self._change(self.gallery.persist_add, recs, emb, images)

    async def add_embeddings(self, ids: list[str], modality: str, embeddings: np.ndarray) -> dict:
        """Internal bulk path (benchmarks, migrations): add precomputed embeddings without images."""
        recs = [Record(i, modality) for i in ids]
        return await self._change(
            self.gallery.persist_add, recs, torch.from_numpy(np.array(embeddings, dtype=np.float32))
        )

    async def delete(self, item_id: str) -> dict[str, Any]:
        """Remove one item (persisted)."""
        return await self._change(self.gallery.persist_delete, [item_id])

    async def _change(self, persist: Any, *args: Any) -> dict[str, Any]:
        async with self.lock:
            try:
                change = await asyncio.to_thread(persist, *args)
            except UnknownItemError as err:
                return _error(404, str(err))
            except StaleGalleryError:
                return _error(503, self.reason or self.gallery.stale_message())
            except ConcurrentWriteError as err:
                await asyncio.to_thread(self._catch_up)
                return _error(503, f"gallery storage: {err}")
            except (GalleryError, storage.StorageError) as err:
                return _error(503, f"gallery storage: {err}")
            self.gallery.apply(change)
            await asyncio.to_thread(self.gallery.collect_garbage, change)
            await self._maybe_compact()
            result = {"replaced": list(change.dropped) if change.records else [], **self._version()}
        self._schedule_maintenance()
        return result

    def _schedule_maintenance(self) -> None:
        """Re-pack / rebuild the index in the background once a change is answered (one task at a time;
        a pending one covers later changes too)."""
        if self.maintenance is None or self.maintenance.done():
            self.maintenance = asyncio.get_running_loop().create_task(self._maintain())

    async def _maintain(self) -> None:
        async with self.lock:  # no change is applied meanwhile; searches go on (tvifm.serve.vectors)
            try:
                await asyncio.to_thread(self.gallery.maintain)
            except Exception:
                log.exception("rebuilding the gallery's search index failed (searched as before)")

    def _catch_up(self) -> None:
        """After a refused write: reload what the other writer stored, so a retry can succeed (unless the
        stored gallery now belongs to another model, e.g. the new cluster of an upgrade)."""
        try:
            if not self.gallery.refresh():
                log.warning("the gallery was re-embedded by another model; this replica's writes are refused")
        except (GalleryError, storage.StorageError) as err:
            log.warning("reloading the gallery after a refused write failed: %s", err)

    async def _maybe_compact(self) -> None:
        if not self.gallery.needs_compaction():
            return
        try:
            change = await asyncio.to_thread(self.gallery.persist_compaction)
        except (GalleryError, storage.StorageError) as err:
            log.warning("gallery compaction failed (will retry after the next change): %s", err)
            return
        self.gallery.apply(change)
        await asyncio.to_thread(self.gallery.collect_garbage, change)

    # --- re-embedding -----------------------------------------------------------------------------------
    async def _reembed(self) -> None:
        records = [rec for rec, _ in self.gallery.index.items()]
        missing = sum(1 for r in records if not r.image)
        if missing:
            self.reason = (
                f"{self.gallery.stale_message()}, but {missing} of {len(records)} items have no stored image "
                "(serve.keep_images was off); re-add them or serve the model that embedded them"
            )
            return
        self.reason = f"re-embedding {len(records)} gallery items for the served model"
        try:
            embeddings = await self._embed_records(records)
            async with self.lock:
                change = await asyncio.to_thread(
                    self.gallery.persist_rebuild, records, embeddings, self.info["fingerprint"]
                )
                await asyncio.to_thread(self.gallery.apply, change)  # builds the new index aside
                await asyncio.to_thread(self.gallery.maintain)
                await asyncio.to_thread(self.gallery.collect_garbage, change)
        except Exception as err:
            self.reason = f"re-embedding the gallery failed: {err}"
            log.exception("re-embedding the gallery failed")
            return
        self.reason = None

    async def _embed_records(self, records: list[Record]) -> torch.Tensor:
        out = []
        for start in range(0, len(records), REEMBED_CHUNK):
            chunk = records[start : start + REEMBED_CHUNK]
            images = await asyncio.gather(
                *(asyncio.to_thread(self.gallery.read_image, r.image) for r in chunk)
            )
            pairs = zip(images, chunk, strict=True)
            calls = [self.embedder.gallery_embedding.remote(img, r.modality) for img, r in pairs]
            out.extend(await asyncio.gather(*calls))
        return torch.from_numpy(np.stack(out)) if out else torch.empty(0, int(self.info["dim"]))


async def _call(response: Any, what: str) -> Any:
    """Await a handle call; a replica that died or is unreachable becomes a 503 (retry later)."""
    from ray.exceptions import RayError

    try:
        return _raise_if_error(await response)
    except RayError as err:
        log.warning("%s unavailable: %s", what, err)
        raise ApiError(503, f"the {what} is temporarily unavailable; retry shortly") from err


class HandleBackend(Backend):
    """The API backend of the ingress: calls ``Embedder`` and ``GalleryIndex`` through handles."""

    def __init__(self, cfg: ServeConfig, embedder: DeploymentHandle, index: DeploymentHandle) -> None:
        self.embedder, self.index = embedder, index
        self.has_captioner = bool(cfg.ir_captioner)
        self.keep_images = cfg.keep_images
        self._info: dict[str, Any] | None = None

    async def model_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await _call(self.embedder.model_info.remote(), "model")
        return self._info

    async def query(self, query: Query) -> dict[str, Any]:
        call = self.embedder.query.remote(query.mode, query.image, query.description, query.ir_caption)
        return await _call(call, "model")

    async def embed_gallery(self, items: list[NewItem]) -> np.ndarray:
        calls = [
            _call(self.embedder.gallery_embedding.remote(it.image, it.modality), "model") for it in items
        ]
        return np.stack(await asyncio.gather(*calls))

    async def search(
        self,
        embedding: Any,
        modality: str,
        top_k: int,
        *,
        where: dict[str, Any] | None = None,
        min_score: float | None = None,
        rerank: bool = False,
    ) -> dict[str, Any]:
        call = (embedding, modality, top_k, where, min_score, rerank)
        return await _call(self.index.search.remote(call), "gallery index")

    async def add(self, items: list[NewItem], embeddings: Any) -> dict[str, Any]:
        records = [{"id": it.id, "modality": it.modality, "metadata": it.metadata} for it in items]
        images = [it.image if self.keep_images else None for it in items]
        return await _call(self.index.add.remote(records, embeddings, images), "gallery index")

    async def delete(self, item_id: str) -> dict[str, Any]:
        return await _call(self.index.delete.remote(item_id), "gallery index")

    async def stats(self) -> dict[str, Any]:
        return await _call(self.index.stats.remote(), "gallery index")

    async def ready(self) -> dict[str, Any]:
        try:
            await self.model_info()
            return await _call(self.index.status.remote(), "gallery index")
        except ApiError as err:
            return {"ready": False, "reason": err.detail}


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    """The HTTP entry point (FastAPI; OpenAPI schema at /openapi.json)."""

    def __init__(self, config: dict[str, Any], embedder: DeploymentHandle, index: DeploymentHandle) -> None:
        self.cfg = serve_config(config)
        self.token = read_token(self.cfg)
        self.backend = HandleBackend(self.cfg, embedder, index)

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self.cfg, self.backend, self.token)
