"""Fixtures for the training pipeline tests: one small demo world, applied to SQLite.

Built once per session (Feast apply + materialize take seconds). Small on purpose: the
tests check that the pipeline is right, not that the model is good.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL_CUSTOMERS = 300
SMALL_INTERACTIONS = 4000


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated demo data dir whose Feast registry and SQLite store are loaded."""
    from features.config import shipped_world
    from features.store import apply_and_materialize
    from training.demo_data import generate

    data_dir = tmp_path_factory.mktemp("training") / "var"
    generate(data_dir, seed=11, n_customers=SMALL_CUSTOMERS,
             n_interactions=SMALL_INTERACTIONS, progress=False)
    apply_and_materialize(shipped_world("retail"), data_dir, None)
    return data_dir


@pytest.fixture(scope="session")
def small_training_set(small_data_dir: Path):  # -> training.dataset.TrainingSet
    from training.dataset import build_training_set

    return build_training_set(small_data_dir)
