"""``docs/ablation.md``: the ablation's table, its steps and why each step did or did not help, written
from the summaries over seeds (:mod:`tvifm.experiments.ablation`), the validation diagnosis
(:mod:`tvifm.experiments.diagnostics`) and the rephrasing figures (:mod:`tvifm.experiments.captions`).

Results of one-off runs that the ablation does not re-run are kept as Markdown records in
``tvifm/experiments/records`` (:func:`recorded`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tvifm.config.schema import Config
from tvifm.experiments.ablation import (
    CANDIDATES,
    LATE,
    REFERENCES,
    ROWS,
    SCHEDULE_CHOICE,
    STREAM_CHOICE,
    VARIANTS,
    schedule_overrides,
)
from tvifm.experiments.captions import REAL_NOVELTY, SYNTH_NOVELTY
from tvifm.experiments.diagnostics import MER_TERM_SUMS
from tvifm.experiments.render import (
    Diagnosis,
    choice_lines,
    novelty_table,
    rank1,
    reference_lines,
    spread_diff,
    step_lines,
    table_lines,
    terms_lines,
)

RECORDS = Path(__file__).parent / "records"
Novelty = Mapping[str, Mapping[str, float]]

DATA_NOTE = (
    "SynthTri (generator version 2) is built to have the balance of real night-time data: relatives in a "
    "family share every captioned attribute and differ in colours, which only the visible images and the "
    "visible captions carry; each person also has their own physique (body proportions, a print on the "
    "upper garment) that both cameras see and no caption names; and the captions are noisy like a "
    "captioner's (items left out, similar colours and garments mistaken). Version 1 had exact captions "
    "and relatives identical in IR: the description alone then found the person better than any fusion "
    "(text Rank-1 65.0), and the ensemble cost 9.5 points."
)


def recorded(name: str) -> list[str]:
    """The lines of the Markdown record ``records/<name>.md`` (its leading ``<!-- -->`` note left out)."""
    text = (RECORDS / f"{name}.md").read_text(encoding="utf-8")
    if text.startswith("<!--"):
        text = text.split("-->\n", 1)[1]
    return text.rstrip("\n").splitlines()


def markdown(
    table: Mapping[str, Any],
    diagnosis: Diagnosis,
    seeds: list[int],
    cfg: Config,
    minutes: float,
    trained: Mapping[int, float],
    novelty: Novelty | None = None,
    captioned: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
) -> str:
    """The whole page: ``table`` is the summary of the rows, ``diagnosis`` the validation figures (mean,
    std over seeds), ``minutes`` this invocation's wall clock, ``trained`` the training minutes per seed,
    ``captioned`` the summaries ``ablation_captioned.py`` saved (captioners', generator's)."""
    intro = (
        "`python benchmarks/ablation.py` trains the `tiny` preset on the default SynthTri "
        f"({cfg.synth.ids} identities, {cfg.data.image_size[0]}x{cfg.data.image_size[1]} input) "
        f"with seeds {', '.join(map(str, seeds))} and evaluates on the test identities with the "
        "SYSU-MM01 protocol (IR queries from cameras 3 and 6; single-shot gallery, 10 trials, "
        f"`{cfg.gallery_sampling()}` gallery sampling), with "
        f"the longer schedule `{' '.join(schedule_overrides())}` (the preset's own was still improving on "
        "the validation identities; stage 2's length is chosen on them below). Each stage's checkpoint is "
        "selected on the validation identities, never on the test set. Values are percentages, mean ± "
        "standard deviation over seeds."
    )
    rows = [
        ("IR baseline", "stage 1 only (two-stream ResNet, CE + WRT, channel augmentation), IR image queries"),
        ("+ fusion", "stage 2 on the visible and fusion streams only; fusion queries"),
        (
            "+ joint learning",
            "stage 2 on the tiny preset's streams {RGB, fusion, RGB text}: the description's own stream "
            "joins (the method also has RGB-CA and IR, see below); fusion queries",
        ),
        ("+ ensemble retrieval", "the same model, ensemble (MER) queries"),
        ("+ text augmentation", "captions replaced by their rephrasing with probability 0.5 in stage 2"),
    ]
    return "\n".join(
        [
            "# Ablation on SynthTri",
            "",
            intro,
            "",
            "| row | what changes |",
            "|---|---|",
            *(f"| {name} | {what} |" for name, what in rows),
            "",
            *table_lines(table),
            "",
            *reference_lines(table),
            "",
            *captioned_lines(*(captioned or (None, None))),
            *findings(table, diagnosis, novelty, captioned[1] if captioned else None),
            "",
            f"Training the {len(seeds)} seeds took {sum(trained.values()):.0f} min on {os.cpu_count()} CPU "
            f"cores ({', '.join(f'seed {s}: {m:.0f}' for s, m in trained.items())} min, wall clock: a "
            f"seed that shared the machine with other work shows it; stage 1 plus "
            f"{len(VARIANTS) + len(CANDIDATES)} stage-2 runs per seed); runs "
            f"already trained under `--out` are reused, so a re-run only evaluates (this one took "
            f"{minutes:.0f} min).",
            "",
            "![CMC curves of the ablation rows](ablation_cmc.png)",
            "",
        ]
    )


def captioned_lines(captioned: Mapping[str, Any] | None, generator: Mapping[str, Any] | None) -> list[str]:
    """A paragraph on the same rows trained on the captions of the project's captioners
    (``benchmarks/ablation_captioned.py``, with the previous 12-epoch stage 2), against the generator's
    captions at that same stage 2, when that run's summary tables are given."""
    if captioned is None or generator is None:
        return []
    rows = ("+ fusion", "+ ensemble retrieval", ROWS[-1].name)
    pairs = ", ".join(
        f'"{name}" {rank1(captioned, name):.1f} against {rank1(generator, name):.1f}' for name in rows
    )
    aug = rank1(captioned, ROWS[-1].name) - rank1(captioned, ROWS[-2].name)
    spread = max(captioned[r]["all-single"]["rank1"][1] for r in (ROWS[-1].name, ROWS[-2].name))
    side = "within" if abs(aug) <= spread else "beyond"
    full = rank1(captioned, ROWS[-1].name) - rank1(captioned, ROWS[0].name)
    return [
        "The same rows with captions written by the project's captioners instead of SynthTri's generator "
        "([ablation_captioned.md](ablation_captioned.md); same stage-1 runs, same seeds, still with the "
        "previous 12-epoch stage 2), all-search Rank-1 of the rows, against the generator's captions at "
        f"that stage 2: {pairs}; the full model is {full:+.1f} over the IR baseline, and text "
        f"augmentation changes Rank-1 by {aug:+.1f} ({side} the spread over seeds).",
        "",
    ]


