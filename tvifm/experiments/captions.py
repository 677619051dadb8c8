"""Captions as an experiment sees them: which images a split holds, captioning them with a saved
captioner or the captioning job, scoring captions against SynthTri's ground truth, and what a rephrasing
adds to the captions of the same person (``benchmarks/caption_quality.py``, ``benchmarks/ablation.py``,
``benchmarks/ablation_captioned.py``).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tvifm.config.schema import Config
from tvifm.data.base import DatasetSplits, Sample
from tvifm.errors import TvifmError

SYNTH_NOVELTY = "SynthTri, rule-based rephrasing (this table)"
REAL_NOVELTY = "Tri-RegDB, LLM rephrasing (published)"
# the published LLM rephrasings of Tri-RegDB, under the Tri-RegDB caption folder (Text/Blip_RGB)
TRI_REGDB_REPHRASINGS = "caption_llm_dict_Blip_RGB.json"


def split_images(splits: DatasetSplits, split: str) -> tuple[list[Sample], list[Sample]]:
    """The visible and IR images of ``split``: ``test`` identities or ``val`` (held-out training ids)."""
    if split == "val":
        return list(splits.val_visible), list(splits.val_ir)
    if split == "test":
        visible = [s for s in splits.test_gallery if s.modality == "visible"]
        return visible, [s for s in splits.test_query if s.modality == "ir"]
    raise TvifmError(f"unknown split {split!r}; choose 'val' or 'test'")


def caption_images(captioner_dir: str | Path, samples: Sequence[Sample], batch: int = 32) -> dict[str, str]:
    """``{relative path: caption}`` of every readable image of ``samples`` by the saved captioner."""
    from tvifm.captioning.model import load_captioner
    from tvifm.data.images import SkipReport, read_image_or_skip

    captioner = load_captioner(str(captioner_dir))
    out: dict[str, str] = {}
    report = SkipReport()
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        images = [(s.rel, read_image_or_skip(s.path, report)) for s in chunk]
        texts = captioner.caption([im for _, im in images if im is not None])
        out.update(zip([rel for rel, im in images if im is not None], texts, strict=True))
    return out


def majority_baseline(samples: Iterable[Sample], truth: dict[int, dict]) -> dict[str, float]:
    """Accuracy of always answering the most frequent value of each attribute (the chance level)."""
    from tvifm.captioning.quality import ATTRIBUTES

    samples = list(samples)
    out = {}
    for name in ATTRIBUTES:
        values = [truth[s.pid][name] for s in samples if truth[s.pid].get(name) is not None]
        out[name] = Counter(values).most_common(1)[0][1] / len(values) if values else 0.0
    return out


def score_captioners(
    root: Path, captioner_dir: Path, split: str = "test", modalities: tuple[str, ...] = ("visible", "ir")
) -> dict[str, Any]:
    """Score the captioners of ``modalities`` (``captioner_dir/rgb``, ``captioner_dir/ir``) and the
    SynthTri captions (their training targets) on ``split`` of the SynthTri at ``root``; a captioner not
    scored is ``None`` in the result.

    ``val`` holds training-side identities the captioners never saw: compare captioner settings there,
    and report the chosen one on ``test``."""
    from tvifm.captioning.quality import SHAPE_ATTRIBUTES, read_truth, score_captions
    from tvifm.data.registry import load_dataset
    from tvifm.data.sidecars import load_text_for

    splits = load_dataset("synth", root)
    truth = read_truth(root)
    visible, ir = split_images(splits, split)
    rgb_caps = caption_images(captioner_dir / "rgb", visible) if "visible" in modalities else {}
    ir_caps = caption_images(captioner_dir / "ir", ir) if "ir" in modalities else {}
    text = load_text_for(splits)
    gt = {s.rel: text.caption(s).description for s in visible if text.caption(s)}
    return {
        "majority": majority_baseline(visible, truth),
        "rgb": score_captions(rgb_caps, truth).to_dict() if rgb_caps else None,
        "ir": score_captions(ir_caps, truth, SHAPE_ATTRIBUTES).to_dict() if ir_caps else None,
        "ground_truth_rgb": score_captions(gt, truth).to_dict(),
        "examples": {"rgb": list(rgb_caps.items())[:3], "ir": list(ir_caps.items())[:3]},
        "split": split,
    }


def sidecar_caption_quality(root: Path) -> dict[str, dict[str, Any]]:
    """Attribute accuracy of the visible and IR captions (the sidecars) of the test images at ``root``
    (ground truth from ``attributes.json``)."""
    from tvifm.captioning.quality import SHAPE_ATTRIBUTES, read_truth, score_captions
    from tvifm.data.registry import load_dataset
    from tvifm.data.sidecars import load_text_for

    splits = load_dataset("synth", root)
    text = load_text_for(splits)
    truth = read_truth(root)

    def described(samples: Iterable[Sample]) -> dict[str, str]:
        caps = ((s.rel, text.caption(s)) for s in samples)
        return {rel: c.description for rel, c in caps if c is not None}

    visible, ir = (described(samples) for samples in split_images(splits, "test"))
    return {
        "rgb": score_captions(visible, truth).to_dict(),
        "ir": score_captions(ir, truth, SHAPE_ATTRIBUTES).to_dict(),
    }


def captioned_copy(source: str | Path, dest: Path) -> Path:
    """``source`` SynthTri copied to ``dest`` without its ``Text`` folder (the captions to be replaced)."""
    if not (dest / "attributes.json").is_file():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, ignore=lambda d, names: ["Text"] if Path(d) == Path(source) else [])
        tmp.rename(dest)
    return dest


def recaption(root: Path, captioners: Path, cfg: Config) -> dict[str, Any]:
    """Caption every image at ``root`` with the captioning job, the captioners ``captioners/rgb`` and
    ``captioners/ir`` and the rule-based augmenter (skipped when the job's report says it is done);
    returns the job's report."""
    from tvifm.captioning.config import caption_config
    from tvifm.captioning.job import run_caption_job
    from tvifm.config.loader import to_dict

    report = root / "Text" / "captions" / "report.json"
    if not report.is_file():
        ccfg = caption_config(
            to_dict(cfg.caption),
            [
                f"caption.rgb_checkpoint={captioners / 'rgb'}",
                f"caption.ir_checkpoint={captioners / 'ir'}",
                "caption.augmenter=rule",
            ],
        )
        run_caption_job(str(root), ccfg, dataset=cfg.data.dataset)
    return json.loads(report.read_text())


def _by_identity(captions: Iterable[tuple[Any, Any]]) -> dict[Any, list[tuple[str, str | None]]]:
    """``(identity, Caption)`` pairs grouped as :func:`~tvifm.text.augment.rephrasing_novelty` takes them."""
    grouped: dict[Any, list[tuple[str, str | None]]] = defaultdict(list)
    for identity, caption in captions:
        grouped[identity].append((caption.description, caption.aug_description))
    return grouped


def synth_novelty(root: str | Path, dataset: str = "synth") -> dict[str, float]:
    """:func:`~tvifm.text.augment.rephrasing_novelty` of the visible training captions at ``root``."""
    from tvifm.data.registry import load_dataset
    from tvifm.data.sidecars import load_text_for
    from tvifm.text.augment import rephrasing_novelty

    splits = load_dataset(dataset, root)
    text = load_text_for(splits)
    pairs = ((s.pid, text.caption(s)) for s in splits.train_visible)
    return rephrasing_novelty(_by_identity((pid, c) for pid, c in pairs if c is not None))


def rephrasing_figures(cfg: Config, tri_regdb: Path | None = None) -> dict[str, dict[str, float]]:
    """:func:`synth_novelty` of the SynthTri of ``cfg`` (rule-based rephrasings) and, when the Tri-RegDB
    caption folder ``tri_regdb`` holds its published LLM rephrasings, the same figures of those."""
    from tvifm.data.sidecars import read_caption_file
    from tvifm.text.augment import rephrasing_novelty

    out = {SYNTH_NOVELTY: synth_novelty(cfg.data.root, cfg.data.dataset)}
    path = tri_regdb / TRI_REGDB_REPHRASINGS if tri_regdb is not None else None
    if path is not None and path.is_file():
        real = read_caption_file(path).captions.items()
        out[REAL_NOVELTY] = rephrasing_novelty(_by_identity((key.split("/")[-2], c) for key, c in real))
    return out
