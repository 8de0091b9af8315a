"""Start-up to ready with a long feedback stream, measured in-process against a real Redis.

A replica turns ready only once it has folded in the feedback stream (`Runtime.start`),
so its start-up grows with the stream unless it starts from a snapshot. This fills the
stream of a Redis that holds the demo's materialized features with `events` feedback
events of the demo's customers, then times `Runtime.build` + `Runtime.start`:

- full replay: no snapshot, every event replayed;
- from a snapshot: that runtime writes a snapshot at the stream's end, `tail` more
  events are appended (what arrives between two snapshots), and a new runtime restores
  it and replays the tail.

The process's own start (imports, model, features) is the bench's `ready s` column; this
adds what the stream costs. The service's `nb:*` keys of that Redis are deleted before
and after, except the model registry's pointers (`nb:registry:*`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis

from features.config import shipped_world
from load_tests.traffic import customer_ids
from service.catalog import load_catalog
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings

_OUTCOMES = ["impression"] * 6 + ["click", "accept", "dismiss", "purchase"]
_BATCH = 10_000


def _clear(client: redis.Redis) -> None:
    keys = [k for k in client.scan_iter(match="nb:*", count=1000)
            if not k.startswith(b"nb:registry:")]
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start:start + 1000])


def _append(client: redis.Redis, n: int, customers: list[str], actions: list[str],
            rng: np.random.Generator) -> None:
    """`n` feedback events as /v1/feedback writes them, the last one stamped now."""
    now = time.time()
    for start in range(0, n, _BATCH):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + _BATCH)):
            event = {
                "decision_id": f"d{i}", "action_id": actions[int(rng.integers(len(actions)))],
                "outcome": _OUTCOMES[int(rng.integers(len(_OUTCOMES)))], "value": 0.0,
                "ts": now - (n - i) * 0.01, "accepted_at": now,
                "customer_id": customers[int(rng.integers(len(customers)))],
                "channel": "web", "placement": "home", "journey_stage": "consideration",
                "segment": "regular", "rank": 1, "probability": 1.0,
                "offline_logit": float(rng.normal(-2.5, 1.0)), "exposures": 0,
            }
            pipe.xadd("nb:feedback", {"e": orjson.dumps(event)})
        pipe.execute()


def _sample(metrics: Metrics, name: str) -> int:
    return int(metrics.registry.get_sample_value(name) or 0)


async def _start(settings: Settings) -> tuple[Runtime, Metrics, float]:
    started = time.perf_counter()
    metrics = Metrics()
    runtime = Runtime.build(settings, metrics)
    await runtime.start()
    return runtime, metrics, time.perf_counter() - started


async def _run(settings: Settings, client: redis.Redis, events: int, tail: int,
               customers: list[str], actions: list[str]) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    _append(client, events, customers, actions, rng)
    full, metrics, full_s = await _start(settings)
    try:
        assert full.snapshots is not None
        replayed = _sample(metrics, "nextbest_replayed_events")
        taken = time.perf_counter()
        if not await full.snapshots.take(full.feedback_loop.position):
            raise RuntimeError("the snapshot turn was taken: is a nextbest using this Redis?")
        snapshot_s = time.perf_counter() - taken
        snapshot_bytes = _sample(metrics, "nextbest_snapshot_bytes")
    finally:
        await full.stop()
    _append(client, tail, customers, actions, rng)
    restored, metrics, restored_s = await _start(settings)
    try:
        tail_replayed = _sample(metrics, "nextbest_replayed_events")
    finally:
        await restored.stop()
    return {
        "events": events, "tail": tail, "customers": len(customers),
        "full_replay": {"ready_s": round(full_s, 2), "replayed": replayed,
                        "events_per_s": round(replayed / full_s)},
        "snapshot": {"bytes": snapshot_bytes, "write_s": round(snapshot_s, 3)},
        "from_snapshot": {"ready_s": round(restored_s, 2), "replayed": tail_replayed},
    }


def measure(redis_url: str, data_dir: Path, models_dir: Path, events: int = 1_000_000,
            tail: int = 50_000) -> dict[str, Any]:
    settings = Settings(redis_url=redis_url, data_dir=data_dir, models_dir=models_dir,
                        catalog_path=data_dir / "catalog.json", snapshot_seconds=60.0,
                        online_learning=True, contact_policy=True)
    client = redis.Redis.from_url(redis_url)
    _clear(client)
    try:
        return asyncio.run(_run(settings, client, events, tail, customer_ids(data_dir),
                                load_catalog(data_dir / "catalog.json", shipped_world("retail")).ids))
    finally:
        _clear(client)
        client.close()
