"""Generate an example world's data set: catalog, feature history and logged decisions.

For any example world with a hidden truth (`training/worlds.py`: retail, telco), writes,
under `data_dir`:

    catalog.json                  the action catalog (service/catalog.py format)
    sources/customers.parquet     weekly customer feature snapshots (Feast FileSource)
    sources/actions.parquet       weekly action feature snapshots (Feast FileSource)
    sources/interactions.parquet  logged decisions of a uniform-random logging policy
    demo/world.json               what rebuilds the hidden ground truth: the world's name,
                                  seed, size and anchor time (training/worlds.py)

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

from features.config import SOURCES_DIR, World, interactions_path, shipped_world, source_path
from training.truth import Truth
from training.worlds import build_truth

#: Decisions are spread over this window, ending an hour before generation.
INTERACTION_DAYS = 28.0


def generate(
    data_dir: Path,
    seed: int = 7,
    n_customers: int = 5000,
    n_interactions: int = 300_000,
    progress: bool = True,
    example: str = "retail",
    n_actions: int | None = None,
) -> None:
    """Write an example world's catalog, feature history and interaction log (seconds, seeded).

    `example` names the world (`features/worlds/<example>.yaml`) and its hidden truth
    (`training/worlds.py`). `n_interactions` logged decisions over `INTERACTION_DAYS` (a
    modest shop): the offline model's decisions keep improving with more log long after
    its holdout AUC stops moving, so the default log is longer than the AUC alone would
    ask for (`nextbest simulate` measures the decisions, as a share of the oracle's
    reward: docs/decision-quality.md). `n_actions` scales the catalog (retail only; None:
    the world's own), as the large-catalog benchmarks do (docs/benchmarks.md).
    """
    from service.catalog import load_catalog

    data_dir = Path(data_dir)
    demo = data_dir / "demo"
    demo.mkdir(parents=True, exist_ok=True)
    sources = data_dir / SOURCES_DIR
    sources.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    steps = tqdm(total=5, desc=f"{example} data", disable=not progress, unit="step")

    config = shipped_world(example)
    truth = build_truth(example, seed, n_customers, now, n_actions)
    rng = np.random.default_rng([seed, 2])
    catalog = {
        "version": f"demo-{seed}" if example == "retail" else f"{example}-{seed}",
        "actions": [a.catalog_entry() for a in truth.actions],
        "context_weights": truth.context_weights,
    }
    (data_dir / "catalog.json").write_text(json.dumps(catalog, indent=1))
    load_catalog(data_dir / "catalog.json", config)  # validates
    (demo / "world.json").write_text(json.dumps(truth.to_json(), indent=1))
    steps.update()

    customer_key = _join_key(config, config.customer_entity)
    action_key = _join_key(config, config.action_entity)
    customer_frames, action_frames = [], []
    for k, ts in enumerate(truth.snapshot_times()):
        customer_frames.append(_snapshot(
            customer_key, truth.customer_ids, ts, truth.observe_customers(rng, k)))
        action_frames.append(_snapshot(action_key, truth.action_ids, ts,
                                       truth.observe_actions(rng)))
    pd.concat(customer_frames, ignore_index=True).to_parquet(
        source_path(data_dir, config.customer_entity or "customer"))
    steps.update()
    pd.concat(action_frames, ignore_index=True).to_parquet(source_path(data_dir, config.action_entity))
    steps.update()

    interactions = simulate_logging_policy(truth, rng, n_interactions, customer_key, action_key)
    steps.update()
    interactions.to_parquet(interactions_path(data_dir))
    steps.update()
    steps.close()


def _join_key(world: World, entity: str | None) -> str:
    if entity is None:
        raise ValueError(f"the {world.world} world has no customer entity: no demo data for it")
    return world.join_key(entity)


def _snapshot(join_key: str, ids: list[str], ts: datetime, features: dict) -> pd.DataFrame:
    frame = pd.DataFrame({join_key: ids, "event_timestamp": ts,
                          "created": ts + timedelta(minutes=5)})
    for name, values in features.items():
        frame[name] = values
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["created"] = pd.to_datetime(frame["created"], utc=True)
    return frame


def simulate_logging_policy(
    truth: Truth, rng: np.random.Generator, n: int,
    customer_key: str = "customer_id", action_key: str = "action_id",
) -> pd.DataFrame:
    """n logged decisions: one uniformly random eligible action each, outcome from the truth."""
    customers = rng.choice(len(truth.customer_ids), size=n,
                           p=truth.activity / truth.activity.sum())
    end = truth.now - timedelta(hours=1)
    seconds = rng.uniform(0, INTERACTION_DAYS * 86400, size=n)
    times = np.array(end.timestamp() - seconds)
    order = np.argsort(times)
    customers, times = customers[order], times[order]
    requests = truth.draw_requests(rng, customers)
    channel_names, placements = requests.channels, requests.placements
    actions = np.empty(n, dtype=np.int64)
    propensity = np.empty(n, dtype=np.float64)
    for (channel, placement), rows in _group(channel_names, placements).items():
        eligible = truth.eligible(channel, placement)
        actions[rows] = eligible[rng.integers(len(eligible), size=len(rows))]
        propensity[rows] = 1.0 / len(eligible)

    true_stage = truth.stage_at(customers, times)
    p = truth.response_probability(customers, actions, requests, np.arange(n), true_stage)
    label = (rng.random(n) < p).astype(np.int64)
    stage_known = np.asarray(truth.stage_aware(channel_names), dtype=bool)
    stage_sent = np.asarray(
        np.where(stage_known, np.array(truth.stage_names, dtype=object)[true_stage], None), dtype=object)
    ids = np.array(truth.action_ids, dtype=object)
    return pd.DataFrame({
        "event_timestamp": pd.to_datetime(times, unit="s", utc=True).as_unit("us"),
        "decision_id": [f"d{truth.seed:03d}-{i:07d}" for i in range(n)],
        customer_key: np.array(truth.customer_ids, dtype=object)[customers],
        action_key: ids[actions],
        "channel": channel_names,
        "placement": placements,
        **truth.log_columns(requests, stage_sent),
        "propensity": propensity,
        "label": label,
        "reward": label * truth.action_value[actions],
    })


def _group(channels: np.ndarray, placements: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    keys = pd.Series(list(zip(channels, placements, strict=True)))
    return {k: np.asarray(v) for k, v in keys.groupby(keys).groups.items()}