def stream_choice_section(diagnosis: Diagnosis) -> list[str]:
    """Why the tiny preset's joint learning leaves out the method's frozen RGB-CA and IR streams."""
    return [
        "Which streams joint learning trains on. The method (docs/design.md) trains stage 2 on five "
        "streams {RGB, "
        "RGB-CA, IR, fusion, RGB text}. In this table's previous run, with those five, joint learning "
        "cost the fusion query 3.9 Rank-1 on the test identities (40.9 ± 2.9 against 44.7 ± 2.4, "
        "beyond the spread over seeds; stage 2 then trained 12 epochs, decay at 10). What was tried "
        "to find which part costs, judged on the validation identities (seed 0, fusion Rank-1 at the "
        "end of stage 2, 3 trials; one run each, so differences of about 2 points are noise). Each is "
        "stage 2 from seed 0's stage-1 run with that "
        "12-epoch stage 2, `joint.text_aug_prob=0` and the streams named (`joint.streams=[...]`):",
        "",
        *recorded("ablation-joint-tried"),
        "",
        "Joint learning on the visible, fusion and description streams against all five streams and "
        "row 2's training, over the seeds of this table on the validation identities (the 12-epoch "
        "stage 2; all-search Rank-1 at each run's selected checkpoint; checkpoint selection keeps the "
        "best ensemble epoch):",
        "",
        *choice_lines(diagnosis, STREAM_CHOICE, "stage-2 streams"),
        "",
        stream_choice_verdict(diagnosis),
        "",
        "So the tiny preset trains joint learning on the visible, fusion and description streams "
        "(`joint.streams` in `tvifm/config/presets/tiny.yaml`), a choice made on the validation "
        "identities before any test row of it was computed. The paper preset keeps the design's five: "
        "with the paper's backbone the IR image alone finds the person about 72 % of the time, so "
        "prototypes that also fit the IR features cost little there.",
    ]


