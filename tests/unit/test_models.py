"""The TVI-FM model: shapes, trainable parameters per stage, fusion, checkpoints, real architectures."""

from __future__ import annotations

import copy

import pytest
import torch

from tvifm.checkpoint import CheckpointError, load_weights, save_weights
from tvifm.config import load_config
from tvifm.models import TVIFM, TwoStreamResNet, semantic_filtered_fusion
from tvifm.models.text import TextEncoder, build_tokenizer

SIZE = (64, 32)


def _cfg(*overrides: str):
    return load_config(
        "tiny", ["data.image_size=[64, 32]", "backbone.tiny_widths=[8, 16, 16, 32]", *overrides]
    )


def _model(num_classes: int) -> TVIFM:
    cfg = _cfg()
    return TVIFM(cfg.backbone, cfg.text, num_classes=num_classes)


def _batch(n: int = 4) -> dict:
    torch.manual_seed(0)
    return {
        "visible": torch.randn(n, 3, *SIZE),
        "visible_ca": torch.randn(n, 3, *SIZE),
        "ir": torch.randn(n, 3, *SIZE),
        "label": torch.tensor([0, 0, 1, 1][:n]),
        "visible_text": ["a man in a red shirt"] * n,
        "ir_text": ["a man in a shirt"] * n,
    }


def test_backbone_shapes_and_separate_stems() -> None:
    net = TwoStreamResNet("tiny", tiny_widths=(8, 16, 16, 32))
    x = torch.randn(2, 3, *SIZE)
    assert net(x, "visible").shape == (2, 32)
    before = net(x, "visible").detach()
    with torch.no_grad():
        net.stems["ir"][0].weight.mul_(2.0)  # the stems are separate parameters...
    assert torch.equal(net(x, "visible").detach(), before)
    assert not torch.allclose(net(x, "ir"), before)  # ...and each modality goes through its own
    shared = {id(p) for p in net.shared.parameters()}
    assert not shared & {id(p) for p in net.stems.parameters()}
    with pytest.raises(ValueError, match="modality"):
        net(x, "thermal")


def test_batches_of_both_modalities_pass_the_shared_stages_with_the_statistics_inference_uses() -> None:
    """A training step normalises each stem's images together (visible with channel-augmented visible)
    and all images together in the shared stages' BatchNorm, so the running statistics that inference
    uses are the ones training normalised with; separate passes would leave them fitting no batch and
    open a modality gap at test time."""
    model = _model(5)
    model.set_stage("base")
    for module in model.backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0  # running statistics := those of the last training batch
    batch = _batch()
    batch["ir"] = batch["ir"] * 3.0 + 2.0  # IR statistics far from the visible ones
    batch["visible_ca"] = batch["visible_ca"] * 0.5 - 1.0  # and the visible stem's two batches apart
    streams = ["visible", "visible_ca", "ir"]
    trained = model.train().stream_features(batch, streams)
    with torch.no_grad():
        inferred = model.eval().stream_features(batch, streams)
    for name in streams:
        # a training step divides by the batch's biased variance, the running one is unbiased: about 2%
        # at this tiny batch; separate passes per batch or per modality are off by 50% or more
        error = (inferred[name] - trained[name].detach()).norm() / trained[name].norm()
        assert error < 0.04, (name, float(error))
    x, y = batch["visible"], batch["ir"]
    together = model.backbone.forward_many([(x, "visible"), (y, "ir")])
    torch.testing.assert_close(together[1], model.backbone(y, "ir"))  # eval: each image on its own


def test_an_unknown_modality_is_refused_before_any_batchnorm_statistics_move() -> None:
    net = TwoStreamResNet("tiny", tiny_widths=(8, 16, 16, 32)).train()
    before = copy.deepcopy(net.state_dict())
    x = torch.randn(2, 3, *SIZE)
    with pytest.raises(ValueError, match="'depth'"):
        net.forward_many([(x, "visible"), (x, "depth")])
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, before[name], msg=name)


def test_last_stride_one_keeps_a_larger_final_map() -> None:
    x = torch.randn(1, 3, *SIZE)
    shapes = {}
    for stride in (1, 2):
        net = TwoStreamResNet("tiny", last_stride=stride, tiny_widths=(8, 16, 16, 32))
        shapes[stride] = net.shared(net.stems["visible"](x)).shape[-2:]
    assert shapes[1][0] == 2 * shapes[2][0] and shapes[1][1] == 2 * shapes[2][1]


def test_forward_returns_stacked_features_and_logits() -> None:
    model = _model(5)
    model.set_stage("joint")
    out = model(_batch(), ["visible", "ir", "fusion", "visible_text"])
    assert out["features"].shape == (16, model.dim)
    assert out["bn_features"].shape == (16, model.dim)
    assert out["logits"].shape == (16, 5)
    with pytest.raises(ValueError, match="unknown streams"):
        model(_batch(), ["depth"])


def test_fusion_formula() -> None:
    a, b, c = torch.randn(3, 2, 8).unbind(0)
    assert torch.allclose(semantic_filtered_fusion(a, b, c), a + b - c)
    model = _model(2)
    model.set_stage("joint")
    model.eval()
    batch = _batch(2)
    feats = model.stream_features(batch, ["ir", "visible_text", "ir_text", "fusion"])
    assert torch.allclose(feats["fusion"], feats["ir"] + feats["visible_text"] - feats["ir_text"], atol=1e-6)


