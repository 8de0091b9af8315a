"""The app factory: settings and collaborators in, a FastAPI app out.

Requests pass three pure ASGI layers before FastAPI sees them, outermost first:
`HTTPMetrics` (latency and errors per endpoint, the only `send` wrapper of ours),
`APIKeyCheck` (only when API keys are configured; refused requests are counted too) and
`FastRoutes`, which serves `POST /v1/decisions` and `POST /v1/feedback` itself and
hands every other request to FastAPI (docs, health, metrics, 404/405).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.config import configured_world
from service import __version__, api
from service.errors import BadRequest, NextbestError, PayloadTooLarge, RequestTimeout, Unauthorized
from service.metrics import Metrics
from service.runtime import Runtime
from service.schemas import RequestModels, request_models
from service.settings import Settings

log = logging.getLogger(__name__)

ENDPOINTS = frozenset({"/v1/decisions", "/v1/feedback", "/metrics", "/healthz", "/readyz",
                       *api.REPORT_ROUTES, *api.ADMIN_ROUTES, *api.CONSOLE_PAGES})


class HTTPMetrics:
    """Pure ASGI middleware: latency per endpoint, method, status and channel."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope["path"]
            endpoint = path if path in ENDPOINTS else "other"
            channel = scope.get("state", {}).get("channel", "")
            key = (endpoint, scope["method"], status, channel)
            child = self._children.get(key)
            if child is None:
                child = self.metrics.http_latency.labels(endpoint, key[1], str(status), channel)
                if len(self._children) < 10_000:
                    self._children[key] = child
            child.observe(time.perf_counter() - start)
            if status >= 400:
                self.metrics.errors.labels(endpoint, str(status)).inc()


class APIKeyCheck:
    """Pure ASGI middleware: `/v1/*` needs an `X-API-Key` header holding one of `keys`."""

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        self.keys = frozenset(k.encode() for k in keys)
        error = Unauthorized("missing or invalid X-API-Key header")
        self._body = orjson.dumps({"error": error.code, "message": error.message})
        self._status = error.status_code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"x-api-key" and value in self.keys:
                await self.app(scope, receive, send)
                return
        await send({"type": "http.response.start", "status": self._status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._body)).encode()),
        ]})
        await send({"type": "http.response.body", "body": self._body})


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class FastRoutes:
    """Pure ASGI: the `/v1` POST endpoints straight to their handlers in `service.api`.

    Per request this reads the body (refusing more than `max_body_bytes` with 413),
    calls the handler and sends its JSON; errors get the same status and body as
    FastAPI's exception handlers give them (`api.error_payload`). Everything else goes
    to FastAPI.
    """

    def __init__(self, app: ASGIApp, handlers: Mapping[str, api.Handler], max_body_bytes: int,
                 body_timeout: float = 10.0) -> None:
        self.app = app
        self.handlers = dict(handlers)
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        headers: list[tuple[bytes, bytes]] = []
        try:
            body = await self._body(scope, receive)
            content_type = next((v.decode("latin-1") for k, v in scope["headers"]
                                 if k == b"content-type"), None)
            status, payload = await handler(api.runtime_in(state), body, content_type, state)
            data = api.render_json(payload)
        except ClientGone:
            return
        except Exception as exc:
            status, error = api.error_payload(exc, scope["path"])
            data = api.render_json(error)
            headers = api.error_headers(exc)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            *headers,
        ]})
        await send({"type": "http.response.body", "body": data})

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body: 413 at once when `Content-Length` declares too much, 413 when more
        arrives, 408 when it has not all arrived within `body_timeout`."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    raise BadRequest("Content-Length is not a number")
                if int(value) > self.max_body_bytes:
                    raise PayloadTooLarge(f"request body of {int(value)} bytes declared; the "
                                          f"limit is {self.max_body_bytes}")
        try:
            async with asyncio.timeout(self.body_timeout):
                return await self._read(receive)
        except TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within "
                                 f"{self.body_timeout:g} s") from None

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(f"request body larger than {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class NextbestAPI(FastAPI):
    #: The ASGI layers in front of FastAPI (set by `create_app`); None: FastAPI alone.
    entry: ASGIApp | None = None
    #: The request bodies `service.api` parses itself, in the app's world (`create_app`).
    body_schemas: Sequence[type[BaseModel]] = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.entry is not None and scope["type"] == "http":
            await self.entry(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema plus the request bodies that `service.api` parses itself."""
        if self.openapi_schema is None:
            schema = super().openapi()
            _, defs = models_json_schema(
                [(m, "validation") for m in self.body_schemas],
                ref_template="#/components/schemas/{model}",
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            schema["components"]["schemas"] = dict(sorted(components.items()))
        return self.openapi_schema  # type: ignore[return-value]


def create_app(settings: Settings, metrics: Metrics | None = None,
               handlers: Callable[[RequestModels], Mapping[str, api.Handler]] | None = None) -> FastAPI:
    """Build the app; the lifespan builds the runtime from `settings` at start-up.

    The request models follow the world `settings.config` names (`/docs` shows them).
    `handlers` (default `api.handlers(models)`) serve the `/v1` POST endpoints; the
    benchmark's cost breakdown (`load_tests/layers_app.py`) passes ones cut short at some
    layer (a function of the models).
    """
    metrics = metrics or Metrics()
    world = configured_world(settings.config)
    models = request_models(world)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        runtime = Runtime.build(settings, metrics, world, models)
        try:
            await runtime.start()
            app.state.runtime = runtime
            yield {"runtime": runtime}
        finally:
            await runtime.stop()

    app = NextbestAPI(
        title="nextbest",
        version=__version__,
        summary="Next-best-action decisions in milliseconds, learning from every outcome.",
        lifespan=lifespan,
    )
    app.include_router(api.v1)
    app.include_router(api.ops)
    app.include_router(api.reports)
    app.include_router(api.pages)
    app.body_schemas = api.body_schemas(models)
    app.state.handlers = api.handlers(models) if handlers is None else dict(handlers(models))
    entry: ASGIApp = FastRoutes(functools.partial(FastAPI.__call__, app), app.state.handlers,
                                settings.max_body_bytes, settings.body_timeout_seconds)
    if settings.api_key_set:
        entry = APIKeyCheck(entry, keys=settings.api_key_set)
    app.entry = HTTPMetrics(entry, metrics=metrics)

    # The same mapping for requests FastAPI serves itself (docs, ops, unknown paths).
    async def error(request: Request, exc: Exception) -> JSONResponse:
        status, body = api.error_payload(exc, request.url.path)
        headers = {k.decode(): v.decode() for k, v in api.error_headers(exc)}
        return JSONResponse(body, status, headers=headers)

    for kind in (NextbestError, RequestValidationError, Exception):
        app.add_exception_handler(kind, error)
    return app
