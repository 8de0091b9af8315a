"""service/shutdown.py: background tasks stop even when a cancel is lost, and every wait
at shutdown is bounded.

A lost cancel is what Python 3.11's `asyncio.wait_for` does when the cancel lands as the
awaited future completes (redis-py wraps socket writes in it): the task goes on as if
nothing happened. `swallows_one_cancel` behaves that way on purpose, on any Python.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from service.shutdown import close_within, stop_tasks

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def swallows_one_cancel(ticks: list[int]) -> None:
    """A polling loop whose first cancel is lost, like a stream read in wait_for on 3.11."""
    lost = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
        ticks.append(1)


async def ignores_cancels(until: asyncio.Event) -> None:
    """Every cancel lost: only `until` ends it (the test's own cleanup)."""
    while not until.is_set():
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def test_a_task_that_lost_its_cancel_is_stopped_by_the_next() -> None:
    ticks: list[int] = []
    task = asyncio.create_task(swallows_one_cancel(ticks), name="reads-on")
    plain = asyncio.create_task(asyncio.sleep(3600), name="plain")
    await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await stop_tasks([task, plain], timeout=5.0) == []
    assert time.monotonic() - started < 1.0
    assert task.cancelled() and plain.cancelled()
    # one cancel alone leaves such a task running: what a single `cancel()` did before
    again = asyncio.create_task(swallows_one_cancel(ticks))
    await asyncio.sleep(0.02)
    again.cancel()
    await asyncio.sleep(0.05)
    assert not again.done()
    assert await stop_tasks([again], timeout=5.0) == [] and again.cancelled()


async def test_a_task_that_never_stops_is_given_back_after_the_timeout() -> None:
    until = asyncio.Event()
    task = asyncio.create_task(ignores_cancels(until), name="stubborn")
    done = asyncio.create_task(asyncio.sleep(0), name="done")
    await asyncio.sleep(0.02)
    started = time.monotonic()
    assert await stop_tasks([task, done], timeout=0.3) == [task]
    assert 0.3 <= time.monotonic() - started < 1.0
    assert not task.done()
    until.set()
    await task


async def test_close_is_bounded_and_errors_propagate() -> None:
    closed: list[str] = []

    async def hangs() -> None:
        await asyncio.sleep(3600)

    async def fails() -> None:
        raise RuntimeError("connection reset")

    started = time.monotonic()
    assert await close_within(hangs, 0.2) is False
    assert time.monotonic() - started < 1.0
    assert await close_within(lambda: closed.append("sync"), 0.2) is True
    assert closed == ["sync"]
    with pytest.raises(RuntimeError, match="connection reset"):
        await close_within(fails, 0.2)
