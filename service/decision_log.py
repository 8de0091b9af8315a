"""Decision records written off the request path, in batches.

The decision path only puts the record in a queue; a background task writes batches to
the state store. Records not yet written are kept in `pending` so feedback that races
the writer on this replica still finds its decision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from service.state import Record, StateStore

log = logging.getLogger(__name__)


class DecisionLog:
    def __init__(self, state: StateStore, max_batch: int = 256, max_queue: int = 100_000) -> None:
        self._state = state
        self._queue: asyncio.Queue[Record] = asyncio.Queue(maxsize=max_queue)
        self._pending: dict[str, Record] = {}
        self._max_batch = max_batch
        self.dropped = 0

    def submit(self, record: Record) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("decision log queue full; record %s dropped", record["decision_id"])
            return
        self._pending[record["decision_id"]] = record

    async def get_many(self, decision_ids: Sequence[str]) -> list[Record | None]:
        found: list[Record | None] = [self._pending.get(d) for d in decision_ids]
        missing = [d for d, r in zip(decision_ids, found, strict=False) if r is None]
        if missing:
            stored = dict(zip(missing, await self._state.get_decisions(missing), strict=False))
            found = [r if r is not None else stored[d] for d, r in zip(decision_ids, found, strict=False)]
        return found

    async def run(self) -> None:
        """Write queued records until cancelled; a failed write is retried."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)

    async def flush(self) -> None:
        batch: list[Record] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            await self._write(batch)

    async def _write(self, batch: list[Record]) -> None:
        for attempt in range(5):
            try:
                await self._state.log_decisions(batch)
                break
            except Exception:
                log.exception("decision log write failed (attempt %d)", attempt + 1)
                await asyncio.sleep(0.05 * 2**attempt)
        for r in batch:
            self._pending.pop(r["decision_id"], None)
