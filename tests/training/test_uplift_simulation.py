"""The uplift report on the simulator's traffic: nextbest against a random control group.

The real app (uvicorn on a loopback port) serves half of the simulated customers with the
random baseline; the closed loop (`training/simulator.py`) draws their responses from the
world's truth, and its customers dismiss offers at the truth's rates per channel. The
report over HTTP, and `nextbest report uplift`, must then show nextbest beating the
control with intervals that exclude no uplift; the touchpoint insights must find the pain
points where the truth makes customers say no.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from load_tests.processes import free_port
from service.app import create_app
from service.cli import main as cli
from tests.demo_fixtures import DemoDirs, serve_in_thread
from tests.service.conftest import make_settings
from training.simulator import NEXTBEST, simulate
from training.world import DISMISS_RATES

DECISIONS = 1200


@pytest.fixture(scope="module")
def simulated(demo: DemoDirs) -> Iterator[tuple[str, Any]]:
    settings = make_settings(demo, epsilon=0.05, seed=3, control_share=0.5, control_policy="random")
    with serve_in_thread(create_app(settings), free_port()) as url:
        report = simulate(url, demo.data_dir, demo.models_dir, decisions=DECISIONS, seed=11,
                          concurrency=4, progress=False, dismissals=True)
        yield url, report


def test_nextbest_beats_the_random_control(simulated: tuple[str, Any]) -> None:
    url, sim = simulated
    report = httpx.get(f"{url}/v1/reports/uplift", timeout=10).json()
    groups = {(g["channel"], g["group"]): g for g in report["groups"]}
    treatment, control = groups[("all", "treatment")], groups[("all", "control")]
    assert treatment["decisions"] + control["decisions"] == DECISIONS
    assert abs(control["decisions"] / DECISIONS - 0.5) < 0.1  # half the customers, by hash
    # what the report counts is what the simulator's customers did
    assert treatment["accepts"] + control["accepts"] == int(sim.accepted[NEXTBEST].sum())
    assert treatment["value"] + control["value"] == pytest.approx(float(sim.rewards[NEXTBEST].sum()))
    uplift = {(u["channel"], u["metric"]): u for u in report["uplift"]}
    rate, value = uplift[("all", "acceptance_rate")], uplift[("all", "value_per_decision")]
    assert rate["difference"]["low"] > 0 and rate["ratio"]["low"] > 1
    assert value["difference"]["low"] > 0 and value["ratio"]["low"] > 1
    assert treatment["acceptance_rate"]["low"] > control["acceptance_rate"]["high"]
    # the channels add up to the whole
    for metric in ("decisions", "accepts"):
        assert sum(g[metric] for (c, name), g in groups.items() if c != "all" and name == "control") \
            == control[metric]


def test_the_control_group_sees_random_picks(simulated: tuple[str, Any]) -> None:
    url, _ = simulated
    touchpoints = httpx.get(f"{url}/v1/insights/touchpoints", params={"group": "control"}).json()
    assert sum(t["impressions"] for t in touchpoints["channels"]) > 0.3 * DECISIONS
    everyone = httpx.get(f"{url}/v1/insights/touchpoints").json()
    assert sum(t["impressions"] for t in everyone["channels"]) == DECISIONS
    rates = [t["acceptance_rate"]["value"] for t in everyone["touchpoints"] if t["impressions"]]
    assert np.all(np.array(rates) >= 0) and everyone["pleasure_points"]


def test_the_pain_points_are_where_the_simulated_customers_say_no(
        simulated: tuple[str, Any]) -> None:
    url, sim = simulated
    report = httpx.get(f"{url}/v1/insights/touchpoints", params={"min_impressions": 20}).json()
    # every dismissal the simulated customers sent is counted, once
    assert sim.dismissed > 0
    assert sum(t["dismissals"] for t in report["channels"]) == sim.dismissed
    # the truth's dismissal rates: a person at the till or on the phone hears a no,
    # a page is scrolled past; the worst touchpoints are at the till and on the phone
    spoken = {c for c, rate in DISMISS_RATES.items() if rate >= 0.2}
    assert report["pain_points"] and report["pain_points"][0]["channel"] in spoken
    by_channel = {t["channel"]: t for t in report["channels"] if t["impressions"] >= 20}
    heard = max(by_channel[c]["dismissal_rate"] for c in spoken if c in by_channel)
    scrolled = max(by_channel[c]["dismissal_rate"] for c in by_channel if c not in spoken)
    assert heard > 2 * scrolled


def test_nextbest_report_uplift_prints_the_tables(simulated: tuple[str, Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = simulated
    assert cli(["report", "uplift", "--url", url]) == 0
    out = capsys.readouterr().out
    assert "control group: 50% of customers, policy random" in out
    assert re.search(r"^all\s+treatment\s+\d+", out, re.MULTILINE) and "acceptance_rate" in out
    assert cli(["report", "touchpoints", "--url", url]) == 0
    out = capsys.readouterr().out
    assert "pleasure points" in out and "pain points" in out
    assert cli(["report", "uplift", "--url", url, "--level", "2"]) == 2
    assert "level" in capsys.readouterr().err
