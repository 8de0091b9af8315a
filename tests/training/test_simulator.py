"""A short closed loop against the real app, served by uvicorn on a loopback port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from load_tests.processes import free_port
from service.app import create_app
from tests.demo_fixtures import DemoDirs, serve_in_thread
from tests.service.conftest import make_settings
from training.simulator import NEXTBEST, POLICIES, SimulationReport, _batches, main, simulate

DECISIONS = 400


@pytest.fixture(scope="module")
def service_url(demo: DemoDirs) -> Iterator[str]:
    """The real app with its default exploration, in a background thread."""
    settings = make_settings(demo, epsilon=0.05, seed=3)
    with serve_in_thread(create_app(settings), free_port()) as url:
        yield url


@pytest.fixture(scope="module")
def decision_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim") / "decisions.jsonl"


@pytest.fixture(scope="module")
def report(service_url: str, demo: DemoDirs, decision_log: Path) -> SimulationReport:
    return simulate(service_url, demo.data_dir, demo.models_dir, decisions=DECISIONS, seed=4,
                    concurrency=4, progress=False, decision_log=decision_log)


def test_the_report_adds_up(report: SimulationReport) -> None:
    summary = report.summary()
    assert set(summary) == set(POLICIES)
    for name in POLICIES:
        r, a = report.rewards[name], report.accepted[name]
        assert len(r) == len(a) == DECISIONS
        assert np.all(r >= 0)
        assert np.all(r[~a] == 0) and np.all(r[a] > 0)
        assert summary[name]["regret"] == pytest.approx(
            summary["oracle"]["total_reward"] - summary[name]["total_reward"])
    assert summary["oracle"]["share_of_oracle"] == pytest.approx(1.0)
    for name in POLICIES:  # expected reward: true p x value of the shown action
        e, r, a = report.expected[name], report.rewards[name], report.accepted[name]
        assert len(e) == DECISIONS and np.all(e >= 0) and e.sum() > 0
        assert np.all(e[a] < r[a])  # p < 1 of the value the accepted action earned
    assert summary["oracle"]["expected_share_of_oracle_last"] == pytest.approx(1.0)
    oracle_e, random_e = report.expected["oracle"], report.expected["random"]
    assert random_e.sum() < oracle_e.sum()
    assert summary["random"]["total_reward"] <= summary["oracle"]["total_reward"]
    assert report.drift_step == DECISIONS // 2 and report.drift_category is not None
    assert report.tail == DECISIONS // 4


def test_the_same_seed_reproduces_the_baselines(
    report: SimulationReport, service_url: str, demo: DemoDirs
) -> None:
    again = simulate(service_url, demo.data_dir, demo.models_dir, decisions=DECISIONS, seed=4,
                     concurrency=4, progress=False)
    for name in POLICIES:
        if name != "nextbest":  # the service keeps learning between runs
            assert np.array_equal(again.rewards[name], report.rewards[name])
    assert again.drift_category == report.drift_category


def test_the_report_is_written(report: SimulationReport, tmp_path: Path) -> None:
    paths = report.write(tmp_path)
    assert {p.name for p in paths} == {"report.json", "report.md", "steps.npz", "cumulative_reward.png",
                                       "rolling_acceptance.png"}
    assert all(p.stat().st_size > 0 for p in paths)
    assert "| oracle |" in (tmp_path / "report.md").read_text()


def test_batches_never_straddle_the_drift() -> None:
    batches = _batches(10, 4, 5)
    assert batches == [(0, 4), (4, 5), (5, 9), (9, 10)]


def test_main_needs_a_url_or_start() -> None:
    with pytest.raises(SystemExit):
        main(["--decisions", "10"])


def test_the_decision_log_is_the_off_policy_format(report: SimulationReport,
                                                   decision_log: Path) -> None:
    lines = [json.loads(line) for line in decision_log.read_text().splitlines()]
    assert len(lines) == DECISIONS  # every step of this scenario has something to show
    assert [r["ts"] for r in lines] == [float(s) for s in range(DECISIONS)]
    assert len({r["decision_id"] for r in lines}) == DECISIONS
    for r in lines:
        assert set(r) == {"decision_id", "ts", "customer_id", "channel", "placement", "context",
                          "candidates", "action_id", "propensity", "reward", "scores"}
        assert isinstance(r["decision_id"], str) and isinstance(r["customer_id"], str)
        assert r["channel"] and r["placement"] and isinstance(r["context"], dict)
        assert r["context"]["journey_stage"] and "basket" in r["context"]
        assert r["action_id"] in r["candidates"] and r["action_id"] in r["scores"]
        assert not set(r["context"]["basket"]) & set(r["candidates"])
        assert 0.0 < r["propensity"] <= 1.0
        assert all(isinstance(v, float) for v in r["scores"].values())
        assert r["reward"] == report.rewards[NEXTBEST][int(r["ts"])]
    assert any(r["propensity"] < 1.0 for r in lines)  # epsilon 0.05: some were explored
    assert any(r["reward"] > 0 for r in lines)


def test_main_writes_the_report_and_the_decision_log(service_url: str, demo: DemoDirs,
                                                      tmp_path: Path) -> None:
    assert main(["--url", service_url, "--data-dir", str(demo.data_dir), "--models-dir",
                 str(demo.models_dir), "--decisions", "20", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert len((tmp_path / "decisions.jsonl").read_text().splitlines()) == 20
    assert (tmp_path / "report.json").exists()
