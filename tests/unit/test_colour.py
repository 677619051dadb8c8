"""The colour-word filter on hand-made phrases and on the real BLIP captions of the Tri- datasets."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tvifm.text.colour import (
    ATTACHED,
    COLOUR_NOUNS,
    CORE_COLOURS,
    HAIR_TONES,
    ISH_COLOURS,
    NAMED_SHADES,
    TONES,
    colour_terms,
    has_colour,
    strip_colours,
)

TRI_CAPTIONS = Path(__file__).resolve().parents[3] / "shared" / "data" / "tri-captions"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a man with short black hair wearing a red t - shirt", "a man with short hair wearing a t - shirt"),
        ("a dark blue colour full sleeve top", "a full sleeve top"),
        ("light pastel blue jeans and navy shoes", "jeans and shoes"),
        ("a maroon jacket with a multi - color scarf", "a jacket with a scarf"),
        ("a red-coloured bag", "a bag"),
        ("an olive - brown coat", "a coat"),
        ("an orange bag", "a bag"),
        ("a black overcoat", "an overcoat"),
        ("a navy blue and white striped shirt", "a striped shirt"),
        ("a man dressed in black.", "a man dressed."),
        ("a hooded jacket in a sky blue color, and denim jeans", "a hooded jacket, and denim jeans"),
        ("a top that is dark in color, paired with jeans", "a top that is paired with jeans"),
        ("with brown, long hair", "with long hair"),
        ("a woman with dark hair", "a woman with hair"),
        ("a lady with honey blonde hair", "a lady with hair"),
        ("a sleeveless blacktop", "a sleeveless top"),
        ("a greyish hoodie", "a hoodie"),
    ],
)
def test_strip_colours_removes_whole_colour_phrases(text: str, expected: str) -> None:
    assert strip_colours(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a man standing in front of a blackboard",
        "a light jacket and a wine bottle",
        "a woman carrying a baby in her arms",
        "a man with a shaved head and a dark jacket",
        "denim jeans and sneakers",
        "a red-haired redhead near a greenhouse",
    ],
)
def test_words_that_only_look_like_colours_are_kept(text: str) -> None:
    kept = strip_colours(text)
    for word in ("blackboard", "light", "wine", "baby", "dark", "denim", "redhead", "greenhouse"):
        if re.search(rf"\b{word}\b", text):
            assert re.search(rf"\b{word}\b", kept), (word, kept)


def test_capitalisation_and_spelling_variants() -> None:
    assert strip_colours("A Gray Jacket and a GREEN cap") == "A Jacket and a cap"
    assert colour_terms("a Grey coloured coat") == ["Grey", "coloured"]
    assert not has_colour("a man in a jacket")


@pytest.fixture(scope="module")
def real_pairs() -> list[tuple[str, str]]:
    """(caption, filtered caption) for every real Tri- caption and LLM rephrasing (computed once)."""
    if not TRI_CAPTIONS.is_dir():
        pytest.skip(f"the real Tri- captions are not at {TRI_CAPTIONS}")
    texts: set[str] = set()
    for path in sorted(TRI_CAPTIONS.rglob("*.json")):
        for value in json.loads(path.read_text(encoding="utf-8")).values():
            if isinstance(value, dict):
                texts.update([value["description"], value.get("aug_description") or ""])
            else:
                texts.update(value)
    return [(t, strip_colours(t)) for t in sorted(texts) if t]


def test_no_colour_term_survives_on_the_real_captions(real_pairs: list[tuple[str, str]]) -> None:
    coloured = [(t, f) for t, f in real_pairs if has_colour(t)]
    assert len(coloured) > 1000  # the corpus really is full of colours
    survivors = Counter(w.lower() for _, filtered in coloured for w in colour_terms(filtered))
    assert survivors == Counter()


def test_non_colour_content_stays_on_the_real_captions(real_pairs: list[tuple[str, str]]) -> None:
    """Only colour vocabulary and the article/preposition of a removed colour phrase ever disappear."""
    removable = CORE_COLOURS | ISH_COLOURS | COLOUR_NOUNS | TONES | NAMED_SHADES | ATTACHED | HAIR_TONES
    removable |= {"in", "of", "a", "an", "the", "and", "or", "blacktop"}
    lost: Counter[str] = Counter()
    for text, filtered in real_pairs:
        before = Counter(re.findall(r"[a-z]+", text.lower()))
        after = Counter(re.findall(r"[a-z]+", filtered.lower()))
        lost.update({w: n for w, n in (before - after).items() if w not in removable})
    assert lost == Counter()
    garments = ("shirt", "jeans", "jacket", "shoes", "hair", "bag", "backpack", "cap", "coat", "skirt")
    for word in garments:
        total_before = sum(len(re.findall(rf"\b{word}\b", t.lower())) for t, _ in real_pairs)
        total_after = sum(len(re.findall(rf"\b{word}\b", f.lower())) for _, f in real_pairs)
        assert total_after == total_before, word


def test_ir_captions_without_colours_are_unchanged() -> None:
    path = TRI_CAPTIONS / "sysu" / "Text" / "Blip_IR" / "id_caption_map_Blip_IR.json"
    if not path.is_file():
        pytest.skip("SYSU IR captions not available")
    texts = [t for captions in json.loads(path.read_text()).values() for t in captions]
    unchanged = [t for t in texts if not has_colour(t)]
    assert unchanged
    # the filter only tidies whitespace around punctuation on colour-free text
    assert all(strip_colours(t) == re.sub(r"\s+", " ", t).strip().replace(" ,", ",") for t in unchanged[:500])
