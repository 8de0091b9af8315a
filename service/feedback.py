"""Accepting feedback: join each event with its decision, then append it to the stream.

An event is accepted only if its decision is known (not expired) and the action was
shown in it; the stream entry is then a self-contained learning example (the shown
action's offline logit, how often the customer had seen it before, and the decision's
context), so learners and contact ledgers never read the decision log. A single event
that cannot be joined is an error (404 unknown decision, 422 action not shown); in a
batch such events are listed as rejected and the rest accepted.

Each event is applied once: its key (`FeedbackEvent.key`: the caller's `event_id`, or
`<decision_id>:<action_id>:<outcome>`) is checked and recorded in the same atomic step
that appends it to the stream (`StateStore.append_feedback` with keys), for the
decision's TTL. A resend (a retry, the same event twice in a batch, the same event sent
to another replica) is accepted and counted as a duplicate, and nothing downstream
(learner, contact ledger, counters) sees it again. An event can only be accepted while
its decision is known, and its key outlives that, so the guarantee has no gap.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.decision_log import DecisionLog
from service.errors import ActionNotInDecision, UnknownDecision
from service.metrics import Metrics
from service.schemas import FeedbackEvent
from service.state import StateStore


@dataclass(frozen=True)
class Rejection:
    index: int
    decision_id: str
    action_id: str
    reason: str
    message: str


class FeedbackService:
    def __init__(self, state: StateStore, decisions: DecisionLog, metrics: Metrics) -> None:
        self._state = state
        self._decisions = decisions
        self._metrics = metrics

    async def submit(self, events: Sequence[FeedbackEvent]) -> tuple[int, int, list[Rejection]]:
        """(accepted, duplicates among them, rejected) for `events`, in order."""
        records = await self._decisions.get_many([e.decision_id for e in events])
        now = time.time()
        accepted: list[dict[str, Any]] = []
        keys: list[str] = []
        rejected: list[Rejection] = []
        in_batch: set[str] = set()
        repeated = 0
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
            key = event.key()
            if key in in_batch:
                repeated += 1
                continue
            in_batch.add(key)
            keys.append(key)
            accepted.append({
                "event_id": key,
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
        applied = await self._state.append_feedback(accepted, keys) if accepted else []
        for e, fresh in zip(accepted, applied, strict=True):
            if fresh:
                self._metrics.feedback.labels(e["outcome"], e["channel"], e["journey_stage"]).inc()
        duplicates = repeated + applied.count(False)
        if duplicates:
            self._metrics.feedback_duplicates.inc(duplicates)
        for r in rejected:
            self._metrics.feedback_rejected.labels(r.reason).inc()
        return len(accepted) + repeated, duplicates, rejected


def _epoch(ts: datetime) -> float:
    """Unix seconds; a timestamp without a zone is read as UTC, not the server's local time."""
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()
