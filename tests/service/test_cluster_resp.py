"""service/state/cluster_resp.py on the suite's real Redis Cluster: commands reach the
master of their key's slot over one connection per master, a burst shares those
connections, a MOVED reply is followed (and the map refreshed), and the parsing of keys
and redirects."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.exceptions import ResponseError

from service.state.cluster_resp import ClusterRespConnections, command_key, redirect

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_key_of_a_command() -> None:
    assert command_key(("HMGET", b"k1", "f")) == b"k1"
    assert command_key(("EVALSHA", "abc", 2, "nb:{budget}:a", "nb:{budget}:b", "x")) == b"nb:{budget}:a"
    assert command_key(("EVAL", "return 1", 0)) is None
    assert command_key(("PING",)) is None
    assert redirect(ResponseError("MOVED 3999 127.0.0.1:6381")) == ("127.0.0.1", 6381)
    assert redirect(ResponseError("ASK 3999 127.0.0.1:6381")) is None
    assert redirect(ResponseError("NOSCRIPT No matching script")) is None


async def test_commands_reach_their_slots_master_over_one_connection_each(
        redis_cluster_url: str) -> None:
    conns = ClusterRespConnections(redis_cluster_url, timeout=5.0)
    keys = [f"nb:test:{i}" for i in range(300)]
    try:
        await asyncio.gather(*(conns.execute_command("SET", k, i) for i, k in enumerate(keys)))
        replies = await asyncio.gather(*(conns.execute_command("GET", k) for k in keys))
        assert replies == [str(i).encode() for i in range(len(keys))]
        assert len(conns.masters) == 3
        assert set(conns._connections) == set(conns.masters)  # one each, none more
        script = "return redis.call('INCR', KEYS[1]) + redis.call('INCR', KEYS[2])"
        assert await conns.execute_command("EVAL", script, 2, "nb:{budget}:a", "nb:{budget}:b") == 2
    finally:
        await conns.aclose()
    check = redis.RedisCluster.from_url(redis_cluster_url)
    try:
        assert check.get("nb:test:7") == b"7"  # where redis-py's own routing finds it
        assert check.get("nb:{budget}:a") == b"1"
    finally:
        check.close()


async def test_a_moved_reply_is_followed_and_the_map_refreshed(redis_cluster_url: str) -> None:
    conns = ClusterRespConnections(redis_cluster_url, timeout=5.0)
    try:
        await conns.execute_command("SET", "nb:test:moved", "x")
        right = conns._node(("GET", "nb:test:moved"))
        wrong = next(m for m in conns.masters if m != right)
        conns._slots = [wrong] * len(conns._slots)  # a map that is stale everywhere
        assert await conns.execute_command("GET", "nb:test:moved") == b"x"
        assert conns._stale
        conns._refreshed_at = float("-inf")
        assert await conns.execute_command("GET", "nb:test:moved") == b"x"
        assert not conns._stale and conns._node(("GET", "nb:test:moved")) == right
    finally:
        await conns.aclose()


def test_only_plain_urls_of_database_0() -> None:
    with pytest.raises(ValueError, match="redis://"):
        ClusterRespConnections("rediss://127.0.0.1:7000")
    with pytest.raises(ValueError, match="database 0"):
        ClusterRespConnections("redis://127.0.0.1:7000/1")
