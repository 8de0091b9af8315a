"""Counters that hold across replicas: sliding-window caps and budgets, checked and taken at once.

A decision asks to *take* a few slots, grouped by action: a `window` slot (at most
`limit` members within `seconds`, a Redis sorted set scored by time, the decision id as
member), a `reserve` slot (a counter below `limit`, incremented) or a `check` slot (a
counter below `limit`, untouched: budgets spent by accepts). A group is granted only if
every one of its slots has room, and then all of them are recorded; the check and the
record are one Lua script, so concurrent decisions on any number of replicas can never
take more than `limit` (`tests/service/test_limits.py` races two service processes).
`give_back` undoes what a decision took and did not show; `add` spends a counter (an
accept against a budget).

Cluster mode (`scripted=False`): one script may only touch keys of one hash slot. The
keys are tagged (`nb:{c:<customer>}:...` for a customer's caps, `nb:{budget}:...` for
every budget), so the slots of one tag go in one call, tag after tag; a group refused by
a later tag gives back what an earlier tag took for it. On a single node all slots go in
one call. `MemoryCounters` keeps the same semantics in-process (embedded mode, one
process; nothing survives a restart).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from redis.exceptions import NoScriptError, ResponseError

Kind = Literal["window", "reserve", "check"]
_CODE = {"window": "w", "reserve": "r", "check": "c"}


@dataclass(frozen=True)
class Slot:
    key: str
    kind: Kind
    limit: int
    seconds: float  # window: its length; counters: time to live (0: none)
    group: int  # slots of one group are granted together


class CounterStore(Protocol):
    async def take(self, slots: Sequence[Slot], member: str, now: float) -> list[bool]:
        """Grant or refuse each slot's group at once; one answer per slot."""

    async def give_back(self, slots: Sequence[Slot], member: str) -> None:
        """Undo what `take` recorded for these (granted) slots."""

    async def add(self, slots: Sequence[Slot]) -> None:
        """Increment these counters by one (their `seconds` is the time to live)."""

    async def read(self, keys: Sequence[str]) -> list[int]:
        """Counters' values (0: absent)."""


#: KEYS: the slots' keys; ARGV: now, member, then per key: group, kind (w/r/c), limit, seconds
_TAKE = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local granted = {}
for i = 1, #KEYS do
    local a = 3 + (i - 1) * 4
    local g, kind, limit, seconds = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local used
    if kind == 'w' then
        if seconds > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - seconds) end
        used = redis.call('ZCARD', KEYS[i])
    else
        used = tonumber(redis.call('GET', KEYS[i]) or '0')
    end
    if granted[g] == nil then granted[g] = true end
    if used >= limit then granted[g] = false end
end
local out = {}
for i = 1, #KEYS do
    local a = 3 + (i - 1) * 4
    local g, kind, seconds = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 3])
    if granted[g] then
        out[i] = 1
        if kind == 'w' then
            redis.call('ZADD', KEYS[i], now, member)
            if seconds > 0 then redis.call('EXPIRE', KEYS[i], math.ceil(seconds)) end
        elseif kind == 'r' then
            redis.call('INCR', KEYS[i])
            if seconds > 0 then redis.call('EXPIRE', KEYS[i], math.ceil(seconds)) end
        end
    else
        out[i] = 0
    end
end
return out
"""

#: KEYS: the slots' keys; ARGV: member, then per key: kind (w/r/c)
_GIVE_BACK = """
for i = 1, #KEYS do
    local kind = ARGV[i + 1]
    if kind == 'w' then
        redis.call('ZREM', KEYS[i], ARGV[1])
    elseif kind == 'r' then
        if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
    end
end
return #KEYS
"""

#: KEYS: counters; ARGV: per key its time to live (0: none)
_ADD = """
for i = 1, #KEYS do
    redis.call('INCR', KEYS[i])
    local ttl = tonumber(ARGV[i])
    if ttl > 0 then redis.call('EXPIRE', KEYS[i], math.ceil(ttl)) end
end
return #KEYS
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def _tag(key: str) -> str:
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1:end] if start >= 0 and end > start + 1 else key


