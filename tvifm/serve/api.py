"""The HTTP API (FastAPI), independent of Ray: routes, request parsing, limits, auth and errors.

:func:`create_api` builds the app around a :class:`Backend` (the Serve ingress passes one that calls the
embedding and gallery-index deployments through handles). Every client mistake is a 4xx with a JSON body
``{"detail": "..."}``: 400 undecodable image or malformed multipart, 401 missing/wrong bearer token, 404
unknown gallery id, 408 body not received within ``serve.body_timeout_s``, 413 request, image or pixels
too large, 415 unsupported content type, 422 invalid or missing fields, 429 too many requests with a body
from one client. 503 means the service itself cannot answer now (busy, gallery being re-embedded,
storage unreachable); 500 (JSON, no traceback) a bug. The defences against slow and greedy clients are
in :mod:`tvifm.serve.edge`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from tvifm.models.query import MODE_NEEDS, target_modality
from tvifm.serve import schemas
from tvifm.serve.config import ServeConfig
from tvifm.serve.edge import (
    ApiError,
    JsonServerErrors,
    UploadGate,
    client_of,
    error_response,
    read_body,
    unexpected,
)
from tvifm.serve.encoder import BadImageError, ImageTooLargeError, decode_image, image_pixels

JSON_TYPE = "application/json"
FORM_TYPE = "multipart/form-data"
API_TITLE = "tvifm retrieval"
API_VERSION = "1"
API_DESCRIPTION = """Text-enhanced visible-infrared person re-identification (TVI-FM).

Search a managed gallery of visible (and IR) person images with an infrared image, a witness description,
or both (modality ensemble retrieval), and manage the gallery. Images are sent as base64 in JSON or as
file parts in multipart/form-data. Errors are JSON objects with a `detail` message.
"""


SEARCH_DESCRIPTION = """Ranks the gallery items of the query mode's target modality by the inner product of
unit embeddings (cosine similarity). `filter` restricts the ranking to items whose metadata match (before
`top_k`: a search returns `top_k` hits whenever that many items match); `min_score` drops hits below a
threshold (docs/serving.md gives thresholds calibrated on validation identities); `rerank` re-orders the
top `serve.rerank_candidates` hits by k-reciprocal neighbours.
"""

READY_TIMEOUT_S = 5.0  # /readyz answers "not ready" rather than wait longer for the model or the index
T = TypeVar("T")


@dataclass
class Query:
    """A validated search query (``filter``: a filter object, :mod:`tvifm.serve.filters`)."""

    mode: str
    top_k: int
    image: bytes | None = None
    description: str | None = None
    ir_caption: str | None = None
    filter: dict[str, Any] | None = None
    min_score: float | None = None
    rerank: bool = False


@dataclass
class NewItem:
    """A validated gallery item to add."""

    id: str
    modality: str
    image: bytes
    metadata: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """What the API needs from the model and the gallery (each method may raise :class:`ApiError`)."""

    has_captioner: bool

    async def model_info(self) -> dict[str, Any]:
        """The served model's :class:`~tvifm.models.source.ModelInfo` as a dict."""
        ...

    async def query(self, query: Query) -> dict[str, Any]:
        """``{"embedding": (D,) array, "ir_caption": str | None, "generated": bool}``."""
        ...

    async def embed_gallery(self, items: list[NewItem]) -> Any:
        """``(N, D)`` gallery embeddings of the items' images."""
        ...

    async def search(
        self,
        embedding: Any,
        modality: str,
        top_k: int,
        *,
        where: dict[str, Any] | None = None,
        min_score: float | None = None,
        rerank: bool = False,
    ) -> dict[str, Any]:
        """``{"hits": [...], "version": int, "size": int}``: the top-``top_k`` items among those the
        filter ``where`` admits, without hits below ``min_score``, optionally re-ranked."""
        ...

    async def add(self, items: list[NewItem], embeddings: Any) -> dict[str, Any]:
        """``{"replaced": [...], "version": int, "size": int}``."""
        ...

    async def delete(self, item_id: str) -> dict[str, Any]:
        """``{"version": int, "size": int}``."""
        ...

    async def stats(self) -> dict[str, Any]:
        """:meth:`~tvifm.serve.gallery.PersistentGallery.stats`."""
        ...

    async def ready(self) -> dict[str, Any]:
        """``{"ready": bool, "reason": str | None, "gallery_size": int | None}``."""
        ...


