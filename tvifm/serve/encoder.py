"""Image decoding and the query/gallery embeddings of the service (plain torch, no Ray).

The embeddings are exactly those of offline evaluation (:mod:`tvifm.engine.inference`): images go
through :func:`tvifm.data.transforms.eval_transform` and the stem of their modality, texts through the
CLIP text tower, every retrieval embedding is the BNNeck output L2-normalised, and

- ``ir``: the IR image; ``rgb2ir``: a visible image (searched against IR gallery items);
- ``text``: the witness description ``T_rgb``;
- ``fusion``: ``f_ir + (f_T_rgb - f_T_ir)`` (semantic filtered fusion with the IR caption ``T_ir``);
- ``ensemble`` (MER): the mean of the ``fusion``, ``ir`` and ``text`` embeddings.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image, UnidentifiedImageError

from tvifm.data.transforms import eval_transform
from tvifm.engine.inference import embed, encode_texts
from tvifm.errors import TvifmError
from tvifm.models.tvifm import TVIFM

Mode = Literal["ir", "text", "fusion", "ensemble", "rgb2ir"]
MODES: tuple[str, ...] = ("ir", "text", "fusion", "ensemble", "rgb2ir")
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")


class BadImageError(TvifmError):
    """Uploaded bytes are not a decodable image of a supported format."""


class ImageTooLargeError(TvifmError):
    """An uploaded image has more pixels than the service accepts."""


@dataclass(frozen=True)
class ModeNeeds:
    """Which inputs a query mode needs."""

    image: bool
    description: bool
    ir_caption: bool


MODE_NEEDS: dict[str, ModeNeeds] = {
    "ir": ModeNeeds(True, False, False),
    "text": ModeNeeds(False, True, False),
    "fusion": ModeNeeds(True, True, True),
    "ensemble": ModeNeeds(True, True, True),
    "rgb2ir": ModeNeeds(True, False, False),
}


def query_modality(mode: str) -> str:
    """Modality of the query image of ``mode`` (``visible`` for ``rgb2ir``, else ``ir``)."""
    return "visible" if mode == "rgb2ir" else "ir"


def target_modality(mode: str) -> str:
    """Modality of the gallery items ``mode`` searches (``ir`` for ``rgb2ir``, else ``visible``)."""
    return "ir" if mode == "rgb2ir" else "visible"


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode an uploaded image to RGB, checking its size before decoding the pixels.

    Raises :class:`BadImageError` for empty or undecodable bytes and :class:`ImageTooLargeError` when
    width x height exceeds ``max_pixels``.
    """
    if not data:
        raise BadImageError("the image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image of {width}x{height} pixels exceeds the limit of {max_pixels}"
                )
            if width * height == 0:
                raise BadImageError("the image has no pixels")
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"image exceeds the pixel limit: {err}") from err
    except UnidentifiedImageError as err:
        formats = ", ".join(IMAGE_FORMATS)
        raise BadImageError(f"cannot decode the image; supported formats: {formats}") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImageError(f"cannot decode the image ({type(err).__name__}: {err})") from err


class Encoder:
    """Features and retrieval embeddings of decoded images and texts for one loaded model."""

    def __init__(self, model: TVIFM, image_size: Sequence[int]) -> None:
        self.model = model.eval()
        self.transform = eval_transform(image_size)
        self.device = model.head.bn.weight.device

    @torch.no_grad()
    def image_features(self, images: Sequence[Image.Image], modalities: Sequence[str]) -> torch.Tensor:
        """Backbone features ``(N, D)``; each image goes through the stem of its own modality."""
        out = torch.empty(len(images), self.model.dim)
        for modality in ("visible", "ir"):
            idx = [i for i, m in enumerate(modalities) if m == modality]
            if idx:
                x = torch.stack([self.transform(images[i]) for i in idx]).to(self.device)
                out[idx] = self.model.encode_image(x, modality).float().cpu()
        return out

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Text features ``(N, D)`` before the BNNeck."""
        return encode_texts(self.model, list(texts))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Retrieval embeddings (BNNeck + L2) of features."""
        return embed(self.model, features)

    @torch.no_grad()
    def query_embedding(
        self,
        mode: str,
        image: torch.Tensor | None = None,
        description: torch.Tensor | None = None,
        ir_caption: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The ``(D,)`` query embedding of ``mode`` from 1-D image/text *features*."""
        if mode in ("ir", "rgb2ir"):
            return self._embed1(image)
        if mode == "text":
            return self._embed1(description)
        fused = self._embed1(self.model.fuse(image, description, ir_caption))
        if mode == "fusion":
            return fused
        return (fused + self._embed1(image) + self._embed1(description)) / 3.0

    def _embed1(self, feature: torch.Tensor | None) -> torch.Tensor:
        if feature is None:
            raise TvifmError("a query input this mode needs is missing")
        return self.embed(feature.reshape(1, -1))[0]
