"""The batch captioning job on Ray Data: caption every image of a dataset, augment, write Parquet + sidecars.

Flow for a dataset ``root`` (local folder or ``s3://bucket/prefix``), output folder ``out`` (default
``<root>/Text/captions``)::

    list images -> out/manifest.parquet (rel, modality, uri)
    per modality: the manifest's rows without a part yet -> out/pending-<modality>.parquet
        -> ray.data.read_parquet(pending) -> blocks of caption.part_size rows
        -> map_batches(CaptionWriteStage, actor pool of caption.actors; GPUs when the cluster has them):
           caption (forward passes of caption.infer_batch_size images), augment with the rule-based
           augmenter, write out/parts/<modality>/part-<hash>.parquet
        with augmenter=llm: map_batches(CaptionStage, pool) -> map_batches(AugmentStage, its own actor)
    all parts -> out/captions.parquet, Text/Blip_RGB|Blip_IR/caption_llm_dict_*.json, out/report.json

A model-free augmenter (``rule``, ``none``) runs inside the caption actors, so a part never travels
through the object store to another process; the LLM augmenter loads a model of its own and keeps its
own actor. Resumable: every part (one actor call) lands in its own Parquet file, written atomically
(temporary file + rename, or one S3 PUT) under a name derived from the images it holds; a re-run
computes the done-set from the existing parts and captions only the rest, and the final tables keep one
row per image. A corrupt or unreadable image becomes a ``skipped`` row with its reason (listed in the
report, retried by the next run) and never stops the job. Ray is imported when the job runs; without a
running Ray the job starts a local one (``num_cpus=caption.num_cpus``) and shuts it down at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from tvifm.cluster import ray_session
from tvifm.data import storage
from tvifm.data.images import EMPTY_FILE, IMAGE_SUFFIXES, SkipReport
from tvifm.data.registry import get_spec
from tvifm.data.sidecars import MODALITY_DIRS, TEXT_DIR, Caption, caption_dict_path, write_caption_dict
from tvifm.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    import pyarrow as pa
    from PIL import Image

    from tvifm.captioning.config import CaptionConfig

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
PENDING = "pending-{modality}.parquet"
PARTS = "parts"
CAPTIONS = "captions.parquet"
REPORT = "report.json"
COLUMNS = ("rel", "modality", "description", "aug_description", "status", "reason")
OK, SKIPPED = "ok", "skipped"
NO_TEXT = "the captioner generated no words for this image; the row is retried on the next run"
ONLY_COLOURS = (
    "the IR caption named only colours, which the colour filter removed; the row is retried on the next run"
)


# ----------------------------------------------------------------------------------------------------
# Manifest: which images exist and which modality each belongs to (the dataset spec says).


def build_manifest(root: str, dataset: str, endpoint: str | None = None) -> list[dict[str, str]]:
    """Rows ``{rel, modality, uri}`` for every image below ``root`` (outside ``Text/``), sorted by rel.

    Each image's modality is the one the dataset's :class:`~tvifm.data.registry.DatasetSpec` gives its
    path; files the layout does not place in a modality are left out. An unknown ``dataset`` raises
    :class:`ConfigError` listing the valid names before anything is listed.
    """
    spec = get_spec(dataset)
    rows = []
    for uri in storage.list_files(root, suffix=tuple(IMAGE_SUFFIXES), endpoint=endpoint):
        rel = storage.relative(uri, root)
        if rel.startswith(TEXT_DIR + "/"):
            continue
        modality = spec.modality_of(rel)
        if modality is not None:
            rows.append({"rel": rel, "modality": modality, "uri": uri})
    if not rows:
        raise DatasetError(
            f"no {dataset} images found below the dataset root; expected {spec.layout}", path=root
        )
    return sorted(rows, key=lambda r: r["rel"])


def table_bytes(table: pa.Table) -> bytes:
    """``table`` serialised as one Parquet file."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def read_table(uri: str, endpoint: str | None = None) -> pa.Table:
    """One Parquet file through the pyarrow filesystem of ``uri`` (local or S3)."""
    import pyarrow.parquet as pq

    fs, path = storage.arrow_filesystem(uri, endpoint)
    return pq.read_table(path, filesystem=fs)


# ----------------------------------------------------------------------------------------------------
# Stages run by Ray Data (plain classes and functions, picklable, Ray-free).


