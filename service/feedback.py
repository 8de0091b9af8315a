"""Accepting feedback: join each event with its decision, then append it to the stream.

An event is accepted only if its decision is known (not expired) and the action was
shown in it; the stream entry is then a self-contained learning example (the shown
action's offline logit, how often the customer had seen it before, and the decision's
context), so learners and contact ledgers never read the decision log. A single event
that cannot be joined is an error (404 unknown decision, 422 action not shown); in a
batch such events are listed as rejected and the rest accepted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.decision_log import DecisionLog
from service.errors import ActionNotInDecision, UnknownDecision
from service.metrics import Metrics
from service.schemas import FeedbackEvent
from service.state import Record, StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
    index: int
    decision_id: str
    action_id: str
    reason: str
    message: str


class FeedbackService:
    def __init__(self, state: StateStore, decisions: DecisionLog, metrics: Metrics,
                 spend: Callable[[Sequence[Record]], Awaitable[None]] | None = None) -> None:
        self._spend = spend  # accept budgets (`Limiter.spend`), once per accepted event
        self._state = state
        self._decisions = decisions
        self._metrics = metrics

    async def submit(self, events: Sequence[FeedbackEvent]) -> tuple[int, list[Rejection]]:
        records = await self._decisions.get_many([e.decision_id for e in events])
        now = time.time()
        accepted: list[dict[str, Any]] = []
        rejected: list[Rejection] = []
        for i, (event, record) in enumerate(zip(events, records, strict=False)):
            if record is None:
                rejected.append(Rejection(
                    i, event.decision_id, event.action_id, UnknownDecision.code,
                    f"decision {event.decision_id} is unknown or older than its TTL",
                ))
                continue
            shown = next((s for s in record["shown"] if s["action_id"] == event.action_id), None)
            if shown is None:
                rejected.append(Rejection(
                    i, event.decision_id, event.action_id, ActionNotInDecision.code,
                    f"action {event.action_id} was not shown in decision {event.decision_id}",
                ))
                continue
            accepted.append({
                "decision_id": event.decision_id,
                "action_id": event.action_id,
                "outcome": event.outcome.value,
                "value": event.value,
                "ts": _epoch(event.timestamp) if event.timestamp else now,
                "accepted_at": now,
                "customer_id": record["customer_id"],
                "channel": record["channel"],
                "placement": record["placement"],
                "journey_stage": record["journey_stage"],
                "segment": record["segment"],
                "rank": shown["rank"],
                "probability": shown["probability"],
                "offline_logit": shown["offline_logit"],
                "exposures": shown.get("exposures", 0),
            })
        if accepted:
            await self._state.append_feedback(accepted)
            if self._spend is not None:
                try:
                    await self._spend(accepted)
                except Exception as exc:  # the events are durable; the budget under-counts them
                    log.warning("spending accept budgets failed: %r", exc)
        for e in accepted:
            self._metrics.feedback.labels(e["outcome"], e["channel"], e["journey_stage"]).inc()
        for r in rejected:
            self._metrics.feedback_rejected.labels(r.reason).inc()
        return len(accepted), rejected


def _epoch(ts: datetime) -> float:
    """Unix seconds; a timestamp without a zone is read as UTC, not the server's local time."""
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()
