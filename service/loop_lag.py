"""How late the event loop runs what is due: a timer set every `interval` seconds, and
how much later than asked it fired.

One worker serves every request from one event loop thread. While the loop runs one
request's code, the others wait, and so does a due timer: its lateness is the time a
request arriving meanwhile waits before the server even reads it. Client latency
that the server's own request histogram does not show (it starts when the request is
read) shows up here: a loop busy with a burst of requests, a long step in a background
task, a full garbage collection, or the process waiting for a core. A tick is one timer
callback, a negligible share of a core at the default interval (the CPU per request
that `nextbest bench` reports includes it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def watch(observe: Callable[[float], None], interval: float) -> None:
    """Observe each tick's lateness, in seconds, until cancelled."""
    while True:
        asked = time.perf_counter() + interval
        await asyncio.sleep(interval)
        observe(max(0.0, time.perf_counter() - asked))
