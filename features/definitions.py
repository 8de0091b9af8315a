"""The Feast feature repository: entities, sources, feature views, the feature service.

Feast's idiom (Entity -> FileSource -> FeatureView -> FeatureService). Everything is built
from `features/schema.py`, so the names written to the online store are the names the
service reads and the model's manifest names the same FeatureService.

Two ways in:
- `feast -c features apply` (CLI users): Feast imports this module and collects the
  module-level objects below; the parquet sources live under `$NEXTBEST_DATA_DIR`
  (default `var`, resolved against the current directory at import time);
- `features/store.py` calls `build(data_dir)` and applies the objects itself, so tests and
  the `nextbest` CLI never depend on environment variables.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

# `feast apply` imports this file as a top-level module from inside features/; make the
# project importable when it is not installed (a checkout used with the feast CLI).
if __package__ != "features":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from features.feast_sdk import import_feast  # noqa: E402

import_feast()  # before `from feast import ...`: keeps prometheus_client out of multiprocess mode

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType  # noqa: E402
from feast.feast_object import FeastObject  # noqa: E402
from feast.types import Float32, Int64, PrimitiveFeastType, String  # noqa: E402

from features.schema import (  # noqa: E402
    ACTION_ENTITY,
    ACTION_JOIN_KEY,
    ACTION_VIEWS,
    CUSTOMER_ENTITY,
    CUSTOMER_JOIN_KEY,
    CUSTOMER_VIEWS,
    FEATURE_SERVICE,
    FeatureType,
)

_DTYPES: dict[FeatureType, PrimitiveFeastType] = {
    "string": String, "float": Float32, "int": Int64,
}
#: How far back a point-in-time join looks for a feature row. The demo keeps weekly
#: snapshots, so any decision finds one; a much older row would be misleading.
FEATURE_TTL = timedelta(days=90)


@dataclass(frozen=True)
class Definitions:
    """Every Feast object of the repository, in apply order."""

    entities: list[Entity]
    sources: list[FileSource]
    views: dict[str, FeatureView]
    service: FeatureService

    def objects(self) -> list[FeastObject]:
        return [*self.entities, *self.sources, *self.views.values(), self.service]


def data_dir_from_env() -> Path:
    """`$NEXTBEST_DATA_DIR` (default `var`), absolute: Feast resolves paths elsewhere."""
    return Path(os.environ.get("NEXTBEST_DATA_DIR", "var")).resolve()


def build(data_dir: Path) -> Definitions:
    """The repository's objects with sources under `<data_dir>/demo/`."""
    demo = Path(data_dir).resolve() / "demo"
    customer = Entity(
        name=CUSTOMER_ENTITY, join_keys=[CUSTOMER_JOIN_KEY], value_type=ValueType.STRING,
        description="A shopper, known across every channel by one id.",
    )
    action = Entity(
        name=ACTION_ENTITY, join_keys=[ACTION_JOIN_KEY], value_type=ValueType.STRING,
        description="A catalog action: product recommendation, offer or service action.",
    )
    customer_source = FileSource(
        name="customer_snapshots", path=str(demo / "customers.parquet"),
        timestamp_field="event_timestamp", created_timestamp_column="created",
    )
    action_source = FileSource(
        name="action_snapshots", path=str(demo / "actions.parquet"),
        timestamp_field="event_timestamp", created_timestamp_column="created",
    )
    views: dict[str, FeatureView] = {}
    for specs, entity, source in (
        (CUSTOMER_VIEWS, customer, customer_source),
        (ACTION_VIEWS, action, action_source),
    ):
        for name, features in specs.items():
            views[name] = FeatureView(
                name=name, entities=[entity], ttl=FEATURE_TTL, online=True, source=source,
                schema=[Field(name=f, dtype=_DTYPES[t]) for f, t in features],
            )
    service = FeatureService(
        name=FEATURE_SERVICE, features=list(views.values()),
        description="Everything the nextbest ranker reads: customer and action features.",
    )
    return Definitions([customer, action], [customer_source, action_source], views, service)


# Module-level objects for `feast apply`, which collects them by scanning this module.
_repository = build(data_dir_from_env())
customer, action = _repository.entities
customer_snapshots, action_snapshots = _repository.sources
customer_profile = _repository.views["customer_profile"]
customer_affinity = _repository.views["customer_affinity"]
action_attributes = _repository.views["action_attributes"]
nextbest_ranker_v1 = _repository.service
assert set(_repository.views) == set(CUSTOMER_VIEWS) | set(ACTION_VIEWS), "name new views here"
