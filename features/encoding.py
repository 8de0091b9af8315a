"""Raw features -> the model's float32 input matrix, shared by training and serving.

One encoder serves both sides so training and serving cannot drift. It works on blocks:

    [ customer block | context block | action block | cross features | basket block ]

At decision time the customer and context blocks are one row each and are broadcast over
the candidates; the action block is precomputed for the whole catalog and gathered by
index; the cross features are numpy gathers. No per-candidate Python runs. Training
passes one row per example for every block and gets the same columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from features.schema import (
    ACTION_DEFAULTS,
    ACTION_KINDS,
    CATEGORIES,
    CHANNELS,
    CUSTOMER_DEFAULTS,
    DEVICES,
    JOURNEY_STAGES,
    PLACEMENTS,
    SEGMENTS,
)

MAX_BASKET = 50
#: log_category_affinity of an action without a known category (affinity 0) reads as this
MIN_AFFINITY = 1e-3


def _one_hot_names(prefix: str, values: Sequence[str]) -> list[str]:
    return [f"{prefix}={v}" for v in values]


CUSTOMER_COLUMNS = [
    "log_recency_days", "log_frequency_90d", "log_monetary_90d", "price_sensitivity",
    *_one_hot_names("segment", SEGMENTS),
    *_one_hot_names("journey_stage", JOURNEY_STAGES),
]
CONTEXT_COLUMNS = [
    *_one_hot_names("channel", CHANNELS),
    *_one_hot_names("placement", PLACEMENTS),
    *_one_hot_names("device", DEVICES),
    "log_cart_value", "basket_size",
]
ACTION_COLUMNS = [
    *_one_hot_names("kind", ACTION_KINDS),
    *_one_hot_names("category", CATEGORIES),
    "log_price", "margin", "discount", "popularity",
]
CROSS_COLUMNS = [
    "category_affinity", "channel_affinity", "basket_category_share", "in_basket",
    # the log of the first: preferences act multiplicatively on the odds, and a linear
    # model over pairs (training/pairwise.py) cannot take the log itself
    "log_category_affinity",
]
#: Which categories the basket holds: lets the model learn which categories go together
#: (a basket with a phone makes a case more likely), which no single cross column carries.
BASKET_COLUMNS = _one_hot_names("basket_has", CATEGORIES)

#: The model's input columns, in order. Manifests record this list; the service refuses a
#: model whose manifest disagrees.
MODEL_COLUMNS = [*CUSTOMER_COLUMNS, *CONTEXT_COLUMNS, *ACTION_COLUMNS, *CROSS_COLUMNS, *BASKET_COLUMNS]

_CHANNEL_INDEX = {c: i for i, c in enumerate(CHANNELS)}
_STAGE_OFFSET = CUSTOMER_COLUMNS.index(f"journey_stage={JOURNEY_STAGES[0]}")
_CATEGORY_INDEX = {c: i for i, c in enumerate(CATEGORIES)}
_EMPTY_BASKET = np.zeros(len(BASKET_COLUMNS), dtype=np.float32)


def _index(values: Sequence[str], value: Any) -> int:
    try:
        return values.index(value)
    except ValueError:
        return -1


def _float(raw: Mapping[str, Any], name: str, defaults: Mapping[str, Any]) -> float:
    value = raw.get(name)
    if value is None:
        value = defaults[name]
    return float(value)


@dataclass(frozen=True)
class CustomerVector:
    """One customer's encoded block plus the affinities the cross features gather from."""

    block: np.ndarray  # (len(CUSTOMER_COLUMNS),)
    category_affinity: np.ndarray  # (len(CATEGORIES),)
    channel_affinity: np.ndarray  # (len(CHANNELS),)
    journey_stage: str
    segment: str

    @cached_property
    def affinity_by_category_code(self) -> np.ndarray:
        """`category_affinity` with a 0 appended: index -1 (unknown category) gives 0."""
        return np.append(self.category_affinity, np.float32(0.0))


def encode_customer(raw: Mapping[str, Any], journey_stage: str | None = None) -> CustomerVector:
    """Encode one customer's raw features (missing ones take the schema's defaults).

    `journey_stage` from the request context, when given, overrides the stored stage.
    """
    d = CUSTOMER_DEFAULTS
    block = np.zeros(len(CUSTOMER_COLUMNS), dtype=np.float32)
    block[0] = np.log1p(max(_float(raw, "recency_days", d), 0.0))
    block[1] = np.log1p(max(_float(raw, "frequency_90d", d), 0.0))
    block[2] = np.log1p(max(_float(raw, "monetary_90d", d), 0.0))
    block[3] = _float(raw, "price_sensitivity", d)
    segment = str(raw.get("segment") or d["segment"])
    stage = journey_stage or str(raw.get("journey_stage") or d["journey_stage"])
    i = _index(SEGMENTS, segment)
    if i >= 0:
        block[4 + i] = 1.0
    i = _index(JOURNEY_STAGES, stage)
    if i >= 0:
        block[_STAGE_OFFSET + i] = 1.0
    cat = np.array([_float(raw, f"category_affinity_{c}", d) for c in CATEGORIES], np.float32)
    chan = np.array([_float(raw, f"channel_affinity_{c}", d) for c in CHANNELS], np.float32)
    return CustomerVector(block, cat, chan, stage, segment)


