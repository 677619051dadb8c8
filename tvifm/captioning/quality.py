"""Caption quality on SynthTri: parse captions back into attributes and score them against ground truth.

:func:`parse_attributes` reads a caption in the SynthTri / BLIP style ("a slim man with short black
straight hair, wearing a red striped short sleeve t - shirt, blue jeans and black sneakers, carrying a
grey backpack.") and returns the attribute names of ``attributes.json``. Colours are assigned to the item
they precede: the last colour word between the previous item and an item (hair, cap, upper garment,
lower garment, shoes, bag) is that item's colour. :func:`score_captions` compares parsed captions with
the ground truth per attribute; :func:`colour_word_rate` is the share of captions naming any colour (an IR
captioner must score 0).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvifm.errors import DatasetError
from tvifm.text.colour import has_colour

SHAPE_ATTRIBUTES = (
    "gender",
    "build",
    "hair_length",
    "hair_style",
    "upper_type",
    "upper_sleeve",
    "upper_pattern",
    "lower_type",
    "shoes_type",
    "bag",
    "hat",
)
COLOUR_ATTRIBUTES = (
    "hair_colour",
    "upper_colour",
    "lower_colour",
    "shoes_colour",
    "bag_colour",
    "hat_colour",
)
ATTRIBUTES = SHAPE_ATTRIBUTES + COLOUR_ATTRIBUTES
PARSE_COLOURS = frozenset(
    ("black", "white", "red", "blue", "green", "yellow", "grey", "gray", "brown", "pink", "purple", "blonde")
)

# (phrase, attribute, value); phrases are matched on hyphen-joined words, longest first.
_PHRASES: tuple[tuple[str, str, str], ...] = (
    ("man", "gender", "man"),
    ("guy", "gender", "man"),
    ("gentleman", "gender", "man"),
    ("woman", "gender", "woman"),
    ("lady", "gender", "woman"),
    ("girl", "gender", "woman"),
    ("slim", "build", "slim"),
    ("thin", "build", "slim"),
    ("slender", "build", "slim"),
    ("medium built", "build", "average"),
    ("average built", "build", "average"),
    ("average build", "build", "average"),
    ("medium build", "build", "average"),
    ("heavy", "build", "heavy"),
    ("stocky", "build", "heavy"),
    ("heavily built", "build", "heavy"),
    ("large build", "build", "heavy"),
    ("short", "length?", "short"),
    ("shoulder-length", "hair_length", "shoulder-length"),
    ("medium length", "hair_length", "shoulder-length"),
    ("long", "length?", "long"),
    ("lengthy", "length?", "long"),
    ("straight", "hair_style", "straight"),
    ("open", "hair_style", "straight"),
    ("curly", "hair_style", "curly"),
    ("ponytail", "hair_style", "ponytail"),
    ("hair", "item", "hair"),
    ("cap", "item", "hat"),
    ("plain", "upper_pattern", "plain"),
    ("striped", "upper_pattern", "striped"),
    ("t-shirt", "upper_type", "t-shirt"),
    ("tee shirt", "upper_type", "t-shirt"),
    ("shirt", "upper_type", "shirt"),
    ("button-up shirt", "upper_type", "shirt"),
    ("collared shirt", "upper_type", "shirt"),
    ("jacket", "upper_type", "jacket"),
    ("zip-up jacket", "upper_type", "jacket"),
    ("hoodie", "upper_type", "hoodie"),
    ("hooded sweatshirt", "upper_type", "hoodie"),
    ("coat", "upper_type", "coat"),
    ("long coat", "upper_type", "coat"),
    ("overcoat", "upper_type", "coat"),
    ("jeans", "lower_type", "jeans"),
    ("jeans pants", "lower_type", "jeans"),
    ("denim jeans", "lower_type", "jeans"),
    ("trousers", "lower_type", "trousers"),
    ("pants", "lower_type", "trousers"),
    ("formal pants", "lower_type", "trousers"),
    ("shorts", "lower_type", "shorts"),
    ("knee length shorts", "lower_type", "shorts"),
    ("skirt", "lower_type", "skirt"),
    ("knee-length skirt", "lower_type", "skirt"),
    ("sneakers", "shoes_type", "sneakers"),
    ("sports shoes", "shoes_type", "sneakers"),
    ("shoes", "shoes_type", "casual"),
    ("casual shoes", "shoes_type", "casual"),
    ("boots", "shoes_type", "boots"),
    ("ankle boots", "shoes_type", "boots"),
    ("sandals", "shoes_type", "sandals"),
    ("backpack", "bag", "backpack"),
    ("handbag", "bag", "handbag"),
    ("hand bag", "bag", "handbag"),
)
_SLEEVE_WORDS = {"short": "short", "half": "short", "long": "long", "full": "long"}
_ITEM_OF = {
    "hair": "hair",
    "hat": "hat",
    "upper_type": "upper",
    "lower_type": "lower",
    "shoes_type": "shoes",
    "bag": "bag",
}


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    attribute: str
    value: str


def parse_attributes(caption: str) -> dict[str, str | None]:
    """The attributes a caption states, keyed like ``attributes.json``; ``None`` where it says nothing.

    ``bag`` and ``hat`` are ``"none"`` when the caption mentions no bag or cap (as in the ground truth).
    """
    words = _words(caption)
    matches = _match_phrases(words)
    found: dict[str, str | None] = dict.fromkeys(ATTRIBUTES)
    found["bag"], found["hat"] = "none", "none"
    hair_at = next((m.start for m in matches if m.value == "hair" and m.attribute == "item"), None)
    upper = next((m for m in matches if m.attribute == "upper_type"), None)
    for m in matches:
        _apply(found, m, hair_at)
    if upper is not None:
        since = max((m.end for m in matches if m.attribute == "item" and m.end <= upper.start), default=0)
        found["upper_sleeve"] = _sleeve(words, upper, since)
    _assign_colours(found, words, matches)
    return found


def _words(caption: str) -> list[str]:
    text = re.sub(r"\s*-\s*", "-", caption.lower())
    return re.findall(r"[a-z]+(?:-[a-z]+)*", text)


def _match_phrases(words: list[str]) -> list[_Match]:
    table = sorted(((p.split(), a, v) for p, a, v in _PHRASES), key=lambda t: -len(t[0]))
    matches: list[_Match] = []
    pos = 0
    while pos < len(words):
        for tokens, attribute, value in table:
            if words[pos : pos + len(tokens)] == tokens:
                matches.append(_Match(pos, pos + len(tokens), attribute, value))
                pos += len(tokens)
                break
        else:
            pos += 1
    return matches


def _apply(found: dict[str, str | None], m: _Match, hair_at: int | None) -> None:
    if m.attribute == "item":
        if m.value == "hat":
            found["hat"] = "cap"
        return
    if m.attribute == "length?":
        # "short"/"long" name the hair length only before the word "hair" (else they are sleeves)
        if hair_at is not None and m.start < hair_at and found["hair_length"] is None:
            found["hair_length"] = m.value
        return
    if m.attribute == "hair_style" and found["hair_style"] == "ponytail":
        return
    if m.attribute in ("gender", "build", "upper_type", "lower_type", "shoes_type", "upper_pattern"):
        if found[m.attribute] is None:
            found[m.attribute] = m.value
        return
    found[m.attribute] = m.value


def _sleeve(words: list[str], upper: _Match, since: int) -> str | None:
    """The sleeve length named between the previous item and the upper garment, or right after it."""
    window = [*words[since : upper.start], "|", *words[upper.end : upper.end + 4]]
    for i, word in enumerate(window):
        head, _, tail = word.partition("-")
        after = window[i + 1] if i + 1 < len(window) else ""
        if head in _SLEEVE_WORDS and (tail or after).startswith("sleeve"):
            return _SLEEVE_WORDS[head]
    return None


def _assign_colours(found: dict[str, str | None], words: list[str], matches: list[_Match]) -> None:
    previous_end = 0
    for m in matches:
        item = _ITEM_OF.get(m.value if m.attribute == "item" else m.attribute)
        if item is None:
            continue
        colours = [w for w in words[previous_end : m.start] if w in PARSE_COLOURS]
        key = f"{item}_colour"
        if colours and found.get(key) is None:
            found[key] = _canonical_colour(colours[-1])
        previous_end = m.end


def _canonical_colour(word: str) -> str:
    return "grey" if word == "gray" else word


@dataclass
class QualityReport:
    """Per-attribute accuracy of captions against ground truth, and the share naming any colour."""

    captions: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    colour_word_rate: float = 0.0

    def colour_accuracy(self) -> float:
        """Mean accuracy over the colour attributes that were scored."""
        scored = [self.accuracy[a] for a in COLOUR_ATTRIBUTES if a in self.accuracy]
        return sum(scored) / len(scored) if scored else 0.0

    def shape_accuracy(self) -> float:
        """Mean accuracy over the colour-free attributes."""
        scored = [self.accuracy[a] for a in SHAPE_ATTRIBUTES if a in self.accuracy]
        return sum(scored) / len(scored) if scored else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "captions": self.captions,
            "accuracy": self.accuracy,
            "counts": self.counts,
            "colour_word_rate": self.colour_word_rate,
            "colour_accuracy": self.colour_accuracy(),
            "shape_accuracy": self.shape_accuracy(),
        }


def score_captions(
    captions: Mapping[str, str],
    truth: Mapping[int, Mapping[str, Any]],
    attributes: Iterable[str] = ATTRIBUTES,
) -> QualityReport:
    """Score ``{image rel path: caption}`` against ``truth`` ({pid: attributes}).

    The identity of an image is its SYSU-layout folder (``camN/PPPP/...``). A colour attribute is scored
    only on identities that have the item (a hat colour only for people wearing a cap).
    """
    hits: dict[str, int] = {}
    counts: dict[str, int] = {}
    for rel, text in captions.items():
        parsed = parse_attributes(text)
        expected = truth[pid_of(rel)]
        for name in attributes:
            if expected.get(name) is None:
                continue
            counts[name] = counts.get(name, 0) + 1
            hits[name] = hits.get(name, 0) + int(parsed.get(name) == expected[name])
    accuracy = {name: hits[name] / counts[name] for name in counts}
    rate = colour_word_rate(captions.values())
    return QualityReport(captions=len(captions), accuracy=accuracy, counts=counts, colour_word_rate=rate)


def colour_word_rate(captions: Iterable[str]) -> float:
    """Share of ``captions`` that name at least one colour (0.0 for no captions)."""
    texts = list(captions)
    return sum(has_colour(t) for t in texts) / len(texts) if texts else 0.0


def pid_of(rel: str) -> int:
    """Identity number of a SYSU-layout relative path ``camN/PPPP/NNNN.jpg``."""
    parts = rel.replace("\\", "/").split("/")
    if len(parts) < 3 or not parts[-2].isdigit():
        raise DatasetError(f"{rel!r} is not a SYSU-layout image path camN/PPPP/NNNN.jpg")
    return int(parts[-2])


def read_truth(root: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """The ground-truth attributes of a SynthTri root (``attributes.json``) keyed by identity number."""
    path = Path(root) / "attributes.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DatasetError(
            "no attributes.json: caption quality needs a SynthTri root (see tvifm.data.synth.generate)",
            path=str(path),
        ) from err
    return {int(pid): attrs for pid, attrs in data.items()}
