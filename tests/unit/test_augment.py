"""Augmenters: the rule-based default keeps every attribute; the LLM path runs on a tiny causal LM."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tvifm.captioning.quality import parse_attributes
from tvifm.data.synth import sample_identities
from tvifm.data.synth_text import caption
from tvifm.errors import ConfigError
from tvifm.text.augment import RuleAugmenter, build_augmenter, move_accessory_clause
from tvifm.text.colour import CORE_COLOURS, has_colour
from tvifm.text.llm import LLMAugmenter, clean_output, is_garbage

TRI_CAPTIONS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tri-captions"
_GARMENT_WORDS = (
    "shirt t jacket coat hoodie top jeans pants trousers shorts skirt dress shoes sneakers boots sandals "
    "bag backpack handbag cap hat socks scarf stole sweater blazer kurta leggings footwear hair"
)
GARMENTS = _GARMENT_WORDS.split()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest, and never stall on a busy machine, with one torch thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _synth_captions(n_ids: int = 60) -> list[str]:
    import numpy as np

    texts = []
    for person in sample_identities(n_ids, seed=3):
        for index in range(4):
            rng = np.random.default_rng([person.pid, index])
            texts.append(caption(person.shape, person.colours, rng))
    return texts


def test_rule_augmenter_keeps_every_synthtri_attribute() -> None:
    texts = _synth_captions()
    augmented = RuleAugmenter(seed=0).augment(texts)
    assert len(augmented) == len(texts)
    for before, after in zip(texts, augmented, strict=True):
        assert parse_attributes(after) == parse_attributes(before), (before, after)
    changed = sum(a != b for a, b in zip(texts, augmented, strict=True))
    assert changed >= 0.9 * len(texts)


def test_rule_augmenter_is_deterministic_and_seeded() -> None:
    texts = _synth_captions(12)
    assert RuleAugmenter(seed=1).augment(texts) == RuleAugmenter(seed=1).augment(texts)
    assert RuleAugmenter(seed=1).augment(texts) != RuleAugmenter(seed=2).augment(texts)


def test_rule_augmenter_on_real_captions_keeps_colour_and_garment_words() -> None:
    path = TRI_CAPTIONS / "regdb" / "Text" / "Blip_RGB" / "caption_llm_dict_Blip_RGB.json"
    if not path.is_file():
        pytest.skip("real RegDB captions not available")
    texts = [v["description"] for v in json.loads(path.read_text()).values()][:1500]
    augmented = RuleAugmenter(seed=0).augment(texts)
    keep = CORE_COLOURS | set(GARMENTS)
    for before, after in zip(texts, augmented, strict=True):
        words_before = Counter(w for w in re.findall(r"[a-z]+", before.lower()) if w in keep)
        words_after = Counter(w for w in re.findall(r"[a-z]+", after.lower()) if w in keep)
        assert words_after == words_before, (before, after)
    assert sum(a != b for a, b in zip(texts, augmented, strict=True)) >= 0.8 * len(texts)


def test_ir_augmentation_never_names_a_colour() -> None:
    texts = ["a man with short black hair wearing a red t - shirt and blue jeans"]
    for kind in ("rule", "none"):
        out = build_augmenter(kind).augment(texts, modality="ir")
        assert not has_colour(out[0])
        assert "t - shirt" in out[0] and "jeans" in out[0]


def test_accessory_clause_moves_next_to_the_subject() -> None:
    text = "a man with short hair, wearing a shirt, jeans and shoes, carrying a grey backpack."
    assert move_accessory_clause(text) == (
        "a man with short hair, carrying a grey backpack, wearing a shirt, jeans and shoes."
    )
    two_sentences = "a man with short hair, wearing a shirt, jeans. he is carrying a bag."
    assert move_accessory_clause(two_sentences) == two_sentences


def test_unknown_or_incomplete_augmenter_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="rule, llm, none"):
        build_augmenter("vicuna")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="llm_checkpoint"):
        build_augmenter("llm")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  A guy with short hair in a jacket.\nDescription: more", "A guy with short hair in a jacket."),
        ('Rephrased: "a lady in a coat and boots"', "a lady in a coat and boots"),
        ("\n\n", ""),
    ],
)
def test_clean_output(raw: str, expected: str) -> None:
    assert clean_output(raw) == expected


def test_garbage_detection() -> None:
    original = "a man with short hair wearing a jacket"
    assert is_garbage("man man man man man", original)
    assert is_garbage("## 12 ## 34 ## 56 ##", original)
    assert is_garbage("ok", original)
    assert is_garbage("Rephrase the person's description using similar words", original)
    assert not is_garbage("a guy with short hair dressed in a jacket", original)


def test_llm_augmenter_runs_batched_and_falls_back_on_garbage(tiny_lm: Path) -> None:
    captions = [
        "a man with short black hair wearing a red jacket and blue jeans.",
        "a lady with long hair in a coat.",
        "a guy in shorts and sandals.",
    ]
    augmenter = LLMAugmenter(str(tiny_lm), temperature=0.7, max_new_tokens=12, batch_size=2)
    out = augmenter.augment(captions, modality="visible")
    assert len(out) == len(captions) and all(isinstance(t, str) and t for t in out)
    assert augmenter.stats.generated == len(captions)
    # an untrained LM produces garbage: every output must have fallen back to its caption
    for text, original in zip(out, captions, strict=True):
        assert text == original or not is_garbage(text, original)
    ir = augmenter.augment(captions, modality="ir")
    assert not any(has_colour(t) for t in ir)
    assert "jacket" in ir[0] and "jeans" in ir[0]


def test_llm_augmenter_uses_a_clean_generation(tiny_lm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    augmenter = LLMAugmenter(str(tiny_lm), max_new_tokens=4)
    monkeypatch.setattr(
        augmenter, "_generate", lambda batch: [" a guy in a red coat.\nDescription: x"] * len(batch)
    )
    assert augmenter.augment(["a man in a red coat."]) == ["a guy in a red coat."]
    assert augmenter.augment(["a man in a red coat."], modality="ir") == ["a guy in a coat."]
    assert augmenter.stats.fallbacks == 0


def test_llm_augmenter_reports_a_bad_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="save_pretrained"):
        LLMAugmenter(str(tmp_path / "missing"))


def test_augment_sidecars_gives_every_caption_a_rephrasing_once(small_synth, tmp_path) -> None:
    import shutil

    from tvifm.data.registry import load_dataset
    from tvifm.data.sidecars import all_samples, load_text_for
    from tvifm.text.augment import augment_sidecars
    from tvifm.text.colour import has_colour

    root = shutil.copytree(small_synth, tmp_path / "synth")
    written = augment_sidecars(str(root))
    splits = load_dataset("synth", root)
    text = load_text_for(splits)
    samples = all_samples(splits)
    assert written == {m: sum(1 for s in samples if s.modality == m) for m in ("visible", "ir")}
    captions = [(s, text.caption(s)) for s in samples]
    assert all(c is not None and c.aug_description for _, c in captions)
    assert not any(has_colour(c.aug_description) for s, c in captions if s.modality == "ir")
    changed = sum(c.aug_description != c.description for _, c in captions)
    assert changed > 0.8 * len(captions)
    assert augment_sidecars(str(root)) == {}  # already augmented: nothing rewritten


def test_rephrasing_novelty_counts_words_the_persons_captions_never_use() -> None:
    from tvifm.text.augment import rephrasing_novelty

    by_identity = {
        1: [("a man in red jeans", "a guy in red jeans"), ("a man wearing red jeans", None)],
        2: [("a lady in a blue coat", "a lady in a blue coat")],
    }
    got = rephrasing_novelty(by_identity)
    # "guy" is the one word of identity 1's rephrasing none of its descriptions uses (1 of 5 words);
    # identity 2's rephrasing repeats its description.
    assert got["new_words"] == pytest.approx((1 / 5 + 0) / 2)
    assert got["caption_vs_rephrasing"] == pytest.approx((4 / 6 + 1) / 2)  # {a, in, red, jeans} of 6
    assert got["caption_vs_caption"] == pytest.approx(4 / 6)
    assert got["rephrasings"] == 2 and got["people"] == 2
    with pytest.raises(ConfigError, match="no caption has a rephrasing"):
        rephrasing_novelty({1: [("a man", None)]})
