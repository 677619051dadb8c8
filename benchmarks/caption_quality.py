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

from tvifm.experiments.captions import score_captioners
from tvifm.experiments.docs import write_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "Caption quality"
SPLIT_NAMES = {"test": "test split", "val": "held-out validation identities"}


def _generate(root: Path, ids: int) -> None:
    from tvifm.data.synth import generate

    generate(root, ids=ids, seed=0, image_size=(96, 48), images_per_cam=(4, 4), progress=True)


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
    result = score_captioners(root, captioners, args.split, modalities)
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
