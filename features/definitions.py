"""The Feast feature repository: entities, sources, feature views, the feature service.

Feast's idiom (Entity -> FileSource -> FeatureView -> FeatureService), built from a
world configuration (`features/config.py`): one Entity per declared entity (its join key
a string), one FileSource per entity, one FeatureView per declared feature view (its
features typed `string` -> String, `float` -> Float32, `int` -> Int64) and the
FeatureService the model names (`model.feature_service`) over every view. So the names
written to the online store are the names the service reads (`features/online.py`
takes its layouts from the same world) and the model's manifest names the same
FeatureService. A world without a customer entity simply has no customer views.

Each entity's rows are read from `<data_dir>/sources/<entity>s.parquet` (`source_path`):
the join key, `event_timestamp`, `created` and one column per feature of the entity's
views; the demo generators write them for the shipped worlds, `nextbest load` from a
user's own files.

Two ways in:
- `feast -c features apply` (CLI users): Feast imports this module as `definitions` and
  collects the module-level objects built at the bottom, from the world named by
  `$NEXTBEST_CONFIG` (unset: the shipped retail world) with the sources under
  `$NEXTBEST_DATA_DIR` (default `var`). Feast changes into `features/` before it imports
  this module, so give both as absolute paths. The scan also declares the world's
  Feast `Project`, so Feast refuses a `feature_store.yaml` whose `project` is another;
- `features/store.py` calls `build(world, data_dir)` and applies the objects itself, so
  tests and the `nextbest` CLI never depend on Feast reading environment variables (the
  CLI's world is the one its settings name, NEXTBEST_CONFIG too).
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

from feast import Entity, FeatureService, FeatureView, Field, FileSource, Project, ValueType  # noqa: E402
from feast.feast_object import FeastObject  # noqa: E402
from feast.types import Float32, Int64, PrimitiveFeastType, String  # noqa: E402

from features.config import FeatureType, World, configured_world, source_path  # noqa: E402

#: The Feast type of each feature type a world may declare.
DTYPES: dict[FeatureType, PrimitiveFeastType] = {
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


def world_from_env() -> World:
    """The world `$NEXTBEST_CONFIG` names (unset or empty: the shipped retail world)."""
    path = os.environ.get("NEXTBEST_CONFIG")
    return configured_world(Path(path) if path else None)


def build(world: World, data_dir: Path) -> Definitions:
    """The repository's objects for `world`, with sources under `<data_dir>/sources/`."""
    used = [e for e in world.entities if world.views_of(e)]
    entities = {
        name: Entity(
            name=name, join_keys=[world.join_key(name)], value_type=ValueType.STRING,
            description=_describe(world, name),
        )
        for name in used
    }
    sources = {
        name: FileSource(
            name=f"{name}_snapshots", path=str(source_path(data_dir, name)),
            timestamp_field="event_timestamp", created_timestamp_column="created",
        )
        for name in used
    }
    views = {
        name: FeatureView(
            name=name, entities=[entities[view.entity]], ttl=FEATURE_TTL, online=True,
            source=sources[view.entity],
            schema=[Field(name=f, dtype=DTYPES[t]) for f, t in view.features.items()],
        )
        for name, view in world.feature_views.items()
    }
    service = FeatureService(
        name=world.model.feature_service, features=list(views.values()),
        description=f"Everything the nextbest ranker of the {world.world} world reads.",
    )
    return Definitions(list(entities.values()), list(sources.values()), views, service)


def _describe(world: World, entity: str) -> str:
    if entity == world.customer_entity:
        return f"The customer of the {world.world} world."
    if entity == world.action_entity:
        return f"An action of the {world.world} world's catalog."
    return f"An entity of the {world.world} world."


if __name__ != "features.definitions":
    # Feast's repo scan (`feast apply`) collects module-level objects, by attribute: bind
    # each object of the configured world to a module name of its own.
    _world = world_from_env()
    _repository = build(_world, data_dir_from_env())
    globals().update({f"feast_{type(o).__name__.lower()}_{o.name}": o for o in _repository.objects()})
    feast_project = Project(name=_world.project, description=f"nextbest: the {_world.world} world")
    # Feast refuses a feature_store.yaml of another project without naming either: say ours.
    print(f"nextbest: the {_world.world} world (NEXTBEST_CONFIG="
          f"{os.environ.get('NEXTBEST_CONFIG') or 'unset: the shipped one'}) is Feast project "
          f"{_world.project!r}; feature_store.yaml's `project` must be the same", file=sys.stderr)
