"""The ground-truth interface every example world's hidden truth implements.

The demo generator (`training/demo_data.py`), the simulated customers
(`training/environment.py`), the simulator's baselines (`training/policies.py`) and the
simulator's loop (`training/simulator.py`) are the same for every example world; what
differs is who the customers really are, what they respond to, what a request looks
like and what the feature store is allowed to see of them. That is a `Truth`:
`training/world.py` (retail) and `training/telco_world.py` (telco) implement it, and
`training/worlds.py` names them and rebuilds one from `demo/world.json`.

A truth works on arrays: customers and actions are row numbers, journey stages integer
codes into `stage_names`, and a batch of requests is one `Requests` (the slot, what the
request already holds, and the context it sends), so that probabilities are computed for
many rows at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

import numpy as np


class CatalogAction(Protocol):
    """What the generic code reads of a truth's catalog action (each world has its own)."""

    @property
    def action_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def channels(self) -> list[str]: ...
    @property
    def placements(self) -> list[str]: ...

    def catalog_entry(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Requests:
    """A batch of requests, row i = request i: the slot, what it holds and its context.

    `baskets` marks the actions the request already holds (they are never candidates);
    a world without a basket has an all-False matrix. `fields` holds the context values
    the request sends besides the basket and the journey stage, one array per field
    (None where a request does not send the field).
    """

    channels: np.ndarray  # (n,) object, channel names
    placements: np.ndarray  # (n,) object
    baskets: np.ndarray  # (n, actions) bool
    fields: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.channels)


