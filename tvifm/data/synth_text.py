"""Captions of SynthTri images, in the style of the BLIP captions of the Tri- datasets.

A caption describes the identity's attributes (gender, build, hair, cap if any, upper garment with its
sleeves and pattern, lower garment, shoes, bag if any). The wording varies from image to image
(synonyms, connectors, clause placement), drawn from the image's own random generator. A visible caption
names the colours; an IR caption is built from the same grammar without colours, so it holds no colour
word at all. Like the real BLIP captions, the text is lower case and hyphens are spaced (``t - shirt``).

Like a captioner's output (and unlike an oracle's), a caption is noisy (``noise=True``, the default):
each optional item is left out with the probability in :data:`OMIT`, each named colour is replaced by a
similar one (:data:`CONFUSED_COLOURS`) with probability :data:`COLOUR_ERROR`, and a garment type by a
similar one (:data:`CONFUSED_TYPES`) with probability :data:`TYPE_ERROR`. ``noise=False`` states every
attribute exactly.
"""

from __future__ import annotations

import dataclasses
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


# Captioner noise: probability that an item is left out of a caption...
OMIT = {"build": 0.35, "hair": 0.3, "pattern": 0.3, "lower": 0.15, "shoes": 0.4, "hat": 0.35, "bag": 0.3}
# ... that a named colour is mistaken for a similar one, and that a garment type is.
COLOUR_ERROR = 0.12
TYPE_ERROR = 0.08
CONFUSED_COLOURS = {
    "black": ("grey", "blue", "brown"),
    "white": ("grey", "yellow"),
    "red": ("pink", "brown", "purple"),
    "blue": ("purple", "black", "grey"),
    "green": ("grey", "blue"),
    "yellow": ("white", "brown"),
    "grey": ("white", "black"),
    "brown": ("black", "red"),
    "pink": ("red", "purple", "white"),
    "purple": ("blue", "pink"),
    "blonde": ("brown", "grey"),
}
CONFUSED_TYPES = {
    "upper_type": {
        "t-shirt": ("shirt",),
        "shirt": ("t-shirt",),
        "jacket": ("coat", "hoodie"),
        "hoodie": ("jacket",),
        "coat": ("jacket",),
    },
    "lower_type": {
        "jeans": ("trousers",),
        "trousers": ("jeans",),
        "shorts": ("skirt",),
        "skirt": ("shorts",),
    },
    "shoes_type": {
        "sneakers": ("casual",),
        "casual": ("sneakers",),
        "boots": ("casual",),
        "sandals": ("casual",),
    },
}


def caption(shape: Shape, colours: Colours | None, rng: np.random.Generator, noise: bool = True) -> str:
    """One caption of an image of the identity ``shape``; ``colours=None`` gives a colour-free IR caption.

    ``noise`` (default) imitates a captioner: items left out, similar colours and garments mixed up
    (module docstring); without it every attribute is stated exactly.
    """
    pick = _Picker(rng)
    omit: set[str] = set()
    if noise:
        shape, colours = _misperceive(shape, colours, rng)
        omit = {item for item, p in OMIT.items() if rng.random() < p}
    noun = pick(_NOUN[shape.gender])
    he, his = _PRONOUN[shape.gender]
    if "build" in omit:
        subject = _article(noun)
    elif pick((True, False)):
        subject = _article(f"{pick(_BUILD_ADJ[shape.build])} {noun}")
    else:
        subject = f"{_article(noun)} of {pick(_BUILD_NOUN[shape.build])} build"
    has_cap = shape.hat == "cap" and "hat" not in omit
    hat_early = has_cap and pick((True, False))
    features = [] if "hair" in omit else [_hair(shape, colours, pick)]
    if hat_early:
        features.append(_article(_coloured(_colour(colours, "hat"), "cap")))
    text = f"{subject} with {' and '.join(features)}" if features else subject
    text += f"{pick((', ', ' '))}{pick(_VERB)} {_upper(shape, colours, pick, 'pattern' not in omit)}"
    text += _garments(
        [] if "lower" in omit else [_lower(shape, colours, pick)],
        [] if "shoes" in omit else [_shoes(shape, colours, pick)],
        pick,
    )
    if has_cap and not hat_early:
        cap = _article(_coloured(_colour(colours, "hat"), "cap"))
        text += pick((f", with {cap} on {his} head", f". {he} is also wearing {cap}"))
    if "bag" not in omit:
        text += _bag(shape, colours, pick, he, his)
    return text + "."


def _garments(lower: list[str], shoes: list[str], pick: _Picker) -> str:
    """The lower garment and shoes after the upper garment, with varied connectors."""
    if lower and shoes:
        first, second = pick(_CONNECTORS)
        return f"{first}{lower[0]}{second}{shoes[0]}"
    rest = lower + shoes
    return f"{pick((' and ', ', paired with ', ' with '))}{rest[0]}" if rest else ""


def _misperceive(
    shape: Shape, colours: Colours | None, rng: np.random.Generator
) -> tuple[Shape, Colours | None]:
    """The identity as a captioner might see it in one image: a few colours and garments mistaken."""
    types = {}
    for field, confusions in CONFUSED_TYPES.items():
        if rng.random() < TYPE_ERROR:
            options = confusions[getattr(shape, field)]
            types[field] = options[int(rng.integers(len(options)))]
    if types.get("lower_type") == "skirt" and shape.gender == "man":
        del types["lower_type"]
    shape = dataclasses.replace(shape, **types)
    if colours is None:
        return shape, None
    wrong = {}
    for item in ("hair", "upper", "lower", "shoes", "bag", "hat"):
        name = getattr(colours, item)
        if name is not None and rng.random() < COLOUR_ERROR:
            options = CONFUSED_COLOURS[name]
            if item == "hair":
                options = tuple(o for o in options if o in ("black", "brown", "blonde", "grey")) or (name,)
            wrong[item] = options[int(rng.integers(len(options)))]
    return shape, dataclasses.replace(colours, **wrong)


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


def _upper(shape: Shape, colours: Colours | None, pick: _Picker, with_pattern: bool = True) -> str:
    colour = _colour(colours, "upper")
    garment = pick(_UPPER[shape.upper_type])
    pattern = shape.upper_pattern
    if with_pattern:
        look = pick([_coloured(colour, pattern), f"{pattern} {colour}" if colour else pattern]) + " "
    else:
        look = f"{colour} " if colour else ""
    if pick((True, False)):
        return _article(f"{look}{pick(_SLEEVE_ADJ[shape.upper_sleeve])} {garment}")
    return _article(f"{look}{garment}") + f" with {pick(_SLEEVES[shape.upper_sleeve])}"


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
