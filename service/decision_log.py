"""Decision records written off the request path, in batches.

The decision path only puts the record in a queue; a background task writes batches to
the state store. A Redis round trip costs about as much CPU as the rest of a decision
(`load_tests/resp_bench.py` measures a command's client CPU, `nextbest bench --breakdown`
the record's share of a decision), so the writer lingers `linger_seconds` after the first
record of a batch to let the records of concurrent decisions join it (one pipeline per
linger instead of one per decision);
the records reach the store that much later, which only feedback sent to *another*
replica within those milliseconds could notice.

Feedback is joined with its decision record (`get_many`). Records not yet written are
kept in `pending`, so feedback that races the writer still finds its decision, and the
last `recent` written ones are kept in a bounded in-process map, so feedback sent back to
the replica that decided (the common case) needs no Redis read either. Both are
checked against the decision TTL, as the store would. The recent ones are kept as JSON
bytes, which the garbage collector does not traverse: as dicts, every object in every
kept record would be walked by each full collection, a pause of every decision in flight
(such pauses show in `nextbest_event_loop_lag_seconds` and in `nextbest bench`'s p99).

Nothing decided is lost while the process lives: a batch the store does not take (Redis
away, or stalled past the connection's timeout) is retried, with a backoff capped at
`MAX_BACKOFF_SECONDS`, until it is written, and the records behind it wait in the queue,
in order: the queue is the spool. Feedback joins them from `pending` meanwhile. Only
when the queue is full is a record not kept (`submit` says so, the decision is answered
and flagged); at shutdown the writer tries once more and counts what it could not
write. A record's write is idempotent (the store writes a decision id once), so a retry
after a timeout that had in fact written does not duplicate it. A SIGKILL loses what
was still queued: the records of the last linger interval while the store is up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import orjson

from service.metrics import Metrics
from service.state import Record, StateStore

log = logging.getLogger(__name__)

#: The longest wait between two attempts to write a batch the store did not take.
MAX_BACKOFF_SECONDS = 2.0


class DecisionLog:
    def __init__(
        self, state: StateStore, max_batch: int = 256, max_queue: int = 100_000,
        linger_seconds: float = 0.0, recent: int = 0, ttl_seconds: float = float("inf"),
        metrics: Metrics | None = None,
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=max_queue)
        #: the batch the writer holds, from the first record (while it lingers) to its write
        self._inflight: list[Record] = []
        self._pending: dict[str, Record] = {}
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_size = recent
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._ttl = ttl_seconds
        self.dropped = 0
        #: called with every batch once it is written (the insights count decisions there)
        self.on_written: Callable[[Sequence[Record]], None] | None = None

    def submit(self, record: Record) -> bool:
        """Queue `record` for writing; False when the spool is full and it is not kept."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._drop(1)
            log.error("decision log spool full; record %s not kept", record["decision_id"])
            return False
        self._pending[record["decision_id"]] = record
        return True

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self._metrics is not None:
            self._metrics.spool_dropped.labels("decisions").inc(n)

    @property
    def depth(self) -> int:
        """Records waiting to be written (queued, or in the batch being written)."""
        return self._queue.qsize() + len(self._inflight)

    def _local(self, decision_id: str, oldest: float) -> Record | None:
        record = self._pending.get(decision_id)
        if record is None:
            blob = self._recent.get(decision_id)
            record = orjson.loads(blob) if blob is not None else None
        return record if record is not None and record["ts"] >= oldest else None

    async def get_many(self, decision_ids: Sequence[str]) -> list[Record | None]:
        oldest = time.time() - self._ttl
        found = [self._local(d, oldest) for d in decision_ids]
        missing = [d for d, r in zip(decision_ids, found, strict=False) if r is None]
        if missing:
            stored = dict(zip(missing, await self._state.get_decisions(missing), strict=False))
            found = [r if r is not None else stored[d] for d, r in zip(decision_ids, found, strict=False)]
        return found

    async def run(self) -> None:
        """Write queued records until cancelled; a batch the store refuses is retried."""
        while True:
            batch = self._inflight = [await self._queue.get()]
            if self._linger > 0:
                await asyncio.sleep(self._linger)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)
            self._inflight = []
            self._gauge()  # after the batch, not with it: it is written, no longer waiting

    async def flush(self, timeout: float = 5.0) -> None:
        """At shutdown: one more attempt at everything unwritten (the queue, and the batch a
        cancelled writer held while lingering or writing); what fails is counted."""
        batch, self._inflight = self._inflight, []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if not batch:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._state.log_decisions(batch)
        except Exception:
            self._drop(len(batch))
            log.exception("decision log: %d records not written at shutdown", len(batch))
            return
        self._written(batch, [orjson.dumps(r) for r in batch])

    async def _write(self, batch: list[Record]) -> None:
        blobs = [orjson.dumps(r) for r in batch]  # once, for the store and `recent`
        attempt = 0
        while True:
            try:
                await self._state.log_decisions(batch, blobs)
                break
            except Exception:
                if attempt == 0:
                    log.exception("decision log write failed; keeping %d records and retrying "
                                  "until the store takes them", len(batch))
                    self._count("spooled", len(batch))
                attempt += 1
                self._gauge()
                await asyncio.sleep(min(0.05 * 2**attempt, MAX_BACKOFF_SECONDS))
        if attempt:
            self._count("spool_written", len(batch))
            log.info("decision log: %d held-back records written after %d attempts",
                     len(batch), attempt + 1)
        self._written(batch, blobs)

    def _count(self, counter: str, n: int) -> None:
        if self._metrics is not None:
            getattr(self._metrics, counter).labels("decisions").inc(n)

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.spool_depth.labels("decisions").set(self.depth)

    def _written(self, batch: list[Record], blobs: list[bytes]) -> None:
        recent = self._recent
        for r, blob in zip(batch, blobs, strict=True):
            decision_id = r["decision_id"]
            self._pending.pop(decision_id, None)
            if self._recent_size > 0:
                recent[decision_id] = blob
        while len(recent) > self._recent_size:
            recent.popitem(last=False)
        if self.on_written is not None:
            self.on_written(batch)
