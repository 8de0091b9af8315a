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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

import orjson

from service.state import Record, StateStore

log = logging.getLogger(__name__)


class DecisionLog:
    def __init__(
        self, state: StateStore, max_batch: int = 256, max_queue: int = 100_000,
        linger_seconds: float = 0.0, recent: int = 0, ttl_seconds: float = float("inf"),
    ) -> None:
        self._state = state
        self._queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=max_queue)
        self._pending: dict[str, Record] = {}
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._recent_size = recent
        self._max_batch = max_batch
        self._linger = linger_seconds
        self._ttl = ttl_seconds
        self.dropped = 0
        #: the batch the writer holds while it lingers (not yet handed to the store)
        self._lingering: list[Record] = []

    def submit(self, record: Record) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("decision log queue full; record %s dropped", record["decision_id"])
            return
        self._pending[record["decision_id"]] = record

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
        """Write queued records until cancelled; a failed write is retried."""
        while True:
            batch = self._lingering = [await self._queue.get()]
            if self._linger > 0:
                await asyncio.sleep(self._linger)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._lingering = []
            await self._write(batch)

    async def flush(self) -> None:
        """Write what is queued, and the batch a cancelled writer held while lingering."""
        batch, self._lingering = self._lingering, []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            await self._write(batch)

    async def _write(self, batch: list[Record]) -> None:
        blobs = [orjson.dumps(r) for r in batch]  # once, for the store and `recent`
        for attempt in range(5):
            try:
                await self._state.log_decisions(batch, blobs)
                break
            except Exception:
                log.exception("decision log write failed (attempt %d)", attempt + 1)
                await asyncio.sleep(0.05 * 2**attempt)
        recent = self._recent
        for r, blob in zip(batch, blobs, strict=True):
            decision_id = r["decision_id"]
            self._pending.pop(decision_id, None)
            if self._recent_size > 0:
                recent[decision_id] = blob
        while len(recent) > self._recent_size:
            recent.popitem(last=False)
