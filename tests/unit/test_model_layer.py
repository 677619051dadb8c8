"""The model layer: one definition of the query modes, one MER, models built without training code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tvifm.checkpoint import save_weights, write_json
from tvifm.config import load_config, save_config
from tvifm.errors import TvifmError
from tvifm.models import MODE_NEEDS, QUERY_MODES, RunDir, create_model, load_model, mer
from tvifm.models.query import STAGE_MODES, check_modes, main_mode

OVERRIDES = ["data.image_size=[64,32]", "backbone.tiny_widths=[16,16,32,32]", "text.context_length=32"]
REPO = Path(__file__).resolve().parents[2]


def _run_dir(path: Path) -> Path:
    cfg = load_config("tiny", OVERRIDES)
    model = create_model(cfg.backbone, cfg.text, 4, stage="joint", seed=0)
    save_config(cfg, path)
    save_weights(model, path / RunDir.WEIGHTS)
    write_json(path / RunDir.META, {"stage": "joint", "num_classes": 4})
    return path


def test_every_mode_has_its_inputs_and_stages_answer_only_their_modes() -> None:
    assert set(MODE_NEEDS) == set(QUERY_MODES)
    assert set(STAGE_MODES["base"]) == {"ir", "rgb2ir"} and set(STAGE_MODES["joint"]) == set(QUERY_MODES)
    assert main_mode(["ir", "ensemble"]) == "ensemble" and main_mode(["ir"]) == "ir"
    with pytest.raises(TvifmError, match="valid: ir, text, fusion, ensemble, rgb2ir"):
        check_modes(["ir", "thermal"])


def test_query_embeddings_follow_the_formulas(tmp_path: Path) -> None:
    model = load_model(_run_dir(tmp_path / "run")).model
    torch.manual_seed(1)
    image, description, caption = (torch.randn(3, model.dim) for _ in range(3))
    out = model.query_embeddings(QUERY_MODES, image, description, caption)
    assert list(out) == list(QUERY_MODES)
    torch.testing.assert_close(out["ir"], model.embed(image))
    torch.testing.assert_close(out["text"], model.embed(description))
    torch.testing.assert_close(out["fusion"], model.embed(image + description - caption))
    torch.testing.assert_close(out["ensemble"], (out["fusion"] + out["ir"] + out["text"]) / 3)
    torch.testing.assert_close(out["ensemble"], mer(out["fusion"], out["ir"], out["text"]))
    only_ir = model.query_embeddings(["ir"], image)  # a mode asks only for the inputs it needs
    torch.testing.assert_close(only_ir["ir"], out["ir"])
    with pytest.raises(ValueError, match="IR caption"):
        model.query_embeddings(["fusion"], image, description)


def test_run_dir_reports_what_is_missing_and_how_far_training_got(tmp_path: Path) -> None:
    run = RunDir(_run_dir(tmp_path / "run"))
    assert run.missing() == [] and run.epochs_done() == 0 and not run.is_finished(1)
    write_json(run.last / RunDir.TRAINER_STATE, {"epoch": 2, "best": None, "resumes": []})
    assert run.epochs_done() == 3 and run.is_finished(3) and not run.is_finished(4)
    run.weights.unlink()
    assert run.missing() == [RunDir.WEIGHTS] and not run.is_finished(3)


def test_loading_a_model_for_serving_imports_no_training_code(tmp_path: Path) -> None:
    """Serving and the registry build models without the trainer, DeepSpeed or Ray Train."""
    run = _run_dir(tmp_path / "run")
    script = f"""
import json, sys
import tvifm.serve.api, tvifm.serve.encoder, tvifm.serve.app, tvifm.serve.deployments
import tvifm.tracking.pyfunc_model
from tvifm.models import load_model
loaded = load_model({str(run)!r})
assert loaded.modes == tuple({list(QUERY_MODES)!r}), loaded.modes
print(json.dumps(sorted(sys.modules)))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    forbidden = ("tvifm.engine", "deepspeed", "ray.train", "ray.data")
    assert [m for m in modules if m.startswith(forbidden)] == []
    assert "ray.serve" in modules  # the check would notice imports: the serving edge did import Ray
