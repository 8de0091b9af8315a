"""In-process state for the embedded default: nothing survives a restart.

The decision records are kept twice: by decision id, for `decision_ttl_seconds`, to
join feedback with them, and in order as the decision log (`streams`), which
`nextbest export` reads over the service's admin API (`service/state/memory_streams.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence

from service.state import Record
from service.state.memory_streams import EntryLog, MemoryStreams


class MemoryState:
    backend = "memory"

    def __init__(self, decision_ttl_seconds: int, max_decisions: int = 200_000,
                 max_feedback: int = 1_000_000) -> None:
        self._ttl = decision_ttl_seconds
        self._decisions: OrderedDict[str, tuple[float, Record]] = OrderedDict()
        self._max_decisions = max_decisions
        self._log = EntryLog(max_decisions)
        self._feedback = EntryLog(max_feedback)
        self._max_feedback = max_feedback
        #: the decision log and the feedback stream, for `nextbest export`
        self.streams = MemoryStreams(self._log, self._feedback)
        #: feedback keys appended -> when they may be appended again (insertion = expiry order)
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._appended = asyncio.Event()

    async def log_decisions(self, records: Sequence[Record],
                            blobs: Sequence[bytes] | None = None) -> None:
        expires = time.monotonic() + self._ttl
        for r in records:
            self._decisions[r["decision_id"]] = (expires, r)
            self._log.append(r)
        while len(self._decisions) > self._max_decisions:
            self._decisions.popitem(last=False)

    async def get_decisions(self, decision_ids: Sequence[str]) -> list[Record | None]:
        now = time.monotonic()
        out: list[Record | None] = []
        for d in decision_ids:
            hit = self._decisions.get(d)
            out.append(hit[1] if hit is not None and hit[0] > now else None)
        return out

    async def append_feedback(self, events: Sequence[Record],
                              keys: Sequence[str] | None = None) -> list[bool]:
        appended = [True] * len(events) if keys is None else self._first_sightings(keys)
        for e, fresh in zip(events, appended, strict=True):
            if fresh:
                self._feedback.append(e)
        self._appended.set()
        return appended

    def _first_sightings(self, keys: Sequence[str]) -> list[bool]:
        """True for each key not seen within the TTL (recorded now); bounded like the stream."""
        now = time.monotonic()
        seen = self._seen
        while seen and next(iter(seen.values())) <= now:
            seen.popitem(last=False)
        out = []
        for key in keys:
            expires = seen.get(key)
            fresh = expires is None or expires <= now
            if fresh:
                seen[key] = now + self._ttl
                seen.move_to_end(key)
            out.append(fresh)
        while len(seen) > self._max_feedback:
            seen.popitem(last=False)
        return out

    async def read_feedback(self, after: str, count: int, block_ms: int) -> list[tuple[str, Record]]:
        last = int(after)
        newest = self._feedback.last()
        if newest is None or newest[1] <= last:
            self._appended.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # lands as the wait times out, and the learner task then never stops.
            try:
                async with asyncio.timeout(block_ms / 1000):
                    await self._appended.wait()
            except TimeoutError:
                return []
        return [(str(seq), e) for _, seq, e in self._feedback.after_seq(last, count)]

    async def feedback_length(self) -> int:
        return len(self._feedback)

    async def feedback_bounds(self) -> tuple[str, str] | None:
        first, last = self._feedback.first(), self._feedback.last()
        if first is None or last is None:
            return None
        return str(first[1]), str(last[1])

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
