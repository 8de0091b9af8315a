"""Per-key rate limits: how long a request must wait before its key may send it.

The limit is GCRA (the generic cell rate algorithm, a token bucket kept as one number):
each key has a "theoretical arrival time" `tat`; a request is allowed when
`tat + 1/rate - burst/rate <= now`, and then moves `tat` on by `1/rate`. A refused
request moves nothing, and is told how long until one would pass (`Retry-After`).

- `MemoryRateLimiter`: in the process, per replica (the embedded default; `N` replicas
  allow `N` times the rate between them).
- `RedisRateLimiter`: one Lua call per request of a limited key (`_GCRA`, on Redis' own
  clock), so the limit holds across replicas. When Redis does not answer within the
  decision path's timeout, the request is limited in-process instead (counted): a rate
  limit never turns a Redis outage into refused requests.

Keys without a limit never reach a limiter (`service/app.py`): their requests cost
nothing here.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Protocol

from redis.exceptions import NoScriptError, ResponseError

from service.access import ApiKey, RateLimit
from service.state import UNAVAILABLE

log = logging.getLogger(__name__)


class RateLimiter(Protocol):
    async def acquire(self, key: ApiKey, limit: RateLimit) -> float:
        """0 when the request may pass, else the seconds until one of this key would."""


class MemoryRateLimiter:
    """GCRA per key name, in the process (monotonic clock)."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    def take(self, name: str, limit: RateLimit, now: float) -> float:
        interval = 1.0 / limit.per_second
        tat = max(self._tat.get(name, now), now) + interval
        wait = tat - limit.burst * interval - now
        if wait > 0:
            return wait
        self._tat[name] = tat
        return 0.0

    async def acquire(self, key: ApiKey, limit: RateLimit) -> float:
        return self.take(key.name, limit, time.monotonic())


#: KEYS = [the key's bucket]; ARGV = [1/rate, burst/rate] in microseconds. Returns 0 when
#: allowed, else the microseconds to wait. `tat` is written with %.0f: Lua 5.1's default
#: number format keeps 14 digits, too few for microseconds since the epoch.
_GCRA = """
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
tat = tat + interval
local wait = tat - tonumber(ARGV[2]) - now
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return 0
"""
_GCRA_SHA = hashlib.sha1(_GCRA.encode(), usedforsecurity=False).hexdigest()


class RedisRateLimiter:
    """GCRA in Redis, shared by every replica; in-process while Redis is away.

    `client` is anything with redis-py's `execute_command` (the service passes its lean
    connection for customer reads, whose timeout bounds the call). Buckets are the keys
    `{prefix}rate:{name}`, expiring once idle long enough to be full again.
    """

    def __init__(self, client: Any, prefix: str = "nb:", on_fallback: Any = None) -> None:
        self._r = client
        self._prefix = prefix
        self._fallback = MemoryRateLimiter()
        self._on_fallback = on_fallback
        self._away = False

    async def acquire(self, key: ApiKey, limit: RateLimit) -> float:
        interval = 1e6 / limit.per_second
        args = (f"{self._prefix}rate:{key.name}", round(interval), round(limit.burst * interval))
        try:
            try:
                waited = await self._r.execute_command("EVALSHA", _GCRA_SHA, 1, *args)
            except ResponseError as exc:
                if not (isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")):
                    raise
                waited = await self._r.execute_command("EVAL", _GCRA, 1, *args)
        except UNAVAILABLE as exc:
            if not self._away:
                log.warning("rate limits are kept in-process while Redis does not answer: %r", exc)
                self._away = True
            if self._on_fallback is not None:
                self._on_fallback()
            return await self._fallback.acquire(key, limit)
        self._away = False
        return int(waited) / 1e6
