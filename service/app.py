"""The app factory: settings and collaborators in, a FastAPI app out.

Requests pass three pure ASGI layers before FastAPI sees them, outermost first:
`HTTPMetrics` (latency and errors per endpoint, request ids and the access log: the only
`send` wrapper of ours), `AccessCheck` (API keys, scopes and rate limits; only when keys
are configured; refused requests are counted too) and `FastRoutes`, which serves
`POST /v1/decisions` and `POST /v1/feedback` itself and hands every other request to
FastAPI (docs, health, metrics, 404/405).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import re
import secrets
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
from service import __version__, admin_api, api, logs, streams_api
from service.access import AccessPolicy, KeySource
from service.catalog import Action, CatalogFile
from service.errors import (
    BadRequest,
    Forbidden,
    NextbestError,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    Unauthorized,
)
from service.metrics import Metrics
from service.rate_limit import MemoryRateLimiter
from service.runtime import Runtime
from service.schemas import RequestModels, request_models
from service.settings import Settings
from service.shutdown import stop_tasks

log = logging.getLogger(__name__)

ENDPOINTS = frozenset({"/v1/decisions", "/v1/decisions/batch", "/v1/feedback", "/metrics",
                       "/healthz", "/readyz",
                       "/v1/actions", "/v1/catalog", "/v1/catalog/audit",
                       *api.REPORT_ROUTES, *api.ADMIN_ROUTES, *api.CONSOLE_PAGES})


#: The catalog admin API and the console's catalog view need the admin scope (every method,
#: the paths and below them); the batch of decisions the decide scope; the reports any key
#: (the console's pages hold no data and stay open: a browser cannot send a key header).
ADMIN_SCOPES: dict[str, str] = {
    **{p: "admin" for p in admin_api.ADMIN_ROUTES},
    **{p + "/": "admin" for p in admin_api.ADMIN_ROUTES},
    **{p: "admin" for p in api.ADMIN_ROUTES},  # the console's catalog view
    "/v1/decisions/batch": "decide",
}


def endpoint_label(path: str) -> str:
    """The `endpoint` label of a request path (a bounded set: ids never become labels)."""
    if path in ENDPOINTS:
        return path
    if path.startswith("/v1/actions/"):
        return "/v1/actions/{action_id}"
    if path.startswith(streams_api.STREAMS_ROUTE + "/"):
        return streams_api.STREAMS_ROUTE + "/{stream}"
    return "other"


class HTTPMetrics:
    """Pure ASGI middleware: latency per endpoint, method, status and channel; request ids.

    Every request gets an id: the caller's `X-Request-ID` when it is a plausible one (up
    to 128 letters, digits and `-_.:`), else a new one (a random prefix of this process
    and a counter). It is echoed in the response's `X-Request-ID`, left in the request
    state and set in `logs.REQUEST_ID` for every log line written meanwhile. With
    `access_log` "errors" or "all", one log line per request (4xx/5xx only, or all).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: str = "off") -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log if access_log in ("errors", "all") else ""
        self._children: dict[tuple[str, str, int, str], Any] = {}
        self._prefix = secrets.token_hex(4)
        self._count = itertools.count(1)

    def _request_id(self, scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _REQUEST_ID.fullmatch(value):
                    return value.decode()
                break
        return f"{self._prefix}-{next(self._count):x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        request_id = self._request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        token = logs.REQUEST_ID.set(request_id)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope["path"]
            endpoint = endpoint_label(path)
            state = scope["state"]
            channel = state.get("channel", "")
            key = (endpoint, scope["method"], status, channel)
            child = self._children.get(key)
            if child is None:
                child = self.metrics.http_latency.labels(endpoint, key[1], str(status), channel)
                if len(self._children) < 10_000:
                    self._children[key] = child
            seconds = time.perf_counter() - start
            child.observe(seconds)
            if status >= 400:
                self.metrics.errors.labels(endpoint, str(status)).inc()
            if self.access_log and (status >= 400 or self.access_log == "all"):
                log.info("request", extra={
                    "method": scope["method"], "path": path[:200], "status": status,
                    "seconds": round(seconds, 6), "key": state.get("api_key"),
                    "channel": channel or None, "customer_id": state.get("customer_id"),
                })
            logs.REQUEST_ID.reset(token)


_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class AccessCheck:
    """Pure ASGI middleware: API keys, their scopes and their rate limits.

    `policy` says which scope a path needs (`service/access.py`); the key is looked up in
    `keys.ring` on every request, so a reload of the key file applies to the next one.
    401 without a key or with one not in force, 403 with a key that lacks the scope, 429
    with `Retry-After` once the key's rate limit is reached (through the runtime's
    limiter; in-process while the service starts). The key's name, never the key, is
    left in the request state for the logs. Keys without a limit cost no limiter call.
    """

    def __init__(self, app: ASGIApp, keys: KeySource, policy: AccessPolicy, metrics: Metrics) -> None:
        self.app = app
        self.keys = keys
        self.policy = policy
        self.metrics = metrics
        self._starting = MemoryRateLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        needed = self.policy.scope_for(scope["path"]) if scope["type"] == "http" else None
        if needed is None:
            await self.app(scope, receive, send)
            return
        presented = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                presented = value
                break
        if presented is None:
            await _refuse(send, Unauthorized("missing X-API-Key header"))
            return
        key = self.keys.ring.find(presented)
        if key is None:
            await _refuse(send, Unauthorized("the X-API-Key header holds no key in force"))
            return
        if needed and needed not in key.scopes:
            await _refuse(send, Forbidden(
                f"key {key.name!r} lacks the scope {needed!r} this path needs (it has "
                f"{', '.join(sorted(key.scopes))})"))
            return
        state = scope.setdefault("state", {})
        state["api_key"] = state["principal"] = key.name  # the principal: who, in audit trails
        if key.rate_limit is not None:
            runtime: Runtime | None = state.get("runtime")
            limiter = runtime.rate_limiter if runtime is not None else self._starting
            wait = await limiter.acquire(key, key.rate_limit)
            if wait > 0:
                self.metrics.rate_limited.labels(key.name).inc()
                await _refuse(send, RateLimited(
                    f"key {key.name!r} is limited to {key.rate_limit.describe()}; the next "
                    f"request may pass in {wait:.3f} s", retry_after_seconds=math.ceil(wait)))
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, error: NextbestError) -> None:
    body = orjson.dumps({"error": error.code, "message": error.message})
    await send({"type": "http.response.start", "status": error.status_code, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *api.error_headers(error),
    ]})
    await send({"type": "http.response.body", "body": body})


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
               handlers: Callable[[RequestModels], Mapping[str, api.Handler]] | None = None,
               route_scopes: Mapping[str, str] | None = None) -> FastAPI:
    """Build the app; the lifespan builds the runtime from `settings` at start-up.

    The request models follow the world `settings.config` names (`/docs` shows them).
    `handlers` (default `api.handlers(models)`) serve the `/v1` POST endpoints; the
    benchmark's cost breakdown (`load_tests/layers_app.py`) passes ones cut short at some
    layer (a function of the models). `route_scopes` adds paths (exact, or prefixes ending
    in "/") to the scopes of `service.access.ROUTE_SCOPES`. Keys that cannot be used
    (`access.AccessConfigError`) are refused here, before the app serves anything.
    """
    metrics = metrics or Metrics()
    world = configured_world(settings.config)
    models = request_models(world)
    def reloaded(result: str, n_keys: int) -> None:
        metrics.api_key_reloads.labels(result).inc()
        metrics.api_keys.set(n_keys)

    keys = KeySource(settings.api_keys.get_secret_value() if settings.api_keys else None,
                     settings.api_keys_file, on_reload=reloaded)
    metrics.api_keys.set(len(keys.load()))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        runtime = Runtime.build(settings, metrics, world, models)
        watch = None
        try:
            await runtime.start()
            if keys.file is not None:
                watch = asyncio.create_task(keys.watch(settings.api_keys_reload_seconds),
                                            name="api-keys")
            app.state.runtime = runtime
            yield {"runtime": runtime}
        finally:
            if watch is not None:
                await stop_tasks([watch], settings.shutdown_timeout_seconds)
            await runtime.stop()

    app = NextbestAPI(
        title="nextbest",
        version=__version__,
        summary="Next-best-action decisions in milliseconds, learning from every outcome.",
        lifespan=lifespan,
    )
    app.include_router(api.v1)
    app.include_router(admin_api.admin)
    app.include_router(streams_api.streams)
    app.include_router(api.ops)
    app.include_router(api.reports)
    app.include_router(api.pages)
    app.body_schemas = [*api.body_schemas(models), Action, CatalogFile]
    app.state.handlers = api.handlers(models) if handlers is None else dict(handlers(models))
    entry: ASGIApp = FastRoutes(functools.partial(FastAPI.__call__, app), app.state.handlers,
                                settings.max_body_bytes, settings.body_timeout_seconds)
    if keys.configured:
        routes = {**ADMIN_SCOPES, **(route_scopes or {})}
        entry = AccessCheck(entry, keys, AccessPolicy(routes, settings.protect_read), metrics)
    app.entry = HTTPMetrics(entry, metrics=metrics, access_log=settings.access_log)

    # The same mapping for requests FastAPI serves itself (docs, ops, unknown paths).
    async def error(request: Request, exc: Exception) -> JSONResponse:
        status, body = api.error_payload(exc, request.url.path)
        headers = {k.decode(): v.decode() for k, v in api.error_headers(exc)}
        return JSONResponse(body, status, headers=headers)

    for kind in (NextbestError, RequestValidationError, Exception):
        app.add_exception_handler(kind, error)
    return app
