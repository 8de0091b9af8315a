"""Redis state: decision records as keys with a TTL, feedback as a Redis Stream.

Keys (prefix configurable, default `nb:`):
- `nb:decision:{id}`  JSON decision record, expires after decision_ttl_seconds;
- `nb:decisions`      stream of every decision record (capped), for training exports;
- `nb:feedback`       stream of accepted feedback, each entry field `e` = JSON event;
- `nb:seen:{nb:feedback}:{key}`  a feedback event's key, set when the event is appended,
  expiring with the decision TTL: the same key is not appended again (`_APPEND_ONCE`).
A batch of decision records is written by one Lua script call (`_LOG_DECISIONS`): the
client packs one command instead of a SET and an XADD per record, each of which would
cost its own client CPU (`load_tests/resp_bench.py` measures a command's). In cluster
mode the keys of a batch live in different slots (spread over the masters on purpose:
they are many, and held for the decision TTL), so there (`scripted=False`) the batch is
two pipelines of single-key commands: SET NX, then XADD for the records that were new.
A record set but not yet confirmed in the stream is remembered, so a retry of its batch
adds it to the stream even though its key exists; a retry after an XADD whose answer
was lost may add it twice (the dataset keeps one entry per decision id).

Blocking stream reads (`read_feedback`) can go through their own client (`reader`): the
service writes through one pipelined connection (`service/state/resp.py` on a single
node), on which a read blocking for half a second would hold up every write behind it.
On a single node the reader is a lean connection of its own too: at a low rate of
feedback the learner sends one read per event, and redis-py spent on each several times
the client CPU of the lean connection. The stream commands are sent as plain commands
and their raw replies read here, so either kind of client serves as the reader.

The writer is anything with redis-py's `execute_command`: a redis-py client or, on a
single node, the service's `RespConnection`. Single-node batches are one command each
(the script, MGET); only cluster mode (`scripted=False`) needs redis-py's pipelines.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from service.state import UNAVAILABLE, Record, closed_transport_unavailable

#: KEYS = [decision log stream, decision key 1..n]; ARGV = [ttl, stream maxlen, record 1..n].
#: A decision id is written once (SET NX): a retry of a batch that had in fact been
#: written (its answer lost to a timeout) adds nothing to the stream again.
_LOG_DECISIONS = """
local written = 0
for i = 2, #KEYS do
    if redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1], 'NX') then
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i + 1])
        written = written + 1
    end
end
return written
"""
_LOG_DECISIONS_SHA = hashlib.sha1(_LOG_DECISIONS.encode(), usedforsecurity=False).hexdigest()

#: KEYS = [feedback stream, seen key 1..n]; ARGV = [seen ttl, stream maxlen, event 1..n].
#: Appends each event whose key is not set yet and sets it; returns 1/0 per event. The
#: seen keys carry the stream's name as their hash tag, so all keys share its slot and
#: the script runs on a Redis Cluster too.
_APPEND_ONCE = """
local out = {}
for i = 2, #KEYS do
    if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[i + 1])
        out[i - 1] = 1
    else
        out[i - 1] = 0
    end