class RedisCounters:
    """The counters in Redis, one script call per decision (per hash tag in cluster mode)."""

    def __init__(self, client: Any, scripted: bool = True) -> None:
        self._r = client
        self._single_node = scripted

    async def _script(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._r.execute_command("EVALSHA", _sha(script), len(keys), *keys, *args)
        except ResponseError as exc:  # redis-py raises NoScriptError, hiredis' reader the raw text
            if not (isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")):
                raise
        return await self._r.execute_command("EVAL", script, len(keys), *keys, *args)

    async def _take(self, slots: Sequence[Slot], member: str, now: float) -> list[bool]:
        args: list[Any] = [repr(now), member]
        for s in slots:
            args += [s.group, _CODE[s.kind], s.limit, repr(float(s.seconds))]
        reply = await self._script(_TAKE, [s.key for s in slots], args)
        return [bool(int(x)) for x in reply]

    async def take(self, slots: Sequence[Slot], member: str, now: float) -> list[bool]:
        if not slots:
            return []
        if self._single_node:
            return await self._take(slots, member, now)
        by_tag: dict[str, list[int]] = {}
        for i, s in enumerate(slots):
            by_tag.setdefault(_tag(s.key), []).append(i)
        recorded: list[int] = []  # slots a tag granted (and so recorded)
        refused: set[int] = set()
        for positions in by_tag.values():
            alive = [i for i in positions if slots[i].group not in refused]
            answers = await self._take([slots[i] for i in alive], member, now) if alive else []
            for i, ok in zip(alive, answers, strict=True):
                if ok:
                    recorded.append(i)
                else:
                    refused.add(slots[i].group)
        # an earlier tag granted what a later one refused: undo exactly what it recorded
        undo = [slots[i] for i in recorded if slots[i].group in refused]
        if undo:
            await self.give_back(undo, member)
        return [s.group not in refused for s in slots]

    async def give_back(self, slots: Sequence[Slot], member: str) -> None:
        if not slots:
            return
        if self._single_node:
            await self._script(_GIVE_BACK, [s.key for s in slots], [member, *(_CODE[s.kind] for s in slots)])
            return
        by_tag: dict[str, list[Slot]] = {}
        for s in slots:
            by_tag.setdefault(_tag(s.key), []).append(s)
        for group in by_tag.values():
            await self._script(_GIVE_BACK, [s.key for s in group], [member, *(_CODE[s.kind] for s in group)])

    async def add(self, slots: Sequence[Slot]) -> None:
        if not slots:
            return
        by_tag: dict[str, list[Slot]] = {"": list(slots)} if self._single_node else {}
        if not self._single_node:
            for s in slots:
                by_tag.setdefault(_tag(s.key), []).append(s)
        for group in by_tag.values():
            await self._script(_ADD, [s.key for s in group], [repr(float(s.seconds)) for s in group])

    async def read(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        if self._single_node:
            values = await self._r.execute_command("MGET", *keys)
        else:
            values = [await self._r.execute_command("GET", k) for k in keys]
        return [int(v) if v is not None else 0 for v in values]


class MemoryCounters:
    """The same counters in-process: each call runs without an await, hence atomically."""

    def __init__(self, max_keys: int = 1_000_000, clock: Any = time.time) -> None:
        self._windows: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._counters: OrderedDict[str, tuple[int, float]] = OrderedDict()  # value, expires
        self._max_keys = max_keys
        self._clock = clock

    def _members(self, s: Slot, now: float) -> dict[str, float]:
        members = self._windows.get(s.key, {})
        if s.seconds > 0:
            members = {m: t for m, t in members.items() if t > now - s.seconds}
        return members

    def _counter(self, key: str) -> int:
        hit = self._counters.get(key)
        if hit is None or hit[1] <= self._clock():
            return 0
        return hit[0]

    async def take(self, slots: Sequence[Slot], member: str, now: float) -> list[bool]:
        granted: dict[int, bool] = {}
        for s in slots:
            used = len(self._members(s, now)) if s.kind == "window" else self._counter(s.key)
            granted[s.group] = granted.get(s.group, True) and used < s.limit
        for s in slots:
            if not granted[s.group]:
                continue
            if s.kind == "window":
                members = self._members(s, now)
                members[member] = now
                self._windows[s.key] = members
                self._windows.move_to_end(s.key)
            elif s.kind == "reserve":
                self._set(s.key, self._counter(s.key) + 1, s.seconds)
        while len(self._windows) > self._max_keys:
            self._windows.popitem(last=False)
        return [granted[s.group] for s in slots]

    def _set(self, key: str, value: int, seconds: float) -> None:
        self._counters[key] = (value, self._clock() + seconds if seconds > 0 else math.inf)
        self._counters.move_to_end(key)
        while len(self._counters) > self._max_keys:
            self._counters.popitem(last=False)

    async def give_back(self, slots: Sequence[Slot], member: str) -> None:
        for s in slots:
            if s.kind == "window":
                self._windows.get(s.key, {}).pop(member, None)
            elif s.kind == "reserve" and (value := self._counter(s.key)) > 0:
                self._counters[s.key] = (value - 1, self._counters[s.key][1])

    async def add(self, slots: Sequence[Slot]) -> None:
        for s in slots:
            self._set(s.key, self._counter(s.key) + 1, s.seconds)

    async def read(self, keys: Sequence[str]) -> list[int]:
        return [self._counter(k) for k in keys]
