"""A short closed loop against the real app, served by uvicorn on a loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from service.app import create_app
from tests.conftest import free_port
from tests.demo_fixtures import DemoDirs
from tests.service.conftest import make_settings
from training.simulator import POLICIES, SimulationReport, _batches, main, simulate

DECISIONS = 400


@pytest.fixture(scope="module")
def service_url(demo: DemoDirs) -> Iterator[str]:
    """The real app with its default exploration, in a background thread."""
    port = free_port()
    settings = make_settings(demo, epsilon=0.05, seed=3)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           loop="asyncio", lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def report(service_url: str, demo: DemoDirs) -> SimulationReport:
    return simulate(service_url, demo.data_dir, demo.models_dir, decisions=DECISIONS, seed=4,
                    concurrency=4, progress=False)


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
