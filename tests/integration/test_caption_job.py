"""The Ray Data captioning job on a small SynthTri: completeness, sidecars, corrupt images, resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray

from tvifm.captioning.job import PARTS, build_manifest, done_set, run_caption_job
from tvifm.config import load_config
from tvifm.data.registry import load_dataset
from tvifm.data.sidecars import all_samples, caption_dict_path, load_text_for, read_caption_file
from tvifm.text.colour import has_colour

REPO = Path(__file__).resolve().parents[2]


def _rels(root: Path, modality: str) -> set[str]:
    return {r["rel"] for r in build_manifest(str(root), "synth") if r["modality"] == modality}


@pytest.mark.slow
def test_job_captions_every_image_and_reports_corrupt_ones(
    ray_local: None, synth_copy: Path, caption_job_overrides: Callable[..., list[str]]
) -> None:
    broken, empty = "cam1/0002/0001.jpg", "cam4/0003/0002.jpg"
    (synth_copy / broken).write_bytes(b"this is not a jpeg")
    (synth_copy / empty).write_bytes(b"")
    ccfg = load_config("tiny", caption_job_overrides()).caption

    result = run_caption_job(str(synth_copy), ccfg, progress=False)

    visible, ir = _rels(synth_copy, "visible"), _rels(synth_copy, "ir")
    assert sorted(path for path, _ in result.skipped.items) == sorted([broken, empty])
    reasons = dict(result.skipped.items)
    assert "empty" in reasons[empty] and reasons[broken]
    rgb = read_caption_file(caption_dict_path(synth_copy, "visible")).captions
    thermal = read_caption_file(caption_dict_path(synth_copy, "ir")).captions
    assert set(rgb) == visible - {broken, empty} and set(thermal) == ir
    for cap in [*rgb.values(), *thermal.values()]:
        assert cap.description and cap.aug_description
    assert not any(has_colour(c.description) or has_colour(c.aug_description or "") for c in thermal.values())

    table = pq.read_table(Path(result.output) / "captions.parquet")
    assert table.num_rows == len(visible) + len(ir) - 2
    assert (
        len(set(zip(table.column("modality").to_pylist(), table.column("rel").to_pylist(), strict=True)))
        == table.num_rows
    )
    assert not list(Path(result.output).glob("pending-*.parquet"))  # the work lists are cleaned up
    report = json.loads((Path(result.output) / "report.json").read_text())
    assert report["skipped"]["count"] == 2 and report["counts"]["ir"]["captioned_now"] == len(ir)
    for counts in report["counts"].values():  # start-up and steady rate, for capacity planning
        assert 0 < counts["first_part_seconds"] <= counts["seconds"] <= report["seconds"]
        assert counts["steady_images_per_second"] > 0

    # the loaders read what the job wrote: every readable image has a caption and a rephrasing
    splits = load_dataset("synth", synth_copy)
    text = load_text_for(splits)
    for sample in all_samples(splits):
        if sample.rel != broken:
            caption = text.caption(sample)
            assert caption is not None and caption.aug_description, sample.rel

    # a second run only retries what is missing (the two bad images), nothing is duplicated
    again = run_caption_job(str(synth_copy), ccfg, progress=False)
    assert again.counts["visible"].done_before == len(visible) - 2
    assert again.counts["visible"].captioned_now == 0 and again.counts["visible"].skipped == 2
    assert again.counts["ir"].captioned_now == 0
    assert pq.read_table(Path(again.output) / "captions.parquet").num_rows == table.num_rows


@pytest.mark.slow
def test_llm_augmenter_runs_as_its_own_stage(
    ray_local: None, synth_copy: Path, caption_job_overrides: Callable[..., list[str]], tiny_lm: Path
) -> None:
    overrides = caption_job_overrides(
        "caption.modalities=[ir]",
        "caption.augmenter=llm",
        f"caption.llm_checkpoint={tiny_lm}",
        "caption.llm_max_new_tokens=8",
    )
    ccfg = load_config("tiny", overrides).caption

    result = run_caption_job(str(synth_copy), ccfg, progress=False)

    ir = _rels(synth_copy, "ir")
    assert result.counts["ir"].captioned_now == len(ir) and not result.skipped.items
    thermal = read_caption_file(caption_dict_path(synth_copy, "ir")).captions
    assert set(thermal) == ir
    for cap in thermal.values():  # the LLM's rephrasing (or its fallback), colour-free like the caption
        assert cap.aug_description and not has_colour(cap.aug_description)
    parts = list((Path(result.output) / PARTS / "ir").glob("*.parquet"))
    assert len(parts) == -(-len(ir) // ccfg.part_size)  # one part per part_size images


def test_missing_captioner_is_reported_before_any_work(
    ray_local: None, synth_copy: Path, tmp_path: Path
) -> None:
    from tvifm.errors import ConfigError

    ccfg = load_config("tiny", [f"caption.captioner_dir={tmp_path / 'none'}"]).caption
    with pytest.raises(ConfigError, match="fine-tune one first"):
        run_caption_job(str(synth_copy), ccfg, progress=False)


def _part_rows(parts: Path) -> int:
    return sum(pq.read_table(p).num_rows for p in parts.glob("*.parquet"))


@pytest.mark.slow
def test_killed_job_resumes_without_losing_or_duplicating_rows(
    ray_local: None,
    synth_copy: Path,
    caption_job_overrides: Callable[..., list[str]],
    kill_session: Callable[[int], list[int]],
) -> None:
    overrides = caption_job_overrides("caption.actors=1", "caption.part_size=4")
    command = [sys.executable, str(REPO / "jobs" / "caption.py"), "--root", str(synth_copy), *overrides]
    parts = synth_copy / "Text" / "captions" / PARTS / "visible"
    # the job joins the session's running Ray, as `ray job submit` does on a cluster: killing its driver
    # must take its actors down too, and no second Ray has to start on a busy machine
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    job = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and job.poll() is None and len(list(parts.glob("*.parquet"))) < 2:
            time.sleep(0.2)
        assert job.poll() is None, (
            f"the job ended before it could be killed: {job.stderr.read().decode()[-2000:]}"
        )
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        kill_session(job.pid)  # whatever the killed job had started itself
        if job.stderr:
            job.stderr.close()

    visible = _rels(synth_copy, "visible")
    done_before = done_set(str(synth_copy / "Text" / "captions"), "visible")
    assert 0 < len(done_before) < len(visible)
    assert not list(parts.glob(".*")) or all(p.name.endswith(".tmp") for p in parts.glob(".*"))

    ccfg = load_config("tiny", caption_job_overrides()).caption
    result = run_caption_job(str(synth_copy), ccfg, progress=False)

    counts = result.counts["visible"]
    assert counts.done_before == len(done_before)
    assert counts.captioned_now == len(visible) - len(done_before)
    table = pq.read_table(Path(result.output) / "captions.parquet")
    columns = zip(table.column("rel").to_pylist(), table.column("modality").to_pylist(), strict=True)
    rels = [rel for rel, modality in columns if modality == "visible"]
    assert sorted(rels) == sorted(visible)
    assert _part_rows(parts) == len(visible)  # every image captioned exactly once over both runs
    assert set(read_caption_file(caption_dict_path(synth_copy, "visible")).captions) == visible


@pytest.mark.slow
def test_cli_fine_tunes_then_captions(
    ray_local: None, synth_copy: Path, tmp_path: Path, tiny_captioner_overrides: list[str]
) -> None:
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        import caption as caption_job  # jobs/caption.py
    finally:
        sys.path.pop(0)
    out = tmp_path / "captioners"
    rc = caption_job.main(
        [
            "finetune",
            "--root",
            str(synth_copy),
            "--modality",
            "visible",
            *tiny_captioner_overrides,
            f"caption.captioner_dir={out}",
            f"out_dir={tmp_path / 'runs'}",
        ]
    )
    assert rc == 0 and (out / "rgb" / "model.safetensors").is_file() and not (out / "ir").exists()
    rc = caption_job.main(
        [
            "--root",
            str(synth_copy),
            f"caption.captioner_dir={out}",
            "caption.modalities=[visible]",
            "caption.actors=1",
            f"out_dir={tmp_path / 'runs'}",
        ]
    )
    assert rc == 0
    assert set(read_caption_file(caption_dict_path(synth_copy, "visible")).captions) == _rels(
        synth_copy, "visible"
    )
    assert caption_job.main(["--root", str(tmp_path / "nowhere"), f"out_dir={tmp_path / 'runs'}"]) == 2
