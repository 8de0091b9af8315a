"""Client CPU per Redis command: redis-py's asyncio client against the service's lean
connection (`service/state/resp.py`), on the commands the service sends most.

    python -m load_tests.resp_bench [--commands 5000]

Starts its own redis-server on a free port, sends each command `--commands` times one
after another (each waits for its reply), and reports the client process's CPU time per
command (user + system; the server's is not counted). Same machine, same run: compare
the rows, not runs on different days.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from load_tests.processes import start_redis
from service.state.resp import RespConnection

FIELDS = [f"field{i}".encode() for i in range(20)]  # as many as a demo customer's Feast hash holds
EVENT = b'{"decision_id": "0123456789abcdef0123456789abcdef", "outcome": "click"}' * 4


async def _cpu_us(call: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(min(500, n)):  # warm up: connect, caches
        await call()
    start = time.process_time()
    for _ in range(n):
        await call()
    return 1e6 * (time.process_time() - start) / n


async def measure(url: str, n: int) -> dict[str, dict[str, float]]:
    import redis.asyncio as aioredis

    redis_py = aioredis.from_url(url, health_check_interval=0, single_connection_client=True)
    lean = RespConnection(url)
    await lean.execute_command("HSET", "bench:h", *(x for f in FIELDS for x in (f, b"v" * 12)))
    commands: dict[str, tuple[Any, ...]] = {
        "HMGET (20 fields)": ("HMGET", "bench:h", *FIELDS),
        "XADD (300 bytes)": ("XADD", "bench:s", "MAXLEN", "~", 1000, "*", "e", EVENT),
    }
    out: dict[str, dict[str, float]] = {}
    for name, args in commands.items():
        out[name] = {
            "redis-py": await _cpu_us(functools.partial(redis_py.execute_command, *args), n),
            "lean": await _cpu_us(functools.partial(lean.execute_command, *args), n),
        }
    await redis_py.aclose()
    await lean.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=5000, help="commands per row")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nextbest-resp-") as work:
        server = start_redis(Path(work))
        try:
            rows = uvloop.run(measure(server.url, args.commands))  # the service's loop
        finally:
            server.stop()
    print("| command | redis-py us CPU/command | lean us CPU/command | lean / redis-py |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['redis-py']:.1f} | {r['lean']:.1f} | {r['lean'] / r['redis-py']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
