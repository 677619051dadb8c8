"""PK sampling for cross-modality batches: P identities x (K visible + K IR images) each.

A global batch holds ``P`` identities; with ``world_size`` ranks each rank takes ``P / world_size`` of
them (identities ``rank::world_size``), so the ranks' shards are disjoint and their union is exactly the
batch a single process would see. The batch sequence depends only on ``(seed, epoch)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np

from tvifm.errors import ConfigError, DatasetError


class PKSampler:
    """Batch sampler yielding lists of ``(visible_index, ir_index)`` pairs, ``P/world_size * K`` long.

    Pair ``j`` of a batch holds the ``j``-th visible and the ``j``-th IR image drawn for one identity,
    so both modalities of a batch carry the same labels in the same order. Images of an identity are
    drawn without replacement while it has at least ``K`` of them, with replacement otherwise.
    """

    def __init__(
        self,
        visible_pids: Sequence[int],
        ir_pids: Sequence[int],
        ids_per_batch: int,
        images_per_modality: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batches_per_epoch: int | None = None,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not valid for world_size {world_size}")
        if ids_per_batch % world_size:
            raise ConfigError(
                f"data.ids_per_batch={ids_per_batch} must be divisible by the number of workers "
                f"({world_size}) so that every rank gets whole identities"
            )
        self.vis_by_id = _group(visible_pids)
        self.ir_by_id = _group(ir_pids)
        self.ids = sorted(set(self.vis_by_id) & set(self.ir_by_id))
        if len(self.ids) < ids_per_batch:
            raise DatasetError(
                f"PK sampling needs at least {ids_per_batch} identities with both visible and IR images, "
                f"found {len(self.ids)}; lower data.ids_per_batch or check the dataset"
            )
        self.p, self.k = ids_per_batch, images_per_modality
        self.seed, self.rank, self.world_size = seed, rank, world_size
        default = len(visible_pids) // (ids_per_batch * images_per_modality)
        self.batches_per_epoch = max(1, batches_per_epoch or default)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose (deterministic) batches the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for batch_ids in _identity_batches(self.ids, self.p, self.batches_per_epoch, rng):
            draws = [self._draw(pid, rng) for pid in batch_ids]  # every rank draws all: same RNG state
            mine = draws[self.rank :: self.world_size]
            yield [pair for pairs in mine for pair in pairs]

    def _draw(self, pid: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        vis = _choose(self.vis_by_id[pid], self.k, rng)
        ir = _choose(self.ir_by_id[pid], self.k, rng)
        return list(zip(vis, ir, strict=True))


def _group(pids: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for index, pid in enumerate(pids):
        groups[int(pid)].append(index)
    return groups


def _identity_batches(ids: list[int], p: int, count: int, rng: np.random.Generator) -> list[list[int]]:
    """``count`` batches of ``p`` distinct identities: chunks of successive shuffles of ``ids``."""
    batches: list[list[int]] = []
    while len(batches) < count:
        perm = [ids[i] for i in rng.permutation(len(ids))]
        batches.extend(perm[i : i + p] for i in range(0, len(perm) - p + 1, p))
    return batches[:count]


def _choose(indices: list[int], k: int, rng: np.random.Generator) -> list[int]:
    replace = len(indices) < k
    return [indices[i] for i in rng.choice(len(indices), size=k, replace=replace)]
