"""How far the training export (`nextbest export`) is behind the streams, for Prometheus.

The export (`training/export.py`) runs as its own process, a CronJob or by hand; it
keeps one watermark per stream in Redis, a hash `nb:export:{stream}` with `last_id` (the
last stream id exported, "0-0" before anything was), `exported`, `lost` and `skipped`
counts and `updated_at`. The layout is defined here, below both, so the service can
read what the export writes: every `REFRESH_SECONDS` a background task of the runtime
(never on the decision path) reads each watermark and the stream's newest id, from
Redis or, on the embedded store, from the process' own streams (`nextbest export
--url` keeps its watermarks there: `service/state/memory_streams.py`), and sets
`nextbest_export_lag_seconds` and `nextbest_export_lost_events`.
A stream never exported has no watermark and no series: the alerts only watch an export
that is in use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.metrics import Metrics

log = logging.getLogger(__name__)

#: export name -> (stream key suffix, the entry field that holds the JSON record)
STREAMS: dict[str, tuple[str, str]] = {"decisions": ("decisions", "d"), "feedback": ("feedback", "e")}
#: the watermark before anything was exported: XRANGE starts after it
START = "0-0"
REFRESH_SECONDS = 30.0


def stream_key(stream: str, prefix: str = "nb:") -> str:
    return f"{prefix}{STREAMS[stream][0]}"


def watermark_key(stream: str, prefix: str = "nb:") -> str:
    return f"{prefix}export:{stream}"


def id_ms(entry_id: str) -> int:
    """The milliseconds part of a Redis stream id ("ms-seq")."""
    return int(entry_id.partition("-")[0])


@dataclass(frozen=True)
class Watermark:
    """What the export of one stream holds: everything up to `last_id`, inclusive."""

    last_id: str = START
    exported: int = 0
    lost: int = 0
    skipped: int = 0
    updated_at: float = 0.0

    @classmethod
    def from_hash(cls, fields: Mapping[Any, Any]) -> Watermark | None:
        """From HGETALL's reply (bytes or str keys); None when the hash does not exist."""
        if not fields:
            return None
        f = {_text(k): _text(v) for k, v in fields.items()}
        return cls(last_id=f.get("last_id", START), exported=int(f.get("exported", 0)),
                   lost=int(f.get("lost", 0)), skipped=int(f.get("skipped", 0)),
                   updated_at=float(f.get("updated_at", 0.0)))

    def as_hash(self) -> dict[str, str]:
        return {"last_id": self.last_id, "exported": str(self.exported), "lost": str(self.lost),
                "skipped": str(self.skipped), "updated_at": repr(self.updated_at)}


class ExportStatus:
    """Refreshes the export gauges; `client`: an asyncio redis-py client, or the embedded
    store's `MemoryStreams` (the same three calls)."""

    def __init__(self, client: Any, metrics: Metrics, prefix: str = "nb:",
                 interval: float = REFRESH_SECONDS) -> None:
        self._r = client
        self._metrics = metrics
        self._prefix = prefix
        self._interval = interval

    async def refresh(self) -> None:
        for stream in STREAMS:
            mark = Watermark.from_hash(await self._r.hgetall(watermark_key(stream, self._prefix)))
            if mark is None:
                continue
            newest = await self._r.xrevrange(stream_key(stream, self._prefix), count=1)
            lag = 0.0
            if newest:
                since = mark.last_id
                if since == START:  # nothing exported yet: behind by all the stream holds
                    oldest = await self._r.xrange(stream_key(stream, self._prefix), count=1)
                    since = _text(oldest[0][0]) if oldest else since
                lag = max(0, id_ms(_text(newest[0][0])) - id_ms(since)) / 1000
            self._metrics.export_lag.labels(stream).set(lag)
            self._metrics.export_lost.labels(stream).set(mark.lost)

    async def run(self) -> None:
        """Refresh until cancelled; a failed read is logged and retried next time."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.warning("reading the export watermarks failed", exc_info=True)
            await asyncio.sleep(self._interval)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
