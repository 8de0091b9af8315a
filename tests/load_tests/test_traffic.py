"""The benchmark's mixed traffic: customers drawn by Zipf or uniformly."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from load_tests.traffic import customer_ids, mixed_traffic
from tests.demo_fixtures import DemoDirs


def _customers(items: list[dict[str, object]]) -> Counter[str]:
    bodies = (json.loads(str(i["body"])) for i in items)
    return Counter(b["customer_id"] for b in bodies if b.get("customer_id"))


def test_zipf_has_busy_customers_and_uniform_spreads_over_all(demo: DemoDirs) -> None:
    everyone = len(customer_ids(demo.data_dir))
    zipf = _customers(mixed_traffic(demo.data_dir, n=3000, seed=5))
    uniform = _customers(mixed_traffic(demo.data_dir, n=3000, seed=5, draw="uniform"))
    n = sum(uniform.values())
    # uniform: the busiest customer is near the mean; Zipf: a few customers take a big share
    assert max(uniform.values()) < 5 * n / everyone
    assert zipf.most_common(1)[0][1] > 0.05 * sum(zipf.values())
    assert len(uniform) > len(zipf)


def test_the_same_seed_draws_the_same_traffic(demo: DemoDirs) -> None:
    assert mixed_traffic(demo.data_dir, n=200, seed=3) == mixed_traffic(demo.data_dir, n=200, seed=3)


def test_an_unknown_draw_is_refused(demo: DemoDirs) -> None:
    with pytest.raises(ValueError, match="draw 'pareto'"):
        mixed_traffic(demo.data_dir, n=10, draw="pareto")