def load_image(uri: str, endpoint: str | None = None) -> tuple[Image.Image | None, str]:
    """Decode the image at ``uri`` in RGB; ``(None, reason)`` when it is missing, empty or corrupt."""
    from PIL import Image

    try:
        data = storage.read_bytes(uri, endpoint)
    except storage.StorageError as err:
        return None, str(err)
    if not data:
        return None, EMPTY_FILE
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB"), ""
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        return None, f"{type(err).__name__}: {err}"


class CaptionStage:
    """Map-batches actor: load one captioner, caption a batch of manifest rows (skipping bad images)."""

    def __init__(
        self,
        checkpoint: str,
        modality: str,
        threads: int,
        filter_colours: bool,
        endpoint: str | None,
        batch_size: int = 16,
    ) -> None:
        import torch

        from tvifm.captioning.model import load_captioner

        torch.set_num_threads(threads)
        self.captioner = load_captioner(checkpoint, endpoint=endpoint)
        self.modality = modality
        self.filter_colours = filter_colours and modality == "ir"
        self.endpoint = endpoint
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """Caption the images of ``batch`` (columns rel, modality, uri); one output row per input row.

        The images go through the captioner ``batch_size`` at a time, so a call (and the part it
        becomes) can hold many more images than one forward pass.
        """
        rels, uris = [str(r) for r in batch["rel"]], [str(u) for u in batch["uri"]]
        by_index: dict[int, str] = {}
        reasons: list[str] = []  # why each image could not be read ("" if it was); images are not kept
        for start in range(0, len(uris), self.batch_size):
            chunk = [load_image(uri, self.endpoint) for uri in uris[start : start + self.batch_size]]
            good = [i for i, (img, _) in enumerate(chunk) if img is not None]
            texts = self.captioner.caption([chunk[i][0] for i in good]) if good else []
            by_index.update((start + i, text) for i, text in zip(good, texts, strict=True))
            reasons.extend(reason for _, reason in chunk)
        out: dict[str, list[str]] = {name: [] for name in COLUMNS}
        for i, rel in enumerate(rels):
            text, reason = self._checked(by_index[i]) if i in by_index else ("", reasons[i])
            _append(out, rel, self.modality, text, "", SKIPPED if reason else OK, reason)
        return out

    def _checked(self, text: str) -> tuple[str, str]:
        """``(caption, "")`` to keep, or ``("", why)`` when the captioner said nothing usable.

        A caption without a word (an empty generation, or an IR caption of colours only) is never
        written as a result: the row is skipped, reported, and retried by the next run."""
        from tvifm.text.colour import strip_colours

        if not has_words(text):
            return "", NO_TEXT
        if self.filter_colours:
            text = strip_colours(text)
            if not has_words(text):
                return "", ONLY_COLOURS
        return text, ""


def has_words(text: str) -> bool:
    """Whether ``text`` holds at least one letter or digit (not empty, not punctuation alone)."""
    return any(ch.isalnum() for ch in text)


def _append(out: dict[str, list[str]], *values: str) -> None:
    for name, value in zip(COLUMNS, values, strict=True):
        out[name].append(value)


class AugmentStage:
    """Map-batches actor: fill ``aug_description`` of the captioned rows, then write the batch as a part.

    Writing here (one long-lived actor) instead of in separate tasks avoids starting extra worker
    processes for a few milliseconds of work per batch.
    """

    def __init__(self, kind: str, options: dict[str, Any], parts_dir: str, endpoint: str | None) -> None:
        from tvifm.text.augment import build_augmenter

        self.augmenter = build_augmenter(kind, **options)  # type: ignore[arg-type]
        self.parts_dir = parts_dir
        self.endpoint = endpoint

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Augment every ``ok`` row, write the part; returns its one-row summary (see :func:`write_part`)."""
        return write_part(self.augment(batch), self.parts_dir, self.endpoint)

    def augment(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """The batch with ``aug_description`` set for every ``ok`` row."""
        out = {name: [str(v) for v in batch[name]] for name in COLUMNS}
        ok = [i for i, status in enumerate(out["status"]) if status == OK]
        modality = out["modality"][0] if out["modality"] else "visible"
        augmented = self.augmenter.augment([out["description"][i] for i in ok], modality) if ok else []
        for i, text in zip(ok, augmented, strict=True):
            out["aug_description"][i] = text
        return out


class CaptionWriteStage:
    """Map-batches actor for a model-free augmenter: caption, augment and write a part in one process.

    Saves the hop of every part through the object store to a separate augmentation actor, and that
    actor's CPU time on a small machine.
    """

    def __init__(self, caption: dict[str, Any], augment: dict[str, Any]) -> None:
        self.caption = CaptionStage(**caption)
        self.write = AugmentStage(**augment)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Caption the rows of ``batch``, augment the ``ok`` ones, write the part; returns its summary."""
        return self.write(self.caption(batch))


