"""In-process state for the embedded default: nothing survives a restart."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence

from service.state import Record


class MemoryState:
    backend = "memory"

    def __init__(self, decision_ttl_seconds: int, max_decisions: int = 200_000,
                 max_feedback: int = 1_000_000) -> None:
        self._ttl = decision_ttl_seconds
        self._decisions: OrderedDict[str, tuple[float, Record]] = OrderedDict()
        self._max_decisions = max_decisions
        self._feedback: list[tuple[int, Record]] = []
        self._max_feedback = max_feedback
        self._next_id = 1
        #: feedback keys appended -> when they may be appended again (insertion = expiry order)
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._appended = asyncio.Event()

    async def log_decisions(self, records: Sequence[Record],
                            blobs: Sequence[bytes] | None = None) -> None:
        expires = time.monotonic() + self._ttl
        for r in records:
            self._decisions[r["decision_id"]] = (expires, r)
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
                self._feedback.append((self._next_id, e))
                self._next_id += 1
        if len(self._feedback) > self._max_feedback:
            del self._feedback[: len(self._feedback) - self._max_feedback]
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
        if not self._feedback or self._feedback[-1][0] <= last:
            self._appended.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # lands as the wait times out, and the learner task then never stops.
            try:
                async with asyncio.timeout(block_ms / 1000):
                    await self._appended.wait()
            except TimeoutError:
                return []
        start = self._first_after(last)
        return [(str(i), e) for i, e in self._feedback[start:start + count]]

    def _first_after(self, last: int) -> int:
        if not self._feedback:
            return 0
        offset = last - self._feedback[0][0] + 1
        return max(0, min(offset, len(self._feedback)))

    async def feedback_length(self) -> int:
        return len(self._feedback)

    async def feedback_bounds(self) -> tuple[str, str] | None:
        if not self._feedback:
            return None
        return str(self._feedback[0][0]), str(self._feedback[-1][0])

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
