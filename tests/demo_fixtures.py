"""Session-wide example worlds: small generated data, a real Feast repo, a trained ONNX model.

Imported by tests/conftest.py; built once per test session because Feast and training
take seconds. `demo` is the retail world (the default demo), `telco_demo` the telco one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

DEMO_CUSTOMERS = 400
DEMO_INTERACTIONS = 8000


@dataclass(frozen=True)
class DemoDirs:
    data_dir: Path
    models_dir: Path
    #: the example world the data was generated for (features/worlds/<world>.yaml)
    world: str = "retail"

    @property
    def config(self) -> Path | None:
        """What NEXTBEST_CONFIG names for this world (retail: unset, the default)."""
        from features.config import WORLDS_DIR

        return None if self.world == "retail" else WORLDS_DIR / f"{self.world}.yaml"


def build_demo(root: Path, example: str = "retail") -> DemoDirs:
    """Generate, `feast apply` + materialize (SQLite) and train, for one example world."""
    from features.config import shipped_world
    from features.store import apply_and_materialize
    from training.demo_data import generate
    from training.train import train

    data_dir, models_dir = root / "var", root / "models"
    generate(data_dir, seed=7, n_customers=DEMO_CUSTOMERS, n_interactions=DEMO_INTERACTIONS,
             progress=False, example=example)
    world = shipped_world(example)
    apply_and_materialize(world, data_dir, None)
    train(data_dir, models_dir, progress=False, world=world)
    return DemoDirs(data_dir, models_dir, example)


def materialize_into(dirs: DemoDirs, url: str) -> str:
    from features.config import shipped_world
    from features.store import apply_and_materialize

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    apply_and_materialize(shipped_world(dirs.world), dirs.data_dir, url)
    return url


def clear_service_state(url: str) -> None:
    """Delete the service's own keys, keeping the materialized features."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match="nb:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@contextmanager
def serve_in_thread(app: Any, port: int) -> Iterator[str]:
    """Serve `app` with a real uvicorn on 127.0.0.1:`port` in a thread; yields its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, loop="asyncio",
                                           lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