def part_name(rels: Iterable[str]) -> str:
    """A part file name derived from the images it holds (a retried batch overwrites, never duplicates)."""
    digest = hashlib.sha1("\n".join(sorted(rels)).encode()).hexdigest()[:20]
    return f"part-{digest}.parquet"


def write_part(batch: dict[str, Any], parts_dir: str, endpoint: str | None) -> dict[str, list[Any]]:
    """Write one batch as an atomic Parquet part; returns a one-row summary (part, rows, ok, written).

    ``written`` is the wall-clock time the part landed, so the driver can time the parts themselves
    rather than their (buffered) arrival.
    """
    import pyarrow as pa

    table = pa.table({name: [str(v) for v in batch[name]] for name in COLUMNS})
    rels = table.column("rel").to_pylist()
    uri = storage.join(parts_dir, part_name(rels))
    storage.write_bytes(uri, table_bytes(table), endpoint)
    ok = sum(1 for status in table.column("status").to_pylist() if status == OK)
    return {"part": [uri], "rows": [len(rels)], "ok": [ok], "written": [time.time()]}


# ----------------------------------------------------------------------------------------------------
# Driver.


@dataclass
class ModalityCounts:
    """Images of one modality: in the manifest, already done before this run, captioned now, skipped.

    Timing of this run's work on the modality: ``seconds`` from starting the Ray Data pipeline to its
    last part, ``first_part_seconds`` until the first part was written (start-up: worker processes,
    reading the manifest, loading the captioners), and ``steady_images_per_second``, the rate once
    every actor has written its first part, timed by when each part was written (what a long job runs
    at; 0 with fewer than two parts).
    """

    total: int = 0
    done_before: int = 0
    captioned_now: int = 0
    skipped: int = 0
    seconds: float = 0.0
    first_part_seconds: float = 0.0
    steady_images_per_second: float = 0.0


