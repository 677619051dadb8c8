"""Image decoding and the query/gallery embeddings of the service (plain torch, no Ray).

The embeddings are exactly those of offline evaluation: images go through
:func:`tvifm.data.transforms.eval_transform` and the stem of their modality, texts through the text
tower, and the query modes (:mod:`tvifm.models.query`) are computed by the model itself
(:meth:`~tvifm.models.tvifm.TVIFM.query_embeddings`).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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


def image_pixels(data: bytes, max_pixels: int) -> int:
    """Width x height of an uploaded image, read from its header only (no pixel is decoded).

    Raises :class:`BadImageError` and :class:`ImageTooLargeError` as :func:`decode_image` does for what
    the header already shows.
    """
    with _opened(data, max_pixels) as img:
        return img.size[0] * img.size[1]


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode an uploaded image to RGB, checking its size before decoding the pixels.

    Raises :class:`BadImageError` for empty or undecodable bytes and :class:`ImageTooLargeError` when
    width x height exceeds ``max_pixels``.
    """
    with _opened(data, max_pixels) as img:
        try:
            img.load()
            return img.convert("RGB")
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise BadImageError(f"cannot decode the image ({type(err).__name__}: {err})") from err


@contextmanager
def _opened(data: bytes, max_pixels: int) -> Iterator[Image.Image]:
    """The lazily opened image (header read, size checked), closed afterwards."""
    if not data:
        raise BadImageError("the image is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"image exceeds the pixel limit: {err}") from err
    except UnidentifiedImageError as err:
        formats = ", ".join(IMAGE_FORMATS)
        raise BadImageError(f"cannot decode the image; supported formats: {formats}") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImageError(f"cannot decode the image ({type(err).__name__}: {err})") from err
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageTooLargeError(f"image of {width}x{height} pixels exceeds the limit of {max_pixels}")
        if width * height == 0:
            raise BadImageError("the image has no pixels")
        yield img


class Encoder:
    """Features and retrieval embeddings of decoded images and texts for one loaded model."""

    def __init__(self, model: TVIFM, image_size: Sequence[int]) -> None:
        self.model = model.eval()
        self.transform = eval_transform(image_size)
        self.device = model.head.bn.weight.device

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """The model input ``(3, H, W)`` of one decoded image (the evaluation transform)."""
        return self.transform(image)

    def image_features(self, images: Sequence[Image.Image], modalities: Sequence[str]) -> torch.Tensor:
        """Backbone features ``(N, D)``; each image goes through the stem of its own modality."""
        return self.input_features([self.prepare(img) for img in images], modalities)

    @torch.no_grad()
    def input_features(self, inputs: Sequence[torch.Tensor], modalities: Sequence[str]) -> torch.Tensor:
        """Backbone features ``(N, D)`` of prepared inputs (:meth:`prepare`), per modality's stem."""
        out = torch.empty(len(inputs), self.model.dim)
        for modality in ("visible", "ir"):
            idx = [i for i, m in enumerate(modalities) if m == modality]
            if idx:
                x = torch.stack([inputs[i] for i in idx]).to(self.device)
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
