"""`nextbest dataset`: exported decision and feedback logs -> interactions and the OPE log.

The exports come from the real `export` over the suite's redis-server; the leakage test
joins them point-in-time with a real Feast repository; the end-to-end test takes the
decisions and feedback from a served app, exports them, builds the dataset and trains.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import redis
from fastapi.testclient import TestClient

from features.config import interactions_path, shipped_world, source_path
from service.app import create_app
from service.cli import main
from service.manifest import read_manifest
from tests.demo_fixtures import DemoDirs, clear_service_state
from tests.service.conftest import make_settings
from training.dataset import build_training_set
from training.export import export
from training.logged_dataset import (
    DatasetError,
    build,
    parse_duration,
    write_decision_log,
    write_interactions,
)
from training.ope_log import load_log

WORLD = shipped_world("retail")
NOW = time.time()
DAY = 86_400.0
HOUR = 3_600.0
VALUES = {"a1": 10.0, "a2": 20.0, "a3": 5.0}


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def record(decision_id: str, ts: float, shown: list[str], customer: str | None = "c00001",
           context: dict[str, Any] | None = None, probabilities: list[float] | None = None,
           candidates: list[str] | None = None) -> dict[str, Any]:
    """A decision record as service/engine.py logs it."""
    probabilities = probabilities or [0.9 / (k + 1) for k in range(len(shown))]
    return {
        "decision_id": decision_id, "ts": ts, "customer_id": customer, "channel": "web",
        "placement": "home", "journey_stage": "purchase", "segment": "regular",
        "context": context if context is not None else {"device": "mobile"},
        "model": "nextbest-ranker:1", "candidates": candidates or ["a1", "a2", "a3"],
        "shown": [{"action_id": a, "rank": k + 1, "probability": p, "propensity": 0.2,
                   "offline_logit": -1.0, "exposures": 0, "explored": k > 0}
                  for k, (a, p) in enumerate(zip(shown, probabilities, strict=True))],
        "degraded": [],
    }


def event(decision_id: str, action_id: str, outcome: str, ts: float,
          value: float | None = None) -> dict[str, Any]:
    """A feedback stream entry as service/feedback.py appends it."""
    return {"decision_id": decision_id, "action_id": action_id, "outcome": outcome, "value": value,
            "ts": ts, "accepted_at": ts, "customer_id": "c00001", "channel": "web", "placement": "home",
            "journey_stage": "purchase", "segment": "regular", "rank": 1, "probability": 0.9,
            "offline_logit": -1.0, "exposures": 0}


def push(r: redis.Redis, decisions: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    for d in decisions:
        r.xadd("nb:decisions", {"d": orjson.dumps(d)})
    for e in events:
        r.xadd("nb:feedback", {"e": orjson.dumps(e)})


T0 = NOW - 10 * DAY
DECISIONS = [
    record("A", T0, ["a1", "a2"]),
    record("B", T0 + 60, ["a2", "a3"]),
    record("C", T0 + 120, ["a3"]),
    record("D", T0 + 180, ["a1"]),
    record("E", T0 + 240, ["a2"]),
    record("F", T0 + 300, ["a1", "a3"], customer=None,
           context={"basket": ["a2", "a3"], "journey_stage": "retention"}),
    record("G", NOW - HOUR, ["a1"]),  # its 24h window is still open
    record("H", T0 + 360, []),  # nothing eligible: nothing shown
]
EVENTS = [
    event("A", "a1", "impression", T0 + 1), event("A", "a2", "impression", T0 + 1),
    event("A", "a2", "accept", T0 + 2 * HOUR, 30.0),
    event("A", "a2", "purchase", T0 + 3 * HOUR, 99.0),  # the first labelling outcome counts
    event("C", "a3", "accept", T0 + 120 + 25 * HOUR, 7.0),  # after a 24h window
    event("D", "a1", "click", T0 + 200),
    event("E", "a2", "accept", T0 + 250),  # no value: the catalog's
    event("F", "a3", "dismiss", T0 + 310),  # F's rank 2 was seen, its rank 1 not reported
]


@pytest.fixture
def exported(r: redis.Redis, tmp_path: Path) -> Path:
    push(r, DECISIONS, EVENTS)
    out = tmp_path / "export"
    export(r, out, progress=False)
    return out


def rows_of(frame: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["decision_id"], row["action_id"]): row for row in frame.to_dict("records")}


def test_labels_come_from_outcomes_within_the_attribution_window(exported: Path) -> None:
    result = build(exported, WORLD, values=VALUES, progress=False)
    rows = rows_of(result.interactions)
    assert set(rows) == {("A", "a1"), ("A", "a2"), ("B", "a2"), ("C", "a3"), ("D", "a1"),
                         ("E", "a2"), ("F", "a3")}
    assert (rows["A", "a2"]["label"], rows["A", "a2"]["reward"]) == (1, 30.0)
    assert (rows["A", "a1"]["label"], rows["A", "a1"]["reward"]) == (0, 0.0)
    assert rows["C", "a3"]["label"] == 0  # accepted 25 hours later
    assert rows["D", "a1"]["label"] == 0  # a click does not label by default
    assert (rows["E", "a2"]["label"], rows["E", "a2"]["reward"]) == (1, VALUES["a2"])
    assert (result.n_decisions, result.open_window, result.without_actions) == (8, 1, 1)
    assert len(result.decisions) == 6 and [d["decision_id"] for d in result.decisions] == list("ABCDEF")

    wider = rows_of(build(exported, WORLD, timedelta(hours=48), values=VALUES, progress=False).interactions)
    assert (wider["C", "a3"]["label"], wider["C", "a3"]["reward"]) == (1, 7.0)
    clicks = rows_of(build(exported, WORLD, label_outcomes=("click", "accept"), values=VALUES,
                           progress=False).interactions)
    assert (clicks["D", "a1"]["label"], clicks["D", "a1"]["reward"]) == (1, VALUES["a1"])


def test_shown_actions_propensities_and_context(exported: Path) -> None:
    frame = build(exported, WORLD, values=VALUES, progress=False).interactions
    assert list(frame.columns) == ["event_timestamp", "decision_id", "customer_id", "action_id", "channel",
                                   "placement", *WORLD.context, "propensity", "label", "reward", "rank",
                                   "explored", "logged_model"]
    rows = rows_of(frame)
    # A: both had an impression; B: no event, so rank 1 only; F: only its rank 2 had an event
    assert (rows["A", "a2"]["rank"], rows["A", "a2"]["propensity"]) == (2, 0.45)
    assert rows["A", "a2"]["explored"] and not rows["A", "a1"]["explored"]
    assert ("B", "a3") not in rows and ("F", "a1") not in rows
    f = rows["F", "a3"]
    assert f["customer_id"] is None and f["basket"] == "a2,a3" and f["journey_stage"] == "retention"
    assert f["cart_value"] == 0.0 and f["device"] is None  # the world's defaults, as the service fills them
    assert rows["A", "a1"]["device"] == "mobile" and rows["A", "a1"]["basket"] == ""
    assert frame["event_timestamp"].is_monotonic_increasing
    assert str(frame["event_timestamp"].dt.tz) == "UTC"
    assert frame.loc[frame["decision_id"] == "A", "event_timestamp"].iloc[0].timestamp() == pytest.approx(T0)
    assert set(frame["logged_model"]) == {"nextbest-ranker:1"}

    every = rows_of(build(exported, WORLD, shown="all", progress=False).interactions)
    assert {("B", "a3"), ("F", "a1")} <= set(every) and len(every) == 9
    first = rows_of(build(exported, WORLD, shown="rank1", progress=False).interactions)
    assert set(first) == {(d, a) for d, a in [("A", "a1"), ("B", "a2"), ("C", "a3"), ("D", "a1"),
                                               ("E", "a2"), ("F", "a1")]}


def test_the_decision_log_is_valid_evaluation_input(exported: Path, tmp_path: Path) -> None:
    result = build(exported, WORLD, values=VALUES, progress=False)
    path = tmp_path / "decisions.jsonl"
    write_decision_log(result.decisions, path)
    log = load_log(path)
    assert log.n == 6 and log.decision_ids == tuple("ABCDEF")
    assert [log.actions[a] for a in log.chosen_action] == ["a1", "a2", "a3", "a1", "a2", "a1"]
    np.testing.assert_allclose(log.propensity, 0.9)
    np.testing.assert_allclose(log.reward, [0.0, 0.0, 0.0, 0.0, VALUES["a2"], 0.0])
    assert log.mask.sum(axis=1).tolist() == [3] * 6  # the candidates, not just the shown


def test_building_twice_writes_the_same_file(exported: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "one.parquet", tmp_path / "two.parquet"
    write_interactions(build(exported, WORLD, values=VALUES, progress=False).interactions, first)
    write_interactions(build(exported, WORLD, values=VALUES, progress=False).interactions, second)
    assert first.read_bytes() == second.read_bytes()
    write_interactions(pd.read_parquet(first).iloc[:0], first)  # overwrite in place, atomically
    assert len(pd.read_parquet(first)) == 0 and not list(tmp_path.glob(".*.tmp"))


def test_refusals_and_durations(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="run `nextbest export` first"):
        build(tmp_path, WORLD, progress=False)
    (tmp_path / "decisions").mkdir()
    with pytest.raises(DatasetError, match="label outcomes"):
        build(tmp_path, WORLD, label_outcomes=("love",), progress=False)
    with pytest.raises(DatasetError, match="shown"):
        build(tmp_path, WORLD, shown="some", progress=False)
    assert len(build(tmp_path, WORLD, progress=False).interactions) == 0
    assert parse_duration("24h") == timedelta(hours=24) and parse_duration("7d") == timedelta(days=7)
    assert parse_duration("90s") == timedelta(seconds=90) and parse_duration("1.5m") == timedelta(seconds=90)
    for bad in ("24", "h", "-1h", "0s", "3w"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_the_cli_builds_and_says_what(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("NEXTBEST_REDIS_URL", raising=False)
    assert main(["dataset", "--no-progress", "--attribution-window", "48h"]) == 0
    out = capsys.readouterr().out
    assert "7 interactions (3 labelled 1) from 6 of 8 decisions" in out
    frame = pd.read_parquet(tmp_path / "dataset" / "interactions.parquet")
    assert len(frame) == 7 and load_log(tmp_path / "dataset" / "decisions.jsonl").n == 6
    assert main(["dataset", "--no-progress", "--attribution-window", "soon"]) == 2
    assert "--attribution-window" in capsys.readouterr().err
    assert main(["dataset", "--no-progress", "--export", str(tmp_path / "none")]) == 2
    assert "run `nextbest export` first" in capsys.readouterr().err


# --- no leakage: the point-in-time join over the real Feast repository ---------------------

@pytest.fixture(scope="module")
def own_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo data dir of its own: the leakage test writes feature rows into it."""
    from training.demo_data import generate

    data_dir = tmp_path_factory.mktemp("leakage") / "var"
    generate(data_dir, seed=5, n_customers=40, n_interactions=200, progress=False)
    return data_dir


