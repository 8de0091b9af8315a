"""The lean pipelined connection (`service/state/resp.py`), one per Redis Cluster master.

Why not redis-py's cluster client on the decision path: it takes a connection per
command in flight, so a burst of concurrent decisions (a `POST /v1/decisions/batch`)
opens many connections per master at once, under the decision path's tight timeout; a
timeout there, or a few MOVED replies, make it rebuild its view of the cluster and
close every connection, the ones other commands are waiting on included. The commands
lost that way failed closed: a batch was granted far fewer budgeted offers than its
budget, and budget scripts whose reply was lost after they ran spent budget nobody was
shown (docs/operations.md, "Connections on the decision path"). Here every master gets one connection that concurrent
commands share (replies matched in order, as on a single node); a command goes to the
master of its key's slot, a MOVED reply refreshes the slot map and resends the command
to the node named (it did not run where it was sent), a broken connection or a timeout
refreshes the map before the next command, at most every `REFRESH_SECONDS`.

Commands with keys must keep them in one slot (the service tags its keys for that); the
key is the first argument, or for EVAL / EVALSHA the first of the script's keys. An ASK
reply (a slot being migrated by resharding) is raised as the error it is.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote, urlparse

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.state.resp import Arg, RespConnection, encode

#: seconds at least between two refreshes of the slot map after failures
REFRESH_SECONDS = 0.1

Node = tuple[str, int]


def command_key(args: tuple[Arg, ...]) -> bytes | None:
    """The key that decides where a command goes (None: any node will do)."""
    name = encode(args[0]).upper()
    if name in (b"EVAL", b"EVALSHA"):
        return encode(args[3]) if len(args) > 3 and int(args[2]) > 0 else None
    if name in (b"PING", b"CLUSTER", b"INFO", b"SCRIPT") or len(args) < 2:
        return None
    return encode(args[1])


def redirect(exc: ResponseError) -> Node | None:
    """The node a MOVED reply names, else None."""
    words = str(exc).split()
    if len(words) != 3 or words[0] != "MOVED":
        return None
    host, _, port = words[2].rpartition(":")
    return host, int(port)


class ClusterRespConnections:
    """`execute_command` on a Redis Cluster, over one pipelined connection per master."""

    def __init__(self, url: str, timeout: float = 5.0, retry_on_disconnect: bool = False) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "redis":
            raise ValueError(f"cluster connections speak plain redis:// only, not {parsed.scheme}://")
        path = parsed.path.strip("/")
        if path not in ("", "0"):
            raise ValueError("a Redis Cluster has database 0 only")
        self._userinfo = ""
        if parsed.password is not None:
            user = quote(parsed.username or "", safe="")
            self._userinfo = f"{user}:{quote(parsed.password, safe='')}@"
        self._seeds: list[Node] = [(parsed.hostname or "127.0.0.1", parsed.port or 6379)]
        self.timeout = timeout
        self._retry = retry_on_disconnect
        self._connections: dict[Node, RespConnection] = {}
        self._slots: list[Node] = []
        self._stale = True
        self._refreshed_at = float("-inf")
        self._refreshing = asyncio.Lock()

    @property
    def masters(self) -> list[Node]:
        """The masters the slot map names, in slot order."""
        return list(dict.fromkeys(self._slots))

    def _connection(self, node: Node) -> RespConnection:
        conn = self._connections.get(node)
        if conn is None:
            host, port = node
            conn = self._connections[node] = RespConnection(
                f"redis://{self._userinfo}{host}:{port}", self.timeout, self._retry)
        return conn

    async def _refresh(self) -> None:
        async with self._refreshing:
            if not self._stale or (self._slots and
                                   time.monotonic() - self._refreshed_at < REFRESH_SECONDS):
                return
            self._refreshed_at = time.monotonic()
            failure: Exception | None = None
            for node in dict.fromkeys([*self.masters, *self._seeds]):
                try:
                    reply = await self._connection(node).execute_command("CLUSTER", "SLOTS")
                except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                    failure = exc
                    continue
                slots: list[Node] = [self._seeds[0]] * REDIS_CLUSTER_HASH_SLOTS
                for start, end, master, *_ in reply:
                    owner = (master[0].decode() or node[0], int(master[1]))
                    slots[int(start):int(end) + 1] = [owner] * (int(end) - int(start) + 1)
                self._slots, self._stale = slots, False
                for gone in set(self._connections) - {*slots, *self._seeds}:
                    await self._connections.pop(gone).aclose()
                return
            raise RedisConnectionError(f"no Redis Cluster node answers CLUSTER SLOTS: {failure!r}")

    def _node(self, args: tuple[Arg, ...]) -> Node:
        key = command_key(args)
        return self._slots[key_slot(key)] if key is not None else self._slots[0]

    async def execute_command(self, *args: Arg) -> Any:
        if self._stale:
            await self._refresh()
        try:
            return await self._connection(self._node(args)).execute_command(*args)
        except ResponseError as exc:
            target = redirect(exc)
            if target is None:
                raise
            self._stale = True  # a slot moved: the next command reads the map again
            return await self._connection(target).execute_command(*args)
        except (RedisConnectionError, RedisTimeoutError):
            self._stale = True  # a master may have failed over
            raise

    async def aclose(self) -> None:
        for conn in self._connections.values():
            await conn.aclose()
        self._connections.clear()
