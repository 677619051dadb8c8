"""The gallery: embeddings with ids, modality and metadata, filtered inner-product search, persistence.

In memory (:class:`EmbeddingIndex`) the embeddings of each modality sit in one growable ``(N, D)`` float32
matrix with the items' metadata in columns (:class:`tvifm.serve.vectors.Shard`); a search is exact, or
goes through a faiss IVF or HNSW index built from that matrix (never stored), and a metadata filter
(:mod:`tvifm.serve.filters`) restricts it before the top-k. On storage (:class:`PersistentGallery`,
local folder or ``s3://`` through :mod:`tvifm.data.storage`) the gallery is a *log of immutable
segments* plus a manifest::

    <uri>/manifest.json                  format, version, commit id, model fingerprint, dim, and per live
                                         segment: id, row count, SHA-256 of both files, dead rows
    <uri>/segments/<id>.safetensors      the embeddings (n, D) added by one change
    <uri>/segments/<id>.json             their ids, modality, metadata and stored-image keys
    <uri>/images/<id>/<row>              the original image bytes (when images are kept)

``<id>`` is a fresh UUID for every change, so no writer can produce a name another writer uses: a change
first writes its new files, then commits with ONE atomic conditional step on the manifest
(:func:`tvifm.data.storage.write_if`: compare and rename under an exclusive lock locally, a conditional
PUT on S3) that succeeds only while the manifest is still the version this writer read. Nothing of a
change is visible before that step. A refused writer (:class:`ConcurrentWriteError`) deletes the files it
prepared; a writer killed half-way leaves files that no manifest references (*orphans*), deleted by the
next compaction or by :func:`repair_gallery` once they are older than a grace period (so the files of a
write still in progress are never taken). Deleting or replacing an item only marks its row dead; when
there are more dead rows than live ones, or more than ``max_segments`` segments, the live rows are
compacted into one segment.

Loading checks the manifest against the segment files (each exists, row counts agree, SHA-256 digests
match, no id is live twice) and refuses an inconsistent gallery with :class:`CorruptGalleryError`;
:func:`check_gallery` and :func:`repair_gallery` (``tvifm gallery check|repair``) also check the stored
images and list or collect orphans. The guarantees are described in docs/serving.md and
docs/operations.md.

The manifest records the *fingerprint* of the model that computed the embeddings; a gallery opened with
another model is *stale* until it is rebuilt from its stored images
(:meth:`PersistentGallery.persist_rebuild`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tvifm.data import storage
from tvifm.errors import TvifmError
from tvifm.serve.filters import MetadataFilter
from tvifm.serve.vectors import IndexSpec, Shard

FORMAT = "tvifm-gallery/2"
LEGACY_FORMAT = "tvifm-gallery/1"  # sequence-numbered segments without digests: read, rewritten on change
MANIFEST = "manifest.json"
SEGMENTS = "segments"
IMAGES = "images"
MODALITIES = ("visible", "ir")
PARTS = ("safetensors", "json")  # the two files of a segment
ORPHAN_GRACE_S = 3600.0  # unreferenced files younger than this may belong to a write in progress
_IO_THREADS = 8
_LOAD_ATTEMPTS = 3


class GalleryError(TvifmError):
    """The gallery cannot do what was asked."""


class UnknownItemError(GalleryError):
    """No gallery item has the given id."""


class StaleGalleryError(GalleryError):
    """The stored embeddings were computed by another model than the one being served."""


class ConcurrentWriteError(GalleryError):
    """Another writer changed the stored gallery since this one read it; nothing of the change was kept."""


class CorruptGalleryError(GalleryError):
    """The stored manifest and segment files disagree (``tvifm gallery repair`` keeps what can be trusted)."""


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


class EmbeddingIndex:
    """The in-memory gallery: one :class:`~tvifm.serve.vectors.Shard` per modality (embeddings, metadata
    columns, exact or approximate search), every item's record and its stored location."""

    def __init__(self, dim: int, spec: IndexSpec | None = None) -> None:
        self.dim, self.spec = dim, spec or IndexSpec()
        self.shards = {m: Shard(dim, self.spec) for m in MODALITIES}
        self.records: dict[str, Record] = {}
        self.location: dict[str, tuple[str, int]] = {}  # (segment id, row in the segment)

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.records

    def counts(self) -> dict[str, int]:
        """Number of items per modality."""
        return {m: len(s) for m, s in self.shards.items()}

    def put(
        self, records: Sequence[Record], embeddings: torch.Tensor, locations: Sequence[tuple[str, int]]
    ) -> None:
        """Insert or replace items (rows of ``embeddings`` align with ``records``)."""
        for rec in records:
            if rec.id in self.records:
                self.drop(rec.id)
        rows = embeddings.detach().float().cpu().numpy()
        for modality in MODALITIES:
            idx = [i for i, r in enumerate(records) if r.modality == modality]
            if idx:
                chosen = [records[i] for i in idx]
                self.shards[modality].append([r.id for r in chosen], rows[idx], [r.metadata for r in chosen])
        for rec, loc in zip(records, locations, strict=True):
            self.records[rec.id] = rec
            self.location[rec.id] = loc

    def drop(self, item_id: str) -> Record:
        """Remove an item; raises :class:`UnknownItemError` when there is none with that id."""
        rec = self.records.pop(item_id, None)
        if rec is None:
            raise UnknownItemError(f"no gallery item has id {item_id!r}")
        self.shards[rec.modality].remove(item_id)
        del self.location[item_id]
        return rec

    def rows_of(self, modality: str) -> list[str]:
        """Ids of one modality in slot (insertion) order."""
        return self.shards[modality].ids()

    def maintain(self) -> bool:
        """Re-pack and (re)build the approximate structures where due (see
        :meth:`~tvifm.serve.vectors.Shard.maintain`); returns whether anything changed."""
        return any([shard.maintain() for shard in self.shards.values()])

    def search(
        self,
        queries: torch.Tensor,
        modality: str,
        k: int,
        where: MetadataFilter | None = None,
        min_score: float | None = None,
    ) -> list[list[IndexHit]]:
        """Top-``k`` items of ``modality`` by inner product for each query row, among the items ``where``
        admits (filtered before the top-k), without hits scoring below ``min_score``."""
        found = self.shards[modality].search(
            queries.detach().float().cpu().numpy(), k, where=where, min_score=min_score
        )
        return [[self._hit(item_id, score) for item_id, score in hits] for hits in found]

    def _hit(self, item_id: str, score: float) -> IndexHit:
        rec = self.records[item_id]
        return IndexHit(item_id, score, rec.modality, rec.metadata)

    def embedding(self, item_id: str) -> torch.Tensor:
        """The stored embedding of one item."""
        rec = self.records[item_id]
        return torch.from_numpy(self.shards[rec.modality].embedding(item_id))

    def items(self) -> Iterator[tuple[Record, torch.Tensor]]:
        """Every live item with its embedding."""
        for shard in self.shards.values():
            for item_id, row in shard.rows():
                yield self.records[item_id], torch.from_numpy(row)


