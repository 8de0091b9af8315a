"""load_tests/decide_cost.py: a decision's CPU and stage times, in process, on the demo data."""

from __future__ import annotations

import asyncio
import gc
import shutil
from pathlib import Path

from load_tests import decide_cost
from service.metrics import STAGES
from tests.demo_fixtures import DemoDirs


def test_a_short_run_measures_the_cpu_and_every_stage(demo: DemoDirs, tmp_path: Path) -> None:
    data_dir, models_dir = tmp_path / "var", tmp_path / "models"
    shutil.copytree(demo.data_dir, data_dir)
    shutil.copytree(demo.models_dir, models_dir)
    result = asyncio.run(decide_cost.measure(data_dir, models_dir, requests=40, passes=1, gc_off=True))
    assert gc.isenabled()
    assert set(result) == {"cpu", *STAGES}
    assert result["cpu"] > 0 and result["features"] > 0 and result["offline"] > 0
    table = decide_cost.table({"this": [result], "other": [result]})
    assert "| CPU (process time) |" in table and "| stage offline |" in table
    assert table.splitlines()[2].endswith(" 1.000 |")
