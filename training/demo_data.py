"""Generate the demo data set: catalog, feature history and logged decisions.

Writes, under `data_dir`:

    catalog.json                  the action catalog (service/catalog.py format)
    sources/customers.parquet     weekly customer feature snapshots (Feast FileSource)
    sources/actions.parquet       weekly action feature snapshots (Feast FileSource)
    sources/interactions.parquet  logged decisions of a uniform-random logging policy
    demo/world.json               what rebuilds the hidden ground truth (training/world.py)

Features are kept as weekly HISTORY, not one row per entity, so the training set built
with Feast's point-in-time join sees the features as they were at decision time, and the
online store (materialized up to now) serves the latest snapshot.

The logging policy picks uniformly among the actions eligible for the drawn slot and logs
that propensity, so the logs support off-policy evaluation (IPS/SNIPS/DR) later.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from features.config import SOURCES_DIR, interactions_path, source_path
from features.schema import ACTION_JOIN_KEY, CATEGORIES, CUSTOMER_JOIN_KEY, JOURNEY_STAGES
from training.world import CHANNEL_DEVICES, CONTEXT_WEIGHTS, SLOTS, World, sample_rows

#: Decisions are spread over this window, ending an hour before generation.
INTERACTION_DAYS = 28.0
#: Channels whose callers know the journey stage (CRM-driven) and send it in the request.
STAGE_AWARE_CHANNELS = frozenset({"pos", "call_center", "email"})
MAX_BASKET_ITEMS = 6


def generate(
    data_dir: Path,
    seed: int = 7,
    n_customers: int = 5000,
    n_interactions: int = 300_000,
    progress: bool = True,
) -> None:
    """Write the demo catalog, feature history and interaction log (seconds, seeded).

    `n_interactions` logged decisions over `INTERACTION_DAYS` (a modest shop): the
    offline model's decisions keep improving with more log long after its holdout AUC
    stops moving, so the default log is longer than the AUC alone would ask for
    (`nextbest simulate` measures the decisions, as a share of the oracle's reward:
    docs/decision-quality.md).
    """
    from features.config import shipped_world
    from service.catalog import load_catalog

    data_dir = Path(data_dir)
    demo = data_dir / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    sources = data_dir / SOURCES_DIR
    sources.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    steps = tqdm(total=5, desc="demo data", disable=not progress, unit="step")

    world = World.build(seed, n_customers, now)
    rng = np.random.default_rng([seed, 2])
    catalog = {
        "version": f"demo-{seed}",
        "actions": [a.catalog_entry() for a in world.actions],
        "context_weights": CONTEXT_WEIGHTS,
    }
    (data_dir / "catalog.json").write_text(json.dumps(catalog, indent=1))
    load_catalog(data_dir / "catalog.json", shipped_world("retail"))  # validates
    (demo / "world.json").write_text(json.dumps(world.to_json(), indent=1))
    steps.update()

    customer_frames, action_frames = [], []
    for k, ts in enumerate(world.snapshot_times()):
        customer_frames.append(_snapshot(
            CUSTOMER_JOIN_KEY, world.customer_ids, ts, world.observe_customers(rng, k)))
        action_frames.append(_snapshot(ACTION_JOIN_KEY, world.action_ids, ts,
                                       world.observe_actions(rng)))
    pd.concat(customer_frames, ignore_index=True).to_parquet(source_path(data_dir, "customer"))
    steps.update()
    pd.concat(action_frames, ignore_index=True).to_parquet(source_path(data_dir, "action"))
    steps.update()

    interactions = simulate_logging_policy(world, rng, n_interactions)
    steps.update()
    interactions.to_parquet(interactions_path(data_dir))
    steps.update()
    steps.close()


def _snapshot(join_key: str, ids: list[str], ts: datetime, features: dict) -> pd.DataFrame:
    frame = pd.DataFrame({join_key: ids, "event_timestamp": ts,
                          "created": ts + timedelta(minutes=5)})
    for name, values in features.items():
        frame[name] = values
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["created"] = pd.to_datetime(frame["created"], utc=True)
    return frame


def simulate_logging_policy(
    world: World, rng: np.random.Generator, n: int
) -> pd.DataFrame:
    """n logged decisions: one uniformly random eligible action each, outcome from the truth."""
    customers = rng.choice(len(world.customer_ids), size=n,
                           p=world.activity / world.activity.sum())
    end = world.now - timedelta(hours=1)
    seconds = rng.uniform(0, INTERACTION_DAYS * 86400, size=n)
    times = np.array(end.timestamp() - seconds)
    order = np.argsort(times)
    customers, times = customers[order], times[order]
    channels = sample_rows(rng, world.habits[customers])
    channel_names = np.array(list(SLOTS), dtype=object)[channels]
    placements, devices = draw_slots(rng, channel_names)
    basket = draw_baskets(world, rng, customers, placements)
    actions = np.empty(n, dtype=np.int64)
    propensity = np.empty(n, dtype=np.float64)
    for (channel, placement), rows in _group(channel_names, placements).items():
        eligible = world.eligible(channel, placement)
        actions[rows] = eligible[rng.integers(len(eligible), size=len(rows))]
        propensity[rows] = 1.0 / len(eligible)

    true_stage = world.stage_at(customers, times)
    p = world.accept_probability(customers, actions, channel_names, placements, true_stage, basket)
    label = (rng.random(n) < p).astype(np.int64)
    stage_known = np.isin(channel_names, list(STAGE_AWARE_CHANNELS))
    stage_sent = np.where(stage_known, np.array(JOURNEY_STAGES, dtype=object)[true_stage], None)
    ids = np.array(world.action_ids, dtype=object)
    prices = np.array([a.price for a in world.actions])
    return pd.DataFrame({
        "event_timestamp": pd.to_datetime(times, unit="s", utc=True).as_unit("us"),
        "decision_id": [f"d{world.seed:03d}-{i:07d}" for i in range(n)],
        "customer_id": np.array(world.customer_ids, dtype=object)[customers],
        "action_id": ids[actions],
        "channel": channel_names,
        "placement": placements,
        "device": devices,
        "cart_value": (basket @ prices).round(2),
        "basket": [",".join(ids[np.flatnonzero(row)]) for row in basket],
        "journey_stage": stage_sent,
        "propensity": propensity,
        "label": label,
        "reward": label * world.action_value[actions],
    })


def _group(channels: np.ndarray, placements: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    keys = pd.Series(list(zip(channels, placements, strict=True)))
    return {k: np.asarray(v) for k, v in keys.groupby(keys).groups.items()}


def draw_slots(rng: np.random.Generator, channel_names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A placement and a device for each row, uniform among those of its channel."""
    placements = np.empty(len(channel_names), dtype=object)
    devices = np.empty(len(channel_names), dtype=object)
    for name, slots in SLOTS.items():
        rows = np.flatnonzero(channel_names == name)
        placements[rows] = np.array(slots, dtype=object)[rng.integers(len(slots), size=len(rows))]
        options = CHANNEL_DEVICES[name]
        devices[rows] = np.array(options, dtype=object)[rng.integers(len(options), size=len(rows))]
    return placements, devices


def draw_baskets(
    world: World, rng: np.random.Generator, customers: np.ndarray, placements: np.ndarray
) -> np.ndarray:
    """Bool (rows x actions): products in the basket, drawn from true preferences."""
    n = len(customers)
    checkout = np.isin(placements, ["cart", "checkout"])
    browsing = np.isin(placements, ["home", "product", "search"])
    size = np.where(checkout, 1 + rng.poisson(1.5, n), np.where(browsing, rng.poisson(0.4, n), 0))
    size = np.minimum(size, MAX_BASKET_ITEMS)
    products_by_category = [
        np.array([i for i, a in enumerate(world.actions) if a.kind == "product" and a.category == c])
        for c in CATEGORIES
    ]
    basket = np.zeros((n, len(world.actions)), dtype=bool)
    pref = world.preference[customers]
    for j in range(int(size.max(initial=0))):
        rows = np.flatnonzero(size > j)
        cats = sample_rows(rng, pref[rows])
        for c, products in enumerate(products_by_category):
            sub = rows[cats == c]
            basket[sub, products[rng.integers(len(products), size=len(sub))]] = True
    return basket