@dataclass
class Change:
    """A persisted change, ready to be applied to the in-memory index."""

    manifest: dict[str, Any]
    tag: str | None = None  # the version tag of the manifest this change wrote
    records: list[Record] = field(default_factory=list)
    embeddings: torch.Tensor | None = None
    locations: list[tuple[str, int]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    garbage: list[str] = field(default_factory=list)  # keys to delete once the manifest is written
    rebuild: bool = False
    same_items: bool = False  # a compaction: the index's items at new locations (it keeps its structures)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _new_id() -> str:
    return uuid.uuid4().hex


def _seg(segment_id: str, part: str) -> str:
    return f"{SEGMENTS}/{segment_id}.{part}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _commands(uri: str, endpoint: str | None) -> str:
    where = f"--uri {uri}" + (f" --s3-endpoint {endpoint}" if endpoint else "")
    return (
        f"run `tvifm gallery check {where}` for details and `tvifm gallery repair {where}` to keep what "
        "can be trusted (docs/operations.md, Gallery)"
    )


class _Store:
    """The files of one gallery under a storage URI; keys are relative to it (``segments/<id>.json``)."""

    def __init__(self, uri: str, endpoint: str | None) -> None:
        self.uri, self.endpoint = str(uri), endpoint
        self._conditional_ok = False

    def key(self, rel: str) -> str:
        return storage.join(self.uri, *rel.split("/"))

    def read(self, rel: str) -> bytes:
        return storage.read_bytes(self.key(rel), self.endpoint)

    def write_all(self, files: Sequence[tuple[str, bytes]]) -> None:
        """Write files (in parallel); on failure, remove every one of them and re-raise."""
        try:
            with ThreadPoolExecutor(_IO_THREADS) as pool:
                list(pool.map(lambda f: storage.write_bytes(self.key(f[0]), f[1], self.endpoint), files))
        except BaseException:
            self.delete_all(rel for rel, _ in files)
            raise

    def delete_all(self, rels: Iterable[str]) -> None:
        """Delete files, best effort (a leftover is an orphan: it only costs space until collected)."""
        folders = set()
        for rel in rels:
            with contextlib.suppress(Exception):
                storage.delete(self.key(rel), self.endpoint)
            if rel.startswith(f"{IMAGES}/") and rel.count("/") == 2:
                folders.add(rel.rsplit("/", 1)[0])
        for folder in folders:  # images/<id>/ of one change: nobody else writes there
            storage.remove_empty_folders(self.key(folder))

    def manifest(self) -> tuple[dict[str, Any], str] | None:
        """The stored manifest (legacy formats normalised) and its version tag; None when there is none."""
        uri = self.key(MANIFEST)
        stored = storage.read_versioned(uri, self.endpoint)
        if stored is None:
            return None
        try:
            manifest = json.loads(stored.data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CorruptGalleryError(
                f"{uri} is not valid JSON ({err}); the stored gallery is damaged. Restore manifest.json "
                "from a backup (or an earlier object version) or remove the gallery"
            ) from err
        return _normalise(manifest, uri), stored.tag

    def tag(self) -> str | None:
        """The version tag of the stored manifest (None when there is none)."""
        stored = storage.read_versioned(self.key(MANIFEST), self.endpoint)
        return stored.tag if stored else None

    def commit(self, manifest: dict[str, Any], expected: str | None) -> str:
        """Publish ``manifest`` if the stored one still has the tag ``expected``; returns the new tag.

        Raises :class:`tvifm.data.storage.WriteConflictError` when another writer got there first.
        """
        if not self._conditional_ok:
            storage.check_conditional_writes(self.uri, self.endpoint)
            self._conditional_ok = True
        manifest["commit"], manifest["updated_at"] = _new_id(), _now()
        data = json.dumps(manifest, indent=1).encode()
        return storage.write_if(self.key(MANIFEST), data, expected, self.endpoint)

    def entries(self) -> dict[str, storage.FileEntry]:
        """The files housekeeping may collect: everything under ``segments/`` and ``images/`` (hidden
        temporary files included) and the root's leftovers of interrupted manifest writes and probes."""
        out = {}
        for entry in storage.list_entries(self.uri, self.endpoint):
            rel = storage.relative(entry.uri, self.uri)
            top = rel.split("/", 1)[0]
            leftover = "/" not in rel and (
                (rel.startswith(f".{MANIFEST}.") and rel.endswith(".tmp")) or rel.startswith(".conditional-")
            )
            if (top in (SEGMENTS, IMAGES) and "/" in rel) or leftover:
                out[rel] = entry
        return out


def _normalise(manifest: Any, uri: str) -> dict[str, Any]:
    """Check a manifest's shape; a legacy (sequence-numbered) one is converted to the current form."""
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise GalleryError(f"{uri} is not a tvifm gallery manifest (expected format {FORMAT})")
    try:
        if manifest["format"] == LEGACY_FORMAT:
            segments = [
                {"id": f"{int(s['seq']):08d}", "count": int(s["count"]), "dead": list(s.get("dead", []))}
                for s in manifest["segments"]
            ]
            manifest = {k: v for k, v in manifest.items() if k != "next_seq"}
            manifest.update(format=FORMAT, segments=segments)
        _ = (int(manifest["version"]), int(manifest["dim"]), manifest["fingerprint"])  # present, numeric
        if not all(isinstance(s["id"], str) and isinstance(s["dead"], list) for s in manifest["segments"]):
            raise TypeError("a segment entry without an id or dead-row list")
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptGalleryError(
            f"{uri} is malformed ({type(err).__name__}: {err}); the stored gallery is damaged. Restore "
            "manifest.json from a backup (or an earlier object version) or remove the gallery"
        ) from err
    return manifest


# --- reading and checking segments -------------------------------------------------------------------
class _DamagedError(Exception):
    """One segment cannot be trusted (the message says why)."""


@dataclass
class _Segment:
    entry: dict[str, Any]  # the manifest's record of the segment
    records: list[Record]
    embeddings: torch.Tensor

    def live(self) -> list[int]:
        dead = set(self.entry["dead"])
        return [r for r in range(len(self.records)) if r not in dead]


def _read_segment(store: _Store, entry: dict[str, Any], dim: int) -> _Segment:
    """Read one segment and check it against its manifest entry; raises :class:`_DamagedError`."""
    sid = str(entry.get("id"))
    blobs = {}
    for part in PARTS:
        try:
            blobs[part] = store.read(_seg(sid, part))
        except storage.StorageError as err:
            raise _DamagedError(f"segment {sid}: its {part} file is missing or unreadable ({err})") from err
    recorded = entry.get("sha256") or {}
    for part in PARTS:
        if recorded.get(part) is not None and _digest(blobs[part]) != recorded[part]:
            raise _DamagedError(
                f"segment {sid}: its {part} file does not have the SHA-256 the manifest records"
            )
    segment = _parse_segment(sid, entry, blobs, dim)
    entry.setdefault("sha256", {part: _digest(blobs[part]) for part in PARTS})  # legacy: kept from now on
    return segment


def _parse_segment(sid: str, entry: dict[str, Any], blobs: dict[str, bytes], dim: int) -> _Segment:
    try:
        items = json.loads(blobs["json"])["items"]
        records = [
            Record(str(i["id"]), str(i["modality"]), i.get("metadata") or {}, i.get("image")) for i in items
        ]
        embeddings = load_tensors(blobs["safetensors"])["embeddings"].float()
        count, dead = int(entry["count"]), [int(r) for r in entry["dead"]]
    except Exception as err:  # any parse failure (JSON, safetensors, manifest entry) means damaged
        raise _DamagedError(f"segment {sid}: cannot be parsed ({type(err).__name__}: {err})") from err
    if embeddings.ndim != 2 or not embeddings.shape[0] == len(records) == count:
        raise _DamagedError(
            f"segment {sid}: the manifest says {count} rows, its files hold {len(records)} items and "
            f"{embeddings.shape[0] if embeddings.ndim else 0} embeddings"
        )
    if embeddings.shape[1] != dim:
        raise _DamagedError(
            f"segment {sid}: embeddings of dimension {embeddings.shape[1]}, the gallery's is {dim}"
        )
    if any(r.modality not in MODALITIES for r in records) or any(not 0 <= r < count for r in dead):
        raise _DamagedError(f"segment {sid}: an unknown modality or a dead row outside 0..{count - 1}")
    segment = _Segment(entry, records, embeddings)
    ids = [records[r].id for r in segment.live()]
    if len(set(ids)) != len(ids):
        raise _DamagedError(f"segment {sid}: an id appears on more than one live row")
    return segment


def _scan(store: _Store, manifest: dict[str, Any]) -> tuple[list[_Segment], list[str]]:
    """The segments that can be trusted, and a line for each one that cannot."""
    dim = int(manifest["dim"])

    def read(entry: dict[str, Any]) -> _Segment | str:
        try:
            return _read_segment(store, entry, dim)
        except _DamagedError as err:
            return str(err)

    with ThreadPoolExecutor(_IO_THREADS) as pool:
        results = list(pool.map(read, manifest["segments"]))
    return [r for r in results if isinstance(r, _Segment)], [r for r in results if isinstance(r, str)]


def _build_index(
    dim: int, segments: Sequence[_Segment], spec: IndexSpec | None = None
) -> tuple[EmbeddingIndex, list[str]]:
    """The in-memory index of the live rows; an id live in two segments is a problem (the later wins)."""
    index, problems = EmbeddingIndex(dim, spec), []
    for seg in segments:
        keep, sid = seg.live(), str(seg.entry["id"])
        problems += [
            f"item {seg.records[r].id!r} is live in two segments (kept from {sid})"
            for r in keep
            if seg.records[r].id in index
        ]
        index.put([seg.records[r] for r in keep], seg.embeddings[keep], [(sid, r) for r in keep])
    return index, problems


def _segment_files(
    segment_id: str, records: Sequence[Record], embeddings: torch.Tensor
) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """The two files of a new segment and its manifest entry (row count, digests, no dead rows)."""
    blobs = {
        "safetensors": save_tensors({"embeddings": embeddings.float().contiguous()}),
        "json": json.dumps({"items": [r.to_json() for r in records]}).encode(),
    }
    entry = {
        "id": segment_id,
        "count": len(records),
        "dead": [],
        "sha256": {part: _digest(blob) for part, blob in blobs.items()},
    }
    return [(_seg(segment_id, part), blob) for part, blob in blobs.items()], entry


def _referenced(manifest: dict[str, Any] | None, index: EmbeddingIndex) -> set[str]:
    """Every key the gallery needs: both files of each manifest segment and the live items' images."""
    segments = manifest["segments"] if manifest else []
    refs = {_seg(str(s["id"]), part) for s in segments for part in PARTS}
    return refs | {rec.image for rec in index.records.values() if rec.image}


def _collect(store: _Store, referenced: set[str], grace_s: float) -> list[str]:
    """Delete the unreferenced files older than ``grace_s`` seconds; returns their keys."""
    now = time.time()
    doomed = sorted(
        rel for rel, e in store.entries().items() if rel not in referenced and now - e.modified >= grace_s
    )
    store.delete_all(doomed)
    return doomed


# --- the persistent gallery ----------------------------------------------------------------------------
class PersistentGallery:
    """A :class:`EmbeddingIndex` persisted under a storage URI (see the module docstring).

    Mutations are split into ``persist_*`` (storage I/O, reads the index only) and :meth:`apply` (fast,
    in-memory), so a server can persist in a worker thread while searches keep reading the index; the
    plain :meth:`add`/:meth:`delete` do both. ``orphan_grace_s``: how old an unreferenced file must be
    before compaction deletes it (younger ones may belong to a write in progress). ``index``: how the
    in-memory index searches (exact by default, or IVF/HNSW, :class:`~tvifm.serve.vectors.IndexSpec`);
    its approximate structures are built on load and by :meth:`maintain`, never stored.
    """

    def __init__(
        self,
        uri: str,
        dim: int,
        fingerprint: str,
        endpoint: str | None = None,
        max_segments: int = 32,
        orphan_grace_s: float = ORPHAN_GRACE_S,
        index: IndexSpec | None = None,
    ) -> None:
        self.uri, self.endpoint, self.max_segments = str(uri), endpoint, max_segments
        self.fingerprint, self.dim, self.orphan_grace_s = fingerprint, dim, orphan_grace_s
        self.spec = index or IndexSpec()
        self.store = _Store(self.uri, endpoint)
        self.manifest, self.tag, self.index = self._load(dim)

    # --- reading --------------------------------------------------------------------------------------
    def _empty_manifest(self, dim: int) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": 0,
            "fingerprint": self.fingerprint,
            "dim": dim,
            "segments": [],
            "updated_at": _now(),
        }

    def _load(self, dim: int) -> tuple[dict[str, Any], str | None, EmbeddingIndex]:
        """The stored manifest, its tag and index, checked; an empty gallery adopts the served model."""
        for _ in range(_LOAD_ATTEMPTS):
            stored = self.store.manifest()
            if stored is None:
                return self._empty_manifest(dim), None, EmbeddingIndex(dim, self.spec)
            manifest, tag = stored
            segments, problems = _scan(self.store, manifest)
            index, twice = _build_index(int(manifest["dim"]), segments, self.spec)
            if not problems + twice:
                if len(index) == 0:  # adopts the served model (persisted with the next change); its
                    # segments hold dead rows only, and become orphans for the next compaction to collect
                    manifest.update(fingerprint=self.fingerprint, dim=dim, segments=[])
                    index = EmbeddingIndex(dim, self.spec)
                index.maintain()  # the approximate structures, built in the stored order
                return manifest, tag, index
            if self.store.tag() == tag:  # not a writer moving on under us: the gallery is damaged
                raise CorruptGalleryError(
                    f"the gallery at {self.uri} is inconsistent ({'; '.join(problems + twice)}); nothing "
                    f"was loaded: {_commands(self.uri, self.endpoint)}"
                )
        raise GalleryError(f"the gallery at {self.uri} kept changing while it was loaded; retry")

    def refresh(self) -> bool:
        """Reload the stored gallery (after a :class:`ConcurrentWriteError`, to catch up with the writer
        that got there first). Returns False and keeps the current state when the stored gallery was
        embedded by another model than ``fingerprint`` (a newer deployment owns it now)."""
        manifest, tag, index = self._load(self.dim)
        if manifest["fingerprint"] != self.fingerprint and len(index) > 0:
            return False
        self.manifest, self.tag, self.index = manifest, tag, index
        return True

    @property
    def stale(self) -> bool:
        """True when the stored embeddings come from another model than ``fingerprint``."""
        return self.manifest["fingerprint"] != self.fingerprint and len(self.index) > 0

    def read_image(self, key: str) -> bytes:
        """The stored bytes of an item's image."""
        return self.store.read(key)

    # --- persisting -----------------------------------------------------------------------------------
    def persist_add(
        self,
        records: Sequence[Record],
        embeddings: torch.Tensor,
        images: Sequence[bytes | None] | None = None,
    ) -> Change:
        """Write a new segment (and images) for ``records`` and commit a manifest marking replaced rows
        dead; raises :class:`ConcurrentWriteError` (leaving nothing behind) when another writer was first."""
        self._check_fresh()
        if len({r.id for r in records}) != len(records):
            raise GalleryError("the same id appears more than once in one request")
        if embeddings.shape != (len(records), self.index.dim):
            raise GalleryError(
                f"expected embeddings of shape ({len(records)}, {self.index.dim}), "
                f"got {tuple(embeddings.shape)}"
            )
        sid = _new_id()
        records = [Record(r.id, r.modality, dict(r.metadata), r.image) for r in records]
        files = self._image_files(sid, records, images)
        segment_files, entry = _segment_files(sid, records, embeddings)
        manifest = self._next_manifest()
        replaced = [r.id for r in records if r.id in self.index]
        garbage = self._mark_dead(manifest, replaced)
        manifest["segments"].append(entry)
        tag = self._write_and_commit(manifest, files + segment_files)
        locations = [(sid, i) for i in range(len(records))]
        return Change(manifest, tag, records, embeddings.float(), locations, replaced, garbage)

    def persist_delete(self, item_ids: Sequence[str]) -> Change:
        """Commit a manifest marking items dead; raises :class:`UnknownItemError` for an unknown id."""
        unknown = [i for i in item_ids if i not in self.index]
        if unknown:
            raise UnknownItemError(f"no gallery item has id {unknown[0]!r}")
        manifest = self._next_manifest()
        garbage = self._mark_dead(manifest, item_ids)
        tag = self._write_and_commit(manifest, [])
        return Change(manifest, tag, dropped=list(item_ids), garbage=garbage)

    def persist_compaction(self) -> Change:
        """Write every live item into one new segment and a manifest that refers to it alone."""
        records, rows = [], []
        for rec, emb in self.index.items():
            records.append(rec)
            rows.append(emb)
        embeddings = torch.stack(rows) if rows else torch.empty(0, self.index.dim)
        change = self._persist_snapshot(records, embeddings, self.manifest["fingerprint"])
        change.same_items = True
        return change

    def persist_rebuild(
        self, records: Sequence[Record], embeddings: torch.Tensor, fingerprint: str
    ) -> Change:
        """Replace the whole gallery by ``records`` embedded by the model ``fingerprint`` (re-embedding)."""
        return self._persist_snapshot(list(records), embeddings.float(), fingerprint)

    def _persist_snapshot(self, records: list[Record], embeddings: torch.Tensor, fingerprint: str) -> Change:
        sid = _new_id()
        manifest = self._next_manifest()
        manifest.update(fingerprint=fingerprint, dim=int(embeddings.shape[1]))
        old = [str(s["id"]) for s in manifest["segments"]]
        files, entry = _segment_files(sid, records, embeddings)
        manifest["segments"] = [entry]
        tag = self._write_and_commit(manifest, files)
        garbage = [_seg(s, part) for s in old for part in PARTS]
        locations = [(sid, i) for i in range(len(records))]
        return Change(manifest, tag, records, embeddings, locations, garbage=garbage, rebuild=True)

    def _next_manifest(self) -> dict[str, Any]:
        manifest = json.loads(json.dumps(self.manifest))
        manifest["version"] = int(manifest["version"]) + 1
        return manifest

    def _mark_dead(self, manifest: dict[str, Any], item_ids: Sequence[str]) -> list[str]:
        by_id = {str(s["id"]): s for s in manifest["segments"]}
        garbage = []
        for item_id in item_ids:
            sid, row = self.index.location[item_id]
            by_id[sid]["dead"].append(row)
            image = self.index.records[item_id].image
            if image:
                garbage.append(image)
        return garbage

    def _image_files(
        self, sid: str, records: list[Record], images: Sequence[bytes | None] | None
    ) -> list[tuple[str, bytes]]:
        """The image files of a new segment (sets each record's ``image`` key)."""
        files = []
        for row, (rec, data) in enumerate(zip(records, images or [None] * len(records), strict=True)):
            if data is not None:
                rec.image = f"{IMAGES}/{sid}/{row:06d}"
                files.append((rec.image, data))
        return files

    def _write_and_commit(self, manifest: dict[str, Any], files: list[tuple[str, bytes]]) -> str:
        """Write a change's new files, then publish its manifest if nobody else changed the stored one.

        A refused commit deletes the new files and raises :class:`ConcurrentWriteError`. Any other error
        of the commit leaves them: the manifest may have been stored (an S3 PUT that timed out), and files
        it does not reference are orphans that housekeeping collects.
        """
        self.store.write_all(files)
        try:
            return self.store.commit(manifest, self.tag)
        except storage.WriteConflictError as err:
            self.store.delete_all(rel for rel, _ in files)
            raise ConcurrentWriteError(
                f"the gallery at {self.uri} was changed by another writer since this one read version "
                f"{self.manifest['version']}; this change was not stored. Reload the gallery and retry"
            ) from err

    def _check_fresh(self) -> None:
        if self.stale:
            raise StaleGalleryError(self.stale_message())

    def stale_message(self) -> str:
        """Why a stale gallery cannot be searched or extended."""
        return (
            f"the stored gallery was embedded by model {self.manifest['fingerprint']}, not by the served "
            f"model {self.fingerprint}; it must be re-embedded from its stored images"
        )

    # --- applying -------------------------------------------------------------------------------------
    def apply(self, change: Change) -> None:
        """Apply a persisted change to the in-memory index (no I/O; fast except for a re-embedded
        gallery, whose new index is built aside and swapped in, so it may run in a worker thread).

        A compaction only moves the items' stored locations; the index and its search structures stay.
        """
        if change.rebuild and change.same_items:
            for rec, loc in zip(change.records, change.locations, strict=True):
                self.index.location[rec.id] = loc
        elif change.rebuild:
            index = EmbeddingIndex(int(change.manifest["dim"]), self.spec)
            index.put(change.records, change.embeddings, change.locations)
            self.index = index
        else:
            replaced = {r.id for r in change.records}
            for item_id in change.dropped:
                if item_id in self.index and item_id not in replaced:
                    self.index.drop(item_id)
            if change.records:
                self.index.put(change.records, change.embeddings, change.locations)
        self.manifest, self.tag = change.manifest, change.tag

    def maintain(self) -> bool:
        """Re-pack the in-memory index and (re)build its approximate structures where due (see
        :meth:`EmbeddingIndex.maintain`); safe while searches run in another thread, not while changes
        are applied. The plain :meth:`add`/:meth:`delete` call it; a server calls it after each change."""
        return self.index.maintain()

    def collect_garbage(self, change: Change) -> None:
        """Delete files a change made unreachable; after a compaction or rebuild also the orphans (best
        effort: a leftover only costs space until the next compaction)."""
        self.store.delete_all(change.garbage)
        if change.rebuild:
            with contextlib.suppress(Exception):
                self.collect_orphans()

    def collect_orphans(self) -> list[str]:
        """Delete files no manifest references that are older than ``orphan_grace_s`` (what writers
        killed half-way left behind); returns their keys. Does nothing when this writer is not up to date
        with the stored manifest (then another writer is active; its own compactions collect)."""
        if self.store.tag() != self.tag:
            return []
        return _collect(self.store, _referenced(self.manifest, self.index), self.orphan_grace_s)

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
        self._settle(change)
        return change.dropped

    def delete(self, item_id: str) -> Record:
        """Remove one item, persist, maybe compact; returns its record."""
        record = self.index.records.get(item_id)
        self._settle(self.persist_delete([item_id]))
        assert record is not None
        return record

    def compact(self) -> None:
        """Rewrite the live items as one segment, then delete dead files and orphans."""
        change = self.persist_compaction()
        self.apply(change)
        self.collect_garbage(change)

    def _settle(self, change: Change) -> None:
        self.apply(change)
        self.collect_garbage(change)
        if self.needs_compaction():
            with contextlib.suppress(ConcurrentWriteError):  # housekeeping; the change itself is stored
                self.compact()
        self.maintain()

    def search(
        self,
        queries: torch.Tensor,
        modality: str,
        k: int,
        where: MetadataFilter | None = None,
        min_score: float | None = None,
    ) -> list[list[IndexHit]]:
        """Top-``k`` search of ``modality`` items, filtered before the top-k (see
        :meth:`EmbeddingIndex.search`)."""
        self._check_fresh()
        return self.index.search(queries, modality, k, where=where, min_score=min_score)

    def stats(self) -> dict[str, Any]:
        """Size, per-modality counts, dim, version, model fingerprint, segments and dead rows, the index
        type and per modality whether its approximate structure is built (else it is searched exactly)."""
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
            "index": self.spec.kind,
            "approximate": {m: shard.approximate for m, shard in self.index.shards.items()},
        }


