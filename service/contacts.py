"""The contact ledger: who was shown what, on which channel, and how they answered.

One journey across channels: an offer dismissed at the till is not pushed on the web a
minute later, and the online learner knows how often a customer has already seen an
action (fatigue). The ledger is in-process and rebuilt by every replica from the
ordered feedback stream its learner loop already reads (`service/feedback_loop.py`), so
all replicas converge on the same ledger and the decision path pays no extra Redis
round trip. A new replica restores the newest snapshot (`service/snapshots.py`) and
replays the stream after it before it turns ready.

What counts (per customer x action, anonymous events ignored):
- exposures: `impression` events within `window_seconds` (integrators send one
  impression per shown action, as docs/api.md asks; other outcomes are not exposures);
- suppression: a `dismiss` within `suppress_seconds` removes the action for that
  customer on every channel; an `accept` or `purchase` within `cooldown_seconds`
  does the same (0 = off: re-offering what someone just took is a business choice,
  and learned fatigue already lowers it). An action's own contact policy in the catalog
  (`cooldown_after_dismiss_seconds`, `cooldown_after_accept_seconds`) replaces these
  two for it (`policies`);
- holdings: what the customer accepted or purchased, as long as the ledger keeps it
  (`held`), which the catalog's `requires` / `excludes_holders_of` rules read.

Bounds: at most `max_customers` customers (least recently *contacted* customer evicted:
recency follows the stream, not this replica's traffic, so replicas agree; only a
customer at the very edge of the LRU can differ, with how each replica chunked its reads),
at most `max_contacts` most recent contacts each, and nothing older than the longest
of the windows. Each customer's contacts are one small numpy record array.

Lookups read a per-customer view: exposures and blocked flags over the whole catalog,
computed from the contacts once and reused until the customer's next contact or until
the first counted contact leaves its window (then computed again). A lookup is then two
indexing operations instead of a dozen vector operations over the contacts, each of
which pays numpy's fixed per-call overhead however short the arrays, on every decision
(the ledger's share of a decision's CPU is in the full service's row of
`nextbest bench --breakdown`). Views are bounded to `VIEW_CACHE_BYTES` (oldest computed
dropped first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_IMPRESSION, _DISMISS, _ACCEPT = 0, 1, 2
_CODES = {"impression": _IMPRESSION, "dismiss": _DISMISS, "accept": _ACCEPT, "purchase": _ACCEPT}
CONTACT = np.dtype([("ts", "<f8"), ("row", "<i4"), ("code", "i1")])
#: memory for cached per-customer views (5 bytes per catalog action each, at most)
VIEW_CACHE_BYTES = 32 * 2**20


class _View:
    """One customer's exposures and blocked actions, valid until `valid_until`."""

    __slots__ = ("valid_until", "exposures", "blocked", "accepted")

    def __init__(self, valid_until: float, exposures: np.ndarray, blocked: np.ndarray | None,
                 accepted: np.ndarray | None) -> None:
        self.valid_until = valid_until
        self.exposures = exposures  # (n_actions,) int32
        self.blocked = blocked  # (n_actions,) bool, None when nothing is blocked
        self.accepted = accepted  # (n_actions,) bool, None when nothing was accepted


@dataclass(frozen=True)
class LedgerState:
    """Every customer's contacts as flat arrays (snapshots)."""

    customers: list[str]  # least recently contacted first
    counts: np.ndarray  # int64: contacts of each customer, in that order
    contacts: np.ndarray  # `CONTACT` records, customer after customer; rows index `actions`
    actions: list[str]  # the catalog's action ids when the state was taken


