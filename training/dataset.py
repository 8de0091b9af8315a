"""The training set: logged decisions + point-in-time features -> the model's input matrix.

Features come from Feast's offline store through the SAME FeatureService the service
reads online (the world's `model.feature_service`), with a point-in-time join: each decision sees
the customer and action features as they were when it was made, never later values.
The rows are then encoded with `features/encoding.py`, the encoder the service uses; the
cross features are computed the way `encode_candidates` computes them, vectorised over
rows instead of over candidates (tests/training/test_dataset.py proves the parity).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.config import World, configured_world
from features.encoding import (
    BASKET_COLUMNS,
    CONTEXT_COLUMNS,
    MODEL_COLUMNS,
    assemble,
    encode_actions,
    encode_context,
    encode_customer,
)
from features.schema import (
    ACTION_JOIN_KEY,
    CATEGORIES,
    CHANNELS,
    action_features,
    customer_features,
)

log = logging.getLogger(__name__)

INTERACTIONS_FILE = Path("demo") / "interactions.parquet"
#: interaction-log column -> its name in the joined frame (where the feature keeps its own)
CONTEXT_RENAMES = {"journey_stage": "context_journey_stage"}


@dataclass(frozen=True)
class TrainingSet:
    """Encoded examples in time order, with what off-policy evaluation needs."""

    X: np.ndarray  # (n, len(MODEL_COLUMNS)) float32
    y: np.ndarray  # (n,) int 0/1
    propensity: np.ndarray  # (n,) logging policy's probability of the logged action
    reward: np.ndarray  # (n,) label x value
    event_timestamp: np.ndarray  # (n,) datetime64 in UTC (naive), ascending
    frame: pd.DataFrame  # the joined rows (interaction log + features), same order

    def __len__(self) -> int:
        return len(self.y)


def load_interactions(data_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(data_dir) / INTERACTIONS_FILE)


def historical_features(
    data_dir: Path, interactions: pd.DataFrame, redis_url: str | None = None,
    world: World | None = None,
) -> pd.DataFrame:
    """Point-in-time join of the interaction log with `world`'s FeatureService (None: the
    shipped default world), in log order, on its entities' join keys.

    Log columns that share a name with a feature are renamed (CONTEXT_RENAMES): the
    request's `journey_stage` is context that overrides the stored feature, not the same.
    """
    from features.store import feature_store

    world = world if world is not None else configured_world(None)
    store = feature_store(world, data_dir, redis_url)
    service = _feature_service(store, world, data_dir)
    entities = [e for e in (world.customer_entity, world.action_entity) if e is not None]
    join_keys = [world.join_key(e) for e in entities]
    entity_df = interactions[[*join_keys, "event_timestamp"]].copy()
    entity_df["row"] = np.arange(len(interactions))
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    joined = joined.sort_values("row").reset_index(drop=True)
    if len(joined) != len(interactions):
        raise RuntimeError(f"point-in-time join returned {len(joined)} of {len(interactions)} rows")
    names = [f for e in entities for f in world.features_of(e)]
    out = interactions.reset_index(drop=True).rename(columns=CONTEXT_RENAMES)
    for name in names:
        out[name] = joined[name].to_numpy()
    return out


def _feature_service(store: Any, world: World, data_dir: Path) -> Any:
    """The FeatureService; applies the definitions when the registry does not have them."""
    from feast.errors import FeatureServiceNotFoundException

    name = world.model.feature_service
    try:
        return store.get_feature_service(name)
    except FeatureServiceNotFoundException:
        from features.definitions import build

        log.info("registry has no %s: applying the definitions", name)
        store.apply(build(world, data_dir).objects())
        return store.get_feature_service(name)


def _records(frame: pd.DataFrame, names: list[str]) -> list[dict[str, Any]]:
    """Rows as dicts with missing values as None (the encoder's 'use the default')."""
    sub = frame[names].astype(object)
    return sub.where(sub.notna(), None).to_dict("records")


def encode_rows(frame: pd.DataFrame, basket_categories: dict[str, int]) -> np.ndarray:
    """Encode joined rows: one example = one (decision, logged action).

    `basket_categories` maps action id -> index into CATEGORIES (the catalog's
    categories, as the service's ActionMatrix has them); basket ids it does not know are
    skipped for the cross features, exactly as the service drops unknown basket ids.
    """
    n = len(frame)
    if n == 0:
        raise ValueError("no interactions to encode")
    customer_names = [f for _, f, _ in customer_features()]
    context_stage = frame["context_journey_stage"]
    stages = context_stage.where(context_stage.notna(), None).tolist()
    customers = [
        encode_customer(raw, stage or None)
        for raw, stage in zip(_records(frame, customer_names), stages, strict=True)
    ]
    customer_block = np.stack([c.block for c in customers])
    category_affinity = np.stack([c.category_affinity for c in customers])
    channel_affinity = np.stack([c.channel_affinity for c in customers])

    baskets = [_split(b) for b in frame["basket"].tolist()]
    context_block = np.zeros((n, len(CONTEXT_COLUMNS)), np.float32)
    for i, (channel, placement, device, cart_value, basket) in enumerate(zip(
        frame["channel"], frame["placement"], frame["device"], frame["cart_value"], baskets,
        strict=True,
    )):
        context_block[i] = encode_context(
            channel, placement, device if isinstance(device, str) else None,
            float(cart_value), len(basket),
        )

    action_names = [f for _, f, _ in action_features()]
    actions = encode_actions(dict(enumerate(_records(frame, action_names))))  # type: ignore[arg-type]
    cats = actions.category
    rows = np.arange(n)
    cat_aff = np.where(cats >= 0, category_affinity[rows, np.maximum(cats, 0)], 0.0)
    ch = np.array([CHANNELS.index(c) if c in CHANNELS else -1 for c in frame["channel"]])
    chan_aff = np.where(ch >= 0, channel_affinity[rows, np.maximum(ch, 0)], 0.0)

    share = np.zeros(n, np.float32)
    in_basket = np.zeros(n, np.float32)
    basket_block = np.zeros((n, len(BASKET_COLUMNS)), np.float32)
    for i, (action_id, basket) in enumerate(zip(frame[ACTION_JOIN_KEY], baskets, strict=True)):
        known = [b for b in basket if b in basket_categories]
        if known:
            basket_cats = np.array([basket_categories[b] for b in known])
            share[i] = (cats[i] == basket_cats).mean()
            in_basket[i] = float(action_id in known)
            basket_block[i, basket_cats[basket_cats >= 0]] = 1.0
    return assemble(customer_block, context_block, actions.block, cat_aff, chan_aff, share,
                    in_basket, basket_block)


def _split(basket: Any) -> list[str]:
    if not isinstance(basket, str) or not basket:
        return []
    return [b for b in basket.split(",") if b]


def catalog_categories(data_dir: Path) -> dict[str, int]:
    """Action id -> category index, from the catalog the service serves."""
    from features.config import shipped_world
    from service.catalog import load_catalog

    catalog = load_catalog(Path(data_dir) / "catalog.json", shipped_world("retail"))
    return {a.action_id: CATEGORIES.index(a.category) for a in catalog.actions
            if a.category in CATEGORIES}


def build_training_set(
    data_dir: Path, redis_url: str | None = None, interactions: pd.DataFrame | None = None,
    world: World | None = None,
) -> TrainingSet:
    """Logged decisions, joined point-in-time and encoded, in time order.

    `interactions` defaults to the demo log of `data_dir`; exported service logs with the
    same columns (see training/demo_data.py) can be passed instead. `world`'s
    FeatureService gives the features (None: the shipped default world).
    """
    if interactions is None:
        interactions = load_interactions(data_dir)
    interactions = interactions.sort_values("event_timestamp", kind="stable")
    frame = historical_features(data_dir, interactions, redis_url, world)
    X = encode_rows(frame, catalog_categories(data_dir))
    assert X.shape[1] == len(MODEL_COLUMNS)
    return TrainingSet(
        X=X,
        y=frame["label"].to_numpy(np.int64),
        propensity=frame["propensity"].to_numpy(np.float64),
        reward=frame["reward"].to_numpy(np.float64),
        event_timestamp=frame["event_timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
        .to_numpy("datetime64[us]"),
        frame=frame,
    )
