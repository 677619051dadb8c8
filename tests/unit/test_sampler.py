"""The PK sampler: batch composition, determinism per epoch, disjoint rank shards."""

from __future__ import annotations

from collections import Counter

import pytest

from tvifm.data.sampler import PKSampler
from tvifm.errors import ConfigError, DatasetError


def _labels(ids: int, per_id: int) -> list[int]:
    return [pid for pid in range(100, 100 + ids) for _ in range(per_id)]


VIS, IR = _labels(12, 6), _labels(12, 3)


def test_batches_hold_p_identities_with_k_images_per_modality() -> None:
    sampler = PKSampler(VIS, IR, ids_per_batch=4, images_per_modality=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(VIS) // 16
    for batch in batches:
        assert len(batch) == 16
        vis_ids = Counter(VIS[v] for v, _ in batch)
        assert len(vis_ids) == 4 and set(vis_ids.values()) == {4}
        assert all(VIS[v] == IR[i] for v, i in batch)  # pairs share the identity
        # enough visible images: drawn without replacement within an identity
        assert len({v for v, _ in batch}) == 16


def test_same_epoch_same_batches_other_epoch_differs() -> None:
    a = PKSampler(VIS, IR, 4, 2, seed=3)
    b = PKSampler(VIS, IR, 4, 2, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first


def test_every_identity_is_visited_each_epoch() -> None:
    sampler = PKSampler(VIS, IR, 4, 2, seed=0, batches_per_epoch=3)
    seen = {VIS[v] for batch in sampler for v, _ in batch}
    assert seen == set(VIS)


def test_rank_shards_are_disjoint_and_union_is_the_single_process_batch() -> None:
    single = list(PKSampler(VIS, IR, 4, 2, seed=5))
    shards = [list(PKSampler(VIS, IR, 4, 2, seed=5, rank=r, world_size=2)) for r in range(2)]
    for b, full in enumerate(single):
        r0, r1 = shards[0][b], shards[1][b]
        assert {VIS[v] for v, _ in r0}.isdisjoint({VIS[v] for v, _ in r1})
        assert sorted(r0 + r1) == sorted(full)


def test_identities_missing_a_modality_are_not_sampled() -> None:
    ir = [pid for pid in IR if pid != 100]
    seen = {VIS[v] for batch in PKSampler(VIS, ir, 4, 2) for v, _ in batch}
    assert 100 not in seen


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="divisible by the number of workers"):
        PKSampler(VIS, IR, 3, 2, world_size=2)
    with pytest.raises(DatasetError, match="at least 20 identities"):
        PKSampler(VIS, IR, 20, 2)
