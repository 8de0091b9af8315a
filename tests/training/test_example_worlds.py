"""The whole loop on every shipped example world, on the embedded default and on Redis.

Generate, `feast apply` + materialize, train (the session fixtures `demo` and
`telco_demo`, tests/demo_fixtures.py), then serve the real app built for the world,
decide, send feedback and see the ranking change; and a short closed-loop simulation of
the telco world against a real uvicorn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from features.config import shipped_world
from load_tests.processes import free_port
from service.app import create_app
from service.manifest import read_manifest, versions
from tests.demo_fixtures import DemoDirs, clear_service_state, serve_in_thread
from tests.service.conftest import make_settings
from training.simulator import POLICIES, SimulationReport, simulate
from training.telco_world import FAMILIES

#: per world: the fixture of its prepared data, a known customer and a slot with context
WORLDS = {
    "retail": ("demo", "demo_redis", {"channel": "app", "placement": "product",
                                      "context": {"journey_stage": "consideration"}}),
    "telco": ("telco_demo", "telco_demo_redis", {"channel": "call_center", "placement": "agent",
                                                 "context": {"call_reason": "billing",
                                                             "journey_stage": "active"}}),
}


@pytest.fixture(params=[(w, b) for w in WORLDS for b in ("memory", "redis")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def world_client(request: pytest.FixtureRequest) -> Iterator[tuple[str, DemoDirs, TestClient]]:
    name, backend = request.param
    data_fixture, redis_fixture, _ = WORLDS[name]
    dirs: DemoDirs = request.getfixturevalue(data_fixture)
    url = None
    if backend == "redis":
        url = request.getfixturevalue(redis_fixture)
        clear_service_state(url)
    with TestClient(create_app(make_settings(dirs, url))) as client:
        yield name, dirs, client


def _ranked(client: TestClient, **body: object) -> list[str]:
    r = client.post("/v1/decisions", json={"customer_id": "c00001", "limit": 20, **body})
    assert r.status_code == 200, r.text
    return [a["action_id"] for a in r.json()["actions"]]


def test_the_world_is_served_and_feedback_changes_its_ranking(
    world_client: tuple[str, DemoDirs, TestClient],
) -> None:
    name, dirs, client = world_client
    world = shipped_world(name)
    newest = versions(dirs.models_dir, "nextbest-ranker")[-1]
    manifest = read_manifest(dirs.models_dir / "nextbest-ranker" / str(newest))
    assert manifest.columns == world.model_columns()
    assert manifest.feature_service == world.model.feature_service
    slot = WORLDS[name][2]
    r = client.post("/v1/decisions", json={"customer_id": "c00001", "limit": 3, **slot})
    assert r.status_code == 200, r.text
    decision = r.json()
    assert decision["degraded"] == []  # the customer's features were read from the store
    assert len(decision["actions"]) == 3

    # every round shows the actions ranked above the target and the target itself; only
    # the target is accepted: what a world's learner must pick up is the target, not a
    # slot that suddenly accepts everything
    ranked = _ranked(client, **slot)
    target = ranked[len(ranked) // 2]
    before = ranked.index(target)
    shown = ranked[:before + 1]
    for _ in range(30):
        r = client.post("/v1/decisions", json={"customer_id": "c00001", "candidates": shown,
                                               "limit": len(shown), **slot})
        d = r.json()
        assert target in [a["action_id"] for a in d["actions"]]
        events = [{"decision_id": d["decision_id"], "action_id": a, "outcome": "impression"}
                  for a in shown]
        events.append({"decision_id": d["decision_id"], "action_id": target, "outcome": "accept"})
        fb = client.post("/v1/feedback", json={"events": events})
        assert fb.status_code == 202 and fb.json()["accepted"] == len(events), fb.text
    after = before
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ranked = _ranked(client, **slot)
        after = ranked.index(target) if target in ranked else 99
        if after < before:
            break
        time.sleep(0.05)
    assert after < before, f"{name}: rank stayed {before} -> {after}"


def test_a_context_field_of_another_world_is_refused(
    world_client: tuple[str, DemoDirs, TestClient],
) -> None:
    name, _, client = world_client
    field, value = ("call_reason", "cancel") if name == "retail" else ("basket", ["p001"])
    slot = WORLDS[name][2]
    r = client.post("/v1/decisions", json={**slot, "context": {field: value}})
    assert r.status_code == 422, r.text
    assert field in r.text


# --- the simulator on telco ----------------------------------------------------------------
DECISIONS = 300


@pytest.fixture(scope="module")
def telco_report(telco_demo: DemoDirs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[SimulationReport, Path]]:
    log = tmp_path_factory.mktemp("telco-sim") / "decisions.jsonl"
    settings = make_settings(telco_demo, epsilon=0.05, seed=3)
    with serve_in_thread(create_app(settings), free_port()) as url:
        yield simulate(url, telco_demo.data_dir, telco_demo.models_dir, decisions=DECISIONS,
                       seed=4, concurrency=4, progress=False, decision_log=log), log


def test_the_simulator_plays_the_telco_truth(telco_report: tuple[SimulationReport, Path]) -> None:
    report, log = telco_report
    summary = report.summary()
    assert set(summary) == set(POLICIES)
    assert report.drift_category in FAMILIES
    assert summary["oracle"]["share_of_oracle"] == pytest.approx(1.0)
    assert report.expected["random"].sum() < report.expected["oracle"].sum()
    assert "corr(observed family affinity, latent interest)" in report.fidelity
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == DECISIONS
    calls = [r for r in lines if r["channel"] == "call_center"]
    assert calls and all(r["context"]["call_reason"] for r in calls)
    assert all("call_reason" not in r["context"] for r in lines if r["channel"] != "call_center")
    assert all(r["context"]["journey_stage"] for r in lines)
    assert np.all(report.rewards["nextbest"] >= 0)