def test_a_feature_written_after_a_decision_never_reaches_its_row(
        own_data_dir: Path, r: redis.Redis, tmp_path: Path) -> None:
    customers = pd.read_parquet(source_path(own_data_dir, "customer"))
    customer = customers["customer_id"].iloc[0]
    history = customers[customers["customer_id"] == customer].sort_values("event_timestamp")
    s1, s2 = (t.timestamp() for t in history["event_timestamp"].iloc[-2:])
    decided = (s1 + s2) / 2  # between two snapshots, so only the rows written here differ
    early, later = record("early", decided, ["a1"], customer=customer), record(
        "later", decided + 2 * HOUR, ["a1"], customer=customer)
    push(r, [early, later], [event("later", "a1", "impression", decided + 2 * HOUR)])
    export(r, tmp_path / "export", progress=False)

    template = history.iloc[[-2]]
    before = template.assign(event_timestamp=pd.Timestamp(decided - HOUR, unit="s", tz="UTC"),
                             monetary_90d=111.0)
    after = template.assign(event_timestamp=pd.Timestamp(decided + HOUR, unit="s", tz="UTC"),
                            monetary_90d=999.0)
    assert s1 < decided - HOUR and decided + 2 * HOUR < s2
    pd.concat([customers, before, after], ignore_index=True).to_parquet(source_path(own_data_dir, "customer"))

    frame = build(tmp_path / "export", WORLD, progress=False).interactions
    data = build_training_set(own_data_dir, interactions=frame, world=WORLD)
    by_id = data.frame.set_index("decision_id")
    assert by_id.loc["early", "monetary_90d"] == 111.0  # written an hour before: seen
    assert by_id.loc["later", "monetary_90d"] == 999.0  # the later value, once it was written
    column = WORLD.model_columns().index("log_monetary_90d")
    row = list(data.frame["decision_id"]).index("early")
    assert data.X[row, column] == pytest.approx(np.log1p(111.0), rel=1e-6)
    assert 999.0 not in set(data.frame.loc[data.frame["decision_id"] == "early"].to_numpy().ravel())


