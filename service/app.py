"""The app factory: settings and collaborators in, a FastAPI app out.

Two pure ASGI middlewares wrap the routes: `HTTPMetrics` (latency and errors per
endpoint, the only `send` wrapper of ours) and, only when API keys are configured,
`APIKeyCheck` inside it, so refused requests are counted too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import api
from service.errors import NextbestError, Unauthorized
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger(__name__)

ENDPOINTS = frozenset({"/v1/decisions", "/v1/feedback", "/metrics", "/healthz", "/readyz"})


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


class NextbestAPI(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema plus the request bodies that `service.api` parses itself."""
        if self.openapi_schema is None:
            schema = super().openapi()
            _, defs = models_json_schema(
                [(m, "validation") for m in api.BODY_SCHEMAS],
                ref_template="#/components/schemas/{model}",
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            schema["components"]["schemas"] = dict(sorted(components.items()))
        return self.openapi_schema  # type: ignore[return-value]


def create_app(settings: Settings, metrics: Metrics | None = None) -> FastAPI:
    """Build the app; the lifespan builds the runtime from `settings` at start-up."""
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        runtime = Runtime.build(settings, metrics)
        try:
            await runtime.start()
            app.state.runtime = runtime
            yield {"runtime": runtime}
        finally:
            await runtime.stop()

    app = NextbestAPI(
        title="nextbest",
        version="0.1.0",
        summary="Next-best-action decisions in milliseconds, learning from every outcome.",
        lifespan=lifespan,
    )
    app.include_router(api.v1)
    app.include_router(api.ops)
    if settings.api_key_set:
        app.add_middleware(APIKeyCheck, keys=settings.api_key_set)
    app.add_middleware(HTTPMetrics, metrics=metrics)  # added last: the outer one

    @app.exception_handler(NextbestError)
    async def nextbest_error(request: Request, exc: NextbestError) -> JSONResponse:
        return JSONResponse({"error": exc.code, "message": exc.message}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return JSONResponse(
            {"error": "invalid_request", "message": message, "detail": errors}, 422
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"error": "internal_error", "message": "internal error"}, 500)

    return app
