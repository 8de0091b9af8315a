"""The learner loop: fold the ordered feedback stream into this replica's learner.

Every replica folds the same ordered stream, so all replicas converge on the
same model state and the same contact ledger (`service/contacts.py`). Learning happens
in small chunks between awaits so the event loop keeps serving decisions. The
vectorised weights the decision path reads are republished at most every
`publish_interval` seconds and as soon as the stream goes quiet: copying them is a pass
over every weight on the event loop, and under load the loop reads a few events at a
time, so publishing after every read would spend on copies the CPU that decisions need
(the loop's throughput and lag: `load_tests/learner_bench.py`). While learned weights
wait for publication, a timer publishes them once the stream has been quiet for the
interval; the read itself waits on for events as long as it would anyway (cut short
to the interval instead, it came back empty for most events at a trickle of feedback:
one more Redis round trip each). Reads themselves are
spaced at least `read_interval` apart unless the last one came back full: a stream read
is a Redis round trip, as costly in CPU as a decision, and without spacing a steady
trickle of feedback meant one read per event. Learner lag and updates are counted at
publication, when decisions see them. Contacts are recorded before learning, so a
dismissal takes effect as soon as the loop has read it.

A starting replica first catches up (`catch_up`) with the stream as it stood, from the
newest snapshot's position when there is one; between reads the loop also takes this
replica's turn at writing snapshots (`service/snapshots.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from service.contacts import ContactLedger
from service.learner import OUTCOME_LABELS, LearningExample, OnlineLearner
from service.metrics import Metrics
from service.snapshots import Snapshots
from service.state import Record, StateStore, stream_position

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
                 contacts: ContactLedger | None = None, learn: bool = True,
                 publish_interval: float = 0.05, read_interval: float = 0.0,
                 snapshots: Snapshots | None = None) -> None:
        self._state = state
        self._learner = learner
        self._contacts = contacts
        self._learn = learn
        self._metrics = metrics
        self._read_count = read_count
        self._block_ms = block_ms
        self._publish_interval = publish_interval
        self._published_at = float("-inf")
        self._read_interval = read_interval
        self._snapshots = snapshots
        self._read_at = float("-inf")
        self._unpublished: list[float] = []  # accepted_at of events learned, not yet served
        self.position = "0"
        self.learned = 0

    async def run(self) -> None:
        while True:
            wait = self._read_at + self._read_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._read_at = time.monotonic()
            # Learned weights wait no longer than the interval if the stream stays quiet.
            quiet = (asyncio.get_running_loop().call_later(self._publish_interval,
                                                           self._publish_waiting)
                     if self._unpublished else None)
            try:
                entries = await self._state.read_feedback(self.position, self._read_count,
                                                          self._block_ms)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the feedback stream failed; retrying")
                await asyncio.sleep(1.0)
                continue
            finally:
                if quiet is not None:
                    quiet.cancel()
            if entries:
                await self._apply(entries)
                self.position = entries[-1][0]
            if self._unpublished and (
                not entries or time.monotonic() - self._published_at >= self._publish_interval
            ):
                self.publish()
            if self._snapshots is not None and self.position != "0" and self._snapshots.due():
                await self._snapshot()
            full = len(entries) >= self._read_count
            if full:
                self._read_at = float("-inf")  # a backlog: read on at once
            self._metrics.feedback_backlog.set(len(entries) if full else 0)

    def _publish_waiting(self) -> None:
        if self._unpublished:
            self.publish()

    async def _snapshot(self) -> None:
        assert self._snapshots is not None
        try:
            await self._snapshots.take(self.position)
        except asyncio.CancelledError:
            raise
        except Exception:  # the next interval tries again; learning goes on meanwhile
            log.exception("writing a snapshot failed")

    async def catch_up(self, end: str,
                       progress: Callable[[int, str], None] | None = None) -> int:
        """Fold the stream in up to entry `end` at once (a replica starting); returns events.

        What was there before this replica started is history, not lag: the learner lag
        histogram does not see it (publication counts the updates). `progress(events,
        position)` is called after every read.
        """
        target = stream_position(end)
        replayed = 0
        while stream_position(self.position) < target:
            entries = await self._state.read_feedback(self.position, self._read_count,
                                                      self._block_ms)
            if not entries:  # trimmed away under us, or a store that lost it: nothing left
                break
            await self._apply(entries)
            self.position = entries[-1][0]
            replayed += len(entries)
            if progress is not None:
                progress(replayed, self.position)
        if self._unpublished:
            self.publish(observe_lag=False)
        return replayed

    def publish(self, observe_lag: bool = True) -> None:
        """Hand the learned weights to the decision path; count what decisions now see."""
        self._learner.publish()
        self._published_at = time.monotonic()
        now = time.time()
        for accepted_at in self._unpublished if observe_lag else ():
            self._metrics.learner_lag.observe(max(0.0, now - accepted_at))
        self._metrics.learner_updates.inc(len(self._unpublished))
        self.learned += len(self._unpublished)
        self._unpublished = []

    async def _apply(self, entries: list[tuple[str, Record]]) -> None:
        for start in range(0, len(entries), _CHUNK):
            chunk = [e for _, e in entries[start:start + _CHUNK]]
            if self._contacts is not None:
                self._contacts.record(chunk)
            if self._learn:
                self._learner.learn(to_example(e) for e in chunk)
                self._unpublished += [float(e["accepted_at"]) for e in chunk
                                      if e["outcome"] in OUTCOME_LABELS]
            await asyncio.sleep(0)
