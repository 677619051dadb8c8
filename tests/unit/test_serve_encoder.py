"""Image decoding limits and the service's embeddings against the offline inference code."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from tvifm.config import load_config
from tvifm.data.base import Sample
from tvifm.eval.embeddings import encode_images
from tvifm.models.query import MODE_NEEDS, target_modality
from tvifm.models.tvifm import TVIFM
from tvifm.serve.encoder import BadImageError, Encoder, ImageTooLargeError, decode_image


def _png(size: tuple[int, int], colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_image_accepts_images_and_rejects_the_rest() -> None:
    img = decode_image(_png((32, 64)), max_pixels=10_000)
    assert img.mode == "RGB" and img.size == (32, 64)
    with pytest.raises(BadImageError, match="empty"):
        decode_image(b"", 10_000)
    with pytest.raises(BadImageError, match="supported formats"):
        decode_image(b"GIF89a not really", 10_000)
    with pytest.raises(BadImageError, match="cannot decode"):
        decode_image(_png((32, 64))[:60], 10_000)
    with pytest.raises(ImageTooLargeError, match="200x100 pixels exceeds the limit of 10000"):
        decode_image(_png((200, 100)), 10_000)


def test_mode_inputs_and_directions() -> None:
    assert MODE_NEEDS["text"].image is False and MODE_NEEDS["ir"].description is False
    assert MODE_NEEDS["ensemble"].ir_caption and MODE_NEEDS["fusion"].description
    assert target_modality("rgb2ir") == "ir" and target_modality("ensemble") == "visible"


@pytest.fixture(scope="module")
def tiny_model() -> TVIFM:
    torch.manual_seed(0)
    cfg = load_config(
        "tiny", ["data.image_size=[64,32]", "backbone.tiny_widths=[16,16,32,32]", "text.context_length=32"]
    )
    model = TVIFM(cfg.backbone, cfg.text, num_classes=4)
    model.set_stage("joint")
    return model.eval()


def test_embeddings_equal_the_offline_inference(tiny_model: TVIFM, tmp_path: Path) -> None:
    paths = []
    for i, colour in enumerate([(200, 10, 10), (10, 10, 200), (90, 90, 90)]):
        path = tmp_path / f"{i}.png"
        path.write_bytes(_png((32, 64), colour))
        paths.append(path)
    samples = [Sample(str(p), p.name, 1, 3, "ir") for p in paths]
    enc = Encoder(tiny_model, [64, 32])
    images = [decode_image(p.read_bytes(), 10_000) for p in paths]

    f_ir = enc.image_features(images, ["ir"] * 3)
    offline = encode_images(tiny_model, samples, [64, 32])
    torch.testing.assert_close(f_ir, offline, rtol=1e-4, atol=1e-5)

    texts = tiny_model.encode_texts(["a man in a red coat", "a man in a coat"])
    q = enc.query_embedding("ensemble", f_ir[0], texts[0], texts[1])
    fusion = tiny_model.embed(tiny_model.fuse(offline[:1], texts[:1], texts[1:]))
    expected = (fusion + tiny_model.embed(offline[:1]) + tiny_model.embed(texts[:1])) / 3
    torch.testing.assert_close(q, expected[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        enc.query_embedding("text", description=texts[0]), tiny_model.embed(texts[:1])[0]
    )
