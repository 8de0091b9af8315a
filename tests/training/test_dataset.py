"""The training set: point-in-time correct features, encoded exactly as at serving time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.config import shipped_world
from features.encoding import Encoder
from service.catalog import load_catalog
from tests.features.retail_schema import ACTION_JOIN_KEY, CUSTOMER_JOIN_KEY, action_features, customer_features

ENCODER = Encoder(shipped_world("retail"))
MODEL_COLUMNS = ENCODER.columns
CUSTOMER_FEATURES = [f for _, f, _ in customer_features()]
ACTION_FEATURES = [f for _, f, _ in action_features()]


def _as_of(frame: pd.DataFrame, key: str, entity_id: str, ts: pd.Timestamp) -> pd.Series:
    rows = frame[(frame[key] == entity_id) & (frame["event_timestamp"] <= ts)]
    return rows.sort_values("event_timestamp").iloc[-1]


def test_shapes_and_order(small_training_set) -> None:  # type: ignore[no-untyped-def]
    ts = small_training_set
    assert ts.X.dtype == np.float32 and ts.X.shape == (len(ts), len(MODEL_COLUMNS))
    assert not np.isnan(ts.X).any()
    assert set(np.unique(ts.y)) <= {0, 1}
    assert np.all(np.diff(ts.event_timestamp.astype("int64")) >= 0)
    assert np.all((ts.propensity > 0) & (ts.propensity <= 1))
    assert np.allclose(ts.reward[ts.y == 0], 0.0)


def test_request_context_is_kept_apart_from_features(small_data_dir: Path, small_training_set) -> None:  # type: ignore[no-untyped-def]
    logged = pd.read_parquet(small_data_dir / "sources" / "interactions.parquet")
    frame = small_training_set.frame
    assert list(frame["decision_id"]) == list(logged.sort_values("event_timestamp")["decision_id"])
    by_id = logged.set_index("decision_id")["journey_stage"]
    assert frame["context_journey_stage"].equals(
        by_id.loc[frame["decision_id"]].reset_index(drop=True).rename("context_journey_stage"))
    assert frame["journey_stage"].notna().all()  # the stored feature, always present


def test_features_are_joined_point_in_time(small_data_dir: Path, small_training_set) -> None:  # type: ignore[no-untyped-def]
    customers = pd.read_parquet(small_data_dir / "sources" / "customers.parquet")
    actions = pd.read_parquet(small_data_dir / "sources" / "actions.parquet")
    frame = small_training_set.frame
    for i in np.linspace(0, len(frame) - 1, 15).astype(int):
        row = frame.iloc[i]
        customer = _as_of(customers, CUSTOMER_JOIN_KEY, row[CUSTOMER_JOIN_KEY], row["event_timestamp"])
        action = _as_of(actions, ACTION_JOIN_KEY, row[ACTION_JOIN_KEY], row["event_timestamp"])
        for name in CUSTOMER_FEATURES:
            assert row[name] == customer[name], (i, name)
        for name in ACTION_FEATURES:
            assert row[name] == action[name], (i, name)


def _serving_row(data_dir: Path, row: pd.Series) -> np.ndarray:
    """What the service's encoder produces for this logged decision and its one candidate."""
    catalog = load_catalog(data_dir / "catalog.json", shipped_world("retail"))
    actions = pd.read_parquet(data_dir / "sources" / "actions.parquet")
    as_of = {a: _as_of(actions, ACTION_JOIN_KEY, a, row["event_timestamp"]) for a in catalog.ids}
    matrix = ENCODER.encode_actions({a: {f: s[f] for f in ACTION_FEATURES} for a, s in as_of.items()})
    basket = [b for b in row["basket"].split(",") if b]
    ctx = {"device": row["device"], "cart_value": float(row["cart_value"]), "basket": basket,
           "journey_stage": row["context_journey_stage"]}
    _, x = ENCODER.encode_decision(
        ENCODER.encode_customer({f: row[f] for f in CUSTOMER_FEATURES}), row["channel"],
        row["placement"], ctx, matrix, np.array([matrix.index[row[ACTION_JOIN_KEY]]]),
        np.array([matrix.index[b] for b in basket], dtype=np.int64),
    )
    return x[0]


def test_training_rows_equal_the_serving_encoding(small_data_dir: Path, small_training_set) -> None:  # type: ignore[no-untyped-def]
    frame = small_training_set.frame
    has_basket = frame["basket"].str.len() > 0
    in_basket = [i for i, (a, b) in enumerate(zip(frame[ACTION_JOIN_KEY], frame["basket"],
                                                  strict=True)) if a in b.split(",")]
    picks = {
        int(np.flatnonzero(has_basket)[0]), int(np.flatnonzero(~has_basket)[0]),
        int(np.flatnonzero(frame["context_journey_stage"].notna())[0]),
        int(np.flatnonzero(frame["context_journey_stage"].isna())[0]),
        int(np.flatnonzero(frame["channel"] == "pos")[0]),
        *in_basket[:1], len(frame) - 1,
    }
    for i in sorted(picks):
        expected = _serving_row(small_data_dir, frame.iloc[i])
        np.testing.assert_array_equal(small_training_set.X[i], expected, err_msg=f"row {i}")
    assert in_basket, "the sample should contain a candidate that is already in the basket"
