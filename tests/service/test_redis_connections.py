"""The service's own Redis connections (single-connection clients included) come back
after the server drops them: decisions and feedback keep working, nothing is lost."""

from __future__ import annotations

import time
from typing import cast

import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.runtime import hot_path_clients, stream_reader
from service.settings import Settings
from service.state.cluster_resp import ClusterRespConnections
from service.state.resp import RespConnection
from tests.demo_fixtures import DemoDirs, clear_service_state
from tests.service.conftest import make_settings

KNOWN = "c00002"


def test_decisions_and_feedback_survive_dropped_connections(demo: DemoDirs, demo_redis: str) -> None:
    clear_service_state(demo_redis)
    admin = redis.Redis.from_url(demo_redis)
    # no customer cache: every decision reads the customer's features through its connection
    settings = make_settings(demo, demo_redis, customer_cache_seconds=0)
    with TestClient(create_app(settings)) as client:
        body = {"customer_id": KNOWN, "channel": "web", "placement": "home", "limit": 2}
        first = client.post("/v1/decisions", json=body).json()
        assert first["degraded"] == []

        # redis-py types a sync client's replies as `Awaitable | Any` (shared with asyncio)
        killed = cast(int, admin.client_kill_filter(_type="normal", skipme=True))
        assert killed >= 2  # at least the feature reader's and the writer's connections

        # the feature read after the drop may be served degraded (no retries on the
        # decision path), but never fails, and the connection comes back
        after = [client.post("/v1/decisions", json=body) for _ in range(3)]
        assert all(r.status_code == 200 for r in after)
        assert after[-1].json()["degraded"] == []

        admin.client_kill_filter(_type="normal", skipme=True)
        shown = after[-1].json()["actions"][0]["action_id"]
        fb = client.post("/v1/feedback", json={"decision_id": after[-1].json()["decision_id"],
                                                "action_id": shown, "outcome": "click"})
        assert fb.status_code == 202, fb.text
        deadline = time.time() + 5
        while time.time() < deadline and cast(int, admin.xlen("nb:feedback")) < 1:
            time.sleep(0.05)
        assert admin.xlen("nb:feedback") == 1
        # the decision records reached Redis too (written by the batching writer)
        deadline = time.time() + 5
        while time.time() < deadline and not admin.exists(f"nb:decision:{after[-1].json()['decision_id']}"):
            time.sleep(0.05)
        assert admin.exists(f"nb:decision:{first['decision_id']}")
        assert admin.exists(f"nb:decision:{after[-1].json()['decision_id']}")
        # and the learner read it back through its own stream connection, dropped too
        loop = client.app.state.runtime.feedback_loop  # type: ignore[attr-defined]
        deadline = time.time() + 5
        while time.time() < deadline and loop.learned < 1:
            time.sleep(0.05)
        assert loop.learned == 1


@pytest.mark.parametrize(("url", "cluster", "lean"), [
    ("redis://127.0.0.1:6379/1", False, True),
    ("redis://user:secret@redis.example:6380", False, True),
    ("rediss://redis.example:6380/0", False, False),  # TLS
    ("redis://127.0.0.1:6379/0?socket_keepalive=true", False, False),  # options redis-py reads
])
def test_the_hot_path_gets_lean_connections_only_where_they_apply(
        url: str, cluster: bool, lean: bool) -> None:
    reads, writes = hot_path_clients(Settings(redis_url=url, redis_cluster=cluster))
    assert isinstance(reads, RespConnection) is lean
    assert isinstance(writes, RespConnection) is lean
    if lean:  # the decision path's tight timeout on reads; writes are patient and retry once
        assert reads.timeout == Settings().redis_timeout_seconds and writes.timeout == 5.0


@pytest.mark.parametrize(("url", "cluster", "lean"), [
    ("redis://127.0.0.1:6379/1", False, True),
    ("redis://user:secret@redis.example:6380", False, True),
    ("rediss://redis.example:6380/0", False, False),
    ("redis://127.0.0.1:6379/0?socket_keepalive=true", False, False),
    ("redis://127.0.0.1:6379/0", True, False),  # a cluster: redis-py's client routes the reads
])
def test_the_feedback_stream_is_read_on_a_lean_connection_of_its_own_where_it_applies(
        url: str, cluster: bool, lean: bool) -> None:
    pool = object()
    reader = stream_reader(Settings(redis_url=url, redis_cluster=cluster), pool)
    assert isinstance(reader, RespConnection) is lean
    assert (reader is pool) is not lean
    if lean:  # patient: well above the learner's blocking read
        assert reader.timeout == 5.0


@pytest.mark.parametrize(("url", "lean"), [
    ("redis://127.0.0.1:6379/0", True),
    ("redis://user:secret@127.0.0.1:6379", True),
    ("rediss://redis.example:6380", False),  # TLS: redis-py's cluster client
])
def test_on_a_cluster_the_reads_get_one_lean_connection_per_master(url: str, lean: bool) -> None:
    """The writes keep redis-py's cluster client (pipelines across masters)."""
    import redis.asyncio as aioredis

    reads, writes = hot_path_clients(Settings(redis_url=url, redis_cluster=True))
    assert isinstance(reads, ClusterRespConnections) is lean
    assert isinstance(writes, aioredis.RedisCluster)
    if lean:
        assert reads.timeout == Settings().redis_timeout_seconds
