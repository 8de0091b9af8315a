"""The pairwise logistic regression: its streamed fit, its folded quadratic form, its ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from training.pairwise import PairwiseLogistic, standardisation
from training.row_store import ArrayRows, RowFile


def _interaction_data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The label depends on a product of two columns only: no single column predicts it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    logit = 2.5 * X[:, 0] * X[:, 1] - 0.5 * X[:, 2] - 1.0
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return X, y.astype(int)


def test_folded_form_equals_the_fitted_pipeline() -> None:
    X, y = _interaction_data()
    model = PairwiseLogistic(C=0.5).fit(X, y)
    reference = Pipeline([
        ("pairs", PolynomialFeatures(2, interaction_only=True, include_bias=False)),
        ("scale", StandardScaler()),
        ("logreg", LogisticRegression(C=0.5, max_iter=400)),
    ]).fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X), reference.predict_proba(X), atol=1e-4)
    assert np.all(np.tril(model.pairs_) == 0.0)  # each pair once, no squares


def test_learns_an_interaction_a_plain_logistic_regression_cannot() -> None:
    X, y = _interaction_data()
    X_test, y_test = _interaction_data(seed=1)
    pairwise = PairwiseLogistic().fit(X, y)
    plain = LogisticRegression().fit(X, y)
    assert roc_auc_score(y_test, pairwise.predict_proba(X_test)[:, 1]) > 0.75
    assert roc_auc_score(y_test, plain.predict_proba(X_test)[:, 1]) < 0.65
    assert pairwise.pairs_[0, 1] > 1.0  # the weight sits on the product x0 * x1


def test_onnx_graph_gives_the_same_logit_and_probabilities() -> None:
    X, y = _interaction_data()
    model = PairwiseLogistic().fit(X, y)
    session = ort.InferenceSession(model.to_onnx("input", "probabilities").SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    proba, z = session.run(["probabilities", "logit"], {"input": X.astype(np.float32)})
    assert z.shape == (len(X), 1) and proba.shape == (len(X), 2)
    np.testing.assert_allclose(z[:, 0], model.decision_function(X), atol=1e-4)
    np.testing.assert_allclose(proba, model.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(model.predict(X), (z[:, 0] > 0).astype(int))


def test_streamed_fit_on_the_demo_rows_matches_the_scikit_learn_pipeline(
        small_training_set, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """56 encoded columns, 1,540 products: the fit from sufficient statistics and chunked
    passes over a file finds scikit-learn's solution on the materialised products. Both
    converged tightly: at the default tolerance each stops at its own point of a flat
    optimum (the same objective; predictions then differ by up to about 1e-2 here)."""
    data = small_training_set
    rows = RowFile(tmp_path / "rows.f32", data.X.shape[1], chunk_rows=700)
    for start in range(0, len(data), 1000):  # appended in pieces, read in other pieces
        rows.append(data.X[start:start + 1000], data.y[start:start + 1000])
    model = PairwiseLogistic(tol=1e-6, max_iter=2000).fit_rows(rows)
    reference = Pipeline([
        ("pairs", PolynomialFeatures(2, interaction_only=True, include_bias=False)),
        ("scale", StandardScaler()),
        ("logreg", LogisticRegression(C=0.05, max_iter=2000, tol=1e-6)),
    ]).fit(data.X.astype(np.float64), data.y)
    gap = np.abs(model.predict_proba(data.X)[:, 1] - reference.predict_proba(data.X)[:, 1])
    assert gap.max() < 1e-3
    assert model.n_iter_ < 2000
    in_memory = PairwiseLogistic(tol=1e-6, max_iter=2000).fit(data.X, data.y)  # one array
    np.testing.assert_allclose(in_memory.predict_proba(data.X), model.predict_proba(data.X),
                               atol=1e-3)


def test_standardisation_from_sufficient_statistics_is_the_products_mean_and_std() -> None:
    X, _ = _interaction_data(n=3000)
    X[:, 3] = 2.0  # a constant column: scale 1, as StandardScaler keeps it
    scaling = standardisation(ArrayRows(X, np.zeros(len(X)), chunk_rows=128))
    products = PolynomialFeatures(2, interaction_only=True, include_bias=False).fit_transform(X)
    scaler = StandardScaler().fit(products)
    np.testing.assert_allclose(np.concatenate([scaling.mean_linear, scaling.mean_pairs]),
                               scaler.mean_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([scaling.scale_linear, scaling.scale_pairs]),
                               scaler.scale_, rtol=1e-5, atol=1e-6)
    assert scaling.scale_linear[3] == 1.0


def test_one_class_is_refused() -> None:
    X, _ = _interaction_data(n=100)
    with pytest.raises(ValueError, match="two classes"):
        PairwiseLogistic().fit(X, np.ones(len(X), dtype=int))
