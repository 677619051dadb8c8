"""Captioner fine-tuning (docs/design.md, "The method"): an RGB captioner and an IR captioner per dataset.

* RGB captioner: (visible training image, its description from the Tri- sidecars).
* IR captioner: every IR training image is paired with a visible image of the same identity; the target
  is that visible image's description (``caption.ir_text=sidecar``) or the fine-tuned RGB captioner's
  caption of it (``caption.ir_text=captioner``, the paper's recipe), with every colour word stripped by
  :func:`tvifm.text.colour.strip_colours`.

Both are trained with teacher forcing (BLIP's language-modelling loss, the decoder start token ``[DEC]``
in place of ``[CLS]`` as in :meth:`BlipForConditionalGeneration.generate`), AdamW with linear warm-up and
cosine decay, optional horizontal flips. Each captioner is saved with :meth:`Captioner.save` to
``<captioner_dir>/rgb`` and ``<captioner_dir>/ir`` (local or ``s3://``). Unreadable images are skipped and
reported, never fatal.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from tvifm.captioning.model import Captioner, base_captioner
from tvifm.data import storage
from tvifm.data.base import DatasetSplits, Sample
from tvifm.data.images import SkipReport, read_image_or_skip
from tvifm.data.registry import load_dataset
from tvifm.data.sidecars import TextIndex, load_text_for
from tvifm.errors import DatasetError
from tvifm.text.colour import strip_colours

if TYPE_CHECKING:
    import torch

    from tvifm.captioning.config import CaptionConfig
    from tvifm.config.schema import Config

log = logging.getLogger(__name__)
CAPTIONER_NAMES = {"visible": "rgb", "ir": "ir"}


@dataclass(frozen=True)
class TrainPair:
    """One training example: an image file and the caption the captioner should produce for it."""

    path: str
    text: str


@dataclass
class FinetuneResult:
    """What one fine-tuning run produced for one modality."""

    modality: str
    directory: str
    pairs: int
    steps: int
    final_loss: float
    seconds: float
    skipped: SkipReport = field(default_factory=SkipReport)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``tvifm caption-finetune`` prints)."""
        return {
            "modality": self.modality,
            "directory": self.directory,
            "pairs": self.pairs,
            "steps": self.steps,
            "final_loss": round(self.final_loss, 4),
            "seconds": round(self.seconds, 1),
            "skipped": self.skipped.to_dict(),
        }


def rgb_pairs(samples: Sequence[Sample], text: TextIndex) -> list[TrainPair]:
    """(visible image, description) for every visible sample that has a caption."""
    pairs = []
    for sample in samples:
        caption = text.caption(sample)
        if caption is not None and caption.description.strip():
            pairs.append(TrainPair(sample.path, caption.description))
    return pairs


def ir_pairs(
    ir_samples: Sequence[Sample],
    visible_samples: Sequence[Sample],
    describe: Callable[[Sample], str | None],
    seed: int = 0,
) -> list[TrainPair]:
    """(IR image, colour-free description of a random visible image of the same identity).

    ``describe`` gives the description of a visible sample (sidecar text or a captioner's output); IR
    images of identities without any described visible image are left out.
    """
    rng = random.Random(seed)
    by_pid: dict[int, list[Sample]] = {}
    for sample in visible_samples:
        by_pid.setdefault(sample.pid, []).append(sample)
    pairs = []
    for sample in ir_samples:
        candidates = by_pid.get(sample.pid, [])
        if not candidates:
            continue
        text = describe(rng.choice(candidates))
        cleaned = strip_colours(text) if text else ""
        if cleaned:
            pairs.append(TrainPair(sample.path, cleaned))
    return pairs


def load_pixels(
    captioner: Captioner, pairs: Sequence[TrainPair], report: SkipReport, progress: bool = True
) -> tuple[torch.Tensor, list[str]]:
    """Decode and preprocess every training image once; unreadable ones are skipped into ``report``."""
    import torch

    tensors, texts = [], []
    chunk = 64
    for start in tqdm(range(0, len(pairs), chunk), desc="images", unit="batch", disable=not progress):
        images, kept = [], []
        for pair in pairs[start : start + chunk]:
            image = read_image_or_skip(pair.path, report)
            if image is not None:
                images.append(image)
                kept.append(pair.text)
        if images:
            tensors.append(captioner.pixel_values(images))
            texts.extend(kept)
    if not texts:
        raise DatasetError("no readable training image: every image of the training set was skipped")
    return torch.cat(tensors), texts


