"""The decision engine: one decision, top to bottom, as docs/architecture.md lists it.

candidates -> eligibility -> contacts -> features -> offline score -> online correction
-> arbitration -> exploration -> response -> log. Each step is a call into the module that
owns it; this class only wires them and times each step. It knows nothing about HTTP.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features.encoding import Encoder
from service.action_features import ActionFeatureCache
from service.arbitration import arbitrate
from service.catalog import Catalog
from service.contacts import ContactLedger
from service.customer_features import CustomerFeatureService
from service.decision_log import DecisionLog
from service.eligibility import Eligibility
from service.errors import NotReady
from service.exploration import select_top_k
from service.health import StoreHealth
from service.learner import OnlineLearner
from service.metrics import Metrics
from service.model import OnnxScorer, sigmoid
from service.schemas import DecisionRequestBase


@dataclass
class DecisionEngine:
    catalog: Catalog
    actions: ActionFeatureCache
    customers: CustomerFeatureService
    scorer: OnnxScorer
    learner: OnlineLearner
    eligibility: Eligibility
    log: DecisionLog
    metrics: Metrics
    encoder: Encoder
    epsilon: float
    rng: np.random.Generator
    contacts: ContactLedger | None = None
    explore_top: int = 0
    #: the background health check: its `degraded` reasons (an emptied online store) join
    #: every decision's
    health: StoreHealth | None = None
    #: draws decision ids: 128 random bits, seeded from os.urandom (uuid4 cost a syscall)
    ids: random.Random = field(default_factory=random.Random)

    @property
    def model_versions(self) -> dict[str, str]:
        return {
            "offline": f"{self.scorer.manifest.name}:{self.scorer.version}",
            "online": f"river-logreg:{self.learner.updates}",
            "catalog": self.catalog.version,
        }

    async def decide(self, req: DecisionRequestBase, record: bool = True) -> dict[str, Any]:
        """Decide for one request; `record=False` (the warm-up) skips the log and counters."""
        m = self.metrics
        matrix = self.actions.matrix
        if matrix is None:
            raise NotReady("action features are not loaded yet")
        ctx: Any = req.context  # the world's context fields (service/schemas.py)

        with m.stages() as stage:
            rows = self.eligibility.candidates(req.channel, req.placement, req.candidates)
            stage.done("candidates")

            basket = getattr(ctx, self.encoder.basket) if self.encoder.basket else ()
            basket_rows = self.eligibility.basket_rows(basket)
            rows = self.eligibility.filter(rows, basket_rows)
            stage.done("eligibility")

            # Dismissed (on any channel) -> not proposed; prior exposures -> fatigue.
            if self.contacts is None:
                exposures = np.zeros(len(rows), dtype=np.int64)
            else:
                exposures, suppressed = self.contacts.lookup(req.customer_id, rows)
                if suppressed is not None:
                    rows, exposures = rows[~suppressed], exposures[~suppressed]
                    if record:
                        m.contact_suppressed.inc(req.channel, amount=int(suppressed.sum()))
            stage.done("contacts")

            customer = await self.customers.get(req.customer_id)
            cv, x = self.encoder.encode_decision(
                customer.vector, req.channel, req.placement, ctx, matrix, rows, basket_rows)
            degraded = list(customer.degraded)
            if self.health is not None and self.health.degraded:
                degraded += self.health.degraded
            stage.done("features")

            z = self.scorer.logits(x) if len(rows) else np.zeros(0)
            stage.done("offline")

            correction = self.learner.weights.correction(
                z, rows, req.channel, req.placement, cv.labels.get("journey_stage", ""), exposures
            )
            propensity = sigmoid(z + correction)
            stage.done("online")

            pr = arbitrate(self.catalog, rows, propensity, req.channel)
            stage.done("arbitration")

            sel = select_top_k(pr.priority, req.limit, self.epsilon, self.rng, self.explore_top)
            stage.done("exploration")

            if not len(rows):
                degraded.append("no_eligible_actions")
            decision_id = f"{self.ids.getrandbits(128):032x}"
            # the shown actions' figures, gathered once and turned into Python numbers
            pos = sel.positions
            ids = self.catalog.ids
            shown_rows, scores, propensities, values, logits, seen, probabilities, explored = (
                a.tolist() for a in (rows[pos], pr.priority[pos], propensity[pos], pr.value[pos],
                                     z[pos], exposures[pos], sel.probability, sel.explored)
            )
            actions: list[dict[str, Any]] = [
                {"action_id": ids[r], "rank": rank, "score": score, "propensity": p,
                 "probability": prob, "value": v, "explored": e}
                for rank, (r, score, p, prob, v, e) in enumerate(
                    zip(shown_rows, scores, propensities, probabilities, values, explored,
                        strict=True), 1)
            ]
            if req.explain:
                offline = sigmoid(z[pos]).tolist()
                for action, i, p0, n in zip(actions, pos.tolist(), offline, seen, strict=True):
                    action["explanation"] = {
                        "offline_propensity": p0,
                        "online_correction": float(correction[i]),
                        "exposures": n,
                        "propensity": action["propensity"],
                        "value": action["value"],
                        "context_weight": float(pr.context_weight[i]),
                        "lever": float(pr.lever[i]),
                        "priority": action["score"],
                    }

            versions = self.model_versions
            response: dict[str, Any] = {
                "decision_id": decision_id,
                "customer_id": req.customer_id,
                "channel": req.channel,
                "placement": req.placement,
                "actions": actions,
                "model_versions": versions,
                "degraded": degraded,
            }
            stage.done("response")
            if not record:
                return response

            logged = self.log.submit({
                "decision_id": decision_id,
                "ts": time.time(),
                "customer_id": req.customer_id,
                "channel": req.channel,
                "placement": req.placement,
                "journey_stage": cv.labels.get("journey_stage"),
                "segment": cv.labels.get("segment"),
                "context": ctx.model_dump(exclude_defaults=True),
                "model": versions["offline"],
                "candidates": [ids[r] for r in rows.tolist()],
                "shown": [
                    {"action_id": a["action_id"], "rank": a["rank"],
                     "probability": a["probability"], "propensity": a["propensity"],
                     "offline_logit": zl, "exposures": n, "explored": a["explored"]}
                    for a, zl, n in zip(actions, logits, seen, strict=True)
                ],
                "degraded": degraded,
            })
            if not logged:  # the spool is full: answered, but feedback for it will be refused
                degraded.append("decision_not_logged")
            stage.done("log")

        m.decisions.inc(req.channel)
        for reason in degraded:
            m.degraded.inc(req.channel, reason)
        if any(reason != "anonymous" for reason in degraded):
            m.degraded_responses.inc(req.channel)
        n_explored = sum(explored)
        if n_explored:
            m.exploration.inc(req.channel, amount=n_explored)
        return response
