"""The learner loop: fold the ordered feedback stream into this replica's learner.

Every replica reads the same stream from its start, so all replicas converge on the
same model state and the same contact ledger (`service/contacts.py`). Learning happens
in small chunks between awaits so the event loop keeps serving decisions; the
vectorised weights are republished after each read. Contacts are recorded before
learning, so a dismissal takes effect as soon as the loop has read it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from service.contacts import ContactLedger
from service.learner import LearningExample, OnlineLearner
from service.metrics import Metrics
from service.state import Record, StateStore

log = logging.getLogger(__name__)

_CHUNK = 64


def to_example(e: Record) -> LearningExample:
    return LearningExample(
        action_id=e["action_id"], channel=e["channel"], placement=e["placement"],
        journey_stage=e["journey_stage"], offline_logit=float(e["offline_logit"]),
        outcome=e["outcome"], exposures=float(e.get("exposures") or 0),
    )


class FeedbackLoop:
    def __init__(self, state: StateStore, learner: OnlineLearner, metrics: Metrics,
                 read_count: int = 512, block_ms: int = 500,
                 contacts: ContactLedger | None = None, learn: bool = True) -> None:
        self._state = state
        self._learner = learner
        self._contacts = contacts
        self._learn = learn
        self._metrics = metrics
        self._read_count = read_count
        self._block_ms = block_ms
        self.position = "0"
        self.learned = 0
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                entries = await self._state.read_feedback(
                    self.position, self._read_count, self._block_ms
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the feedback stream failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if not entries:
                self.caught_up.set()
                self._metrics.feedback_backlog.set(0)
                continue
            await self._apply(entries)
            self.position = entries[-1][0]
            if self._learn:
                self._learner.publish()
            if len(entries) < self._read_count:
                self.caught_up.set()
                self._metrics.feedback_backlog.set(0)
            else:
                self._metrics.feedback_backlog.set(len(entries))

    async def _apply(self, entries: list[tuple[str, Record]]) -> None:
        for start in range(0, len(entries), _CHUNK):
            chunk = [e for _, e in entries[start:start + _CHUNK]]
            if self._contacts is not None:
                self._contacts.record(chunk)
            if not self._learn:
                await asyncio.sleep(0)
                continue
            n = self._learner.learn(to_example(e) for e in chunk)
            now = time.time()
            for e in chunk:
                self._metrics.learner_lag.observe(max(0.0, now - float(e["accepted_at"])))
            self._metrics.learner_updates.inc(n)
            self.learned += n
            await asyncio.sleep(0)
