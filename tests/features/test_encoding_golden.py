"""Retail encodes bit for bit as the encoder did before it was compiled from the world.

`data/retail_encoding_golden.npz` holds what the hard-coded retail encoder produced for
the inputs of `golden_cases.py`; the encoder must reproduce every array exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.encoding import encode_actions, encode_candidates, encode_context, encode_customer, with_journey_stage
from features.schema import CATEGORIES, action_features, customer_features
from tests.features import golden_cases as g
from training.dataset import encode_rows

GOLDEN = Path(__file__).parent / "data" / "retail_encoding_golden.npz"


def _encode() -> dict[str, Any]:
    out: dict[str, Any] = {}
    cs = g.customers(); st = g.stages()
    blocks, cat, chan, wjs = [], [], [], []
    for raw in cs:
        for s in st:
            v = encode_customer(raw, s)
            blocks.append(v.block); cat.append(v.category_affinity); chan.append(v.channel_affinity)
            wjs.append(with_journey_stage(encode_customer(raw), s).block)
    out["customer_block"] = np.stack(blocks); out["customer_category_affinity"] = np.stack(cat)
    out["customer_channel_affinity"] = np.stack(chan); out["customer_with_stage"] = np.stack(wjs)
    ctxs = g.contexts()
    out["context_block"] = np.stack([encode_context(c, p, d, v, len(b)) for c, p, d, v, b in ctxs])
    rows = g.actions(); m = encode_actions(rows)
    out["action_block"] = m.block; out["action_category"] = m.category; out["action_kind"] = m.kind
    index = m.index
    xs = []
    sets = g.candidate_sets(len(m.ids))
    k = 0
    for j, (c, p, d, v, b) in enumerate(ctxs):
        for s in sets:
            raw = cs[k % len(cs)]; stage = st[k % len(st)]; k += 1
            cv = with_journey_stage(encode_customer(raw), stage)
            basket_rows = np.array([index[a] for a in b if a in index], dtype=np.int64)
            xs.append(encode_candidates(cv, encode_context(c, p, d, v, len(b)), c, m, s, basket_rows))
    out["candidates"] = np.concatenate(xs)
    # a joined training frame: one row per (customer, context, action)
    recs = []
    cnames = [f for _, f, _ in customer_features()]; anames = [f for _, f, _ in action_features()]
    ids = list(rows)
    for i, (c, p, d, v, b) in enumerate(ctxs):
        raw = cs[i % len(cs)]; aid = ids[(i * 7) % len(ids)]
        rec = {n: raw.get(n) for n in cnames}
        rec.update({n: rows[aid].get(n) for n in anames})
        rec.update(action_id=aid, channel=c, placement=p, device=d, cart_value=v, basket=",".join(b),
                   context_journey_stage=st[i % len(st)])
        recs.append(rec)
    frame = pd.DataFrame(recs)
    basket_categories = {a: CATEGORIES.index(r["category"]) for a, r in rows.items() if r.get("category") in CATEGORIES}
    out["training"] = encode_rows(frame, basket_categories)
    from features.encoding import MODEL_COLUMNS
    out["columns"] = np.array(MODEL_COLUMNS)
    return out


def test_retail_encodes_as_the_golden_arrays() -> None:
    golden = np.load(GOLDEN)
    got = _encode()
    assert sorted(got) == sorted(golden.files)
    for name in golden.files:
        assert got[name].dtype == golden[name].dtype, name
        assert np.array_equal(got[name], golden[name]), name
