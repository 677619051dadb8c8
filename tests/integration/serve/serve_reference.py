"""Offline references for the service tests: the same model, gallery and queries through
:mod:`tvifm.eval.embeddings`, and helpers to send SynthTri images to the service."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tvifm.data.base import Sample
from tvifm.data.registry import load_dataset
from tvifm.data.sidecars import TextIndex, all_samples, load_text_for
from tvifm.eval.embeddings import build_query_bank, gallery_embeddings, own_texts, witness_texts
from tvifm.models import load_run
from tvifm.models.tvifm import TVIFM

ATOL = 1e-4
T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC).timestamp()


def item_id(sample: Sample, prefix: str = "") -> str:
    """The gallery id the tests give a SynthTri image."""
    return prefix + sample.rel.replace("/", "-")


def metadata_of(sample: Sample) -> dict[str, Any]:
    """The metadata the tests give a SynthTri image: identity, camera and a capture time (camera hour,
    identity minute, image second after 2024-05-01T00:00Z) stored as epoch seconds for even identities
    and as ISO-8601 text for odd ones."""
    seconds = T0 + 3600 * sample.cam + 60 * sample.pid + int(Path(sample.rel).stem)
    iso = dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")
    return {"pid": sample.pid, "camera": sample.cam, "timestamp": iso if sample.pid % 2 else seconds}


def b64(sample: Sample) -> str:
    """The image file of a sample as base64."""
    return base64.b64encode(Path(sample.path).read_bytes()).decode()


@dataclass
class Synth:
    """The samples and captions of the test SynthTri."""

    samples: list[Sample]
    text: TextIndex

    @classmethod
    def load(cls, root: Path) -> Synth:
        splits = load_dataset("synth", root)
        return cls(all_samples(splits), load_text_for(splits))

    def of(self, modality: str, cams: tuple[int, ...] | None = None) -> list[Sample]:
        return [s for s in self.samples if s.modality == modality and (cams is None or s.cam in cams)]


@dataclass
class Offline:
    """A run loaded in the test process, embedding exactly as offline evaluation does."""

    model: TVIFM
    size: list[int]

    @classmethod
    def load(cls, run_dir: Path) -> Offline:
        loaded = load_run(run_dir, "cpu")
        return cls(loaded.model, list(loaded.config.data.image_size))

    def gallery(self, samples: list[Sample]) -> torch.Tensor:
        return gallery_embeddings(self.model, samples, self.size)

    def queries(self, queries: list[Sample], pool: list[Sample], text: TextIndex) -> dict[str, Any]:
        """Query embeddings per mode plus the texts the offline protocol uses for them."""
        modes = ("ir", "text", "fusion", "ensemble")
        bank = build_query_bank(self.model, queries, pool, text, self.size, modes=modes, seed=0)
        return {
            "embeddings": bank.embeddings,
            "descriptions": witness_texts(queries, pool, text, seed=0),
            "captions": own_texts(queries, text),
        }


def scores_by_id(query: torch.Tensor, ids: list[str], gallery: torch.Tensor) -> dict[str, float]:
    """Offline inner products of one query with every gallery item."""
    return dict(zip(ids, (gallery @ query).tolist(), strict=True))


def assert_same_ranking(hits: list[dict[str, Any]], expected: dict[str, float]) -> None:
    """The service ranked ``expected``'s items (other items may interleave) as offline, scores equal.

    Items whose offline scores differ by less than the numeric tolerance may swap; otherwise the order
    must be identical.
    """
    mine = [h for h in hits if h["id"] in expected]
    assert {h["id"] for h in mine} == set(expected)
    order = sorted(expected, key=lambda i: -expected[i])
    for pos, hit in enumerate(mine):
        assert hit["score"] == pytest.approx(expected[hit["id"]], abs=ATOL)
        assert hit["score"] == pytest.approx(expected[order[pos]], abs=ATOL)
    gaps = [expected[a] - expected[b] for a, b in itertools.pairwise(order)]
    if min(gaps, default=1.0) > 2 * ATOL:
        assert [h["id"] for h in mine] == order


def add_items(
    client: httpx.Client, samples: list[Sample], prefix: str, modality: str, chunk: int = 16
) -> None:
    """Add samples to the gallery, alternating JSON and multipart requests of ``chunk`` items."""
    for n, start in enumerate(range(0, len(samples), chunk)):
        part = samples[start : start + chunk]
        if n % 2 == 0:
            items = [
                {"id": item_id(s, prefix), "image": b64(s), "modality": modality, "metadata": metadata_of(s)}
                for s in part
            ]
            response = client.post("/v1/gallery", json={"items": items})
        else:
            files = [("images", (Path(s.path).name, Path(s.path).read_bytes(), "image/jpeg")) for s in part]
            data = {
                "ids": [item_id(s, prefix) for s in part],
                "modality": modality,
                "metadata": [json.dumps(metadata_of(s)) for s in part],
            }
            response = client.post("/v1/gallery", files=files, data=data)
        assert response.status_code == 200, response.text
        assert response.json()["added"] == len(part)
