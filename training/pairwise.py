"""A logistic regression on every input column and every pair of columns, exported as ONNX.

The demo world's truth is additive in the logit with products of customer and action
traits (category preference x action kind, price sensitivity x price, stage x kind,
basket x category...). A logistic regression over all pairwise products has that shape:
on the demo log it ranks better than the 100-tree gradient-boosted model (`nextbest
train --algorithm pairwise` and `--algorithm hgb` record each one's holdout AUC in its
manifest; `nextbest simulate` measures the decisions, docs/decision-quality.md), and
scoring it is two small matrix products instead of walking 100 trees.

`PairwiseLogistic` expands the columns with scikit-learn's
`PolynomialFeatures(interaction_only)`, standardises them and fits `LogisticRegression`,
then folds the three into one quadratic form on the raw columns:

    logit(x) = b + x . w + sum_ij x_i A_ij x_j      (A strictly upper triangular)

`to_onnx` writes that as MatMul, Mul, ReduceSum, Add: the `logit` output the service
reads, and `probabilities` [n, 2] for everything else. Training memory grows with
rows x pairs: 56 columns make 1,596 features, a float32 each per training row, which is
the bulk of `nextbest train`'s memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import PolynomialFeatures

from training.onnx_logit import LOGIT_NAME, logit_model


def _standardise_in_place(
    features: np.ndarray, block: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean) / std per column, in place; constant columns keep a scale of 1."""
    n_columns = features.shape[1]
    mean, scale = np.zeros(n_columns), np.ones(n_columns)
    for start in range(0, n_columns, block):
        cols = features[:, start:start + block]
        as64 = cols.astype(np.float64)
        m, sd = as64.mean(axis=0), as64.std(axis=0)
        sd[sd == 0.0] = 1.0
        cols -= m.astype(np.float32)
        cols /= sd.astype(np.float32)
        mean[start:start + block], scale[start:start + block] = m, sd
    return mean, scale


class PairwiseLogistic(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """L2-regularised logistic regression on the columns and their pairwise products."""

    def __init__(self, C: float = 0.05, max_iter: int = 400) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> PairwiseLogistic:
        expand = PolynomialFeatures(2, interaction_only=True, include_bias=False)
        # float32 and standardised in place, a block of columns at a time: the pairs are
        # the bulk of the memory, and StandardScaler would hold a float64 copy of them
        pairs = expand.fit_transform(np.asarray(X, dtype=np.float32))
        mean, scale = _standardise_in_place(pairs)
        logreg = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(pairs, y)
        del pairs
        # Fold the scaling into the weights: sum_k c_k (f_k - mu_k) / s_k.
        coef = logreg.coef_[0].astype(np.float64) / scale
        self.intercept_ = float(logreg.intercept_[0] - coef @ mean)
        d = X.shape[1]
        self.linear_ = np.zeros(d)
        self.pairs_ = np.zeros((d, d))
        for c, powers in zip(coef, expand.powers_, strict=True):
            (idx,) = np.nonzero(powers)
            if len(idx) == 1:
                self.linear_[idx[0]] = c
            else:
                self.pairs_[idx[0], idx[1]] = c
        self.classes_ = logreg.classes_
        self.n_features_in_ = d
        self.n_iter_ = int(logreg.n_iter_[0])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return self.intercept_ + X @ self.linear_ + np.einsum("ij,ij->i", X @ self.pairs_, X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]

    def to_onnx(self, input_name: str, probabilities_name: str) -> Any:
        """The quadratic form as an ONNX graph with `logit` [n, 1] and probabilities [n, 2].

        b + x.w + x.A.x is computed as sum(x * (x A + w)) + b: one Gemm (the matrix
        product plus the linear row), a Mul, a ReduceSum and an Add, the fewest nodes
        ONNX Runtime runs it in (each node adds a fixed cost to every call; the `score`
        layer of `nextbest bench --breakdown` measures the whole call).
        """
        from onnx import helper, numpy_helper

        def const(name: str, value: np.ndarray) -> Any:
            return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

        d = self.n_features_in_
        initializers = [
            const("pairs", self.pairs_), const("linear", self.linear_.reshape(1, d)),
            const("intercept", np.array([[self.intercept_]])),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ]
        nodes = [
            helper.make_node("Gemm", [input_name, "pairs", "linear"], ["xa_w"]),
            helper.make_node("Mul", ["xa_w", input_name], ["terms"]),
            helper.make_node("ReduceSum", ["terms", "axis1"], ["partial"], keepdims=1),
            helper.make_node("Add", ["partial", "intercept"], [LOGIT_NAME]),
        ]
        # IR 8 is opset 17's, which every onnxruntime since 1.13 reads
        return logit_model(nodes, initializers, input_name, d, probabilities_name,
                           opsets={"": 17}, ir_version=8, graph_name="nextbest_ranker_pairwise")
