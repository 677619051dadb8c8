"""The gallery: embeddings with ids, modality and metadata, exact inner-product search, and persistence.

In memory (:class:`EmbeddingIndex`) the embeddings of each modality sit in one growable ``(N, D)`` float32
matrix; a search is one matrix product plus ``topk`` (exact). On storage (:class:`PersistentGallery`,
local folder or ``s3://`` through :mod:`tvifm.data.storage`) the gallery is a *log of immutable
segments* plus a manifest::

    <uri>/manifest.json                  format, version, model fingerprint, dim, live segments + dead rows
    <uri>/segments/<seq>.safetensors     the embeddings (n, D) added by one request
    <uri>/segments/<seq>.json            their ids, modality, metadata and stored-image keys
    <uri>/images/<seq>/<row>             the original image bytes (when images are kept)

A change writes its new files first and the manifest last; the manifest write is atomic (local rename,
whole-object PUT on S3), so a reader or a restarted service sees either the old or the new gallery, never
a mix. Deleting or replacing an item only marks its row dead in the manifest; when there are more dead
rows than live ones, or more than ``max_segments`` segments, the live rows are compacted into one segment.
Before each manifest write the stored version is compared with the one this writer last wrote, so a
second writer on the same URI is detected instead of silently overwritten (one writer per gallery is the
design: the service's single gallery-index replica).

The manifest records the *fingerprint* of the model that computed the embeddings; a gallery opened with
another model is *stale* until it is rebuilt from its stored images (see :meth:`PersistentGallery.rebuild`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tvifm.data import storage
from tvifm.errors import TvifmError

FORMAT = "tvifm-gallery/1"
MANIFEST = "manifest.json"
SEGMENTS = "segments"
IMAGES = "images"
MODALITIES = ("visible", "ir")
_IO_THREADS = 8


class GalleryError(TvifmError):
    """The gallery cannot do what was asked."""


class UnknownItemError(GalleryError):
    """No gallery item has the given id."""


class StaleGalleryError(GalleryError):
    """The stored embeddings were computed by another model than the one being served."""


class ConcurrentWriteError(GalleryError):
    """Another writer changed the stored gallery since this one last wrote it."""


@dataclass
class Record:
    """One gallery item without its embedding; ``image`` is the stored-image key (relative to the root)."""

    id: str
    modality: str
    metadata: dict[str, Any] = field(default_factory=dict)
    image: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (as stored in segment files)."""
        return {"id": self.id, "modality": self.modality, "metadata": self.metadata, "image": self.image}


@dataclass(frozen=True)
class IndexHit:
    """One search result."""

    id: str
    score: float
    modality: str
    metadata: dict[str, Any]


