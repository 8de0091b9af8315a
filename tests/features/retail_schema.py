"""The retail world as code constants, from before the world configuration existed.

Once the feature schema of the service (`features/schema.py`); now the pin of
`features/worlds/retail.yaml`: `tests/features/test_config.py` checks that the shipped
retail world declares exactly these channels, vocabularies, views and defaults, so the
demo's data, its truth (`training/world.py`, which reads the world file) and the golden
encoding stay what they were.
"""

from __future__ import annotations

from typing import Final, Literal

PROJECT: Final = "nextbest"

CHANNELS: Final = ("web", "app", "pos", "call_center", "email")
PLACEMENTS: Final = ("home", "product", "cart", "checkout", "search", "inbox", "service")
DEVICES: Final = ("mobile", "desktop", "tablet", "terminal")
SEGMENTS: Final = ("new", "occasional", "regular", "loyal", "vip")
JOURNEY_STAGES: Final = ("awareness", "consideration", "purchase", "retention", "churn_risk")
ACTION_KINDS: Final = ("product", "offer", "service")
CATEGORIES: Final = ("electronics", "fashion", "home_garden", "beauty", "sports", "grocery")

FeatureType = Literal["string", "float", "int"]

CUSTOMER_ENTITY: Final = "customer"
CUSTOMER_JOIN_KEY: Final = "customer_id"
ACTION_ENTITY: Final = "action"
ACTION_JOIN_KEY: Final = "action_id"

#: feature view -> [(feature, type)]. Both customer views share the customer entity, so
#: Feast stores them in ONE Redis hash per customer: one HMGET reads them all.
CUSTOMER_VIEWS: Final[dict[str, list[tuple[str, FeatureType]]]] = {
    "customer_profile": [
        ("segment", "string"),
        ("journey_stage", "string"),
        ("last_channel", "string"),
        ("recency_days", "float"),
        ("frequency_90d", "int"),
        ("monetary_90d", "float"),
        ("price_sensitivity", "float"),
    ],
    "customer_affinity": [
        *[(f"channel_affinity_{c}", "float") for c in CHANNELS],
        *[(f"category_affinity_{c}", "float") for c in CATEGORIES],
    ],
}

ACTION_VIEWS: Final[dict[str, list[tuple[str, FeatureType]]]] = {
    "action_attributes": [
        ("kind", "string"),
        ("category", "string"),
        ("price", "float"),
        ("margin", "float"),
        ("discount", "float"),
        ("popularity", "float"),
    ],
}

#: The FeatureService the demo model names in its manifest.
FEATURE_SERVICE: Final = "nextbest_ranker_v1"

#: Values used when a customer is unknown or a feature is missing: a plausible average
#: customer, so an anonymous request still gets a sensible ranking.
CUSTOMER_DEFAULTS: Final[dict[str, str | float]] = {
    "segment": "occasional",
    "journey_stage": "awareness",
    "last_channel": "web",
    "recency_days": 30.0,
    "frequency_90d": 1.0,
    "monetary_90d": 50.0,
    "price_sensitivity": 0.5,
    **{f"channel_affinity_{c}": 0.2 for c in CHANNELS},
    **{f"category_affinity_{c}": 1.0 / len(CATEGORIES) for c in CATEGORIES},
}

ACTION_DEFAULTS: Final[dict[str, str | float]] = {
    "kind": "product",
    "category": "electronics",
    "price": 0.0,
    "margin": 0.0,
    "discount": 0.0,
    "popularity": 0.0,
}


def customer_features() -> list[tuple[str, str, FeatureType]]:
    """(view, feature, type) for every customer feature, in a stable order."""
    return [(v, f, t) for v, fs in CUSTOMER_VIEWS.items() for f, t in fs]


def action_features() -> list[tuple[str, str, FeatureType]]:
    """(view, feature, type) for every action feature, in a stable order."""
    return [(v, f, t) for v, fs in ACTION_VIEWS.items() for f, t in fs]
