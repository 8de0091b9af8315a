"""HTTP routes: translate requests into engine calls and results into responses.

Nothing here decides anything; see `service/engine.py` for the decision path and
`service/feedback.py` for feedback.

The `/v1` POST endpoints are plain functions of the raw body (`handlers(models)`, built
by the app factory from its world's request models): they validate it with pydantic's
JSON parser in one call (`parse_json`) and return a status and a JSON-able payload.
`service/app.py` serves them through `FastRoutes`, a pure ASGI layer in front of
FastAPI, because FastAPI's own per-request machinery (middleware stack, routing,
dependency solving, body parsing) cost more CPU than the decision itself. They are still
registered here as FastAPI routes (`LeanRoute`), so /docs documents them (request
schemas through `openapi_extra`, see `body_schemas`) and a request that reaches FastAPI
gets the same answer (the route calls the app's handler, `app.state.handlers`). A body
that does not validate raises `RequestValidationError`, so clients see FastAPI's 422
shape. The API key check (keys, scopes, rate limits) is an ASGI middleware
(`service/app.py`, `AccessCheck`), installed only when keys are configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from service import console
from service.batch import decide_many
from service.errors import (
    ActionNotInDecision,
    InvalidTimestamp,
    NextbestError,
    NotReady,
    PayloadTooLarge,
    RateLimited,
    UnknownDecision,
)
from service.runtime import Runtime
from service.schemas import (
    DecisionBatchResponse,
    DecisionRequestBase,
    DecisionResponse,
    ErrorBody,
    FeedbackBatch,
    FeedbackEvent,
    FeedbackResponse,
    RequestModels,
)
from service.touchpoints import TouchpointReport, touchpoint_report
from service.uplift import UpliftReport, uplift_report

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


class DecisionBatch(BaseModel):
    """The batch's envelope; each request is validated on its own (errors by index)."""

    model_config = ConfigDict(extra="forbid")

    requests: list[dict[str, Any]] = Field(min_length=1)


BATCH_BODY = DecisionBatch


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
    """`Retry-After` for the errors that mean "try again" (503, 429), nothing for the others."""
    if isinstance(exc, NotReady | RateLimited):
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
        state["customer_id"] = request.customer_id  # for the access log (hashed there)
        return 200, await runtime.engine.decide(request)

    return decide


def batch_handler(models: RequestModels) -> Handler:
    """`POST /v1/decisions/batch`: `{"requests": [...]}`, each a decision request of the
    world of `models`; the answer lists each one's decision or error by index."""
    model = models.decision

    async def decide_batch(runtime: Runtime, body: bytes, content_type: str | None,
                           state: dict[str, Any]) -> tuple[int, Any]:
        items: list[Any] = parse_json(body, content_type, BATCH_BODY).requests
        most = runtime.settings.batch_max_requests
        if len(items) > most:
            raise PayloadTooLarge(f"{len(items)} requests in one batch; the limit is {most} "
                                  "(NEXTBEST_BATCH_MAX_REQUESTS)")
        requests: list[DecisionRequestBase | BaseException] = []
        for i, item in enumerate(items):
            try:
                requests.append(model.model_validate(item))
            except ValidationError as exc:
                requests.append(RequestValidationError(
                    [{**e, "loc": ("body", "requests", i, *e["loc"])}
                     for e in exc.errors(include_url=False)]))
        results = []
        for i, outcome in enumerate(await decide_many(runtime.engine, requests)):
            if isinstance(outcome, dict):
                results.append({"index": i, "status": 200, "decision": outcome})
            else:
                status, error = error_payload(outcome, "/v1/decisions/batch")  # type: ignore[arg-type]
                results.append({"index": i, "status": status, **error})
        failed = sum(r["status"] != 200 for r in results)
        return 200, {"results": results, "decided": len(results) - failed, "failed": failed}

    return decide_batch


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
    return {"/v1/decisions": decision_handler(models), "/v1/feedback": feedback_handler,
            "/v1/decisions/batch": batch_handler(models)}


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
    401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody},
    429: {"model": ErrorBody},
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


