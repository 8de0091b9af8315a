"""Contact policies and budgets per action, and keeping them across replicas.

An action's `contact` block overrides the global contact policy for it: at most
`max_impressions` per customer within `window_seconds` (across channels, or per channel
with `per_channel`), `once` (shown to a customer at most once, ever), and cooldowns after
a dismiss or an accept. Its `budget` block caps it for everyone: at most `limit`
impressions (`counts: impression`) or accepts (`counts: accept`) per day, hour or in
total.

Cooldowns follow feedback and stay in the in-process contact ledger
(`service/contacts.py`, folded from the feedback stream), like the global ones. Caps and
budgets are counters shared by every replica (`service/state/counters.py`). What counts
as shown is what a decision returns, recorded at decision time, not the impression
events integrators send: so `Limiter.hold`, after the ranking picked the actions to
show, asks the store, in one call, to check and record the capped or budgeted ones among
them at once. Those refused (at their cap, budget spent) are dropped and the selection
runs again without them, over the same ranking: the shown actions are then exactly
those a selection that had known the counts would pick, and their logged probabilities
stay right. A decision whose shown actions have no cap and no budget pays nothing;
one with some pays one Redis call, plus one per refusal round (bounded by `MAX_ROUNDS`).
A spent budget is remembered by each replica for `HINT_SECONDS`, so it costs no further
calls there meanwhile.

Bounds: a cap is never exceeded (the check and the record are one atomic step). An
impression budget is never exceeded either. An accept budget is spent by accepts as the
feedback endpoint takes them (`Limiter.spend`), once per accepted event; an action
becomes ineligible at every replica's next decision after the accept that spent it (or
at most `HINT_SECONDS` later where a replica still holds a hint), and accepts of offers
shown before that moment still count, so accepts can pass the limit by the offers
outstanding when it was reached. Anonymous decisions count against budgets, not against
per-customer caps. If the store fails, the limited actions are not shown (fail closed).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.exploration import Selection
from service.state.counters import CounterStore, Slot

log = logging.getLogger(__name__)

#: refusal rounds per decision at most: past them, the rest of the limited actions are dropped
MAX_ROUNDS = 3
#: how long a replica remembers that a budget is spent (it may be raised meanwhile)
HINT_SECONDS = 1.0
#: outcomes that spend an accept budget
SPENDING = frozenset({"accept", "purchase"})


class ContactPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_impressions: int | None = Field(None, ge=1, description="per customer within window_seconds")
    window_seconds: float | None = Field(None, gt=0)
    per_channel: bool = Field(False, description="count each channel on its own")
    cooldown_after_dismiss_seconds: float | None = Field(None, ge=0)
    cooldown_after_accept_seconds: float | None = Field(None, ge=0)
    once: bool = Field(False, description="shown to a customer at most once, ever")

    @model_validator(mode="after")
    def _window_with_cap(self) -> ContactPolicy:
        if (self.max_impressions is None) != (self.window_seconds is None):
            raise ValueError("max_impressions and window_seconds go together")
        if self.once and self.max_impressions is not None:
            raise ValueError("once is a cap of its own: drop max_impressions or once")
        return self

    @property
    def capped(self) -> bool:
        return self.once or self.max_impressions is not None


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(ge=0)
    per: Literal["day", "hour", "total"] = "day"
    counts: Literal["impression", "accept"] = "impression"
    timezone: str = Field("UTC", description="where a day or an hour begins")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (KeyError, ValueError):
            raise ValueError(f"{zone!r} is not a known time zone") from None
        return zone

    def period(self, now: float) -> tuple[str, float, float]:
        """(the period's name, seconds a counter of it must live, epoch when it ends)."""
        if self.per == "total":
            return "total", 0.0, math.inf
        local = datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        if self.per == "hour":
            start = local.replace(minute=0, second=0, microsecond=0)
            return local.strftime("%Y-%m-%dT%H"), 2 * 3600.0, (start + timedelta(hours=1)).timestamp()
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return local.strftime("%Y-%m-%d"), 2 * 86_400.0, (start + timedelta(days=1)).timestamp()


class Limits:
    """The catalog's caps and budgets in array form (row i = action i)."""

    def __init__(self, ids: Sequence[str], contacts: Sequence[ContactPolicy | None],
                 budgets: Sequence[Budget | None]) -> None:
        n = len(ids)
        self.ids = list(ids)
        self.contacts = list(contacts)
        self.budgets = list(budgets)
        self.capped = np.array([c is not None and c.capped for c in contacts], dtype=bool)
        self.budgeted = np.array([b is not None for b in budgets], dtype=bool)
        self.limited = self.capped | self.budgeted
        self.active = bool(self.limited.any())
        self._periods: dict[int, tuple[str, float, float]] = {}  # row -> the current period
        #: per-action cooldowns (NaN: the global setting)
        self.dismiss_seconds = np.full(n, np.nan)
        self.accept_seconds = np.full(n, np.nan)
        for i, c in enumerate(contacts):
            if c is not None:
                if c.cooldown_after_dismiss_seconds is not None:
                    self.dismiss_seconds[i] = c.cooldown_after_dismiss_seconds
                if c.cooldown_after_accept_seconds is not None:
                    self.accept_seconds[i] = c.cooldown_after_accept_seconds

    def slots(self, row: int, group: int, customer_id: str | None, channel: str,
              now: float) -> list[Slot]:
        """The counters showing action `row` must take."""
        out: list[Slot] = []
        action = self.ids[row]
        c = self.contacts[row]
        if c is not None and c.capped and customer_id is not None:
            key = f"nb:{{c:{customer_id}}}:cap:{action}"
            if c.per_channel:
                key += f":{channel}"
            limit, window = (1, 0.0) if c.once else (c.max_impressions or 0, c.window_seconds or 0.0)
            out.append(Slot(key, "window", limit, window, group))
        b = self.budgets[row]
        if b is not None:
            period, ttl, ends = self._periods.get(row) or ("", 0.0, -math.inf)
            if now >= ends:
                period, ttl, ends = self._periods[row] = b.period(now)
            kind: Literal["reserve", "check"] = "reserve" if b.counts == "impression" else "check"
            out.append(Slot(budget_key(action, period), kind, b.limit, ttl, group))
        return out


def budget_key(action_id: str, period: str) -> str:
    """All budgets share one hash tag: one call covers a decision's budgets in a cluster."""
    return f"nb:{{budget}}:{action_id}:{period}"


class Limiter:
    """Holds a decision's capped and budgeted actions against the shared counters."""

    def __init__(self, store: CounterStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._spent: dict[str, float] = {}  # budget key -> monotonic time the hint lapses

    async def hold(self, limits: Limits, rows: np.ndarray, sel: Selection, customer_id: str | None,
                   channel: str, member: str,
                   reselect: Callable[[np.ndarray], Selection]) -> tuple[Selection, dict[int, str]]:
        """The selection to show, with every limited action in it taken; and the positions
        refused, with the reason (`cap`, `budget`), for explain."""
        refused: dict[int, str] = {}
        taken: dict[int, list[Slot]] = {}  # position -> the slots it holds
        now = self._clock()
        limited = limits.limited[rows]

        def untaken(selection: Selection) -> list[int]:
            return [p for p in selection.positions.tolist() if limited[p] and p not in taken]

        def without_refused() -> Selection:
            excluded = np.zeros(len(rows), dtype=bool)
            excluded[list(refused)] = True
            return reselect(excluded)

        for _ in range(MAX_ROUNDS):
            wanted = untaken(sel)
            if not wanted:
                break
            ask = []
            for s in (s for p in wanted for s in limits.slots(int(rows[p]), p, customer_id, channel, now)):
                if self._spent.get(s.key, -math.inf) > time.monotonic():
                    refused[s.group] = "budget"
                elif s.group not in refused:
                    ask.append(s)
            ask = [s for s in ask if s.group not in refused]
            try:
                answers = await self.store.take(ask, member, now)
            except Exception as exc:  # fail closed: an unknown count may be full
                log.warning("caps and budgets unavailable, limited actions not shown: %r", exc)
                answers = [False] * len(ask)
                for s in ask:
                    refused.setdefault(s.group, "limits_unavailable")
            for s, ok in zip(ask, answers, strict=True):
                if ok:
                    taken.setdefault(s.group, []).append(s)
                    continue
                refused.setdefault(s.group, "cap" if s.kind == "window" else "budget")
                if s.kind != "window":
                    self._spent[s.key] = time.monotonic() + HINT_SECONDS
            for p in wanted:
                if p not in refused:
                    taken.setdefault(p, [])  # granted (an anonymous decision's caps: no slot)
            if not any(p in refused for p in wanted):
                break
            sel = without_refused()
        left = untaken(sel)
        if left:  # rounds used up: the limited actions not taken yet are not shown
            for p in left:
                refused[p] = "limit_rounds"
            excluded = limited.copy()
            excluded[list(taken)] = False
            excluded[list(refused)] = True
            sel = reselect(excluded)
        shown = set(sel.positions.tolist())
        unshown = [s for p, held in taken.items() if p not in shown for s in held]
        if unshown:
            try:
                await self.store.give_back(unshown, member)
            except Exception as exc:  # they stay counted as shown: conservative
                log.warning("giving back unshown caps failed: %r", exc)
        return sel, refused

    async def spend(self, limits: Limits, index: Mapping[str, int],
                    events: Iterable[Mapping[str, Any]]) -> None:
        """Spend accept budgets with accepted feedback (the replica taking it, once)."""
        slots: list[Slot] = []
        for e in events:
            if e.get("outcome") not in SPENDING:
                continue
            row = index.get(e.get("action_id", ""))
            if row is None:
                continue
            b = limits.budgets[row]
            if b is None or b.counts != "accept":
                continue
            period, ttl, _ = b.period(float(e.get("ts") or self._clock()))
            slots.append(Slot(budget_key(limits.ids[row], period), "reserve", b.limit, ttl, 0))
        await self.store.add(slots)

    async def left(self, limits: Limits, now: float | None = None) -> dict[str, int]:
        """Budget left per budgeted action in the current period."""
        now = self._clock() if now is None else now
        budgeted = [(i, b) for i, b in enumerate(limits.budgets) if b is not None]
        keys = [budget_key(limits.ids[i], b.period(now)[0]) for i, b in budgeted]
        used = await self.store.read(keys)
        return {limits.ids[i]: max(0, b.limit - u) for (i, b), u in zip(budgeted, used, strict=True)}


def horizon(limits: Limits, *defaults: float) -> float:
    """The longest cooldown any action or the global policy keeps (for the ledger)."""
    values = [d for d in defaults if math.isfinite(d)]
    for arr in (limits.dismiss_seconds, limits.accept_seconds):
        finite = arr[np.isfinite(arr)]
        if finite.size:
            values.append(float(finite.max()))
    return max(values, default=0.0)
