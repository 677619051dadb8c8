"""Caption quality on SynthTri: fine-tune both tiny captioners, caption the test split, score attributes.

The RGB captioner is scored on every attribute (per-colour-attribute accuracy is the point: colours are
what IR cannot see); the IR captioner on the colour-free attributes plus its colour-word rate (the share
of its raw captions naming any colour, which must be 0). SynthTri's own captions, the captioners'
training targets, are scored too: they carry captioner-like noise (items left out, similar colours
mistaken; the parser reads exact captions perfectly, tests/unit/test_captioner.py), so their column is
what a captioner that learned its targets perfectly would score. Results are printed, saved as JSON
next to the captioners and written to ``docs/captioning.md`` under ``## Caption quality`` (the rest of
the page is left intact).

Usage::

    python benchmarks/caption_quality.py [--root DIR] [--ids 960] [--work DIR] [--split {test,val}]
        [--modalities {visible,ir} ...] [key=value ...] [--no-docs]

``key=value`` overrides go to the config (``caption.steps=600`` ...). Generating SynthTri and training
take a few minutes on two CPU cores. ``--split val`` scores held-out training identities instead of
the test split, to compare captioner settings without looking at the test set (the JSON is then
``caption_quality-val.json`` and the docs are left alone); each setting wants its own ``--work``.
``--modalities visible`` trains and scores only the RGB captioner (half the time, for colour settings).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from docs_section import write_section  # noqa: E402

if TYPE_CHECKING:
    from tvifm.data.base import DatasetSplits, Sample

SECTION = "Caption quality"
SPLIT_NAMES = {"test": "test split", "val": "held-out validation identities"}


def _generate(root: Path, ids: int) -> None:
    from tvifm.data.synth import generate

    generate(root, ids=ids, seed=0, image_size=(96, 48), images_per_cam=(4, 4), progress=True)


def _caption_split(captioner_dir: str, samples: list, batch: int = 32) -> dict[str, str]:
    from tvifm.captioning.model import load_captioner
    from tvifm.data.images import SkipReport, read_image_or_skip

    captioner = load_captioner(captioner_dir)
    out: dict[str, str] = {}
    report = SkipReport()
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        images = [(s.rel, read_image_or_skip(s.path, report)) for s in chunk]
        texts = captioner.caption([im for _, im in images if im is not None])
        out.update(zip([rel for rel, im in images if im is not None], texts, strict=True))
    return out


def split_images(splits: DatasetSplits, split: str) -> tuple[list[Sample], list[Sample]]:
    """The visible and IR images of ``split``: ``test`` identities or ``val`` (held-out training ids)."""
    if split == "val":
        return list(splits.val_visible), list(splits.val_ir)
    if split == "test":
        visible = [s for s in splits.test_gallery if s.modality == "visible"]
        return visible, [s for s in splits.test_query if s.modality == "ir"]
    raise ValueError(f"unknown split {split!r}; choose 'val' or 'test'")


def evaluate(
    root: Path, captioner_dir: Path, split: str = "test", modalities: tuple[str, ...] = ("visible", "ir")
) -> dict[str, object]:
    """Score the captioners of ``modalities`` (and the ground truth) on ``split`` of the SynthTri at
    ``root``; a captioner not scored is ``None`` in the result.

    ``val`` holds training-side identities the captioners never saw: compare captioner settings there,
    and report the chosen one on ``test``."""
    from tvifm.captioning.quality import SHAPE_ATTRIBUTES, read_truth, score_captions
    from tvifm.data.registry import load_dataset
    from tvifm.data.sidecars import load_text_for

    splits = load_dataset("synth", root)
    truth = read_truth(root)
    visible, ir = split_images(splits, split)
    rgb_caps = _caption_split(str(captioner_dir / "rgb"), visible) if "visible" in modalities else {}
    ir_caps = _caption_split(str(captioner_dir / "ir"), ir) if "ir" in modalities else {}
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


def majority_baseline(samples: list, truth: dict[int, dict]) -> dict[str, float]:
    """Accuracy of always answering the most frequent value of each attribute (the chance level)."""
    from collections import Counter

    from tvifm.captioning.quality import ATTRIBUTES

    out = {}
    for name in ATTRIBUTES:
        values = [truth[s.pid][name] for s in samples if truth[s.pid].get(name) is not None]
        out[name] = Counter(values).most_common(1)[0][1] / len(values) if values else 0.0
    return out


def _cell(scores: dict | None, key: str, name: str | None = None, missing: str = "n/a") -> str:
    """One table cell: ``scores[key]`` (or ``scores[key][name]``), or why there is none."""
    if scores is None:
        return "not trained"
    value = scores[key] if name is None else scores[key].get(name)
    return missing if value is None else f"{value:.3f}"


def markdown(result: dict, train: list[dict], ids: int) -> str:
    """The results as a Markdown section body (a captioner left out by ``--modalities`` shows as such)."""
    from tvifm.captioning.quality import COLOUR_ATTRIBUTES, SHAPE_ATTRIBUTES

    rgb, ir, gt = result["rgb"], result["ir"], result["ground_truth_rgb"]
    counts = [
        f"{scores['captions']} {what} images" for scores, what in ((rgb, "visible"), (ir, "IR")) if scores
    ]
    lines = [
        f"`python benchmarks/caption_quality.py` - SynthTri {ids} identities (96x48), tiny BLIP captioners "
        f"trained from scratch on the training split, scored on the {SPLIT_NAMES[result['split']]} "
        f"({', '.join(counts)}); {platform.machine()}, 2 CPU cores.",
        "",
        "| captioner | input | pairs | steps | train time | final loss |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {t['modality']} | {t['image_size']}x{t['image_size']} | {t['pairs']} | {t['steps']} | "
        f"{t['seconds']:.0f} s | {t['final_loss']:.3f} |"
        for t in train
    ]
    base = result["majority"]
    lines += [
        "",
        "| attribute | RGB captioner | IR captioner | majority guess | SynthTri captions (targets) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in (*COLOUR_ATTRIBUTES, *SHAPE_ATTRIBUTES):
        lines.append(
            f"| {name} | {_cell(rgb, 'accuracy', name, '0.000')} | "
            f"{_cell(ir, 'accuracy', name, 'n/a (no colours)')} | {base[name]:.3f} | "
            f"{gt['accuracy'].get(name, 0):.3f} |"
        )
    colour_base = sum(base[n] for n in COLOUR_ATTRIBUTES) / len(COLOUR_ATTRIBUTES)
    shape_base = sum(base[n] for n in SHAPE_ATTRIBUTES) / len(SHAPE_ATTRIBUTES)
    lines += [
        f"| **mean colour accuracy** | **{_cell(rgb, 'colour_accuracy')}** | n/a | {colour_base:.3f} | "
        f"{gt['colour_accuracy']:.3f} |",
        f"| **mean shape accuracy** | **{_cell(rgb, 'shape_accuracy')}** | "
        f"**{_cell(ir, 'shape_accuracy')}** | {shape_base:.3f} | {gt['shape_accuracy']:.3f} |",
        f"| **colour-word rate** | {_cell(rgb, 'colour_word_rate')} | "
        f"**{_cell(ir, 'colour_word_rate')}** | - | {gt['colour_word_rate']:.3f} |",
        "",
        f"Example captions ({result['split']} images):",
        "",
    ]
    for modality in ("rgb", "ir"):
        for rel, caption in result["examples"][modality][:2]:
            lines.append(f"- {modality.upper()} `{rel}`: {caption}")
    return "\n".join(lines)


def with_input_size(train: dict) -> dict:
    """A fine-tuning summary plus the square side its captioner sees (read from the saved captioner)."""
    meta = json.loads((Path(train["directory"]) / "captioner.json").read_text())
    return {**train, "image_size": meta["image_size"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="SynthTri root (generated when missing)")
    parser.add_argument(
        "--ids", type=int, default=960,
        help="identities of the generated SynthTri (the captioners generalise with the number of families)",
    )  # fmt: skip
    parser.add_argument("--work", default=str(REPO / "runs" / "caption_quality"))
    parser.add_argument(
        "--split", choices=("val", "test"), default="test",
        help="score on the test split (the report) or on held-out training ids (to compare settings)",
    )  # fmt: skip
    parser.add_argument(
        "--modalities", nargs="+", choices=("visible", "ir"), default=["visible", "ir"],
        help="captioners to train and score (the docs table needs both)",
    )  # fmt: skip
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    modalities = tuple(dict.fromkeys(args.modalities))
    writes_docs = not args.no_docs and args.split == "test"
    if writes_docs and len(modalities) < 2:
        parser.error("the docs table scores both captioners: add --no-docs or --split val to train only one")
    from tvifm.captioning.entry import finetune_captioners

    work = Path(args.work)
    root = Path(args.root) if args.root else work / f"synthtri-{args.ids}"
    _generate(root, args.ids)
    captioners = work / "captioners"
    started = time.perf_counter()
    overrides = [*args.overrides, f"caption.captioner_dir={captioners}"]
    train = [with_input_size(t) for t in finetune_captioners(str(root), "tiny", overrides, modalities)]
    result = evaluate(root, captioners, args.split, modalities)
    result["train"] = train
    result["seconds"] = time.perf_counter() - started
    name = "caption_quality.json" if args.split == "test" else f"caption_quality-{args.split}.json"
    (work / name).write_text(json.dumps(result, indent=2))
    body = markdown(result, train, args.ids)
    print(body)
    if writes_docs:
        write_section(REPO / "docs" / "captioning.md", SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