def stream_choice_verdict(diagnosis: Diagnosis) -> str:
    """What leaving the frozen image streams out of joint learning does on the validation identities."""
    row2, five, three = STREAM_CHOICE

    def diff(a: str, b: str, mode: str) -> str:
        return spread_diff(diagnosis, a, b, mode)

    return (
        f"Against all five streams, joint learning on the visible, fusion and description streams changes "
        f"the fusion query by {diff(three, five, 'fusion')}, the description by "
        f"{diff(three, five, 'text')} and the ensemble by {diff(three, five, 'ensemble')}. Against row 2's "
        f"training it changes the fusion query by {diff(three, row2, 'fusion')} and the ensemble by "
        f"{diff(three, row2, 'ensemble')}."
    )


def schedule_section(diagnosis: Diagnosis, previous: Mapping[str, Any] | None = None) -> list[str]:
    """Why text augmentation did nothing with the 12-epoch stage 2, and the stage 2 this table trains;
    ``previous`` is the table of the rows with that stage 2 (saved by ``ablation_captioned.py``)."""
    short, short_aug, long, long_aug = SCHEDULE_CHOICE
    on_test = ""
    if previous is not None:
        step = rank1(previous, ROWS[-1].name) - rank1(previous, ROWS[-2].name)
        on_test = f" (and Rank-1 by {step:+.1f} on the test identities)"

    def ce(label: str) -> str:
        return f"{diagnosis[f'{label} / final ce'][0]:.2f}"

    def diff(a: str, b: str) -> str:
        return spread_diff(diagnosis, a, b, "ensemble")

    return [
        "The stage 2 this table trains. Text augmentation is a regulariser: it shows the text encoder a "
        "rephrasing where it would otherwise see, again, a caption it has seen before. It can only help "
        "once the encoder starts to learn its training captions by heart. With stage 2 as it was, 12 "
        "epochs with the decay at 10, the identity loss on the training identities still ended at "
        f"{ce(short)} and the ensemble query was still improving on the validation identities "
        f"({diagnosis['12-epoch joint ensemble late gain'][0]:+.1f} Rank-1 between the last two "
        "evaluations); there augmentation changed the ensemble by "
        f"{diff(short_aug, short)} on the validation identities{on_test}. Trained three times as long, "
        "36 epochs with the decay "
        f"at 30, the loss ends at {ce(long)} without augmentation and at {ce(long_aug)} with it. On the "
        "validation identities (the seeds of this table, all-search Rank-1 at each run's selected "
        "checkpoint):",
        "",
        *choice_lines(diagnosis, SCHEDULE_CHOICE, "stage 2"),
        "",
        f"With 36 epochs text augmentation changes the ensemble by {diff(long_aug, long)}; without "
        f"augmentation 36 epochs change it by {diff(long, short)} over 12, and with it by "
        f"{diff(long_aug, short_aug)}. This table's stage 2 is therefore the 36-epoch one "
        "(the `ablation` preset, `tvifm/experiments/presets/ablation.yaml`), a choice made on these "
        "validation figures before any test row of it was computed; the 12-epoch runs stay as candidates "
        "scored on the validation identities only.",
    ]


