"""The IR captioner hook: generates the IR caption ``T_ir`` of a query when the client sends none.

Anything with ``caption(images) -> list[str]`` can serve (:class:`IRCaptioner`); the default loader
reads a BLIP captioner directory (``BlipForConditionalGeneration.from_pretrained``, local or ``s3://``)
through :func:`tvifm.captioning.model.load_captioner`. Generated IR captions pass through the colour
filter, as in the captioning job: an infrared image cannot show colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from PIL import Image

from tvifm.text.colour import strip_colours


class IRCaptioner(Protocol):
    """Captions IR images."""

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image."""
        ...


class ColourFreeCaptioner:
    """Wraps a captioner so that its captions carry no colour words."""

    def __init__(self, inner: IRCaptioner) -> None:
        self.inner = inner

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Captions of ``images`` with colour phrases removed."""
        return [strip_colours(text) for text in self.inner.caption(images)]


def load_ir_captioner(path: str, endpoint: str | None = None, device: str | None = None) -> IRCaptioner:
    """Load a BLIP IR captioner directory (local or ``s3://``) as a colour-free :class:`IRCaptioner`."""
    from tvifm.captioning.model import load_captioner

    if device == "auto":
        device = None
    return ColourFreeCaptioner(load_captioner(path, endpoint=endpoint, device=device))