class _Shard:
    """The rows of one modality: a growable ``(capacity, D)`` matrix and the id of each row."""

    def __init__(self, dim: int) -> None:
        self.matrix = torch.empty(0, dim)
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def append(self, ids: Sequence[str], embeddings: torch.Tensor) -> int:
        """Append rows; returns the row index of the first one."""
        start, need = len(self.ids), len(self.ids) + len(ids)
        if need > self.matrix.shape[0]:
            grown = torch.empty(max(need, 2 * self.matrix.shape[0], 1024), self.matrix.shape[1])
            grown[:start] = self.matrix[:start]
            self.matrix = grown
        self.matrix[start:need] = embeddings
        self.ids.extend(ids)
        return start

    def remove(self, row: int) -> str | None:
        """Remove a row by moving the last row into it; returns the id that moved (if any)."""
        last = len(self.ids) - 1
        moved = None
        if row != last:
            self.matrix[row] = self.matrix[last]
            self.ids[row] = self.ids[last]
            moved = self.ids[row]
        self.ids.pop()
        return moved

    def rows(self) -> torch.Tensor:
        """The live ``(N, D)`` embeddings."""
        return self.matrix[: len(self.ids)]

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` inner products ``(B, k')`` and their rows, ``k' = min(k, N)``."""
        k = min(k, len(self.ids))
        if k == 0:
            return torch.empty(len(queries), 0), torch.empty(len(queries), 0, dtype=torch.long)
        return torch.topk(queries @ self.rows().t(), k, dim=1)


class EmbeddingIndex:
    """The in-memory gallery: per-modality shards, every item's record and its stored location."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.shards = {m: _Shard(dim) for m in MODALITIES}
        self.records: dict[str, Record] = {}
        self.row: dict[str, int] = {}
        self.location: dict[str, tuple[int, int]] = {}  # (segment seq, row in the segment)

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.records

    def counts(self) -> dict[str, int]:
        """Number of items per modality."""
        return {m: len(s) for m, s in self.shards.items()}

    def put(
        self, records: Sequence[Record], embeddings: torch.Tensor, locations: Sequence[tuple[int, int]]
    ) -> None:
        """Insert or replace items (rows of ``embeddings`` align with ``records``)."""
        for rec in records:
            if rec.id in self.records:
                self.drop(rec.id)
        for modality in MODALITIES:
            idx = [i for i, r in enumerate(records) if r.modality == modality]
            if not idx:
                continue
            start = self.shards[modality].append([records[i].id for i in idx], embeddings[idx])
            for offset, i in enumerate(idx):
                self.row[records[i].id] = start + offset
        for rec, loc in zip(records, locations, strict=True):
            self.records[rec.id] = rec
            self.location[rec.id] = loc

    def drop(self, item_id: str) -> Record:
        """Remove an item; raises :class:`UnknownItemError` when there is none with that id."""
        rec = self.records.pop(item_id, None)
        if rec is None:
            raise UnknownItemError(f"no gallery item has id {item_id!r}")
        row = self.row.pop(item_id)
        moved = self.shards[rec.modality].remove(row)
        if moved is not None:
            self.row[moved] = row
        del self.location[item_id]
        return rec

    def rows_of(self, modality: str) -> list[str]:
        """Ids of one modality in row order."""
        return self.shards[modality].ids

    def search(self, queries: torch.Tensor, modality: str, k: int) -> list[list[IndexHit]]:
        """Exact top-``k`` items of ``modality`` by inner product, for each query row."""
        shard = self.shards[modality]
        scores, rows = shard.search(queries.to(shard.matrix.dtype), k)
        return [
            [self._hit(shard.ids[r], float(s)) for s, r in zip(srow.tolist(), rrow.tolist(), strict=True)]
            for srow, rrow in zip(scores, rows, strict=True)
        ]

    def _hit(self, item_id: str, score: float) -> IndexHit:
        rec = self.records[item_id]
        return IndexHit(item_id, score, rec.modality, rec.metadata)

    def embedding(self, item_id: str) -> torch.Tensor:
        """The stored embedding of one item."""
        rec = self.records[item_id]
        return self.shards[rec.modality].matrix[self.row[item_id]]

    def items(self) -> Iterator[tuple[Record, torch.Tensor]]:
        """Every live item with its embedding."""
        for shard in self.shards.values():
            for row, item_id in enumerate(shard.ids):
                yield self.records[item_id], shard.matrix[row]


@dataclass
class Change:
    """A persisted change, ready to be applied to the in-memory index."""

    manifest: dict[str, Any]
    records: list[Record] = field(default_factory=list)
    embeddings: torch.Tensor | None = None
    locations: list[tuple[int, int]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    garbage: list[str] = field(default_factory=list)  # keys to delete once the manifest is written
    rebuild: bool = False


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _seg(seq: int, suffix: str) -> str:
    return f"{SEGMENTS}/{seq:08d}{suffix}"


class PersistentGallery:
    """A :class:`EmbeddingIndex` persisted under a storage URI (see the module docstring).

    Mutations are split into ``persist_*`` (storage I/O, reads the index only) and :meth:`apply` (fast,
    in-memory), so a server can persist in a worker thread while searches keep reading the index; the
    plain :meth:`add`/:meth:`delete` do both.
    """

    def __init__(
        self, uri: str, dim: int, fingerprint: str, endpoint: str | None = None, max_segments: int = 32
    ) -> None:
        self.uri, self.endpoint, self.max_segments = str(uri), endpoint, max_segments
        self.fingerprint = fingerprint
        self.manifest = self._read_manifest() or self._empty_manifest(dim)
        self.index = self._load_index()
        if len(self.index) == 0:  # an empty gallery adopts the served model (persisted with the next change)
            self.manifest.update(fingerprint=fingerprint, dim=dim)
            self.index = EmbeddingIndex(dim)

    # --- reading --------------------------------------------------------------------------------------
    def _key(self, rel: str) -> str:
        return storage.join(self.uri, *rel.split("/"))

    def _empty_manifest(self, dim: int) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": 0,
            "fingerprint": self.fingerprint,
            "dim": dim,
            "next_seq": 0,
            "segments": [],
            "updated_at": _now(),
        }

    def _read_manifest(self) -> dict[str, Any] | None:
        uri = self._key(MANIFEST)
        if not storage.exists(uri, self.endpoint):
            return None
        try:
            manifest = json.loads(storage.read_bytes(uri, self.endpoint))
        except json.JSONDecodeError as err:
            raise GalleryError(f"{uri} is not valid JSON ({err.msg}); the stored gallery is damaged") from err
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise GalleryError(f"{uri} is not a tvifm gallery manifest (expected format {FORMAT})")
        return manifest

    def _load_index(self) -> EmbeddingIndex:
        index = EmbeddingIndex(int(self.manifest["dim"]))
        for seg in self.manifest["segments"]:
            records, emb = self._read_segment(int(seg["seq"]))
            dead = set(seg.get("dead", []))
            keep = [r for r in range(len(records)) if r not in dead]
            index.put([records[r] for r in keep], emb[keep], [(int(seg["seq"]), r) for r in keep])
        return index

    def _read_segment(self, seq: int) -> tuple[list[Record], torch.Tensor]:
        items = json.loads(storage.read_bytes(self._key(_seg(seq, ".json")), self.endpoint))["items"]
        emb = load_tensors(storage.read_bytes(self._key(_seg(seq, ".safetensors")), self.endpoint))[
            "embeddings"
        ]
        if emb.shape[0] != len(items):
            raise GalleryError(
                f"segment {seq} of {self.uri} is damaged: {emb.shape[0]} rows, {len(items)} items"
            )
        return [Record(i["id"], i["modality"], i.get("metadata") or {}, i.get("image")) for i in items], emb

    @property
    def stale(self) -> bool:
        """True when the stored embeddings come from another model than ``fingerprint``."""
        return self.manifest["fingerprint"] != self.fingerprint and len(self.index) > 0

    def read_image(self, key: str) -> bytes:
        """The stored bytes of an item's image."""
        return storage.read_bytes(self._key(key), self.endpoint)

    # --- persisting -----------------------------------------------------------------------------------
    def persist_add(
        self,
        records: Sequence[Record],
        embeddings: torch.Tensor,
        images: Sequence[bytes | None] | None = None,
    ) -> Change:
        """Write a new segment (and images) for ``records`` and a manifest marking replaced rows dead."""
        self._check_fresh()
        if len({r.id for r in records}) != len(records):
            raise GalleryError("the same id appears more than once in one request")
        if embeddings.shape != (len(records), self.index.dim):
            raise GalleryError(
                f"expected embeddings of shape ({len(records)}, {self.index.dim}), "
                f"got {tuple(embeddings.shape)}"
            )
        manifest = self._next_manifest()
        seq = manifest["next_seq"]
        manifest["next_seq"] = seq + 1
        records = [Record(r.id, r.modality, dict(r.metadata), r.image) for r in records]
        self._write_images(seq, records, images)
        self._write_segment(seq, records, embeddings)
        replaced = [r.id for r in records if r.id in self.index]
        garbage = self._mark_dead(manifest, replaced)
        manifest["segments"].append({"seq": seq, "count": len(records), "dead": []})
        self._write_manifest(manifest)
        return Change(
            manifest, records, embeddings.float(), [(seq, i) for i in range(len(records))], replaced, garbage
        )

    def persist_delete(self, item_ids: Sequence[str]) -> Change:
        """Mark items dead in a new manifest; raises :class:`UnknownItemError` for an unknown id."""
        unknown = [i for i in item_ids if i not in self.index]
        if unknown:
            raise UnknownItemError(f"no gallery item has id {unknown[0]!r}")
        manifest = self._next_manifest()
        garbage = self._mark_dead(manifest, item_ids)
        self._write_manifest(manifest)
        return Change(manifest, dropped=list(item_ids), garbage=garbage)

    def persist_compaction(self) -> Change:
        """Write every live item into one new segment and a manifest that refers to it alone."""
        records, rows = [], []
        for rec, emb in self.index.items():
            records.append(rec)
            rows.append(emb)
        embeddings = torch.stack(rows) if rows else torch.empty(0, self.index.dim)
        return self._persist_snapshot(records, embeddings, self.manifest["fingerprint"])

    def persist_rebuild(
        self, records: Sequence[Record], embeddings: torch.Tensor, fingerprint: str
    ) -> Change:
        """Replace the whole gallery by ``records`` embedded by the model ``fingerprint`` (re-embedding)."""
        return self._persist_snapshot(list(records), embeddings.float(), fingerprint)

    def _persist_snapshot(self, records: list[Record], embeddings: torch.Tensor, fingerprint: str) -> Change:
        manifest = self._next_manifest()
        seq = manifest["next_seq"]
        manifest.update(next_seq=seq + 1, fingerprint=fingerprint, dim=int(embeddings.shape[1]))
        old = [int(s["seq"]) for s in manifest["segments"]]
        self._write_segment(seq, records, embeddings)
        manifest["segments"] = [{"seq": seq, "count": len(records), "dead": []}]
        self._write_manifest(manifest)
        garbage = [_seg(s, x) for s in old for x in (".json", ".safetensors")]
        locations = [(seq, i) for i in range(len(records))]
        return Change(manifest, records, embeddings, locations, garbage=garbage, rebuild=True)

    def _next_manifest(self) -> dict[str, Any]:
        manifest = json.loads(json.dumps(self.manifest))
        manifest["version"] = int(manifest["version"]) + 1
        manifest["updated_at"] = _now()
        return manifest

    def _mark_dead(self, manifest: dict[str, Any], item_ids: Sequence[str]) -> list[str]:
        by_seq = {int(s["seq"]): s for s in manifest["segments"]}
        garbage = []
        for item_id in item_ids:
            seq, row = self.index.location[item_id]
            by_seq[seq]["dead"].append(row)
            image = self.index.records[item_id].image
            if image:
                garbage.append(image)
        return garbage

    def _check_fresh(self) -> None:
        if self.stale:
            raise StaleGalleryError(self.stale_message())

    def stale_message(self) -> str:
        """Why a stale gallery cannot be searched or extended."""
        return (
            f"the stored gallery was embedded by model {self.manifest['fingerprint']}, not by the served "
            f"model {self.fingerprint}; it must be re-embedded from its stored images"
        )

    def _write_images(self, seq: int, records: list[Record], images: Sequence[bytes | None] | None) -> None:
        jobs = []
        for row, (rec, data) in enumerate(zip(records, images or [None] * len(records), strict=True)):
            if data is not None:
                rec.image = f"{IMAGES}/{seq:08d}/{row:06d}"
                jobs.append((self._key(rec.image), data))
        if jobs:
            with ThreadPoolExecutor(_IO_THREADS) as pool:
                list(pool.map(lambda job: storage.write_bytes(job[0], job[1], self.endpoint), jobs))

    def _write_segment(self, seq: int, records: Sequence[Record], embeddings: torch.Tensor) -> None:
        blob = save_tensors({"embeddings": embeddings.float().contiguous()})
        storage.write_bytes(self._key(_seg(seq, ".safetensors")), blob, self.endpoint)
        items = json.dumps({"items": [r.to_json() for r in records]}).encode()
        storage.write_bytes(self._key(_seg(seq, ".json")), items, self.endpoint)

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        stored = self._read_manifest()
        if stored is not None and int(stored["version"]) != int(self.manifest["version"]):
            raise ConcurrentWriteError(
                f"the gallery at {self.uri} was changed by another writer (stored version "
                f"{stored['version']}, expected {self.manifest['version']}); restart to reload it"
            )
        storage.write_bytes(self._key(MANIFEST), json.dumps(manifest, indent=1).encode(), self.endpoint)

    # --- applying -------------------------------------------------------------------------------------
    def apply(self, change: Change) -> None:
        """Apply a persisted change to the in-memory index (fast; no I/O)."""
        if change.rebuild:
            self.index = EmbeddingIndex(int(change.manifest["dim"]))
        else:
            replaced = {r.id for r in change.records}
            for item_id in change.dropped:
                if item_id in self.index and item_id not in replaced:
                    self.index.drop(item_id)
        if change.records:
            self.index.put(change.records, change.embeddings, change.locations)
        self.manifest = change.manifest

    def collect_garbage(self, change: Change) -> None:
        """Delete files a change made unreachable (best effort; leftovers are harmless)."""
        for key in change.garbage:
            try:
                storage.delete(self._key(key), self.endpoint)
            except Exception:  # an orphaned file only costs space
                continue

    def needs_compaction(self) -> bool:
        """More segments than allowed, or more dead rows than live ones."""
        segments = self.manifest["segments"]
        dead = sum(len(s["dead"]) for s in segments)
        return len(segments) > self.max_segments or dead > len(self.index)

    # --- the plain API --------------------------------------------------------------------------------
    def add(
        self,
        records: Sequence[Record],
        embeddings: torch.Tensor,
        images: Sequence[bytes | None] | None = None,
    ) -> list[str]:
        """Insert or replace items, persist, maybe compact; returns the ids that replaced existing items."""
        change = self.persist_add(records, embeddings, images)
        self._commit(change)
        return change.dropped

    def delete(self, item_id: str) -> Record:
        """Remove one item, persist, maybe compact; returns its record."""
        record = self.index.records.get(item_id)
        self._commit(self.persist_delete([item_id]))
        assert record is not None
        return record

    def _commit(self, change: Change) -> None:
        self.apply(change)
        self.collect_garbage(change)
        if self.needs_compaction():
            compaction = self.persist_compaction()
            self.apply(compaction)
            self.collect_garbage(compaction)

    def search(self, queries: torch.Tensor, modality: str, k: int) -> list[list[IndexHit]]:
        """Exact top-``k`` search of ``modality`` items (see :meth:`EmbeddingIndex.search`)."""
        self._check_fresh()
        return self.index.search(queries, modality, k)

    def stats(self) -> dict[str, Any]:
        """Size, per-modality counts, dim, version, model fingerprint, segments and dead rows."""
        segments = self.manifest["segments"]
        return {
            "size": len(self.index),
            "by_modality": self.index.counts(),
            "dim": int(self.manifest["dim"]),
            "version": int(self.manifest["version"]),
            "fingerprint": self.manifest["fingerprint"],
            "stale": self.stale,
            "segments": len(segments),
            "dead_rows": sum(len(s["dead"]) for s in segments),
            "updated_at": self.manifest["updated_at"],
        }
