"""Feedback learning, measured in-process against a real Redis: throughput and lag.

Uses the service's own pieces (RedisState, OnlineLearner, FeedbackLoop) and its own
Redis clients (appends on one pipelined `RespConnection`, as /v1/feedback sends them;
stream reads on another, as the service reads on a single node) on a Redis database of
its own, so a running nextbest's learner does not see these events:

- throughput: N events already in the stream, one FeedbackLoop started from "0", timed
  until it has learned all N (XREAD + decode + River learn_one + publish);
- lag: a producer appends events at a fixed rate (as /v1/feedback does before its 202,
  stamping `accepted_at`) while the loop runs in the same event loop; every learned
  event's lag (learned - accepted_at) is recorded exactly, not from histogram buckets,
  and the process' CPU per event meanwhile (the producer's appends included): at a
  trickle (`--rate 20`) that is the fixed cost of an event, a read and a publication each.

`python -m load_tests.learner_bench [--rate R --seconds S --events N --reader redis-py]`
runs both on a redis-server of its own (`--reader redis-py`: the stream read through a
redis-py client instead of the service's lean connection, for comparison).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from features.config import shipped_world
from service.feedback_loop import FeedbackLoop
from service.learner import OnlineLearner, learner_tables
from service.metrics import Metrics
from service.settings import Settings
from service.state.redis_store import RedisState
from service.state.resp import RespConnection

#: The service's own spacing of stream reads, so the lag measured is the lag it serves with.
READ_INTERVAL = Settings.model_fields["learner_read_interval_seconds"].default


class _LagRecorder:
    """Stands in for the lag histogram: keeps every observation."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)


def _events(action_ids: list[str], n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    outcomes = ["impression", "impression", "click", "dismiss", "accept", "purchase"]
    return [
        {"decision_id": f"d{i}", "action_id": action_ids[int(rng.integers(len(action_ids)))],
         "outcome": outcomes[int(rng.integers(len(outcomes)))], "value": None,
         "channel": "web", "placement": "home", "journey_stage": "consideration",
         "segment": "regular", "customer_id": "c00001", "rank": 1, "probability": 0.5,
         "offline_logit": float(rng.normal(-2.5, 1.0)), "ts": 0.0, "accepted_at": 0.0}
        for i in range(n)
    ]


async def _run(redis_url: str, action_ids: list[str], n: int, rate: int, seconds: float,
               reader_kind: str = "lean") -> dict[str, Any]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    await client.flushdb()
    tables = learner_tables(shipped_world("retail"))  # the demo's events are retail's
    # As in the service: a pool's client would take a connection per concurrent append
    # (hundreds when the producer falls behind on a slow machine, which lost connections)
    writer = RespConnection(redis_url, retry_on_disconnect=True)
    reader: Any = (RespConnection(redis_url, timeout=5.0, retry_on_disconnect=True)
                   if reader_kind == "lean" else aioredis.from_url(redis_url, socket_timeout=5.0))
    state = RedisState(writer, 3600, 10_000_000, prefix="bench:", reader=reader)
    try:
        # throughput: a backlog of n events, one learner
        events = _events(action_ids, n, seed=1)
        now = time.time()
        for e in events:
            e["accepted_at"] = now
        for i in range(0, n, 1000):
            await state.append_feedback(events[i:i + 1000])
        metrics = Metrics()
        loop = FeedbackLoop(state, OnlineLearner(action_ids, tables), metrics, read_interval=READ_INTERVAL)
        t = time.perf_counter()
        task = asyncio.create_task(loop.run())
        while loop.learned < n:
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t
        task.cancel()
        throughput = {"events": n, "seconds": round(elapsed, 3), "events_per_s": round(n / elapsed)}

        # lag: events arrive at `rate` per second while the loop runs
        await client.flushdb()
        metrics = Metrics()
        recorder = _LagRecorder()
        metrics.learner_lag = recorder  # type: ignore[assignment]
        learner = OnlineLearner(action_ids, tables)
        loop = FeedbackLoop(state, learner, metrics, read_interval=READ_INTERVAL)
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.2)
        source = _events(action_ids, 10_000, seed=2)
        tick, sent, k = max(0.01, 1 / rate), 0, 0  # at a trickle, one wake-up per event
        cpu = time.process_time()
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(rate * elapsed) - sent
            if due > 0:
                batch = []
                for _ in range(due):
                    e = dict(source[k % len(source)])
                    e["accepted_at"] = time.time()
                    batch.append(e)
                    k += 1
                await state.append_feedback(batch)
                sent += due
            await asyncio.sleep(tick)
        deadline = time.perf_counter() + 10
        while loop.learned < sent and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        cpu = time.process_time() - cpu
        task.cancel()
        t = time.perf_counter()
        for _ in range(20):
            learner.publish()
        publish_ms = (time.perf_counter() - t) / 20 * 1000
        lags = np.array(recorder.values)
        lag = {
            "rate": rate, "seconds": seconds, "sent": sent, "learned": loop.learned,
            # below `rate` when the producer fell behind: the lag was then measured at less
            "sent_per_s": round(sent / seconds),
            "lag_p50_s": round(float(np.percentile(lags, 50)), 4) if lags.size else None,
            "lag_p99_s": round(float(np.percentile(lags, 99)), 4) if lags.size else None,
            "lag_max_s": round(float(lags.max()), 4) if lags.size else None,
            "publish_ms": round(publish_ms, 3),
            "cpu_ms_per_event": round(1000 * cpu / max(1, sent), 3),
        }
        await client.flushdb()
        return {"throughput": throughput, "lag": lag}
    finally:
        await state.close()
        await client.aclose()


def measure(redis_url: str, catalog_file: Path, n: int = 50_000, rate: int = 5_000,
            seconds: float = 5.0, reader: str = "lean") -> dict[str, Any]:
    """Run both measurements on `redis_url` (flushed: give it a database of its own)."""
    action_ids = [a["action_id"] for a in json.loads(catalog_file.read_text())["actions"]]
    # As the service does once started: what the caller holds (in `nextbest bench`, all
    # that preparing the data and training left behind) is moved out of the collector's
    # way, or a full collection of it all stalls the learner and shows up in the lag
    # measured here
    gc.collect()
    gc.freeze()
    try:
        return asyncio.run(_run(redis_url, action_ids, n, rate, seconds, reader))
    finally:
        gc.unfreeze()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    from load_tests.processes import start_redis

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=5_000, help="events/s of the lag phase")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the lag phase")
    parser.add_argument("--events", type=int, default=50_000, help="backlog of the throughput phase")
    parser.add_argument("--actions", type=int, default=60, help="catalog size")
    parser.add_argument("--reader", choices=["lean", "redis-py"], default="lean")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="learner-bench-") as tmp:
        catalog = Path(tmp) / "catalog.json"
        catalog.write_text(json.dumps(
            {"actions": [{"action_id": f"a{i:03d}"} for i in range(args.actions)]}))
        redis = start_redis(Path(tmp))
        try:
            result = measure(redis.url, catalog, args.events, args.rate, args.seconds, args.reader)
        finally:
            redis.stop()
    print(json.dumps({**result, "reader": args.reader}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
