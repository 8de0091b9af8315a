"""`nextbest evaluate --model` and `nextbest gate` on the demo's logged decisions.

The log: the demo's interactions (uniform logging over each slot's eligible actions, the
world's true acceptance) written in the documented decision log format; the models:
the demo's registered ONNX model, and models trained here (one on shuffled labels).
Features come from the demo's real Feast repository, point-in-time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.config import interactions_path, shipped_world
from service.catalog import load_catalog
from service.manifest import read_manifest
from tests.demo_fixtures import DemoDirs
from training import evaluate
from training.model_policy import candidate_frame, parse_time, score_log, since
from training.ope_log import load_log, write_log

WORLD = shipped_world("retail")


def demo_log_rows(data_dir: Path) -> list[dict[str, Any]]:
    """The demo's interactions as decision log rows (docs/log-format.md)."""
    catalog = load_catalog(data_dir / "catalog.json", WORLD)
    frame = pd.read_parquet(interactions_path(data_dir)).sort_values("event_timestamp")
    rows = []
    for r in frame.to_dict("records"):
        candidates = [catalog.ids[i] for i in catalog.candidates(r["channel"], r["placement"])]
        context = {"device": r["device"], "cart_value": float(r["cart_value"]),
                   "basket": [b for b in r["basket"].split(",") if b]}
        if r["journey_stage"] is not None:
            context["journey_stage"] = r["journey_stage"]
        rows.append({"decision_id": r["decision_id"], "ts": r["event_timestamp"].timestamp(),
                     "customer_id": r["customer_id"], "channel": r["channel"], "placement": r["placement"],
                     "context": context, "candidates": candidates, "action_id": r["action_id"],
                     "propensity": float(r["propensity"]), "reward": float(r["reward"])})
    return rows


