"""The embedded store's decision log and feedback stream as the export reads them: ids
that order the entries, a bound that drops the oldest, every entry ever added counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from itertools import count

import pytest

from service.export_status import ExportStatus, Watermark
from service.metrics import Metrics
from service.state.memory import MemoryState
from service.state.memory_streams import EntryLog, MemoryStreams, parse_id


def ticking(start_ms: int, step_ms: int) -> Callable[[], float]:
    ticks = count()
    return lambda: (start_ms + next(ticks) * step_ms) / 1000


def test_ids_increase_even_when_the_clock_goes_back() -> None:
    times = iter([5.0, 5.0, 4.0, 6.0])
    log = EntryLog(10, clock=lambda: next(times))
    for i in range(4):
        log.append({"i": i})
    ids = [(ms, seq) for ms, seq, _ in log.between((0, 0), None, 10)]
    assert ids == [(5000, 1), (5000, 2), (5000, 3), (6000, 4)]
    assert ids == sorted(set(ids))


@pytest.mark.parametrize("maxlen", [1, 7, 100])
def test_the_bound_keeps_the_newest_and_counts_every_entry(maxlen: int) -> None:
    log = EntryLog(maxlen, clock=ticking(1_000, 1))
    n = 1_000  # enough to compact the list several times
    for i in range(n):
        log.append({"i": i})
    assert log.added == n and len(log) == maxlen
    kept = log.between((0, 0), None, n)
    assert [r["i"] for _, _, r in kept] == list(range(n - maxlen, n))
    # sequence numbers start at 1: entry i has i + 1
    assert [r["i"] for _, _, r in log.after_seq(n - 1, 10)] == [n - 1]
    assert [r["i"] for _, _, r in log.after_seq(n, 10)] == []
    assert [r["i"] for _, _, r in log.after_seq(0, 3)] == list(range(n - maxlen, n))[:3]


def test_between_is_exclusive_of_after_and_inclusive_of_end() -> None:
    log = EntryLog(100, clock=ticking(1_000, 10))
    for i in range(10):
        log.append({"i": i})
    ids = [(ms, seq) for ms, seq, _ in log.between((0, 0), None, 100)]
    got = log.between(ids[2], ids[6], 100)
    assert [r["i"] for _, _, r in got] == [3, 4, 5, 6]
    assert [r["i"] for _, _, r in log.between(ids[2], ids[6], 2)] == [3, 4]
    assert log.between(ids[-1], None, 5) == []
    # an id between two entries (another run's, before a restart) positions by its time
    assert [r["i"] for _, _, r in log.between((ids[4][0] + 5, 999_999), None, 100)] == [5, 6, 7, 8, 9]


def test_parse_id_refuses_what_is_no_stream_id() -> None:
    assert parse_id("1700000000000-12") == (1_700_000_000_000, 12)
    for bad in ("12", "a-1", "1-", "-1", "1-2-3"):
        with pytest.raises(ValueError, match="stream id"):
            parse_id(bad)


def test_memory_state_logs_decisions_and_feedback_as_streams() -> None:
    async def run() -> tuple[MemoryStreams, list[tuple[str, dict[str, object]]]]:
        state = MemoryState(3600, max_decisions=3, max_feedback=2)
        await state.log_decisions([{"decision_id": f"d{i}"} for i in range(5)])
        await state.append_feedback([{"decision_id": f"d{i}", "n": i} for i in range(4)])
        fed = await state.read_feedback("0", 10, 0)
        return state.streams, fed

    streams, fed = asyncio.run(run())
    info = streams.info("decisions")
    assert (info["length"], info["entries-added"]) == (3, 5)
    assert [r["decision_id"] for _, r in streams.entries("decisions", "0-0", None, 10)] == ["d2", "d3", "d4"]
    feedback = streams.entries("feedback", "0-0", None, 10)
    assert [r["n"] for _, r in feedback] == [2, 3]
    assert streams.info("feedback")["entries-added"] == 4
    # the learner's positions are the counter: the seq part of the export's ids
    assert [i for i, _ in fed] == [i.partition("-")[2] for i, _ in feedback] == ["3", "4"]
    assert info["last-entry"] == streams.entries("decisions", "0-0", None, 10)[-1][0]


def test_the_export_gauges_read_the_embedded_watermarks() -> None:
    decisions = EntryLog(10, clock=ticking(1_000, 2_500))
    streams = MemoryStreams(decisions, EntryLog(10))
    decisions.append({"decision_id": "d1"})
    decisions.append({"decision_id": "d2"})
    first, last = (i for i, _ in streams.entries("decisions", "0-0", None, 2))
    assert (first, last) == ("1000-1", "3500-2")
    metrics = Metrics()
    status = ExportStatus(streams, metrics)
    asyncio.run(status.refresh())
    assert metrics.registry.get_sample_value("nextbest_export_lag_seconds", {"stream": "decisions"}) is None
    streams.set_watermark("decisions", Watermark(last_id=first, exported=1, lost=3).as_hash())
    asyncio.run(status.refresh())
    assert metrics.registry.get_sample_value("nextbest_export_lag_seconds",
                                             {"stream": "decisions"}) == pytest.approx(2.5)
    assert metrics.registry.get_sample_value("nextbest_export_lost_events", {"stream": "decisions"}) == 3
