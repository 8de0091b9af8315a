"""The benchmark report: the py-spy profile summary and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from load_tests.report import plot, series, summarize_profile

IDLE = ("Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982);"
        "_worker (concurrent/futures/thread.py:81)")
JOB = IDLE + ";encode (service/snapshots.py:40)"
DECIDE = ("run (asyncio/runners.py:118);decide (service/engine.py:90);"
          "assemble (features/encoding.py:224)")


def test_an_idle_pool_worker_is_not_busy_time_but_its_jobs_are(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(f"{IDLE} 50\n{JOB} 10\n{DECIDE} 30\n")
    summary = summarize_profile(raw)
    assert summary["samples"] == 40 and summary["idle_worker_samples"] == 50
    assert dict(summary["by_package"]) == {"nextbest features/": 75.0, "nextbest service/": 25.0}
    inclusive = dict(summary["inclusive"])
    assert inclusive["decide (service/engine.py)"] == 75.0
    assert inclusive["_worker (concurrent/futures/thread.py)"] == 25.0


def _point(rate: int, p99: float) -> dict[str, float]:
    return {"rate": rate, "p99_ms": p99, "p50_ms": p99 / 4}


def test_the_sweep_is_a_line_and_the_search_steps_are_markers(tmp_path: Path) -> None:
    target = {"sweep": [_point(1000, 9.0), _point(100, 2.0), _point(500, 4.0)],
              "search": [_point(1400, 80.0), _point(700, 6.0), _point(1050, 30.0)]}
    sweep, search = series(target)
    assert [p["rate"] for p in sweep] == [100, 500, 1000]  # in rate order, search left out
    assert [p["rate"] for p in search] == [1400, 700, 1050]  # as bisected, not joined
    results = {"targets": {"nextbest": target}, "p99_limit_ms": 50.0, "generator": "openloop"}
    plot(results, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_goal_that_counts_is_cpu_per_request_and_p99_is_reported_only() -> None:
    from load_tests.report import CPU_RATIO_GOAL, goals

    def target(cpu: float, p99: float) -> dict[str, Any]:
        point = {"rate": 1000, "p99_ms": p99, "p50_ms": 1.0, "cpu_ms_per_request": cpu,
                 "errors": 0, "dropped": 0}
        return {"sweep": [point], "max_sustainable": {"rate": 800}, "ready_seconds": 1.0}

    results: dict[str, Any] = {"target_rate": 1000,
                               "targets": {"bare": target(0.2, 5.0), "nextbest": target(0.5, 50.0)}}
    found = {g["goal"].split(" (")[0]: g for g in goals(results)}
    cpu = found[f"nextbest CPU per request at 1000 req/s <= {CPU_RATIO_GOAL}x bare's"]
    assert cpu["measured"] == "0.500 / 0.200 ms = x2.50" and cpu["met"] is False
    p99 = found["nextbest p99 at 1000 req/s against bare p99"]
    assert p99["met"] is None and "x10.00" in p99["measured"]
    results["targets"]["nextbest"] = target(0.3, 50.0)
    assert any(g["met"] for g in goals(results) if g["goal"].startswith("nextbest CPU"))