# --- request reading ------------------------------------------------------------------------------------
def content_type(request: Request) -> str:
    """The media type of the request (415 unless JSON or multipart)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (JSON_TYPE, FORM_TYPE):
        raise ApiError(
            415, f"unsupported content type {media or '(none)'!r}; send {JSON_TYPE} or {FORM_TYPE}"
        )
    return media


async def parse_form(
    request: Request, body: bytes, max_files: int, max_fields: int, too_many: str
) -> FormData:
    """Parse a multipart body already read into memory: 400 when malformed, 422 (``too_many``) when it
    has more than ``max_files`` file parts or ``max_fields`` other fields."""

    async def stream() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, stream(), max_files=max_files, max_fields=max_fields)
    try:
        return await parser.parse()
    except MultiPartException as err:
        if err.message.startswith("Too many"):  # starlette's words for max_files / max_fields
            raise ApiError(422, f"{too_many} ({err.message})") from err
        raise ApiError(400, f"malformed multipart body: {err.message}") from err


def validation_message(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``field.path: message``."""
    parts = []
    for problem in err.errors(include_url=False):
        loc = ".".join(str(p) for p in problem["loc"])
        parts.append(f"{prefix}{loc}: {problem['msg']}" if loc or prefix else problem["msg"])
    return "; ".join(parts)


def validate(model: type[BaseModel], data: Any, prefix: str = "") -> BaseModel:
    """``model`` validated from a JSON body (bytes) or a mapping; 422 with the field messages."""
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as err:
        raise ApiError(422, validation_message(err, prefix)) from err


