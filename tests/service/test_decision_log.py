"""The decision log: batched writes that linger, and feedback joins served in-process."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from service.decision_log import DecisionLog
from service.state import Record
from service.state.memory import MemoryState
from service.state.redis_store import RedisState

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CountingState(MemoryState):
    """The in-process store, counting writes and reads of decision records."""

    def __init__(self) -> None:
        super().__init__(decision_ttl_seconds=3600)
        self.batches: list[int] = []
        self.reads = 0

    async def log_decisions(self, records: Sequence[Record],
                            blobs: Sequence[bytes] | None = None) -> None:
        self.batches.append(len(records))
        await super().log_decisions(records, blobs)

    async def get_decisions(self, decision_ids: Sequence[str]) -> list[Record | None]:
        self.reads += 1
        return await super().get_decisions(decision_ids)


def record(i: int, age: float = 0.0) -> Record:
    return {"decision_id": f"d{i}", "ts": time.time() - age, "shown": []}


async def run_writer(log: DecisionLog, submit: int, spread: float) -> None:
    task = asyncio.create_task(log.run())
    try:
        for i in range(submit):
            log.submit(record(i))
            await asyncio.sleep(spread)
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_lingering_writes_concurrent_decisions_in_one_batch() -> None:
    state = CountingState()
    await run_writer(DecisionLog(state, linger_seconds=0.05), submit=10, spread=0.001)
    assert sum(state.batches) == 10
    assert len(state.batches) <= 2


async def test_without_linger_each_lonely_record_is_its_own_batch() -> None:
    state = CountingState()
    await run_writer(DecisionLog(state), submit=5, spread=0.02)
    assert state.batches == [1, 1, 1, 1, 1]


async def test_recent_decisions_join_feedback_without_a_store_read() -> None:
    state = CountingState()
    log = DecisionLog(state, recent=3)
    await run_writer(log, submit=5, spread=0.0)
    found = await log.get_many(["d2", "d3", "d4"])
    assert [r["decision_id"] for r in found if r] == ["d2", "d3", "d4"]
    assert state.reads == 0
    # kept out of the garbage collector's sight (a full collection walks every tracked object)
    assert not any(gc.is_tracked(blob) for blob in log._recent.values())
    # d0 and d1 fell out of the in-process window: the store answers for them
    assert [r["decision_id"] for r in await log.get_many(["d0", "d1"]) if r] == ["d0", "d1"]
    assert state.reads == 1


async def test_records_older_than_the_ttl_are_not_served_from_memory() -> None:
    state = MemoryState(decision_ttl_seconds=3600)
    log = DecisionLog(state, recent=10, ttl_seconds=60)
    log.submit(record(1, age=120))
    assert await log.get_many(["d1"]) == [None]


async def test_recent_window_with_a_real_redis(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    state = RedisState(client, decision_ttl_seconds=60, feedback_maxlen=100, prefix="nb-test-log:")
    log = DecisionLog(state, linger_seconds=0.01, recent=1)
    try:
        await run_writer(log, submit=3, spread=0.0)
        assert await client.exists("nb-test-log:decision:d0") == 1  # written, though not recent
        assert [r and r["decision_id"] for r in await log.get_many(["d0", "d2", "nope"])] == [
            "d0", "d2", None,
        ]
    finally:
        await client.delete(*[f"nb-test-log:decision:d{i}" for i in range(3)],
                            "nb-test-log:decisions")
        await state.close()


class AwayState(CountingState):
    """A store that is away (ConnectionError) until `back` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.back = False
        self.refused = 0

    async def log_decisions(self, records: Sequence[Record],
                            blobs: Sequence[bytes] | None = None) -> None:
        if not self.back:
            self.refused += 1
            raise RedisConnectionError("Redis is away")
        await super().log_decisions(records, blobs)


