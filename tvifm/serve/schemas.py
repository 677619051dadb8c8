"""Request and response bodies of the HTTP API (pydantic), built for one :class:`ServeConfig`'s limits.

Requests forbid unknown fields; images travel as base64 strings in JSON (a ``data:image/...;base64,``
prefix is accepted) or as file parts in ``multipart/form-data``. No field takes a server-side path. A
search's ``filter`` is checked by :func:`tvifm.serve.filters.parse_filter` (its JSON schema here only
documents it).

The schemas state the rules the handlers enforce: bounds and patterns as JSON Schema keywords, the
inputs each query mode needs as ``if``/``then`` rules (:func:`mode_rules`), and what a schema cannot
count (bytes of metadata, pixels per request, duplicate ids) in the fields' descriptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, create_model

from tvifm.models.query import MODE_NEEDS, QUERY_MODES, QueryMode
from tvifm.serve import filters
from tvifm.serve.config import ServeConfig

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}$"
ID_RULE = "1-128 characters: letters, digits, ._:@+=- (not starting with a punctuation mark)"
DEFAULT_MODE = "ensemble"
ModeName = QueryMode
ModalityName = Literal["visible", "ir"]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
MetaInt = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]  # stored as JSON; a 64-bit integer at most
MetaValue = bool | MetaInt | FiniteFloat | str | None
ItemId = Annotated[str, Field(pattern=ID_PATTERN, description=ID_RULE)]
NON_BLANK = r"\S"  # the handlers strip texts; a blank one counts as absent


class Hit(BaseModel):
    """One ranked gallery item."""

    id: str
    score: float = Field(
        description="inner product of the unit query and gallery embeddings: their cosine similarity, in "
        "[-1, 1] (ensemble: the mean of its three modes' cosines)"
    )
    modality: ModalityName
    metadata: dict[str, Any]


class ModelOut(BaseModel):
    """The served model."""

    source: Literal["registry", "checkpoint"]
    name: str | None = Field(description="registered model name (registry sources)")
    version: str | None = Field(description="registered model version (registry sources)")
    alias: str | None = Field(description="registry alias the version was resolved from")
    config_hash: str
    fingerprint: str = Field(description="config hash and weights digest")
    stage: str
    dim: int
    image_size: list[int]


class SearchResponse(BaseModel):
    """Ranked gallery items for one query."""

    mode: ModeName
    top_k: int
    results: list[Hit]
    ir_caption: str | None = Field(description="the IR caption used (given or generated)")
    ir_caption_generated: bool
    gallery_version: int
    gallery_size: int
    model_fingerprint: str


class GalleryAddResponse(BaseModel):
    """What a bulk add changed."""

    added: int
    ids: list[str]
    replaced: list[str] = Field(description="ids that existed before and were replaced")
    gallery_version: int
    gallery_size: int


class GalleryDeleteResponse(BaseModel):
    """The removed item."""

    deleted: str
    gallery_version: int
    gallery_size: int


class GalleryStats(BaseModel):
    """The gallery's size and storage state."""

    size: int
    by_modality: dict[str, int]
    dim: int
    version: int
    fingerprint: str = Field(description="model that embedded the stored gallery")
    stale: bool = Field(description="true while the gallery must be re-embedded for the served model")
    segments: int
    dead_rows: int
    updated_at: str
    index: Literal["exact", "ivf", "hnsw"] = Field(description="serve.index")
    approximate: dict[str, bool] = Field(
        description="per modality: searched through the IVF/HNSW structure (else exactly: too few items)"
    )


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Readiness: the model is loaded and the gallery is searchable."""

    ready: bool
    reason: str | None = None
    gallery_size: int | None = None


class ErrorBody(BaseModel):
    """Every error response: a human-readable ``detail``."""

    detail: str


@dataclass(frozen=True)
class RequestModels:
    """The config-dependent request models."""

    search: type[BaseModel]
    search_fields: type[BaseModel]
    gallery_item: type[BaseModel]
    gallery_fields: type[BaseModel]
    gallery_add: type[BaseModel]


FORBID = ConfigDict(extra="forbid")

_SCALAR = [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]
_BOUND = {"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]}
FILTER_EXAMPLE = {
    "camera": [1, 2],
    "site": "north-gate",
    "timestamp": {"gte": "2024-05-01T00:00:00Z", "lt": "2024-05-02T00:00:00Z"},
}
FILTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Only items whose metadata match are ranked (applied before top_k). Each key maps to a value "
        "(equal), a non-empty list of values (equal to one of them) or a range of gt/gte/lt/lte bounds "
        "that are numbers or ISO-8601 date-times (a time window, e.g. on 'timestamp'); keys are ANDed. "
        "In multipart bodies: the same object as JSON text."
    ),
    "maxProperties": filters.MAX_KEYS,
    "additionalProperties": {
        "anyOf": [
            *_SCALAR,
            {"type": "array", "minItems": 1, "maxItems": filters.MAX_VALUES, "items": {"anyOf": _SCALAR}},
            {
                "type": "object",
                "properties": {op: _BOUND for op in filters.RANGE_OPS},
                "additionalProperties": False,
                "minProperties": 1,
            },
        ]
    },
    "examples": [FILTER_EXAMPLE, {"camera": 3}, {"timestamp": {"gt": 1714521600}}],
}
SEARCH_EXAMPLE = {
    "image": "<base64 IR image>",
    "description": "a man with short black hair in a red t-shirt and blue jeans",
    "mode": "ensemble",
    "top_k": 5,
    "filter": FILTER_EXAMPLE,
    "min_score": 0.5,
}


def _check_filter(value: Any) -> dict[str, Any] | None:
    """A valid filter object unchanged (None: no filter); a ValueError naming the problem otherwise."""
    if value is None:
        return None
    filters.parse_filter(value)
    return dict(value)


def _check_filter_text(value: Any) -> dict[str, Any] | None:
    """The filter of a multipart body: JSON text of a filter object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON ({err.msg}); send a JSON object") from err
    return _check_filter(value)


