"""Session-wide example worlds: small generated data, a real Feast repo, a trained ONNX model.

Imported by tests/conftest.py; built once per test session because Feast and training
take seconds. `demo` is the retail world (the default demo), `telco_demo` the telco one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis

from load_tests.processes import free_port

if TYPE_CHECKING:
    from features.config import World

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
    _, manifest = train(data_dir, models_dir, progress=False, world=world)
    dirs = DemoDirs(data_dir, models_dir, example)
    promote(dirs, manifest.version, world=world)
    return dirs


def promote(dirs: DemoDirs, version: str, redis_url: str | None = None,
            world: World | None = None, cluster: bool = False) -> None:
    """Make `version` the champion, in the models directory or in Redis (a Redis Cluster
    with `cluster`), as `nextbest models promote` does, for the dirs' world unless
    another is given."""
    from features.config import shipped_world
    from service.registry import registry_for
    from service.settings import Settings

    settings = Settings(data_dir=dirs.data_dir, models_dir=dirs.models_dir, redis_url=redis_url,
                        redis_cluster=cluster, config=dirs.config)
    with registry_for(settings, world if world is not None else shipped_world(dirs.world)) as registry:
        registry.promote(version)


def materialize_into(dirs: DemoDirs, url: str, cluster: bool = False) -> str:
    """`feast apply` + materialize the dirs' world into the Redis at `url` (emptied
    first; a Redis Cluster keeps the features already there), and promote its model."""
    from features.config import shipped_world
    from features.store import apply_and_materialize

    if cluster:
        clear_cluster(url)  # other worlds' features may live in the cluster's one database
    else:
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    apply_and_materialize(shipped_world(dirs.world), dirs.data_dir, url, redis_cluster=cluster)
    promote(dirs, "1", url, cluster=cluster)
    return url


def redis_client(url: str, cluster: bool = False) -> Any:
    """A redis-py client for `url`: one node, or the whole cluster."""
    return redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)


def clear_service_state(url: str, cluster: bool = False) -> None:
    """Delete the service's own keys, keeping the materialized features and the model
    registry's pointers."""
    client = redis_client(url, cluster)
    try:
        keys = [k for k in client.scan_iter(match="nb:*", count=1000)
                if not k.startswith(b"nb:registry:")]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])  # a cluster client splits it by slot
    finally:
        client.close()


def clear_cluster(url: str) -> None:
    """Delete every key but Feast's feature hashes on every master of the cluster at
    `url` (the cluster has one database: the features materialized there stay)."""
    from features.online import serialize_entity_key

    feast_key = serialize_entity_key("k", "v")[:8]  # one string join key, as every world's
    client = redis.RedisCluster.from_url(url)
    try:
        keys = [k for k in client.scan_iter(count=1000) if not k.startswith(feast_key)]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])  # split by slot by the client
    finally:
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


ROOT = Path(__file__).resolve().parents[1]


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate `proc` (SIGKILL after 15 s) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def serving_replicas(settings: dict[str, str], logs: Path, count: int = 2,
                     timeout: float = 120.0) -> Iterator[list[str]]:
    """`count` real `nextbest serve` processes with the NEXTBEST_* `settings` (nothing of
    this process's own), each logging to `logs/replica<n>.log`; yields their URLs once
    every one answers /readyz, and stops them after."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")},
           **settings, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for n in range(count):
            port = free_port()
            with (logs / f"replica{n}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + timeout
        for n, (proc, url) in enumerate(zip(procs, urls, strict=True)):
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"replica {n} exited: {(logs / f'replica{n}.log').read_text()}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"replica {n} not ready after {timeout:.0f} s")
                time.sleep(0.1)
        yield urls
    finally:
        for proc in procs:
            stop_process(proc)


def registered_copies(demo: DemoDirs, root: Path, count: int = 2) -> DemoDirs:
    """A models directory under `root` holding the demo's trained model as versions
    1..`count` (the same ONNX file, each manifest naming its version), nothing promoted."""
    import json
    import shutil

    from service.manifest import MANIFEST_FILE

    source = demo.models_dir / "nextbest-ranker" / "1"
    for version in range(1, count + 1):
        target = root / "nextbest-ranker" / str(version)
        shutil.copytree(source, target)
        manifest = json.loads((target / MANIFEST_FILE).read_text())
        manifest["version"] = str(version)
        (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    return DemoDirs(demo.data_dir, root)
