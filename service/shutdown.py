"""Stopping background tasks for good, within a bounded time.

One `Task.cancel()` is not always enough on Python 3.11: `asyncio.wait_for` returns the
inner result instead of raising when the cancel lands just as the awaited future
completes, and redis-py wraps every socket write in `wait_for` when a socket timeout is
set. A loop blocked on the Redis Cluster client's stream read (the feedback loop) then
swallows its cancel and reads on. Left running, it keeps the client busy while it is
being closed, and when the event loop shuts down (`asyncio.run` cancels the leftover
tasks once, then waits for them without a timeout) it can hang the process for good.
So the tasks are cancelled again and again until they are done, for at most `timeout`
seconds; a cancel only gets lost in that narrow window, so the next one lands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

#: seconds between repeated cancels of tasks that have not stopped yet
RECANCEL_SECONDS = 0.05


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout: float) -> list[asyncio.Task[Any]]:
    """Cancel `tasks` until they are done or `timeout` seconds have passed; returns the
    tasks still running then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {t for t in tasks if not t.done()}
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            break
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(left, RECANCEL_SECONDS))
    return sorted(pending, key=lambda t: t.get_name())


async def close_within(close: Callable[[], Any], timeout: float) -> bool:
    """Call `close()` (awaiting it when it returns an awaitable) for at most `timeout`
    seconds; False when it had not finished by then. Errors propagate."""
    result = close()
    if not isinstance(result, Awaitable):
        return True
    task = asyncio.ensure_future(result)
    done, _ = await asyncio.wait([task], timeout=timeout)
    if not done:
        await stop_tasks([task], RECANCEL_SECONDS * 4)
        return False
    task.result()
    return True
