"""The world configuration: one YAML file declares a deployment's world.

Channels, placements and where each may appear, the request context (typed, bounded),
the vocabularies, the Feast entities and feature views, defaults for unknown customers
and actions, the encoding of every feature into the model's columns, and the online
learner's indicators. pydantic validates the file (`load_world`), each error naming the
file and the key; cross-references (a placement on an undeclared channel, a one-hot over
an undeclared vocabulary, an encoding of an undeclared feature) are checked after the
fields, so a file that loads is consistent.

The bottom of the project: imports nothing else of it. The shipped worlds live in
`features/worlds/`: `retail.yaml`, the demo's world (pinned by
tests/features/test_config.py to the constants the code had before this configuration
existed, and by a golden encoding), and `telco.yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

WORLDS_DIR = Path(__file__).resolve().parent / "worlds"

FeatureType = Literal["string", "float", "int"]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Value = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the request context ------------------------------------------------------------------
class CategoryField(Strict):
    """One value out of a vocabulary (`values`, or a declared vocabulary by name)."""

    type: Literal["category"]
    vocabulary: Name
    default: Value | None = None
    overrides: Name | None = Field(
        None, description="a customer feature this field replaces for the request, when given")
    description: str = ""


class NumberField(Strict):
    type: Literal["number"]
    min: float
    max: float
    default: float = 0.0
    description: str = ""

    @model_validator(mode="after")
    def _bounded(self) -> NumberField:
        if not self.min <= self.default <= self.max:
            raise ValueError(f"default {self.default} is outside [{self.min}, {self.max}]")
        return self


class IdField(Strict):
    """An identifier (a store, an agent): not encoded, kept for rules and the log."""

    type: Literal["id"]
    description: str = ""


class IdListField(Strict):
    """A bounded list of action ids (a basket)."""

    type: Literal["id_list"]
    max_items: int = Field(gt=0, le=1000)
    description: str = ""


ContextField = Annotated[CategoryField | NumberField | IdField | IdListField,
                         Field(discriminator="type")]


# --- Feast --------------------------------------------------------------------------------
class Entity(Strict):
    join_key: Name


class FeatureView(Strict):
    entity: Name
    features: dict[Name, FeatureType] = Field(min_length=1)


# --- encodings into the model's columns ---------------------------------------------------
class Numeric(Strict):
    """A number, optionally clipped then transformed: column `<column or feature>`."""

    encode: Literal["numeric"]
    feature: Name
    clip_min: float | None = None
    clip_max: float | None = None
    transform: Literal["none", "log1p"] = "none"
    column: Name | None = None

    def columns(self, world: World) -> list[str]:
        return [self.column or (f"log_{self.feature}" if self.transform == "log1p" else self.feature)]


class OneHot(Strict):
    """One column `<feature>=<value>` per value of a vocabulary.

    `unknown: other` adds the column `<feature>=other` that unknown values set;
    `unknown: zeros` leaves every column 0 for them.
    """

    encode: Literal["one_hot"]
    feature: Name
    vocabulary: Name
    unknown: Literal["zeros", "other"]

    def columns(self, world: World) -> list[str]:
        values = [*world.vocabulary(self.vocabulary), *(["other"] if self.unknown == "other" else [])]
        return [f"{self.feature}={v}" for v in values]


class Count(Strict):
    """The length of a list (the basket), clipped at `clip_max`."""

    encode: Literal["count"]
    feature: Name
    clip_max: int = Field(gt=0)
    column: Name

    def columns(self, world: World) -> list[str]:
        return [self.column]


Encoding = Annotated[Numeric | OneHot | Count, Field(discriminator="encode")]


class Affinity(Strict):
    """The customer's affinity for the action's (or the context's) value of `of`.

    The customer carries one feature `<prefix><value>` per value of `of`'s vocabulary;
    `log: true` takes the log (floored at `floor`): preferences act on the odds.
    """

    cross: Literal["affinity"]
    column: Name
    prefix: Name
    of: Literal["action", "context"]
    feature: Name
    log: bool = False
    floor: float = Field(1e-3, gt=0)


class BasketShare(Strict):
    """The share of the `basket`'s items whose `feature` (an action feature) equals the action's."""

    cross: Literal["basket_share"]
    column: Name
    basket: Name
    feature: Name


class InBasket(Strict):
    """1 when the action itself is in the `basket`."""

    cross: Literal["in_basket"]
    column: Name
    basket: Name


class BasketHas(Strict):
    """One column `<column>=<value>` per value: the `basket` holds an item with that `feature`."""

    cross: Literal["basket_has"]
    column: Name
    basket: Name
    feature: Name


Cross = Annotated[Affinity | BasketShare | InBasket | BasketHas, Field(discriminator="cross")]


class Model(Strict):
    """The model's inputs, block by block, in column order."""

    feature_service: Name
    customer: list[Encoding]
    context: list[Encoding]
    action: list[Encoding]
    crosses: list[Cross]

    def one_hot(self, block: Literal["customer", "context", "action"], feature: str) -> OneHot | None:
        """The one-hot encoding of `feature` in `block`, if the block one-hot encodes it."""
        return next((e for e in getattr(self, block) if isinstance(e, OneHot) and e.feature == feature),
                    None)


class Learner(Strict):
    """The online learner's indicators: the action, and the action crossed with these."""

    crosses: list[Name]
    group_by: Name | None = Field(None, description="an action feature whose values share a weight")
    exposure_cap: int = Field(5, ge=0, le=64)


class World(Strict):
    world: Name
    project: Name = Field(description="the Feast project")
    vocabularies: dict[Name, list[Value]]
    channels: list[Value] = Field(min_length=1)
    placements: dict[Value, list[Value]] = Field(
        min_length=1, description="placement -> the channels it may appear on")
    context: dict[Name, ContextField]
    entities: dict[Name, Entity]
    customer_entity: Name | None = Field(None, description="None: a world without customers")
    action_entity: Name
    feature_views: dict[Name, FeatureView]
    defaults: dict[Name, dict[Name, str | float]]
    model: Model
    learner: Learner

    # -- derived, in declaration order ---------------------------------------------------
    def views_of(self, entity: str | None) -> dict[str, list[tuple[str, FeatureType]]]:
        """feature view -> [(feature, type)] for the views of `entity` (none: {})."""
        return {name: list(view.features.items()) for name, view in self.feature_views.items()
                if entity is not None and view.entity == entity}

    def join_key(self, entity: str) -> str:
        return self.entities[entity].join_key

    def features_of(self, entity: str | None) -> dict[str, FeatureType]:
        return {f: t for v in self.feature_views.values() if v.entity == entity
                for f, t in v.features.items()}

    def vocabulary(self, name: str) -> list[str]:
        """A declared vocabulary; `channels` and `placements` are vocabularies too."""
        if name == "channels":
            return list(self.channels)
        if name == "placements":
            return list(self.placements)
        return self.vocabularies[name]

    def _cross_columns(self, cross: Cross) -> list[str]:
        if isinstance(cross, BasketHas):
            action_feature_vocab = self.action_vocabulary(cross.feature)
            return [f"{cross.column}={v}" for v in self.vocabulary(action_feature_vocab)]
        return [cross.column]

    def action_vocabulary(self, feature: str) -> str:
        encoding = self.model.one_hot("action", feature)
        if encoding is None:
            raise ValueError(f"no one_hot encoding of action feature {feature!r} names its vocabulary")
        return encoding.vocabulary

    def model_columns(self) -> list[str]:
        """The model's input columns, in order (what a manifest records)."""
        m = self.model
        blocks = (m.customer, m.context, m.action)
        columns = [c for block in blocks for e in block for c in e.columns(self)]
        columns += [c for cross in m.crosses for c in self._cross_columns(cross)]
        return columns

    # -- cross-references ----------------------------------------------------------------
    @model_validator(mode="after")
    def _consistent(self) -> World:
        problems: list[str] = []
        for name in ("channels", "placements"):
            if name in self.vocabularies:
                problems.append(f"vocabularies.{name}: declared at the top level, not here")
        for placement, channels in self.placements.items():
            for channel in channels:
                if channel not in self.channels:
                    problems.append(f"placements.{placement}: channel {channel!r} is not in channels")
        for key, field in self.context.items():
            if isinstance(field, CategoryField) and field.overrides is not None:
                if field.overrides not in self._customer_features():
                    problems.append(f"context.{key}.overrides: {field.overrides!r} is not a customer feature")
            if isinstance(field, CategoryField):
                problems += self._vocabulary_problems(f"context.{key}.vocabulary", field.vocabulary)
                if (field.default is not None and field.vocabulary in self._vocabulary_names()
                        and field.default not in self.vocabulary(field.vocabulary)):
                    problems.append(f"context.{key}.default: {field.default!r} is not in "
                                    f"vocabulary {field.vocabulary!r}")
        for name, view in self.feature_views.items():
            if view.entity not in self.entities:
                problems.append(f"feature_views.{name}.entity: {view.entity!r} is not in entities")
        for key, entity in (("customer_entity", self.customer_entity),
                            ("action_entity", self.action_entity)):
            if entity is not None and entity not in self.entities:
                problems.append(f"{key}: {entity!r} is not in entities")
        problems += self._encoding_problems()
        for entity, values in self.defaults.items():
            declared = self.features_of(entity)
            if entity not in self.entities:
                problems.append(f"defaults.{entity}: not an entity")
            for feature in values:
                if feature not in declared:
                    problems.append(f"defaults.{entity}.{feature}: no feature view of {entity!r} has it")
        crossable = {"channel", "placement", *self.context, *self._customer_features()}
        for i, name in enumerate(self.learner.crosses):
            if name not in crossable:
                problems.append(f"learner.crosses.{i}: {name!r} is neither channel, placement, "
                                f"a context field nor a customer feature")
        if self.learner.group_by is not None and self.learner.group_by not in self.features_of(self.action_entity):
            problems.append(f"learner.group_by: {self.learner.group_by!r} is not an action feature")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _vocabulary_names(self) -> set[str]:
        return {*self.vocabularies, "channels", "placements"}

    def _vocabulary_problems(self, key: str, name: str) -> list[str]:
        if name in self._vocabulary_names():
            return []
        return [f"{key}: {name!r} is not a declared vocabulary "
                f"(declared: {', '.join(sorted(self._vocabulary_names()))})"]

    def _customer_features(self) -> set[str]:
        return set(self.features_of(self.customer_entity)) if self.customer_entity else set()

    def _encoding_problems(self) -> list[str]:
        problems: list[str] = []
        sources = {
            "customer": self._customer_features(),
            "context": {*self.context, "channel", "placement"},
            "action": set(self.features_of(self.action_entity)),
        }
        for block, known in sources.items():
            for i, encoding in enumerate(getattr(self.model, block)):
                key = f"model.{block}.{i}"
                if encoding.feature not in known:
                    problems.append(f"{key}.feature: {encoding.feature!r} is not a {block} feature")
                if isinstance(encoding, OneHot):
                    problems += self._vocabulary_problems(f"{key}.vocabulary", encoding.vocabulary)
        action_features = sources["action"]
        for i, cross in enumerate(self.model.crosses):
            basket = getattr(cross, "basket", None)
            if basket is not None and not isinstance(self.context.get(basket), IdListField):
                problems.append(f"model.crosses.{i}.basket: {basket!r} is not an id_list context field")
            feature = getattr(cross, "feature", None)
            if feature is not None and isinstance(cross, Affinity) and cross.of == "context":
                if feature not in self.context and feature not in ("channel", "placement"):
                    problems.append(f"model.crosses.{i}.feature: {feature!r} is not a context field")
            elif feature is not None and feature not in action_features:
                problems.append(f"model.crosses.{i}.feature: {feature!r} is not an action feature")
        return problems


class WorldConfigError(ValueError):
    """A world file that does not load; the message names the file and every bad key."""


def load_world(path: Path) -> World:
    """Read and validate a world file: errors name the file, the key and what is wrong."""
    try:
        document: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise WorldConfigError(f"{path}: no such world configuration file") from exc
    except yaml.YAMLError as exc:
        raise WorldConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise WorldConfigError(f"{path}: expected a mapping of keys at the top, got {type(document).__name__}")
    try:
        return World.model_validate(document)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False):
            key = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {key}: {message}" if key != "(top level)" else f"{path}: {message}")
        raise WorldConfigError("\n".join(lines)) from None


