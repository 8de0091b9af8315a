"""The learner measurement, run small against the suite's Redis."""

from __future__ import annotations

import json
from pathlib import Path

from load_tests.learner_bench import measure


def test_learner_bench_learns_every_event_it_sends(redis_url: str, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"actions": [{"action_id": f"a{i}"} for i in range(20)]}))

    result = measure(redis_url, catalog, n=2_000, rate=1_000, seconds=1.0)

    throughput, lag = result["throughput"], result["lag"]
    assert throughput["events"] == 2_000 and throughput["events_per_s"] > 0
    assert lag["sent"] == lag["learned"] >= 900  # the producer kept (nearly) to its rate
    assert lag["sent_per_s"] == round(lag["sent"] / 1.0)
    assert 0 <= lag["lag_p50_s"] <= lag["lag_p99_s"] <= lag["lag_max_s"]
