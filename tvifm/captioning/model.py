"""BLIP captioners: build a tiny one from scratch, load a checkpoint directory, caption images, save.

A captioner directory is a standard ``save_pretrained`` folder: ``config.json`` + ``model.safetensors``
of a :class:`transformers.BlipForConditionalGeneration`, the :class:`transformers.BlipProcessor` files
(image processor and tokenizer) and ``captioner.json`` with the generation settings and how it was
trained. ``BlipForConditionalGeneration.from_pretrained(dir)`` and ``BlipProcessor.from_pretrained(dir)``
reload it; :func:`load_captioner` does both (an ``s3://`` directory is copied to a local cache first).

Paper scale: ``base_checkpoint`` is a local copy of ``blip-image-captioning-large`` (its own tokenizer and
384x384 processor). The tiny default is a small ``BlipConfig`` (see :class:`CaptionConfig`) with a
WordPiece tokenizer trained on the caption corpus with the ``tokenizers`` library. transformers is
imported when a function here runs, never at import time.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tvifm.data import storage
from tvifm.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from tvifm.captioning.config import CaptionConfig

META_FILE = "captioner.json"
DECODER_TOKEN = "[DEC]"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", DECODER_TOKEN)


@dataclass
class Captioner:
    """A BLIP captioning model with its processor and generation settings."""

    model: Any  # transformers.BlipForConditionalGeneration
    processor: Any  # transformers.BlipProcessor
    max_length: int = 50
    num_beams: int = 1
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Where the model's weights live."""
        return next(self.model.parameters()).device

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The processor's normalised pixel tensor (N, 3, H, W) of ``images``."""
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    def generate_ids(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Token ids generated for a pixel batch (greedy or beam search, ``max_length`` tokens).

        Generation cannot end before its first token, and never picks a special token that decoding
        would drop ([PAD], [UNK], [CLS], [MASK], the decoder start), so a caption is never empty."""
        import torch

        self.model.eval()
        with torch.inference_mode():
            return self.model.generate(
                pixel_values=pixel_values.to(self.device),
                max_length=self.max_length,
                min_new_tokens=1,
                suppress_tokens=self.silent_token_ids(),
                num_beams=self.num_beams,
                do_sample=False,
            )

    def silent_token_ids(self) -> list[int]:
        """Ids of the tokenizer's special tokens other than the end of caption ([SEP])."""
        tok = self.processor.tokenizer
        ids = {tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens} | {tok.bos_token_id}
        return sorted(i for i in ids if i is not None and i != tok.sep_token_id)

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, decoded without special tokens."""
        if not images:
            return []
        ids = self.generate_ids(self.pixel_values(images))
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [clean_caption(t) for t in texts]

    def save(self, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
        """Write the captioner as a ``save_pretrained`` directory (safetensors) plus ``captioner.json``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.processor.save_pretrained(out)
        meta = {**self.meta, **(extra or {}), "max_length": self.max_length, "num_beams": self.num_beams}
        (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def clean_caption(text: str) -> str:
    """Collapse whitespace and drop a leading/trailing space before punctuation in a decoded caption."""
    import re

    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([,.;!?])", r"\1", text)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A lower-casing BERT WordPiece tokenizer trained on ``texts`` (BLIP's tokenizer family).

    The vocabulary starts with ``[PAD] [UNK] [CLS] [SEP] [MASK] [DEC]``; ``[DEC]`` is BLIP's decoder
    start (bos) token.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    corpus = [t for t in texts if t.strip()]
    if not corpus:
        raise ConfigError("cannot train a captioner tokenizer: no caption text was found for training")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    backend.train_from_iterator(corpus, trainer)
    return BertTokenizer(vocab=backend.get_vocab(), bos_token=DECODER_TOKEN)


def build_tiny_captioner(cfg: CaptionConfig, texts: Iterable[str]) -> Captioner:
    """A randomly initialised small BLIP with a tokenizer trained on ``texts`` (the tiny preset)."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    if cfg.image_size % cfg.patch_size:
        raise ConfigError(
            f"caption.image_size={cfg.image_size} is not a multiple of caption.patch_size={cfg.patch_size}"
        )
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    vocab = tokenizer.get_vocab()
    config = BlipConfig(
        vision_config=_vision_config(cfg),
        text_config=_text_config(cfg, vocab),
    )
    model = BlipForConditionalGeneration(config)
    image_processor = BlipImageProcessor(size={"height": cfg.image_size, "width": cfg.image_size})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    meta = {"kind": "tiny", "image_size": cfg.image_size, "vocab_size": len(vocab)}
    return Captioner(model, processor, cfg.max_length, cfg.num_beams, meta)


def _vision_config(cfg: CaptionConfig) -> dict[str, Any]:
    return {
        "hidden_size": cfg.vision_width,
        "intermediate_size": 2 * cfg.vision_width,
        "num_hidden_layers": cfg.vision_layers,
        "num_attention_heads": cfg.heads,
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "initializer_range": 0.02,
    }


def _text_config(cfg: CaptionConfig, vocab: dict[str, int]) -> dict[str, Any]:
    return {
        "vocab_size": len(vocab),
        "hidden_size": cfg.text_width,
        "intermediate_size": 2 * cfg.text_width,
        "num_hidden_layers": cfg.text_layers,
        "num_attention_heads": cfg.heads,
        "max_position_embeddings": max(64, cfg.max_length + 8),
        "bos_token_id": vocab[DECODER_TOKEN],
        "pad_token_id": vocab["[PAD]"],
        "sep_token_id": vocab["[SEP]"],
        "eos_token_id": vocab["[SEP]"],
    }


def load_captioner(
    path: str | os.PathLike[str],
    max_length: int | None = None,
    num_beams: int | None = None,
    endpoint: str | None = None,
    device: str | None = None,
) -> Captioner:
    """Load a captioner directory (local or ``s3://``) written by :meth:`Captioner.save` or a BLIP checkpoint.

    ``max_length``/``num_beams`` override the saved generation settings. An ``s3://`` directory is
    fetched into a temporary folder that is removed once the weights are in memory. A missing or
    incomplete directory raises :class:`ConfigError` saying what is expected.
    """
    if storage.is_s3(str(path)):
        with tempfile.TemporaryDirectory(prefix="tvifm-captioner-") as tmp:
            local = storage.download_tree(str(path), tmp, endpoint)
            return load_captioner(local, max_length, num_beams, endpoint, device)
    return _load_local(Path(path), str(path), max_length, num_beams, device)


def _load_local(
    local: Path, shown: str, max_length: int | None, num_beams: int | None, device: str | None
) -> Captioner:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    if not (local / "config.json").is_file():
        raise ConfigError(
            f"{shown}: not a captioner directory (no config.json); run the captioner fine-tuning "
            "(python jobs/caption.py finetune --root DATASET) or point caption.rgb_checkpoint/"
            "caption.ir_checkpoint at a BLIP checkpoint saved with save_pretrained"
        )
    model = BlipForConditionalGeneration.from_pretrained(local)
    processor = BlipProcessor.from_pretrained(local)
    meta = _read_meta(local)
    model.to(device or _default_device())
    model.eval()
    return Captioner(
        model,
        processor,
        max_length=max_length or int(meta.get("max_length", 50)),
        num_beams=num_beams or int(meta.get("num_beams", 1)),
        meta=meta,
    )


def _read_meta(directory: Path) -> dict[str, Any]:
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        return {"kind": "checkpoint"}
    return json.loads(meta_path.read_text(encoding="utf-8"))


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def base_captioner(cfg: CaptionConfig, texts: Iterable[str]) -> Captioner:
    """The captioner fine-tuning starts from: ``cfg.base_checkpoint`` if set, else a tiny BLIP."""
    if cfg.base_checkpoint:
        return load_captioner(cfg.base_checkpoint, cfg.max_length, cfg.num_beams, cfg.s3_endpoint)
    captioner = build_tiny_captioner(cfg, texts)
    captioner.model.to(_default_device())
    return captioner
