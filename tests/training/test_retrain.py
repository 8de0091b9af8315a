"""`nextbest retrain`'s own rules: what it refuses, how it registers a candidate that
passed, and that its exit codes say what happened. The whole loop on a served service
is tests/training/test_retrain_e2e.py."""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

import pytest

from features.config import shipped_world
from service import cli
from service.manifest import read_manifest, versions
from service.registry import FilePointers, Registry
from tests.demo_fixtures import DemoDirs
from training.retrain import (
    BAD_INPUT,
    EXIT_CODES,
    EXPORT_FAILED,
    NOT_ENOUGH_DATA,
    RETRAIN_DIR,
    register,
)

WORLD = shipped_world("retail")
NAME = "nextbest-ranker"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("NEXTBEST_REDIS_URL", "NEXTBEST_CONFIG", "NEXTBEST_MODEL_VERSION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path


def test_without_redis_there_is_nothing_to_export(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["retrain", "--no-progress"]) == BAD_INPUT
    out = capsys.readouterr().out.splitlines()
    assert out == [f"retrain: export needs NEXTBEST_REDIS_URL: the embedded store lives in the "
                   f"serving process, where no other process can read it (exit {BAD_INPUT})"]
    assert cli.main(["retrain", "--attribution-window", "soon"]) == BAD_INPUT
    assert "--attribution-window: 'soon' is not a duration" in capsys.readouterr().err
    assert cli.main(["retrain", "--candidate", str(env / "nowhere")]) == BAD_INPUT
    assert "is not a directory" in capsys.readouterr().err


def test_no_logged_decision_is_not_enough_data(env: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NEXTBEST_REDIS_URL", redis_url)
    assert cli.main(["retrain", "--no-progress"]) == NOT_ENOUGH_DATA
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("export: decisions: 0 rows")
    assert lines[-1].startswith("retrain: not enough data to train on: no decision exported into")
    assert lines[-1].endswith(f"(exit {NOT_ENOUGH_DATA})")
    assert not (env / "models").exists()  # nothing registered


def test_one_run_at_a_time(env: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NEXTBEST_REDIS_URL", redis_url)
    work = env / "var" / RETRAIN_DIR
    work.mkdir(parents=True)
    with (work / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert cli.main(["retrain", "--no-progress"]) == EXPORT_FAILED
    line = capsys.readouterr().out.strip()
    assert line == f"retrain: another nextbest retrain holds {work / '.lock'} (exit {EXPORT_FAILED})"


def test_a_candidate_that_passed_becomes_the_next_version_with_its_gate(demo: DemoDirs, tmp_path: Path) -> None:
    from features.encoding import Encoder

    staged = tmp_path / "staging" / NAME / "1"
    shutil.copytree(demo.models_dir / NAME / "1", staged)
    models = tmp_path / "models"
    shutil.copytree(demo.models_dir / NAME / "1", models / NAME / "1")
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    report = {"verdict": "pass", "reasons": ["off-policy value: ...: pass", "log loss: ...: pass"],
              "decisions": 800, "estimator": "snips", "policy": "greedy", "margin": 0.0,
              "log_loss_margin": 0.0, "min_ess": 100.0}
    (gate_dir / "gate.json").write_text(json.dumps(report))
    encoder = Encoder(WORLD)
    registry = Registry(FilePointers(models, NAME), models, NAME, list(encoder.columns), encoder.encoding)
    said: list[str] = []

    version = register(registry, staged, "k" * 64, "1", gate_dir, said.append)

    assert version == "2" and versions(models, NAME) == [1, 2]
    manifest = read_manifest(models / NAME / "2")
    source = read_manifest(staged)
    assert manifest.sha256 == source.sha256 and manifest.columns == source.columns
    assert manifest.metrics == source.metrics and manifest.parent_version == "1"
    assert manifest.training["retrain"]["key"] == "k" * 64
    assert manifest.training["retrain"]["gate"]["verdict"] == "pass"
    card = (models / NAME / "2" / "model_card.md").read_text()
    assert card.startswith(f"# {NAME} v2") and "## Gate" in card and "**pass**" in card
    assert json.loads((models / NAME / "2" / "gate.json").read_text()) == report
    registry.load("2")  # loads exactly as a replica would
    assert said == [f"register: {NAME} v2 in {models / NAME / '2'} (sha256 {source.sha256[:12]}, parent v1)"]
    # a candidate that is a registered version already is not registered twice
    assert register(registry, models / NAME / "2", "k" * 64, "1", gate_dir, said.append) == "2"
    assert versions(models, NAME) == [1, 2]


def test_the_exit_codes_are_distinct() -> None:
    assert sorted(EXIT_CODES) == list(range(7))
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