# --- check and repair ----------------------------------------------------------------------------------
@dataclass
class GalleryReport:
    """What :func:`check_gallery` found (and what :func:`repair_gallery` did).

    ``ok`` is true when the manifest, segment files and stored images agree. ``orphans`` are files no
    manifest references that are older than the grace period (repair deletes them); ``recent`` are
    younger ones, possibly a write in progress (left alone).
    """

    uri: str
    ok: bool = True
    version: int | None = None
    fingerprint: str | None = None
    items: int = 0
    segments: int = 0
    problems: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``tvifm gallery`` prints)."""
        return asdict(self)


@dataclass
class _State:
    """A stored gallery as read: manifest and tag (None: no manifest), trusted index and problems."""

    manifest: dict[str, Any] | None
    tag: str | None
    index: EmbeddingIndex
    problems: list[str]
    missing_images: list[str] = field(default_factory=list)


def _read_state(store: _Store) -> _State:
    """Read and check a stored gallery; an unreadable manifest raises :class:`GalleryError`."""
    stored = store.manifest()
    if stored is None:
        return _State(None, None, EmbeddingIndex(0), [])
    manifest, tag = stored
    segments, problems = _scan(store, manifest)
    index, twice = _build_index(int(manifest["dim"]), segments)
    return _State(manifest, tag, index, problems + twice)


def _inspect(store: _Store) -> tuple[_State, dict[str, storage.FileEntry]]:
    """:func:`_read_state` plus the housekeeping listing and the live items' missing images."""
    state = _read_state(store)
    entries = store.entries()
    images = (rec.image for rec in state.index.records.values() if rec.image)
    state.missing_images = sorted(key for key in images if key not in entries)
    return state, entries


