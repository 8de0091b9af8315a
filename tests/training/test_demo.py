"""The demo world's preparation: a model trained on other input columns or encodings is
replaced, and the demo promotes what it serves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from features.config import shipped_world
from service.manifest import MANIFEST_FILE, read_manifest, versions
from service.registry import POINTERS_FILE, FilePointers
from tests.demo_fixtures import DemoDirs
from tests.service.conftest import make_settings
from training.demo import prepare_demo


@pytest.mark.parametrize("change", ["columns", "fingerprint"])
def test_a_model_on_other_columns_is_retrained_once(demo: DemoDirs, tmp_path: Path, change: str) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(demo.models_dir, models_dir)
    settings = make_settings(DemoDirs(demo.data_dir, models_dir))
    name = settings.model_name
    old = models_dir / name / str(versions(models_dir, name)[-1]) / MANIFEST_FILE
    manifest = json.loads(old.read_text())
    if change == "columns":
        manifest["columns"] = manifest["columns"][:-1]  # as if trained before a column was added
    else:
        manifest["encoding_fingerprint"] = "0" * 64  # as if trained before a vocabulary changed
    old.write_text(json.dumps(manifest))
    before = versions(models_dir, name)

    prepare_demo(settings)
    after = versions(models_dir, name)
    assert after == [*before, before[-1] + 1]
    assert read_manifest(models_dir / name / str(after[-1])).columns == shipped_world("retail").model_columns()
    pointers = FilePointers(models_dir, name).read()
    assert pointers.champion == str(after[-1])  # the demo serves what it trained
    assert pointers.history == (str(before[-1]),)

    prepare_demo(settings)  # current now: nothing to do
    assert versions(models_dir, name) == after
    assert FilePointers(models_dir, name).read() == pointers


def test_models_registered_before_pointers_existed_get_the_newest_promoted(
        demo: DemoDirs, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(demo.models_dir, models_dir)
    (models_dir / "nextbest-ranker" / POINTERS_FILE).unlink()
    prepare_demo(make_settings(DemoDirs(demo.data_dir, models_dir)))
    assert versions(models_dir, "nextbest-ranker") == [1]  # nothing trained
    assert FilePointers(models_dir, "nextbest-ranker").read().champion == "1"
