"""The uplift report's statistics, against published values and a simulation of coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.insights import Counts
from service.uplift import Interval, newcombe, uplift_report, wilson


def test_wilson_matches_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17, table I: 81/263 -> 0.2553-0.3662;
    # 15/148 -> 0.0624-0.1605; 0/20 -> 0-0.1611.
    assert wilson(81, 263, 0.95) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(15, 148, 0.95) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert wilson(0, 20, 0.95) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert all(math.isnan(x) for x in wilson(0, 0, 0.95))


def test_newcombe_matches_the_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17, table II, method 10: 56/70 - 48/80 -> 0.0524-0.3339
    assert newcombe(56, 70, 48, 80, 0.95) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    # 9/10 - 3/10 -> 0.1705-0.8090
    assert newcombe(9, 10, 3, 10, 0.95) == pytest.approx((0.1705, 0.8090), abs=1e-4)


def bounds(i: Interval) -> tuple[float, float]:
    assert i.low is not None and i.high is not None
    return i.low, i.high


def counts(n_t: int, a_t: int, n_c: int, a_c: int, values_t: list[float], values_c: list[float],
           channel: str = "web") -> dict[str, float]:
    return {
        f"d|treatment|{channel}": n_t, f"d|control|{channel}": n_c,
        f"e|treatment|{channel}|purchase|product|accept": a_t,
        f"e|control|{channel}|purchase|product|accept": a_c,
        f"e|treatment|{channel}|purchase|product|impression": n_t,
        f"v|treatment|{channel}|purchase|product": sum(values_t),
        f"v|control|{channel}|purchase|product": sum(values_c),
        f"q|treatment|{channel}": sum(v * v for v in values_t),
        f"q|control|{channel}": sum(v * v for v in values_c),
    }


def test_the_report_per_group_channel_and_overall() -> None:
    web = counts(400, 120, 100, 10, [10.0] * 120, [10.0] * 10)
    app = counts(200, 40, 50, 5, [5.0] * 40, [5.0] * 5, channel="app")
    report = uplift_report(Counts({**web, **app}), 0.0, 1.0, 0.95, 0.2, "random")
    rows = {(g.channel, g.group): g for g in report.groups}
    assert set(rows) == {(c, g) for c in ("app", "web", "all") for g in ("treatment", "control")}
    web_t = rows[("web", "treatment")]
    assert (web_t.decisions, web_t.accepts) == (400, 120)
    assert web_t.acceptance_rate.value == pytest.approx(0.3)
    assert (web_t.acceptance_rate.low, web_t.acceptance_rate.high) == pytest.approx(wilson(120, 400, 0.95))
    assert web_t.value_per_decision.value == pytest.approx(3.0)
    # values: 120 tens and 280 zeros -> sample sd and the normal interval
    sample = np.array([10.0] * 120 + [0.0] * 280)
    half = 1.959964 * sample.std(ddof=1) / math.sqrt(400)
    assert (web_t.value_per_decision.low, web_t.value_per_decision.high) == pytest.approx(
        (3.0 - half, 3.0 + half), rel=1e-5)
    everything = rows[("all", "treatment")]
    assert (everything.decisions, everything.accepts, everything.value) == (600, 160, 1400.0)

    uplift = {(u.channel, u.metric): u for u in report.uplift}
    rate = uplift[("web", "acceptance_rate")]
    assert rate.difference.value == pytest.approx(0.2)
    assert (rate.difference.low, rate.difference.high) == pytest.approx(newcombe(120, 400, 10, 100, 0.95))
    assert rate.ratio.value == pytest.approx(3.0)
    se = math.sqrt(1 / 120 - 1 / 400 + 1 / 10 - 1 / 100)
    assert (rate.ratio.low, rate.ratio.high) == pytest.approx(
        (3.0 * math.exp(-1.959964 * se), 3.0 * math.exp(1.959964 * se)), rel=1e-5)
    assert bounds(rate.difference)[0] > 0  # this much uplift is clear at these sizes
    value = uplift[("web", "value_per_decision")]
    assert value.difference.value == pytest.approx(2.0) and bounds(value.difference)[0] > 0
    assert value.ratio.value == pytest.approx(3.0)


def test_no_control_decisions_no_uplift_and_null_intervals() -> None:
    report = uplift_report(Counts({"d|treatment|web": 10}), 0.0, 1.0)
    control = next(g for g in report.groups if g.group == "control" and g.channel == "web")
    assert control.decisions == 0 and control.acceptance_rate.value is None
    assert report.uplift == []
    # a ratio over zero accepts is null, its difference still defined
    zero = uplift_report(Counts(counts(50, 5, 50, 0, [1.0] * 5, [])), 0.0, 1.0)
    rate = next(u for u in zero.uplift if u.channel == "web" and u.metric == "acceptance_rate")
    assert rate.ratio.value is None and rate.difference.value == pytest.approx(0.1)


def test_the_intervals_cover_at_their_level() -> None:
    """Simulated groups with known rates: the 95% difference interval holds the truth
    about 95% of the time (Newcombe's is known to be close to nominal)."""
    rng = np.random.default_rng(5)
    p_t, p_c, n_t, n_c, runs = 0.12, 0.08, 900, 300, 2000
    hits = value_hits = 0
    for _ in range(runs):
        a_t, a_c = int(rng.binomial(n_t, p_t)), int(rng.binomial(n_c, p_c))
        values_t = list(rng.exponential(20.0, a_t))
        values_c = list(rng.exponential(20.0, a_c))
        report = uplift_report(Counts(counts(n_t, a_t, n_c, a_c, values_t, values_c)), 0.0, 1.0)
        rate = next(u for u in report.uplift if u.channel == "web" and u.metric == "acceptance_rate")
        value = next(u for u in report.uplift if u.channel == "web" and u.metric == "value_per_decision")
        low, high = bounds(rate.difference)
        hits += low <= p_t - p_c <= high
        low, high = bounds(value.difference)
        value_hits += low <= 20.0 * (p_t - p_c) <= high
    assert 0.93 <= hits / runs <= 0.97
    assert 0.93 <= value_hits / runs <= 0.97
