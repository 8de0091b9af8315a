"""The benchmark's traffic: a fixed, seeded mix of decision requests and feedback.

- online shop, 70%: channel `web` or `app`, a placement of the shop, 50 candidate
  actions drawn from the catalog, a device; a cart placement carries a small basket;
- in-store POS, 30%: channel `pos`, placement `checkout`, the catalog's offers as
  candidates, a store id, a basket of products and its value;
- customers: known ones drawn from a Zipf-like distribution over the demo customers
  (a few busy customers, a long tail), about 10% anonymous;
- about 20% of decisions are followed by one feedback event on a shown action.

Every target gets the same sequence: k6 walks the list in order (see k6_decisions.js).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

N_CANDIDATES = 50
ONLINE_SHARE = 0.7
ANONYMOUS_SHARE = 0.1
FEEDBACK_SHARE = 0.2
ZIPF_EXPONENT = 1.1
N_STORES = 40

#: The shop's slots and devices (as in the demo world, training/world.py).
_ONLINE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "web": (("home", "product", "cart", "search"), ("desktop", "mobile", "tablet")),
    "app": (("home", "product", "cart", "search"), ("mobile", "tablet")),
}
#: outcome -> probability, given that a decision gets feedback at all.
_OUTCOMES = {"impression": 0.5, "click": 0.2, "dismiss": 0.15, "accept": 0.1, "purchase": 0.05}


CUSTOMER_DRAWS = ("zipf", "uniform")


def customer_ids(data_dir: Path) -> list[str]:
    """The demo's known customer ids, sorted."""
    import pandas as pd

    from features.config import source_path

    ids = pd.read_parquet(source_path(data_dir, "customer"), columns=["customer_id"])
    return sorted(ids["customer_id"].unique().tolist())


def mixed_traffic(data_dir: Path, n: int = 5000, seed: int = 1,
                  draw: str = "zipf", candidates: bool = True) -> list[dict[str, Any]]:
    """`n` items `{"body": <JSON text>, "channel": ..., "fb": null | {outcome, value, rank}}`.

    `draw`: how known customers are drawn, `zipf` (a few busy ones, a long tail) or
    `uniform` (every customer alike: what a cache in front of the store sees at worst).
    `candidates=False`: the bodies send no candidate list (the catalog's size benchmarks).
    """
    if draw not in CUSTOMER_DRAWS:
        raise ValueError(f"draw {draw!r}: one of {', '.join(CUSTOMER_DRAWS)}")
    rng = np.random.default_rng(seed)
    catalog = json.loads((data_dir / "catalog.json").read_text())["actions"]
    action_ids = [a["action_id"] for a in catalog]
    products = [a["action_id"] for a in catalog if a["kind"] == "product"]
    offers = [a["action_id"] for a in catalog if a["kind"] == "offer"]
    if len(action_ids) < N_CANDIDATES or not offers or not products:
        raise SystemExit(f"demo catalog too small for the mix: {len(action_ids)} actions")
    customers = customer_ids(data_dir)
    popularity = rng.permutation(len(customers))  # who is busy is not the id order
    weights = 1.0 / np.arange(1, len(customers) + 1) ** ZIPF_EXPONENT
    weights /= weights.sum()
    # the inverse CDF, once: rng.choice(p=weights) would build it again for every draw
    # (the same draws: choice searches the same cumulative sum with one uniform)
    cdf = weights.cumsum()
    cdf /= cdf[-1]
    outcomes, outcome_p = list(_OUTCOMES), np.array(list(_OUTCOMES.values()))

    items: list[dict[str, Any]] = []
    for _ in range(n):
        customer = None
        if rng.random() >= ANONYMOUS_SHARE:
            if draw == "zipf":
                customer = customers[popularity[int(cdf.searchsorted(rng.random(), side="right"))]]
            else:
                customer = customers[int(rng.integers(len(customers)))]
        basket: list[str] = []
        if rng.random() < ONLINE_SHARE:
            channel = str(rng.choice(list(_ONLINE)))
            placements, devices = _ONLINE[channel]
            placement = str(rng.choice(placements))
            context: dict[str, Any] = {"device": str(rng.choice(devices))}
            if placement == "cart":
                basket = [str(a) for a in rng.choice(products, rng.integers(1, 4), replace=False)]
                context |= {"basket": basket, "cart_value": round(float(rng.lognormal(4, 0.8)), 2)}
            chosen = [str(a) for a in rng.choice(action_ids, N_CANDIDATES, replace=False)]
            limit = 5
        else:
            channel, placement = "pos", "checkout"
            basket = [str(a) for a in rng.choice(products, rng.integers(1, 7), replace=False)]
            context = {"store_id": f"s{rng.integers(N_STORES):03d}", "device": "terminal",
                       "basket": basket, "cart_value": round(float(rng.lognormal(4.5, 0.9)), 2)}
            chosen = list(offers)
            limit = 3
        body: dict[str, Any] = {"channel": channel, "placement": placement, "context": context,
                                "candidates": chosen, "limit": limit}
        if not candidates:
            del body["candidates"]
        if customer is not None:
            body["customer_id"] = customer
        fb = None
        if rng.random() < FEEDBACK_SHARE:
            outcome = str(rng.choice(outcomes, p=outcome_p))
            value = round(float(rng.lognormal(3, 1)), 2) if outcome in ("accept", "purchase") else None
            fb = {"outcome": outcome, "value": value, "rank": int(rng.integers(limit))}
        items.append({"body": json.dumps(body, separators=(",", ":")), "channel": channel, "fb": fb})
    return items


def describe(items: list[dict[str, Any]]) -> dict[str, float]:
    """The realised shares of the mix, for the report."""
    n = len(items)
    bodies = [json.loads(i["body"]) for i in items]
    return {
        "items": n,
        "online_share": round(sum(b["channel"] != "pos" for b in bodies) / n, 3),
        "pos_share": round(sum(b["channel"] == "pos" for b in bodies) / n, 3),
        "anonymous_share": round(sum("customer_id" not in b for b in bodies) / n, 3),
        "feedback_share": round(sum(i["fb"] is not None for i in items) / n, 3),
        "distinct_customers": len({b.get("customer_id") for b in bodies} - {None}),
    }


def write_wrk_bodies(items: list[dict[str, Any]], path: Path) -> None:
    """One JSON body per line, for wrk's Lua script (decisions only)."""
    path.write_text("".join(i["body"] + "\n" for i in items))
