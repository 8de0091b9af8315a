"""Accepting feedback: join each event with its decision, then append it to the stream.

An event is accepted only if its decision is known (not expired) and the action was
shown in it; the stream entry is then a self-contained learning example (the shown
action's offline logit, how often the customer had seen it before, and the decision's
context, its group and time), so learners, contact ledgers and the insights' counts
(`service/insights.py`) never read the decision log. A single event
that cannot be joined is an error (404 unknown decision, 422 action not shown); in a
batch such events are listed as rejected and the rest accepted.

Each event is applied once: its key (`FeedbackEvent.key`: the caller's `event_id`, or
`<decision_id>:<action_id>:<outcome>`) is checked and recorded in the same atomic step
that appends it to the stream (`StateStore.append_feedback` with keys), for the
decision's TTL. A resend (a retry, the same event twice in a batch, the same event sent
to another replica) is accepted and counted as a duplicate, and nothing downstream
(learner, contact ledger, counters) sees it again. An event can only be accepted while
its decision is known, and its key outlives that, so the guarantee has no gap.

Nothing acknowledged is lost while the process lives: when the store does not take a
batch within `write_timeout` (Redis away or stalled), its events wait in a bounded
spool, in order, and a background task (`run`) writes them when the store returns;
while the spool holds anything, newer events queue behind it, so the stream keeps their
order. The answer is 202 either way. With the spool full, an event is refused with 503
and `Retry-After`, and the caller's retry (the same key) is applied once. Feedback whose
decision is neither in this process nor readable from the store is refused with 503 the
same way. A SIGKILL loses the spool: the docs say so (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.decision_log import MAX_BACKOFF_SECONDS, DecisionLog
from service.errors import ActionNotInDecision, InvalidTimestamp, StateUnavailable, UnknownDecision
from service.metrics import Metrics
from service.schemas import FeedbackEvent
from service.state import UNAVAILABLE, Record, StateStore

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
                 max_spooled: int = 100_000, write_timeout: float = 1.0,
                 max_skew: float = 300.0,
                 spend: Callable[[Sequence[Record]], Awaitable[None]] | None = None,
                 observe: Callable[[Sequence[Record]], None] | None = None) -> None:
        self._spend = spend  # accept budgets (`Limiter.spend`), once per applied event
        self._observe = observe  # the insights' counts (`Insights.observed`), likewise
        self._state = state
        self._decisions = decisions
        self._metrics = metrics
        self._spool: deque[tuple[list[Record], list[str]]] = deque()
        self._spooled = 0  # events in the spool
        self._max_spooled = max_spooled
        self._write_timeout = write_timeout
        self._max_skew = max_skew
        self._spool_ready = asyncio.Event()

    @property
    def spooled(self) -> int:
        return self._spooled

    async def submit(self, events: Sequence[FeedbackEvent]) -> tuple[int, int, list[Rejection]]:
        """(accepted, duplicates among them, rejected) for `events`, in order."""
        try:
            records = await self._decisions.get_many([e.decision_id for e in events])
        except UNAVAILABLE as exc:
            raise StateUnavailable(f"the state store cannot be read to join the feedback "
                                   f"with its decisions ({type(exc).__name__}); try again") from None
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
            ts = _epoch(event.timestamp) if event.timestamp else now
            if not record["ts"] - self._max_skew <= ts <= now + self._max_skew:
                when = "in the future" if ts > now else "before its decision was made"
                rejected.append(Rejection(
                    i, event.decision_id, event.action_id, InvalidTimestamp.code,
                    f"timestamp {event.timestamp.isoformat() if event.timestamp else ts} is "
                    f"{when} (more than {self._max_skew:g} s of clock skew)",
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
                "ts": ts,
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
                "group": record.get("group", "treatment"),
                "decided_at": record["ts"],
            })
        applied = await self._append(accepted, keys) if accepted else []
        duplicates = repeated + applied.count(False)
        if duplicates:
            self._metrics.feedback_duplicates.inc(duplicates)
        for r in rejected:
            self._metrics.feedback_rejected.labels(r.reason).inc()
        return len(accepted) + repeated, duplicates, rejected

    async def _applied(self, events: Sequence[Record], applied: Sequence[bool]) -> None:
        """Count the events the store applied now, and spend their accept budgets (once)."""
        fresh = [e for e, new in zip(events, applied, strict=True) if new]
        for e in fresh:
            self._metrics.feedback.labels(e["outcome"], e["channel"], e["journey_stage"]).inc()
        if self._observe is not None and fresh:
            self._observe(fresh)
        if self._spend is not None and fresh:
            try:
                await self._spend(fresh)
            except Exception as exc:  # the events are durable; the budget under-counts them
                log.warning("spending accept budgets failed: %r", exc)

    async def _append(self, events: list[Record], keys: list[str]) -> list[bool]:
        """Append now, or spool when the store does not take them (every event then counts
        as applied in the answer: the store dedupes, and the counters count, when the spool
        is written)."""
        if not self._spool:
            try:
                async with asyncio.timeout(self._write_timeout):
                    applied = await self._state.append_feedback(events, keys)
                await self._applied(events, applied)
                return applied
            except UNAVAILABLE as exc:
                log.warning("feedback store unavailable (%s): spooling %d events",
                            type(exc).__name__, len(events))
        if self._spooled + len(events) > self._max_spooled:
            self._metrics.spool_dropped.labels("feedback").inc(len(events))
            raise StateUnavailable(f"the feedback store is unavailable and {self._spooled} "
                                   "events are already waiting for it; try again")
        self._spool.append((events, keys))
        self._spooled += len(events)
        self._metrics.spooled.labels("feedback").inc(len(events))
        self._metrics.spool_depth.labels("feedback").set(self._spooled)
        self._spool_ready.set()
        return [True] * len(events)

    async def run(self) -> None:
        """Write spooled events in order, until cancelled, retrying while the store is away."""
        attempt = 0
        while True:
            if not self._spool:
                self._spool_ready.clear()
                await self._spool_ready.wait()
            events, keys = self._spool[0]
            try:
                async with asyncio.timeout(self._write_timeout):
                    applied = await self._state.append_feedback(events, keys)
            except Exception as exc:  # acknowledged events: never give up on them
                if not isinstance(exc, UNAVAILABLE) and attempt == 0:
                    log.exception("writing spooled feedback failed; retrying")
                attempt += 1
                await asyncio.sleep(min(0.05 * 2**attempt, MAX_BACKOFF_SECONDS))
                continue
            attempt = 0
            await self._applied(events, applied)
            self._spool.popleft()
            self._spooled -= len(events)
            self._metrics.spool_written.labels("feedback").inc(len(events))
            self._metrics.spool_depth.labels("feedback").set(self._spooled)
            if not self._spool:
                log.info("feedback spool written")

    async def flush(self, timeout: float = 5.0) -> None:
        """At shutdown: one more attempt at the spool; what fails is counted and logged."""
        try:
            async with asyncio.timeout(timeout):
                while self._spool:
                    events, keys = self._spool[0]
                    await self._applied(events, await self._state.append_feedback(events, keys))
                    self._spool.popleft()
                    self._spooled -= len(events)
        except Exception:
            log.exception("feedback: %d spooled events not written at shutdown", self._spooled)
            self._metrics.spool_dropped.labels("feedback").inc(self._spooled)


def _epoch(ts: datetime) -> float:
    """Unix seconds; a timestamp without a zone is read as UTC, not the server's local time."""
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()
