"""Worlds for the Feast tests and small generated feature data for any world.

Besides the shipped worlds (`features/worlds/*.yaml`), two written here from retail's
declarations: `retail_plus` (one more customer feature, another Feast project) and
`context_only` (no customer entity: action features and the request context only).
`write_sources` writes a few entities' rows, two snapshots each, where
`features/definitions.py` points the world's sources, so `feast apply` + materialize
work on any world without the demo generator (which writes retail's data only).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.config import WORLDS_DIR, World, load_world

SHIPPED = sorted(WORLDS_DIR.glob("*.yaml"))


def _retail() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((WORLDS_DIR / "retail.yaml").read_text())
    return document


def retail_plus() -> dict[str, Any]:
    """Retail with one more (int) customer feature, in a Feast project of its own."""
    world = _retail()
    world["world"], world["project"] = "retail_plus", "nextbest_plus"
    world["feature_views"]["customer_profile"]["features"]["loyalty_points"] = "int"
    world["model"]["feature_service"] = "retail_plus_ranker"
    return world


def context_only() -> dict[str, Any]:
    """Retail without customers and without a basket: no customer entity, views,
    encodings or crosses of them, no basket field, count or crosses."""
    world = _retail()
    world["world"], world["project"] = "context_only", "nextbest_context"
    del world["entities"]["customer"], world["customer_entity"], world["defaults"]["customer"]
    for view in ("customer_profile", "customer_affinity"):
        del world["feature_views"][view]
    del world["context"]["journey_stage"]["overrides"]
    world["model"]["customer"] = []
    world["model"]["crosses"] = [c for c in world["model"]["crosses"]
                                 if c["cross"] != "affinity" and "basket" not in c]
    del world["context"]["basket"]
    world["model"]["context"] = [e for e in world["model"]["context"] if e["feature"] != "basket"]
    return world


WRITTEN = {"retail_plus": retail_plus, "context_only": context_only}


def write_world(directory: Path, name: str) -> Path:
    """One of WRITTEN as a YAML file in `directory` (what NEXTBEST_CONFIG would name)."""
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(WRITTEN[name](), sort_keys=False))
    return path


def world_named(directory: Path, name: str) -> World:
    """A shipped world by file stem, or one of WRITTEN, loaded the way the service loads it."""
    shipped = WORLDS_DIR / f"{name}.yaml"
    return load_world(shipped if shipped.is_file() else write_world(directory, name))


def entity_ids(entity: str, n: int) -> list[str]:
    return [f"{entity[:1]}{i:04d}" for i in range(n)]


def write_sources(world: World, data_dir: Path, n: int = 5, seed: int = 0) -> dict[str, pd.DataFrame]:
    """`n` entities of each entity with views, an old and a recent row each, as Parquet.

    Returns entity -> its frame; the recent rows are the ones materialization must serve.
    """
    from features.config import source_path

    rng = np.random.default_rng(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    frames: dict[str, pd.DataFrame] = {}
    for entity in world.entities:
        features = world.features_of(entity)
        if not features:
            continue
        ids = entity_ids(entity, n)
        rows = []
        for age in (timedelta(days=3), timedelta(hours=1)):
            for entity_id in ids:
                row: dict[str, Any] = {world.join_key(entity): entity_id,
                                       "event_timestamp": now - age, "created": now - age}
                for feature, kind in features.items():
                    if kind == "string":
                        row[feature] = f"{feature}-{rng.integers(1000)}"
                    elif kind == "int":
                        row[feature] = int(rng.integers(-1000, 1000))
                    else:
                        row[feature] = float(rng.normal())
                rows.append(row)
        frame = pd.DataFrame(rows)
        path = source_path(data_dir, entity)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
        frames[entity] = frame
    return frames
