"""Training: a registered ONNX model that loads, agrees with scikit-learn and ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from features.config import shipped_world
from service.manifest import MODEL_FILE, read_manifest, sha256_file
from training.train import make_estimator, onnx_probabilities, time_split, to_onnx, train


@pytest.fixture(scope="module")
def registered(small_data_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    models_dir = tmp_path_factory.mktemp("models")
    return train(small_data_dir, models_dir, progress=False)


def test_train_registers_a_verified_model(registered) -> None:  # type: ignore[no-untyped-def]
    directory, manifest = registered
    assert read_manifest(directory) == manifest
    assert manifest.version == "1" and manifest.algorithm == "pairwise"
    assert manifest.sha256 == sha256_file(directory / MODEL_FILE)
    assert manifest.columns == shipped_world("retail").model_columns()
    assert manifest.feature_service == shipped_world("retail").model.feature_service
    assert (manifest.input_name, manifest.output_name) == ("input", "probabilities")
    assert manifest.logit_name == "logit"
    for key in ("auc", "log_loss", "brier", "base_rate", "ece", "n_train", "n_holdout"):
        assert key in manifest.metrics
    assert manifest.metrics["auc"] > 0.6
    assert manifest.training["onnx_max_abs_diff"] <= 1e-4
    assert len(manifest.training["calibration"]) == 10
    assert manifest.training["holdout_from"] > manifest.training["first_event"]
    assert {"join", "encode", "fit", "verify"} <= set(manifest.training["step_seconds"])
    assert 0 < manifest.training["fit_iterations"] < 400  # converged


def test_the_onnx_file_serves_like_the_service_reads_it(registered, small_training_set) -> None:  # type: ignore[no-untyped-def]
    directory, manifest = registered
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(directory / MODEL_FILE), options,
                                   providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.shape[1] == len(shipped_world("retail").model_columns())
    assert "probabilities" in [o.name for o in session.get_outputs()]
    (proba,) = session.run(["probabilities"], {"input": small_training_set.X[:50]})
    assert proba.shape == (50, 2) and proba.dtype == np.float32
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["pairwise", "hgb", "logreg"])
def test_onnx_export_matches_scikit_learn(algorithm: str, small_training_set) -> None:  # type: ignore[no-untyped-def]
    data = small_training_set
    cut = time_split(data)
    model = make_estimator(algorithm).fit(data.X[:cut], data.y[:cut])
    onnx_bytes, logit_name = to_onnx(model, len(shipped_world("retail").model_columns()))
    expected = model.predict_proba(data.X[cut:])[:, 1]
    np.testing.assert_allclose(onnx_probabilities(onnx_bytes, data.X[cut:]), expected, atol=1e-4)
    if algorithm == "logreg":
        assert logit_name is None
        return
    # pairwise and trees also output their margin: the logit of the same probabilities
    assert logit_name == "logit"
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (z,) = session.run([logit_name], {"input": data.X[cut:].astype(np.float32)})
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-z[:, 0])), expected, atol=1e-4)
    np.testing.assert_allclose(z[:, 0], model.decision_function(data.X[cut:]), atol=1e-3)


def test_second_training_is_a_new_version(small_data_dir: Path, registered) -> None:  # type: ignore[no-untyped-def]
    directory, _ = registered
    models_dir = directory.parent.parent
    again, manifest = train(small_data_dir, models_dir, algorithm="logreg", progress=False,
                            parent_version="1")
    assert manifest.version == "2" and again.parent == directory.parent
    assert manifest.parent_version == "1"
    assert not (directory.parent / "pointers.json").exists()  # registering never promotes
