"""HTTP routes: translate requests into engine calls and results into responses.

Nothing here decides anything; see `service/engine.py` for the decision path and
`service/feedback.py` for feedback.

The two `/v1` endpoints are plain functions of the raw body (`handlers(models)`, built
by the app factory from its world's request models): they validate it with pydantic's
JSON parser in one call (`parse_json`) and return a status and a JSON-able payload.
`service/app.py` serves them through `FastRoutes`, a pure ASGI layer in front of
FastAPI, because FastAPI's own per-request machinery (middleware stack, routing,
dependency solving, body parsing) cost more CPU than the decision itself. They are still
registered here as FastAPI routes (`LeanRoute`), so /docs documents them (request
schemas through `openapi_extra`, see `body_schemas`) and a request that reaches FastAPI
gets the same answer (the route calls the app's handler, `app.state.handlers`). A body
that does not validate raises `RequestValidationError`, so clients see FastAPI's 422
shape. The API key check is an ASGI middleware (`service/app.py`), installed only when
keys are set.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, TypeAdapter, ValidationError

from service.errors import (
    ActionNotInDecision,
    InvalidTimestamp,
    NextbestError,
    NotReady,
    UnknownDecision,
)
from service.runtime import Runtime
from service.schemas import (
    DecisionRequestBase,
    DecisionResponse,
    ErrorBody,
    FeedbackBatch,
    FeedbackEvent,
    FeedbackResponse,
    RequestModels,
)

log = logging.getLogger(__name__)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return render_json(content)


def render_json(content: object) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def runtime_in(state: dict[str, Any] | None) -> Runtime:
    """The runtime the lifespan put in the request state (503 while starting)."""
    runtime: Runtime | None = (state or {}).get("runtime")
    if runtime is None:
        raise NotReady("the service is starting")
    return runtime


# `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool.
async def get_runtime(request: Request) -> Runtime:
    return runtime_in(request.scope.get("state"))


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

T = TypeVar("T")
FeedbackBody = FeedbackEvent | FeedbackBatch
FEEDBACK_BODY: TypeAdapter[FeedbackBody] = TypeAdapter(FeedbackBody)


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse_json(body: bytes, content_type: str | None,
               adapter: TypeAdapter[T] | type[BaseModel]) -> Any:
    """The JSON body validated against a model; FastAPI's 422 error shape when it fails.

    Like FastAPI: a body without a content type is read as JSON, one with a non-JSON
    content type is refused, and error locations start with "body".
    """
    if content_type and not _is_json(content_type):
        raise RequestValidationError([{
            "type": "model_attributes_type", "loc": ("body",), "input": body,
            "msg": "Input should be a valid dictionary or object to extract fields from",
        }])
    if not body:
        raise RequestValidationError([
            {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        ])
    try:
        if isinstance(adapter, TypeAdapter):
            return adapter.validate_json(body)
        return adapter.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if isinstance(adapter, type):
            errors = [_naming_the_keys(adapter, e) for e in errors]
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _naming_the_keys(model: type[BaseModel], error: Any) -> Any:
    """An unknown key's error, with the keys its object allows (pydantic names none)."""
    if error["type"] != "extra_forbidden":
        return error
    for part in error["loc"][:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        inner = field.annotation if field is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return error
        model = inner
    return {**error, "msg": f"{error['msg']}; the keys allowed here are "
                            f"{', '.join(map(repr, model.model_fields))}"}


def error_payload(exc: Exception, path: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body for an exception; the one mapping every entry point uses."""
    if isinstance(exc, NextbestError):
        return exc.status_code, {"error": exc.code, "message": exc.message}
    if isinstance(exc, RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return 422, {"error": "invalid_request", "message": message, "detail": errors}
    log.error("unhandled error on %s", path, exc_info=exc)
    return 500, {"error": "internal_error", "message": "internal error"}


def error_headers(exc: Exception) -> list[tuple[bytes, bytes]]:
    """`Retry-After` for the errors that mean "try again" (503), nothing for the others."""
    if isinstance(exc, NotReady):
        return [(b"retry-after", str(exc.retry_after_seconds).encode())]
    return []


#: An endpoint as a function of the runtime, the raw body, its content type and the
#: request state (where it leaves the channel for the HTTP metrics): status and payload.
Handler = Callable[[Runtime, bytes, str | None, dict[str, Any]], Awaitable[tuple[int, Any]]]


def decision_handler(models: RequestModels) -> Handler:
    """`POST /v1/decisions` for the world of `models`."""
    model = models.decision

    async def decide(runtime: Runtime, body: bytes, content_type: str | None,
                     state: dict[str, Any]) -> tuple[int, Any]:
        request: DecisionRequestBase = parse_json(body, content_type, model)
        state["channel"] = request.channel
        return 200, await runtime.engine.decide(request)

    return decide


#: A single event's rejection reason -> the error it is answered with.
REJECTIONS: dict[str, type[NextbestError]] = {
    e.code: e for e in (UnknownDecision, ActionNotInDecision, InvalidTimestamp)}


async def feedback_handler(runtime: Runtime, body: bytes, content_type: str | None,
                           state: dict[str, Any]) -> tuple[int, Any]:
    parsed: FeedbackBody = parse_json(body, content_type, FEEDBACK_BODY)
    events = parsed.events if isinstance(parsed, FeedbackBatch) else [parsed]
    accepted, duplicates, rejected = await runtime.feedback.submit(events)
    if isinstance(parsed, FeedbackEvent) and rejected:
        raise REJECTIONS[rejected[0].reason](rejected[0].message)
    return 202, {"accepted": accepted, "duplicates": duplicates,
                 "rejected": [r.__dict__ for r in rejected]}


def handlers(models: RequestModels) -> dict[str, Handler]:
    """The `/v1` endpoints of an app whose world has these request models."""
    return {"/v1/decisions": decision_handler(models), "/v1/feedback": feedback_handler}


async def _serve(request: Request, path: str) -> Response:
    """The app's handler of `path` behind FastAPI (errors go to the app's exception handlers)."""
    handler: Handler = request.app.state.handlers[path]
    state = request.scope.setdefault("state", {})
    runtime = runtime_in(state)
    status, payload = await handler(
        runtime, await request.body(), request.headers.get("content-type"), state
    )
    return JSONResponse(payload, status_code=status)


def _ref(model: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model}"}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON request body (its models are in `body_schemas`)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def body_schemas(models: RequestModels) -> list[type[BaseModel]]:
    """Models documented as request bodies through `openapi_extra`; the app adds their JSON
    schemas to the OpenAPI components, as FastAPI does for the bodies it parses itself."""
    return [models.decision, FeedbackEvent, FeedbackBatch]

API_KEY_HEADER: dict[str, Any] = {
    "name": "x-api-key", "in": "header", "required": False,
    "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "X-Api-Key"},
}

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody}, 404: {"model": ErrorBody},
    422: {"description": "Invalid request"}, 503: {"model": ErrorBody},
}

class LeanRoute(APIRoute):
    """A route whose endpoint is called with the request alone and returns a Response.

    FastAPI still documents it (signature, `response_model`, `openapi_extra`) and still
    maps its exceptions through the app's handlers; it only skips dependency solving,
    body parsing and response validation, which the endpoint does itself.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint  # type: ignore[no-any-return]


v1 = APIRouter(prefix="/v1", responses=ERRORS, route_class=LeanRoute)
ops = APIRouter()


@v1.post("/decisions", response_model=DecisionResponse, tags=["decisions"],
         openapi_extra={**_json_body(_ref("DecisionRequest")), "parameters": [API_KEY_HEADER]})
async def decide(request: Request) -> Response:
    """Rank the next best actions for one customer at one touchpoint."""
    return await _serve(request, "/v1/decisions")


@v1.post("/feedback", status_code=202, response_model=FeedbackResponse, tags=["feedback"],
         openapi_extra={**_json_body({"anyOf": [_ref("FeedbackEvent"), _ref("FeedbackBatch")],
                                      "title": "Body"}),
                        "parameters": [API_KEY_HEADER]})
async def feedback(request: Request) -> Response:
    """Report outcomes of shown actions: one event, or `{"events": [...]}` (max 1000).

    A single event whose decision is unknown (never issued, or older than the decision
    TTL) gets 404; one whose action was not shown in that decision gets 422. In a batch,
    such events are returned under `rejected` and the others are accepted (202).
    """
    return await _serve(request, "/v1/feedback")


@ops.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@ops.get("/readyz", tags=["ops"], responses={503: {"model": ErrorBody}})
async def readyz(runtime: RuntimeDep) -> dict[str, object]:
    """Ready to serve decisions: model loaded, action features cached, warm-up done.

    Answers from the background health check, without a call to the state backend: a
    replica whose Redis is away still serves (degraded) and stays ready; the body says
    `state_backend: down` and `nextbest_state_backend_up` is 0. 503 only while starting
    or stopping.
    """
    if not runtime.ready:
        raise NotReady("warming up")
    return runtime.readiness()


@ops.get("/metrics", tags=["ops"])
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus exposition."""
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
