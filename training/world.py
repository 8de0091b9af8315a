"""The retail world's hidden truth: customers, a catalog and who accepts what.

The demo data, the training pipeline's tests and the simulator all need the same
answer to "would this customer accept this action here?". This module owns it for the
retail world (`features/worlds/retail.yaml`), behind the interface of
`training/truth.py`; it reads the retail vocabularies from the shipped world file
(pinned by tests/features/test_config.py). The truth
is written in terms of LATENT customer state (true category preferences, true price
sensitivity, channel habits, the true journey stage); the features the model sees are
noisy observations of that state, produced by `observe_customers`:

- category_affinity_*: smoothed shares of a simulated purchase history drawn from the
  true preferences, ``(counts + 0.5) / (n + 3)`` with n = 2 + 2 x frequency; new and
  occasional customers therefore have very noisy affinities, loyal ones sharper;
- channel_affinity_*: a Dirichlet(40 x habits) draw around the true channel habits;
- price_sensitivity: the latent value + N(0, 0.15), clipped to [0, 1];
- journey_stage: the true stage with probability 0.85, otherwise a random stage;
- segment: exact (a business label); recency/frequency/monetary: Poisson/exponential
  draws around the segment's activity rate (context, weakly predictive).

Requests (`draw_requests`): a channel from the customer's habits, a placement and a
device uniform among the channel's, and a basket of products drawn from the true
preferences (at the cart and the till mostly); the journey stage is sent by the
CRM-driven channels (`STAGE_AWARE_CHANNELS`). Dynamics (`advance`): accepting moves the
stage on (awareness -> consideration -> purchase -> retention; churn_risk -> retention).

Nothing here is tuned to the model: the oracle test only checks that choosing well is
worth something (an oracle earns at least twice what uniform random picks earn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

import numpy as np

from features.config import shipped_world
from training.truth import CatalogTruth, Requests, affinity_shares, codes, sample_rows

_RETAIL = shipped_world("retail")
CHANNELS = tuple(_RETAIL.channels)
PLACEMENTS = tuple(_RETAIL.placements)
SEGMENTS = tuple(_RETAIL.vocabulary("segments"))
JOURNEY_STAGES = tuple(_RETAIL.vocabulary("journey_stages"))
ACTION_KINDS = tuple(_RETAIL.vocabulary("action_kinds"))
CATEGORIES = tuple(_RETAIL.vocabulary("categories"))

#: Where each channel shows actions; the demo logging policy draws from these slots.
SLOTS: dict[str, tuple[str, ...]] = {
    "web": ("home", "product", "cart", "search"),
    "app": ("home", "product", "cart", "search", "service"),
    "pos": ("checkout",),
    "call_center": ("service",),
    "email": ("inbox",),
}
CHANNEL_DEVICES: dict[str, tuple[str, ...]] = {
    "web": ("desktop", "mobile", "tablet"),
    "app": ("mobile", "tablet"),
    "pos": ("terminal",),
    "call_center": ("terminal",),
    "email": ("mobile", "desktop"),
}
CONTEXT_WEIGHTS: dict[str, dict[str, float]] = {
    "pos": {"offer": 1.3},
    "call_center": {"service": 1.2},
}

#: Channels whose callers know the journey stage (CRM-driven) and send it in the request.
STAGE_AWARE_CHANNELS = frozenset({"pos", "call_center", "email"})
DISMISS_RATES = {"web": 0.02, "app": 0.04, "pos": 0.25, "call_center": 0.35, "email": 0.01}
MAX_BASKET_ITEMS = 6
#: the demo catalog's size (`World.build(n_actions=...)` scales it)
DEFAULT_ACTIONS = 60

#: Weekly feature snapshots, days before `now`; the last one is what the online store serves.
SNAPSHOT_AGES_DAYS: tuple[float, ...] = (35.0, 28.0, 21.0, 14.0, 7.0, 1.0)

_SEGMENT_P = np.array([0.2, 0.3, 0.25, 0.15, 0.1])
_SEGMENT_ACTIVITY = np.array([1.0, 2.5, 5.0, 9.0, 14.0])  # purchases per 90 days
_SEGMENT_LOGIT = np.array([-0.3, -0.1, 0.1, 0.25, 0.4])
_CHANNEL_LOGIT = np.array([-4.1, -3.8, -3.9, -3.0, -4.2])  # web app pos call_center email
_CATEGORY_PRICE = np.array([220.0, 60.0, 90.0, 30.0, 75.0, 15.0])
_CATEGORY_MARGIN = np.array([0.15, 0.45, 0.3, 0.5, 0.35, 0.2])
#: journey stage x action kind (product, offer, service)
_STAGE_KIND = np.array([
    [0.0, -0.3, -0.6],
    [0.3, 0.2, -0.6],
    [0.6, 0.1, -0.7],
    [0.0, 0.3, 0.5],
    [-0.7, 1.0, 1.0],
])
#: action kind x placement (home product cart checkout search inbox service)
_PLACEMENT_FIT = np.array([
    [0.0, 0.4, 0.1, -0.3, 0.5, -0.2, -1.0],
    [-0.2, -0.1, 0.5, 0.6, -0.3, 0.2, 0.2],
    [-0.4, -0.5, -0.6, -0.6, -0.5, -0.3, 0.6],
])
#: symmetric complementary categories (electronics-home_garden, fashion-beauty, sports-grocery, fashion-sports)
_COMPLEMENT = np.zeros((len(CATEGORIES), len(CATEGORIES)))
for _a, _b in ((0, 2), (1, 3), (4, 5), (1, 4)):
    _COMPLEMENT[_a, _b] = _COMPLEMENT[_b, _a] = 1.0
_STAGE_NEXT = np.array([  # weekly transition of the true journey stage
    [0.6, 0.3, 0.05, 0.0, 0.05],
    [0.1, 0.55, 0.3, 0.0, 0.05],
    [0.0, 0.1, 0.4, 0.45, 0.05],
    [0.0, 0.1, 0.15, 0.65, 0.1],
    [0.05, 0.05, 0.05, 0.25, 0.6],
])
_STAGE_START = np.array([  # initial stage by segment
    [0.6, 0.3, 0.1, 0.0, 0.0],
    [0.3, 0.35, 0.2, 0.05, 0.1],
    [0.1, 0.25, 0.3, 0.25, 0.1],
    [0.05, 0.15, 0.25, 0.45, 0.1],
    [0.0, 0.1, 0.3, 0.5, 0.1],
])


@dataclass(frozen=True)
class ActionSpec:
    """One catalog action with its features and business configuration."""

    action_id: str
    name: str
    kind: str
    category: str
    price: float
    margin: float
    discount: float
    value: float
    channels: list[str]
    placements: list[str]

    def catalog_entry(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id, "name": self.name, "kind": self.kind,
            "category": self.category, "value": self.value,
            "channels": self.channels, "placements": self.placements,
            "lever": 1.0, "active": True,
        }


@dataclass
class World(CatalogTruth):
    """Latent customers, a catalog and the ground-truth acceptance model."""

    name: ClassVar[str] = "retail"
    stage_names: ClassVar[tuple[str, ...]] = JOURNEY_STAGES
    category_names: ClassVar[tuple[str, ...]] = CATEGORIES
    context_weights: ClassVar[dict[str, dict[str, float]]] = CONTEXT_WEIGHTS
    snapshot_ages_days: ClassVar[tuple[float, ...]] = SNAPSHOT_AGES_DAYS
    dismiss_rates: ClassVar[dict[str, float]] = DISMISS_RATES

    seed: int
    now: datetime
    customer_ids: list[str]
    segment: np.ndarray  # (n,) int
    preference: np.ndarray  # (n, categories) true category preferences, rows sum to 1
    price_sensitivity: np.ndarray  # (n,) latent, [0, 1]
    habits: np.ndarray  # (n, channels) true channel habits, rows sum to 1
    activity: np.ndarray  # (n,) purchases per 90 days
    stages: np.ndarray  # (n, snapshots) true journey stage per weekly snapshot
    actions: list[ActionSpec]
    quality: np.ndarray  # (actions,) hidden appeal of each action
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, seed: int, n_customers: int, now: datetime,
              n_actions: int = DEFAULT_ACTIONS) -> World:
        """The same seed, size and anchor time rebuild the same world (see world.json).

        `n_actions`: the catalog's size; the default is the demo's shop, a larger one
        scales it with more products (`_build_actions`)."""
        rng = np.random.default_rng([seed, 1])
        n = n_customers
        segment = rng.choice(len(SEGMENTS), size=n, p=_SEGMENT_P)
        preference = rng.dirichlet(np.full(len(CATEGORIES), 0.5), size=n)
        loyalty = segment / (len(SEGMENTS) - 1)
        price_sensitivity = np.clip(rng.beta(2.0, 2.0, size=n) - 0.25 * (loyalty - 0.4), 0, 1)
        habits = rng.dirichlet(np.array([2.0, 1.5, 1.2, 0.5, 0.8]), size=n)
        activity = _SEGMENT_ACTIVITY[segment] * rng.lognormal(0.0, 0.3, size=n)
        stages = np.empty((n, len(SNAPSHOT_AGES_DAYS)), dtype=np.int64)
        stages[:, 0] = sample_rows(rng, _STAGE_START[segment])
        for k in range(1, stages.shape[1]):
            stages[:, k] = sample_rows(rng, _STAGE_NEXT[stages[:, k - 1]])
        actions, quality = _build_actions(rng, n_actions)
        ids = [f"c{i:05d}" for i in range(n)]
        return cls(seed, now, ids, segment, preference, price_sensitivity, habits, activity,
                   stages, actions, quality)

    # --- the catalog -------------------------------------------------------------------
    def action_arrays(self) -> dict[str, np.ndarray]:
        """Catalog columns by action row (kind and category as codes); built once."""
        if not self._arrays:
            a = self.actions
            self._arrays.update(
                kind=np.array([ACTION_KINDS.index(x.kind) for x in a]),
                category=np.array([CATEGORIES.index(x.category) for x in a]),
                price=np.array([x.price for x in a]),
                discount=np.array([x.discount for x in a]),
                value=np.array([x.value for x in a]),
            )
        return self._arrays

    def slots(self) -> dict[str, tuple[str, ...]]:
        return SLOTS

    # --- requests ---------------------------------------------------------------------------
    def draw_requests(self, rng: np.random.Generator, customers: np.ndarray) -> Requests:
        """A channel from each customer's habits, a placement, a device and a basket."""
        channels = sample_rows(rng, self.habits[customers])
        channel_names = np.array(list(SLOTS), dtype=object)[channels]
        placements, devices = draw_slots(rng, channel_names)
        baskets = draw_baskets(self, rng, customers, placements)
        prices = np.array([a.price for a in self.actions])
        return Requests(channel_names, placements, baskets,
                        {"device": devices, "cart_value": (baskets @ prices).round(2)})

    def stage_aware(self, channels: np.ndarray) -> np.ndarray:
        return np.isin(channels, list(STAGE_AWARE_CHANNELS))

    def log_columns(self, requests: Requests, stage_sent: np.ndarray) -> dict[str, Any]:
        ids = np.array(self.action_ids, dtype=object)
        return {
            "device": requests.fields["device"],
            "cart_value": requests.fields["cart_value"],
            "basket": [",".join(ids[np.flatnonzero(row)]) for row in requests.baskets],
            "journey_stage": stage_sent,
        }

    def request_context(self, requests: Requests, row: int, stage: str,
                        ids: Sequence[str]) -> dict[str, Any]:
        return {
            "basket": [ids[a] for a in np.flatnonzero(requests.baskets[row]).tolist()],
            "device": str(requests.fields["device"][row]),
            "cart_value": float(requests.fields["cart_value"][row]),
            "journey_stage": stage,
        }

    def advance(self, stage: int, action: int) -> int:
        return int(_ADVANCE_CODES[stage])

    # --- the ground truth -----------------------------------------------------------------
    def response_probability(self, customers: np.ndarray, actions: np.ndarray,
                             requests: Requests, rows: np.ndarray,
                             stage: np.ndarray) -> np.ndarray:
        return self.accept_probability(customers, actions, requests.channels[rows],
                                       requests.placements[rows], stage, requests.baskets[rows])

    def accept_probability(
        self,
        customer_rows: np.ndarray,
        action_rows: np.ndarray,
        channel: Any,
        placement: Any,
        journey_stage: Any = None,
        basket: np.ndarray | None = None,
    ) -> np.ndarray:
        """P(accept) per row of (customer, action, context), vectorised.

        `channel`, `placement` and `journey_stage` are one value for all rows or one per
        row (names or integer codes); `journey_stage` defaults to each customer's latest
        true stage. `basket` is a bool matrix (rows x actions) of actions in the basket.
        """
        c = np.asarray(customer_rows, dtype=np.int64)
        a = np.asarray(action_rows, dtype=np.int64)
        n = len(c)
        ch = codes(channel, CHANNELS, n)
        pl = codes(placement, PLACEMENTS, n)
        st = self.stages[c, -1] if journey_stage is None else codes(journey_stage, JOURNEY_STAGES, n)
        arr = self.action_arrays()
        kind, cat = arr["kind"][a], arr["category"][a]
        is_product, is_offer = kind == 0, kind == 1

        logit = _CHANNEL_LOGIT[ch] + _SEGMENT_LOGIT[self.segment[c]]
        logit += _PLACEMENT_FIT[kind, pl] + _STAGE_KIND[st, kind]
        logit += np.clip(0.6 * np.log(len(CHANNELS) * self.habits[c, ch]), -1.2, 0.8)
        pref = np.clip(np.log(len(CATEGORIES) * self.preference[c, cat]), -3.0, 1.6)
        logit += pref * np.select([is_product, is_offer], [1.1, 0.7], 0.3)
        ps = self.price_sensitivity[c]
        logit -= np.where(is_product, 1.4 * ps * (np.log1p(arr["price"][a]) - 4.0), 0.0)
        logit += 7.0 * ps * arr["discount"][a] - 0.5 * arr["discount"][a]
        logit += self.quality[a]
        if basket is not None:
            basket = np.asarray(basket, dtype=bool)
            # (n, categories), a category at a time: no float copy of a large catalog's basket
            basket_cats = np.stack([basket[:, arr["category"] == k].any(axis=1)
                                    for k in range(len(CATEGORIES))], axis=1)
            complement = (basket_cats * _COMPLEMENT[cat]).any(axis=1)
            same = basket_cats[np.arange(n), cat]
            logit += np.where(complement, 0.7, 0.0)
            logit += np.where(same, np.where(is_offer, 0.9, 0.2), 0.0)
            logit = np.where(basket[np.arange(n), a], -9.0, logit)
        return 1.0 / (1.0 + np.exp(-logit))

    # --- what the feature store sees --------------------------------------------------------
    def observe_customers(self, rng: np.random.Generator, snapshot: int) -> dict[str, np.ndarray]:
        """Noisy observed customer features at one weekly snapshot (see module docstring)."""
        n = len(self.customer_ids)
        frequency = rng.poisson(self.activity)
        draws = 2 + 2 * frequency
        counts = rng.multinomial(draws, self.preference)
        cat_aff = (counts + 0.5) / (draws[:, None] + 0.5 * len(CATEGORIES))
        chan_aff = np.array([rng.dirichlet(40.0 * h + 0.05) for h in self.habits])
        true_stage = self.stages[:, snapshot]
        noisy = rng.random(n) < 0.15
        stage = np.where(noisy, rng.integers(0, len(JOURNEY_STAGES), n), true_stage)
        last_channel = sample_rows(rng, self.habits)
        basket_size = _CATEGORY_PRICE @ self.preference.T * 0.8
        monetary = frequency * basket_size * rng.lognormal(0.0, 0.25, size=n)
        recency = rng.exponential(90.0 / (self.activity + 0.5)) + rng.random(n)
        out: dict[str, np.ndarray] = {
            "segment": np.array(SEGMENTS, dtype=object)[self.segment],
            "journey_stage": np.array(JOURNEY_STAGES, dtype=object)[stage],
            "last_channel": np.array(CHANNELS, dtype=object)[last_channel],
            "recency_days": recency.astype(np.float32),
            "frequency_90d": frequency.astype(np.int64),
            "monetary_90d": monetary.astype(np.float32),
            "price_sensitivity": np.clip(
                self.price_sensitivity + rng.normal(0, 0.15, n), 0, 1).astype(np.float32),
        }
        for j, name in enumerate(CHANNELS):
            out[f"channel_affinity_{name}"] = chan_aff[:, j].astype(np.float32)
        for j, name in enumerate(CATEGORIES):
            out[f"category_affinity_{name}"] = cat_aff[:, j].astype(np.float32)
        return out

    def observe_actions(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Action features at one snapshot: popularity drifts, the rest is catalog data."""
        q = self.quality + rng.normal(0, 0.15, len(self.actions))
        return {
            "kind": np.array([a.kind for a in self.actions], dtype=object),
            "category": np.array([a.category for a in self.actions], dtype=object),
            "price": np.array([a.price for a in self.actions], dtype=np.float32),
            "margin": np.array([a.margin for a in self.actions], dtype=np.float32),
            "discount": np.array([a.discount for a in self.actions], dtype=np.float32),
            "popularity": (1.0 / (1.0 + np.exp(-2.0 * q))).astype(np.float32),
        }

    def observed(self, customers: Mapping[str, Mapping[str, Any]]) -> World:
        """Category preferences and channel habits become the observed affinities
        (normalised), price sensitivity the observed one; segments, action appeal and
        everything dynamic stay true. The journey stage needs no swap: the simulator
        sends the current one."""
        rows = [customers.get(c, {}) for c in self.customer_ids]
        sensitivity = np.array([r.get("price_sensitivity", np.nan) for r in rows], float)
        return replace(
            self,
            preference=affinity_shares(rows, "category_affinity", CATEGORIES, self.preference),
            habits=affinity_shares(rows, "channel_affinity", CHANNELS, self.habits),
            price_sensitivity=np.where(np.isnan(sensitivity), self.price_sensitivity, sensitivity),
        )

    def fidelity(self, customers: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
        rows = [customers[c] for c in self.customer_ids]
        observed = np.array([[r[f"category_affinity_{c}"] for c in CATEGORIES] for r in rows])
        stage = np.array([r["journey_stage"] for r in rows], dtype=object)
        true_stage = np.array(JOURNEY_STAGES, dtype=object)[self.stages[:, -1]]
        return {
            "corr(observed category affinity, latent preference)":
                float(np.corrcoef(observed.ravel(), self.preference.ravel())[0, 1]),
            "stored stage == true stage": float((stage == true_stage).mean()),
        }

    def to_json(self) -> dict[str, Any]:
        """What rebuilds this world with `World.from_json` (saved as demo/world.json)."""
        saved: dict[str, Any] = {
            "world": self.name, "seed": self.seed, "n_customers": len(self.customer_ids),
            "now": self.now.isoformat(), "snapshot_ages_days": list(SNAPSHOT_AGES_DAYS)}
        if len(self.actions) != DEFAULT_ACTIONS:
            saved["n_actions"] = len(self.actions)
        return saved

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> World:
        return cls.build(int(saved["seed"]), int(saved["n_customers"]),
                         datetime.fromisoformat(saved["now"]),
                         int(saved.get("n_actions", DEFAULT_ACTIONS)))


def _build_actions(rng: np.random.Generator,
                   n_actions: int = DEFAULT_ACTIONS) -> tuple[list[ActionSpec], np.ndarray]:
    """12 offers, 6 services and products for the rest (the default 60: 42 products, 7 per
    category), with hidden quality. A larger catalog only has more products, spread over
    the categories as evenly as they divide; the default one's draws are unchanged."""
    n_products = n_actions - 18
    if n_products < len(CATEGORIES):
        raise ValueError(f"n_actions: the retail world needs at least {18 + len(CATEGORIES)} "
                         f"actions (12 offers, 6 services, a product per category), got {n_actions}")
    actions: list[ActionSpec] = []
    web_placements = ["home", "product", "cart", "search"]
    for c, category in enumerate(CATEGORIES):
        per_category = n_products // len(CATEGORIES) + (c < n_products % len(CATEGORIES))
        for j in range(per_category):
            price = float(np.round(_CATEGORY_PRICE[c] * rng.lognormal(0, 0.45), 2))
            margin = float(np.round(np.clip(_CATEGORY_MARGIN[c] + rng.normal(0, 0.05), 0.05, 0.7), 3))
            discount = float(rng.choice([0.0, 0.0, 0.0, 0.1, 0.2]))
            channels = ["web", "app"] + (["email"] if rng.random() < 0.5 else [])
            k = int(rng.integers(2, 5))
            placements = sorted(rng.choice(web_placements, size=k, replace=False).tolist())
            if "email" in channels:
                placements.append("inbox")
            actions.append(ActionSpec(
                f"p{len(actions) + 1:03d}", f"{category} product {j + 1}", "product", category,
                price, margin, discount, price * margin * (1 - discount), channels, placements,
            ))
    offer_slots = [  # (channels, placements)
        (["pos"], ["checkout"]), (["pos"], ["checkout"]), (["pos"], ["checkout"]),
        (["pos"], ["checkout"]), (["web", "app"], ["cart", "checkout"]),
        (["web", "app"], ["cart", "checkout"]), (["web", "app"], ["cart"]),
        (["web", "app", "pos"], ["cart", "checkout"]), (["email"], ["inbox"]),
        (["email"], ["inbox"]), (["web", "app"], ["home"]), (["app"], ["home", "service"]),
    ]
    for j, (channels, placements) in enumerate(offer_slots):
        c = j % len(CATEGORIES)
        discount = float(rng.choice([0.05, 0.1, 0.15, 0.2, 0.3]))
        threshold = float(np.round(_CATEGORY_PRICE[c] * 0.8, 0))
        uplift = _CATEGORY_PRICE[c] * _CATEGORY_MARGIN[c] * 1.6
        value = max(uplift - threshold * discount * 0.5, 1.0)
        actions.append(ActionSpec(
            f"o{j + 1:03d}", f"{int(discount * 100)}% off {CATEGORIES[c]}", "offer", CATEGORIES[c],
            threshold, float(_CATEGORY_MARGIN[c]), discount, float(value), channels, placements,
        ))
    services = [
        ("extended warranty", "electronics", 25.0), ("style consultation", "fashion", 12.0),
        ("installation service", "home_garden", 18.0), ("loyalty enrollment", "beauty", 30.0),
        ("training plan", "sports", 10.0), ("delivery subscription", "grocery", 22.0),
    ]
    for j, (name, category, value) in enumerate(services):
        actions.append(ActionSpec(
            f"s{j + 1:03d}", name, "service", category, 0.0, 0.0, 0.0, value,
            ["call_center", "app"], ["service", "home"],
        ))
    # catalog.json stores these values; round so logged rewards equal label x catalog value
    actions = [replace(a, value=round(float(a.value), 4)) for a in actions]
    quality = rng.normal(0.0, 0.35, len(actions))
    return actions, quality


#: stage -> stage after an acceptance
_ADVANCE = {
    "awareness": "consideration",
    "consideration": "purchase",
    "purchase": "retention",
    "retention": "retention",
    "churn_risk": "retention",
}
_ADVANCE_CODES = np.array([JOURNEY_STAGES.index(_ADVANCE[s]) for s in JOURNEY_STAGES])


def draw_slots(rng: np.random.Generator, channel_names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A placement and a device for each row, uniform among those of its channel."""
    placements = np.empty(len(channel_names), dtype=object)
    devices = np.empty(len(channel_names), dtype=object)
    for name, slots in SLOTS.items():
        rows = np.flatnonzero(channel_names == name)
        placements[rows] = np.array(slots, dtype=object)[rng.integers(len(slots), size=len(rows))]
        options = CHANNEL_DEVICES[name]
        devices[rows] = np.array(options, dtype=object)[rng.integers(len(options), size=len(rows))]
    return placements, devices


def draw_baskets(
    world: World, rng: np.random.Generator, customers: np.ndarray, placements: np.ndarray
) -> np.ndarray:
    """Bool (rows x actions): products in the basket, drawn from true preferences."""
    n = len(customers)
    checkout = np.isin(placements, ["cart", "checkout"])
    browsing = np.isin(placements, ["home", "product", "search"])
    size = np.where(checkout, 1 + rng.poisson(1.5, n), np.where(browsing, rng.poisson(0.4, n), 0))
    size = np.minimum(size, MAX_BASKET_ITEMS)
    products_by_category = [
        np.array([i for i, a in enumerate(world.actions) if a.kind == "product" and a.category == c])
        for c in CATEGORIES
    ]
    basket = np.zeros((n, len(world.actions)), dtype=bool)
    pref = world.preference[customers]
    for j in range(int(size.max(initial=0))):
        rows = np.flatnonzero(size > j)
        cats = sample_rows(rng, pref[rows])
        for c, products in enumerate(products_by_category):
            sub = rows[cats == c]
            basket[sub, products[rng.integers(len(products), size=len(sub))]] = True
    return basket
