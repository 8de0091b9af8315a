"""The example worlds' hidden truths by name, and rebuilding one from `demo/world.json`.

Each example world ships a configuration (`features/worlds/<name>.yaml`) and a hidden
truth behind `training/truth.py`'s interface. The demo generator records which one it
drew the data from in `<data_dir>/demo/world.json` (with the seed, the size and the
anchor time), so the simulator and the tests rebuild the very truth the data came from.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from training.telco_world import TelcoWorld
from training.truth import Truth
from training.world import World

#: world name -> its truth; a world.json without a name predates telco: retail
TRUTHS: dict[str, type[World] | type[TelcoWorld]] = {"retail": World, "telco": TelcoWorld}
EXAMPLES = tuple(TRUTHS)
WORLD_FILE = Path("demo") / "world.json"


def build_truth(name: str, seed: int, n_customers: int, now: datetime,
                n_actions: int | None = None) -> Truth:
    """The truth of example world `name`; the same seed, size and time rebuild the same one.

    `n_actions`: a scaled catalog (retail only; None: the world's own)."""
    if name not in TRUTHS:
        raise ValueError(f"no example world {name!r}; choose one of {', '.join(EXAMPLES)}")
    if n_actions is None:
        return TRUTHS[name].build(seed, n_customers, now)
    if name != "retail":
        raise ValueError(f"n_actions: only the retail world scales its catalog, not {name!r}")
    return World.build(seed, n_customers, now, n_actions)


def truth_from_json(saved: dict[str, Any]) -> Truth:
    """The truth `saved` (a world.json document) describes."""
    n_actions = saved.get("n_actions")
    return build_truth(str(saved.get("world", "retail")), int(saved["seed"]),
                       int(saved["n_customers"]), datetime.fromisoformat(saved["now"]),
                       int(n_actions) if n_actions is not None else None)


def load_truth(data_dir: Path) -> Truth:
    """The truth the data of `data_dir` was generated from (its demo/world.json)."""
    path = Path(data_dir) / WORLD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no world.json; generate the example data first")
    return truth_from_json(json.loads(path.read_text()))