end
return out
"""
_APPEND_ONCE_SHA = hashlib.sha1(_APPEND_ONCE.encode(), usedforsecurity=False).hexdigest()


class RedisState:
    backend = "redis"

    def __init__(self, client: Any, decision_ttl_seconds: int, feedback_maxlen: int,
                 decision_log_maxlen: int = 1_000_000, prefix: str = "nb:",
                 scripted: bool = True, reader: Any | None = None) -> None:
        self._r = client
        self._reader = reader if reader is not None else client
        self._single_node = scripted
        self._ttl = decision_ttl_seconds
        self._feedback_maxlen = feedback_maxlen
        self._decision_log_maxlen = decision_log_maxlen
        self._prefix = prefix
        self.feedback_key = f"{prefix}feedback"
        self.decision_log_key = f"{prefix}decisions"
        #: cluster mode: decision ids whose key was set, their stream entry not confirmed
        self._unstreamed: set[str] = set()

    def _decision_key(self, decision_id: str) -> str:
        return f"{self._prefix}decision:{decision_id}"

    @closed_transport_unavailable
    async def log_decisions(self, records: Sequence[Record],
                            blobs: Sequence[bytes] | None = None) -> None:
        if not records:
            return
        if blobs is None:
            blobs = [orjson.dumps(r) for r in records]
        if self._single_node:
            keys = [self.decision_log_key, *(self._decision_key(r["decision_id"]) for r in records)]
            await self._script(_LOG_DECISIONS, _LOG_DECISIONS_SHA, len(keys), *keys, self._ttl,
                               self._decision_log_maxlen, *blobs)
            return
        # cluster mode: the keys of a batch live in different slots, so no script; a
        # record whose key exists was written before (a retry), and is not added to the
        # stream again unless its earlier XADD is not known to have gone through
        ids = [r["decision_id"] for r in records]
        pipe = self._r.pipeline(transaction=False)
        for decision_id, blob in zip(ids, blobs, strict=True):
            pipe.set(self._decision_key(decision_id), blob, ex=self._ttl, nx=True)
        fresh = await pipe.execute()
        due = [i for i, new in enumerate(fresh) if new or ids[i] in self._unstreamed]
        self._unstreamed.update(ids[i] for i in due)
        pipe = self._r.pipeline(transaction=False)
        for i in due:
            pipe.xadd(self.decision_log_key, {"d": blobs[i]},
                      maxlen=self._decision_log_maxlen, approximate=True)
        if due:
            await pipe.execute()
        self._unstreamed.difference_update(ids[i] for i in due)

    async def _script(self, source: str, sha: str, n_keys: int, *keys_and_args: Any) -> Any:
        """A script by its SHA, loaded by EVAL the first time Redis lacks it."""
        try:
            return await self._r.execute_command("EVALSHA", sha, n_keys, *keys_and_args)
        except ResponseError as exc:  # redis-py raises NoScriptError, hiredis' reader the raw text
            if not (isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")):
                raise
        return await self._r.execute_command("EVAL", source, n_keys, *keys_and_args)

    @closed_transport_unavailable
    async def get_decisions(self, decision_ids: Sequence[str]) -> list[Record | None]:
        if not decision_ids:
            return []
        keys = [self._decision_key(d) for d in decision_ids]
        if self._single_node:
            blobs = await self._r.execute_command("MGET", *keys)
        else:  # the keys live in different slots
            pipe = self._r.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            blobs = await pipe.execute()
        return [orjson.loads(b) if b is not None else None for b in blobs]

    def seen_key(self, key: str) -> str:
        """Where an appended feedback key is remembered: the stream's slot (hash tag)."""
        return f"{self._prefix}seen:{{{self.feedback_key}}}:{key}"

    @closed_transport_unavailable
    async def append_feedback(self, events: Sequence[Record],
                              keys: Sequence[str] | None = None) -> list[bool]:
        if not events:
            return []
        if keys is not None:
            redis_keys = [self.feedback_key, *(self.seen_key(k) for k in keys)]
            added = await self._script(_APPEND_ONCE, _APPEND_ONCE_SHA, len(redis_keys),
                                       *redis_keys, self._ttl, self._feedback_maxlen,
                                       *(orjson.dumps(e) for e in events))
            return [bool(int(a)) for a in added]
        if not self._single_node:  # a pipeline keeps the events' order across connections
            pipe = self._r.pipeline(transaction=False)
            for e in events:
                pipe.xadd(self.feedback_key, {"e": orjson.dumps(e)},
                          maxlen=self._feedback_maxlen, approximate=True)
            await pipe.execute()
            return [True] * len(events)
        adds = [self._r.execute_command("XADD", self.feedback_key, "MAXLEN", "~",
                                        self._feedback_maxlen, "*", "e", orjson.dumps(e))
                for e in events]
        # one connection: commands go out in the order their tasks start, and share round trips
        await (adds[0] if len(adds) == 1 else asyncio.gather(*adds))
        return [True] * len(events)

    @closed_transport_unavailable
    async def read_feedback(self, after: str, count: int, block_ms: int) -> list[tuple[str, Record]]:
        reply = await self._reader.execute_command(
            "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", self.feedback_key, after)
        if not reply:
            return []
        # [[stream, entries]]: redis-py parses each entry into (id, {field: value}), the
        # lean connection hands over Redis' [id, [field, value ...]] as it is
        entries = reply[0][1]
        return [(_str(i), orjson.loads(_field(fields, b"e"))) for i, fields in entries]

    @closed_transport_unavailable
    async def feedback_length(self) -> int:
        return int(await self._r.execute_command("XLEN", self.feedback_key))

    @closed_transport_unavailable
    async def feedback_bounds(self) -> tuple[str, str] | None:
        oldest = await self._reader.execute_command("XRANGE", self.feedback_key, "-", "+",
                                                    "COUNT", 1)
        newest = await self._reader.execute_command("XREVRANGE", self.feedback_key, "+", "-",
                                                    "COUNT", 1)
        if not oldest or not newest:
            return None
        return _str(oldest[0][0]), _str(newest[0][0])

    async def ping(self) -> None:
        """On a Redis Cluster, any master answering will do: while one fails over, the
        service serves (degraded where it must), and a readiness probe failing on every
        replica at once would take them all out of the load balancer."""
        try:
            await self._ping()  # a cluster client: its default node
            return
        except UNAVAILABLE:
            primaries = getattr(self._r, "get_primaries", None)
            if primaries is None:
                raise
            others = list(primaries())
        for i, node in enumerate(others):
            try:
                await self._ping(node)
                return
            except UNAVAILABLE:
                if i == len(others) - 1:
                    raise
        raise RedisConnectionError("no Redis Cluster master answers")

    @closed_transport_unavailable
    async def _ping(self, node: Any = None) -> None:
        if node is None:
            await self._r.execute_command("PING")
        else:
            await self._r.execute_command("PING", target_nodes=node)

    async def close(self) -> None:
        await self._r.aclose()
        if self._reader is not self._r:
            await self._reader.aclose()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: Any, name: bytes) -> Any:
    """A stream entry's field: from redis-py's dict, or from Redis' flat [field, value ...]."""
    if isinstance(fields, dict):
        return fields[name]
    return fields[fields.index(name) + 1]
