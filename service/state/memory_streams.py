"""The embedded store's decision log and feedback stream, as `nextbest export` reads them.

With Redis, `nextbest export` reads the streams `nb:decisions` and `nb:feedback` from
Redis and keeps its watermarks there. The embedded store lives in the serving process
and keeps nothing on disk, so the export reads it over HTTP instead (the admin endpoints
of `service/streams_api.py`, `training/service_streams.py`); this module gives those
endpoints what Redis would:

- `EntryLog`: a bounded, append-only log whose entries have Redis-like ids
  "<ms>-<seq>", strictly increasing (the milliseconds of arrival, never going back,
  and a counter), and which counts every entry it was ever given (`added`, Redis'
  `entries-added`), so the export counts what the bound dropped unread as lost;
- `MemoryStreams`: the two logs and the export's watermarks, which also answer the
  three redis-py calls the export gauges make (`service/export_status.py`).

A restart empties the logs and the watermarks and starts the counter again; the new
entries' milliseconds still lie after the old ones', so an export resumes from its
folder's watermark file, and lost entries are not counted across the restart.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping
from typing import Any

from service.export_status import STREAMS, stream_key, watermark_key
from service.state import Record

#: (arrival milliseconds, sequence number, record)
Entry = tuple[int, int, Record]


def entry_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def parse_id(text: str) -> tuple[int, int]:
    """"<ms>-<seq>" as (ms, seq); ValueError for anything else."""
    ms, dash, seq = text.partition("-")
    if not dash or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"expected a stream id such as 1700000000000-1, got {text!r}")
    return int(ms), int(seq)


class EntryLog:
    """The newest `maxlen` entries appended, with ids that order them."""

    def __init__(self, maxlen: int, clock: Callable[[], float] = time.time) -> None:
        if maxlen <= 0:
            raise ValueError(f"maxlen must be positive, got {maxlen}")
        self.maxlen = maxlen
        self._clock = clock
        self._items: list[Entry] = []
        self._start = 0  # entries before it are dropped (removed in batches: amortized O(1))
        self._compact_at = max(maxlen // 8, 64)
        self.added = 0
        self._last_ms = 0

    def append(self, record: Record) -> int:
        """Append `record`; its sequence number (1 for the first ever)."""
        self._last_ms = max(self._last_ms, int(self._clock() * 1000))
        self.added += 1
        self._items.append((self._last_ms, self.added, record))
        if len(self._items) - self._start > self.maxlen:
            self._start = len(self._items) - self.maxlen
            if self._start >= self._compact_at:
                del self._items[: self._start]
                self._start = 0
        return self.added

    def __len__(self) -> int:
        return len(self._items) - self._start

    def first(self) -> Entry | None:
        return self._items[self._start] if len(self) else None

    def last(self) -> Entry | None:
        return self._items[-1] if len(self) else None

    def after_seq(self, seq: int, count: int) -> list[Entry]:
        """Up to `count` entries whose sequence number is above `seq`, oldest first."""
        head = self.first()
        if head is None:
            return []
        begin = self._start + max(0, seq - head[1] + 1)  # the numbers have no gaps
        return self._items[begin:begin + count]

    def between(self, after: tuple[int, int], end: tuple[int, int] | None, count: int) -> list[Entry]:
        """Up to `count` entries with ids in (after, end], oldest first (end None: no bound)."""
        begin = bisect.bisect_right(self._items, after, lo=self._start, key=_position)
        stop = (len(self._items) if end is None
                else bisect.bisect_right(self._items, end, lo=begin, key=_position))
        return self._items[begin:min(stop, begin + count)]


def _position(entry: Entry) -> tuple[int, int]:
    return entry[0], entry[1]


class MemoryStreams:
    """The embedded store's two logs, by export stream name, and their export watermarks."""

    def __init__(self, decisions: EntryLog, feedback: EntryLog, prefix: str = "nb:") -> None:
        self.logs: dict[str, EntryLog] = {"decisions": decisions, "feedback": feedback}
        self._watermarks: dict[str, dict[str, str]] = {}
        self._by_key = {stream_key(s, prefix): s for s in STREAMS}
        self._marks_by_key = {watermark_key(s, prefix): s for s in STREAMS}

    def info(self, stream: str) -> dict[str, Any]:
        """XINFO STREAM's fields the export reads."""
        log = self.logs[stream]
        first, last = log.first(), log.last()
        return {"length": len(log), "entries-added": log.added,
                "first-entry": entry_id(*first[:2]) if first else None,
                "last-entry": entry_id(*last[:2]) if last else None}

    def entries(self, stream: str, after: str, end: str | None, count: int) -> list[tuple[str, Record]]:
        """Up to `count` entries with ids in (after, end], oldest first."""
        found = self.logs[stream].between(parse_id(after), parse_id(end) if end else None, count)
        return [(entry_id(ms, seq), record) for ms, seq, record in found]

    def watermark(self, stream: str) -> dict[str, str]:
        """The watermark hash as the export stored it ({} before it did)."""
        return dict(self._watermarks.get(stream, {}))

    def set_watermark(self, stream: str, fields: Mapping[str, str]) -> None:
        self._watermarks[stream] = dict(fields)

    # The redis-py calls of `service/export_status.ExportStatus`, on the keys it uses.
    async def hgetall(self, key: str) -> dict[str, str]:
        return self.watermark(self._marks_by_key[key])

    async def xrevrange(self, key: str, count: int = 1) -> list[tuple[str, Record]]:
        last = self.logs[self._by_key[key]].last()
        return [(entry_id(last[0], last[1]), last[2])] if last is not None and count > 0 else []

    async def xrange(self, key: str, count: int = 1) -> list[tuple[str, Record]]:
        first = self.logs[self._by_key[key]].first()
        return [(entry_id(first[0], first[1]), first[2])] if first is not None and count > 0 else []
