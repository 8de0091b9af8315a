"""Feedback: timestamps (a zone-less one means UTC) and the spool that keeps acknowledged
events while the store is away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from service.decision_log import DecisionLog
from service.errors import StateUnavailable
from service.feedback import FeedbackService, _epoch
from service.metrics import Metrics
from service.schemas import FeedbackEvent
from service.state import Record
from service.state.memory import MemoryState


def test_naive_timestamp_is_utc() -> None:
    assert _epoch(datetime(2024, 5, 1, 12, 0, 0)) == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()


def test_aware_timestamp_keeps_its_zone() -> None:
    cet = timezone(timedelta(hours=1))
    assert _epoch(datetime(2024, 5, 1, 13, 0, 0, tzinfo=cet)) == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the spool: acknowledged feedback waits while the store is away ---------------------
class AwayFeedback(MemoryState):
    """The in-process store, away (ConnectionError) for feedback until `back` is set."""

    def __init__(self) -> None:
        super().__init__(decision_ttl_seconds=3600)
        self.back = False

    async def append_feedback(self, events: Sequence[Record],
                              keys: Sequence[str] | None = None) -> list[bool]:
        if not self.back:
            raise RedisConnectionError("Redis is away")
        return await super().append_feedback(events, keys)


def _service(state: AwayFeedback, max_spooled: int = 100) -> tuple[FeedbackService, DecisionLog]:
    decisions = DecisionLog(state)
    for i in range(3):
        decisions.submit({"decision_id": f"d{i}", "ts": time.time(), "customer_id": "c1",
                          "channel": "web", "placement": "home", "journey_stage": "purchase",
                          "segment": "new", "shown": [{"action_id": "a", "rank": 1,
                                                       "probability": 1.0, "offline_logit": 0.0}]})
    return FeedbackService(state, decisions, Metrics(), max_spooled=max_spooled,
                           write_timeout=0.2), decisions


def _event(i: int, outcome: str = "accept", **extra: Any) -> FeedbackEvent:
    return FeedbackEvent(decision_id=f"d{i}", action_id="a", outcome=outcome, **extra)


@pytest.mark.anyio
async def test_feedback_is_acknowledged_spooled_and_written_in_order() -> None:
    state = AwayFeedback()
    service, _ = _service(state)
    runner = asyncio.create_task(service.run())
    try:
        assert (await service.submit([_event(0), _event(1, "impression")]))[:2] == (2, 0)
        assert (await service.submit([_event(2)]))[:2] == (1, 0)
        assert service.spooled == 3 and await state.feedback_length() == 0
        state.back = True
        for _ in range(100):
            if not service.spooled:
                break
            await asyncio.sleep(0.05)
        assert (await service.submit([_event(0)]))[:2] == (1, 1)  # a resend: applied once
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    entries = await state.read_feedback("0", 10, 10)
    assert [(e["decision_id"], e["outcome"]) for _, e in entries] == [
        ("d0", "accept"), ("d1", "impression"), ("d2", "accept")]


class FailingOver(AwayFeedback):
    """Away, then one unexpected error on the spool's first write once back (a failover
    answer nobody foresaw), then fine."""

    def __init__(self) -> None:
        super().__init__()
        self.surprises = 1

    async def append_feedback(self, events: Sequence[Record],
                              keys: Sequence[str] | None = None) -> list[bool]:
        if self.back and self.surprises:
            self.surprises -= 1
            raise RuntimeError("something the spool did not expect")
        return await super().append_feedback(events, keys)


@pytest.mark.anyio
async def test_the_spool_outlives_an_unexpected_error() -> None:
    """Acknowledged events wait for the store whatever it answers; the writer goes on."""
    state = FailingOver()
    service, _ = _service(state)
    runner = asyncio.create_task(service.run())
    try:
        assert (await service.submit([_event(0), _event(1)]))[:2] == (2, 0)
        state.back = True
        for _ in range(100):
            if not service.spooled:
                break
            await asyncio.sleep(0.05)
        assert state.surprises == 0 and not runner.done()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert service.spooled == 0 and await state.feedback_length() == 2


@pytest.mark.anyio
async def test_a_closed_transport_is_a_connection_error() -> None:
    """uvloop's answer to a write on a closed connection counts as the store being away;
    other RuntimeErrors stay what they are."""
    from service.state import UNAVAILABLE, closed_transport_unavailable

    @closed_transport_unavailable
    async def write(message: str) -> None:
        raise RuntimeError(message)

    with pytest.raises(UNAVAILABLE):
        await write("unable to perform operation on <TCPTransport closed=True>; "
                    "the handler is closed")
    with pytest.raises(RuntimeError, match="a bug"):
        await write("a bug")


@pytest.mark.anyio
async def test_a_full_spool_answers_503_with_retry_after() -> None:
    service, _ = _service(AwayFeedback(), max_spooled=2)
    await service.submit([_event(0), _event(1)])
    with pytest.raises(StateUnavailable) as refused:
        await service.submit([_event(2)])
    assert refused.value.status_code == 503 and refused.value.retry_after_seconds >= 1


@pytest.mark.parametrize(("shift", "reason"), [(3600, "in the future"),
                                               (-3600, "before its decision")])
@pytest.mark.anyio
async def test_timestamps_far_from_the_decision_are_refused(shift: float, reason: str) -> None:
    state = AwayFeedback()
    state.back = True
    service, _ = _service(state)
    when = datetime.now(UTC) + timedelta(seconds=shift)
    accepted, _, rejected = await service.submit([_event(0, timestamp=when), _event(1)])
    assert accepted == 1 and [r.reason for r in rejected] == ["invalid_timestamp"]
    assert reason in rejected[0].message
