"""Redis state: decision records as keys with a TTL, feedback as a Redis Stream.

Keys (prefix configurable, default `nb:`):
- `nb:decision:{id}`  JSON decision record, expires after decision_ttl_seconds;
- `nb:decisions`      stream of every decision record (capped), for training exports;
- `nb:feedback`       stream of accepted feedback, each entry field `e` = JSON event.
In cluster mode every key is a single-key operation, so no hash tags are needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from service.state import Record


class RedisState:
    backend = "redis"

    def __init__(self, client: Any, decision_ttl_seconds: int, feedback_maxlen: int,
                 decision_log_maxlen: int = 1_000_000, prefix: str = "nb:") -> None:
        self._r = client
        self._ttl = decision_ttl_seconds
        self._feedback_maxlen = feedback_maxlen
        self._decision_log_maxlen = decision_log_maxlen
        self._prefix = prefix
        self.feedback_key = f"{prefix}feedback"
        self.decision_log_key = f"{prefix}decisions"

    def _decision_key(self, decision_id: str) -> str:
        return f"{self._prefix}decision:{decision_id}"

    async def log_decisions(self, records: Sequence[Record]) -> None:
        pipe = self._r.pipeline(transaction=False)
        for r in records:
            blob = orjson.dumps(r)
            pipe.set(self._decision_key(r["decision_id"]), blob, ex=self._ttl)
            pipe.xadd(self.decision_log_key, {"d": blob},
                      maxlen=self._decision_log_maxlen, approximate=True)
        await pipe.execute()

    async def get_decisions(self, decision_ids: Sequence[str]) -> list[Record | None]:
        if not decision_ids:
            return []
        pipe = self._r.pipeline(transaction=False)
        for d in decision_ids:
            pipe.get(self._decision_key(d))
        blobs = await pipe.execute()
        return [orjson.loads(b) if b is not None else None for b in blobs]

    async def append_feedback(self, events: Sequence[Record]) -> None:
        pipe = self._r.pipeline(transaction=False)
        for e in events:
            pipe.xadd(self.feedback_key, {"e": orjson.dumps(e)},
                      maxlen=self._feedback_maxlen, approximate=True)
        await pipe.execute()

    async def read_feedback(self, after: str, count: int, block_ms: int) -> list[tuple[str, Record]]:
        reply = await self._r.xread({self.feedback_key: after}, count=count, block=block_ms)
        if not reply:
            return []
        entries = reply[0][1]
        return [(_str(i), orjson.loads(fields[b"e"])) for i, fields in entries]

    async def feedback_length(self) -> int:
        return int(await self._r.xlen(self.feedback_key))

    async def ping(self) -> None:
        await self._r.ping()

    async def close(self) -> None:
        await self._r.aclose()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
