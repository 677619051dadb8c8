"""tvifm.experiments.docs, render and ablation_page: docs sections rewritten in place, the ablation's
tables and page built from given summaries; ablation.summarise; the load test's latency summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from tvifm.config import load_config
from tvifm.experiments import ablation as abl
from tvifm.experiments import ablation_page, docs, render
from tvifm.experiments.captions import REAL_NOVELTY, SYNTH_NOVELTY
from tvifm.experiments.diagnostics import CHOICE_MODES, MER_TERM_SUMS, WITHIN
from tvifm.experiments.loadtest import summary


def test_write_section_replaces_one_section_and_keeps_the_others(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "benchmarks.md"
    docs.write_section(page, "Serving", "old serving")
    docs.write_section(page, "Evaluation", "eval table")
    docs.write_section(page, "Serving", "new serving\n\n")
    text = page.read_text()
    assert text.startswith(docs.DOC_INTRO)
    assert "old serving" not in text and text.count("## Serving") == 1
    assert text.index("## Serving\n\nnew serving\n") < text.index("## Evaluation\n\neval table\n")
    assert text.endswith("eval table\n")


def _per_seed(shift: float) -> dict[str, dict[str, dict[str, float]]]:
    """One seed's results: row i scores 0.1 * (i + 1) + shift on every metric."""
    rows = [*abl.ROWS, *abl.REFERENCES]
    return {
        row.name: {p: {m: 0.1 * (i + 1) + shift for m in abl.METRICS} for p in abl.PROTOCOLS}
        for i, row in enumerate(rows)
    }


def test_summarise_gives_percent_mean_and_std_over_seeds() -> None:
    table = abl.summarise([_per_seed(0.0), _per_seed(0.02)])
    mean, std = table["IR baseline"]["all-single"]["rank1"]
    assert mean == pytest.approx(11.0) and std == pytest.approx(1.0)
    assert set(table) == {r.name for r in (*abl.ROWS, *abl.REFERENCES)}
    figures = abl.summarise_figures([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.0}])
    assert figures == {"a": (2.0, 1.0), "b": (2.0, 0.0)}


def test_table_lines_have_a_row_per_step_and_a_column_per_protocol_metric() -> None:
    lines = render.table_lines(abl.summarise([_per_seed(0.0), _per_seed(0.02)]))
    assert len(lines) == 2 + len(abl.ROWS)
    assert all(line.count("|") == 2 + len(abl.PROTOCOLS) * len(abl.METRICS) for line in lines)
    assert lines[2] == "| IR baseline | " + " | ".join(["11.0 ± 1.0"] * 6) + " |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| {row.name}" for row in abl.ROWS]


def test_step_lines_flag_steps_within_the_spread_over_seeds() -> None:
    table = abl.summarise([_per_seed(0.0), _per_seed(0.02)])
    table["+ ensemble retrieval"]["all-single"]["rank1"] = (31.5, 1.0)  # +0.5 over joint learning (31.0)
    table["+ text augmentation"]["all-single"]["rank1"] = (29.0, 0.5)  # -2.5, beyond the spread
    steps, flat = render.step_lines(table)
    assert steps[0] == "- + fusion: +10.0 Rank-1 points (helps)"
    assert steps[2] == "- + ensemble retrieval: +0.5 Rank-1 points (helps, within the spread over seeds)"
    assert steps[3] == "- + text augmentation: -2.5 Rank-1 points (does not help)"
    assert flat == {"+ ensemble retrieval", "+ text augmentation"}


def _diagnosis() -> dict[str, tuple[float, float]]:
    """Every validation figure the ablation page reads, as (mean, std)."""
    names = [*MER_TERM_SUMS, "IR identity", "IR family", *WITHIN]
    labels = [*abl.STREAM_CHOICE, *abl.SCHEDULE_CHOICE]
    names += [f"{label} / {m}" for label in labels for m in CHOICE_MODES]
    names += [f"{label} / final ce" for label in abl.SCHEDULE_CHOICE]
    names += [f"{name} late gain" for name in abl.LATE]
    return {name: (10.0 + i, 0.5) for i, name in enumerate(names)}


