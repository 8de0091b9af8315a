from __future__ import annotations

import numpy as np
import pytest

from features.config import shipped_world
from service.arbitration import arbitrate
from service.catalog import Catalog, CatalogFile


def test_priority_is_p_times_v_times_c_times_l() -> None:
    catalog = Catalog(CatalogFile.model_validate({
        "actions": [
            {"action_id": "p1", "kind": "product", "value": 10.0, "lever": 1.0},
            {"action_id": "o1", "kind": "offer", "value": 4.0, "lever": 2.0},
        ],
        "context_weights": {"pos": {"offer": 1.5}},
    }), shipped_world("retail"))
    rows = np.array([0, 1])
    p = np.array([0.1, 0.2])
    pos = arbitrate(catalog, rows, p, "pos")
    assert pos.priority == pytest.approx([0.1 * 10, 0.2 * 4 * 1.5 * 2])
    web = arbitrate(catalog, rows, p, "web")
    assert web.priority == pytest.approx([1.0, 1.6])