def _report(
    store: _Store, state: _State, entries: dict[str, storage.FileEntry], grace_s: float
) -> GalleryReport:
    problems = state.problems + [f"stored image {key} is missing" for key in state.missing_images]
    referenced, now = _referenced(state.manifest, state.index), time.time()
    unreferenced = sorted(rel for rel in entries if rel not in referenced)
    report = GalleryReport(store.uri, ok=not problems, items=len(state.index), problems=problems)
    report.orphans = [rel for rel in unreferenced if now - entries[rel].modified >= grace_s]
    report.recent = [rel for rel in unreferenced if now - entries[rel].modified < grace_s]
    if state.manifest is not None:
        report.version, report.fingerprint = int(state.manifest["version"]), state.manifest["fingerprint"]
        report.segments = len(state.manifest["segments"])
    return report


def check_gallery(uri: str, endpoint: str | None = None, grace_s: float = ORPHAN_GRACE_S) -> GalleryReport:
    """Check a stored gallery without changing it: manifest against segment files (existence, row
    counts, SHA-256 digests, ids live once), live items against stored images, and orphaned files."""
    store = _Store(str(uri), endpoint)
    try:
        state, entries = _inspect(store)
    except GalleryError as err:
        return GalleryReport(store.uri, ok=False, problems=[str(err)])
    return _report(store, state, entries, grace_s)