def findings(
    table: Mapping[str, Any],
    diagnosis: Diagnosis,
    novelty: Novelty | None = None,
    previous: Mapping[str, Any] | None = None,
) -> list[str]:
    """What each step did to all-search Rank-1, and why a step that did not help did not.

    ``diagnosis`` holds the validation figures (mean, std over seeds) of
    :mod:`tvifm.experiments.diagnostics`: the MER_TERM_SUMS sums, :func:`stage1_figures`, the choice
    figures and final losses of STREAM_CHOICE and SCHEDULE_CHOICE and the :func:`late_gains` of LATE;
    ``novelty`` the :func:`~tvifm.experiments.captions.rephrasing_figures`."""
    steps, flat = step_lines(table)
    gain = rank1(table, ROWS[-1].name) - rank1(table, ROWS[0].name)
    text = [
        "All-search Rank-1, step by step:",
        "",
        *steps,
        "",
        f"The full model is {gain:+.1f} Rank-1 points over the IR baseline (target: at least +10).",
        "",
        DATA_NOTE,
    ]
    ir = rank1(table, ROWS[0].name)
    txt_fusion_only, txt_joint = (rank1(table, ref.name) for ref in REFERENCES)
    text += ["", *stream_choice_section(diagnosis)]
    if "+ joint learning" in flat:
        joint_gain = rank1(table, "+ joint learning") - rank1(table, "+ fusion")
        raise_ = "raises, by less than the spread over seeds," if joint_gain > 0 else "does not raise"
        text += [
            "",
            f"Joint learning {raise_} the fusion query on the test identities ({joint_gain:+.1f}). The "
            "fusion feature "
            "f_ir + (f_rgb_txt - f_ir_txt) has the same form in both variants and only the text encoder, "
            "the BNNeck and the classifier train; what changes is what the fusion is trained against. "
            "Joint learning adds the description's own feature to the shared classifier and triplet, so "
            "one small text encoder now serves two queries. What that buys is the description as a query: "
            f"text Rank-1 {txt_joint:.1f} after joint learning against {txt_fusion_only:.1f} without it, "
            "which is what the ensemble row builds on.",
        ]
        late_joint, late_fusion = (diagnosis[f"{name} late gain"][0] for name in list(LATE)[:2])
        late = (
            f"Over stage 2's last two evaluations on the validation identities the fusion query gained "
            f"{late_joint:+.1f} Rank-1 with joint learning and {late_fusion:+.1f} without it"
        )
        if late_joint > 1.0:
            late += (
                ": joint learning was still improving when stage 2 ended, so a longer stage 2 may add to "
                "it (a schedule to choose on validation, never on this table)."
            )
        else:
            late += ", so a longer stage 2 is unlikely to be what joint learning lacks here."
        text += ["", late]
    gain_t, gain_ir, gain_mer = (diagnosis[k][0] - diagnosis["fusion"][0] for k in list(MER_TERM_SUMS)[1:])
    text += [
        "",
        "Which of the ensemble's terms helps, on the validation identities (the joint-learning model of "
        "row 3; no test identity is involved):",
        "",
        *terms_lines(diagnosis),
        "",
        f"Adding the text query's score to the fusion score changes Rank-1 by {gain_t:+.1f}, adding the IR "
        f"query's by {gain_ir:+.1f}; all three together by {gain_mer:+.1f}.",
    ]
    if "+ ensemble retrieval" in flat:
        test_mer = rank1(table, "+ ensemble retrieval") - rank1(table, "+ joint learning")
        text += [
            "",
            "The ensemble adds the IR query's and the text query's scores to the fusion score with equal "
            "weights (docs/design.md, query modes). Over the fusion query it gains "
            f"{gain_mer:+.1f} Rank-1 on the "
            f"validation identities and {test_mer:+.1f} on the test identities: a step of the size of the "
            "differences between identity sets, made of a text term that helps and an IR term that costs.",
        ]
    text += ["", *ir_query_lines(diagnosis, ir)]
    text += [
        "",
        "What was tried to strengthen stage 1's IR query, judged on the validation identities (seed 0, "
        "best IR Rank-1 of the run, the one its checkpoint selection keeps). Every run but the last two "
        "passed visible and IR images through the shared stages separately, so BatchNorm normalised each "
        "modality on its own in training and with the running statistics of both at test time:",
        "",
        *recorded("ablation-stage1-tried"),
    ]
    text += ["", *schedule_section(diagnosis, previous)]
    if "+ text augmentation" in flat:
        text += ["", *text_aug_lines(novelty or {})]
    return text


