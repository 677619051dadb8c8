"""Training data for both stages: paired visible/IR images with their texts, PK-sampled.

An item is one ``(visible_index, ir_index)`` pair of the same identity (see :class:`PKSampler`):
the visible image, its channel-augmented view, the IR image, the identity's class index and the two
captions. With probability ``text_aug_prob`` each caption is replaced by its rephrasing
(``aug_description``) when the sidecars have one. A corrupt image is reported once and replaced by
another image of the same identity and modality, so one bad file never stops training.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from tvifm.config.schema import Config
from tvifm.data.base import DatasetSplits, Sample, relabel
from tvifm.data.images import CorruptImageError, SkipReport, read_image
from tvifm.data.sampler import PKSampler
from tvifm.data.sidecars import TextIndex
from tvifm.data.transforms import to_training_tensor, train_transforms
from tvifm.errors import DatasetError


class ImageCache:
    """Decoded images resized to the training size, by path, read once when ``enabled`` (the training
    sets of the CPU default fit in memory: 6k images of 96x48 are 80 MB)."""

    def __init__(self, size: Sequence[int], enabled: bool = True) -> None:
        self.size = tuple(size)
        self.enabled = enabled
        self._images: dict[str, torch.Tensor] = {}

    def get(self, path: str) -> torch.Tensor:
        if not self.enabled:
            return to_training_tensor(read_image(path), self.size)
        if path not in self._images:
            self._images[path] = to_training_tensor(read_image(path), self.size)
        return self._images[path]


@dataclass
class TrainSource:
    """What a training stage reads: samples, class indices and texts."""

    visible: list[Sample]
    ir: list[Sample]
    labels: dict[int, int]  # dataset identity -> class index
    text: TextIndex | None

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def train_source(splits: DatasetSplits, text: TextIndex | None) -> TrainSource:
    """The training samples of a dataset (validation identities excluded) with contiguous labels."""
    if not splits.train_visible or not splits.train_ir:
        raise DatasetError(f"{splits.root}: the training split has no visible or no IR images")
    labels = relabel([*splits.train_visible, *splits.train_ir])
    return TrainSource(list(splits.train_visible), list(splits.train_ir), labels, text)


class PairedTrainSet(Dataset):
    """Items ``(v, i)`` -> visible, channel-augmented visible and IR tensors, label and captions."""

    def __init__(
        self,
        source: TrainSource,
        size: Sequence[int],
        *,
        pad: int = 4,
        flip: bool = True,
        channel_aug: bool = True,
        random_erasing: float = 0.0,
        text_aug_prob: float = 0.0,
        cache_images: bool = True,
        skipped: SkipReport | None = None,
    ) -> None:
        self.source = source
        self.tf = train_transforms(
            size, pad=pad, flip=flip, channel_aug=channel_aug, random_erasing=random_erasing
        )
        self.text_aug_prob = text_aug_prob
        self.cache = ImageCache(size, cache_images)
        self.skipped = skipped if skipped is not None else SkipReport()
        self._bad: set[str] = set()
        self._by_id: dict[tuple[str, int], list[int]] = defaultdict(list)
        for modality, samples in (("visible", source.visible), ("ir", source.ir)):
            for i, s in enumerate(samples):
                self._by_id[(modality, s.pid)].append(i)

    def __len__(self) -> int:
        return len(self.source.visible)

    def __getitem__(self, index: tuple[int, int]) -> dict[str, Any]:
        v, i = index
        vis_sample, vis_img = self._image("visible", v)
        ir_sample, ir_img = self._image("ir", i)
        return {
            "visible": self.tf["visible"](vis_img),
            "visible_ca": self.tf["visible_ca"](vis_img),
            "ir": self.tf["ir"](ir_img),
            "label": self.source.labels[vis_sample.pid],
            "visible_text": self._text(vis_sample),
            "ir_text": self._text(ir_sample),
        }

    def _image(self, modality: str, index: int) -> tuple[Sample, torch.Tensor]:
        samples = self.source.visible if modality == "visible" else self.source.ir
        candidates = [index] + [j for j in self._by_id[(modality, samples[index].pid)] if j != index]
        for j in candidates:
            sample = samples[j]
            if sample.path in self._bad:
                continue
            try:
                return sample, self.cache.get(sample.path)
            except CorruptImageError as err:
                self._bad.add(sample.path)
                self.skipped.add(sample.path, err.reason)
        raise DatasetError(f"identity {samples[index].pid} has no readable {modality} image left")

    def _text(self, sample: Sample) -> str:
        caption = self.source.text.caption(sample) if self.source.text is not None else None
        if caption is None:
            return ""
        if caption.aug_description and random.random() < self.text_aug_prob:
            return caption.aug_description
        return caption.description


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack image tensors and labels; keep captions as lists of strings."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], int):
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            batch[key] = values
    return batch


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed + worker_id)


def build_loader(
    cfg: Config,
    source: TrainSource,
    *,
    text_aug_prob: float,
    batches_per_epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    skipped: SkipReport | None = None,
) -> tuple[DataLoader, PKSampler]:
    """A DataLoader of PK batches for one rank, and its sampler (call ``set_epoch`` each epoch)."""
    d = cfg.data
    dataset = PairedTrainSet(
        source,
        d.image_size,
        pad=d.pad,
        flip=d.flip,
        channel_aug=d.channel_aug,
        random_erasing=d.random_erasing,
        text_aug_prob=text_aug_prob,
        cache_images=d.num_workers == 0,
        skipped=skipped,
    )
    sampler = PKSampler(
        [s.pid for s in source.visible],
        [s.pid for s in source.ir],
        d.ids_per_batch,
        d.images_per_modality,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
        batches_per_epoch=batches_per_epoch or None,
    )
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=d.num_workers,
        worker_init_fn=_seed_worker,
        persistent_workers=d.num_workers > 0,
    )
    return loader, sampler


def ensure_validation(splits: DatasetSplits, fraction: float, seed: int = 0) -> DatasetSplits:
    """Hold out ``fraction`` of the training identities for validation when the dataset has no val split.

    SYSU-MM01 and SynthTri ship ``exp/val_id.txt``; RegDB and LLCM do not, so a seeded random subset of
    their training identities (at least 2 when ``fraction > 0``) moves to ``val_*`` and out of training.
    """
    if splits.val_ids or fraction <= 0:
        return splits
    ids = splits.train_ids
    count = max(2, round(len(ids) * fraction))
    if count >= len(ids):
        raise DatasetError(f"{splits.root}: too few training identities ({len(ids)}) to hold out validation")
    rng = random.Random(seed)
    held = set(rng.sample(ids, count))
    return DatasetSplits(
        name=splits.name,
        root=splits.root,
        train_visible=[s for s in splits.train_visible if s.pid not in held],
        train_ir=[s for s in splits.train_ir if s.pid not in held],
        test_query=splits.test_query,
        test_gallery=splits.test_gallery,
        val_ids=sorted(held),
        val_visible=[s for s in splits.train_visible if s.pid in held],
        val_ir=[s for s in splits.train_ir if s.pid in held],
        skipped=splits.skipped,
    )
