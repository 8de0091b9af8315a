"""The fixed, seeded inputs of the retail encoding golden test (tests/features/test_encoding_golden.py).

Customers with missing and unknown features, contexts over every channel, placement and
device (and unknown ones), baskets empty, known and unknown, actions of unknown kind and
category, candidate sets, and a small joined training frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.features.retail_schema import (
    ACTION_KINDS,
    CATEGORIES,
    CHANNELS,
    DEVICES,
    JOURNEY_STAGES,
    PLACEMENTS,
    SEGMENTS,
)

SEED = 21


def customers() -> list[dict[str, Any]]:
    rng = np.random.default_rng(SEED)
    out: list[dict[str, Any]] = [{}, {"segment": "not-a-segment", "journey_stage": "nowhere"},
                                 {"segment": None, "recency_days": None, "price_sensitivity": 0.9},
                                 {"recency_days": -4.0, "monetary_90d": 0.0, "frequency_90d": 0}]
    for i in range(12):
        raw: dict[str, Any] = {
            "segment": SEGMENTS[i % len(SEGMENTS)],
            "journey_stage": JOURNEY_STAGES[i % len(JOURNEY_STAGES)],
            "last_channel": CHANNELS[i % len(CHANNELS)],
            "recency_days": float(rng.exponential(20.0)),
            "frequency_90d": int(rng.integers(0, 30)),
            "monetary_90d": float(rng.exponential(200.0)),
            "price_sensitivity": float(rng.random()),
        }
        for c in CATEGORIES:
            raw[f"category_affinity_{c}"] = float(rng.random())
        for c in CHANNELS:
            raw[f"channel_affinity_{c}"] = float(rng.random())
        for key in list(raw):
            if rng.random() < 0.15:
                del raw[key]  # a missing feature reads as its default
        out.append(raw)
    return out


def stages() -> list[str | None]:
    return [None, *JOURNEY_STAGES, "not-a-stage"]


def actions() -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(SEED + 1)
    rows: dict[str, dict[str, Any]] = {}
    for i in range(30):
        rows[f"a{i}"] = {
            "kind": ACTION_KINDS[i % len(ACTION_KINDS)],
            "category": CATEGORIES[i % len(CATEGORIES)],
            "price": float(rng.exponential(80.0)),
            "margin": float(rng.random()),
            "discount": float(rng.random() * 0.5),
            "popularity": float(rng.random()),
        }
    rows["unknown_kind"] = {"kind": "voucher", "category": "beauty", "price": 5.0}
    rows["unknown_category"] = {"kind": "offer", "category": "toys", "margin": 0.3}
    rows["empty"] = {}
    rows["negative_price"] = {"kind": "product", "category": "grocery", "price": -3.0}
    return rows


def contexts() -> list[tuple[str, str, str | None, float, list[str]]]:
    """(channel, placement, device, cart_value, basket ids)."""
    baskets: list[list[str]] = [[], ["a1"], ["a1", "a7", "a13"], ["a2", "nope", "unknown_category"],
                                ["nope"], ["a3", "a3", "a9"]]
    out = []
    i = 0
    for channel in (*CHANNELS, "kiosk"):
        for placement in (*PLACEMENTS, "banner"):
            device = (*DEVICES, None, "watch")[i % (len(DEVICES) + 2)]
            cart = (0.0, 12.5, 999.0, -1.0)[i % 4]
            out.append((channel, placement, device, cart, baskets[i % len(baskets)]))
            i += 1
    return out


def candidate_sets(n_actions: int) -> list[np.ndarray]:
    rng = np.random.default_rng(SEED + 2)
    sets = [np.arange(n_actions), np.array([0]), np.array([n_actions - 1, 0, 5])]
    sets += [rng.choice(n_actions, size=12, replace=False) for _ in range(3)]
    return [s.astype(np.int64) for s in sets]
