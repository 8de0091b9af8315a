"""Models enter only through a manifest that matches the file and the encoder."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from features.config import shipped_world
from features.encoding import Encoder
from service.errors import ModelError
from service.manifest import MANIFEST_FILE, MODEL_FILE, encoding_fingerprint, versions
from service.model import OnnxScorer, column_differences, resolve_model_dir
from tests.demo_fixtures import DemoDirs

ENCODER = Encoder(shipped_world("retail"))
MODEL_COLUMNS = ENCODER.columns


@pytest.fixture
def model_copy(demo: DemoDirs, tmp_path: Path) -> Path:
    source = resolve_model_dir(demo.models_dir, "nextbest-ranker", None)
    target = tmp_path / "nextbest-ranker" / "1"
    shutil.copytree(source, target)
    return target


def test_loads_and_scores(model_copy: Path) -> None:
    scorer = OnnxScorer(model_copy, MODEL_COLUMNS)
    p = scorer.predict(np.zeros((7, len(MODEL_COLUMNS)), dtype=np.float32))
    assert p.shape == (7,) and ((p > 0) & (p < 1)).all()
    assert scorer.manifest.feature_service == "nextbest_ranker_v1"


def test_logits_are_the_logits_of_the_probabilities(model_copy: Path) -> None:
    scorer = OnnxScorer(model_copy, MODEL_COLUMNS)
    assert scorer.manifest.logit_name == "logit"
    x = np.random.default_rng(0).normal(size=(20, len(MODEL_COLUMNS))).astype(np.float32)
    p, z = scorer.predict(x), scorer.logits(x)
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-z)), p, atol=1e-6)
    # in float32, p near 0 or 1 no longer tells the logit to 1e-4: compare the rest
    moderate = np.abs(z) < 8.0
    assert moderate.sum() >= 5
    np.testing.assert_allclose(z[moderate], (np.log(p) - np.log1p(-p))[moderate], atol=1e-4)


@pytest.mark.parametrize(("dtype", "width", "says"), [
    (np.float64, len(MODEL_COLUMNS), "Unexpected input data type"),
    (np.float32, len(MODEL_COLUMNS) + 1, "invalid dimensions"),
])
def test_a_bad_input_is_refused_with_onnxruntimes_reason(model_copy: Path, dtype: type, width: int,
                                                         says: str) -> None:
    scorer = OnnxScorer(model_copy, MODEL_COLUMNS)
    x: np.ndarray = np.zeros((3, width), dtype=dtype)
    for score in (scorer.logits, scorer.predict):
        with pytest.raises(Exception, match=says):
            score(x)
    assert scorer.logits(np.zeros((3, len(MODEL_COLUMNS)), dtype=np.float32)).shape == (3,)


def test_refuses_a_changed_file(model_copy: Path) -> None:
    with (model_copy / MODEL_FILE).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="sha256"):
        OnnxScorer(model_copy, MODEL_COLUMNS)


def test_refuses_other_columns(model_copy: Path) -> None:
    manifest = json.loads((model_copy / MANIFEST_FILE).read_text())
    manifest["columns"] = list(reversed(manifest["columns"]))
    (model_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="other input columns"):
        OnnxScorer(model_copy, MODEL_COLUMNS)


def test_refuses_an_encoder_of_another_width(model_copy: Path) -> None:
    with pytest.raises(ModelError, match="missing"):
        OnnxScorer(model_copy, [*MODEL_COLUMNS, "extra_column"])


def test_refuses_a_wrong_output_name(model_copy: Path) -> None:
    manifest = json.loads((model_copy / MANIFEST_FILE).read_text())
    manifest["output_name"] = "scores"
    (model_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="outputs"):
        OnnxScorer(model_copy, MODEL_COLUMNS)


def test_missing_model_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="nextbest train"):
        resolve_model_dir(tmp_path, "nextbest-ranker", None)
    with pytest.raises(ModelError, match="version 9"):
        resolve_model_dir(tmp_path, "nextbest-ranker", "9")


def test_newest_version_is_served(model_copy: Path) -> None:
    root = model_copy.parent
    shutil.copytree(model_copy, root / "2")
    assert versions(root.parent, "nextbest-ranker") == [1, 2]
    assert resolve_model_dir(root.parent, "nextbest-ranker", None).name == "2"


def test_the_trained_manifest_records_the_worlds_encoding(model_copy: Path) -> None:
    scorer = OnnxScorer(model_copy, MODEL_COLUMNS, ENCODER.encoding)
    assert scorer.manifest.encoding == ENCODER.encoding
    assert scorer.manifest.encoding_fingerprint == encoding_fingerprint(ENCODER.encoding)


def test_refuses_other_encodings_of_the_same_columns_naming_them(model_copy: Path) -> None:
    served = copy.deepcopy(ENCODER.encoding)
    served["customer"][0]["clip_max"] = 365.0
    served["defaults"]["customer"]["recency_days"] = 10.0
    with pytest.raises(ModelError, match="other encodings") as caught:
        OnnxScorer(model_copy, MODEL_COLUMNS, served)
    assert "customer.0.clip_max" in str(caught.value)
    assert "defaults.customer.recency_days" in str(caught.value)


def test_a_manifest_without_a_fingerprint_loads_when_its_columns_match(
        model_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = json.loads((model_copy / MANIFEST_FILE).read_text())
    del manifest["encoding_fingerprint"], manifest["encoding"]
    (model_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="service.model"):
        OnnxScorer(model_copy, MODEL_COLUMNS, ENCODER.encoding)
    assert "no encoding fingerprint" in caplog.text
    with pytest.raises(ModelError, match="other input columns"):
        OnnxScorer(model_copy, [*MODEL_COLUMNS[1:], MODEL_COLUMNS[0]], ENCODER.encoding)


def test_column_differences_name_missing_extra_and_reordered() -> None:
    assert column_differences(["a", "b", "c"], ["a", "c", "b", "d"]) == "missing ['d']; reordered ['b', 'c']"
    assert column_differences(["a", "x"], ["a"]) == "extra ['x']"
