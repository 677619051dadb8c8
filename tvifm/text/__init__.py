"""Text utilities of tvifm: the colour-word filter and caption augmentation (rule-based or LLM).

Importing this package loads no model library; :mod:`tvifm.text.llm` imports transformers only when an
LLM augmenter is built.
"""

from tvifm.text.augment import Augmenter, IdentityAugmenter, RuleAugmenter, build_augmenter
from tvifm.text.colour import colour_terms, has_colour, strip_colours

__all__ = [
    "Augmenter",
    "IdentityAugmenter",
    "RuleAugmenter",
    "build_augmenter",
    "colour_terms",
    "has_colour",
    "strip_colours",
]
