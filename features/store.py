"""The one door to the Feast SDK: repository config, feature store, apply + materialize.

`import feast` loads much of the SDK's dependency tree (what it adds to a process's
start-up shows in `nextbest bench`, docs/benchmarks.md), so it happens inside these
functions only, in tooling (CLI, training, tests) and never on the service's import
path, and always through `features/feast_sdk.py`. The config is built in code rather
than read from `feature_store.yaml` so that a data dir and a Redis URL are all a caller
needs; the YAML files next to this module are the same config for people using the
`feast` CLI.

Every function takes the world (`features/config.py`): its `project` is the Feast
project, and `features/definitions.py` builds the repository's objects from its
declarations.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from features.config import World, source_path
from features.feast_sdk import import_feast
from features.materialized import MaterializationMark, mark_key, spread
from features.online import EntityLayout

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

log = logging.getLogger(__name__)

def redis_connection_string(redis_url: str, cluster: bool = False) -> str:
    """`redis://[:password@]host:port[/db]` -> Feast's `host:port,db=N[,password=...]`.

    Feast splits its connection string on commas and `=`, so a password containing a
    comma cannot be expressed; refuse it rather than connect with the wrong secret.
    `rediss://` becomes `ssl=true`. For a Redis Cluster (`cluster`) the URL names one
    startup node (the client discovers the others) and carries no `db`: a cluster has
    database 0 only, and redis-py's cluster client refuses the argument altogether.
    """
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// or rediss:// URL: {redis_url!r}")
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"redis URL database must be a number, got {db!r}")
    if cluster and db != "0":
        raise ValueError(f"a Redis Cluster has database 0 only, the URL names {db!r}")
    items = [f"{host}:{port}"] if cluster else [f"{host}:{port}", f"db={db}"]
    if parts.username and parts.username != "default" and parts.password is not None:
        items.append(f"username={unquote(parts.username)}")
    if parts.password is not None:
        password = unquote(parts.password)
        if "," in password:
            raise ValueError("Feast's Redis connection string cannot carry a password with ','")
        items.append(f"password={password}")
    if parts.scheme == "rediss":
        items.append("ssl=true")
    return ",".join(items)


def repo_config(
    world: World, data_dir: Path, redis_url: str | None, redis_cluster: bool = False
) -> RepoConfig:
    """The repository config of `world`'s project: SQLite online store without a Redis
    URL, Feast's Redis with one."""
    import_feast()
    from feast import RepoConfig

    feast_dir = Path(data_dir).resolve() / "feast"
    feast_dir.mkdir(parents=True, exist_ok=True)
    online: dict[str, object]
    if redis_url is None:
        online = {"type": "sqlite", "path": str(feast_dir / "online.db")}
    else:
        online = {
            "type": "redis",
            "redis_type": "redis_cluster" if redis_cluster else "redis",
            "connection_string": redis_connection_string(redis_url, redis_cluster),
        }
    return RepoConfig(
        project=world.project,
        provider="local",
        registry=str(feast_dir / "registry.db"),
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=Path(__file__).resolve().parent,
    )


def feature_store(
    world: World, data_dir: Path, redis_url: str | None, redis_cluster: bool = False
) -> FeatureStore:
    """A FeatureStore on the repository.

    Building one reads the registry and sets up the provider: build it once per process.
    """
    import_feast()
    from feast import FeatureStore

    config = repo_config(world, data_dir, redis_url, redis_cluster)
    return FeatureStore(repo_path=str(config.repo_path), config=config)


def apply_and_materialize(
    world: World, data_dir: Path, redis_url: str | None, redis_cluster: bool = False,
    incremental: bool = False,
) -> None:
    """Register `world`'s definitions and load the latest features into the online store.

    A full run materializes everything within the feature TTL up to now; `incremental`
    continues from the last materialization (Feast keeps that per view in the registry).
    The definitions are imported here, not at the top, because they import Feast.
    """
    from features.definitions import FEATURE_TTL, build

    store = feature_store(world, data_dir, redis_url, redis_cluster)
    store.apply(build(world, data_dir).objects())
    end = datetime.now(UTC)
    if incremental:
        store.materialize_incremental(end_date=end)
    else:
        store.materialize(start_date=end - FEATURE_TTL - timedelta(days=1), end_date=end)
    if redis_url is not None:
        mark_materialization(world, data_dir, redis_url, redis_cluster)
    log.info("materialized %s into %s", world.project, "redis" if redis_url else "sqlite")


def mark_materialization(world: World, data_dir: Path, redis_url: str,
                         redis_cluster: bool = False) -> MaterializationMark:
    """Write the mark the service's health check reads (`features/materialized.py`).

    Samples the world's customer entity (its action entity in a world without customers):
    ids spread over its source, each kept only if the online store holds its hash now.
    """
    import pandas as pd
    import redis

    entity = world.customer_entity if world.customer_entity is not None else world.action_entity
    join_key = world.join_key(entity)
    ids = pd.read_parquet(source_path(data_dir, entity), columns=[join_key])[join_key].astype(str)
    unique = ids.unique().tolist()
    layout = EntityLayout.of(world, entity)
    client = (redis.RedisCluster.from_url(redis_url) if redis_cluster
              else redis.Redis.from_url(redis_url))
    try:
        sample = [i for i in spread(unique) if client.exists(layout.redis_key(i))]
        mark = MaterializationMark(at=datetime.now(UTC).timestamp(), entity=entity,
                                   source_entities=len(unique), sample=sample)
        client.hset(mark_key(world.project), mapping=mark.as_hash())  # type: ignore[arg-type]
    finally:
        client.close()
    return mark