async def test_records_wait_while_the_store_is_away_and_are_written_in_order() -> None:
    """Far longer than the five attempts the writer once gave up after; nothing is lost."""
    from service.metrics import Metrics

    state, metrics = AwayState(), Metrics()
    log = DecisionLog(state, max_batch=8, metrics=metrics)
    task = asyncio.create_task(log.run())
    try:
        for i in range(40):
            assert log.submit(record(i))
        await asyncio.sleep(2.5)
        assert state.refused >= 5 and log.depth == 40
        assert metrics.spool_depth.labels("decisions")._value.get() == 40
        assert (await log.get_many(["d0", "d39"]))[1] is not None  # feedback still joins
        state.back = True
        for _ in range(100):
            if log.depth == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    stored = await state.get_decisions([f"d{i}" for i in range(40)])
    assert all(r is not None for r in stored)
    assert sum(state.batches) == 40 and log.dropped == 0
    assert metrics.spooled.labels("decisions")._value.get() == 8  # the batch that failed first
    assert metrics.spool_written.labels("decisions")._value.get() == 8
    assert metrics.spool_depth.labels("decisions")._value.get() == 0  # all written: none waits


async def test_a_full_spool_refuses_the_record_and_counts_it() -> None:
    log = DecisionLog(AwayState(), max_queue=2)
    assert log.submit(record(0)) and log.submit(record(1))
    assert not log.submit(record(2))
    assert log.dropped == 1 and log.depth == 2


async def test_shutdown_counts_what_it_could_not_write() -> None:
    log = DecisionLog(AwayState())
    log.submit(record(0))
    log.submit(record(1))
    await log.flush(timeout=0.5)
    assert log.dropped == 2 and log.depth == 0


@pytest.fixture(params=["redis", "redis-cluster"])
def connect(request: pytest.FixtureRequest) -> tuple[Callable[[], Any], bool]:
    """(new client, cluster?): a real Redis node, or a real Redis Cluster."""
    if request.param == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_url")
        return (lambda: aioredis.RedisCluster.from_url(url)), True
    url = request.getfixturevalue("redis_url")
    return (lambda: aioredis.from_url(url)), False


async def test_a_retried_batch_is_written_to_the_stream_once(
        connect: tuple[Callable[[], Any], bool]) -> None:
    """A decision id is written once (the script on one node, SET NX on a cluster): a
    retry after a lost answer adds nothing."""
    new_client, cluster = connect
    client = new_client()
    state = RedisState(client, decision_ttl_seconds=60, feedback_maxlen=100, prefix="once:",
                       scripted=not cluster)
    try:
        batch = [record(i) for i in range(3)]
        await state.log_decisions(batch)
        await state.log_decisions(batch)
        assert await client.xlen("once:decisions") == 3
    finally:
        await client.delete("once:decisions", *(f"once:decision:d{i}" for i in range(3)))
        await state.close()


async def test_on_a_cluster_a_batch_whose_stream_write_failed_is_streamed_by_its_retry(
        redis_cluster_url: str) -> None:
    """The records' keys were set (on their masters) when the stream's master refused
    the XADDs: the retry finds the keys there, and still adds the records to the stream."""
    client = aioredis.RedisCluster.from_url(redis_cluster_url)
    state = RedisState(client, decision_ttl_seconds=60, feedback_maxlen=100, prefix="fail:",
                       scripted=False)
    batch = [record(i) for i in range(6)]
    try:
        await client.set("fail:decisions", "not a stream")  # XADD answers WRONGTYPE
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await state.log_decisions(batch)
        assert await client.exists(*(f"fail:decision:d{i}" for i in range(6))) == 6
        await client.delete("fail:decisions")
        await state.log_decisions(batch)  # the decision log's retry
        entries = await client.xrange("fail:decisions")
        assert sorted(orjson.loads(e[b"d"])["decision_id"] for _, e in entries) == [
            f"d{i}" for i in range(6)]
        await state.log_decisions(batch)  # and once streamed, never again
        assert await client.xlen("fail:decisions") == 6
    finally:
        await client.delete("fail:decisions", *(f"fail:decision:d{i}" for i in range(6)))
        await state.close()


async def test_a_batch_held_by_a_writer_cancelled_while_lingering_is_flushed() -> None:
    """Shutdown cancels the writer mid-linger; the records it held are still written."""
    state = CountingState()
    log = DecisionLog(state, linger_seconds=5.0)
    task = asyncio.create_task(log.run())
    log.submit(record(1))
    log.submit(record(2))
    await asyncio.sleep(0.05)  # the writer took d1 and lingers
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await log.flush()
    assert [r["decision_id"] for r in await state.get_decisions(["d1", "d2"]) if r] == ["d1", "d2"]
