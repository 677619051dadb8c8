"""Image decoding and the query/gallery embeddings of the service (plain torch, no Ray).

The embeddings are exactly those of offline evaluation: images go through
:func:`tvifm.data.transforms.eval_transform` and the stem of their modality, texts through the text
tower, and the query modes (:mod:`tvifm.models.query`) are computed by the model itself
(:meth:`~tvifm.models.tvifm.TVIFM.query_embeddings`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from PIL import Image, UnidentifiedImageError

from tvifm.data.transforms import eval_transform
from tvifm.errors import TvifmError
from tvifm.models.tvifm import TVIFM

IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")


class BadImageError(TvifmError):
    """Uploaded bytes are not a decodable image of a supported format."""


class ImageTooLargeError(TvifmError):
    """An uploaded image has more pixels than the service accepts."""


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
        return self.model.encode_texts(list(texts))

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Retrieval embeddings (BNNeck + L2) of features."""
        return self.model.embed(features)

    def query_embedding(
        self,
        mode: str,
        image: torch.Tensor | None = None,
        description: torch.Tensor | None = None,
        ir_caption: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The ``(D,)`` query embedding of ``mode`` from 1-D image/text *features*."""
        rows = [None if f is None else f.reshape(1, -1) for f in (image, description, ir_caption)]
        try:
            return self.model.query_embeddings((mode,), *rows)[mode][0]
        except ValueError as err:
            raise TvifmError(f"a query input mode {mode!r} needs is missing: {err}") from err
