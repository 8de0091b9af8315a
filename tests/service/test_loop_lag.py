"""The event loop lag watch, on a real asyncio loop."""

from __future__ import annotations

import asyncio
import time

from service.loop_lag import watch


def test_a_loop_held_up_shows_as_lag_and_an_idle_one_does_not() -> None:
    observed: list[float] = []

    async def main() -> None:
        task = asyncio.create_task(watch(observed.append, 0.01))
        await asyncio.sleep(0.1)  # idle ticks
        idle = len(observed)
        time.sleep(0.08)  # a step that holds the loop for eight intervals
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert idle >= 3
        assert min(observed[:idle]) < 0.02

    asyncio.run(main())
    assert max(observed) >= 0.06, observed
    assert all(v >= 0 for v in observed)
