"""Caption augmentation: rephrase a person description without changing what it says.

The method (docs/design.md) rephrases every caption with an instruction LLM (Vicuna-7B in the paper).
No instruction LLM is available offline here, so the default augmenter is rule-based (:class:`RuleAugmenter`):
synonyms of the words that carry no attribute (person nouns, verbs, connectors, build adjectives, sleeve
words) and moving the accessory clause ("carrying a grey backpack") next to the subject. It never
touches colour or garment words, so every attribute survives. :class:`tvifm.text.llm.LLMAugmenter` is the
LLM path (any local causal LM checkpoint); it is exercised in tests with a tiny causal LM only.

Every augmenter maps a list of captions to a list of rephrasings of the same length (``augment``); for
``modality="ir"`` the output is passed through :func:`tvifm.text.colour.strip_colours` again so that no
colour word can slip into an infrared caption.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from tvifm.errors import ConfigError
from tvifm.text.colour import strip_colours

AugmenterKind = Literal["rule", "llm", "none"]

# Groups of interchangeable phrases; only words that name no attribute of the person.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("man", "guy", "gentleman"),
    ("woman", "lady"),
    ("boy", "young man"),
    ("girl", "young woman"),
    ("wearing", "dressed in", "sporting", "clad in"),
    ("paired with", "along with", "teamed with", "together with"),
    ("carrying", "holding"),
    ("slim", "slender", "thin"),
    ("heavy", "stocky", "heavily built"),
    ("medium built", "average built"),
    ("full sleeve", "long sleeve"),
    ("full sleeves", "long sleeves"),
    ("half sleeve", "short sleeve"),
    ("half sleeves", "short sleeves"),
    ("full - sleeved", "long - sleeved"),
    ("half - sleeved", "short - sleeved"),
    ("has worn", "has on", "is wearing"),
    ("he is also", "he is additionally"),
    ("she is also", "she is additionally"),
)
_ACCESSORY_START = re.compile(r"^(carrying|holding|with an? [^,]*\b(?:on (?:his|her) (?:back|head)))", re.I)
_VOWEL = re.compile(r"^[aeio]", re.I)
_ARTICLE = re.compile(r"\b(an?)(\s+)([A-Za-z]+)", re.I)
_SYNONYM_HEADS = frozenset(phrase.split()[0] for group in SYNONYMS for phrase in group)


class Augmenter(Protocol):
    """Anything that rephrases captions: one output per input, in order."""

    def augment(self, texts: Sequence[str], modality: str = "visible") -> list[str]:
        """Rephrasings of ``texts``; IR rephrasings carry no colour word."""
        ...


class IdentityAugmenter:
    """Keeps every caption as it is (``caption.augmenter=none``)."""

    def augment(self, texts: Sequence[str], modality: str = "visible") -> list[str]:
        """The input captions, colour-filtered for IR."""
        return [finalise(t, t, modality) for t in texts]


class RuleAugmenter:
    """Offline rephrasing by attribute-free synonyms and accessory-clause reordering.

    Deterministic: the same seed and caption always give the same rephrasing, in any process.
    ``p_synonym`` is the chance of replacing each synonym occurrence, ``p_reorder`` the chance of moving
    the accessory clause.
    """

    def __init__(self, seed: int = 0, p_synonym: float = 0.7, p_reorder: float = 0.5) -> None:
        self.seed = seed
        self.p_synonym = p_synonym
        self.p_reorder = p_reorder
        table = sorted(((p, g) for g in SYNONYMS for p in g), key=lambda pg: -len(pg[0]))
        self._groups = {phrase: group for phrase, group in table}
        alternatives = "|".join(re.escape(phrase) for phrase, _ in table)
        self._pattern = re.compile(rf"\b(?:{alternatives})\b(?! build)", re.IGNORECASE)

    def augment(self, texts: Sequence[str], modality: str = "visible") -> list[str]:
        """One rephrasing per caption (see the class doc)."""
        return [finalise(self.rephrase(t), t, modality) for t in texts]

    def rephrase(self, text: str) -> str:
        """A rephrasing of one caption; the attributes, colours and garments stay as they are."""
        rng = random.Random(f"{self.seed}\x00{text}")
        out = self._pattern.sub(lambda m: self._swap(m, rng), text)
        if rng.random() < self.p_reorder:
            out = move_accessory_clause(out)
        return fix_articles(out)

    def _swap(self, match: re.Match[str], rng: random.Random) -> str:
        found = match.group(0)
        group = self._groups[found.lower()]
        if rng.random() >= self.p_synonym:
            return found
        choice = rng.choice([p for p in group if p != found.lower()])
        return choice.capitalize() if found[0].isupper() else choice


def move_accessory_clause(text: str) -> str:
    """Move a trailing ``, carrying ...``/``, with a ... on his back`` clause right after the subject.

    "a man with short hair, wearing a shirt, jeans and shoes, carrying a backpack." becomes
    "a man with short hair, carrying a backpack, wearing a shirt, jeans and shoes." Captions without
    such a clause, or with several sentences, are returned unchanged.
    """
    body, end = (text[:-1], text[-1]) if text.endswith(".") else (text, "")
    if "." in body:
        return text
    clauses = [c.strip() for c in body.split(",")]
    if len(clauses) < 3 or not _ACCESSORY_START.match(clauses[-1]):
        return text
    first, *middle, last = clauses
    return ", ".join([first, last, *middle]) + end


def fix_articles(text: str) -> str:
    """Re-choose ``a``/``an`` before words a synonym may have introduced ("a average" -> "an average")."""

    def repl(m: re.Match[str]) -> str:
        article, space, word = m.groups()
        if word.lower() not in _SYNONYM_HEADS:
            return m.group(0)
        wanted = "an" if _VOWEL.match(word) else "a"
        return (wanted.capitalize() if article[0].isupper() else wanted) + space + word

    return _ARTICLE.sub(repl, text)


def finalise(rephrased: str, original: str, modality: str) -> str:
    """Colour-filter an IR rephrasing; fall back to the (filtered) original when nothing is left."""
    text = rephrased.strip()
    if modality == "ir":
        text = strip_colours(text)
        if not text:
            return strip_colours(original)
    return text or original


def build_augmenter(kind: AugmenterKind, **options: Any) -> Augmenter:
    """The augmenter of ``kind``: ``rule`` (default offline), ``llm`` (needs ``checkpoint=``) or ``none``.

    ``options`` go to the augmenter's constructor (``seed`` for rule; ``checkpoint``, ``temperature``,
    ``max_new_tokens``, ``batch_size``, ``seed`` for llm).
    """
    if kind == "rule":
        return RuleAugmenter(seed=int(options.get("seed", 0)))
    if kind == "none":
        return IdentityAugmenter()
    if kind == "llm":
        if not options.get("checkpoint"):
            raise ConfigError(
                "caption.augmenter=llm needs caption.llm_checkpoint: a local causal LM directory "
                "(no instruction LLM ships offline; use caption.augmenter=rule for the default)"
            )
        from tvifm.text.llm import LLMAugmenter

        return LLMAugmenter(**options)
    raise ConfigError(f"unknown augmenter {kind!r}; choose one of: rule, llm, none")


def augment_sidecars(root: str, dataset: str = "synth", augmenter: Augmenter | None = None) -> dict[str, int]:
    """Give every captioned image of a dataset a rephrasing, written as ``caption_llm_dict`` sidecars.

    For datasets whose sidecars hold descriptions only (SynthTri's ground-truth ``caption_dict``), this
    writes ``Text/Blip_*/caption_llm_dict_*.json`` with the description and its rephrasing, which text
    augmentation in stage 2 reads as ``aug_description``. A modality whose captions all have a
    rephrasing already is left alone. Returns the number of captions written per modality.
    """
    from tvifm.data.registry import load_dataset
    from tvifm.data.sidecars import Caption, all_samples, caption_dict_path, load_text_for, write_caption_dict

    splits = load_dataset(dataset, root)
    text = load_text_for(splits)
    augmenter = augmenter or RuleAugmenter()
    written: dict[str, int] = {}
    for modality in ("visible", "ir"):
        pairs = [(s, text.caption(s)) for s in all_samples(splits) if s.modality == modality]
        pairs = [(s, c) for s, c in pairs if c is not None]
        if not pairs or all(c.aug_description for _, c in pairs):
            continue
        rephrased = augmenter.augment([c.description for _, c in pairs], modality=modality)
        captions = {s.rel: Caption(c.description, aug) for (s, c), aug in zip(pairs, rephrased, strict=True)}
        write_caption_dict(caption_dict_path(root, modality), captions)
        written[modality] = len(captions)
    return written


_WORD = re.compile(r"[a-z]+")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def rephrasing_novelty(by_identity: Mapping[Any, Sequence[tuple[str, str | None]]]) -> dict[str, float]:
    """How much rephrasings add to what the captions of the same person already say.

    ``by_identity`` maps an identity to its ``(description, aug_description)`` pairs. Returns means of:

    * ``new_words``: the share of a rephrasing's distinct words that no description of that identity
      uses (what text augmentation can teach beyond the person's other captions);
    * ``caption_vs_rephrasing``: word-set Jaccard similarity of a description and its rephrasing;
    * ``caption_vs_caption``: the same between two descriptions of one identity (other images);

    and the counts ``rephrasings`` and ``people`` (identities).

    Raises :class:`ConfigError` when no caption has a rephrasing.
    """
    new, own, between = [], [], []
    for pairs in by_identity.values():
        described = [_words(d) for d, _ in pairs]
        known = set().union(*described)
        for words, (_, aug) in zip(described, pairs, strict=True):
            if aug:
                rephrased = _words(aug)
                new.append(len(rephrased - known) / max(1, len(rephrased)))
                own.append(_jaccard(words, rephrased))
        between += [_jaccard(a, b) for a, b in itertools.combinations(described, 2)]
    if not new:
        raise ConfigError("no caption has a rephrasing (aug_description); run the augmentation first")
    return {
        "new_words": sum(new) / len(new),
        "caption_vs_rephrasing": sum(own) / len(own),
        "caption_vs_caption": sum(between) / len(between) if between else float("nan"),
        "rephrasings": float(len(new)),
        "people": float(len(by_identity)),
    }
