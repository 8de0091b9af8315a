"""The model card and the manifest fields it reads: data window, parent version, metrics."""

from __future__ import annotations

import importlib.util

from service.manifest import read_manifest
from tests.demo_fixtures import DemoDirs
from training.model_card import CARD_FILE, RELIABILITY_PLOT, render


def test_training_writes_a_card_next_to_the_manifest(demo: DemoDirs) -> None:
    directory = demo.models_dir / "nextbest-ranker" / "1"
    manifest = read_manifest(directory)
    window = manifest.data_window
    assert window is not None and window["start"] < window["holdout_start"] <= window["end"]
    assert manifest.parent_version is None  # nothing was champion when the demo trained
    card = (directory / CARD_FILE).read_text()
    assert card.startswith("# nextbest-ranker v1\n")
    assert f"| training data | {window['start']} to {window['end']} |" in card
    assert f"`{manifest.sha256}`" in card and f"`{manifest.encoding_fingerprint}`" in card
    assert f"| `log_loss` | {manifest.metrics['log_loss']:.4f} |" in card
    table = manifest.training["calibration"]
    assert sum(line.startswith("| ") and line.split("|")[1].strip().isdigit()
               for line in card.splitlines()) == len(table)
    drawn = importlib.util.find_spec("matplotlib") is not None
    assert (directory / RELIABILITY_PLOT).is_file() == drawn
    assert (f"![reliability]({RELIABILITY_PLOT})" in card) == drawn


def test_the_card_names_the_parent_and_says_how_to_promote(demo: DemoDirs) -> None:
    manifest = read_manifest(demo.models_dir / "nextbest-ranker" / "1")
    card = render(manifest.model_copy(update={"version": "5", "parent_version": "4"}), [], None)
    assert "parent version: v4" in card and "`nextbest models promote 5`" in card
    assert "No reliability table was recorded." in card
