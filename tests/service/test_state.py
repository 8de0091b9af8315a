"""One contract, both backends: the in-process store and a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from service.state import StateStore, stream_position
from service.state.memory import MemoryState
from service.state.redis_store import RedisState
from service.state.resp import RespConnection

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "redis", "redis-py", "redis-pipelined", "redis-cluster"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    """The in-process store; Redis as the service runs one node (lean connections, the
    stream read on one of its own), the same through redis-py clients, one node written
    as in cluster mode (pipelines), and a real Redis Cluster of three masters."""
    if request.param == "memory":
        store: StateStore = MemoryState(decision_ttl_seconds=60)
    elif request.param == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_url")
        store = RedisState(aioredis.RedisCluster.from_url(url), decision_ttl_seconds=60,
                           feedback_maxlen=1000, scripted=False,
                           reader=aioredis.RedisCluster.from_url(url))
    else:
        url = request.getfixturevalue("redis_url")
        # as the service runs it: writes on one connection, blocking reads on another
        lean = request.param == "redis"
        writer = (RespConnection(url, retry_on_disconnect=True) if lean
                  else aioredis.from_url(url, single_connection_client=True))
        reader = RespConnection(url, retry_on_disconnect=True) if lean else aioredis.from_url(url)
        store = RedisState(writer, decision_ttl_seconds=60, feedback_maxlen=1000,
                           scripted=request.param != "redis-pipelined", reader=reader)
    yield store
    await store.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_decisions_round_trip(state: StateStore) -> None:
    await state.log_decisions([{"decision_id": "d1", "x": 1}, {"decision_id": "d2", "x": [1, 2]}])
    assert await state.get_decisions(["d2", "nope", "d1"]) == [
        {"decision_id": "d2", "x": [1, 2]}, None, {"decision_id": "d1", "x": 1},
    ]
    assert await state.get_decisions([]) == []


async def test_feedback_stream_is_ordered_and_resumable(state: StateStore) -> None:
    await state.append_feedback([{"n": i} for i in range(5)])
    first = await state.read_feedback("0", 3, 100)
    assert [e["n"] for _, e in first] == [0, 1, 2]
    rest = await state.read_feedback(first[-1][0], 10, 100)
    assert [e["n"] for _, e in rest] == [3, 4]
    assert await state.read_feedback(rest[-1][0], 10, 50) == []
    assert await state.feedback_length() == 5


async def test_feedback_bounds_are_the_oldest_and_newest_entries(state: StateStore) -> None:
    assert await state.feedback_bounds() is None
    await state.append_feedback([{"n": i} for i in range(3)])
    entries = await state.read_feedback("0", 10, 100)
    assert await state.feedback_bounds() == (entries[0][0], entries[-1][0])
    assert stream_position(entries[0][0]) < stream_position(entries[-1][0])


async def test_keyed_feedback_is_appended_once(state: StateStore) -> None:
    """The same key is appended once, within a call, across calls and concurrent callers."""
    assert await state.append_feedback([{"n": 0}, {"n": 1}], keys=["a", "b"]) == [True, True]
    assert await state.append_feedback([{"n": 2}, {"n": 3}], keys=["b", "c"]) == [False, True]
    assert await state.append_feedback([{"n": 4}, {"n": 5}], keys=["d", "d"]) == [True, False]
    racing = await asyncio.gather(*(state.append_feedback([{"n": 10 + i}], keys=["e"])
                                    for i in range(8)))
    assert sum(r == [True] for r in racing) == 1
    assert await state.append_feedback([{"n": 6}]) == [True]  # unkeyed: always appended
    entries = await state.read_feedback("0", 100, 100)
    assert [e["n"] for _, e in entries][:4] == [0, 1, 3, 4]
    assert len(entries) == 6 and await state.feedback_length() == 6


async def test_two_writers_on_one_redis_append_a_key_once(redis_url: str) -> None:
    """Two replicas: separate connections and stores, one Redis, the same events."""
    stores = [RedisState(RespConnection(redis_url, retry_on_disconnect=True), decision_ttl_seconds=60,
                         feedback_maxlen=1000, prefix="twice:") for _ in range(2)]
    try:
        keys = [f"k{i}" for i in range(200)]
        results = await asyncio.gather(*(s.append_feedback([{"k": k} for k in keys], keys=keys)
                                         for s in stores))
        assert [a + b for a, b in zip(*results, strict=True)] == [1] * 200
        assert await stores[0].feedback_length() == 200
    finally:
        for s in stores:
            await s.close()


async def test_a_key_may_be_appended_again_after_the_ttl() -> None:
    store = MemoryState(decision_ttl_seconds=0)
    assert await store.append_feedback([{"n": 0}], keys=["a"]) == [True]
    assert await store.append_feedback([{"n": 1}], keys=["a"]) == [True]


async def test_blocking_read_wakes_on_append(state: StateStore) -> None:
    await state.append_feedback([{"n": 0}])
    (last, _), = await state.read_feedback("0", 10, 100)
    reader = asyncio.create_task(state.read_feedback(last, 10, 2000))
    await asyncio.sleep(0.05)
    await state.append_feedback([{"n": 1}])
    got = await asyncio.wait_for(reader, 3)
    assert [e["n"] for _, e in got] == [1]


async def test_decision_ttl_expires() -> None:
    store = MemoryState(decision_ttl_seconds=0)
    await store.log_decisions([{"decision_id": "d"}])
    assert await store.get_decisions(["d"]) == [None]


@pytest.mark.parametrize("scripted", [True, False])
async def test_redis_decision_keys_carry_the_ttl_and_feed_the_log(redis_url: str, scripted: bool) -> None:
    client = aioredis.from_url(redis_url)
    store = RedisState(client, decision_ttl_seconds=123, feedback_maxlen=1000, scripted=scripted)
    await store.log_decisions([{"decision_id": "d"}, {"decision_id": "e", "x": 1}])
    assert 0 < await client.ttl("nb:decision:d") <= 123
    assert 0 < await client.ttl("nb:decision:e") <= 123
    entries = await client.xrange(store.decision_log_key)
    assert [orjson.loads(fields[b"d"]) for _, fields in entries] == [
        {"decision_id": "d"}, {"decision_id": "e", "x": 1},
    ]
    await store.close()
