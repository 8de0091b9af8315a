"""The training set: logged decisions + point-in-time features -> the model's input matrix.

Features come from Feast's offline store through the SAME FeatureService the service
reads online (the world's `model.feature_service`), with a point-in-time join: each decision sees
the customer and action features as they were when it was made, never later values.
The rows are then encoded with `features/encoding.py`, the encoder the service uses
(`Encoder.encode_examples`: the cross features computed as `encode_candidates` computes
them, over rows instead of over candidates; tests/training/test_dataset.py proves the
parity).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.config import IdListField, World, configured_world, interactions_path
from features.encoding import ActionMatrix, Encoder

log = logging.getLogger(__name__)

#: The join key an anonymous decision (customer_id null) is joined on: no row has it, so
#: the point-in-time join finds no features and the encoder uses the world's defaults.
ANONYMOUS_KEY = ""

#: interaction-log column -> its name in the joined frame (where the feature keeps its own)
CONTEXT_RENAMES = {"journey_stage": "context_journey_stage"}


@dataclass(frozen=True)
class TrainingSet:
    """Encoded examples in time order, with what off-policy evaluation needs."""

    X: np.ndarray  # (n, len(encoder.columns)) float32
    y: np.ndarray  # (n,) int 0/1
    propensity: np.ndarray  # (n,) logging policy's probability of the logged action
    reward: np.ndarray  # (n,) label x value
    event_timestamp: np.ndarray  # (n,) datetime64 in UTC (naive), ascending
    frame: pd.DataFrame  # the joined rows (interaction log + features), same order

    def __len__(self) -> int:
        return len(self.y)


def load_interactions(data_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(interactions_path(data_dir))


def historical_features(
    data_dir: Path, interactions: pd.DataFrame, redis_url: str | None = None,
    world: World | None = None,
) -> pd.DataFrame:
    """Point-in-time join of the interaction log with `world`'s FeatureService (None: the
    shipped default world), in log order, on its entities' join keys.

    One join per entity, over the distinct (join key, timestamp) pairs of the log, with
    the FeatureService's features of that entity: Feast's file offline store keeps one
    row per (a view's join keys, timestamp), so a single join over rows that share a
    customer and a time (the shown actions of one decision) would lose all but one.

    Log columns that share a name with a feature are renamed (CONTEXT_RENAMES): the
    request's `journey_stage` is context that overrides the stored feature, not the same.
    """
    world = world if world is not None else configured_world(None)
    store, service = feature_source(data_dir, redis_url, world)
    return join_features(store, service, world, interactions)


def feature_source(data_dir: Path, redis_url: str | None, world: World) -> tuple[Any, Any]:
    """(Feast store, the world's FeatureService) for `join_features`."""
    from features.store import feature_store

    store = feature_store(world, data_dir, redis_url)
    return store, _feature_service(store, world, data_dir)


def join_features(store: Any, service: Any, world: World, interactions: pd.DataFrame) -> pd.DataFrame:
    """`historical_features` with the store opened once (the chunked build joins per chunk)."""
    out = interactions.reset_index(drop=True).rename(columns=CONTEXT_RENAMES)
    for entity in (e for e in (world.customer_entity, world.action_entity) if e is not None):
        key = world.join_key(entity)
        refs = [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections
                if world.feature_views[p.name].entity == entity for f in p.features]
        # anonymous decisions: a key no source row has, so no features (the defaults)
        keys = pd.DataFrame({key: interactions[key].fillna(ANONYMOUS_KEY).to_numpy(),
                             "event_timestamp": interactions["event_timestamp"].to_numpy()})
        distinct = keys.drop_duplicates(ignore_index=True)
        distinct = distinct.assign(row=np.arange(len(distinct)))
        joined = store.get_historical_features(entity_df=distinct, features=refs).to_df()
        joined = joined.sort_values("row").reset_index(drop=True)
        if len(joined) != len(distinct):
            raise RuntimeError(f"point-in-time join of {entity} returned {len(joined)} of "
                               f"{len(distinct)} rows")
        rows = keys.merge(distinct, on=[key, "event_timestamp"], how="left")["row"].to_numpy()
        for name in world.features_of(entity):
            out[name] = joined[name].to_numpy()[rows]
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
    if not names:  # a world without customer features: an empty row per example
        return [{} for _ in range(len(frame))]
    sub = frame[names].astype(object)
    return sub.where(sub.notna(), None).to_dict("records")


def encode_rows(frame: pd.DataFrame, catalog: ActionMatrix, encoder: Encoder) -> np.ndarray:
    """Encode joined rows: one example = one (decision, logged action).

    `catalog` is the catalog's action matrix, as the service's ActionFeatureCache holds
    it: the basket crosses read the basket's items from it, and basket ids it does not
    know are skipped, exactly as the service drops unknown basket ids.
    """
    n = len(frame)
    if n == 0:
        raise ValueError("no interactions to encode")
    world = encoder.world
    contexts = _context_records(frame, world)
    customers = [
        encoder.encode_customer(raw, ctx)
        for raw, ctx in zip(_records(frame, list(world.features_of(world.customer_entity))),
                            contexts, strict=True)
    ]
    context_vectors = [
        encoder.encode_context(channel, placement, ctx)
        for channel, placement, ctx in zip(frame["channel"], frame["placement"], contexts, strict=True)
    ]
    actions = encoder.encode_actions(
        dict(enumerate(_records(frame, list(world.features_of(world.action_entity))))))  # type: ignore[arg-type]
    index = catalog.index
    no_basket = np.zeros(0, np.int64)
    baskets = [np.array([index[b] for b in ctx[encoder.basket] if b in index], np.int64)
               if encoder.basket is not None else no_basket for ctx in contexts]
    action_key = world.join_key(world.action_entity)
    catalog_rows = np.array([index.get(a, -1) for a in frame[action_key]], np.int64)
    return encoder.encode_examples(customers, context_vectors, actions, catalog, baskets, catalog_rows)


def _context_records(frame: pd.DataFrame, world: World) -> list[dict[str, Any]]:
    """Each row's request context by the world's field names (missing values as None)."""
    columns = {name: CONTEXT_RENAMES.get(name, name) for name in world.context}
    present = {name: column for name, column in columns.items() if column in frame.columns}
    records = _records(frame, list(present.values()))
    out = []
    for record in records:
        ctx: dict[str, Any] = {name: record[column] for name, column in present.items()}
        for name, spec in world.context.items():
            if isinstance(spec, IdListField):
                ctx[name] = _split(ctx.get(name))
        out.append(ctx)
    return out


def _split(basket: Any) -> list[str]:
    if not isinstance(basket, str) or not basket:
        return []
    return [b for b in basket.split(",") if b]


def catalog_actions(data_dir: Path, encoder: Encoder, world: World) -> ActionMatrix:
    """The catalog the service serves, encoded from what the catalog says of each action
    (the service's action cache reads the same values when the online store has none)."""
    from service.catalog import load_catalog

    catalog = load_catalog(Path(data_dir) / "catalog.json", world)
    return encoder.encode_actions({
        a.action_id: {f: getattr(a, f) for f in encoder.action_features if hasattr(a, f)}
        for a in catalog.actions
    })


def build_training_set(
    data_dir: Path, redis_url: str | None = None, interactions: pd.DataFrame | None = None,
    world: World | None = None,
    encoder: Encoder | None = None,
) -> TrainingSet:
    """Logged decisions, joined point-in-time and encoded, in time order.

    `interactions` defaults to the demo log of `data_dir`; exported service logs with the
    same columns (see training/demo_data.py) can be passed instead. `world` (None: the
    shipped default world) gives the FeatureService the features come from; `encoder`
    defaults to the world's.
    """
    world = world if world is not None else configured_world(None)
    if encoder is None:
        encoder = Encoder(world)
    if interactions is None:
        interactions = load_interactions(data_dir)
    interactions = interactions.sort_values("event_timestamp", kind="stable")
    frame = historical_features(data_dir, interactions, redis_url, world)
    X = encode_rows(frame, catalog_actions(data_dir, encoder, world), encoder)
    return TrainingSet(
        X=X,
        y=frame["label"].to_numpy(np.int64),
        propensity=frame["propensity"].to_numpy(np.float64),
        reward=frame["reward"].to_numpy(np.float64),
        event_timestamp=frame["event_timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
        .to_numpy("datetime64[us]"),
        frame=frame,
    )
