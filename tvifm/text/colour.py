"""The colour-word filter: remove every colour term from a person description, keep everything else.

An infrared camera cannot see colour, so IR captions (and LLM rephrasings of them) must not name any.
:func:`strip_colours` removes whole colour phrases, not just single words::

    "a man with short black hair wearing a red t - shirt"  ->  "a man with short hair wearing a t - shirt"
    "a dark blue colour full sleeve top"                    ->  "a full sleeve top"
    "light pastel blue jeans", "olive - brown coat", "red-coloured bag", "multi - color hoodie",
    "a bright shade of pink", "navy blue and white striped shirt", "dressed in black"

What counts as a colour phrase:

* a run of colour words joined by spaces, hyphens, ``and``, ``or``, ``&``, ``/`` or commas, with at least
  one *core* colour (``red``, ``navy``, ``maroon``, ``reddish``, ``multicoloured`` ...) or colour noun
  (``colour``, ``coloured``, ``color``, ``coloration``); tone words (``dark``, ``light``, ``pastel``,
  ``pale``, ``mild``, ...) and named shades (``sky``, ``royal``, ``wine``, ``baby`` ...) belong to the
  phrase only next to a colour, so "a light jacket", "carrying a baby" and "a wine bottle" stay;
* ``shade``/``shaded``/``hue``/``tone``/``tint`` after a colour, and ``shade of``/``hue of`` before one;
* ``dark``/``fair``/``light`` hair, which describes hair colour;
* a colour glued to a garment (``blacktop`` -> ``top``). Other words that merely start with a colour keep
  their meaning and are kept: ``blackboard``, ``greenhouse``, ``whitewash``, ``redhead``.

After removal the text is tidied: articles are re-chosen (``an orange bag`` -> ``a bag``), a preposition
left without its colour goes (``dressed in black.`` -> ``dressed.``), spaces and commas are collapsed. The
Tri- captions were partly produced by a text spinner that replaced ``green`` by ``inexperienced``; that
spun form is treated as a colour word too.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


CORE_COLOURS = _word_set("""
    black white red blue green yellow grey gray brown pink purple orange violet maroon navy beige cream
    khaki olive teal turquoise cyan magenta indigo lavender lilac mauve burgundy crimson scarlet golden
    gold silver bronze copper ivory charcoal coral salmon peach mustard lemon lime aqua aquamarine fuchsia
    ochre amber blonde blond brunette auburn ginger chestnut multicolour multicolor multicoloured
    multicolored colourful colorful inexperienced
    """)
_ISH_STEMS = ("red", "blu", "green", "grey", "gray", "brown", "black", "whit", "yellow", "pink", "purpl")
ISH_COLOURS = frozenset(stem + "ish" for stem in _ISH_STEMS)
COLOUR_NOUNS = _word_set(
    "colour color colours colors coloured colored colouring coloring coloration colouration"
)
TONES = _word_set("dark light pale deep bright mild darkish lightish pastel dull dusty muted vivid off")
TONES |= _word_set("multi dual two neon faded soft warm cool rich vibrant bold subtle strong")
NAMED_SHADES = _word_set(
    "sky royal wine baby yale honey jet snow blood cherry bottle army forest hot ice powder electric "
    "steel sea rose plum camel coffee chocolate caramel sand rust ash tan denim"
)
TRAILING_SHADES = frozenset({"honey"})  # "blonde honey hair": a shade that may follow the colour
ATTACHED = _word_set("shade shades shaded hue hues tone toned tint tinted")
HAIR_WORDS = frozenset({"hair", "haired", "locks"})
HAIR_TONES = frozenset({"dark", "fair", "light"})
JOINERS = frozenset({"and", "or", "&", "/", ","})
GARMENTS = _word_set("""
    top tops shirt shirts tshirt jacket coat pants pant trousers jeans shorts skirt dress shoes shoe
    sneakers boots sandals bag backpack cap hat hoodie sweater blazer blouse kurta socks scarf stole
    """)
_GLUE_COLOURS = ("black", "white", "red", "blue", "green", "grey", "gray", "brown", "pink", "purple")

_GLUED = re.compile(rf"(?:{'|'.join(_GLUE_COLOURS)})({'|'.join(sorted(GARMENTS))})$")
_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+|\s+|[^\sA-Za-z\d]")
_VOWEL_SOUND = re.compile(r"^(?:[aeio]|u(?!ni|se|sa|su|ro|ti))", re.IGNORECASE)
_EXPECTS_MORE = _word_set(
    "a an the with is are was were and or wearing sporting dressed wears has have his her their its"
)
_PREDICATE_END = _word_set(
    ", . ; ! ? and with paired along while carrying holding wearing complemented accompanied she he"
)


@dataclass
class _Tok:
    text: str
    keep: bool = True
    recheck_article: bool = False
    low: str = ""
    is_space: bool = False

    def __post_init__(self) -> None:
        self.low = self.text.lower()
        self.is_space = self.text.isspace()


def is_core_colour(word: str) -> bool:
    """True for a word that names a colour on its own (``red``, ``navy``, ``reddish``, ``multicoloured``)."""
    low = word.lower()
    return low in CORE_COLOURS or low in ISH_COLOURS or _glued_colour(low) is not None


def colour_terms(text: str) -> list[str]:
    """The colour words in ``text`` in order: core colours and colour nouns (``colour``, ``coloured``).

    Tone words alone (``dark``, ``light``) are not listed: "a light jacket" names no colour. Use this to
    check a caption: ``colour_terms(strip_colours(t)) == []`` holds for every text.
    """
    words = [m.group(0) for m in _TOKEN.finditer(text) if m.group(0)[0].isalpha()]
    found = [w for w in words if is_core_colour(w) or w.lower() in COLOUR_NOUNS]
    for i, word in enumerate(words[:-1]):
        if word.lower() in HAIR_TONES and words[i + 1].lower() in HAIR_WORDS:
            found.append(word)
    return found


def has_colour(text: str) -> bool:
    """True when ``text`` names a colour (see :func:`colour_terms`)."""
    return bool(colour_terms(text))


def strip_colours(text: str) -> str:
    """``text`` with every colour phrase removed and the remaining words tidied (see the module doc)."""
    toks = [_Tok(m.group(0)) for m in _TOKEN.finditer(text)]
    _unglue(toks)
    words = [i for i, t in enumerate(toks) if not t.is_space]
    pos = 0
    while pos < len(words):
        end = _span_end(toks, words, pos)
        if end > pos:
            _drop_span(toks, words, pos, end)
            pos = end
        else:
            pos += 1
    return _tidy(toks)


def _glued_colour(low: str) -> str | None:
    """The garment of a colour glued to a garment word (``blacktop`` -> ``top``), else ``None``."""
    match = _GLUED.match(low)
    return match.group(1) if match else None


def _unglue(toks: list[_Tok]) -> None:
    for tok in toks:
        garment = _glued_colour(tok.low)
        if garment is not None:
            tok.text = tok.text[len(tok.text) - len(garment) :]
            tok.low = garment


def _kind(word: str) -> str:
    """Classify one lower-case word for the phrase scanner."""
    if word in CORE_COLOURS or word in ISH_COLOURS:
        return "core"
    if word in COLOUR_NOUNS:
        return "noun"
    if word in TONES:
        return "tone"
    if word in NAMED_SHADES:
        return "shade"
    if word in ATTACHED:
        return "attached"
    return ""


def _span_end(toks: list[_Tok], words: list[int], start: int) -> int:
    """Index (into ``words``) one past the colour phrase starting at ``start``; ``start`` when none."""
    first = toks[words[start]].low
    if first in HAIR_TONES and start + 1 < len(words) and toks[words[start + 1]].low in HAIR_WORDS:
        return start + 1
    best, pos, has_colour_word, last_kind = start, start, False, ""
    while pos < len(words):
        low = toks[words[pos]].low
        kind = _kind(low)
        if kind:
            has_colour_word |= kind in ("core", "noun")
            if has_colour_word and _may_end_with(kind, low, last_kind):
                best = pos + 1
            last_kind = kind
        elif low == "-" or (low == "of" and last_kind == "attached"):
            pass
        elif low == "in" and _next_kind(toks, words, pos) == "noun":
            pass  # "blue in colour"
        elif low in JOINERS and (last_kind == "joiner" or (best == pos and last_kind == "core")):
            if not _colour_follows(toks, words, pos + 1):
                break
            last_kind = "joiner"
        else:
            break
        pos += 1
    return best


def _next_kind(toks: list[_Tok], words: list[int], pos: int) -> str:
    return _kind(toks[words[pos + 1]].low) if pos + 1 < len(words) else ""


def _may_end_with(kind: str, low: str, last_kind: str) -> bool:
    if kind in ("core", "noun"):
        return True
    if kind == "attached":
        return last_kind in ("core", "noun", "attached")
    return low in TRAILING_SHADES


def _colour_follows(toks: list[_Tok], words: list[int], pos: int) -> bool:
    """True when a colour phrase (possibly after tone words) starts at ``words[pos]``."""
    while pos < len(words):
        kind = _kind(toks[words[pos]].low)
        if kind in ("core", "noun"):
            return True
        if kind not in ("tone", "shade") and toks[words[pos]].low not in JOINERS | {"-"}:
            return False
        pos += 1
    return False


def _drop_span(toks: list[_Tok], words: list[int], start: int, end: int) -> None:
    for k in range(words[start], words[end - 1] + 1):
        toks[k].keep = False
    nxt = words[end] if end < len(words) else None
    if nxt is not None and toks[nxt].text == "-" and _touches(toks, words[end - 1], nxt):
        toks[nxt].keep = False  # "red-striped" / "red - striped": the hyphen joined the colour
    after = toks[nxt].low if nxt is not None and toks[nxt].keep else "."
    predicate = after in _PREDICATE_END and (after != "," or _after_comma(toks, words, end) in _PREDICATE_END)
    prev = _prev_kept_word(toks, words[start])
    if prev is not None and toks[prev].low in ("a", "an", "the") and predicate:
        toks[prev].keep = False  # "in a sky blue colour, and" -> "in , and" -> ", and"
        prev = _prev_kept_word(toks, prev)
    if prev is None:
        return
    if toks[prev].low in ("a", "an"):
        toks[prev].recheck_article = True
    if toks[prev].low in ("in", "of") and predicate:
        toks[prev].keep = False
    elif after == "," and toks[prev].low in _EXPECTS_MORE:
        toks[nxt].keep = False  # "with brown, long hair" -> "with long hair"


def _after_comma(toks: list[_Tok], words: list[int], end: int) -> str:
    """The word after the comma that follows a colour phrase ("." at the end of the text)."""
    return toks[words[end + 1]].low if end + 1 < len(words) else "."


def _touches(toks: list[_Tok], left: int, right: int) -> bool:
    between = toks[left + 1 : right]
    return all(t.is_space for t in between) and sum(len(t.text) for t in between) <= 1


def _prev_kept_word(toks: list[_Tok], index: int) -> int | None:
    for k in range(index - 1, -1, -1):
        if toks[k].keep and not toks[k].is_space:
            return k
    return None


def _tidy(toks: list[_Tok]) -> str:
    kept = [t for t in toks if t.keep]
    _fix_articles(kept)
    text = "".join(t.text for t in kept)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;])(?:\s*[,;])+", r"\1", text)
    text = re.sub(r"\b(an?)\s*([,.;:!?]|$)", r"\2", text, flags=re.IGNORECASE)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"^\s*[,;]\s*", "", text)
    return text.strip()


def _fix_articles(toks: list[_Tok]) -> None:
    words = [t for t in toks if not t.is_space]
    for art, nxt in itertools.pairwise(words):
        if art.recheck_article and nxt.text[0].isalpha():
            wanted = "an" if _VOWEL_SOUND.match(nxt.text) else "a"
            if wanted != art.low:
                art.text = wanted.capitalize() if art.text[0].isupper() else wanted
