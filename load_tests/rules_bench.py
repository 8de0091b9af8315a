"""What business rules cost a decision, in process: `python -m load_tests.rules_bench`.

One service runtime per catalog, each deciding the benchmark's mixed requests
(`load_tests/traffic.py`) in a tight loop, in turn, `--rounds` times; reported is the
median CPU per decision of `DecisionEngine.decide` (no HTTP, no JSON parse):

- `none`: the demo catalog as it is;
- `rules`: every action with eligibility rules that hold (segments, a validity window
  with days and hours, a customer feature bound, a context bound), caps on 10% of the
  actions (5 impressions per customer per hour) and a budget on one;
- `rules+explain`: the same with `explain` on every request.

With `--redis` the runtimes run on a private redis-server with the demo's features
materialized into it, and the report adds the Redis calls per decision that the caps
and budgets made (`EVALSHA` in Redis' own command statistics).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from load_tests.processes import start_redis
from load_tests.traffic import mixed_traffic
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings

CAPPED_SHARE = 0.1


def rules_catalog(source: Path, target: Path) -> Path:
    document = json.loads(source.read_text())
    actions = document["actions"]
    every = max(1, round(1 / CAPPED_SHARE))
    for i, a in enumerate(actions):
        a["rules"] = {
            "segments": ["new", "occasional", "regular", "loyal", "vip"],
            "valid": {"from": "2020-01-01T00:00:00Z", "until": "2099-01-01T00:00:00Z",
                      "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                      "hours": ["00:00", "24:00"], "timezone": "Europe/Berlin"},
            "customer": {"price_sensitivity": {"min": 0.0}},
            "context": {"cart_value": {"min": 0}},
        }
        if i % every == 0:
            a["contact"] = {"max_impressions": 5, "window_seconds": 3600}
    actions[1]["budget"] = {"limit": 1_000_000, "per": "day", "counts": "impression"}
    target.write_text(json.dumps(document))
    return target


def champion_in_redis(data_dir: Path, models_dir: Path, url: str) -> None:
    """The models directory's champion (else its newest version) promoted in the Redis
    at `url`, where a replica on that Redis reads the pointers."""
    from features.config import shipped_world
    from service.registry import registry_for

    world = shipped_world("retail")
    with (registry_for(Settings(data_dir=data_dir, models_dir=models_dir), world) as local,
          registry_for(Settings(data_dir=data_dir, models_dir=models_dir, redis_url=url),
                       world) as shared):
        version = local.pointers().champion or local.registered()[-1].manifest.version
        shared.promote(version)


async def measure(settings: Settings, bodies: list[dict[str, Any]], explain: bool) -> float:
    """CPU seconds per decision over `bodies`."""
    runtime = Runtime.build(settings, Metrics())
    await runtime.start()
    try:
        model = runtime.requests.decision
        requests = [model.model_validate({**b, "explain": explain}) for b in bodies]
        for r in requests[:200]:  # warm the customer cache and the views
            await runtime.engine.decide(r)
        started = time.process_time()
        for r in requests:
            await runtime.engine.decide(r)
        return (time.process_time() - started) / len(requests)
    finally:
        await runtime.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", action="store_true", help="on a private redis-server")
    args = parser.parse_args(argv)
    bodies = [json.loads(item["body"]) for item in mixed_traffic(args.data_dir, args.requests)]
    with tempfile.TemporaryDirectory() as work:
        rules = rules_catalog(args.data_dir / "catalog.json", Path(work) / "catalog.json")
        server = None
        url = None
        if args.redis:
            from features.config import shipped_world
            from features.store import apply_and_materialize

            server = start_redis(Path(work))
            url = server.url
            apply_and_materialize(shipped_world("retail"), args.data_dir, url)
            champion_in_redis(args.data_dir, args.models_dir, url)
        try:
            base = {"data_dir": args.data_dir, "models_dir": args.models_dir, "redis_url": url,
                    "log_level": "WARNING", "snapshot_seconds": 0}
            cases = {"none": (Settings(**base), False),  # type: ignore[arg-type]
                     "rules": (Settings(**base, catalog_path=rules), False),  # type: ignore[arg-type]
                     "rules+explain": (Settings(**base, catalog_path=rules), True)}  # type: ignore[arg-type]
            cpu: dict[str, list[float]] = {name: [] for name in cases}
            calls: dict[str, float] = {}
            for _ in range(args.rounds):
                for name, (settings, explain) in cases.items():
                    before = _evalsha(url)
                    cpu[name].append(asyncio.run(measure(settings, bodies, explain)))
                    calls[name] = (_evalsha(url) - before) / (len(bodies) + 200)
        finally:
            if server is not None:
                server.stop()
    none = statistics.median(cpu["none"])
    for name, values in cpu.items():
        us = statistics.median(values) * 1e6
        line = f"{name:14s} {us:8.1f} us CPU/decision  ({us / (none * 1e6) - 1:+.1%} vs none)"
        if url is not None:
            line += (f"  EVALSHA/decision {calls[name]:.3f} "
                     f"(caps and budgets: {calls[name] - calls['none']:+.3f})")
        print(line)


def _evalsha(url: str | None) -> int:
    if url is None:
        return 0
    client = redis.Redis.from_url(url)
    stats: Any = client.info("commandstats")
    client.close()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(
        stats.get("cmdstat_eval", {}).get("calls", 0))


if __name__ == "__main__":
    main()