FilterField = Annotated[
    dict[str, Any] | None,
    PlainValidator(_check_filter),
    WithJsonSchema({"anyOf": [FILTER_SCHEMA, {"type": "null"}]}),
]
FilterText = Annotated[dict[str, Any] | None, PlainValidator(_check_filter_text)]
MinScore = Annotated[float | None, Field(ge=-1.0, le=1.0, allow_inf_nan=False)]


def request_models(cfg: ServeConfig) -> RequestModels:
    """Request models whose bounds (text length, ``top_k``, items per request) come from ``cfg``."""
    search, search_fields = _search_models(cfg)
    item, fields, add = _gallery_models(cfg)
    return RequestModels(search, search_fields, item, fields, add)


MIN_SCORE_HELP = (
    "drop hits whose score (cosine similarity) is below this; docs/serving.md gives thresholds calibrated "
    "on validation identities"
)
RERANK_HELP = (
    "re-rank the top serve.rerank_candidates hits (after the filter) by k-reciprocal neighbours "
    "(hits keep their cosine scores)"
)


def mode_rules(cfg: ServeConfig, image: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON Schema ``if``/``then`` rules of a search body: the fields the query mode needs.

    ``image`` is the schema of a present image (base64 text in JSON, a file part in multipart).
    ``ir_caption`` is required only when no IR captioner is configured (``serve.ir_captioner``).
    A body without ``mode`` is an ``ensemble`` query.
    """
    text = {"type": "string", "pattern": NON_BLANK}
    needs = {
        "image": ([m for m in QUERY_MODES if MODE_NEEDS[m].image], image),
        "description": ([m for m in QUERY_MODES if MODE_NEEDS[m].description], text),
        "ir_caption": ([m for m in QUERY_MODES if MODE_NEEDS[m].ir_caption and not cfg.ir_captioner], text),
    }
    rules = []
    for name, (modes, schema) in needs.items():
        if not modes:
            continue
        when: dict[str, Any] = {"properties": {"mode": {"enum": modes}}}
        if DEFAULT_MODE not in modes:
            when["required"] = ["mode"]
        rules.append({"if": when, "then": {"required": [name], "properties": {name: schema}}})
    return rules


def _mode_help(cfg: ServeConfig) -> str:
    caption = "" if cfg.ir_captioner else " and ir_caption"
    return (
        "Each mode needs its inputs (422 otherwise): ir and rgb2ir an image; text a description; fusion "
        f"and ensemble (the default) an image, a description{caption}. Blank texts count as absent."
    )


def _search_models(cfg: ServeConfig) -> tuple[type[BaseModel], type[BaseModel]]:
    text = Annotated[str | None, Field(max_length=cfg.max_text_chars)]
    top_k = Annotated[int, Field(ge=1, le=cfg.max_top_k)]
    common: dict[str, Any] = {
        "description": (text, Field(None, description="witness description of the person (T_rgb)")),
        "ir_caption": (text, Field(None, description="caption of the IR image (T_ir); generated if absent")),
        "mode": (ModeName, Field(DEFAULT_MODE, description="ir, text, fusion, ensemble (MER) or rgb2ir")),
        "top_k": (top_k, Field(cfg.default_top_k, description="number of results")),
        "min_score": (MinScore, Field(None, description=MIN_SCORE_HELP)),
        "rerank": (bool, Field(False, description=RERANK_HELP)),
    }
    image = (
        Annotated[str | None, Field(min_length=1)],
        Field(None, description=f"base64 image: IR (visible for rgb2ir); {_image_help(cfg)}"),
    )
    rules = mode_rules(cfg, {"type": "string", "minLength": 1})
    extra = ConfigDict(
        extra="forbid",
        json_schema_extra={"allOf": rules, "description": _mode_help(cfg), "examples": [SEARCH_EXAMPLE]},
    )
    search = create_model(
        "SearchRequest", __config__=extra, image=image, filter=(FilterField, None), **common
    )
    fields = create_model("SearchFields", __config__=FORBID, filter=(FilterText, None), **common)
    return search, fields


def _image_help(cfg: ServeConfig) -> str:
    return (
        f"at most {cfg.max_image_bytes} bytes and {cfg.max_image_pixels} pixels (413 beyond), "
        "JPEG, PNG, BMP, WEBP or TIFF (400 if it cannot be decoded)"
    )


def _items_help(cfg: ServeConfig) -> str:
    return (
        f"1 to {cfg.max_items_per_request} items, each id once (422 otherwise); the images together at "
        f"most {cfg.max_request_pixels} pixels (413 beyond)"
    )


def _gallery_models(cfg: ServeConfig) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    item_fields: dict[str, Any] = {
        "id": (ItemId, ...),
        "modality": (ModalityName, Field("visible", description="visible or ir")),
        "metadata": (
            dict[str, MetaValue],
            Field(
                default_factory=dict,
                description=f"scalar values, at most {cfg.max_metadata_bytes} bytes as JSON (422 beyond)",
            ),
        ),
    }
    image = (str, Field(min_length=1, description=f"base64 image; {_image_help(cfg)}"))
    item = create_model("GalleryItem", __config__=FORBID, image=image, **item_fields)
    fields = create_model("GalleryItemFields", __config__=FORBID, **item_fields)
    many = Field(min_length=1, max_length=cfg.max_items_per_request, description=_items_help(cfg))
    items = Annotated[list[item], many]  # type: ignore[valid-type]
    return item, fields, create_model("GalleryAddRequest", __config__=FORBID, items=(items, ...))


def search_form_schema(cfg: ServeConfig) -> dict[str, Any]:
    """OpenAPI schema of the ``multipart/form-data`` search body."""
    text = {"type": "string", "maxLength": cfg.max_text_chars}
    image = {"type": "string", "format": "binary"}
    return {
        "type": "object",
        "description": _mode_help(cfg) + " At most one image file part.",
        "allOf": mode_rules(cfg, image),
        "properties": {
            "image": {**image, "description": _image_help(cfg)},
            "description": text,
            "ir_caption": text,
            "mode": {"type": "string", "enum": list(QUERY_MODES)},
            "top_k": {"type": "integer", "minimum": 1, "maximum": cfg.max_top_k},
            "filter": {
                "type": "string",
                "description": "a JSON filter object (see SearchRequest.filter)",
                "examples": [json.dumps(FILTER_EXAMPLE)],
            },
            "min_score": {"type": "number", "minimum": -1.0, "maximum": 1.0, "description": MIN_SCORE_HELP},
            "rerank": {"type": "boolean", "description": RERANK_HELP},
        },
    }


def gallery_form_schema(cfg: ServeConfig) -> dict[str, Any]:
    """OpenAPI schema of the ``multipart/form-data`` gallery body (parallel lists, one entry per image)."""
    many = {"minItems": 1, "maxItems": cfg.max_items_per_request}
    image = {"type": "string", "format": "binary", "description": _image_help(cfg)}
    metadata = {
        "type": "string",
        "contentMediaType": "application/json",
        "description": "a JSON object of scalar values (integers of 64 bits at most), at most "
        f"{cfg.max_metadata_bytes} bytes as JSON (422 otherwise)",
    }
    return {
        "type": "object",
        "required": ["images", "ids"],
        "description": "Parallel lists: one id per image; modality once for all or once per image; "
        "metadata once per image or not at all (422 otherwise).",
        "properties": {
            "images": {"type": "array", "items": image, **many, "description": _items_help(cfg)},
            "ids": {"type": "array", "items": {"type": "string", "pattern": ID_PATTERN}, **many},
            "modality": {"type": "array", "items": {"type": "string", "enum": ["visible", "ir"]}, **many},
            "metadata": {"type": "array", "items": metadata, **many},
        },
    }
