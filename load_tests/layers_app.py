"""nextbest with its `/v1` handlers cut short at one layer, for `nextbest bench --breakdown`.

`NEXTBEST_BENCH_LAYER` picks how much of the work a request does (each adds to the last):

- `http`:     the service's own HTTP path (uvicorn, its ASGI layers and HTTP metrics) and
              a fixed answer of a real decision's size;
- `parse`:    + validating the request body;
- `customer`: + the customer's features (in-process cache, a Redis read on a miss);
- `score`:    + one ONNX Runtime call of the offline model, on a fixed float32 matrix with
              one row per requested candidate (its cost does not depend on the values);
- `decide`:   the whole decision (`DecisionEngine.decide` without its record), i.e. + the
              rest of it: eligibility, encoding, correction, arbitration, selection, response;
- `record`:   + the decision record (decision log, in batches, to Redis).

In every layer feedback is validated at most, never accepted: the full service
(`nextbest serve`) is the next layer, adding feedback accepted to the stream and learned.
The runtime starts as in the service (Redis, model, background tasks) in every layer.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI

from features.config import shipped_world
from service import api
from service.app import create_app as create_service_app
from service.runtime import Runtime
from service.schemas import DecisionRequestBase, RequestModels
from service.settings import Settings

LAYERS = ("http", "parse", "customer", "score", "decide", "record")

_DECISION = {
    "decision_id": "0" * 32, "customer_id": None, "channel": "web", "placement": "home",
    "actions": [{"action_id": f"p{i:03d}", "rank": i, "score": 0.5, "propensity": 0.1,
                 "probability": 0.98, "value": 5.0, "explored": False} for i in range(1, 6)],
    "model_versions": {"offline": "nextbest-ranker:1", "online": "river-logreg:0",
                       "catalog": "demo"},
    "degraded": [],
}
_FEEDBACK = {"accepted": 1, "rejected": []}


@functools.cache
def _matrix(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).random((rows, len(shipped_world("retail").model_columns())), dtype=np.float32)


def handlers(layer: str) -> Callable[[RequestModels], dict[str, api.Handler]]:
    """The `/v1` handlers of one layer, as a function of the app's request models."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}: one of {', '.join(LAYERS)}")
    return functools.partial(_handlers, LAYERS.index(layer))


def _handlers(depth: int, models: RequestModels) -> dict[str, api.Handler]:
    def reaches(name: str) -> bool:
        return depth >= LAYERS.index(name)

    async def decision(runtime: Runtime, body: bytes, content_type: str | None,
                       state: dict[str, Any]) -> tuple[int, Any]:
        if not reaches("parse"):
            state["channel"] = "web"
            return 200, _DECISION
        request: DecisionRequestBase = api.parse_json(body, content_type, models.decision)
        state["channel"] = request.channel
        if reaches("decide"):
            return 200, await runtime.engine.decide(request, record=reaches("record"))
        if reaches("customer"):
            await runtime.engine.customers.get(request.customer_id)
        if reaches("score"):
            runtime.engine.scorer.logits(_matrix(len(request.candidates or ()) or 20))
        return 200, _DECISION

    async def feedback(runtime: Runtime, body: bytes, content_type: str | None,
                       state: dict[str, Any]) -> tuple[int, Any]:
        if reaches("parse"):
            api.parse_json(body, content_type, api.FEEDBACK_BODY)
        return 202, _FEEDBACK

    return {"/v1/decisions": decision, "/v1/feedback": feedback}


def create_app() -> FastAPI:
    """The app for `uvicorn --factory load_tests.layers_app:create_app` (settings from env)."""
    return create_service_app(Settings(), handlers=handlers(os.environ["NEXTBEST_BENCH_LAYER"]))
