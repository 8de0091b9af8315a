"""The action catalog: what can be proposed, where, and what it is worth.

Business configuration, not features: which channels and placements an action may be
shown in, the value of an acceptance, and a business lever. Action *features* (price,
margin, popularity, ...) come from the Feast online store.

File format (JSON), written by the demo generator and by operators:

    {"version": "demo-1",
     "actions": [{"action_id": "p001", "name": "...", "kind": "product",
                  "category": "electronics", "value": 12.5, "channels": ["web", "app"],
                  "placements": ["home", "product"], "lever": 1.0, "active": true}],
     "context_weights": {"pos": {"offer": 1.3}}}

An empty `channels` or `placements` list means "anywhere". `context_weights` maps
channel -> action kind -> weight (default 1.0) for arbitration. The vocabularies are the
world's (`features/config.py`): an action's `channels` and `placements` must be declared
ones, and its `kind` and `category` values of the vocabulary the world's model one-hot
encodes that action feature with. A value outside would silently encode as "no
category", so the catalog is refused with an error naming the action and the field,
unless that encoding maps unknowns to `other` (`unknown: other`): then the value is
accepted and encodes as other. A `kind` or `category` left out is the world's default
for actions.

Business rules (docs/rules.md): an action's optional `rules` (eligibility,
`service/rules.py`), `contact` and `budget` (`service/limits.py`) and
`exclusion_group`, and the document's `diversity`, are checked against the world and
compiled when a `Catalog` is built, so a catalog built at run time from a new document
brings its own compiled rules.

Rows across versions (`Catalog(spec, world, previous)`): a serving replica keeps state
per catalog row (the online learner's weights, the contact ledger), so a catalog that
replaces another keeps every row of `previous` where it was and appends the actions it
adds. A row whose action the new document deleted or deactivated stays, retired: it is
never a candidate, it is not in `index`, and its learned state waits there should the
action come back. Built without `previous` (start-up, tools), the rows are the
document's active actions in its order.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.config import World
from service.exploration import Constraints
from service.limits import Budget, ContactPolicy, Limits
from service.rules import ActionRules, Rules


class Action(BaseModel):
    action_id: str = Field(min_length=1, max_length=64)
    name: str = ""
    kind: str = Field(default="", description="default: the world's default action kind")
    category: str = Field(default="", description="default: the world's default action category")
    value: float = Field(default=1.0, ge=0.0, description="Value of one acceptance.")
    channels: list[str] = Field(default_factory=list)
    placements: list[str] = Field(default_factory=list)
    lever: float = Field(default=1.0, ge=0.0, description="Business lever in arbitration.")
    active: bool = True
    rules: ActionRules | None = Field(None, description="who and when (docs/rules.md)")
    contact: ContactPolicy | None = Field(None, description="caps and cooldowns, per customer")
    budget: Budget | None = Field(None, description="a cap over every customer")
    exclusion_group: str | None = Field(
        None, min_length=1, max_length=64, description="at most one action of a group per decision")


class Diversity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_per_category: int = Field(ge=1, description="at most this many shown actions per category")


#: Catalog fields that are action features too (their values are encoded).
ENCODED_FIELDS = ("kind", "category")


def vocabularies(world: World) -> dict[str, list[str]]:
    """Catalog field -> the values the world allows in it (a field absent: any value)."""
    checked: dict[str, list[str]] = {"channels": list(world.channels),
                                     "placements": list(world.placements)}
    for field in ENCODED_FIELDS:
        encoding = world.model.one_hot("action", field)
        if encoding is not None and encoding.unknown == "zeros":
            checked[field] = world.vocabulary(encoding.vocabulary)
    return checked


def vocabulary_problems(action: Action, allowed_values: dict[str, list[str]]) -> list[str]:
    """What in `action` lies outside the world's vocabularies, one message per field."""
    problems = []
    for field, allowed in allowed_values.items():
        value = getattr(action, field)
        unknown = [v for v in (value if isinstance(value, list) else [value]) if v not in allowed]
        if unknown:
            problems.append(
                f"action {action.action_id!r} field {field!r}: "
                f"{', '.join(map(repr, unknown))} is not one of {', '.join(allowed)}"
            )
    return problems


class CatalogFile(BaseModel):
    version: str = "unversioned"
    actions: list[Action]
    context_weights: dict[str, dict[str, float]] = Field(default_factory=dict)
    diversity: Diversity | None = None