class Truth(Protocol):
    """The hidden ground truth of an example world (latent customers, catalog, responses)."""

    #: the world's name: its configuration is `features/worlds/<name>.yaml`
    name: ClassVar[str]
    #: the journey stages `stages` codes index, as the world's vocabulary spells them
    stage_names: ClassVar[tuple[str, ...]]
    #: the categories `action_arrays()["category"]` codes index
    category_names: ClassVar[tuple[str, ...]]
    #: channel -> action kind -> arbitration weight (the catalog's `context_weights`)
    context_weights: ClassVar[dict[str, dict[str, float]]]
    #: channel -> P(the customer dismisses a first offer they do not accept); where a
    #: person makes the offer (a till, an agent) a no is said, on a page it is a scroll
    dismiss_rates: ClassVar[dict[str, float]]

    seed: int
    now: datetime
    customer_ids: list[str]
    activity: np.ndarray  # (customers,) how often each customer shows up
    stages: np.ndarray  # (customers, snapshots) true journey stage per weekly snapshot

    @property
    def actions(self) -> Sequence[CatalogAction]: ...

    @property
    def action_ids(self) -> list[str]: ...

    @property
    def action_value(self) -> np.ndarray: ...

    def action_arrays(self) -> dict[str, np.ndarray]:
        """Catalog columns by action row; at least `category` as codes into category_names."""
        ...

    def slots(self) -> dict[str, tuple[str, ...]]:
        """channel -> the placements requests on it come from."""
        ...

    def eligible(self, channel: str, placement: str) -> np.ndarray: ...

    def snapshot_times(self) -> list[datetime]: ...

    def stage_at(self, customer_rows: np.ndarray, times: np.ndarray) -> np.ndarray: ...

    def draw_requests(self, rng: np.random.Generator, customers: np.ndarray) -> Requests:
        """One request per customer row: its slot, basket and context, drawn from the truth."""
        ...

    def response_probability(self, customers: np.ndarray, actions: np.ndarray,
                             requests: Requests, rows: np.ndarray,
                             stage: np.ndarray) -> np.ndarray:
        """True P(accept) of each (customer, action) in request `rows[i]` at stage `stage[i]`."""
        ...

    def log_columns(self, requests: Requests, stage_sent: np.ndarray) -> dict[str, Any]:
        """The interaction log's context columns (`stage_sent`: the stage or None per row)."""
        ...

    def stage_aware(self, channels: np.ndarray) -> np.ndarray:
        """Bool per row: the caller knows the journey stage and sends it."""
        ...

    def request_context(self, requests: Requests, row: int, stage: str,
                        ids: Sequence[str]) -> dict[str, Any]:
        """The decision request's `context` for request `row` (the simulator's body)."""
        ...

    def advance(self, stage: int, action: int) -> int:
        """The journey stage after the customer at `stage` accepts `action`."""
        ...

    def observe_customers(self, rng: np.random.Generator, snapshot: int) -> dict[str, np.ndarray]: ...

    def observe_actions(self, rng: np.random.Generator) -> dict[str, np.ndarray]: ...

    def observed(self, customers: Mapping[str, Mapping[str, Any]]) -> Truth:
        """This truth with each customer's latent traits replaced by what `customers` (the
        online store's latest features by customer id) shows of them."""
        ...

    def fidelity(self, customers: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
        """How close the stored features are to the latent state (the simulator reports it)."""
        ...

    def to_json(self) -> dict[str, Any]: ...


class CatalogTruth:
    """What every truth derives the same way from its catalog and its weekly stages: the
    action ids and values, the actions a slot allows, the snapshot times and the stage in
    effect at a time. A truth (a dataclass) supplies `actions`, `action_arrays()` (with a
    `value` column), `now`, `stages` and `snapshot_ages_days`."""

    #: weekly feature snapshots, days before `now`; the last is what the online store serves
    snapshot_ages_days: ClassVar[tuple[float, ...]]
    actions: Sequence[CatalogAction]
    now: datetime
    stages: np.ndarray

    def action_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def action_ids(self) -> list[str]:
        return [a.action_id for a in self.actions]

    @property
    def action_value(self) -> np.ndarray:
        return self.action_arrays()["value"]

    def eligible(self, channel: str, placement: str) -> np.ndarray:
        """Action rows allowed in this slot (same rule as service.catalog.Catalog)."""
        return eligible_rows(self.actions, channel, placement)

    def snapshot_times(self) -> list[datetime]:
        return [self.now - timedelta(days=d) for d in self.snapshot_ages_days]

    def stage_at(self, customer_rows: np.ndarray, times: np.ndarray) -> np.ndarray:
        """True journey stage in effect at each time (latest snapshot not after it)."""
        edges = np.array([t.timestamp() for t in self.snapshot_times()])
        k = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, len(edges) - 1)
        return self.stages[customer_rows, k]


def sample_rows(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a probability matrix."""
    cum = np.cumsum(p, axis=1)
    u = rng.random(p.shape[0]) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), p.shape[1] - 1)


def codes(values: Any, vocabulary: Sequence[str], n: int) -> np.ndarray:
    """Strings or integer codes (scalar or per row) -> an int array of length n."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return np.broadcast_to(arr.astype(np.int64), (n,))
    index = {v: i for i, v in enumerate(vocabulary)}
    if arr.ndim == 0:
        return np.full(n, index[str(arr)], dtype=np.int64)
    return np.array([index[str(v)] for v in arr], dtype=np.int64)


def eligible_rows(actions: Sequence[CatalogAction], channel: str, placement: str) -> np.ndarray:
    """Action rows allowed in this slot (same rule as service.catalog.Catalog)."""
    return np.array([
        i for i, a in enumerate(actions)
        if (not a.channels or channel in a.channels)
        and (not a.placements or placement in a.placements)
    ], dtype=np.int64)


def affinity_shares(rows: Sequence[Mapping[str, Any]], prefix: str, names: Sequence[str],
                    truth: np.ndarray) -> np.ndarray:
    """Observed `<prefix>_<name>` features as shares per row (missing: the truth's row)."""
    seen = np.array([[r.get(f"{prefix}_{n}", np.nan) for n in names] for r in rows], float)
    seen = np.where(np.isnan(seen), truth, seen) + 1e-6
    return seen / seen.sum(axis=1, keepdims=True)