def _grads_after_step(stage: str, streams: list[str]) -> tuple[TVIFM, dict[str, bool]]:
    model = _model(2)
    model.set_stage(stage)
    model.train()
    out = model(_batch(), streams)
    (out["features"].sum() + out["logits"].sum()).backward()
    return model, {
        n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()
    }


def test_stage_base_trains_backbone_and_head_only() -> None:
    _, grads = _grads_after_step("base", ["visible", "visible_ca", "ir"])
    assert all(g for n, g in grads.items() if n.startswith(("backbone.shared", "backbone.pool")))
    assert any(g for n, g in grads.items() if n.startswith("backbone.stems.visible"))
    assert any(g for n, g in grads.items() if n.startswith("backbone.stems.ir"))
    assert not any(g for n, g in grads.items() if n.startswith("text."))
    assert grads["head.classifier.weight"] and grads["head.bn.weight"] and not grads["head.bn.bias"]


def test_stage_joint_freezes_backbone_and_trains_text_and_head() -> None:
    model = _model(2)
    model.set_stage("joint")
    stats = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
    model, grads = _grads_after_step("joint", ["visible", "visible_ca", "ir", "fusion", "visible_text"])
    assert not any(g for n, g in grads.items() if n.startswith("backbone."))
    assert all(not p.requires_grad for p in model.backbone.parameters())
    trained = ("text.tower.transformer", "text.tower.token_embedding", "text.tower.ln_final", "text.proj")
    for prefix in trained:
        assert any(g for n, g in grads.items() if n.startswith(prefix)), prefix
    assert grads["text.tower.text_projection"] and grads["text.tower.positional_embedding"]
    assert grads["head.classifier.weight"]
    # a joint-stage forward in train mode must not move the frozen backbone's BatchNorm statistics
    model2 = _model(2)
    model2.set_stage("joint")
    model2.backbone.load_state_dict({**model2.backbone.state_dict(), **stats})
    model2.train()
    model2(_batch(), ["visible", "ir"])
    for k, v in model2.backbone.state_dict().items():
        if "running" in k:
            assert torch.equal(v, stats[k]), k


def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path) -> None:
    cfg = _cfg()
    model = TVIFM(cfg.backbone, cfg.text, num_classes=3).eval()
    x = torch.randn(2, 3, *SIZE)
    tokens = model.tokenize(["a woman with a blue bag"])
    save_weights(model, tmp_path / "model.safetensors")
    torch.manual_seed(123)  # a different initialisation, overwritten by the checkpoint
    again = TVIFM(cfg.backbone, cfg.text, num_classes=3).eval()
    load_weights(again, tmp_path / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(
            model.head.embed(model.encode_image(x, "ir")), again.head.embed(again.encode_image(x, "ir"))
        )
        assert torch.equal(model.encode_text(tokens), again.encode_text(tokens))
    wrong = TVIFM(cfg.backbone, cfg.text, num_classes=4)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(wrong, tmp_path / "model.safetensors")


def test_tokenizer_is_the_clip_bpe_vocabulary() -> None:
    tok = build_tokenizer(77)
    ids = tok(["a man"])
    assert ids.shape == (1, 77)
    assert ids[0, 0].item() == 49406 and 49407 in ids[0].tolist()  # <start_of_text>, <end_of_text>


@pytest.mark.slow
def test_paper_scale_checkpoints_load_through_the_real_code_path(tmp_path) -> None:
    """An OpenAI CLIP RN50 checkpoint (open_clip format, QuickGELU) and torchvision ResNet-50 weights
    built here load."""
    import open_clip
    from torchvision.models import resnet50

    clip = open_clip.create_model("RN50-quickgelu")  # OpenAI CLIP, as the paper preset expects
    clip_path = tmp_path / "clip_rn50.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, clip_path)
    imagenet = resnet50(weights=None)
    imagenet_path = tmp_path / "resnet50.pth"
    torch.save(imagenet.state_dict(), imagenet_path)

    cfg = load_config(
        "paper",
        [
            f"text.checkpoint={clip_path}",
            f"backbone.weights={imagenet_path}",
            "backbone.arch=resnet50",
            "text.arch=RN50",
        ],
    )
    model = TVIFM(cfg.backbone, cfg.text, num_classes=4).eval()
    assert model.dim == 2048 and model.text.arch.layers == 12 and model.text.arch.width == 512
    assert torch.equal(model.text.tower.token_embedding.weight, clip.token_embedding.weight)
    assert torch.equal(model.text.tower.text_projection, clip.text_projection)
    assert torch.equal(model.backbone.shared[0][0].conv1.weight, imagenet.layer1[0].conv1.weight)
    assert torch.equal(model.backbone.stems["ir"][0].weight, imagenet.conv1.weight)
    tokens = model.tokenize(["a man"])
    with torch.no_grad():
        assert torch.allclose(model.text.tower(tokens), clip.encode_text(tokens), atol=1e-5)
        assert model.encode_image(torch.randn(1, 3, 288, 144), "ir").shape == (1, 2048)


def test_missing_or_wrong_checkpoint_files_are_clear_errors(tmp_path) -> None:
    from tvifm.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        TextEncoder("tiny", 16, checkpoint=str(tmp_path / "nope.pt"))
    bogus = tmp_path / "bogus.pt"
    torch.save({"weight": torch.zeros(2)}, bogus)
    with pytest.raises(ConfigError, match="no CLIP text-tower weights"):
        TextEncoder("tiny", 16, checkpoint=str(bogus))
    with pytest.raises(ConfigError, match="does not exist"):
        TwoStreamResNet("resnet18", weights=str(tmp_path / "nope.pth"))