def test_choice_terms_and_novelty_tables_have_a_row_per_entry() -> None:
    diagnosis = _diagnosis()
    choice = render.choice_lines(diagnosis, abl.SCHEDULE_CHOICE, "stage 2")
    assert choice[0] == "| stage 2 | fusion R1 | text R1 | ensemble R1 |" and len(choice) == 2 + 4
    assert all(line.count(" ± ") == len(CHOICE_MODES) for line in choice[2:])
    assert len(render.terms_lines(diagnosis)) == 2 + len(MER_TERM_SUMS)
    figures = {"people": 10, "rephrasings": 80, "new_words": 0.05, "caption_vs_rephrasing": 0.7,
               "caption_vs_caption": 0.4}  # fmt: skip
    novelty = render.novelty_table({"a": figures, "b": figures}, "captions by")
    assert novelty[0].startswith("| captions by | people |") and len(novelty) == 4
    assert novelty[2] == "| a | 10 | 8.0 | 5.0 % | 0.70 | 0.40 |"
    assert render.spread_diff(diagnosis, *list(abl.SCHEDULE_CHOICE)[:2], "text").endswith(
        "(beyond the spread over seeds)"
    )


def test_the_ablation_page_reports_the_rows_steps_diagnosis_and_training_time() -> None:
    table = abl.summarise([_per_seed(0.0), _per_seed(0.02)])
    novelty = {
        name: {"people": 10, "rephrasings": 80, "new_words": w, "caption_vs_rephrasing": 0.7,
               "caption_vs_caption": 0.4}
        for name, w in ((SYNTH_NOVELTY, 0.04), (REAL_NOVELTY, 0.12))
    }  # fmt: skip
    cfg = load_config("tiny")
    page = ablation_page.markdown(table, _diagnosis(), [0, 1], cfg, 3.0, {0: 10.0, 1: 12.0}, novelty)
    lines = page.splitlines()
    assert lines[0] == "# Ablation on SynthTri"
    assert " ".join(abl.schedule_overrides()) in page
    start = lines.index(render.table_lines(table)[0])
    assert lines[start : start + 2 + len(abl.ROWS)] == render.table_lines(table)
    for row in abl.REFERENCES:
        assert any(line.startswith(f"- {row.name}: all-search R1") for line in lines)
    assert all(line in lines for line in ablation_page.recorded("ablation-stage1-tried"))
    assert "Training the 2 seeds took 22 min" in page and "(seed 0: 10, seed 1: 12 min" in page
    assert f"stage 1 plus {len(abl.VARIANTS) + len(abl.CANDIDATES)} stage-2 runs per seed" in page
    assert "captioned by" not in page and "ablation_captioned.md" not in page  # no captioned run given
    with_captioned = ablation_page.markdown(table, _diagnosis(), [0, 1], cfg, 3.0, {0: 1, 1: 1}, novelty,
                                            (table, table))  # fmt: skip
    assert "([ablation_captioned.md](ablation_captioned.md);" in with_captioned


def test_records_are_read_without_their_note() -> None:
    lines = ablation_page.recorded("ablation-joint-tried")
    assert lines[0].startswith("- ") and not any("<!--" in line or "-->" in line for line in lines)


def test_load_summary_percentiles_and_rate() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1 .. 100 ms
    out = summary(latencies, wall=2.0, errors=["500: boom"])
    assert out["requests"] == 100 and out["rps"] == 50.0
    assert out["p50_ms"] == pytest.approx(50.5) and out["p99_ms"] == pytest.approx(99.0)
    assert out["errors"] == 1 and out["first_error"] == "500: boom"
    with pytest.raises(ValueError, match="no request"):
        summary([], 1.0, [])
