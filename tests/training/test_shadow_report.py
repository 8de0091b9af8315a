"""Shadow end to end on a real Redis: a challenger scores every decision next to the
champion, the records are exported, and the report compares the two on them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from features.config import shipped_world
from service import cli
from service.app import create_app
from service.registry import registry_for
from tests.demo_fixtures import DemoDirs, clear_service_state, promote
from tests.service.conftest import make_settings
from training.export import export
from training.shadow_report import NoShadowData, shadow_report

pytestmark = pytest.mark.integration
NAME = "nextbest-ranker"
DECISIONS = 60


@pytest.fixture
def shadowed(demo: DemoDirs, demo_redis: str, tmp_path: Path) -> Iterator[DemoDirs]:
    """v1 champion, v2 (a logistic regression) challenger on every decision, in Redis."""
    from training.train import train

    models = tmp_path / "models"
    shutil.copytree(demo.models_dir / NAME / "1", models / NAME / "1")
    train(demo.data_dir, models, algorithm="logreg", progress=False)
    dirs = DemoDirs(demo.data_dir, models)
    clear_service_state(demo_redis)
    promote(dirs, "1", demo_redis)
    with registry_for(make_settings(dirs, demo_redis), shipped_world("retail")) as registry:
        registry.shadow("2", 1.0)
        try:
            yield dirs
        finally:
            registry.stop_shadow()
            promote(DemoDirs(demo.data_dir, demo.models_dir), "1", demo_redis)
            clear_service_state(demo_redis)


def test_the_report_compares_the_two_models_on_the_shadowed_decisions(
        shadowed: DemoDirs, demo_redis: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    accepted = 0
    with TestClient(create_app(make_settings(shadowed, demo_redis))) as client:
        for i in range(DECISIONS):
            d = client.post("/v1/decisions", json={
                "customer_id": f"c{i:05d}", "channel": "web", "placement": "home", "limit": 3}).json()
            first = d["actions"][0]["action_id"]
            outcome = "accept" if i % 3 == 0 else "impression"
            accepted += outcome == "accept"
            r = client.post("/v1/feedback", json={"decision_id": d["decision_id"],
                                                  "action_id": first, "outcome": outcome})
            assert r.status_code == 202
    out = tmp_path / "export"
    client_r = redis.Redis.from_url(demo_redis)
    try:
        export(client_r, out, progress=False)
    finally:
        client_r.close()

    report = shadow_report(out)
    assert report.challenger == f"{NAME}:2" and report.champions == (f"{NAME}:1",)
    assert report.decisions == DECISIONS and report.with_feedback == DECISIONS
    assert report.logged_rate == pytest.approx(accepted / DECISIONS)
    assert 0.0 <= report.first_action_agreement <= 1.0 and 0.0 < report.shown_overlap <= 1.0
    assert report.champion is not None and report.shadow is not None
    assert report.champion.log_loss != report.shadow.log_loss  # two models scored them
    assert report.effective_sample_size is not None and report.effective_sample_size > 0

    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(shadowed.data_dir))
    monkeypatch.delenv("NEXTBEST_REDIS_URL", raising=False)
    assert cli.main(["models", "shadow-report", "--export", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"challenger {NAME}:2 against {NAME}:1 on {DECISIONS} decisions" in printed


def test_without_shadowed_decisions_the_report_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NoShadowData, match="run `nextbest export` first"):
        shadow_report(tmp_path / "nothing")
