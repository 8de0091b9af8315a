"""The lean Redis connection against a real redis-server: replies, errors, order,
timeouts and reconnects (the service's own use of it: test_state.py, test_redis_connections.py)."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.state.resp import RespConnection, pack

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """Both event loops: the service runs on uvloop, whose transports differ."""
    return "asyncio", {"use_uvloop": request.param == "uvloop"}


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    from redis.connection import Connection

    args = ("HMGET", b"k\x00\xff", "f", 12, 0.25)
    assert pack(args) == b"".join(Connection().pack_command(*args))
    with pytest.raises(TypeError):
        pack(("SET", "k", True))  # type: ignore[arg-type]


async def test_replies_come_back_as_redis_py_returns_them(redis_url: str) -> None:
    conn = RespConnection(redis_url)
    assert await conn.execute_command("PING") == b"PONG"
    assert await conn.execute_command("HSET", "h", "a", b"\x00\x01", "b", 2) == 2
    assert await conn.execute_command("HMGET", "h", "a", "missing", "b") == [b"\x00\x01", None, b"2"]
    assert await conn.execute_command("GET", "nothing") is None
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await conn.execute_command("LPUSH", "h", "x")
    assert await conn.execute_command("PING") == b"PONG"  # an error reply keeps the connection
    await conn.aclose()


async def test_concurrent_commands_get_their_own_replies(redis_url: str) -> None:
    conn = RespConnection(redis_url)
    replies = await asyncio.gather(*(conn.execute_command("ECHO", f"m{i}") for i in range(200)))
    assert replies == [f"m{i}".encode() for i in range(200)]
    await conn.aclose()


async def test_the_url_selects_the_database(redis_url: str) -> None:
    conn = RespConnection(redis_url.rsplit("/", 1)[0] + "/3")
    await conn.execute_command("SET", "where", "db3")
    admin = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    assert admin.get("where") == b"db3"
    admin.delete("where")
    admin.close()
    await conn.aclose()


async def test_refused_credentials_are_an_error_reply(redis_url: str) -> None:
    # the suite's Redis has no password: AUTH is refused, and the connection closed again
    conn = RespConnection(redis_url.replace("redis://", "redis://someone:secret@"))
    with pytest.raises(ResponseError):
        await conn.execute_command("PING")


def test_only_plain_redis_urls() -> None:
    for url in ("rediss://localhost:6379/0", "unix:///tmp/redis.sock"):
        with pytest.raises(ValueError, match="redis://"):
            RespConnection(url)


async def test_a_dropped_connection_fails_what_waits_on_it_then_reconnects(redis_url: str) -> None:
    conn = RespConnection(redis_url)
    await conn.execute_command("SET", "k", "v")
    admin = redis.Redis.from_url(redis_url)
    in_flight = asyncio.ensure_future(conn.execute_command("BLPOP", "empty-list", 2))
    await asyncio.sleep(0.05)
    # redis-py types a sync client's replies as `Awaitable | Any` (shared with asyncio)
    assert cast(int, admin.client_kill_filter(_type="normal", skipme=True)) >= 1
    with pytest.raises(RedisConnectionError):
        await in_flight
    assert await conn.execute_command("GET", "k") == b"v"  # the next command reconnects

    # killed before the loop notices: the command goes out on the dead connection and
    # fails, unless the connection resends it once on a new one
    retrying = RespConnection(redis_url, retry_on_disconnect=True)
    await retrying.execute_command("PING")
    await conn.execute_command("PING")
    admin.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(RedisConnectionError):
        await conn.execute_command("GET", "k")
    assert await retrying.execute_command("GET", "k") == b"v"
    admin.close()
    await conn.aclose()
    await retrying.aclose()


async def test_a_slow_reply_times_out_and_the_connection_starts_over(redis_url: str) -> None:
    conn = RespConnection(redis_url, timeout=0.2)
    waiting = conn.execute_command("PING")  # not yet sent: it waits behind nothing
    blocked = asyncio.ensure_future(conn.execute_command("BLPOP", "empty-list", 5))
    await asyncio.sleep(0)
    with pytest.raises(RedisTimeoutError):
        await blocked
    assert await waiting == b"PONG"  # a fresh connection: no stale BLPOP reply in its way
    assert await conn.execute_command("ECHO", "after") == b"after"
    await conn.aclose()


async def test_an_unreachable_server_is_a_connection_error() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = RespConnection(f"redis://127.0.0.1:{port}/0", timeout=1.0)
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await conn.execute_command("PING")