@pytest.fixture(scope="module")
def demo_log(demo: DemoDirs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "decisions.jsonl"
    rows = demo_log_rows(demo.data_dir)
    assert all(abs(r["propensity"] * len(r["candidates"]) - 1.0) < 1e-9 for r in rows)
    write_log(path, rows)
    return path


@pytest.fixture(scope="module")
def champion(demo: DemoDirs) -> Path:
    return demo.models_dir / "nextbest-ranker" / "1"


def test_the_model_scores_every_candidate_as_the_service_would(demo: DemoDirs, demo_log: Path,
                                                               champion: Path) -> None:
    from features.encoding import Encoder
    from service.model import OnnxScorer
    from training.dataset import build_training_set

    log = load_log(demo_log).take(np.arange(8000) % 400 == 0)  # 20 decisions
    scores = score_log(log, champion, demo.data_dir, WORLD)
    assert scores.model == "nextbest-ranker:1"
    assert np.isfinite(scores.priority[log.mask]).all() and np.isnan(scores.priority[~log.mask]).all()
    # the logged action's P(accept) is what training's own encoding gives for that row
    frame = pd.read_parquet(interactions_path(demo.data_dir)).set_index("decision_id").loc[list(log.decision_ids)]
    data = build_training_set(demo.data_dir, interactions=frame.reset_index(), world=WORLD)
    encoder = Encoder(WORLD)
    p = OnnxScorer(champion, list(encoder.columns), encoder.encoding).predict(data.X)
    by_id = dict(zip(data.frame["decision_id"], p, strict=True))
    chosen = scores.probability[np.arange(log.n), log.chosen]
    np.testing.assert_allclose(chosen, [by_id[d] for d in log.decision_ids], rtol=1e-6)
    catalog = load_catalog(demo.data_dir / "catalog.json", WORLD)
    i = 3
    k = int(log.chosen[i])
    action = catalog.index[log.actions[log.candidates[i, k]]]
    weight = catalog.context_weight(log.channels[i])[action]
    expected = chosen[i] * catalog.value[action] * weight * catalog.lever[action]
    assert scores.priority[i, k] == pytest.approx(expected)
    frame_rows, _, _ = candidate_frame(log, WORLD)
    assert len(frame_rows) == int(log.mask.sum())


def test_evaluate_a_registered_model_on_its_holdout(demo: DemoDirs, demo_log: Path, champion: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(demo.data_dir))
    monkeypatch.delenv("NEXTBEST_CONFIG", raising=False)
    out = tmp_path / "eval"
    code = evaluate.main(["--log", str(demo_log), "--model", str(champion), "--interactions",
                          str(interactions_path(demo.data_dir)), "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "model nextbest-ranker:1 (greedy)" in printed.out and "| snips |" in printed.out
    report = json.loads((out / "evaluation.json").read_text())
    start = parse_time(read_manifest(champion).training["holdout_from"])
    held_out = since(load_log(demo_log), start)
    assert report["decisions"] == held_out.n == 1600 and report["since"] == pytest.approx(start)
    by_name = {e["name"]: e for e in report["estimates"]}
    logged_mean = float(held_out.reward.mean())
    # the trained model's greedy policy earns more than the uniform logging policy did
    assert by_name["snips"]["value"] > logged_mean
    assert by_name["dr"]["ci_low"] < by_name["dr"]["value"] < by_name["dr"]["ci_high"]
    assert by_name["snips"]["effective_sample_size"] < held_out.n
    metrics = report["holdout"]["metrics"]
    assert metrics["auc"] > 0.6 and metrics["n_holdout"] == 1600
    assert metrics["log_loss"] == pytest.approx(read_manifest(champion).metrics["log_loss"], rel=1e-4)
    assert len(report["holdout"]["calibration"]) == 10
    png = out / "reliability.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert evaluate.main(["--log", str(demo_log), "--model", str(champion), "--policy", "uniform"]) == 2
    assert "greedy or epsilon-greedy" in capsys.readouterr().err
    assert evaluate.main(["--log", str(demo_log), "--model", str(tmp_path / "nothing")]) == 2
    assert evaluate.main(["--log", str(demo_log), "--interactions", str(demo_log)]) == 2
    assert "--interactions needs --model" in capsys.readouterr().err


# --- the gate ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shuffled_model(demo: DemoDirs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the demo's interactions with their labels shuffled: worse."""
    from training.train import train

    root = tmp_path_factory.mktemp("shuffled")
    frame = pd.read_parquet(interactions_path(demo.data_dir))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(frame))
    frame["label"] = frame["label"].to_numpy()[order]
    frame["reward"] = frame["reward"].to_numpy()[order]
    path = root / "shuffled.parquet"
    frame.to_parquet(path)
    directory, _ = train(demo.data_dir, root / "models", interactions=path, progress=False, world=WORLD)
    return directory


@pytest.fixture
def gate_env(demo: DemoDirs, demo_log: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The gate's common arguments: the last 500 decisions of the log (a short holdout)."""
    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(demo.data_dir))
    monkeypatch.delenv("NEXTBEST_CONFIG", raising=False)
    start = load_log(demo_log).timestamps[-500]
    return ["--log", str(demo_log), "--interactions", str(interactions_path(demo.data_dir)),
            "--since", str(start)]


def test_the_gate_passes_a_model_as_good_as_the_champion(gate_env: list[str], champion: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.gate import main

    code = main([*gate_env, "--candidate", str(champion), "--champion", str(champion),
                 "--margin", "0.01", "--min-ess", "5", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "\ngate: pass\n" in out and "lower bound > -margin" in out
    report = json.loads((tmp_path / "gate.json").read_text())
    assert report["verdict"] == "pass" and report["decisions"] == 500
    assert report["difference"]["value"] == 0.0
    assert report["candidate"]["holdout"]["metrics"]["log_loss"] == report["champion"]["holdout"]["metrics"]["log_loss"]
    assert (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_the_gate_fails_a_model_trained_on_shuffled_labels(gate_env: list[str], champion: Path,
                                                           shuffled_model: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from training.gate import main

    code = main([*gate_env, "--candidate", str(shuffled_model), "--champion", str(champion),
                 "--min-ess", "5"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.rstrip().endswith("gate: fail")
    loss_line = next(line for line in out.splitlines() if line.startswith("log loss:"))
    assert loss_line.endswith(": fail")  # the shuffled labels' model is worse calibrated and ranks worse


def test_the_gate_refuses_to_decide_without_enough_effective_sample(
        gate_env: list[str], champion: Path, shuffled_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main as cli

    code = cli(["gate", *gate_env, "--candidate", str(champion), "--champion", str(shuffled_model)])
    out = capsys.readouterr().out
    assert code == 3, out
    assert "refused: the" in out and "below the minimum 100" in out and out.rstrip().endswith("gate: refused")
    assert cli(["gate", "--candidate", str(champion), "--champion", str(champion),
                "--log", gate_env[1]]) == 2
    assert "--interactions is required" in capsys.readouterr().err
