"""The ``tvifm`` MLflow pyfunc model (logged as *models from code*: nothing is pickled).

The model directory carries the training run directory as the artifact ``checkpoint``
(``config.yaml`` + ``model.safetensors`` + ``meta.json``); :meth:`TvifmPyfunc.load_context` rebuilds
the exact model from it. ``predict`` embeds images and texts:

input: a DataFrame with columns ``modality`` (``visible``, ``ir`` or ``text``) and ``input`` (an image as
PNG/JPEG bytes or base64 text, or a description); output: an array ``(N, D)`` of BNNeck + L2
retrieval embeddings, the same the offline evaluation and the retrieval service use.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import mlflow
import numpy as np
import torch
from PIL import Image


class TvifmPyfunc(mlflow.pyfunc.PythonModel):
    """Embeds images and texts with a TVI-FM checkpoint."""

    def load_context(self, context: Any) -> None:
        from tvifm.models.factory import load_run

        loaded = load_run(context.artifacts["checkpoint"])
        self.model, self.cfg, self.meta = loaded.model, loaded.config, loaded.meta

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        from tvifm.data.transforms import eval_transform

        rows = list(zip(model_input["modality"], model_input["input"], strict=True))
        out = np.zeros((len(rows), self.model.dim), dtype=np.float32)
        tf = eval_transform(self.cfg.data.image_size)
        with torch.no_grad():
            for kind in ("visible", "ir"):
                idx = [i for i, (m, _) in enumerate(rows) if m == kind]
                if idx:
                    x = torch.stack([tf(_decode(rows[i][1])) for i in idx])
                    out[idx] = self.model.embed(self.model.encode_image(x, kind)).numpy()
            idx = [i for i, (m, _) in enumerate(rows) if m == "text"]
            if idx:
                texts = self.model.encode_texts([str(rows[i][1]) for i in idx])
                out[idx] = self.model.embed(texts).numpy()
        unknown = {m for m, _ in rows} - {"visible", "ir", "text"}
        if unknown:
            raise ValueError(f"unknown modality {sorted(unknown)}; use visible, ir or text")
        return out


def _decode(value: Any) -> Image.Image:
    data = value if isinstance(value, bytes | bytearray) else base64.b64decode(value)
    return Image.open(io.BytesIO(data)).convert("RGB")


mlflow.models.set_model(TvifmPyfunc())
