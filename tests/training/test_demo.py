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


def test_the_telco_example_keeps_its_data_and_models_apart(tmp_path: Path) -> None:
    from features.config import WORLDS_DIR
    from service.settings import Settings
    from training.demo import example_settings

    base = Settings(data_dir=tmp_path / "var", models_dir=tmp_path / "models", config=None)
    assert example_settings(base, "retail") is base  # today's demo, as configured
    telco = example_settings(base, "telco")
    assert telco.config == WORLDS_DIR / "telco.yaml"
    assert (telco.data_dir, telco.models_dir) == (tmp_path / "var" / "telco", tmp_path / "models" / "telco")
    assert telco.catalog_file == tmp_path / "var" / "telco" / "catalog.json"
    same = base.model_copy(update={"config": WORLDS_DIR / "telco.yaml"})
    assert example_settings(same, "telco").config == WORLDS_DIR / "telco.yaml"


def test_the_telco_demo_refuses_another_world_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from features.config import WORLDS_DIR
    from service.cli import DEMO_EXAMPLES, main
    from training.worlds import EXAMPLES

    assert DEMO_EXAMPLES == EXAMPLES
    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEXTBEST_CONFIG", str(WORLDS_DIR / "retail.yaml"))
    assert main(["demo", "--example", "telco"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "NEXTBEST_CONFIG" in err and "retail.yaml" in err
    assert not (tmp_path / "var").exists()  # refused before anything was prepared


def test_the_telco_demo_prepares_its_world(telco_demo: DemoDirs, tmp_path: Path) -> None:
    """Data, online store and model already there: nothing to do, and the model is telco's."""
    models_dir = tmp_path / "models"
    shutil.copytree(telco_demo.models_dir, models_dir)
    settings = make_settings(DemoDirs(telco_demo.data_dir, models_dir, "telco"))
    before = versions(models_dir, settings.model_name)
    prepare_demo(settings, example="telco")
    assert versions(models_dir, settings.model_name) == before
    newest = read_manifest(models_dir / settings.model_name / str(before[-1]))
    assert newest.columns == shipped_world("telco").model_columns()
