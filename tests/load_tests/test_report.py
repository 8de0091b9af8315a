"""The py-spy profile summary of the benchmark report."""

from __future__ import annotations

from pathlib import Path

from load_tests.report import summarize_profile

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
