"""HTTP routes: translate requests into engine calls and results into responses.

Nothing here decides anything; see `service/engine.py` for the decision path and
`service/feedback.py` for feedback.

The two `/v1` routes are `LeanRoute`s: they take the raw request and validate its body
with pydantic's JSON parser in one call (`parse_body`), because FastAPI's own body
handling and dependency solving cost more than the decision itself. Their request schemas are still documented in
/docs through `openapi_extra` (see `BODY_SCHEMAS`), and a body that does not validate
still raises `RequestValidationError`, so clients see the same 422 as before. The API
key check is an ASGI middleware (`service/app.py`), installed only when keys are set.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, TypeAdapter, ValidationError

from service.errors import ActionNotInDecision, NotReady, UnknownDecision
from service.runtime import Runtime
from service.schemas import (
    DecisionRequest,
    DecisionResponse,
    ErrorBody,
    FeedbackBatch,
    FeedbackEvent,
    FeedbackResponse,
)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def runtime_of(request: Request) -> Runtime:
    """The runtime the lifespan put in the request state (503 while starting)."""
    runtime: Runtime | None = request.scope.get("state", {}).get("runtime")
    if runtime is None:
        raise NotReady("the service is starting")
    return runtime


# `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool.
async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

T = TypeVar("T")
FeedbackBody = FeedbackEvent | FeedbackBatch
_FEEDBACK: TypeAdapter[FeedbackBody] = TypeAdapter(FeedbackBody)


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def parse_body(request: Request, adapter: TypeAdapter[T] | type[BaseModel]) -> Any:
    """The JSON body validated against a model; FastAPI's 422 error shape when it fails.

    Like FastAPI: a body without a content type is read as JSON, one with a non-JSON
    content type is refused, and error locations start with "body".
    """
    body = await request.body()
    content_type = request.headers.get("content-type")
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
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _ref(model: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model}"}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON request body (its models are in BODY_SCHEMAS)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


#: Models documented as request bodies through `openapi_extra`; the app adds their JSON
#: schemas to the OpenAPI components, as FastAPI does for the bodies it parses itself.
BODY_SCHEMAS: list[type[BaseModel]] = [DecisionRequest, FeedbackEvent, FeedbackBatch]

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
    runtime = runtime_of(request)
    body: DecisionRequest = await parse_body(request, DecisionRequest)
    request.scope["state"]["channel"] = body.channel
    return JSONResponse(await runtime.engine.decide(body))


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
    runtime = runtime_of(request)
    body: FeedbackBody = await parse_body(request, _FEEDBACK)
    events = body.events if isinstance(body, FeedbackBatch) else [body]
    accepted, rejected = await runtime.feedback.submit(events)
    if isinstance(body, FeedbackEvent) and rejected:
        error = UnknownDecision if rejected[0].reason == UnknownDecision.code else ActionNotInDecision
        raise error(rejected[0].message)
    return JSONResponse(
        {"accepted": accepted, "rejected": [r.__dict__ for r in rejected]}, status_code=202
    )


@ops.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@ops.get("/readyz", tags=["ops"], responses={503: {"model": ErrorBody}})
async def readyz(runtime: RuntimeDep) -> dict[str, object]:
    """Ready: model loaded, warm-up decision done, state backend reachable."""
    if not runtime.ready:
        raise NotReady("warming up")
    try:
        await runtime.state.ping()
    except Exception as exc:
        raise NotReady(f"state backend unreachable: {exc}") from exc
    return {"status": "ready", "state": runtime.state.backend,
            "models": runtime.engine.model_versions}


@ops.get("/metrics", tags=["ops"])
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus exposition."""
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
