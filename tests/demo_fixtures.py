"""Session-wide demo world: small generated data, a real Feast repo, a trained ONNX model.

Imported by tests/conftest.py; built once per test session because Feast and training
take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis

DEMO_CUSTOMERS = 400
DEMO_INTERACTIONS = 8000


@dataclass(frozen=True)
class DemoDirs:
    data_dir: Path
    models_dir: Path


def build_demo(root: Path) -> DemoDirs:
    from features.store import apply_and_materialize
    from training.demo_data import generate
    from training.train import train

    data_dir, models_dir = root / "var", root / "models"
    generate(data_dir, seed=7, n_customers=DEMO_CUSTOMERS, n_interactions=DEMO_INTERACTIONS,
             progress=False)
    apply_and_materialize(data_dir, None)
    train(data_dir, models_dir, progress=False)
    return DemoDirs(data_dir, models_dir)


def materialize_into(dirs: DemoDirs, url: str) -> str:
    from features.store import apply_and_materialize

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    apply_and_materialize(dirs.data_dir, url)
    return url


def clear_service_state(url: str) -> None:
    """Delete the service's own keys, keeping the materialized features."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match="nb:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