def with_journey_stage(customer: CustomerVector, journey_stage: str | None) -> CustomerVector:
    """`customer` with its journey stage replaced (None or the same stage: unchanged).

    Equal to encoding the raw features again with that `journey_stage`, without doing so:
    the service caches each customer's vector and a request's context may name the stage.
    """
    if not journey_stage or journey_stage == customer.journey_stage:
        return customer
    block = customer.block.copy()
    block[_STAGE_OFFSET:_STAGE_OFFSET + len(JOURNEY_STAGES)] = 0.0
    i = _index(JOURNEY_STAGES, journey_stage)
    if i >= 0:
        block[_STAGE_OFFSET + i] = 1.0
    return CustomerVector(block, customer.category_affinity, customer.channel_affinity,
                          journey_stage, customer.segment)


def encode_context(
    channel: str, placement: str, device: str | None, cart_value: float, basket_size: int
) -> np.ndarray:
    """Encode the request-time context (unknown placements and devices encode as all-zero)."""
    block = np.zeros(len(CONTEXT_COLUMNS), dtype=np.float32)
    offsets = (0, len(CHANNELS), len(CHANNELS) + len(PLACEMENTS))
    for offset, values, value in zip(
        offsets, (CHANNELS, PLACEMENTS, DEVICES), (channel, placement, device), strict=False
    ):
        i = _index(values, value)
        if i >= 0:
            block[offset + i] = 1.0
    block[-2] = np.log1p(max(cart_value, 0.0))
    block[-1] = min(basket_size, MAX_BASKET)
    return block


@dataclass(frozen=True)
class ActionMatrix:
    """The encoded action block of a whole catalog, row i = action i."""

    ids: list[str]
    block: np.ndarray  # (n_actions, len(ACTION_COLUMNS)) float32
    category: np.ndarray  # (n_actions,) int, index into CATEGORIES (-1 unknown)
    kind: np.ndarray  # (n_actions,) int, index into ACTION_KINDS (-1 unknown)

    @property
    def index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.ids)}


def encode_actions(rows: Mapping[str, Mapping[str, Any]]) -> ActionMatrix:
    """Encode every action's raw features; called at start-up and on cache refresh."""
    ids = list(rows)
    block = np.zeros((len(ids), len(ACTION_COLUMNS)), dtype=np.float32)
    category = np.full(len(ids), -1, dtype=np.int64)
    kind = np.full(len(ids), -1, dtype=np.int64)
    n_kinds = len(ACTION_KINDS)
    for r, action_id in enumerate(ids):
        raw = rows[action_id]
        k = _index(ACTION_KINDS, raw.get("kind") or ACTION_DEFAULTS["kind"])
        c = _index(CATEGORIES, raw.get("category") or ACTION_DEFAULTS["category"])
        kind[r], category[r] = k, c
        if k >= 0:
            block[r, k] = 1.0
        if c >= 0:
            block[r, n_kinds + c] = 1.0
        tail = n_kinds + len(CATEGORIES)
        block[r, tail] = np.log1p(max(_float(raw, "price", ACTION_DEFAULTS), 0.0))
        block[r, tail + 1] = _float(raw, "margin", ACTION_DEFAULTS)
        block[r, tail + 2] = _float(raw, "discount", ACTION_DEFAULTS)
        block[r, tail + 3] = _float(raw, "popularity", ACTION_DEFAULTS)
    return ActionMatrix(ids, block, category, kind)


def assemble(
    customer_block: np.ndarray,
    context_block: np.ndarray,
    action_block: np.ndarray,
    category_affinity: np.ndarray,
    channel_affinity: np.ndarray | float,
    basket_category_share: np.ndarray | float,
    in_basket: np.ndarray | float,
    basket_block: np.ndarray,
) -> np.ndarray:
    """Stack the blocks into the model input; customer/context/basket rows broadcast over actions.

    A scalar cross feature is the same for every action (as the channel affinity is).
    """
    n = action_block.shape[0]
    out = np.empty((n, len(MODEL_COLUMNS)), dtype=np.float32)
    a = len(CUSTOMER_COLUMNS)
    b = a + len(CONTEXT_COLUMNS)
    c = b + len(ACTION_COLUMNS)
    out[:, :a] = customer_block
    out[:, a:b] = context_block
    out[:, b:c] = action_block
    out[:, c] = category_affinity
    out[:, c + 1] = channel_affinity
    out[:, c + 2] = basket_category_share
    out[:, c + 3] = in_basket
    out[:, c + 4] = np.log(np.maximum(category_affinity, MIN_AFFINITY))
    out[:, c + len(CROSS_COLUMNS):] = basket_block
    return out


def encode_candidates(
    customer: CustomerVector,
    context_block: np.ndarray,
    channel: str,
    actions: ActionMatrix,
    candidate_rows: np.ndarray,
    basket_rows: np.ndarray,
) -> np.ndarray:
    """The model input for one decision: one row per candidate, vectorised."""
    cats = actions.category[candidate_rows]
    cat_aff = customer.affinity_by_category_code[cats]
    ch = _CHANNEL_INDEX.get(channel, -1)
    chan_aff = customer.channel_affinity[ch] if ch >= 0 else 0.0
    share: np.ndarray | float
    in_basket: np.ndarray | float
    if basket_rows.size:
        basket_cats = actions.category[basket_rows]
        per_category = np.bincount(basket_cats[basket_cats >= 0], minlength=len(CATEGORIES))
        share = np.where(cats >= 0, per_category[np.maximum(cats, 0)] / basket_rows.size, 0.0)
        in_basket_mask = np.zeros(len(actions.ids), dtype=bool)
        in_basket_mask[basket_rows] = True
        in_basket = in_basket_mask[candidate_rows].astype(np.float32)
        basket_block = (per_category > 0).astype(np.float32)
    else:
        share, in_basket, basket_block = 0.0, 0.0, _EMPTY_BASKET
    return assemble(
        customer.block, context_block, actions.block[candidate_rows],
        cat_aff, chan_aff, share, in_basket, basket_block,
    )
