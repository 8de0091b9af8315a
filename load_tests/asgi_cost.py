"""CPU per decision through the service's ASGI app in-process, with and without access checks.

No server, no sockets, no load generator: the app's lifespan runs once, then decision
requests go straight into the ASGI callable in a loop, in alternating rounds per
configuration, and the median (and least) CPU time per request of each is reported.
What differs between the configurations is what the access layer does (no keys; a key
checked; a key with a rate limit in-process; the same in Redis), so their differences
are the access layer's cost on the decision path. `--layers` measures the service's
outer ASGI layers alone (`HTTPMetrics`, `AccessCheck`) in front of a fixed answer: the
whole decision varies more between rounds on a busy machine than the layers cost.

    python -m load_tests.asgi_cost --data-dir DIR --models-dir DIR [--redis-url URL]
    python -m load_tests.asgi_cost --layers [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from load_tests.processes import start_redis
from service.access import AccessPolicy, KeySource
from service.app import AccessCheck, HTTPMetrics, create_app
from service.metrics import Metrics
from service.rate_limit import RedisRateLimiter
from service.settings import Settings
from service.state.resp import RespConnection

KEY = "bench-key-0123456789abcdef"
BODY = orjson.dumps({"customer_id": "c00001", "channel": "web", "placement": "home", "limit": 3})

#: configuration name -> (settings overrides, needs Redis)
CONFIGS: dict[str, tuple[dict[str, Any], bool]] = {
    "open": ({}, False),
    "key": ({"api_keys": f"{KEY},other-key"}, False),
    "key+limit": ({"api_keys": f"bench:{KEY}:decide+feedback:1000000/1000000"}, False),
    "key-redis": ({"api_keys": f"{KEY},other-key"}, True),
    "key+limit-redis": ({"api_keys": f"bench:{KEY}:decide+feedback:1000000/1000000",
                         "rate_limit_backend": "redis"}, True),
}


async def _requests(app: Any, state: Mapping[str, Any], n: int, headers: list[tuple[bytes, bytes]]) -> float:
    """CPU seconds per request over `n` decision requests."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    start = time.process_time()
    for _ in range(n):
        scope = {"type": "http", "method": "POST", "path": "/v1/decisions", "headers": headers,
                 "query_string": b"", "state": dict(state), "http_version": "1.1",
                 "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
        await app(scope, receive, send)
    seconds = time.process_time() - start
    bad = [s for s in statuses if s != 200]
    if bad:
        raise SystemExit(f"{len(bad)} requests answered {sorted(set(bad))}")
    return seconds / n


async def measure(apps: Mapping[str, Any], states: Mapping[str, Mapping[str, Any]],
                  rounds: int, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in apps}
    headers = [(b"content-type", b"application/json"), (b"x-api-key", KEY.encode())]
    for name, app in apps.items():
        await _requests(app, states[name], n // 4, headers)  # warm up
    for _ in range(rounds):
        for name, app in apps.items():
            out[name].append(await _requests(app, states[name], n, headers))
    return out


async def measure_apps(settings: Mapping[str, Settings], rounds: int, n: int) -> dict[str, list[float]]:
    apps = {name: create_app(s) for name, s in settings.items()}
    contexts = {name: app.router.lifespan_context(app) for name, app in apps.items()}
    states = {name: (await ctx.__aenter__()) or {} for name, ctx in contexts.items()}
    try:
        return await measure(apps, states, rounds, n)
    finally:
        for ctx in contexts.values():
            await ctx.__aexit__(None, None, None)


async def _fixed_answer(scope: Any, receive: Any, send: Any) -> None:
    body = b'{"decision_id": "0"}'
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class _Limiter:
    """What `AccessCheck` reads from the runtime in the request state."""

    rate_limiter: Any


async def measure_layers(redis_url: str | None, rounds: int, n: int) -> dict[str, list[float]]:
    limited = f"bench:{KEY}:decide:1000000000/1000000000"

    def layers(keys: str | None) -> Any:
        inner: Any = _fixed_answer
        if keys is not None:
            inner = AccessCheck(inner, KeySource(keys, None), AccessPolicy(), Metrics())
        return HTTPMetrics(inner, Metrics())

    apps = {"layers: metrics only": layers(None), "layers: + key": layers(f"{KEY},other-key"),
            "layers: + key with a limit (memory)": layers(limited)}
    states: dict[str, dict[str, Any]] = {name: {} for name in apps}
    connection = None
    if redis_url:
        connection = RespConnection(redis_url, timeout=1.0)
        name = "layers: + key with a limit (redis)"
        apps[name] = layers(limited)
        states[name] = {"runtime": _Limiter(RedisRateLimiter(connection))}
    try:
        return await measure(apps, states, rounds, n)
    finally:
        if connection is not None:
            await connection.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", action="store_true",
                        help="the outer ASGI layers alone, in front of a fixed answer")
    parser.add_argument("--data-dir", type=Path, help="demo data (the whole app only)")
    parser.add_argument("--models-dir", type=Path, help="a model registry (the whole app only)")
    parser.add_argument("--redis-url", help="Redis for the `-redis` configurations (default: "
                        "a redis-server of its own, on a free port)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000, help="requests per round")
    args = parser.parse_args(argv)
    names = args.configs.split(",")
    if not args.layers and (args.data_dir is None or args.models_dir is None):
        parser.error("--data-dir and --models-dir are needed, unless --layers")
    server = None
    if args.redis_url is None and (args.layers or any(CONFIGS[n][1] for n in names)):
        work = Path(tempfile.mkdtemp(prefix="asgi-cost-"))
        server = start_redis(work)
        args.redis_url = server.url
    settings: dict[str, Settings] = {}
    for name in names if not args.layers else ():
        overrides, needs_redis = CONFIGS[name]
        settings[name] = Settings(data_dir=args.data_dir, models_dir=args.models_dir,  # type: ignore[arg-type]
                                  epsilon=0.0, seed=1, loop_lag_interval_seconds=0,
                                  redis_url=args.redis_url if needs_redis else None, **overrides)
    try:
        if args.layers:
            results = asyncio.run(measure_layers(args.redis_url, args.rounds, args.requests * 5))
        else:
            results = asyncio.run(measure_apps(settings, args.rounds, args.requests))
    finally:
        if server is not None:
            server.stop()
    base = statistics.median(results[next(iter(results))])
    report = {name: {"cpu_us_per_request": round(statistics.median(v) * 1e6, 2),
                     "least_us": round(min(v) * 1e6, 2),
                     "vs_first": round(statistics.median(v) / base, 3),
                     "rounds_us": [round(x * 1e6, 1) for x in v]} for name, v in results.items()}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
