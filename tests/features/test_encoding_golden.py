"""Retail encodes bit for bit as the encoder did before it was compiled from the world.

`data/retail_encoding_golden.npz` holds what the hard-coded retail encoder (the one
`features/schema.py`'s constants drove, now `tests/features/retail_schema.py`) produced
for the inputs of `golden_cases.py`, column names included; `Encoder(retail)` must
reproduce every array exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.config import World, shipped_world
from features.encoding import Encoder
from tests.features import golden_cases as g
from training.dataset import encode_rows

GOLDEN = Path(__file__).parent / "data" / "retail_encoding_golden.npz"


@pytest.fixture(scope="module")
def retail() -> World:
    return shipped_world("retail")


def _context(device: str | None, cart_value: float, basket: list[str],
             journey_stage: str | None = None) -> dict[str, Any]:
    return {"device": device, "cart_value": cart_value, "basket": basket, "journey_stage": journey_stage}


def _encode(world: World) -> dict[str, Any]:
    encoder = Encoder(world)
    out: dict[str, Any] = {"columns": np.array(encoder.columns)}
    customers, stages = g.customers(), g.stages()
    encoded = [(encoder.encode_customer(raw, {"journey_stage": s}),
                encoder.with_context(encoder.encode_customer(raw), {"journey_stage": s}))
               for raw in customers for s in stages]
    out["customer_block"] = np.stack([v.block for v, _ in encoded])
    out["customer_category_affinity"] = np.stack([v.affinities[0][:-1] for v, _ in encoded])
    out["customer_channel_affinity"] = np.stack([v.affinities[1][:-1] for v, _ in encoded])
    out["customer_with_stage"] = np.stack([w.block for _, w in encoded])

    contexts = g.contexts()
    out["context_block"] = np.stack([
        encoder.encode_context(c, p, _context(d, v, b)).block for c, p, d, v, b in contexts])
    rows = g.actions()
    m = encoder.encode_actions(rows)
    out["action_block"] = m.block
    out["action_category"] = m.code("category")
    out["action_kind"] = m.code("kind")

    index = m.index
    xs = []
    k = 0
    for c, p, d, v, b in contexts:
        for candidates in g.candidate_sets(len(m.ids)):
            raw, stage = customers[k % len(customers)], stages[k % len(stages)]
            k += 1
            ctx = _context(d, v, b, stage)
            cv = encoder.with_context(encoder.encode_customer(raw), ctx)
            basket_rows = np.array([index[a] for a in b if a in index], dtype=np.int64)
            xs.append(encoder.encode_candidates(cv, encoder.encode_context(c, p, ctx), m,
                                                candidates, basket_rows))
    out["candidates"] = np.concatenate(xs)

    # a joined training frame, one row per (customer, context, action); the catalog holds
    # the actions of known category (the catalog refuses any other)
    customer_names = list(world.features_of(world.customer_entity))
    action_names = list(world.features_of(world.action_entity))
    ids = list(rows)
    records = []
    for i, (c, p, d, v, b) in enumerate(contexts):
        raw, action_id = customers[i % len(customers)], ids[(i * 7) % len(ids)]
        record = {n: raw.get(n) for n in customer_names}
        record.update({n: rows[action_id].get(n) for n in action_names})
        record.update(action_id=action_id, channel=c, placement=p, device=d, cart_value=v,
                      basket=",".join(b), context_journey_stage=stages[i % len(stages)])
        records.append(record)
    categories = world.vocabulary("categories")
    catalog = encoder.encode_actions({a: r for a, r in rows.items() if r.get("category") in categories})
    out["training"] = encode_rows(pd.DataFrame(records), catalog, encoder)
    return out


def test_retail_encodes_as_the_golden_arrays(retail: World) -> None:
    golden = np.load(GOLDEN)
    got = _encode(retail)
    assert sorted(got) == sorted(golden.files)
    for name in golden.files:
        assert got[name].dtype == golden[name].dtype, name
        assert got[name].shape == golden[name].shape, name
        assert np.array_equal(got[name], golden[name]), name