# --- end to end: a served app's decisions and feedback -> export -> dataset -> train ----------

def test_served_decisions_and_feedback_become_a_model(
        demo: DemoDirs, demo_redis: str, tmp_path: Path) -> None:
    from training.train import train

    clear_service_state(demo_redis)
    customers = pd.read_parquet(interactions_path(demo.data_dir))["customer_id"].unique()[:60]
    rng = np.random.default_rng(3)
    sent: dict[str, dict[str, Any]] = {}
    accepted: set[tuple[str, str]] = set()
    settings = make_settings(demo, demo_redis, epsilon=0.3)
    with TestClient(create_app(settings)) as client:
        for i in range(240):
            channel, placement = [("web", "home"), ("app", "product"), ("web", "cart")][i % 3]
            body = {"customer_id": str(customers[i % len(customers)]), "channel": channel,
                    "placement": placement, "limit": 3,
                    "context": {"device": "mobile" if i % 2 else "desktop", "cart_value": float(i % 7)}}
            d = client.post("/v1/decisions", json=body)
            assert d.status_code == 200, d.text
            decision = d.json()
            sent[decision["decision_id"]] = {"body": body, "actions": decision["actions"]}
            events = [{"decision_id": decision["decision_id"], "action_id": a["action_id"],
                       "outcome": "impression"} for a in decision["actions"][:2]]
            top = decision["actions"][0]["action_id"]
            if rng.random() < 0.3:
                events.append({"decision_id": decision["decision_id"], "action_id": top,
                               "outcome": "accept", "value": 12.0})
                accepted.add((decision["decision_id"], top))
            assert client.post("/v1/feedback", json={"events": events}).status_code == 202
        time.sleep(1.2)  # then one more event, so that every decision's 1 s window has closed
        last = next(iter(sent))
        assert client.post("/v1/feedback", json={"decision_id": last, "action_id": sent[last]["actions"][0]
                                                 ["action_id"], "outcome": "impression",
                                                 "event_id": "one-more"}).status_code == 202

    r = redis.Redis.from_url(demo_redis)
    try:
        results = export(r, tmp_path / "export", progress=False)
    finally:
        r.close()
    assert [x.rows for x in results] == [240, sum(2 + ((d, s["actions"][0]["action_id"]) in accepted)
                                                  for d, s in sent.items()) + 1]
    result = build(tmp_path / "export", WORLD, parse_duration("1s"), progress=False)
    frame = result.interactions
    assert result.open_window == 0 and len(result.decisions) == 240
    assert len(frame) == 480 and set(frame["decision_id"]) == set(sent)
    for row in frame.sample(40, random_state=0).to_dict("records"):
        shown = sent[row["decision_id"]]
        action = shown["actions"][row["rank"] - 1]
        assert action["action_id"] == row["action_id"] and action["probability"] == row["propensity"]
        assert row["device"] == shown["body"]["context"]["device"]
        assert row["label"] == ((row["decision_id"], row["action_id"]) in accepted)
        assert row["reward"] == (12.0 if row["label"] else 0.0)
    path = tmp_path / "interactions.parquet"
    write_interactions(frame, path)

    models = tmp_path / "models"
    directory, manifest = train(demo.data_dir, models, interactions=path, progress=False, world=WORLD)
    assert read_manifest(directory) == manifest
    assert manifest.training["n_examples"] == 480
    assert manifest.training["source"].startswith(str(path.resolve()))
    assert manifest.metrics["n_holdout"] == 96.0 and 0 < manifest.metrics["log_loss"] < 1.5
    shutil.rmtree(models)


def test_the_train_cli_reads_the_named_interactions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(tmp_path))
    assert main(["train", "--no-progress", "--interactions", str(tmp_path / "missing.parquet")]) == 2
    assert "missing.parquet does not exist" in capsys.readouterr().err
