"""Eligibility rules per action: declared in the catalog, compiled into masks.

An action's optional `rules` block says to whom and when it may be proposed
(docs/rules.md lists the keys). `Rules(actions, world)` checks every name against the
world (a customer feature, a context field, a vocabulary value; an error names the
action and the field) and compiles the rules once into arrays over the catalog:

- a categorical condition (`segments`, `journey_stages`, `customer.<string feature>.in`,
  `context.<field>.in`) -> for each value some action lists, the catalog-wide mask of the
  actions that allow it (actions without the condition allow every value);
- a numeric condition (`customer.<feature>` or `context.<field>` with `min`/`max`) ->
  lower and upper bounds per action (-inf/+inf without it);
- `valid` (dates, days of week, hours in a time zone) -> per action epoch bounds, a day
  mask and minutes of day; the catalog-wide mask is computed once per minute;
- `basket_has_category` -> an action x category matrix, multiplied by the basket's
  categories;
- `requires` / `excludes_holders_of` -> (action, held action) pairs, gathered over the
  held mask (held = in the basket now, or accepted or purchased within the contact
  ledger's memory).

A decision then costs one numpy operation per condition over the catalog, whatever the
number of actions, and `Rules.mask` returns None when no action has a rule. `reasons`
names, for removed candidates only (with `explain`), the first rule each one failed.
The compiled form lives with its `Catalog`: a catalog swapped at run time compiles anew.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.config import CategoryField, IdListField, NumberField, World

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Source = Literal["customer", "context"]
#: sugar keys of `rules` and the customer feature each one conditions
SUGAR = {"segments": "segment", "journey_stages": "journey_stage"}
#: combined masks of categorical values kept per catalog (ids in a list make many)
MAX_COMBINATIONS = 4096


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Condition(_Strict):
    """A bound (`min`, `max`, inclusive) or a set of allowed values (`in`)."""

    min: float | None = None
    max: float | None = None
    in_: list[str] | None = Field(None, alias="in", min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        bounded = self.min is not None or self.max is not None
        if bounded == (self.in_ is not None):
            raise ValueError("give `min`/`max` or `in`, not both and not neither")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


def _minutes(text: str) -> int:
    hours, _, minutes = text.partition(":")
    value = int(hours) * 60 + int(minutes or 0)
    if not 0 <= value <= 24 * 60:
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    return value


class Window(_Strict):
    """When an action may be proposed: `from` <= now < `until`, on `days`, within `hours`
    ([start, end) local time; an end before the start wraps past midnight)."""

    from_: datetime | None = Field(None, alias="from")
    until: datetime | None = None
    days: list[Day] | None = Field(None, min_length=1)
    hours: tuple[str, str] | None = None
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{zone!r} is not a known time zone") from None
        return zone

    @field_validator("hours")
    @classmethod
    def _times_of_day(cls, hours: tuple[str, str] | None) -> tuple[str, str] | None:
        if hours is not None:
            for h in hours:
                try:
                    _minutes(h)
                except ValueError:
                    raise ValueError(f"{h!r} is not a time of day HH:MM") from None
        return hours

    def epoch(self, moment: datetime | None, default: float) -> float:
        if moment is None:
            return default
        if moment.tzinfo is None:  # a naive date is read in the window's time zone
            moment = moment.replace(tzinfo=ZoneInfo(self.timezone))
        return moment.timestamp()


class ActionRules(_Strict):
    """Who and when (all conditions must hold)."""

    segments: list[str] | None = Field(None, min_length=1)
    journey_stages: list[str] | None = Field(None, min_length=1)
    valid: Window | None = None
    customer: dict[str, Condition] = Field(default_factory=dict)
    context: dict[str, Condition] = Field(default_factory=dict)
    basket_has_category: list[str] | None = Field(None, min_length=1)
    requires: list[str] | None = Field(None, min_length=1)
    excludes_holders_of: list[str] | None = Field(None, min_length=1)


@dataclass(frozen=True)
class _Categorical:
    """A condition on one string value (a customer label or a context field)."""

    reason: str
    source: Literal["customer", "context"]
    field: str
    masks: Mapping[str, np.ndarray]  # value -> actions allowing it
    unmatched: np.ndarray  # actions allowing any value (no condition on this field)

    def mask(self, value: Any) -> np.ndarray:
        return self.masks.get(value, self.unmatched) if isinstance(value, str) else self.unmatched


@dataclass(frozen=True)
class _Numeric:
    reason: str
    source: Literal["customer", "context"]
    field: str
    default: float
    low: np.ndarray
    high: np.ndarray

    def mask(self, value: Any, rows: np.ndarray | None = None) -> np.ndarray:
        """The actions (of `rows`, if given) whose bounds hold `value`."""
        v = self.default if value is None else float(value)
        low, high = (self.low, self.high) if rows is None else (self.low[rows], self.high[rows])
        return (low <= v) & (v <= high)


@dataclass(frozen=True)
class _Windows:
    rows: np.ndarray  # the actions with a `valid` block
    start: np.ndarray  # epoch seconds (-inf: none)
    end: np.ndarray  # epoch seconds (+inf: none)
    zones: tuple[tuple[ZoneInfo, np.ndarray], ...]  # zone -> positions into `rows`
    days: np.ndarray  # (len(rows), 7) bool
    first: np.ndarray  # minute of day the hours start (0: all day)
    last: np.ndarray  # minute of day they end (1440: all day)


@dataclass(frozen=True)
class Decision:
    """What a rule reads about one decision."""

    labels: Mapping[str, str]  # the customer's string features, as the request sees them
    values: Mapping[str, Any]  # the customer's raw features (missing: the world's defaults)
    context: Any  # the request context
    basket_rows: np.ndarray
    held: np.ndarray | None  # catalog-wide: in the basket or accepted before (None: nothing)


class RuleError(ValueError):
    """A rule naming something the world does not have; the message names action and field."""


class Rules:
    """Every action's eligibility rules, compiled over the catalog (row i = action i)."""

    def __init__(self, ids: Sequence[str], categories: Sequence[str],
                 rules: Sequence[ActionRules | None], world: World) -> None:
        self._n = n = len(ids)
        index = {a: i for i, a in enumerate(ids)}
        problems: list[str] = []
        customer_features = world.features_of(world.customer_entity)
        customer_defaults = world.defaults.get(world.customer_entity or "", {})
        categorical: dict[tuple[Source, str], dict[int, set[str]]] = {}
        numeric: dict[tuple[Source, str], dict[int, tuple[float, float]]] = {}

        def vocabulary_of(source: str, name: str) -> list[str] | None:
            if source == "customer":
                encoding = world.model.one_hot("customer", name)
                return world.vocabulary(encoding.vocabulary) if encoding is not None else None
            spec = world.context[name]
            return world.vocabulary(spec.vocabulary) if isinstance(spec, CategoryField) else None

        def condition(row: int, key: str, source: Literal["customer", "context"], name: str,
                      c: Condition) -> None:
            where = f"action {ids[row]!r} field {key!r}"
            if source == "customer":
                kind = customer_features.get(name)
                if kind is None:
                    problems.append(f"{where}: {name!r} is not a customer feature of world "
                                    f"{world.world!r} (its features: {', '.join(customer_features) or 'none'})")
                    return
                is_number = kind != "string"
            else:
                spec = world.context.get(name)
                if spec is None:
                    problems.append(f"{where}: {name!r} is not a context field of world "
                                    f"{world.world!r} (its fields: {', '.join(world.context) or 'none'})")
                    return
                if isinstance(spec, IdListField):
                    problems.append(f"{where}: {name!r} is a list; condition its items with "
                                    "basket_has_category, requires or excludes_holders_of")
                    return
                is_number = isinstance(spec, NumberField)
            if is_number and c.in_ is not None:
                problems.append(f"{where}: {name!r} is a number: give min and/or max, not `in`")
                return
            if not is_number and c.in_ is None:
                problems.append(f"{where}: {name!r} is not a number: give `in`, not min/max")
                return
            if c.in_ is not None:
                allowed = vocabulary_of(source, name)
                unknown = [v for v in c.in_ if allowed is not None and v not in allowed]
                if unknown:
                    problems.append(f"{where}: {', '.join(map(repr, unknown))} is not one of "
                                    f"{', '.join(allowed or [])}")
                    return
                categorical.setdefault((source, name), {})[row] = set(c.in_)
            else:
                low = -np.inf if c.min is None else c.min
                high = np.inf if c.max is None else c.max
                numeric.setdefault((source, name), {})[row] = (low, high)

        window_rows: list[int] = []
        windows: list[Window] = []
        basket: dict[int, list[str]] = {}
        requires: list[tuple[int, int]] = []
        excludes: list[tuple[int, int]] = []
        for row, r in enumerate(rules):
            if r is None:
                continue
            for key, feature in SUGAR.items():
                values = getattr(r, key)
                if values is not None:
                    condition(row, f"rules.{key}", "customer", feature, Condition(**{"in": values}))
            for name, c in r.customer.items():
                condition(row, f"rules.customer.{name}", "customer", name, c)
            for name, c in r.context.items():
                condition(row, f"rules.context.{name}", "context", name, c)
            if r.valid is not None:
                window_rows.append(row)
                windows.append(r.valid)
            if r.basket_has_category is not None:
                basket[row] = r.basket_has_category
            for key, pairs in (("requires", requires), ("excludes_holders_of", excludes)):
                held = getattr(r, key)
                for other in held or ():
                    if other not in index:
                        problems.append(f"action {ids[row]!r} field 'rules.{key}': {other!r} "
                                        "is not an active action of the catalog")
                    else:
                        pairs.append((row, index[other]))
        baskets = [name for name, spec in world.context.items() if isinstance(spec, IdListField)]
        category_vocabulary = sorted(set(categories))
        if basket:
            encoding = world.model.one_hot("action", "category")
            if encoding is not None:
                category_vocabulary = world.vocabulary(encoding.vocabulary)
            for row, wanted in basket.items():
                where = f"action {ids[row]!r} field 'rules.basket_has_category'"
                if len(baskets) != 1:
                    problems.append(f"{where}: world {world.world!r} has {len(baskets)} id_list "
                                    "context fields (a basket), not exactly one")
                unknown = [c for c in wanted if c not in category_vocabulary]
                if unknown:
                    problems.append(f"{where}: {', '.join(map(repr, unknown))} is not one of "
                                    f"{', '.join(category_vocabulary)}")
        if problems:
            shown = "; ".join(problems[:10])
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            raise RuleError(f"{shown}{more}")

        self.basket_field: str | None = baskets[0] if len(baskets) == 1 else None
        self._categorical = tuple(self._compile_categorical(source, name, by_row)
                                  for (source, name), by_row in categorical.items())
        self._numeric = tuple(self._compile_numeric(source, name, by_row, customer_defaults, world)
                              for (source, name), by_row in numeric.items())
        #: categorical values (and the window mask they were combined with) -> combined mask
        self._combined: dict[tuple[Any, ...], np.ndarray] = {}
        self._windows = self._compile_windows(window_rows, windows) if window_rows else None
        self._window_mask: np.ndarray | None = None
        self._window_until = -np.inf
        code = {c: i for i, c in enumerate(category_vocabulary)}
        self._category_code = np.array([code.get(c, -1) for c in categories], dtype=np.int64)
        self._basket_rows = np.array(sorted(basket), dtype=np.int64)
        self._basket_needs = np.zeros((len(basket), len(category_vocabulary)), dtype=np.int64)
        for i, row in enumerate(sorted(basket)):
            self._basket_needs[i, [code[c] for c in basket[row]]] = 1
        self._requires = _pairs(requires, n)
        self._excludes = _pairs(excludes, n)
        self.active = bool(self._categorical or self._numeric or self._windows is not None
                           or basket or requires or excludes)
        #: whether a decision must tell the rules what the customer holds
        self.reads_held = bool(requires or excludes)

    # -- compiling -------------------------------------------------------------------------
    def _compile_categorical(self, source: Literal["customer", "context"], name: str,
                             by_row: Mapping[int, set[str]]) -> _Categorical:
        unmatched = np.ones(self._n, dtype=bool)
        unmatched[list(by_row)] = False
        values = sorted(set().union(*by_row.values()))
        masks = {}
        for v in values:
            mask = unmatched.copy()
            mask[[row for row, allowed in by_row.items() if v in allowed]] = True
            masks[v] = mask
        reason = next((k for k, f in SUGAR.items() if source == "customer" and f == name),
                      f"{source}.{name}")
        return _Categorical(reason, source, name, masks, unmatched)

    def _compile_numeric(self, source: Literal["customer", "context"], name: str,
                         by_row: Mapping[int, tuple[float, float]],
                         customer_defaults: Mapping[str, Any], world: World) -> _Numeric:
        low = np.full(self._n, -np.inf)
        high = np.full(self._n, np.inf)
        for row, (lo, hi) in by_row.items():
            low[row], high[row] = lo, hi
        if source == "customer":
            default = float(customer_defaults.get(name, 0.0))
        else:
            spec = world.context[name]
            default = spec.default if isinstance(spec, NumberField) else 0.0
        return _Numeric(f"{source}.{name}", source, name, default, low, high)

    @staticmethod
    def _compile_windows(rows: list[int], windows: list[Window]) -> _Windows:
        zones: dict[str, list[int]] = {}
        for i, w in enumerate(windows):
            zones.setdefault(w.timezone, []).append(i)
        days = np.ones((len(rows), 7), dtype=bool)
        first = np.zeros(len(rows), dtype=np.int64)
        last = np.full(len(rows), 24 * 60, dtype=np.int64)
        for i, w in enumerate(windows):
            if w.days is not None:
                days[i] = [d in w.days for d in DAYS]
            if w.hours is not None:
                first[i], last[i] = _minutes(w.hours[0]), _minutes(w.hours[1])
        return _Windows(
            rows=np.array(rows, dtype=np.int64),
            start=np.array([w.epoch(w.from_, -np.inf) for w in windows]),
            end=np.array([w.epoch(w.until, np.inf) for w in windows]),
            zones=tuple((ZoneInfo(z), np.array(p, dtype=np.int64)) for z, p in zones.items()),
            days=days, first=first, last=last,
        )

    # -- deciding ---------------------------------------------------------------------------
    def window_mask(self, now: float | None = None) -> np.ndarray | None:
        """Catalog-wide: inside its validity window (None: no action has one).

        Kept until the next whole minute or the next `from`/`until` moment, whichever
        comes first: days and hours change on minute boundaries only.
        """
        w = self._windows
        if w is None:
            return None
        now = time.time() if now is None else now
        if self._window_mask is not None and now < self._window_until:
            return self._window_mask
        inside = (w.start <= now) & (now < w.end)
        for zone, positions in w.zones:
            local = datetime.fromtimestamp(now, zone)
            minute = local.hour * 60 + local.minute
            first, last = w.first[positions], w.last[positions]
            in_hours = np.where(first <= last, (first <= minute) & (minute < last),
                                (minute >= first) | (minute < last))
            inside[positions] &= w.days[positions, local.weekday()] & in_hours
        mask = np.ones(self._n, dtype=bool)
        mask[w.rows] = inside
        edges = np.concatenate((w.start[w.start > now], w.end[w.end > now]))
        next_minute = (now // 60 + 1) * 60
        self._window_until = min(next_minute, float(edges.min())) if edges.size else next_minute
        self._window_mask = mask
        return mask

    def _value(self, source: str, field: str, d: Decision, numeric: bool) -> Any:
        if source == "context":
            return getattr(d.context, field, None)
        return d.values.get(field) if numeric else d.labels.get(field)

    def _checks(self, d: Decision, now: float | None,
                structural_only: bool = False) -> list[tuple[str, np.ndarray]]:
        """(reason, catalog-wide mask) of every compiled rule, in the order reasons name them
        (`structural_only`: the basket and holdings rules only)."""
        checks: list[tuple[str, np.ndarray]] = []
        window = None if structural_only else self.window_mask(now)
        if window is not None:
            checks.append(("window", window))
        for c in () if structural_only else self._categorical:
            checks.append((c.reason, c.mask(self._value(c.source, c.field, d, False))))
        for x in () if structural_only else self._numeric:
            checks.append((x.reason, x.mask(self._value(x.source, x.field, d, True))))
        if self._basket_rows.size:
            held = self._category_code[d.basket_rows]
            present = np.bincount(held[held >= 0], minlength=self._basket_needs.shape[1]) > 0
            ok = np.ones(self._n, dtype=bool)
            ok[self._basket_rows] = (self._basket_needs @ present) > 0
            checks.append(("basket_has_category", ok))
        for reason, pairs, wanted in (("requires", self._requires, True),
                                      ("excludes_holders_of", self._excludes, False)):
            if pairs is None:
                continue
            rows, others, has_rule = pairs
            hits = (np.bincount(rows, weights=d.held[others], minlength=self._n) > 0
                    if d.held is not None else np.zeros(self._n, dtype=bool))
            checks.append((reason, ~has_rule | hits if wanted else ~hits))
        return checks

    def mask(self, d: Decision, now: float | None = None,
             rows: np.ndarray | None = None) -> np.ndarray | None:
        """Catalog-wide: every rule holds for this decision (None: no action has a rule);
        with `rows`, over those rows only.

        The window and the categorical conditions depend on few values: their combined
        mask is kept per combination (at most `MAX_COMBINATIONS`); each numeric bound is
        two comparisons over the catalog (over the `rows` given only: a large catalog's
        selected candidates, `service/candidates.py`).
        """
        if not self.active:
            return None
        window = self.window_mask(now)
        key = (id(window), *[self._value(c.source, c.field, d, False) for c in self._categorical])
        mask = self._combined.get(key)
        if mask is None:
            mask = np.ones(self._n, dtype=bool) if window is None else window
            for c in self._categorical:
                mask = mask & c.mask(self._value(c.source, c.field, d, False))
            if len(self._combined) >= MAX_COMBINATIONS:
                self._combined.clear()
            self._combined[key] = mask
        if rows is not None:
            mask = mask[rows]
        for x in self._numeric:  # few conditions: one pass each is cheaper than a 2-D reduction
            mask = mask & x.mask(self._value(x.source, x.field, d, True), rows)
        if self._basket_rows.size or self._requires is not None or self._excludes is not None:
            for _, m in self._checks(d, now, structural_only=True):
                mask = mask & (m if rows is None else m[rows])
        return mask

    def reasons(self, d: Decision, rows: np.ndarray, now: float | None = None) -> list[str]:
        """The first rule each of `rows` fails (for explain; rows that pass: "")."""
        out = [""] * len(rows)
        for reason, m in self._checks(d, now):
            for i in np.flatnonzero(~m[rows]).tolist():
                out[i] = out[i] or f"rule:{reason}"
        return out


def _pairs(pairs: list[tuple[int, int]], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(action rows, held rows, actions with the rule) of (action, other action) pairs."""
    if not pairs:
        return None
    rows = np.array([p[0] for p in pairs], dtype=np.int64)
    others = np.array([p[1] for p in pairs], dtype=np.int64)
    has_rule = np.zeros(n, dtype=bool)
    has_rule[rows] = True
    return rows, others, has_rule
