"""The telco world's hidden truth: subscribers, an operator's catalog and who accepts what.

The second example world (`features/worlds/telco.yaml`), behind the interface of
`training/truth.py`. The truth is written in terms of LATENT subscriber state:

- true interest in each product family (Dirichlet), channel habits, price sensitivity
  (higher for prepaid, lower for premium);
- the data need (GB a month) against the plan's allowance: heavy users over their
  allowance take data add-ons and bigger plans;
- contract and handset: days to the contract's end (0: out of contract, as every
  prepaid line) and the handset's age: an old handset near (or past) the contract's
  end makes a new device pay;
- dissatisfaction (what drives support calls) and churn propensity, a function of a
  short tenure, an ending contract, dissatisfaction, price sensitivity and a latent
  term: retention offers pay for those about to leave and little for the others;
- the lifecycle stage (onboarding, active, upgrade_window, at_risk, win_back), which
  moves weekly.

At the call centre a request carries `call_reason`, drawn from the same state (a
customer about to leave calls to cancel, a dissatisfied one with a technical problem,
a traveller about roaming): `cancel` makes retention offers pay, `upgrade` devices and
plans, `technical` services, `roaming` roaming add-ons.

What the feature store sees are observations (`observe_customers`): the segment, tenure,
days to contract end and handset age exactly (CRM facts, as they were at the snapshot);
the data usage as the need times month-to-month noise; the monthly spend from the plan
and the add-ons, noisy; support calls as Poisson counts of the dissatisfaction; roaming
days as counts of the roaming interest; family affinities as smoothed shares of a short
browsing and usage history drawn from the true interests; channel affinities as a
Dirichlet draw around the habits; the stage right with probability 0.8. The churn
propensity and the price sensitivity are never observed.

Dynamics (`advance`): accepting moves the stage: an onboarding customer becomes active;
at_risk and win_back customers who take a retention offer (or a plan, or a device) are
active again; an upgrade_window customer who takes a device, a plan or a retention offer
is active. Nothing here is tuned to the model: the oracle test only checks that
choosing well is worth something.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

import numpy as np

from training.truth import CatalogTruth, Requests, affinity_shares, codes, sample_rows

CHANNELS = ("app", "web", "retail_store", "call_center", "sms")
PLACEMENTS = ("home", "account", "shop", "counter", "agent", "message")
SEGMENTS = ("prepaid", "consumer", "family", "business", "premium")
STAGES = ("onboarding", "active", "upgrade_window", "at_risk", "win_back")
KINDS = ("plan", "addon", "retention", "device", "service")
FAMILIES = ("mobile_plans", "data", "roaming", "entertainment", "handsets", "wearables",
            "broadband", "security", "insurance")
CALL_REASONS = ("billing", "technical", "cancel", "upgrade", "roaming", "other")

#: Where each channel shows actions; requests draw their placement from these.
SLOTS: dict[str, tuple[str, ...]] = {
    "app": ("home", "account", "shop"),
    "web": ("home", "account", "shop"),
    "retail_store": ("shop", "counter"),
    "call_center": ("agent",),
    "sms": ("message",),
}
#: Channels whose callers know the lifecycle stage (CRM-driven) and send it.
STAGE_AWARE_CHANNELS = frozenset({"retail_store", "call_center"})
DISMISS_RATES = {"app": 0.03, "web": 0.02, "retail_store": 0.2, "call_center": 0.4, "sms": 0.05}
CONTEXT_WEIGHTS: dict[str, dict[str, float]] = {
    "call_center": {"retention": 1.3},
    "retail_store": {"device": 1.2},
}
SNAPSHOT_AGES_DAYS: tuple[float, ...] = (35.0, 28.0, 21.0, 14.0, 7.0, 1.0)

_SEGMENT_P = np.array([0.25, 0.35, 0.2, 0.1, 0.1])
_SEGMENT_ACTIVITY = np.array([1.0, 2.0, 2.5, 3.0, 4.0])  # contacts per 90 days, relative
_SEGMENT_LOGIT = np.array([-0.3, 0.0, 0.1, 0.0, 0.2])
_SEGMENT_PRICE = np.array([0.25, 0.05, 0.05, -0.15, -0.25])  # shift of price sensitivity
_ALLOWANCES = np.array([5.0, 15.0, 50.0, 200.0])  # GB a month of the current plan
_ALLOWANCE_PRICE = np.array([15.0, 25.0, 40.0, 60.0])
_ALLOWANCE_P = np.array([  # by segment
    [0.6, 0.3, 0.1, 0.0],
    [0.2, 0.45, 0.3, 0.05],
    [0.1, 0.3, 0.45, 0.15],
    [0.05, 0.25, 0.4, 0.3],
    [0.0, 0.1, 0.4, 0.5],
])
_CHANNEL_LOGIT = np.array([-4.0, -4.1, -3.3, -3.4, -4.2])  # app web retail_store call_center sms
#: kind x placement (home account shop counter agent message)
_PLACEMENT_FIT = np.array([
    [0.0, -0.3, 0.5, 0.3, 0.2, -0.2],
    [0.2, 0.4, -0.3, 0.0, -0.1, 0.3],
    [-0.6, 0.0, -0.5, 0.2, 0.6, 0.0],
    [0.0, -0.5, 0.6, 0.7, -0.3, -0.6],
    [-0.2, 0.5, -0.6, 0.2, 0.4, -0.5],
])
#: stage x kind (plan addon retention device service)
_STAGE_KIND = np.array([
    [0.0, 0.3, -1.5, -0.5, 1.0],
    [0.0, 0.3, -1.2, -0.3, -0.2],
    [0.8, -0.2, 0.3, 1.2, -0.3],
    [0.2, -0.4, 1.5, -0.6, 0.2],
    [0.5, -1.0, 2.0, -1.0, -0.5],
])
#: call reason x kind
_REASON_KIND = np.array([
    [0.6, -0.6, 0.8, -0.8, 0.4],
    [-0.6, -0.2, 0.0, -0.2, 1.4],
    [-0.3, -1.0, 2.4, -1.0, -0.5],
    [1.0, 0.2, -0.5, 1.5, -0.5],
    [-0.2, 1.0, -0.6, -0.8, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0],
])
#: how much the family interest counts, per kind
_INTEREST_WEIGHT = np.array([0.6, 1.0, 0.3, 0.8, 0.3])
_STAGE_NEXT = np.array([  # weekly transition of the true stage
    [0.7, 0.3, 0.0, 0.0, 0.0],
    [0.0, 0.86, 0.07, 0.06, 0.01],
    [0.0, 0.1, 0.75, 0.15, 0.0],
    [0.0, 0.1, 0.05, 0.7, 0.15],
    [0.0, 0.05, 0.0, 0.15, 0.8],
])
#: stage -> kind -> stage after an acceptance (unlisted: the stage stays)
_ADVANCE: dict[str, dict[str, str]] = {
    "onboarding": {k: "active" for k in KINDS},
    "upgrade_window": {"device": "active", "plan": "active", "retention": "active"},
    "at_risk": {"retention": "active", "plan": "active", "device": "active"},
    "win_back": {"retention": "active", "plan": "active"},
}
_ADVANCE_CODES = np.array([[STAGES.index(_ADVANCE.get(s, {}).get(k, s)) for k in KINDS]
                           for s in STAGES])


@dataclass(frozen=True)
class TelcoAction:
    """One catalog action of the operator, with its features."""

    action_id: str
    name: str
    kind: str
    category: str
    value: float
    channels: list[str]
    placements: list[str]
    monthly_price: float
    upfront_price: float
    discount: float

    def catalog_entry(self) -> dict[str, Any]:
        return {
            "action_id": self.action_id, "name": self.name, "kind": self.kind,
            "category": self.category, "value": self.value,
            "channels": self.channels, "placements": self.placements,
            "lever": 1.0, "active": True,
        }


def churn_propensity(tenure: np.ndarray, contract_days: np.ndarray, dissatisfaction: np.ndarray,
                     price_sensitivity: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """P(leaving soon): a short tenure, an ending contract, dissatisfaction, price."""
    z = (-1.6 + 1.3 * (contract_days < 60) - 0.5 * np.log1p(tenure / 12.0)
         + 0.9 * dissatisfaction + 1.0 * (price_sensitivity - 0.5) + latent)
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class TelcoWorld(CatalogTruth):
    """Latent subscribers, the operator's catalog and the ground-truth acceptance model."""

    name: ClassVar[str] = "telco"
    stage_names: ClassVar[tuple[str, ...]] = STAGES
    category_names: ClassVar[tuple[str, ...]] = FAMILIES
    context_weights: ClassVar[dict[str, dict[str, float]]] = CONTEXT_WEIGHTS
    snapshot_ages_days: ClassVar[tuple[float, ...]] = SNAPSHOT_AGES_DAYS
    dismiss_rates: ClassVar[dict[str, float]] = DISMISS_RATES

    seed: int
    now: datetime
    customer_ids: list[str]
    segment: np.ndarray  # (n,) int
    interest: np.ndarray  # (n, families) true family interests, rows sum to 1
    price_sensitivity: np.ndarray  # (n,) latent, [0, 1]
    habits: np.ndarray  # (n, channels) true channel habits, rows sum to 1
    activity: np.ndarray  # (n,) how often the subscriber is in touch
    tenure: np.ndarray  # (n,) months, now
    contract_days: np.ndarray  # (n,) days to the contract's end, now (0: out of contract)
    handset_age: np.ndarray  # (n,) months, now
    data_need: np.ndarray  # (n,) GB a month
    allowance: np.ndarray  # (n,) GB a month of the current plan
    dissatisfaction: np.ndarray  # (n,) >= 0
    churn: np.ndarray  # (n,) latent churn propensity
    stages: np.ndarray  # (n, snapshots) true stage per weekly snapshot
    actions: list[TelcoAction]
    quality: np.ndarray  # (actions,) hidden appeal
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, seed: int, n_customers: int, now: datetime) -> TelcoWorld:
        """The same seed, size and anchor time rebuild the same world (see world.json)."""
        rng = np.random.default_rng([seed, 31])
        n = n_customers
        segment = rng.choice(len(SEGMENTS), size=n, p=_SEGMENT_P)
        interest = rng.dirichlet(np.full(len(FAMILIES), 0.6), size=n)
        price_sensitivity = np.clip(rng.beta(2.0, 2.0, size=n) + _SEGMENT_PRICE[segment], 0, 1)
        habits = rng.dirichlet(np.array([2.0, 1.2, 0.8, 0.6, 0.5]), size=n)
        activity = _SEGMENT_ACTIVITY[segment] * rng.lognormal(0.0, 0.4, size=n)
        tenure = rng.gamma(1.5, 20.0, size=n)
        contracted = (segment != 0) & (rng.random(n) < 0.8)
        contract_days = np.where(contracted, rng.uniform(0, 720, size=n), 0.0)
        handset_age = rng.gamma(2.5, 8.0, size=n)
        data_need = rng.lognormal(np.log(6.0) + 0.3 * (segment >= 2), 0.9, size=n)
        allowance = _ALLOWANCES[sample_rows(rng, _ALLOWANCE_P[segment])]
        dissatisfaction = rng.gamma(1.0, 0.5, size=n)
        churn = churn_propensity(tenure, contract_days, dissatisfaction, price_sensitivity,
                                 rng.normal(0.0, 0.6, size=n))
        stages = np.empty((n, len(SNAPSHOT_AGES_DAYS)), dtype=np.int64)
        stages[:, 0] = sample_rows(rng, _stage_start(tenure, contract_days, handset_age, churn))
        for k in range(1, stages.shape[1]):
            stages[:, k] = sample_rows(rng, _STAGE_NEXT[stages[:, k - 1]])
        actions, quality = _build_actions(rng)
        ids = [f"c{i:05d}" for i in range(n)]
        return cls(seed, now, ids, segment, interest, price_sensitivity, habits, activity, tenure,
                   contract_days, handset_age, data_need, allowance, dissatisfaction, churn,
                   stages, actions, quality)

    # --- the catalog -------------------------------------------------------------------
    def action_arrays(self) -> dict[str, np.ndarray]:
        """Catalog columns by action row (kind and category as codes); built once."""
        if not self._arrays:
            a = self.actions
            self._arrays.update(
                kind=np.array([KINDS.index(x.kind) for x in a]),
                category=np.array([FAMILIES.index(x.category) for x in a]),
                monthly_price=np.array([x.monthly_price for x in a]),
                upfront_price=np.array([x.upfront_price for x in a]),
                discount=np.array([x.discount for x in a]),
                value=np.array([x.value for x in a]),
            )
        return self._arrays

    def slots(self) -> dict[str, tuple[str, ...]]:
        return SLOTS

    # --- requests ---------------------------------------------------------------------------
    def draw_requests(self, rng: np.random.Generator, customers: np.ndarray) -> Requests:
        """A channel from the habits, a placement among the channel's, a call reason at
        the call centre (from the subscriber's state); no basket."""
        channel_names = np.array(CHANNELS, dtype=object)[sample_rows(rng, self.habits[customers])]
        placements = np.empty(len(customers), dtype=object)
        for name, slots in SLOTS.items():
            rows = np.flatnonzero(channel_names == name)
            placements[rows] = np.array(slots, dtype=object)[rng.integers(len(slots), size=len(rows))]
        reasons = np.full(len(customers), None, dtype=object)
        calls = np.flatnonzero(channel_names == "call_center")
        reasons[calls] = np.array(CALL_REASONS, dtype=object)[
            sample_rows(rng, self._reason_weights(customers[calls]))]
        baskets = np.zeros((len(customers), len(self.actions)), dtype=bool)
        return Requests(channel_names, placements, baskets, {"call_reason": reasons})

    def _reason_weights(self, c: np.ndarray) -> np.ndarray:
        upgrade = (self.handset_age[c] > 24) | (self.contract_days[c] < 90)
        return np.stack([
            1.0 + 1.5 * self.price_sensitivity[c],
            0.4 + 2.0 * self.dissatisfaction[c],
            0.1 + 4.0 * self.churn[c] ** 2,
            0.3 + 1.5 * upgrade,
            0.2 + 3.0 * self.interest[c, FAMILIES.index("roaming")],
            np.full(len(c), 0.8),
        ], axis=1)

    def stage_aware(self, channels: np.ndarray) -> np.ndarray:
        return np.isin(channels, list(STAGE_AWARE_CHANNELS))

    def log_columns(self, requests: Requests, stage_sent: np.ndarray) -> dict[str, Any]:
        return {"call_reason": requests.fields["call_reason"], "journey_stage": stage_sent}

    def request_context(self, requests: Requests, row: int, stage: str,
                        ids: Sequence[str]) -> dict[str, Any]:
        reason = requests.fields["call_reason"][row]
        return {**({"call_reason": str(reason)} if reason is not None else {}),
                "journey_stage": stage}

    def advance(self, stage: int, action: int) -> int:
        return int(_ADVANCE_CODES[stage, self.action_arrays()["kind"][action]])

    # --- the ground truth -----------------------------------------------------------------
    def response_probability(self, customers: np.ndarray, actions: np.ndarray,
                             requests: Requests, rows: np.ndarray,
                             stage: np.ndarray) -> np.ndarray:
        reasons = requests.fields["call_reason"][rows]
        return self.accept_probability(customers, actions, requests.channels[rows],
                                       requests.placements[rows], stage, reasons)

    def accept_probability(
        self,
        customer_rows: np.ndarray,
        action_rows: np.ndarray,
        channel: Any,
        placement: Any,
        journey_stage: Any = None,
        call_reason: Any = None,
    ) -> np.ndarray:
        """P(accept) per row of (customer, action, context), vectorised.

        `channel`, `placement`, `journey_stage` are one value for all rows or one per row
        (names or codes); `journey_stage` defaults to each customer's latest true stage;
        `call_reason` is one per row (None: no call) or None for no calls at all.
        """
        c = np.asarray(customer_rows, dtype=np.int64)
        a = np.asarray(action_rows, dtype=np.int64)
        n = len(c)
        ch = codes(channel, CHANNELS, n)
        pl = codes(placement, PLACEMENTS, n)
        st = self.stages[c, -1] if journey_stage is None else codes(journey_stage, STAGES, n)
        arr = self.action_arrays()
        kind, fam = arr["kind"][a], arr["category"][a]

        logit = _CHANNEL_LOGIT[ch] + _SEGMENT_LOGIT[self.segment[c]]
        logit += _PLACEMENT_FIT[kind, pl] + _STAGE_KIND[st, kind]
        logit += np.clip(0.6 * np.log(len(CHANNELS) * self.habits[c, ch]), -1.2, 0.8)
        interest = np.clip(np.log(len(FAMILIES) * self.interest[c, fam]), -3.0, 1.6)
        logit += interest * _INTEREST_WEIGHT[kind]
        ps = self.price_sensitivity[c]
        logit -= 1.2 * ps * (np.log1p(arr["monthly_price"][a]) - 2.5)
        logit -= 0.4 * ps * np.log1p(arr["upfront_price"][a])
        logit += 5.0 * ps * arr["discount"][a]
        logit += self.quality[a]
        if call_reason is not None:
            reason = np.array([-1 if r is None else CALL_REASONS.index(str(r))
                               for r in np.broadcast_to(np.asarray(call_reason, dtype=object), (n,))])
            called = reason >= 0
            logit += np.where(called, _REASON_KIND[np.maximum(reason, 0), kind], 0.0)
            travel = called & (reason == CALL_REASONS.index("roaming")) & (fam == FAMILIES.index("roaming"))
            logit += np.where(travel, 1.2, 0.0)
        # devices pay for old handsets near (or past) the contract's end
        age, days = self.handset_age[c], self.contract_days[c]
        handset = (kind == KINDS.index("device")) & (fam == FAMILIES.index("handsets"))
        old = 1.0 / (1.0 + np.exp(-(age - 24.0) / 4.0))
        logit += np.where(handset, 1.8 * old + 1.0 * (days < 90) - 1.0 * (age < 12), 0.0)
        # data add-ons and data plans pay for those over their allowance
        data = fam == FAMILIES.index("data")
        over = np.clip(np.log(self.data_need[c] / self.allowance[c]), -1.5, 1.5)
        logit += np.where(data & (kind != KINDS.index("retention")), 1.2 * over, 0.0)
        # retention offers pay for those about to leave
        logit += np.where(kind == KINDS.index("retention"), 4.0 * (self.churn[c] - 0.45), 0.0)
        return 1.0 / (1.0 + np.exp(-logit))

    # --- what the feature store sees --------------------------------------------------------
    def observe_customers(self, rng: np.random.Generator, snapshot: int) -> dict[str, np.ndarray]:
        """Noisy observed subscriber features at one weekly snapshot (module docstring)."""
        n = len(self.customer_ids)
        months_ago = SNAPSHOT_AGES_DAYS[snapshot] / 30.4
        draws = 3 + rng.poisson(2.0 * self.activity)
        counts = rng.multinomial(draws, self.interest)
        fam_aff = (counts + 0.5) / (draws[:, None] + 0.5 * len(FAMILIES))
        chan_aff = np.array([rng.dirichlet(30.0 * h + 0.05) for h in self.habits])
        noisy = rng.random(n) < 0.2
        stage = np.where(noisy, rng.integers(0, len(STAGES), n), self.stages[:, snapshot])
        usage = self.data_need * rng.lognormal(0.0, 0.3, size=n)
        plan_price = _ALLOWANCE_PRICE[np.searchsorted(_ALLOWANCES, self.allowance)]
        spend = plan_price + 10.0 * self.interest[:, FAMILIES.index("entertainment")] + rng.normal(0, 4, n)
        days = np.where(self.contract_days > 0, self.contract_days + SNAPSHOT_AGES_DAYS[snapshot], 0.0)
        out: dict[str, np.ndarray] = {
            "segment": np.array(SEGMENTS, dtype=object)[self.segment],
            "journey_stage": np.array(STAGES, dtype=object)[stage],
            "tenure_months": np.maximum(self.tenure - months_ago, 0.0).astype(np.float32),
            "monthly_spend": np.maximum(spend, 5.0).astype(np.float32),
            "data_usage_gb": usage.astype(np.float32),
            "days_to_contract_end": days.astype(np.float32),
            "handset_age_months": np.maximum(self.handset_age - months_ago, 0.0).astype(np.float32),
            "support_calls_90d": rng.poisson(0.3 + 2.0 * self.dissatisfaction).astype(np.int64),
            "roaming_days_90d": rng.poisson(
                12.0 * self.interest[:, FAMILIES.index("roaming")]).astype(np.int64),
        }
        for j, name in enumerate(FAMILIES):
            out[f"family_affinity_{name}"] = fam_aff[:, j].astype(np.float32)
        for j, name in enumerate(CHANNELS):
            out[f"channel_affinity_{name}"] = chan_aff[:, j].astype(np.float32)
        return out

    def observe_actions(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Action features at one snapshot: popularity drifts, the rest is catalog data."""
        q = self.quality + rng.normal(0, 0.15, len(self.actions))
        a = self.actions
        return {
            "kind": np.array([x.kind for x in a], dtype=object),
            "category": np.array([x.category for x in a], dtype=object),
            "monthly_price": np.array([x.monthly_price for x in a], dtype=np.float32),
            "upfront_price": np.array([x.upfront_price for x in a], dtype=np.float32),
            "discount": np.array([x.discount for x in a], dtype=np.float32),
            "popularity": (1.0 / (1.0 + np.exp(-2.0 * q))).astype(np.float32),
        }

    def observed(self, customers: Mapping[str, Mapping[str, Any]]) -> TelcoWorld:
        """Interests and habits become the observed affinities (normalised), the data need
        the observed usage, dissatisfaction what the support calls say; the price
        sensitivity, never observed, its segment's mean; churn is recomputed from these
        without its latent term. Contract, handset, tenure, segment, action appeal and
        everything dynamic stay true."""
        rows = [customers.get(c, {}) for c in self.customer_ids]

        def seen(name: str, truth: np.ndarray) -> np.ndarray:
            values = np.array([r.get(name, np.nan) for r in rows], float)
            return np.where(np.isnan(values), truth, values)

        dissatisfaction = np.maximum((seen("support_calls_90d", np.full(len(rows), np.nan)) - 0.3) / 2.0, 0.0)
        dissatisfaction = np.where(np.isnan(dissatisfaction), self.dissatisfaction, dissatisfaction)
        sensitivity = np.clip(0.5 + _SEGMENT_PRICE[self.segment], 0, 1)
        return replace(
            self,
            interest=affinity_shares(rows, "family_affinity", FAMILIES, self.interest),
            habits=affinity_shares(rows, "channel_affinity", CHANNELS, self.habits),
            data_need=np.maximum(seen("data_usage_gb", self.data_need), 1e-3),
            dissatisfaction=dissatisfaction,
            price_sensitivity=sensitivity,
            churn=churn_propensity(self.tenure, self.contract_days, dissatisfaction, sensitivity,
                                   np.zeros(len(rows))),
            _arrays={},
        )

    def fidelity(self, customers: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
        rows = [customers[c] for c in self.customer_ids]
        observed = np.array([[r[f"family_affinity_{f}"] for f in FAMILIES] for r in rows])
        stage = np.array([r["journey_stage"] for r in rows], dtype=object)
        usage = np.array([r["data_usage_gb"] for r in rows], float)
        return {
            "corr(observed family affinity, latent interest)":
                float(np.corrcoef(observed.ravel(), self.interest.ravel())[0, 1]),
            "stored stage == true stage":
                float((stage == np.array(STAGES, dtype=object)[self.stages[:, -1]]).mean()),
            "corr(log observed data usage, log latent data need)":
                float(np.corrcoef(np.log(usage), np.log(self.data_need))[0, 1]),
        }

    def to_json(self) -> dict[str, Any]:
        """What rebuilds this world with `TelcoWorld.from_json` (saved as demo/world.json)."""
        return {"world": self.name, "seed": self.seed, "n_customers": len(self.customer_ids),
                "now": self.now.isoformat(), "snapshot_ages_days": list(SNAPSHOT_AGES_DAYS)}

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> TelcoWorld:
        return cls.build(int(saved["seed"]), int(saved["n_customers"]),
                         datetime.fromisoformat(saved["now"]))


def _stage_start(tenure: np.ndarray, contract_days: np.ndarray, handset_age: np.ndarray,
                 churn: np.ndarray) -> np.ndarray:
    """Initial stage probabilities from the latent state (rows: customers)."""
    n = len(tenure)
    p = np.full((n, len(STAGES)), 0.02)
    p[:, 0] += 3.0 * (tenure < 3)
    p[:, 1] += 1.0
    p[:, 2] += 1.5 * ((contract_days > 0) & (contract_days < 90)) + 0.8 * (handset_age > 24)
    p[:, 3] += 3.0 * np.clip(churn - 0.35, 0, None)
    p[:, 4] += 2.0 * np.clip(churn - 0.6, 0, None)
    return p / p.sum(axis=1, keepdims=True)


_ALL = list(CHANNELS)
_WEB = ["app", "web"]
#: (kind, name, family, monthly price, upfront price, discount, channels, placements)
_CATALOG: tuple[tuple[str, str, str, float, float, float, list[str], list[str]], ...] = (
    ("plan", "Unlimited 5G", "mobile_plans", 55, 0, 0, _ALL, ["home", "shop", "counter", "agent", "message"]),
    ("plan", "Family share, 4 lines", "mobile_plans", 90, 0, 0, _WEB + ["retail_store"], ["home", "shop", "counter"]),
    ("plan", "Lite 10 GB", "mobile_plans", 20, 0, 0, _ALL, ["home", "shop", "agent", "message"]),
    ("plan", "Business pro", "mobile_plans", 65, 0, 0, _WEB + ["call_center"], ["shop", "agent"]),
    ("plan", "Data max 100 GB", "data", 40, 0, 0, _ALL, ["home", "shop", "counter", "agent", "message"]),
    ("plan", "Travel world plan", "roaming", 60, 0, 0, _WEB + ["call_center", "sms"], ["shop", "agent", "message"]),
    ("plan", "Fibre 500", "broadband", 45, 0, 0,
     _WEB + ["retail_store", "call_center"], ["home", "shop", "counter", "agent"]),
    ("plan", "Fibre 1G + TV", "entertainment", 70, 0, 0, _WEB + ["retail_store"], ["home", "shop", "counter"]),
    ("addon", "5 GB data boost", "data", 8, 0, 0,
     _WEB + ["sms", "call_center"], ["home", "account", "message", "agent"]),
    ("addon", "20 GB data boost", "data", 15, 0, 0, _WEB + ["sms"], ["account", "message"]),
    ("addon", "Unlimited weekend data", "data", 6, 0, 0, _WEB + ["retail_store"], ["home", "account", "counter"]),
    ("addon", "EU roaming pass", "roaming", 10, 0, 0,
     _WEB + ["sms", "call_center"], ["home", "account", "message", "agent"]),
    ("addon", "World roaming pass", "roaming", 25, 0, 0, _WEB + ["sms"], ["account", "message"]),
    ("addon", "Cruise and flight pack", "roaming", 15, 0, 0, _WEB, ["account"]),
    ("addon", "Music streaming", "entertainment", 10, 0, 0,
     _WEB + ["sms", "retail_store"], ["home", "account", "message", "counter"]),
    ("addon", "Video streaming", "entertainment", 13, 0, 0, _WEB + ["call_center"], ["home", "account", "agent"]),
    ("addon", "Sports pass", "entertainment", 20, 0, 0, _WEB + ["sms"], ["home", "message"]),
    ("addon", "Mobile security", "security", 4, 0, 0,
     _WEB + ["retail_store", "call_center"], ["account", "counter", "agent"]),
    ("addon", "Family safe browsing", "security", 5, 0, 0, _WEB, ["home", "account"]),
    ("addon", "Device insurance", "insurance", 9, 0, 0,
     _WEB + ["retail_store", "call_center"], ["account", "shop", "counter", "agent"]),
    ("addon", "Screen cover", "insurance", 5, 0, 0, ["retail_store", "app"], ["counter", "account"]),
    ("addon", "Watch data line", "wearables", 10, 0, 0, _WEB + ["retail_store"], ["account", "counter"]),
    ("retention", "Loyalty discount 20%", "mobile_plans", 0, 0, 0.2,
     ["call_center", "retail_store"], ["agent", "counter"]),
    ("retention", "Bill credit", "mobile_plans", 0, 0, 0.15, ["call_center", "sms"], ["agent", "message"]),
    ("retention", "Free data month", "data", 0, 0, 0.1, _WEB + ["call_center", "sms"], ["account", "agent", "message"]),
    ("retention", "Streaming on us, 6 months", "entertainment", 0, 0, 0.1,
     _WEB + ["call_center"], ["account", "agent"]),
    ("retention", "Early upgrade", "handsets", 0, 0, 0.1,
     ["call_center", "retail_store", "app"], ["agent", "counter", "account"]),
    ("retention", "Renewal bonus", "mobile_plans", 0, 0, 0.05,
     _WEB + ["call_center", "sms"], ["account", "agent", "message"]),
    ("retention", "Roaming credit", "roaming", 0, 0, 0.1, ["call_center", "sms"], ["agent", "message"]),
    ("retention", "Broadband loyalty price", "broadband", 0, 0, 0.2,
     ["call_center", "retail_store"], ["agent", "counter"]),
    ("device", "Flagship phone", "handsets", 45, 300, 0,
     _WEB + ["retail_store", "call_center"], ["home", "shop", "counter", "agent"]),
    ("device", "Mid-range phone", "handsets", 25, 100, 0,
     _WEB + ["retail_store", "call_center"], ["home", "shop", "counter", "agent"]),
    ("device", "Budget phone", "handsets", 12, 0, 0, _WEB + ["retail_store"], ["shop", "counter"]),
    ("device", "Foldable phone", "handsets", 60, 500, 0, _WEB + ["retail_store"], ["home", "shop", "counter"]),
    ("device", "Refurbished flagship", "handsets", 22, 50, 0.1, _WEB + ["retail_store"], ["shop", "counter"]),
    ("device", "Rugged phone", "handsets", 20, 80, 0, ["web", "retail_store"], ["shop", "counter"]),
    ("device", "5G tablet", "handsets", 20, 100, 0, _WEB + ["retail_store"], ["home", "shop", "counter"]),
    ("device", "Smartwatch", "wearables", 12, 50, 0, _WEB + ["retail_store"], ["home", "shop", "counter"]),
    ("device", "Kids watch", "wearables", 8, 20, 0, _WEB + ["retail_store"], ["shop", "counter"]),
    ("device", "Fitness band", "wearables", 6, 0, 0, _WEB, ["home", "shop"]),
    ("device", "Wi-Fi 6 router", "broadband", 8, 0, 0,
     _WEB + ["retail_store", "call_center"], ["shop", "counter", "agent"]),
    ("device", "Mesh extender", "broadband", 5, 0, 0, _WEB + ["retail_store"], ["shop", "counter"]),
    ("service", "eSIM setup", "mobile_plans", 0, 0, 0,
     _WEB + ["retail_store", "call_center"], ["account", "counter", "agent"]),
    ("service", "Network check", "broadband", 0, 0, 0, _WEB + ["call_center", "sms"], ["account", "agent", "message"]),
    ("service", "Bill review", "mobile_plans", 0, 0, 0, _WEB + ["call_center"], ["account", "agent"]),
    ("service", "Security checkup", "security", 0, 0, 0, _WEB + ["retail_store"], ["home", "account", "counter"]),
    ("service", "Trade-in valuation", "handsets", 0, 0, 0,
     _WEB + ["retail_store", "call_center"], ["home", "shop", "counter", "agent"]),
    ("service", "App onboarding tour", "mobile_plans", 0, 0, 0, _WEB + ["sms"], ["home", "account", "message"]),
)
_PREFIX = {"plan": "pl", "addon": "ad", "retention": "rt", "device": "dv", "service": "sv"}


def _value(kind: str, monthly: float, upfront: float, discount: float) -> float:
    """The margin an acceptance brings (retention: the margin a kept customer brings)."""
    if kind == "plan":
        return 4.0 * monthly * 0.5
    if kind == "addon":
        return 6.0 * monthly * 0.6
    if kind == "retention":
        return 120.0 * (1.0 - discount)
    if kind == "device":
        return 0.15 * upfront + 0.25 * 12.0 * monthly
    return 12.0


def _build_actions(rng: np.random.Generator) -> tuple[list[TelcoAction], np.ndarray]:
    """48 actions: 8 plans, 14 add-ons, 8 retention offers, 12 devices, 6 services."""
    actions: list[TelcoAction] = []
    counts: dict[str, int] = {}
    for kind, name, family, monthly, upfront, discount, channels, placements in _CATALOG:
        counts[kind] = counts.get(kind, 0) + 1
        monthly = float(np.round(monthly * rng.lognormal(0, 0.1), 2)) if monthly else 0.0
        upfront = float(np.round(upfront * rng.lognormal(0, 0.1), 2)) if upfront else 0.0
        actions.append(TelcoAction(
            f"{_PREFIX[kind]}{counts[kind]:03d}", name, kind, family,
            round(_value(kind, monthly, upfront, discount), 4),
            list(channels), list(placements), monthly, upfront, float(discount),
        ))
    quality = rng.normal(0.0, 0.35, len(actions))
    return actions, quality