@v1.post("/decisions/batch", response_model=DecisionBatchResponse, tags=["decisions"],
         responses={413: {"model": ErrorBody}},
         openapi_extra={**_json_body({"type": "object", "title": "DecisionBatch",
                                      "required": ["requests"], "additionalProperties": False,
                                      "properties": {"requests": {
                                          "type": "array", "minItems": 1,
                                          "items": _ref("DecisionRequest")}}}),
                        "parameters": [API_KEY_HEADER]})
async def decide_batch(request: Request) -> Response:
    """Decide for many customers at once (outbound channels: email, ...).

    `{"requests": [...]}`, at most NEXTBEST_BATCH_MAX_REQUESTS (413 above it). Each is
    decided as `POST /v1/decisions` would (rules, caps, budgets, the decision log) and
    answered by index: its decision, or the error it alone would have got.
    """
    return await _serve(request, "/v1/decisions/batch")


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


# --- reports and the console -----------------------------------------------------------
#: Read-only reports over the cluster-wide counts (service/insights.py).
REPORT_ROUTES = frozenset({"/v1/reports/uplift", "/v1/insights/touchpoints"})
#: The console's data, for the people who run the service (the admin scope, once keys
#: have scopes); the console's page calls these and the report routes with its key.
ADMIN_ROUTES = frozenset({"/v1/console/catalog"})
#: The console's page and script: static, no data in them (a browser loading them sends
#: no API key; the page asks for one and sends it with its calls).
CONSOLE_PAGES = frozenset({"/console", "/console/console.js"})

reports = APIRouter(prefix="/v1", responses=ERRORS)
pages = APIRouter(include_in_schema=False)

Since = Annotated[datetime | None, Query(
    description="Count from the hour of this time (ISO 8601; without a zone: UTC). "
    "Default: everything retained (NEXTBEST_INSIGHTS_RETENTION_HOURS).")]
Level = Annotated[float, Query(gt=0.5, lt=1.0, description="Confidence level of the intervals.")]


def _epoch(ts: datetime | None) -> float | None:
    if ts is None:
        return None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def _insights(runtime: Runtime) -> Any:
    if runtime.insights is None:
        raise NotReady("insights are not counted by this runtime")
    return runtime.insights


@reports.get("/reports/uplift", response_model=UpliftReport, tags=["reports"],
             openapi_extra={"parameters": [API_KEY_HEADER]})
async def uplift(runtime: RuntimeDep, since: Since = None, level: Level = 0.95) -> UpliftReport:
    """nextbest against the control group: acceptance rate and value per decision for each
    group and channel, with intervals, and the uplift between them (docs/insights.md)."""
    counts, start = await _insights(runtime).counts(_epoch(since))
    s = runtime.settings
    return uplift_report(counts, start, time.time(), level, s.control_share, s.control_policy)


@reports.get("/insights/touchpoints", response_model=TouchpointReport, tags=["reports"],
             openapi_extra={"parameters": [API_KEY_HEADER]})
async def touchpoints(
    runtime: RuntimeDep, since: Since = None,
    group: Annotated[Literal["treatment", "control"] | None, Query(
        description="Count one group only (default: both).")] = None,
    min_impressions: Annotated[int, Query(ge=1, le=1_000_000, description="Fewest impressions "
                                          "a touchpoint needs to be a pleasure or pain point.")] = 30,
    top: Annotated[int, Query(ge=1, le=100, description="Pleasure and pain points listed.")] = 5,
) -> TouchpointReport:
    """Impressions, acceptance, dismissal and value per channel x journey stage (x action
    kind), with the pleasure points and the pain points (docs/insights.md)."""
    counts, start = await _insights(runtime).counts(_epoch(since))
    return touchpoint_report(counts, start, time.time(), group, min_impressions, top)


@reports.get("/console/catalog", response_model=console.CatalogView, tags=["console"],
             openapi_extra={"parameters": [API_KEY_HEADER]})
async def console_catalog(runtime: RuntimeDep) -> console.CatalogView:
    """The catalog serving now: each action with its rules, caps and the budget it has left."""
    return await console.catalog_view(runtime.engine.catalog, runtime.engine.limiter,
                                      runtime.requests.decision.placements_by_channel)


@pages.get("/console")
async def console_page() -> HTMLResponse:
    """The console (docs/insights.md): one HTML page and one script, no build step."""
    return HTMLResponse(console.page())


@pages.get("/console/console.js")
async def console_script() -> Response:
    return Response(console.script(), media_type="text/javascript")
