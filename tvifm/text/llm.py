"""LLM augmentation: rephrase captions with any local causal language model (transformers).

The paper rephrases every caption with an instruction LLM (Vicuna-7B) at temperature 0.7. Here any
``AutoModelForCausalLM`` checkpoint directory works (``caption.llm_checkpoint``). No instruction LLM is
available offline: the tests exercise this path with a tiny causal LM built in the test, and the default
augmenter is the rule-based one (:mod:`tvifm.text.augment`).

Generation is batched with left padding and sampling; each output is cleaned (first line only, echoed
prompt labels and quotes removed, whitespace collapsed), re-filtered for colour words when the caption is
infrared, and replaced by the original caption when it is empty or garbage (see :func:`is_garbage`).
transformers is imported when an :class:`LLMAugmenter` is built, never at import time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tvifm.errors import ConfigError
from tvifm.text.augment import finalise

PROMPT = (
    "Rephrase the person's description using similar words, keep the meaning.\n"
    "Description: {caption}\n"
    "Rephrased:"
)
_LABEL = re.compile(r"^\s*(?:rephrased|description|answer|output)\s*:\s*", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+")


@dataclass
class LLMStats:
    """How many outputs were used and how many fell back to the original caption."""

    generated: int = 0
    fallbacks: int = 0


def clean_output(text: str) -> str:
    """The usable part of a raw generation: first non-empty line, labels/quotes stripped, spaces collapsed."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = _LABEL.sub("", lines[0])
    line = line.strip().strip("\"'`").strip()
    return re.sub(r"\s+", " ", line)


def is_garbage(text: str, original: str) -> bool:
    """True for output that cannot be a rephrasing of ``original``.

    Garbage is: fewer than 3 words, under 70% letters and spaces, one word making up more than half of
    the words, more than 3x the original's length, or a continuation of the prompt.
    """
    words = _WORD.findall(text)
    if len(words) < 3:
        return True
    letters = sum(ch.isalpha() or ch.isspace() for ch in text)
    if letters < 0.7 * len(text):
        return True
    most = max(words.count(w) for w in set(words))
    if most > len(words) / 2:
        return True
    if len(text) > 3 * max(len(original), 20):
        return True
    return "rephrase the person" in text.lower()


class LLMAugmenter:
    """Rephrase captions with a causal LM loaded from ``checkpoint`` (``from_pretrained``)."""

    def __init__(
        self,
        checkpoint: str,
        temperature: float = 0.7,
        max_new_tokens: int = 60,
        batch_size: int = 8,
        seed: int = 0,
        prompt: str = PROMPT,
        device: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if "{caption}" not in prompt:
            raise ConfigError("the LLM prompt template must contain {caption}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
            self.model = AutoModelForCausalLM.from_pretrained(checkpoint)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"cannot load the causal LM at {checkpoint!r} ({err}); caption.llm_checkpoint must be a "
                "local directory saved with save_pretrained (model and tokenizer)"
            ) from err
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.seed = seed
        self.prompt = prompt
        self.stats = LLMStats()

    def augment(self, texts: Sequence[str], modality: str = "visible") -> list[str]:
        """One rephrasing per caption; IR outputs are colour-filtered, garbage falls back to the original."""
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            for raw, original in zip(self._generate(batch), batch, strict=True):
                out.append(self._accept(raw, original, modality))
        return out

    def _accept(self, raw: str, original: str, modality: str) -> str:
        text = clean_output(raw)
        self.stats.generated += 1
        if not text or is_garbage(text, original):
            self.stats.fallbacks += 1
            text = original
        return finalise(text, original, modality)

    def _generate(self, captions: list[str]) -> list[str]:
        import torch

        prompts = [self.prompt.format(caption=c) for c in captions]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        torch.manual_seed(self.seed)
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=0.95)
        else:
            kwargs.update(do_sample=False)
        with torch.inference_mode():
            ids = self.model.generate(**enc, **kwargs)
        new = ids[:, enc["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)
