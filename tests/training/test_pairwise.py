"""The pairwise logistic regression: its folded quadratic form and its ONNX graph."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

from training.pairwise import PairwiseLogistic


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
