"""A lean Redis connection for the commands the service sends on most requests.

redis-py's asyncio client spends most of a command's client CPU in its own layers
(retry wrapper, connection bookkeeping, a StreamReader, per-reply parsing steps); the
same command written on a bare asyncio Protocol and parsed by hiredis (redis-py's own C
parser) costs markedly less (`python -m load_tests.resp_bench` compares the two on the
service's most frequent commands, on the same machine in the same run). The service
sends a Redis command for a good share of its requests: a customer read on a cache
miss, a feedback append, a batch of decision records. On a single Redis node those go
through this connection; on a Redis Cluster the decision path's reads and scripts go
through one per master (`service/state/cluster_resp.py`); redis-py stays for everything
else (blocking stream reads, the action refresh, the cluster's writes).

What it does and does not do:
- one TCP connection; commands are written at once and replies matched in order, so
  concurrent callers share it without waiting for each other's round trips;
- `redis://[user:password@]host[:port][/db]` URLs only (AUTH and SELECT on connect);
  `rediss://`, `unix://` and cluster URLs are refused: use redis-py for those;
- a command without a reply within `timeout` fails with `redis.exceptions.TimeoutError`,
  and a broken connection with `redis.exceptions.ConnectionError`; both drop the
  connection (replies still on the way would be out of step), and the next command
  reconnects. `retry_on_disconnect` resends a command once when the connection turns
  out to be gone, as redis-py does (a command that reached Redis before the connection
  broke may then run twice; no retry for timeouts);
- error replies raise `redis.exceptions.ResponseError`, as in redis-py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast
from urllib.parse import unquote, urlparse

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int | float


def encode(arg: Arg) -> bytes:
    """One command argument as Redis reads it (as redis-py encodes it)."""
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):
        raise TypeError("a bool is not a Redis argument: pass an int or a string")
    if isinstance(arg, int):
        return b"%d" % arg
    if isinstance(arg, float):
        return repr(arg).encode()
    raise TypeError(f"{type(arg).__name__} is not a Redis argument")


def pack(args: tuple[Arg, ...]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = encode(arg)
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    """Replies in the order the commands were written; all pending fail together."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports are not asyncio.Transport subclasses, but write the same
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # a reply nobody waits for: the stream is out of step
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            future = waiting.popleft()
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def send(self, command: bytes) -> asyncio.Future[Any]:
        assert self._transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._transport.write(command)
        return future

    def fail(self, exc: Exception) -> None:
        """Close the connection and fail every command still waiting for its reply."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(exc)


class RespConnection:
    """One pipelined connection to one Redis node; reconnects on the next command."""

    def __init__(self, url: str, timeout: float = 5.0, retry_on_disconnect: bool = False) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "redis":
            raise ValueError(f"RespConnection speaks plain redis:// only, not {parsed.scheme}://")
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        path = parsed.path.strip("/")
        self.db = int(path) if path else 0
        self._username = unquote(parsed.username) if parsed.username else None
        self._password = unquote(parsed.password) if parsed.password else None
        self.timeout = timeout
        self._retry = retry_on_disconnect
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    async def execute_command(self, *args: Arg) -> Any:
        """Send one command and return its reply (bytes, int, list, None ...)."""
        command = pack(args)
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        try:
            return await self._call(protocol, command)
        except RedisConnectionError:
            if not self._retry:
                raise
        return await self._call(await self._connect(), command)

    async def _call(self, protocol: _Protocol, command: bytes) -> Any:
        future = protocol.send(command)
        timer = asyncio.get_running_loop().call_later(self.timeout, self._expire, protocol, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, protocol: _Protocol, future: asyncio.Future[Any]) -> None:
        if not future.done():
            protocol.fail(RedisTimeoutError(f"no reply from Redis within {self.timeout} s"))

    async def _connect(self) -> _Protocol:
        async with self._connecting:  # one connect for every command that found none
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(_Protocol, self.host, self.port), self.timeout
                )
            except (TimeoutError, OSError) as exc:
                raise RedisConnectionError(
                    f"cannot connect to Redis at {self.host}:{self.port}: {exc!r}"
                ) from exc
            try:
                if self._password is not None:
                    auth = (self._username, self._password) if self._username else (self._password,)
                    await self._call(protocol, pack(("AUTH", *auth)))
                if self.db:
                    await self._call(protocol, pack(("SELECT", self.db)))
            except BaseException:  # refused credentials or database: do not leak the socket
                protocol.fail(RedisConnectionError("connection set-up failed"))
                raise
            self._protocol = protocol
            return protocol

    async def aclose(self) -> None:
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("connection closed by the client"))
            self._protocol = None