def train_captioner(
    captioner: Captioner,
    pixels: torch.Tensor,
    texts: Sequence[str],
    cfg: CaptionConfig,
    desc: str = "captioner",
    progress: bool = True,
) -> tuple[int, float]:
    """Fine-tune ``captioner`` in place on (pixels[i], texts[i]).

    Returns the number of steps and the mean loss of the last 10% of them.
    """
    import torch

    tokens = captioner.processor.tokenizer(
        list(texts), padding=True, truncation=True, max_length=captioner.max_length, return_tensors="pt"
    )
    steps = _num_steps(cfg, len(texts))
    model = captioner.model
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _warmup_cosine(steps, cfg.warmup_fraction))
    generator = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    for _ in bar:
        index = torch.randint(0, len(texts), (min(cfg.batch_size, len(texts)),), generator=generator)
        loss = _step(
            captioner, pixels[index], tokens["input_ids"][index], tokens["attention_mask"][index], cfg
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    tail = losses[-max(1, steps // 10) :]
    return steps, sum(tail) / len(tail)


def _num_steps(cfg: CaptionConfig, examples: int) -> int:
    if cfg.epochs > 0:
        return max(1, math.ceil(cfg.epochs * examples / cfg.batch_size))
    return cfg.steps


def _warmup_cosine(steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _step(
    captioner: Captioner, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, cfg: CaptionConfig
) -> torch.Tensor:
    import torch

    device = captioner.device
    if cfg.flip:
        flip = torch.rand(pixels.shape[0], 1, 1, 1) < 0.5
        pixels = torch.where(flip, pixels.flip(-1), pixels)
    inputs = ids.clone()
    inputs[:, 0] = captioner.model.config.text_config.bos_token_id
    labels = inputs.masked_fill(mask == 0, -100)
    out = captioner.model(
        pixel_values=pixels.to(device),
        input_ids=inputs.to(device),
        attention_mask=mask.to(device),
        labels=labels.to(device),
    )
    return out.loss


def finetune_modality(
    modality: str,
    pairs: Sequence[TrainPair],
    cfg: CaptionConfig,
    progress: bool = True,
) -> tuple[Captioner, FinetuneResult]:
    """Build the base captioner (tokenizer trained on the targets for the tiny preset) and fine-tune it."""
    import torch

    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    captioner = base_captioner(cfg, (p.text for p in pairs))
    report = SkipReport()
    pixels, texts = load_pixels(captioner, pairs, report, progress)
    steps, loss = train_captioner(captioner, pixels, texts, cfg, f"finetune {modality}", progress)
    seconds = time.perf_counter() - started
    result = FinetuneResult(modality, "", len(texts), steps, loss, seconds, report)
    return captioner, result


def finetune(
    root: str,
    cfg: Config,
    ccfg: CaptionConfig,
    modalities: Sequence[str] = ("visible", "ir"),
    progress: bool = True,
) -> list[FinetuneResult]:
    """Fine-tune the RGB and/or IR captioner on the training split of the dataset at ``root``.

    Captioners are written to ``<caption.captioner_dir>/rgb`` and ``/ir``; with ``caption.ir_text=
    captioner`` the RGB captioner is trained first (or loaded from there) to describe the visible images.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(ccfg.threads)
    try:
        splits = load_dataset(cfg.data.dataset, storage.local_dataset(root, ccfg.s3_endpoint), cfg.data.trial)
        text = load_text_for(splits)
        return _finetune_all(splits, text, ccfg, modalities, progress)
    finally:
        torch.set_num_threads(threads)


def _finetune_all(
    splits: DatasetSplits, text: TextIndex, ccfg: CaptionConfig, modalities: Sequence[str], progress: bool
) -> list[FinetuneResult]:
    results = []
    rgb: Captioner | None = None
    for modality in ("visible", "ir"):
        if modality not in modalities:
            continue
        if modality == "visible":
            pairs = rgb_pairs(splits.train_visible, text)
        else:
            describe = _describer(text, ccfg, rgb)
            pairs = ir_pairs(splits.train_ir, splits.train_visible, describe, ccfg.seed)
        if not pairs:
            raise DatasetError(
                f"no {modality} training image has a caption under {splits.root}/Text; the captioner needs "
                "the Tri- sidecars (caption_dict_*.json) of the training images",
            )
        captioner, result = finetune_modality(modality, pairs, ccfg, progress)
        result.directory = save_captioner(captioner, ccfg, modality, result)
        if modality == "visible":
            rgb = captioner
        results.append(result)
        log.info(
            "%s captioner: %d pairs, %d steps, loss %.3f",
            modality,
            result.pairs,
            result.steps,
            result.final_loss,
        )
    return results


def _describer(text: TextIndex, ccfg: CaptionConfig, rgb: Captioner | None) -> Callable[[Sample], str | None]:
    if ccfg.ir_text == "sidecar":

        def from_sidecar(sample: Sample) -> str | None:
            caption = text.caption(sample)
            return caption.description if caption else None

        return from_sidecar
    captioner = rgb or _load_saved_rgb(ccfg)
    cache: dict[str, str | None] = {}

    def from_captioner(sample: Sample) -> str | None:
        if sample.path not in cache:
            image = read_image_or_skip(sample.path, SkipReport())
            cache[sample.path] = captioner.caption([image])[0] if image is not None else None
        return cache[sample.path]

    return from_captioner


def _load_saved_rgb(ccfg: CaptionConfig) -> Captioner:
    from tvifm.captioning.model import load_captioner

    path = ccfg.rgb_checkpoint or storage.join(ccfg.captioner_dir, "rgb")
    return load_captioner(path, endpoint=ccfg.s3_endpoint)


def save_captioner(captioner: Captioner, ccfg: CaptionConfig, modality: str, result: FinetuneResult) -> str:
    """Save to ``<captioner_dir>/<rgb|ir>`` (uploading when it is ``s3://``); returns the directory URI."""
    target = storage.join(ccfg.captioner_dir, CAPTIONER_NAMES[modality])
    extra: dict[str, Any] = {
        "modality": modality,
        "pairs": result.pairs,
        "steps": result.steps,
        "final_loss": result.final_loss,
        "skipped": result.skipped.to_dict(),
    }
    if not storage.is_s3(target):
        captioner.save(target, extra)
        return str(Path(target))
    with tempfile.TemporaryDirectory() as tmp:
        captioner.save(tmp, extra)
        storage.upload_tree(tmp, target, ccfg.s3_endpoint)
    return target
