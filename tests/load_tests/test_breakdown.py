"""The breakdown's arithmetic and its layer handlers (the load itself: test_smoke.py)."""

from __future__ import annotations

import pytest

from load_tests.breakdown import cpu_budget, markdown
from load_tests.layers_app import handlers


def _row(cpu: float, p99: float) -> dict[str, float | int | list[object]]:
    return {"median_cpu_ms": cpu, "median_p50_ms": 0.5, "median_p99_ms": p99, "errors": 0,
            "dropped": 0, "rounds": [], "median_loadgen_cpu_ms": 0.5, "median_machine_busy": 0.55}


def test_cpu_budget_interpolates_where_the_calibration_crosses_the_ratio() -> None:
    rows = {"bare": _row(0.2, 2.0), "bare +100 us": _row(0.3, 2.5), "bare +200 us": _row(0.4, 4.5)}
    # P99_RATIO (1.5) times bare's p99 of 2.0 is 3.0, a quarter of the way from 2.5 to 4.5
    assert cpu_budget(rows) == pytest.approx(0.325)
    assert cpu_budget({"bare": _row(0.2, 2.0), "bare +100 us": _row(0.3, 2.2)}) is None


def test_markdown_adds_each_layer_to_the_one_above() -> None:
    rows = {"bare": _row(0.2, 2.0), "bare +100 us": _row(0.3, 4.0),
            "http": _row(0.1, 1.5), "parse": _row(0.13, 1.6), "nextbest": _row(0.45, 6.0)}
    text = markdown({"when": "now", "rate": 1000, "duration_s": 8, "rounds": 3, "generator": "k6",
                     "servers": rows, "cpu_budget_ms": cpu_budget(rows)})
    assert "| parse | request validation | 0.130 | +0.030 |" in text
    assert text.count("| 0.500 | 55% |") == len(rows)  # the load generator's share, per row
    assert "| nextbest | feedback accepted and learned, contact ledger | 0.450 | +0.320 |" in text
    assert "**0.250 ms**" in text and "nextbest costs **0.450 ms**" in text


def test_unknown_layer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown layer"):
        handlers("everything")