def repair_gallery(uri: str, endpoint: str | None = None, grace_s: float = ORPHAN_GRACE_S) -> GalleryReport:
    """Keep what can be trusted and collect orphans; returns the check of the result with ``repaired``.

    An inconsistent gallery is rewritten as ONE new segment of the live items of every trusted segment
    (damaged segments are dropped, an id live twice keeps its later row, items whose stored image is
    missing keep their embedding without an image), committed like any change, so a writer active at
    the same time makes the repair fail (:class:`ConcurrentWriteError`) instead of being overwritten.
    Then files no manifest references and older than ``grace_s`` seconds are deleted. A manifest that
    cannot be read is left alone: without it, live and deleted rows cannot be told apart.
    """
    store = _Store(str(uri), endpoint)
    try:
        state, _ = _inspect(store)
    except GalleryError as err:
        report = check_gallery(uri, endpoint, grace_s)
        report.repaired = [f"nothing changed: {err}"]
        return report
    actions = []
    if state.manifest is not None and (state.problems or state.missing_images):
        actions += _rewrite(store, state)
        state = _read_state(store)
    deleted = _collect(store, _referenced(state.manifest, state.index), grace_s)
    if deleted:
        actions.append(f"deleted {len(deleted)} orphaned files (unreferenced, older than {grace_s:g} s)")
    report = check_gallery(uri, endpoint, grace_s)
    report.repaired = actions or ["nothing to repair"]
    return report


