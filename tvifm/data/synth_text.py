"""Ground-truth captions of SynthTri images, in the style of the BLIP captions of the Tri- datasets.

Every caption states every attribute of the identity (gender, build, hair, cap if any, upper garment with
its sleeves and pattern, lower garment, shoes, bag if any). The wording varies from image to image
(synonyms, connectors, clause placement), drawn from the image's own random generator. A visible caption
names every colour; an IR caption is built from the same grammar without colours, so it holds no colour
word at all. Like the real BLIP captions, the text is lower case and hyphens are spaced (``t - shirt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from tvifm.data.synth import Colours, Shape

T = TypeVar("T")

_NOUN = {"man": ("man", "guy", "gentleman"), "woman": ("woman", "lady", "girl")}
_PRONOUN = {"man": ("he", "his"), "woman": ("she", "her")}
_BUILD_ADJ = {
    "slim": ("slim", "thin", "slender"),
    "average": ("medium built", "average built"),
    "heavy": ("heavy", "stocky", "heavily built"),
}
_BUILD_NOUN = {"slim": ("slim", "slender"), "average": ("average", "medium"), "heavy": ("heavy", "large")}
_HAIR_LENGTH = {
    "short": ("short",),
    "shoulder-length": ("shoulder - length", "medium length"),
    "long": ("long", "lengthy"),
}
_HAIR_STYLE = {"straight": ("straight", "open"), "curly": ("curly",)}
_SLEEVE_ADJ = {
    "short": ("short sleeve", "half sleeve", "short - sleeved", "half - sleeved"),
    "long": ("long sleeve", "full sleeve", "long - sleeved", "full - sleeved"),
}
_SLEEVES = {"short": ("short sleeves", "half sleeves"), "long": ("long sleeves", "full sleeves")}
_UPPER = {
    "t-shirt": ("t - shirt", "tee shirt"),
    "shirt": ("shirt", "button - up shirt", "collared shirt"),
    "jacket": ("jacket", "zip - up jacket"),
    "hoodie": ("hoodie", "hooded sweatshirt"),
    "coat": ("coat", "long coat", "overcoat"),
}
_LOWER = {
    "jeans": ("jeans", "jeans pants", "denim jeans"),
    "trousers": ("trousers", "pants", "formal pants"),
    "shorts": ("shorts", "knee length shorts"),
    "skirt": ("skirt", "knee - length skirt"),
}
_SINGULAR_LOWER = frozenset({"skirt"})
_SHOES = {
    "sneakers": ("sneakers", "sports shoes"),
    "casual": ("shoes", "casual shoes"),
    "boots": ("boots", "ankle boots"),
    "sandals": ("sandals",),
}
_VERB = ("wearing", "dressed in", "sporting", "in")
_CONNECTORS = (
    (", ", " and "),
    (" paired with ", " and "),
    (" and ", ", paired with "),
    (" along with ", " and "),
    (" with ", " and "),
    (", ", ", paired with "),
)


def caption(shape: Shape, colours: Colours | None, rng: np.random.Generator) -> str:
    """One caption of an image of the identity ``shape``; ``colours=None`` gives a colour-free IR caption."""
    pick = _Picker(rng)
    noun = pick(_NOUN[shape.gender])
    he, his = _PRONOUN[shape.gender]
    if pick((True, False)):
        subject = _article(f"{pick(_BUILD_ADJ[shape.build])} {noun}")
    else:
        subject = f"{_article(noun)} of {pick(_BUILD_NOUN[shape.build])} build"
    text = f"{subject} with {_hair(shape, colours, pick)}"
    hat_early = shape.hat == "cap" and pick((True, False))
    if hat_early:
        text += " and " + _article(_coloured(_colour(colours, "hat"), "cap"))
    first, second = pick(_CONNECTORS)
    text += f"{pick((', ', ' '))}{pick(_VERB)} {_upper(shape, colours, pick)}"
    text += f"{first}{_lower(shape, colours, pick)}{second}{_shoes(shape, colours, pick)}"
    if shape.hat == "cap" and not hat_early:
        cap = _article(_coloured(_colour(colours, "hat"), "cap"))
        text += pick((f", with {cap} on {his} head", f". {he} is also wearing {cap}"))
    text += _bag(shape, colours, pick, he, his)
    return text + "."


class _Picker:
    """Uniform choice among wordings, drawn from one random generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def __call__(self, options: Sequence[T]) -> T:
        return options[int(self._rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _colour(colours: Colours | None, item: str) -> str | None:
    """The colour name of ``item`` (``None`` for IR captions or items the identity does not have)."""
    return getattr(colours, item) if colours is not None else None


def _coloured(colour: str | None, phrase: str) -> str:
    return f"{colour} {phrase}" if colour else phrase


def _hair(shape: Shape, colours: Colours | None, pick: _Picker) -> str:
    length = pick(_HAIR_LENGTH[shape.hair_length])
    colour = _colour(colours, "hair")
    if shape.hair_style == "ponytail":
        return pick(
            (
                f"{_coloured(colour, f'{length} hair')} tied in a ponytail",
                f"{length} {_coloured(colour, 'ponytail hair')}",
            )
        )
    return f"{length} {_coloured(colour, pick(_HAIR_STYLE[shape.hair_style]))} hair"


def _upper(shape: Shape, colours: Colours | None, pick: _Picker) -> str:
    colour = _colour(colours, "upper")
    garment = pick(_UPPER[shape.upper_type])
    pattern = shape.upper_pattern
    looks = [_coloured(colour, pattern), f"{pattern} {colour}" if colour else pattern]
    look = pick(looks)
    if pick((True, False)):
        return _article(f"{look} {pick(_SLEEVE_ADJ[shape.upper_sleeve])} {garment}")
    return _article(f"{look} {garment}") + f" with {pick(_SLEEVES[shape.upper_sleeve])}"


def _lower(shape: Shape, colours: Colours | None, pick: _Picker) -> str:
    phrase = _coloured(_colour(colours, "lower"), pick(_LOWER[shape.lower_type]))
    return _article(phrase) if shape.lower_type in _SINGULAR_LOWER else phrase


def _shoes(shape: Shape, colours: Colours | None, pick: _Picker) -> str:
    phrase = _coloured(_colour(colours, "shoes"), pick(_SHOES[shape.shoes_type]))
    return pick((phrase, f"a pair of {phrase}"))


def _bag(shape: Shape, colours: Colours | None, pick: _Picker, he: str, his: str) -> str:
    if shape.bag == "none":
        return ""
    colour = _colour(colours, "bag")
    if shape.bag == "backpack":
        bag = _article(_coloured(colour, "backpack"))
        return pick((f", carrying {bag}", f", with {bag} on {his} back", f". {he} is carrying {bag}"))
    bag = _article(_coloured(colour, pick(("handbag", "hand bag"))))
    return pick(
        (f", holding {bag}", f", carrying {bag} in {his} hand", f". {he} is holding {bag} in {his} hand")
    )
