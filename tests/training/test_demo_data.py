"""The demo generator writes a valid catalog, feature history and interaction log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.config import shipped_world
from service.catalog import load_catalog
from tests.features.retail_schema import action_features, customer_features
from training.demo_data import generate
from training.world import World

CUSTOMER_COLUMNS = ["customer_id", "event_timestamp", "created",
                    *[f for _, f, _ in customer_features()]]
ACTION_COLUMNS = ["action_id", "event_timestamp", "created", *[f for _, f, _ in action_features()]]
INTERACTION_COLUMNS = [
    "event_timestamp", "decision_id", "customer_id", "action_id", "channel", "placement",
    "device", "cart_value", "basket", "journey_stage", "propensity", "label", "reward",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "var"
    generate(path, seed=9, n_customers=200, n_interactions=2000, progress=False)
    return path


def test_catalog_is_valid(data_dir: Path) -> None:
    catalog = load_catalog(data_dir / "catalog.json", shipped_world("retail"))
    assert len(catalog) == 60
    assert {"product", "offer", "service"} == set(catalog.kind)
    assert len(catalog.candidates("pos", "checkout")) >= 4
    raw = json.loads((data_dir / "catalog.json").read_text())
    assert raw["context_weights"]["pos"] == {"offer": 1.3}


def test_feature_files_have_the_schema_columns(data_dir: Path) -> None:
    customers = pd.read_parquet(data_dir / "sources" / "customers.parquet")
    actions = pd.read_parquet(data_dir / "sources" / "actions.parquet")
    assert list(customers.columns) == CUSTOMER_COLUMNS
    assert list(actions.columns) == ACTION_COLUMNS
    for frame in (customers, actions):
        assert str(frame["event_timestamp"].dt.tz) == "UTC"
        assert frame["event_timestamp"].max() > pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=2)
        assert not frame.isna().any().any()
    assert customers["customer_id"].nunique() == 200
    assert customers["frequency_90d"].dtype == np.int64
    assert customers["recency_days"].dtype == np.float32


def test_interactions_are_a_logged_uniform_policy(data_dir: Path) -> None:
    log = pd.read_parquet(data_dir / "sources" / "interactions.parquet")
    catalog = load_catalog(data_dir / "catalog.json", shipped_world("retail"))
    assert list(log.columns) == INTERACTION_COLUMNS
    assert len(log) == 2000 and log["decision_id"].is_unique
    assert log["event_timestamp"].is_monotonic_increasing
    customers = pd.read_parquet(data_dir / "sources" / "customers.parquet")
    assert log["event_timestamp"].min() > customers["event_timestamp"].min()
    assert set(log["label"].unique()) <= {0, 1}
    assert 0.01 < log["label"].mean() < 0.2
    value = log["action_id"].map(dict(zip(catalog.ids, catalog.value, strict=True)))
    assert np.allclose(log["reward"], log["label"] * value)
    world = World.from_json(json.loads((data_dir / "demo" / "world.json").read_text()))
    price = {a.action_id: a.price for a in world.actions}
    for row in log.sample(200, random_state=0).itertuples():
        eligible = [catalog.ids[i] for i in catalog.candidates(row.channel, row.placement)]
        assert row.action_id in eligible
        assert row.propensity == pytest.approx(1.0 / len(eligible))
        basket = [b for b in row.basket.split(",") if b]
        assert set(basket) <= set(catalog.ids)
        assert row.cart_value == pytest.approx(sum(price[b] for b in basket), abs=0.01)
    assert log["journey_stage"].isna().any() and log["journey_stage"].notna().any()


def test_world_json_rebuilds_the_ground_truth(data_dir: Path) -> None:
    saved = json.loads((data_dir / "demo" / "world.json").read_text())
    world = World.from_json(saved)
    assert len(world.customer_ids) == 200
    assert world.action_ids == load_catalog(data_dir / "catalog.json", shipped_world("retail")).ids