def decode_base64(text: str, what: str, limit: int) -> bytes:
    """Bytes of base64 text (a ``data:...;base64,`` prefix and line breaks allowed); 413 past ``limit``."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    text = "".join(text.split())  # line-wrapped base64 (e.g. from `base64` without -w0)
    if len(text) * 3 // 4 > limit + 3:
        raise ApiError(413, f"{what}: image exceeds the limit of {limit} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(422, f"{what}: not valid base64 ({err})") from err
    return check_image_bytes(data, what, limit)


def check_image_bytes(data: bytes, what: str, limit: int) -> bytes:
    """413 when an image has more than ``limit`` bytes."""
    if len(data) > limit:
        raise ApiError(413, f"{what}: image of {len(data)} bytes exceeds the limit of {limit} bytes")
    return data


def check_decodable(data: bytes, what: str, max_pixels: int) -> None:
    """400 when ``data`` is not a decodable image, 413 when it has too many pixels."""
    try:
        decode_image(data, max_pixels)
    except ImageTooLargeError as err:
        raise ApiError(413, f"{what}: {err}") from err
    except BadImageError as err:
        raise ApiError(400, f"{what}: {err}") from err


def check_images(images: list[tuple[bytes, str]], max_pixels: int, max_request_pixels: int) -> None:
    """Check the images of one request, ``(bytes, what)`` each: first every header (400 undecodable,
    413 over ``max_pixels`` per image or ``max_request_pixels`` in all), then decode each, one at a time."""
    total = 0
    for data, what in images:
        try:
            total += image_pixels(data, max_pixels)
        except ImageTooLargeError as err:
            raise ApiError(413, f"{what}: {err}") from err
        except BadImageError as err:
            raise ApiError(400, f"{what}: {err}") from err
    if total > max_request_pixels:
        raise ApiError(
            413,
            f"the request's images have {total} pixels in all, over the limit of {max_request_pixels} "
            "(serve.max_request_pixels); send fewer or smaller images per request",
        )
    for data, what in images:
        check_decodable(data, what, max_pixels)


def _clean(text: str | None) -> str | None:
    text = text.strip() if text is not None else None
    return text or None


# --- the search route ---------------------------------------------------------------------------------
class _Routes:
    """Route implementations sharing the config, request models and backend."""

    def __init__(self, cfg: ServeConfig, backend: Backend) -> None:
        self.cfg, self.backend = cfg, backend
        self.models = schemas.request_models(cfg)
        self.gate = UploadGate(cfg.max_uploads, cfg.max_uploads_per_client)

    async def read(self, request: Request) -> bytes:
        return await read_body(request, self.cfg.max_request_bytes, self.cfg.body_timeout_s)

    @staticmethod
    async def checked(step: Awaitable[T]) -> T:
        """``step`` (parsing and validating a request) with any exception no check anticipated turned
        into a 400, so a malformed request never gets a 500."""
        try:
            return await step
        except (ApiError, MemoryError):
            raise
        except Exception as err:
            raise unexpected(err) from err

    async def parse_search(self, request: Request) -> Query:
        media = content_type(request)
        body = await self.read(request)
        if media == JSON_TYPE:
            req = validate(self.models.search, body)
            image = req.image
            data = decode_base64(image, "image", self.cfg.max_image_bytes) if image is not None else None
            return self._query(req, data)
        form = await parse_form(request, body, 1, 12, "give at most one 'image' file part and 12 text fields")
        fields = {k: v for k, v in form.multi_items() if k != "image"}
        if any(not isinstance(v, str) for v in fields.values()):
            raise ApiError(422, "only 'image' may be a file part")
        req = validate(self.models.search_fields, fields)
        upload = form.get("image")
        if upload is not None and not isinstance(upload, UploadFile):
            raise ApiError(422, "image: must be a file part of the multipart body")
        data = await upload.read() if upload is not None else None
        return self._query(req, check_image_bytes(data, "image", self.cfg.max_image_bytes) if data else data)

    @staticmethod
    def _query(req: Any, image: bytes | None) -> Query:
        text = _clean(req.description), _clean(req.ir_caption)
        return Query(req.mode, req.top_k, image, *text, req.filter, req.min_score, req.rerank)

    def check_needs(self, q: Query) -> None:
        needs, missing = MODE_NEEDS[q.mode], []
        if needs.image and q.image is None:
            kind = "visible" if q.mode == "rgb2ir" else "IR"
            missing.append(f"an {kind} image ('image')")
        if needs.description and q.description is None:
            missing.append("a description ('description', the witness text T_rgb)")
        if needs.ir_caption and q.ir_caption is None and not self.backend.has_captioner:
            missing.append("an IR caption ('ir_caption'; no IR captioner is configured to generate one)")
        if missing:
            raise ApiError(422, f"mode '{q.mode}' needs " + " and ".join(missing))

    async def search(self, request: Request) -> dict[str, Any]:
        with self.gate.admit(client_of(request)):
            q = await self.checked(self.valid_search(request))
            return await self.answer(q)

    async def valid_search(self, request: Request) -> Query:
        q = await self.parse_search(request)
        self.check_needs(q)
        if not MODE_NEEDS[q.mode].image:
            q.image = None  # e.g. an image sent with mode=text is ignored
        if q.image is not None:
            limits = (self.cfg.max_image_pixels, self.cfg.max_request_pixels)
            await asyncio.to_thread(check_images, [(q.image, "image")], *limits)
        return q

    async def answer(self, q: Query) -> dict[str, Any]:
        embedded = await self.backend.query(q)
        found = await self.backend.search(
            embedded["embedding"],
            target_modality(q.mode),
            q.top_k,
            where=q.filter,
            min_score=q.min_score,
            rerank=q.rerank,
        )
        info = await self.backend.model_info()
        return {
            "mode": q.mode,
            "top_k": q.top_k,
            "results": found["hits"],
            "ir_caption": embedded.get("ir_caption"),
            "ir_caption_generated": bool(embedded.get("generated")),
            "gallery_version": found["version"],
            "gallery_size": found["size"],
            "model_fingerprint": info["fingerprint"],
        }

    # --- gallery ------------------------------------------------------------------------------------------
    async def parse_items(self, request: Request) -> list[NewItem]:
        media = content_type(request)
        body = await self.read(request)
        if media == JSON_TYPE:
            req = validate(self.models.gallery_add, body)
            limit = self.cfg.max_image_bytes
            return [
                NewItem(
                    it.id, it.modality, decode_base64(it.image, f"items[{i}] ({it.id})", limit), it.metadata
                )
                for i, it in enumerate(req.items)
            ]
        n = self.cfg.max_items_per_request
        too_many = f"images: at most {n} items per request, with one id, modality and metadata each"
        form = await parse_form(request, body, n, 3 * n + 4, too_many)
        return await self._form_items(form)

    async def _form_items(self, form: FormData) -> list[NewItem]:
        unknown = sorted(set(form.keys()) - {"images", "ids", "modality", "metadata"})
        if unknown:
            raise ApiError(422, f"unknown form field {unknown[0]!r}; fields: images, ids, modality, metadata")
        images, ids = form.getlist("images"), form.getlist("ids")
        if not images or any(not isinstance(f, UploadFile) for f in images):
            raise ApiError(422, "images: give one or more image file parts")
        if len(images) > self.cfg.max_items_per_request:
            raise ApiError(422, f"images: at most {self.cfg.max_items_per_request} items per request")
        modality = _per_item(form.getlist("modality"), len(images), "modality", default="visible")
        metadata = _per_item(form.getlist("metadata"), len(images), "metadata", default="{}", broadcast=False)
        if len(ids) != len(images):
            raise ApiError(422, f"ids: give one id per image ({len(images)} images, {len(ids)} ids)")
        items = []
        for i, upload in enumerate(images):
            data = check_image_bytes(await upload.read(), f"items[{i}]", self.cfg.max_image_bytes)
            fields = {"id": ids[i], "modality": modality[i], "metadata": _json_object(metadata[i], i)}
            item = validate(self.models.gallery_fields, fields, prefix=f"items[{i}].")
            items.append(NewItem(item.id, item.modality, data, item.metadata))
        return items

    def check_items(self, items: list[NewItem]) -> None:
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.id in seen:
                raise ApiError(422, f"items[{i}]: id {item.id!r} appears more than once in the request")
            seen.add(item.id)
            size = len(json.dumps(item.metadata))
            if size > self.cfg.max_metadata_bytes:
                limit = self.cfg.max_metadata_bytes
                raise ApiError(422, f"items[{i}].metadata: {size} bytes as JSON exceeds the limit of {limit}")
        images = [(item.image, f"items[{i}] ({item.id})") for i, item in enumerate(items)]
        check_images(images, self.cfg.max_image_pixels, self.cfg.max_request_pixels)

    async def valid_items(self, request: Request) -> list[NewItem]:
        items = await self.parse_items(request)
        await asyncio.to_thread(self.check_items, items)
        return items

    async def add(self, request: Request) -> dict[str, Any]:
        with self.gate.admit(client_of(request)):
            items = await self.checked(self.valid_items(request))
            return await self.store(items)

    async def store(self, items: list[NewItem]) -> dict[str, Any]:
        embeddings = await self.backend.embed_gallery(items)
        result = await self.backend.add(items, embeddings)
        return {
            "added": len(items),
            "ids": [it.id for it in items],
            "replaced": result["replaced"],
            "gallery_version": result["version"],
            "gallery_size": result["size"],
        }

    async def delete(self, item_id: str) -> dict[str, Any]:
        result = await self.backend.delete(item_id)
        return {"deleted": item_id, "gallery_version": result["version"], "gallery_size": result["size"]}

    async def model(self) -> dict[str, Any]:
        info = dict(await self.backend.model_info())
        info["source"] = "registry" if info.get("name") else "checkpoint"
        return info


def _per_item(values: list[Any], n: int, name: str, default: str, broadcast: bool = True) -> list[str]:
    if any(not isinstance(v, str) for v in values):
        raise ApiError(422, f"{name}: must be text fields, not files")
    if not values:
        return [default] * n
    if broadcast and len(values) == 1:
        return values * n
    if len(values) != n:
        raise ApiError(422, f"{name}: give {'one value or ' if broadcast else ''}one value per image ({n})")
    return values


_ANY = TypeAdapter(Any)


def parse_json(text: str) -> Any:
    """JSON text parsed by pydantic's parser: nesting is bounded and over-long numbers are refused
    (``ValueError``), where :func:`json.loads` raises ``RecursionError`` or builds any integer."""
    try:
        return _ANY.validate_json(text)
    except ValidationError as err:
        raise ValueError(err.errors(include_url=False)[0]["msg"]) from err


def _json_object(text: str, i: int) -> Any:
    try:
        value = parse_json(text)
    except ValueError as err:
        raise ApiError(422, f"items[{i}].metadata: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ApiError(422, f"items[{i}].metadata: must be a JSON object")
    return value


# --- the app --------------------------------------------------------------------------------------------
def bearer_check(token: str | None) -> Callable[..., Any] | None:
    """A dependency that answers 401 unless the request carries ``Authorization: Bearer <token>``."""
    if token is None:
        return None
    scheme = HTTPBearer(auto_error=False, description="the token of serve.auth_token_file or auth_token_env")
    expected = token.encode()

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:  # noqa: B008
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})

    return check


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": schemas.ErrorBody} for code in codes}


def _body(json_schema: str, form_schema: dict[str, Any]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{json_schema}"}
    return {
        "requestBody": {
            "required": True,
            "content": {JSON_TYPE: {"schema": ref}, FORM_TYPE: {"schema": form_schema}},
        }
    }


def create_api(cfg: ServeConfig, backend: Backend, token: str | None = None) -> FastAPI:
    """The FastAPI app of the retrieval service (OpenAPI at ``/openapi.json``, docs at ``/docs``)."""
    app = FastAPI(title=API_TITLE, version=API_VERSION, description=API_DESCRIPTION)
    routes = _Routes(cfg, backend)
    check = bearer_check(token)
    deps = [Depends(check)] if check is not None else []
    auth = (401,) if check is not None else ()
    v1 = APIRouter(prefix="/v1", dependencies=deps)
    _add_v1_routes(v1, routes, cfg, auth)
    app.include_router(v1)
    _add_probes(app, backend)
    _add_error_handlers(app)
    app.add_middleware(JsonServerErrors)
    _install_openapi(app, [routes.models.search, routes.models.gallery_add])
    return app


# 400 bad image or multipart, 408 body too slow, 413 too large, 415 media type, 422 invalid fields,
# 429 too many uploads from this client, 500 a bug, 503 busy or unavailable
UPLOAD_ERRORS = (400, 408, 413, 415, 422, 429, 500, 503)
ItemIdPath = Annotated[str, Path(pattern=schemas.ID_PATTERN, description="the item's id: " + schemas.ID_RULE)]


def _add_v1_routes(v1: APIRouter, routes: _Routes, cfg: ServeConfig, auth: tuple[int, ...]) -> None:
    @v1.post(
        "/search",
        response_model=schemas.SearchResponse,
        responses=_errors(*auth, *UPLOAD_ERRORS),
        openapi_extra=_body("SearchRequest", schemas.search_form_schema(cfg)),
        summary="Rank gallery items for an IR (or visible) image and/or a description",
        description=SEARCH_DESCRIPTION,
    )
    async def search(request: Request) -> dict[str, Any]:
        return await routes.search(request)

    @v1.post(
        "/gallery",
        response_model=schemas.GalleryAddResponse,
        responses=_errors(*auth, *UPLOAD_ERRORS),
        openapi_extra=_body("GalleryAddRequest", schemas.gallery_form_schema(cfg)),
        summary="Add or replace gallery items (images with ids, modality and metadata)",
    )
    async def add(request: Request) -> dict[str, Any]:
        return await routes.add(request)

    @v1.get("/gallery/stats", response_model=schemas.GalleryStats, responses=_errors(*auth, 500, 503))
    async def stats() -> dict[str, Any]:
        return await routes.backend.stats()

    @v1.delete(
        "/gallery/{item_id}",
        response_model=schemas.GalleryDeleteResponse,
        responses=_errors(*auth, 404, 422, 500, 503),
    )
    async def delete(item_id: ItemIdPath) -> dict[str, Any]:
        return await routes.delete(item_id)

    @v1.get("/model", response_model=schemas.ModelOut, responses=_errors(*auth, 500, 503))
    async def model() -> dict[str, Any]:
        return await routes.model()


def _add_probes(app: FastAPI, backend: Backend) -> None:
    @app.get("/healthz", response_model=schemas.Health, summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=schemas.Readiness,
        responses={503: {"model": schemas.Readiness}},
        summary="Readiness",
    )
    async def readyz() -> JSONResponse:
        try:
            state = await asyncio.wait_for(backend.ready(), READY_TIMEOUT_S)
        except TimeoutError:
            reason = f"the model or the gallery index did not answer within {READY_TIMEOUT_S:g} s"
            state = {"ready": False, "reason": reason, "gallery_size": None}
        return JSONResponse(state, status_code=200 if state["ready"] else 503)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        return JSONResponse({"detail": "; ".join(lines)}, status_code=422)


def _install_openapi(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the manually parsed request bodies' JSON schemas to the OpenAPI components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
