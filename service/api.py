"""HTTP routes: translate requests into engine calls and results into responses.

Nothing here decides anything; see `service/engine.py` for the decision path and
`service/feedback.py` for feedback.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.errors import ActionNotInDecision, NotReady, Unauthorized, UnknownDecision
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


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in a
# thread pool, a thread hop per request that costs more than the whole decision.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.state, "runtime", None)
    if runtime is None:
        raise NotReady("the service is starting")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def require_api_key(
    runtime: RuntimeDep, x_api_key: Annotated[str | None, Header()] = None
) -> None:
    keys = runtime.settings.api_key_set
    if keys and x_api_key not in keys:
        raise Unauthorized("missing or invalid X-API-Key header")


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody}, 404: {"model": ErrorBody},
    422: {"description": "Invalid request"}, 503: {"model": ErrorBody},
}

v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=ERRORS)
ops = APIRouter()


@v1.post("/decisions", response_model=DecisionResponse, tags=["decisions"])
async def decide(body: DecisionRequest, request: Request, runtime: RuntimeDep) -> Response:
    """Rank the next best actions for one customer at one touchpoint."""
    request.state.channel = body.channel
    return JSONResponse(await runtime.engine.decide(body))


@v1.post("/feedback", status_code=202, response_model=FeedbackResponse, tags=["feedback"])
async def feedback(body: FeedbackEvent | FeedbackBatch, runtime: RuntimeDep) -> Response:
    """Report outcomes of shown actions: one event, or `{"events": [...]}` (max 1000).

    A single event whose decision is unknown (never issued, or older than the decision
    TTL) gets 404; one whose action was not shown in that decision gets 422. In a batch,
    such events are returned under `rejected` and the others are accepted (202).
    """
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
