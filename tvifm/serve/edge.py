"""Defences of the HTTP edge against slow, greedy and malformed requests (no Ray, no routes).

- :class:`ApiError`: an error response (status, ``detail``, headers); every one is sent as JSON.
- :class:`UploadGate`: how many requests with a body (search, gallery add) one ingress replica works on,
  in all (``serve.max_uploads``) and per client (``serve.max_uploads_per_client``). A request over
  either bound is answered at once (503 / 429 with ``Retry-After``) instead of waiting, so requests with
  a body never take every slot of the replica (``serve.ingress.max_ongoing_requests``) and ``/healthz``,
  ``/readyz`` and the reads always find one.
- :func:`read_body`: the body within ``serve.body_timeout_s`` (408 beyond) and ``serve.max_request_bytes``
  (413 beyond), so a client that stalls mid-body holds its slot for a bounded time only.
- :class:`JsonServerErrors`: ASGI middleware turning an unhandled exception into a JSON 500 without a
  traceback (the traceback goes to the replica's log).

A *client* is the peer address of the request as the HTTP server reports it (``scope["client"]``). All
clients share the one bearer token, so the token cannot tell them apart. Behind a reverse proxy (a
Kubernetes ingress controller) the peer is the proxy, unless the server trusts the proxy's
``X-Forwarded-For`` (uvicorn's ``FORWARDED_ALLOW_IPS``, which Ray Serve's HTTP proxy reads from its
environment): then it is the address the proxy reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
RETRY_AFTER_S = 1
SERVER_ERROR = "internal server error; the service logged the cause"


class ApiError(Exception):
    """An error response: HTTP status, message and optional headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def client_of(request: Request) -> str:
    """The client a request comes from: its peer address (see the module docstring)."""
    return request.client.host if request.client is not None else "unknown"


class UploadGate:
    """Counts the requests with a body in progress on this replica, in all and per client.

    The counts change only between awaits of one event loop, so no lock is needed.
    """

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total, self.max_per_client = max_total, max_per_client
        self.total = 0
        self.by_client: Counter[str] = Counter()

    @contextmanager
    def admit(self, client: str) -> Iterator[None]:
        """Hold one place for ``client`` while the body is read and worked on.

        Raises :class:`ApiError` 503 when the replica has ``max_total`` such requests, 429 when this
        client has ``max_per_client``; both carry ``Retry-After``.
        """
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if self.by_client[client] >= self.max_per_client:
            raise ApiError(
                429,
                f"this client already has {self.by_client[client]} requests with a body in progress "
                f"(serve.max_uploads_per_client={self.max_per_client}); wait for one to finish",
                retry,
            )
        if self.total >= self.max_total:
            raise ApiError(
                503,
                f"the service is working on {self.total} requests with a body "
                f"(serve.max_uploads={self.max_total}); retry shortly",
                retry,
            )
        self.total += 1
        self.by_client[client] += 1
        try:
            yield
        finally:
            self.total -= 1
            self.by_client[client] -= 1
            if self.by_client[client] <= 0:
                del self.by_client[client]


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body: 413 past ``limit`` bytes (declared or read), 408 when the whole body has not
    arrived ``timeout_s`` seconds after reading started."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(timeout_s):
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError as err:
        raise ApiError(
            408,
            f"the request body did not arrive within {timeout_s:g} s (serve.body_timeout_s); "
            "send the whole body without pausing",
            {"Connection": "close"},
        ) from err
    return b"".join(chunks)


class JsonServerErrors:
    """ASGI middleware: an exception no handler answered becomes ``500 {"detail": ...}`` (JSON, no
    traceback; the traceback is logged). After the response has started it is re-raised."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            log.exception("unhandled error answering %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = JSONResponse({"detail": SERVER_ERROR}, status_code=500)
            await response(scope, receive, send)


def error_response(err: ApiError) -> JSONResponse:
    """The JSON response of an :class:`ApiError`."""
    return JSONResponse({"detail": err.detail}, status_code=err.status, headers=err.headers)


def unexpected(err: Exception) -> ApiError:
    """A 400 for an exception raised while parsing or validating a request that no check anticipated
    (the cause is logged; the client gets its type only)."""
    log.warning("could not parse a request: %s", type(err).__name__, exc_info=True)
    return ApiError(
        400,
        f"the request could not be parsed ({type(err).__name__}); check it against /openapi.json",
    )