@dataclass
class CaptionJobResult:
    """What a captioning run did and where it wrote."""

    output: str
    counts: dict[str, ModalityCounts] = field(default_factory=dict)
    skipped: SkipReport = field(default_factory=SkipReport)
    sidecars: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``report.json`` holds)."""
        return {
            "output": self.output,
            "counts": {m: vars(c) for m, c in self.counts.items()},
            "skipped": self.skipped.to_dict(),
            "sidecars": self.sidecars,
            "seconds": round(self.seconds, 3),
        }


def checkpoint_for(ccfg: CaptionConfig, modality: str) -> str:
    """The captioner directory the job uses for ``modality``."""
    explicit = ccfg.rgb_checkpoint if modality == "visible" else ccfg.ir_checkpoint
    return explicit or storage.join(ccfg.captioner_dir, "rgb" if modality == "visible" else "ir")


def output_dir(root: str, ccfg: CaptionConfig) -> str:
    """Where Parquet parts, the final table and the report go."""
    return ccfg.output or storage.join(root, TEXT_DIR, "captions")


def run_caption_job(
    root: str, ccfg: CaptionConfig, dataset: str = "synth", progress: bool = True
) -> CaptionJobResult:
    """Caption every image of the dataset at ``root`` (see the module doc); returns what was done."""
    started = time.perf_counter()
    endpoint = ccfg.s3_endpoint
    root = str(root) if storage.is_s3(root) else str(Path(root).resolve())
    _check_checkpoints(ccfg)
    out = output_dir(root, ccfg)
    rows = build_manifest(root, dataset, endpoint)
    storage.write_bytes(storage.join(out, MANIFEST), table_bytes(_rows_table(rows)), endpoint)
    result = CaptionJobResult(output=out)
    with ray_session(ccfg.num_cpus):
        for modality in ccfg.modalities:
            result.counts[modality] = _run_modality(rows, out, modality, ccfg, progress)
    _finalise(root, out, ccfg, result)
    result.seconds = time.perf_counter() - started
    storage.write_bytes(storage.join(out, REPORT), json.dumps(result.to_dict(), indent=2).encode(), endpoint)
    log.info("captioning done in %.1fs; %s", result.seconds, result.skipped.summary())
    return result


def _check_checkpoints(ccfg: CaptionConfig) -> None:
    for modality in ccfg.modalities:
        path = checkpoint_for(ccfg, modality)
        if not storage.exists(storage.join(path, "config.json"), ccfg.s3_endpoint):
            raise ConfigError(
                f"no {modality} captioner at {path}: fine-tune one first (python jobs/caption.py finetune "
                "--root DATASET) or set caption.rgb_checkpoint / caption.ir_checkpoint"
            )


def _rows_table(rows: list[dict[str, str]]) -> pa.Table:
    import pyarrow as pa

    return pa.table({key: [r[key] for r in rows] for key in ("rel", "modality", "uri")})


def done_set(out: str, modality: str, endpoint: str | None = None) -> set[str]:
    """Images of ``modality`` that already have a caption (an ``ok`` row with words) in a Parquet part
    under ``out``."""
    done: set[str] = set()
    for table in _part_tables(out, modality, endpoint):
        for row in table.select(["rel", "status", "description"]).to_pylist():
            if _captioned(row):
                done.add(row["rel"])
    return done


def _captioned(row: dict[str, Any]) -> bool:
    """An ``ok`` part row with a caption (parts of earlier versions may hold ``ok`` rows without one)."""
    return row["status"] == OK and has_words(row["description"])


def _part_tables(out: str, modality: str, endpoint: str | None) -> list[pa.Table]:
    parts_dir = storage.join(out, PARTS, modality)
    return [read_table(uri, endpoint) for uri in storage.list_files(parts_dir, ".parquet", endpoint)]


def _run_modality(
    rows: list[dict[str, str]], out: str, modality: str, ccfg: CaptionConfig, progress: bool
) -> ModalityCounts:
    done = done_set(out, modality, ccfg.s3_endpoint)
    mine = [r for r in rows if r["modality"] == modality]
    todo = [r for r in mine if r["rel"] not in done]
    counts = ModalityCounts(total=len(mine), done_before=len(mine) - len(todo))
    if not todo:
        return counts
    started = time.time()
    pending_uri = storage.join(out, PENDING.format(modality=modality))
    storage.write_bytes(pending_uri, table_bytes(_rows_table(todo)), ccfg.s3_endpoint)
    written: list[tuple[float, int]] = []  # (when, rows) of every part
    try:
        dataset = _pipeline(pending_uri, out, modality, ccfg)
        with tqdm(total=len(todo), desc=f"caption {modality}", unit="img", disable=not progress) as bar:
            for summary in dataset.iter_rows():
                counts.captioned_now += int(summary["ok"])
                counts.skipped += int(summary["rows"]) - int(summary["ok"])
                bar.update(int(summary["rows"]))
                written.append((float(summary["written"]), int(summary["rows"])))
    finally:  # the parts written so far are the job's progress; the pending list is rebuilt on re-run
        storage.delete(pending_uri, ccfg.s3_endpoint)
    _set_timing(counts, started, time.time(), sorted(written), ccfg.actors)
    return counts


def _set_timing(
    counts: ModalityCounts, started: float, ended: float, written: list[tuple[float, int]], actors: int
) -> None:
    """Fill the timing fields from the run's wall-clock span and its parts' ``(written, rows)``, in order.

    The steady rate starts once every actor has written its first part (until then some are starting).
    """
    counts.seconds = round(ended - started, 3)
    if not written:
        return
    counts.first_part_seconds = round(max(0.0, written[0][0] - started), 3)
    warm = min(actors, len(written) - 1) - 1  # index of the part after which every actor is running
    if warm < 0:
        return
    span = written[-1][0] - written[warm][0]
    if span > 0:
        counts.steady_images_per_second = round(sum(rows for _, rows in written[warm + 1 :]) / span, 2)


def _pipeline(pending_uri: str, out: str, modality: str, ccfg: CaptionConfig) -> Any:
    """The Ray Data pipeline of one modality; yields one summary row per written part.

    It reads the pending rows (the driver filters the manifest against the done-set and writes them, so
    no task carries the done-set, however large a resumed job's is) and splits them into one block per
    part first (``materialize``), so the actor pool spreads parts over all actors and never holds the
    CPUs the read needs (Ray Data's Parquet reader lists files in a task of one CPU that cannot be made
    to ask for less: streamed, the read waits forever behind actors that hold every CPU).
    """
    import ray

    fs, path = storage.arrow_filesystem(pending_uri, ccfg.s3_endpoint)
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    ds = ray.data.read_parquet(path, filesystem=fs)
    ds = ds.repartition(target_num_rows_per_block=ccfg.part_size, strict=True).materialize()
    caption = {
        "checkpoint": checkpoint_for(ccfg, modality),
        "modality": modality,
        "threads": ccfg.threads_per_actor,
        "filter_colours": ccfg.filter_ir_colours,
        "endpoint": ccfg.s3_endpoint,
        "batch_size": ccfg.infer_batch_size,
    }
    augment = {
        "kind": ccfg.augmenter,
        "options": augmenter_options(ccfg),
        "parts_dir": storage.join(out, PARTS, modality),
        "endpoint": ccfg.s3_endpoint,
    }
    pool = {
        "batch_size": ccfg.part_size,
        "compute": ray.data.ActorPoolStrategy(size=ccfg.actors),
        "num_cpus": ccfg.cpus_per_actor,
        "num_gpus": ccfg.gpus_per_actor if has_gpu else 0,
    }
    if ccfg.augmenter != "llm":
        return ds.map_batches(
            CaptionWriteStage, fn_constructor_kwargs={"caption": caption, "augment": augment}, **pool
        )
    ds = ds.map_batches(CaptionStage, fn_constructor_kwargs=caption, **pool)
    return ds.map_batches(
        AugmentStage,
        fn_constructor_kwargs=augment,
        batch_size=ccfg.part_size,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0,
        num_gpus=ccfg.gpus_per_actor if has_gpu else 0,
    )


def augmenter_options(ccfg: CaptionConfig) -> dict[str, Any]:
    """Constructor options of the configured augmenter."""
    if ccfg.augmenter == "llm":
        return {
            "checkpoint": ccfg.llm_checkpoint,
            "temperature": ccfg.llm_temperature,
            "max_new_tokens": ccfg.llm_max_new_tokens,
            "batch_size": ccfg.llm_batch_size,
            "seed": ccfg.aug_seed,
        }
    return {"seed": ccfg.aug_seed}


# ----------------------------------------------------------------------------------------------------
# Final tables: one row per image, sidecars, report.


def collect(out: str, modality: str, endpoint: str | None = None) -> tuple[dict[str, Caption], SkipReport]:
    """The captions of every image of ``modality`` in the parts (one per image) and the still-skipped ones."""
    captions: dict[str, Caption] = {}
    reasons: dict[str, str] = {}
    for table in _part_tables(out, modality, endpoint):
        for row in table.to_pylist():
            if _captioned(row):
                captions[row["rel"]] = Caption(row["description"], row["aug_description"] or None)
            else:
                reasons[row["rel"]] = row["reason"] or NO_TEXT
    report = SkipReport()
    for rel in sorted(set(reasons) - set(captions)):
        report.add(rel, reasons[rel])
    return dict(sorted(captions.items())), report


def _finalise(root: str, out: str, ccfg: CaptionConfig, result: CaptionJobResult) -> None:
    import pyarrow as pa

    columns: dict[str, list[str]] = {"rel": [], "modality": [], "description": [], "aug_description": []}
    for modality in ccfg.modalities:
        captions, skipped = collect(out, modality, ccfg.s3_endpoint)
        result.skipped.items.extend(skipped.items)
        result.sidecars[modality] = _write_sidecar(root, modality, captions, ccfg.s3_endpoint)
        for rel, cap in captions.items():
            for key, value in zip(
                columns, (rel, modality, cap.description, cap.aug_description or ""), strict=True
            ):
                columns[key].append(value)
    storage.write_bytes(storage.join(out, CAPTIONS), table_bytes(pa.table(columns)), ccfg.s3_endpoint)


def _write_sidecar(root: str, modality: str, captions: dict[str, Caption], endpoint: str | None) -> str:
    if not storage.is_s3(root):
        path = caption_dict_path(root, modality)  # type: ignore[arg-type]
        write_caption_dict(path, captions)
        return str(path)
    folder = MODALITY_DIRS[modality]  # type: ignore[index]
    uri = storage.join(root, TEXT_DIR, folder, f"caption_llm_dict_{folder}.json")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "captions.json"
        write_caption_dict(local, captions)
        storage.write_bytes(uri, local.read_bytes(), endpoint)
    return uri
