"""load_tests/redis_cost.py: its counting, on the suite's Redis (the full run, on a node
and a cluster it starts, is `python -m load_tests.redis_cost`)."""

from __future__ import annotations

import asyncio

import redis

from load_tests import redis_cost
from service.state.resp import RespConnection


def test_calls_commands_and_cpu_are_counted_per_phase(redis_server: str) -> None:
    nodes = redis_cost.node_clients(redis_server, cluster=False)
    stop = redis_cost.count_client_calls()

    async def three_sets() -> None:
        conn = RespConnection(redis_server)
        try:
            for i in range(3):
                await conn.execute_command("SET", f"nb:cost:{i}", i)
        finally:
            await conn.aclose()

    try:
        with redis_cost.phase(nodes) as measured:
            asyncio.run(three_sets())
    finally:
        stop()
    commands, calls = measured()
    assert commands["set"] == 3
    assert calls == {"lean": 3}
    assert RespConnection.execute_command.__name__ == "execute_command"  # counting undone
    for node in nodes:
        node.close()
    redis.Redis.from_url(redis_server).delete(*(f"nb:cost:{i}" for i in range(3)))
