"""CPU per decision through the service's ASGI app in-process, with and without access checks.

No server, no sockets, no load generator: the app's lifespan runs once, then decision
requests go straight into the ASGI callable in a loop, in alternating rounds per
configuration, and the median CPU time per request of each is reported. What differs
between the configurations is what the access layer does (no keys; a key checked; a
key with a rate limit in-process; the same in Redis), so their differences are the
access layer's cost on the decision path.

    python -m load_tests.asgi_cost --data-dir DIR --models-dir DIR [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from service.app import create_app
from service.settings import Settings

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


async def measure(settings: Mapping[str, Settings], rounds: int, n: int) -> dict[str, list[float]]:
    apps = {name: create_app(s) for name, s in settings.items()}
    out: dict[str, list[float]] = {name: [] for name in apps}
    headers = [(b"content-type", b"application/json"), (b"x-api-key", KEY.encode())]
    contexts = {name: app.router.lifespan_context(app) for name, app in apps.items()}
    states = {name: await ctx.__aenter__() for name, ctx in contexts.items()}
    try:
        for name, app in apps.items():
            await _requests(app, states[name] or {}, n // 4, headers)  # warm up
        for _ in range(rounds):
            for name, app in apps.items():
                out[name].append(await _requests(app, states[name] or {}, n, headers))
    finally:
        for ctx in contexts.values():
            await ctx.__aexit__(None, None, None)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--redis-url", help="Redis for the `-redis` configurations (skipped without)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000, help="requests per round")
    args = parser.parse_args(argv)
    settings: dict[str, Settings] = {}
    for name in args.configs.split(","):
        overrides, needs_redis = CONFIGS[name]
        if needs_redis and not args.redis_url:
            continue
        settings[name] = Settings(data_dir=args.data_dir, models_dir=args.models_dir,  # type: ignore[arg-type]
                                  epsilon=0.0, seed=1, loop_lag_interval_seconds=0,
                                  redis_url=args.redis_url if needs_redis else None, **overrides)
    results = asyncio.run(measure(settings, args.rounds, args.requests))
    base = statistics.median(results[next(iter(results))])
    report = {name: {"cpu_us_per_request": round(statistics.median(v) * 1e6, 1),
                     "vs_first": round(statistics.median(v) / base, 3),
                     "rounds_us": [round(x * 1e6, 1) for x in v]} for name, v in results.items()}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