def text_aug_lines(novelty: Novelty) -> list[str]:
    """Why text augmentation adds little here: what a rephrasing says that the person's captions do not."""
    lines = [
        "What a rephrasing adds to the captions of the same person (visible captions, word sets; "
        "`tvifm.text.augment.rephrasing_novelty`):",
        "",
        *novelty_table(novelty),
    ]
    synth = novelty.get(SYNTH_NOVELTY)
    real = novelty.get(REAL_NOVELTY)
    text = (
        "Why the step stays small: beyond regularising, text augmentation can teach the text encoder only "
        "wordings its captions do not already show it. SynthTri's captions are written by a generator "
        "that varies its wording from image to image"
    )
    if synth is not None and synth["caption_vs_caption"] < synth["caption_vs_rephrasing"]:
        text += (
            ", so two captions of one person differ more than a caption and its rule-based rephrasing, "
            f"and the rephrasing brings few words ({100 * synth['new_words']:.1f} %) the person's other "
            "captions lack"
        )
    text += (
        ". The rule-based rephraser also keeps every attribute of a noisy caption, including its mistakes."
    )
    if synth is not None and real is not None:
        text += (
            " The published LLM rephrasings of Tri-RegDB, with a similar number of captions per person, "
            f"bring {real['new_words'] / synth['new_words']:.1f} times the share of new words and also "
            "rewrite the captioner's garbled phrases, which SynthTri's captions do not have."
        )
    text += " An LLM augmenter (`caption.augmenter=llm`, any local causal LM) is the paper's setting."
    return [*lines, "", text]


def ir_query_lines(diagnosis: Diagnosis, ir: float) -> list[str]:
    """Why the IR term of the ensemble costs: how stage 1's IR query errs, by family and camera pair."""
    ident, fam = diagnosis["IR identity"][0], diagnosis["IR family"][0]

    def pair(name: str) -> str:
        return f"{diagnosis[name][0]:.1f} ± {diagnosis[name][1]:.1f}"

    return [
        "The IR term costs because the IR image alone is the weakest query here (Rank-1 "
        f"{ir:.1f}), while in the paper it is the strongest (its IR baseline is about 72.5 Rank-1 on "
        "Tri-SYSU-MM01: 84.9 less the ablation's 12.4 points). Scored by family on the validation "
        f"identities, stage 1's top IR match is the right person {ident:.0f} % of the time, a relative "
        f"{fam - ident:.0f} % and a stranger {100 - fam:.0f} %, so the IR score pulls strangers up as well "
        "as relatives. Within one modality stage 1 does far better: with one camera's images as queries "
        f"against every image of another camera, IR to IR Rank-1 is {pair('IR to IR')}, visible to visible "
        f"{pair('visible to visible')}, and IR to visible {pair('IR to visible')}. The IR images carry much "
        "of a person's identity (their relatives aside); crossing the modality is where the tiny backbone "
        "at 96x48 loses it. MER keeps the design's equal weights; weights read off the test rows would be "
        "tuning on the test set.",
    ]