class ContactLedger:
    """Recent contacts per customer, fed by the feedback stream, read by the decision path."""

    def __init__(
        self,
        action_ids: Sequence[str],
        window_seconds: float = 30 * 86_400,
        suppress_seconds: float = 7 * 86_400,
        cooldown_seconds: float = 0.0,
        max_customers: int = 1_000_000,
        max_contacts: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._index = {a: i for i, a in enumerate(action_ids)}
        self._n = len(action_ids)
        self.window_seconds = window_seconds
        self.suppress_seconds = suppress_seconds
        self.cooldown_seconds = cooldown_seconds
        self.max_customers = max_customers
        self.max_contacts = max_contacts
        self._clock = clock
        self._contacts: OrderedDict[str, np.ndarray] = OrderedDict()
        self._views: dict[str, _View] = {}
        self._max_views = max(256, VIEW_CACHE_BYTES // (5 * max(self._n, 1)))
        self._dismiss: np.ndarray = np.zeros(0)
        self._accept: np.ndarray = np.zeros(0)
        self.policies(None, None)

    def extend(self, action_ids: Sequence[str]) -> None:
        """Follow a new catalog's rows: `action_ids` begins with the ids known now (rows are
        only appended), so every contact stays with its action."""
        if list(action_ids[:self._n]) != list(self._index):
            raise ValueError("a new catalog's rows must begin with the rows known now")
        for a in action_ids[self._n:]:
            self._index[a] = len(self._index)
        grown = len(self._index) - self._n
        self._dismiss = np.append(self._dismiss, np.full(grown, float(self.suppress_seconds)))
        self._accept = np.append(self._accept, np.full(grown, float(self.cooldown_seconds)))
        self._n = len(self._index)
        self._max_views = max(256, VIEW_CACHE_BYTES // (5 * max(self._n, 1)))
        self._views.clear()

    def policies(self, dismiss_seconds: np.ndarray | None, accept_seconds: np.ndarray | None) -> None:
        """Per-action cooldowns after a dismiss and after an accept (NaN: the global one)."""
        n = self._n
        self._dismiss = np.full(n, float(self.suppress_seconds))
        self._accept = np.full(n, float(self.cooldown_seconds))
        for mine, given in ((self._dismiss, dismiss_seconds), (self._accept, accept_seconds)):
            if given is not None:
                own = ~np.isnan(given)
                mine[own] = given[own]
        self._cooling = bool(np.count_nonzero(self._accept > 0))
        self._horizon = max(self.window_seconds, float(self._dismiss.max(initial=0.0)),
                            float(self._accept.max(initial=0.0)))
        self._views.clear()

    def __len__(self) -> int:
        return len(self._contacts)

    def record(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Fold feedback events (stream records) in; returns how many were kept."""
        now = self._clock()
        oldest = now - self._horizon
        fresh: dict[str, list[tuple[float, int, int]]] = {}
        for e in events:
            customer = e.get("customer_id")
            code = _CODES.get(e.get("outcome", ""))
            row = self._index.get(e.get("action_id", ""))
            if customer is None or code is None or row is None:
                continue
            ts = float(e["ts"])
            if ts < oldest:
                continue
            mine = fresh.pop(customer, [])  # re-insert: batch order = last contact
            mine.append((ts, row, code))
            fresh[customer] = mine
        for customer, contacts in fresh.items():
            new = np.array(contacts, dtype=CONTACT)
            self._views.pop(customer, None)
            old = self._contacts.pop(customer, None)
            if old is not None:
                old = old[old["ts"] >= oldest]
                new = np.concatenate((old, new)) if len(old) else new
            self._contacts[customer] = new[-self.max_contacts:]
        while len(self._contacts) > self.max_customers:
            self._views.pop(self._contacts.popitem(last=False)[0], None)
        return sum(len(c) for c in fresh.values())

    def state(self) -> LedgerState:
        histories = list(self._contacts.values())
        return LedgerState(
            customers=list(self._contacts),
            counts=np.array([len(h) for h in histories], dtype=np.int64),
            # joined as bytes: np.concatenate of many small record arrays is far slower, and
            # this runs on the event loop (load_tests/startup_bench.py times a snapshot write)
            contacts=np.frombuffer(b"".join([h.tobytes() for h in histories]), dtype=CONTACT),
            actions=list(self._index),
        )

    def restore(self, state: LedgerState) -> None:
        """Start from `state` (an empty ledger); contacts of actions no longer in the
        catalog are dropped, the others follow their action to its current row."""
        self._views.clear()
        if not state.customers:
            return
        to_row = np.array([self._index.get(a, -1) for a in state.actions], dtype=np.int32)
        contacts = state.contacts.copy()
        contacts["row"] = to_row[contacts["row"]]
        ends = np.cumsum(state.counts)
        for customer, history in zip(state.customers, np.split(contacts, ends[:-1]), strict=True):
            history = history[history["row"] >= 0]
            if len(history):
                self._contacts[customer] = history
        while len(self._contacts) > self.max_customers:
            self._contacts.popitem(last=False)

    def lookup(self, customer_id: str | None, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(exposures, suppressed) of the candidate action `rows` for this customer.

        `suppressed` is None when none of them is (the common case, which then costs the
        decision path no mask).
        """
        if customer_id is None or (history := self._contacts.get(customer_id)) is None:
            return np.zeros(len(rows), dtype=np.int64), None
        view = self._current(customer_id, history)
        if view.blocked is None:
            return view.exposures[rows], None
        suppressed = view.blocked[rows]
        return view.exposures[rows], suppressed if np.count_nonzero(suppressed) else None

    def _view(self, history: np.ndarray, now: float) -> _View:
        """The customer's view at `now`, valid until a contact counted in it expires."""
        ts, code, contact_rows = history["ts"], history["code"], history["row"]
        counted = (code == _IMPRESSION) & (ts >= now - self.window_seconds)
        exposures = np.bincount(contact_rows[counted], minlength=self._n).astype(np.int32)
        # np.count_nonzero: ndarray.any() goes through a ufunc reduction, whose fixed
        # overhead dominates on arrays this short
        valid_until = (float(ts[counted].min()) + self.window_seconds
                       if np.count_nonzero(counted) else np.inf)
        dismissed = code == _DISMISS
        until = ts + self._dismiss[contact_rows]
        blocked = dismissed & (until >= now)
        if np.count_nonzero(blocked):
            valid_until = min(valid_until, float(until[blocked].min()))
        took = code == _ACCEPT
        accepted = None
        if np.count_nonzero(took):
            accepted = np.zeros(self._n, dtype=bool)
            accepted[contact_rows[took]] = True
            if self._cooling:
                window = self._accept[contact_rows]
                cooling = took & (window > 0) & (ts + window >= now)
                if np.count_nonzero(cooling):
                    valid_until = min(valid_until, float((ts + window)[cooling].min()))
                    blocked |= cooling
        mask = None
        if np.count_nonzero(blocked):
            mask = np.zeros(self._n, dtype=bool)
            mask[contact_rows[blocked]] = True
        return _View(valid_until, exposures, mask, accepted)

    def _current(self, customer_id: str, history: np.ndarray) -> _View:
        now = self._clock()
        view = self._views.get(customer_id)
        if view is None or now >= view.valid_until:
            view = self._view(history, now)
            self._views.pop(customer_id, None)
            while len(self._views) >= self._max_views:
                del self._views[next(iter(self._views))]
            self._views[customer_id] = view
        return view

    def held(self, customer_id: str | None) -> np.ndarray | None:
        """Catalog-wide: what the customer accepted or purchased (None: nothing known)."""
        if customer_id is None or (history := self._contacts.get(customer_id)) is None:
            return None
        return self._current(customer_id, history).accepted

    def why(self, customer_id: str | None, row: int) -> str:
        """Why `row` is suppressed for the customer (for explain): which cooldown holds it."""
        history = self._contacts.get(customer_id or "")
        if history is None:
            return ""
        now = self._clock()
        mine = history[history["row"] == row]
        if np.count_nonzero((mine["code"] == _DISMISS) & (mine["ts"] + self._dismiss[row] >= now)):
            return "cooldown_after_dismiss"
        return "cooldown_after_accept"

    def exposures(self, customer_id: str | None, rows: np.ndarray) -> np.ndarray:
        """Impressions of each candidate action to this customer within the window."""
        return self.lookup(customer_id, rows)[0]

    def suppressed(self, customer_id: str | None, rows: np.ndarray) -> np.ndarray:
        """True where the customer dismissed the action (or took it, with a cool-down)."""
        suppressed = self.lookup(customer_id, rows)[1]
        return suppressed if suppressed is not None else np.zeros(len(rows), dtype=bool)