def shipped_world(name: str) -> World:
    """One of the worlds that ship in `features/worlds/` (`retail`, the demo's)."""
    return load_world(WORLDS_DIR / f"{name}.yaml")


#: Under the data dir: the Feast sources (one Parquet file per entity with feature views)
#: and the logged interactions the model is trained on. `nextbest load` writes them from a
#: user's own files; the demo generators write them for the shipped worlds.
SOURCES_DIR = "sources"
INTERACTIONS_FILE = "interactions.parquet"


def source_path(data_dir: Path, entity: str) -> Path:
    """Where the rows of `entity`'s feature views live: `<data_dir>/sources/<entity>s.parquet`
    (absolute: Feast resolves relative paths against its repository, not the caller)."""
    return Path(data_dir).resolve() / SOURCES_DIR / f"{entity}s.parquet"


def interactions_path(data_dir: Path) -> Path:
    """The logged interactions training reads: `<data_dir>/sources/interactions.parquet`."""
    return Path(data_dir) / SOURCES_DIR / INTERACTIONS_FILE


#: The world served when no configuration file is named (NEXTBEST_CONFIG unset).
DEFAULT_WORLD = "retail"


def configured_world(path: Path | None) -> World:
    """The world of `path` (NEXTBEST_CONFIG), or the default shipped world when None."""
    return load_world(path) if path is not None else shipped_world(DEFAULT_WORLD)
