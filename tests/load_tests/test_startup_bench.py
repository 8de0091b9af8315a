"""The start-up measurement, run small against the suite's Redis with the demo's features."""

from __future__ import annotations

import redis

from load_tests import report
from load_tests.startup_bench import measure
from tests.demo_fixtures import DemoDirs


def test_startup_bench_replays_all_then_only_the_tail(demo: DemoDirs, demo_redis: str) -> None:
    result = measure(demo_redis, demo.data_dir, demo.models_dir, events=3_000, tail=200)

    assert result["full_replay"]["replayed"] == 3_000
    assert result["from_snapshot"]["replayed"] == 200
    assert result["snapshot"]["bytes"] > 0
    assert result["full_replay"]["ready_s"] > 0 and result["from_snapshot"]["ready_s"] > 0
    client = redis.Redis.from_url(demo_redis)
    left = [k for k in client.scan_iter(match="nb:*") if not k.startswith(b"nb:registry:")]
    assert not left, "the service's keys were left behind"
    assert client.exists("nb:registry:nextbest-ranker"), "the registry's pointers were deleted"
    client.close()

    goals = report.goals({"targets": {}, "target_rate": 1000, "startup": result})
    assert [g["goal"].split(" (")[0] for g in goals] == [
        "start-up to ready <= 5 s with 3,000 events in the stream"]
