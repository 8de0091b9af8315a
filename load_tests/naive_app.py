"""The naive baseline: the decision built the way Feast's tutorials read features.

Per request: Feast SDK `FeatureStore.get_online_features` for the customer and again for
the candidate (and basket) actions, the shared encoder (features/encoding.py), one
onnxruntime call over the candidates, a River `LogisticRegression.predict_proba_one`
per candidate, then priority = propensity x value x context weight x lever and top-k in
Python. Feedback is joined with an in-process decision record and learned with River's
`learn_one` on the request path. Handlers are plain `def` (FastAPI's thread pool), as a
tutorial's sync SDK calls would be.

It accepts the same request bodies as nextbest's /v1/decisions and /v1/feedback and runs
on the same server stack (uvicorn, uvloop, httptools, one worker). Configured from the
environment: NAIVE_DATA_DIR, NAIVE_MODELS_DIR, NAIVE_REDIS_URL. Run it with
`uvicorn --factory load_tests.naive_app:create_app`.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from river import linear_model, optim

from features.config import shipped_world
from features.encoding import Encoder
from service.catalog import load_catalog
from service.learner import OUTCOME_LABELS
from service.manifest import MODEL_FILE, read_manifest
from service.model import resolve_model_dir
from service.schemas import DecisionRequestBase, FeedbackEvent, request_models

# The naive baseline serves the retail world, whose encoding it calls.
if TYPE_CHECKING:
    DecisionRequest = DecisionRequestBase
else:
    DecisionRequest = request_models(shipped_world("retail")).decision

_RETAIL = shipped_world("retail")
CUSTOMER_JOIN_KEY = _RETAIL.join_key("customer")
ACTION_JOIN_KEY = _RETAIL.join_key(_RETAIL.action_entity)
CUSTOMER_REFS = [f"{view}:{f}" for view, fs in _RETAIL.views_of("customer").items() for f, _ in fs]
ACTION_REFS = [f"{view}:{f}" for view, fs in _RETAIL.views_of(_RETAIL.action_entity).items()
               for f, _ in fs]
_ACTION_FEATURES = list(_RETAIL.features_of(_RETAIL.action_entity))
_MAX_DECISIONS = 200_000


class NaiveRanker:
    def __init__(self, data_dir: Path, models_dir: Path, redis_url: str) -> None:
        from features.config import shipped_world
        from features.store import feature_store

        world = shipped_world("retail")
        self.store = feature_store(world, data_dir, redis_url)
        self.catalog = load_catalog(data_dir / "catalog.json", world)
        directory = resolve_model_dir(models_dir, "nextbest-ranker", None)
        self.manifest = read_manifest(directory)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # more threads only add p99 spikes at these batch sizes
        self.session = ort.InferenceSession(
            str(directory / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(0.05), intercept_lr=0.01)
        self.model._weights["z"] = 1.0
        self.lock = threading.Lock()
        self.encoder = Encoder(shipped_world("retail"))
        self.decisions: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def _features(self, action_id: str, channel: str, placement: str, stage: str, z: float) -> dict[str, float]:
        a = f"a:{action_id}"
        return {"z": z, a: 1.0, f"{a}|c:{channel}": 1.0, f"{a}|p:{placement}": 1.0,
                f"{a}|s:{stage}": 1.0}

    def decide(self, req: DecisionRequestBase) -> dict[str, Any]:
        ctx: Any = req.context  # the retail world's context fields
        basket = [a for a in ctx.basket if a in self.catalog.index]
        in_basket = set(basket)
        candidates = [a for a in (req.candidates or self.catalog.ids)
                      if a in self.catalog.index and a not in in_basket]
        customer: dict[str, Any] = {}
        if req.customer_id is not None:
            got = self.store.get_online_features(
                features=CUSTOMER_REFS, entity_rows=[{CUSTOMER_JOIN_KEY: req.customer_id}]
            ).to_dict()
            customer = {k: v[0] for k, v in got.items() if k != CUSTOMER_JOIN_KEY}
        ids = candidates + basket
        got = self.store.get_online_features(
            features=ACTION_REFS, entity_rows=[{ACTION_JOIN_KEY: a} for a in ids]
        ).to_dict()
        rows = {a: {f: got[f][i] for f in _ACTION_FEATURES} for i, a in enumerate(ids)}
        matrix = self.encoder.encode_actions(rows)
        cv, x = self.encoder.encode_decision(
            self.encoder.encode_customer(customer), req.channel, req.placement, req.context, matrix,
            np.arange(len(candidates)), np.arange(len(candidates), len(ids)))
        probs = self.session.run([self.manifest.output_name], {self.manifest.input_name: x})[0]
        p_offline = np.clip(probs[:, 1], 1e-6, 1 - 1e-6)

        weights = self.catalog.context_weight(req.channel)
        scored = []
        for i, action_id in enumerate(candidates):
            z = math.log(p_offline[i] / (1 - p_offline[i]))
            x_online = self._features(action_id, req.channel, req.placement, cv.labels["journey_stage"], z)
            propensity = self.model.predict_proba_one(x_online)[True]
            row = self.catalog.index[action_id]
            value = float(self.catalog.value[row])
            priority = propensity * value * float(weights[row]) * float(self.catalog.lever[row])
            scored.append((priority, action_id, propensity, value, z))
        scored.sort(reverse=True)
        decision_id = uuid.uuid4().hex
        shown = scored[: req.limit]
        with self.lock:
            self.decisions[decision_id] = {
                "channel": req.channel, "placement": req.placement, "stage": cv.labels["journey_stage"],
                "z": {a: z for _, a, _, _, z in shown},
            }
            while len(self.decisions) > _MAX_DECISIONS:
                self.decisions.popitem(last=False)
        return {
            "decision_id": decision_id, "customer_id": req.customer_id, "channel": req.channel,
            "placement": req.placement,
            "actions": [
                {"action_id": a, "rank": rank, "score": pr, "propensity": p,
                 "probability": 1.0, "value": v, "explored": False}
                for rank, (pr, a, p, v, _) in enumerate(shown, 1)
            ],
            "model_versions": {"offline": f"{self.manifest.name}:{self.manifest.version}"},
            "degraded": [] if req.customer_id else ["anonymous"],
        }

    def learn(self, event: FeedbackEvent) -> None:
        with self.lock:
            record = self.decisions.get(event.decision_id)
            if record is None:
                raise HTTPException(404, f"decision {event.decision_id} is unknown")
            z = record["z"].get(event.action_id)
            if z is None:
                raise HTTPException(422, f"action {event.action_id} was not shown")
            label, weight = OUTCOME_LABELS[event.outcome.value]
            x = self._features(event.action_id, record["channel"], record["placement"],
                               record["stage"], z)
            self.model.learn_one(x, label, w=weight)


def create_app() -> FastAPI:
    data_dir = Path(os.environ["NAIVE_DATA_DIR"])
    models_dir = Path(os.environ["NAIVE_MODELS_DIR"])
    redis_url = os.environ["NAIVE_REDIS_URL"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ranker = NaiveRanker(data_dir, models_dir, redis_url)
        app.state.ranker.decide(DecisionRequest.model_validate({"channel": "web"}))  # warm up
        yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/decisions")
    def decide(body: DecisionRequest, request: Request) -> dict[str, Any]:
        ranker: NaiveRanker = request.app.state.ranker
        return ranker.decide(body)

    @app.post("/v1/feedback", status_code=202)
    def feedback(body: FeedbackEvent, request: Request) -> JSONResponse:
        ranker: NaiveRanker = request.app.state.ranker
        ranker.learn(body)
        return JSONResponse({"accepted": 1, "rejected": []}, status_code=202)

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app