class Catalog:
    """The catalog in the vectorised form the decision path uses (row i = action i)."""

    actions: list[Action]
    ids: list[str]

    def __init__(self, spec: CatalogFile, world: World, previous: Catalog | None = None,
                 version: str | None = None) -> None:
        """`version`: the label decisions report (default: the document's `version`)."""
        defaults = world.defaults.get(world.action_entity, {})
        filled = [a.model_copy(update={f: str(defaults.get(f, "")) for f in ENCODED_FIELDS
                                       if not getattr(a, f)}) for a in spec.actions]
        counts = Counter(a.action_id for a in filled)
        duplicates = sorted(a for a, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError("; ".join(f"action {a!r} field 'action_id': appears more than once"
                                       for a in duplicates[:10]))
        allowed = vocabularies(world)
        problems = [p for a in filled for p in vocabulary_problems(a, allowed)]
        if problems:
            shown = "; ".join(problems[:10])
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise ValueError(f"{shown}{more}")
        live = {a.action_id: a for a in filled if a.active}
        if previous is None:
            actions = list(live.values())
        else:  # previous rows stay where they are (retired if gone), new actions appended
            actions = [live.get(a.action_id) or _retired(a) for a in previous.actions]
            kept = set(previous.ids)
            actions += [a for a in live.values() if a.action_id not in kept]
        ids = [a.action_id for a in actions]
        self.version = spec.version if version is None else version
        self.spec = spec
        self.actions = actions
        self.ids = ids
        #: action id -> row, for the actions that may be offered (retired rows are not here)
        self.index = {a.action_id: i for i, a in enumerate(actions) if a.active}
        #: per row: the action may be offered (False: retired)
        self.live = np.array([a.active for a in actions], dtype=bool)
        self.value = np.array([a.value for a in actions], dtype=np.float64)
        self.lever = np.array([a.lever for a in actions], dtype=np.float64)
        self.kind = [a.kind for a in actions]
        self.category = [a.category for a in actions]
        self._by_channel: dict[str, np.ndarray] = {}
        self._by_slot: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        for ch in world.channels:
            weights = spec.context_weights.get(ch, {})
            self._by_channel[ch] = np.array(
                [weights.get(k, 1.0) for k in self.kind], dtype=np.float64
            )
        self.rules = Rules(ids, self.category, [a.rules for a in actions], world)
        self.limits = Limits(ids, [a.contact for a in actions], [a.budget for a in actions])
        groups = sorted({a.exclusion_group for a in actions if a.exclusion_group})
        categories = sorted(set(self.category))
        max_per_category = spec.diversity.max_per_category if spec.diversity else 0
        #: per action: exclusion group and category codes for arbitration (None: no constraint)
        self.constraints: Constraints | None = None
        if groups or max_per_category:
            self.group_names, self.category_names = groups, categories
            self.constraints = Constraints(
                np.array([groups.index(a.exclusion_group) if a.exclusion_group else -1
                          for a in actions], dtype=np.int64),
                np.array([categories.index(c) for c in self.category], dtype=np.int64),
                max_per_category,
            )

    def groups(self, feature: str) -> list[str | None]:
        """Each action's value of `feature`, where the catalog carries it (kind, category)."""
        if feature not in ENCODED_FIELDS:
            raise ValueError(f"learner.group_by: {feature!r} is not a catalog field "
                             f"(the catalog carries {', '.join(ENCODED_FIELDS)})")
        return [getattr(a, feature) for a in self.actions]

    def __len__(self) -> int:
        return len(self.ids)

    def context_weight(self, channel: str) -> np.ndarray:
        """Per-action context weight for this channel (vector over the catalog)."""
        return self._by_channel[channel]

    def constraints_of(self, rows: np.ndarray) -> Constraints | None:
        """The arbitration constraints over these candidate rows (None: none)."""
        c = self.constraints
        if c is None:
            return None
        return Constraints(c.group[rows], c.category[rows], c.max_per_category)

    def candidates(self, channel: str, placement: str) -> np.ndarray:
        """Rows of the actions allowed in this channel and placement."""
        return self._slot(channel, placement)[0]

    def allowed(self, channel: str, placement: str) -> np.ndarray:
        """Boolean mask over the catalog: allowed in this channel and placement."""
        return self._slot(channel, placement)[1]

    def _slot(self, channel: str, placement: str) -> tuple[np.ndarray, np.ndarray]:
        key = (channel, placement)
        slot = self._by_slot.get(key)
        if slot is None:
            mask = np.array(
                [
                    a.active
                    and (not a.channels or channel in a.channels)
                    and (not a.placements or placement in a.placements)
                    for a in self.actions
                ],
                dtype=bool,
            )
            slot = (np.flatnonzero(mask), mask)
            if len(self._by_slot) < 1024:  # placements are free-form: bound the cache
                self._by_slot[key] = slot
        return slot


def _retired(action: Action) -> Action:
    """A row whose action left the catalog: never offered, no rules, caps or budget."""
    return action.model_copy(update={"active": False, "rules": None, "contact": None,
                                     "budget": None, "exclusion_group": None})


def parse_catalog(document: bytes | str) -> CatalogFile:
    """A catalog document, validated; errors name the action (by id) and the field."""
    try:
        return CatalogFile.model_validate_json(document)
    except ValidationError as exc:
        raw: Any = None
        with contextlib.suppress(ValueError):
            raw = json.loads(document)
        problems = []
        for error in exc.errors(include_url=False):
            loc = list(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if len(loc) >= 2 and loc[0] == "actions" and isinstance(loc[1], int):
                action = _action_id(raw, loc[1])
                field = ".".join(str(part) for part in loc[2:]) or "(the action)"
                problems.append(f"action {action} field {field!r}: {message}")
            else:
                problems.append(f"{'.'.join(str(part) for part in loc) or '(top level)'}: {message}")
        raise ValueError("; ".join(problems)) from None


def _action_id(raw: Any, i: int) -> str:
    try:
        return repr(str(raw["actions"][i]["action_id"]))
    except (KeyError, IndexError, TypeError):
        return f"#{i}"


def load_catalog(path: Path, world: World) -> Catalog:
    """Read and validate a catalog file against `world`'s vocabularies; errors name the file."""
    try:
        return Catalog(parse_catalog(path.read_bytes()), world)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"catalog file {path} does not exist") from exc
    except ValueError as exc:
        raise ValueError(f"catalog file {path} is invalid: {exc}") from exc