def _rewrite(store: _Store, state: _State) -> list[str]:
    """Commit the trusted live items as one new segment and delete the old segments' files."""
    assert state.manifest is not None
    missing = set(state.missing_images)
    records, rows = [], []
    for rec, emb in state.index.items():
        records.append(
            Record(rec.id, rec.modality, dict(rec.metadata), None if rec.image in missing else rec.image)
        )
        rows.append(emb)
    embeddings = torch.stack(rows) if rows else torch.empty(0, int(state.manifest["dim"]))
    sid = _new_id()
    files, entry = _segment_files(sid, records, embeddings)
    manifest = {**state.manifest, "version": int(state.manifest["version"]) + 1, "segments": [entry]}
    store.write_all(files)
    try:
        store.commit(manifest, state.tag)
    except storage.WriteConflictError as err:
        store.delete_all(rel for rel, _ in files)
        raise ConcurrentWriteError(
            f"the gallery at {store.uri} was changed by a writer during the repair; nothing was changed. "
            "Run the repair again (best with the service's gallery index stopped)"
        ) from err
    store.delete_all(_seg(str(s["id"]), part) for s in state.manifest["segments"] for part in PARTS)
    return [
        *(f"dropped: {p}" for p in state.problems),
        *(f"kept item without its missing image {key}" for key in sorted(missing)),
        f"rewrote the {len(records)} trusted items as one segment (version {manifest['version']})",
    ]
