"""The decision engine: one decision, top to bottom, as docs/architecture.md lists it.

candidates -> customer -> selection -> eligibility -> contacts -> features -> offline
score -> online correction -> arbitration -> exploration -> limits -> response -> log. The
customer's features are read before eligibility, whose rules read them; `limits` takes the
caps and budgets of the actions about to be shown (`service/limits.py`). Each step is a
call into the module that owns it; this class only wires them and times each step. It
knows nothing about HTTP.

`selection`, when set, bounds how many actions a decision scores: a slot with more
eligible actions than its cap scores the candidates that cheap sources propose
(`service/candidates.py`), and everything after it works on those only. It is timed
with eligibility; below the cap it does nothing.

The offline model is read once per decision (`scorer`): `service/model_watch.py` swaps
that reference between two requests when the registry's champion changes, so a decision
is scored, reported and logged by one version. `shadow`, when set, is a challenger that
scores a share of decisions next to the champion; what it would have shown and its
propensities for what was shown go into the decision record, never into the response.

`control`, when set, puts a share of customers in a control group (`service/control.py`):
for them a baseline policy ranks the same eligible candidates at the exploration step,
and caps, budgets and arbitration constraints apply as for everyone. The group is in the
response and the decision record, and the feedback joined from the record carries it.
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
from service.candidates import Candidates, CandidateSelection
from service.catalog import Catalog
from service.contacts import ContactLedger
from service.control import CONTROL, TREATMENT, ControlGroup, Ranking
from service.customer_features import CustomerFeatureService
from service.decision_log import DecisionLog
from service.eligibility import Eligibility, Removals
from service.errors import NotReady
from service.exploration import EXCLUSION_GROUP, Selection, probabilities_of, select_top_k
from service.health import StoreHealth
from service.learner import OnlineLearner
from service.limits import Limiter
from service.metrics import Metrics
from service.model import OnnxScorer, sigmoid
from service.rules import Decision
from service.schemas import DecisionRequestBase


@dataclass(frozen=True)
class Shadow:
    """A challenger and the share of decisions it scores."""

    scorer: OnnxScorer
    share: float


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
    shadow: Shadow | None = None
    limiter: Limiter | None = None
    #: a share of customers served by a baseline policy (service/control.py); None: off
    control: ControlGroup | None = None
    #: the background health check: its `degraded` reasons (an emptied online store) join
    #: every decision's
    health: StoreHealth | None = None
    #: bounds the actions scored per decision (service/candidates.py); None: all scored
    selection: CandidateSelection | None = None
    #: draws decision ids: 128 random bits, seeded from os.urandom (uuid4 cost a syscall)
    ids: random.Random = field(default_factory=random.Random)

    @property
    def model_versions(self) -> dict[str, str]:
        return self._versions(self.scorer, self.catalog)

    def use_catalog(self, catalog: Catalog) -> None:
        """Serve `catalog` from the next decision on (its rows begin with the ones served
        now, so a decision that started before keeps valid rows to the end)."""
        self.catalog, self.eligibility = catalog, Eligibility(catalog)

    def _versions(self, scorer: OnnxScorer, catalog: Catalog) -> dict[str, str]:
        return {
            "offline": scorer.label,
            "online": f"river-logreg:{self.learner.updates}",
            "catalog": catalog.version,
        }

    def _held(self, catalog: Catalog, customer_id: str | None, basket_rows: np.ndarray) -> np.ndarray | None:
        """Catalog-wide: what the customer holds (in the basket, or accepted before)."""
        if not catalog.rules.reads_held:
            return None
        accepted = self.contacts.held(customer_id) if self.contacts is not None else None
        if accepted is not None:  # the ledger may know rows a newer catalog appended
            accepted = accepted[:len(catalog)]
        if not basket_rows.size:
            return accepted
        held = np.zeros(len(catalog), dtype=bool) if accepted is None else accepted.copy()
        held[basket_rows] = True
        return held

    def _left_out(self, catalog: Catalog, rows: np.ndarray, sel: Selection, removals: Removals) -> None:
        """Explain: the candidates an exclusion group or the diversity rule left out."""
        assert sel.left_out is not None
        shown = set(sel.positions.tolist())
        c = catalog
        for p in np.flatnonzero(sel.left_out).tolist():
            if p in shown:
                continue
            a = c.actions[int(rows[p])]
            removals.rows([rows[p]], [f"exclusion_group:{a.exclusion_group}"
                                      if sel.left_out[p] == EXCLUSION_GROUP
                                      else f"diversity:{a.category}"])

    async def decide(self, req: DecisionRequestBase, record: bool = True) -> dict[str, Any]:
        """Decide for one request; `record=False` (the warm-up) skips the log and counters."""
        m = self.metrics
        # one read of each: a catalog swapped in meanwhile serves from the next decision on
        catalog, eligibility, matrix = self.catalog, self.eligibility, self.actions.matrix
        if matrix is None:
            raise NotReady("action features are not loaded yet")
        ctx: Any = req.context  # the world's context fields (service/schemas.py)

        removals = Removals(catalog.ids) if req.explain else None
        decision_id = f"{self.ids.getrandbits(128):032x}"
        with m.stages() as stage:
            rows = eligibility.candidates(req.channel, req.placement, req.candidates)
            if removals is not None:
                eligibility.slot_reasons(req.channel, req.placement, req.candidates, rows, removals)
            stage.done("candidates")

            customer = await self.customers.get(req.customer_id)
            seen_as = self.encoder.with_context(customer.vector, ctx)  # the request's overrides applied
            stage.done("customer")

            basket = getattr(ctx, self.encoder.basket) if self.encoder.basket else ()
            basket_rows = eligibility.basket_rows(basket)
            # A large catalog: at most `max_scored` candidates, from cheap sources.
            selection, n_eligible = self.selection, len(rows)
            selected: Candidates | None = None
            if selection is not None and selection.active(n_eligible):
                selected = selection.select(
                    rows, eligibility.universe(req.channel, req.placement, req.candidates, rows),
                    req.channel, req.placement, seen_as, ctx, basket_rows, req.candidates is not None)
                if selected is not None:
                    if removals is not None:
                        removals.add(rows, selected.rows, "not_selected")
                    rows = selected.rows
            before, rows = rows, eligibility.filter(rows, basket_rows)
            if removals is not None:
                removals.add(before, rows, "in_basket")
            if catalog.rules.active:
                rows = eligibility.rules(rows, Decision(
                    seen_as.labels, customer.values, ctx, basket_rows,
                    self._held(catalog, req.customer_id, basket_rows)), removals)
            stage.done("eligibility")

            # Dismissed (on any channel) -> not proposed; prior exposures -> fatigue.
            if self.contacts is None:
                exposures = np.zeros(len(rows), dtype=np.int64)
            else:
                exposures, suppressed = self.contacts.lookup(req.customer_id, rows)
                if suppressed is not None:
                    if removals is not None:
                        removals.rows(rows[suppressed].tolist(), [
                            self.contacts.why(req.customer_id, r) for r in rows[suppressed].tolist()])
                    rows, exposures = rows[~suppressed], exposures[~suppressed]
                    if record:
                        m.contact_suppressed.inc(req.channel, amount=int(suppressed.sum()))
            stage.done("contacts")

            # `seen_as` has the request's overrides applied already (encode_decision would
            # apply them again)
            cv, encoder = seen_as, self.encoder
            x = encoder.encode_candidates(cv, encoder.encode_context(req.channel, req.placement, ctx),
                                          matrix, rows, basket_rows)
            degraded = list(customer.degraded)
            if self.health is not None and self.health.degraded:
                degraded += self.health.degraded
            stage.done("features")

            scorer = self.scorer  # one read: a swap never mixes two versions in a decision
            z = scorer.logits(x) if len(rows) else np.zeros(0)
            stage.done("offline")

            correction = self.learner.weights.correction(
                z, rows, req.channel, req.placement, cv.labels.get("journey_stage", ""), exposures
            )
            propensity = sigmoid(z + correction)
            stage.done("online")

            pr = arbitrate(catalog, rows, propensity, req.channel)
            constraints = catalog.constraints_of(rows)
            stage.done("arbitration")

            # The control group: a baseline policy ranks the same eligible candidates.
            baseline = self.control
            group = baseline.group_of(req.customer_id, decision_id) if baseline else TREATMENT
            ranking = (baseline.ranking(self.catalog, rows, z, req.channel)
                       if baseline is not None and group == CONTROL
                       else Ranking(pr.priority, self.epsilon, self.explore_top))

            def select(excluded: np.ndarray | None = None) -> Selection:
                return select_top_k(ranking.priority, req.limit, ranking.epsilon, self.rng,
                                    ranking.explore_top, constraints, excluded)

            sel = select()
            stage.done("exploration")

            # Caps and budgets of the actions about to be shown: checked and taken at once.
            if self.limiter is not None and catalog.limits.active and record:
                sel, refused = await self.limiter.hold(
                    catalog.limits, rows, sel, req.customer_id, req.channel, decision_id, select)
                if removals is not None:
                    removals.rows([rows[p] for p in refused], list(refused.values()))
            if removals is not None and sel.left_out is not None:
                self._left_out(catalog, rows, sel, removals)
            stage.done("limits")

            if not len(rows):
                degraded.append("no_eligible_actions")
            # the shown actions' figures, gathered once and turned into Python numbers
            pos = sel.positions
            ids = catalog.ids
            shown_rows, scores, propensities, values, logits, seen, probabilities, explored = (
                a.tolist() for a in (rows[pos], ranking.priority[pos], propensity[pos], pr.value[pos],
                                     z[pos], exposures[pos], sel.probability,
                                     sel.explored & (group == TREATMENT))  # control: a baseline, not exploring
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
                        "priority": float(pr.priority[i]),
                    }

            versions = self._versions(scorer, catalog)
            response: dict[str, Any] = {
                "decision_id": decision_id,
                "customer_id": req.customer_id,
                "channel": req.channel,
                "placement": req.placement,
                "actions": actions,
                "model_versions": versions,
                "degraded": degraded,
                "group": group,
            }
            if removals is not None:
                response["removed"] = removals.items
            stage.done("response")
            if not record:
                return response

            shadow = self.shadow
            record_doc: dict[str, Any] = {
                "decision_id": decision_id,
                "ts": time.time(),
                "customer_id": req.customer_id,
                "channel": req.channel,
                "placement": req.placement,
                "journey_stage": cv.labels.get("journey_stage"),
                "segment": cv.labels.get("segment"),
                "context": ctx.model_dump(exclude_defaults=True),
                "model": versions["offline"],
                "candidates": list(map(ids.__getitem__, rows.tolist())),
                # which source proposed each candidate (a selection), of how many eligible
                **({"candidate_sources": selected.sources_of(rows), "eligible": n_eligible}
                   if selected is not None else {}),
                "shown": [
                    {"action_id": a["action_id"], "rank": a["rank"],
                     "probability": a["probability"], "propensity": a["propensity"],
                     "offline_logit": zl, "exposures": n, "explored": a["explored"]}
                    for a, zl, n in zip(actions, logits, seen, strict=True)
                ],
                "degraded": degraded,
                "group": group,
            }
            if shadow is not None and len(rows) and self.rng.random() < shadow.share:
                record_doc["shadow"] = self._shadow(catalog, shadow.scorer, x, correction, rows, pos,
                                                    req.limit, req.channel)
            if not self.log.submit(record_doc):  # the spool is full: feedback will be refused
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

    def _shadow(self, catalog: Catalog, scorer: OnnxScorer, x: np.ndarray, correction: np.ndarray,
                rows: np.ndarray, shown: np.ndarray, limit: int, channel: str) -> dict[str, Any]:
        """The challenger on the same candidates and features: what it would have shown
        (greedily), and its propensity and pick probability for each shown action."""
        z = scorer.logits(x)
        propensity = sigmoid(z + correction)
        priority = arbitrate(catalog, rows, propensity, channel).priority
        ids = catalog.ids
        would_show = np.argsort(-priority, kind="stable")[:limit]
        probability = probabilities_of(priority, shown, self.epsilon, self.explore_top)
        return {
            "model": scorer.label,
            "would_show": [ids[r] for r in rows[would_show].tolist()],
            "shown": [
                {"action_id": ids[r], "propensity": p, "probability": q, "offline_logit": zl}
                for r, p, q, zl in zip(rows[shown].tolist(), propensity[shown].tolist(),
                                       probability.tolist(), z[shown].tolist(), strict=True)
            ],
        }
