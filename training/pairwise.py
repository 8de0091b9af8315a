"""A logistic regression on every input column and every pair of columns, exported as ONNX.

The demo world's truth is additive in the logit with products of customer and action
traits (category preference x action kind, price sensitivity x price, stage x kind,
basket x category...). A logistic regression over all pairwise products has that shape:
on the demo log it ranks better than the 100-tree gradient-boosted model (`nextbest
train --algorithm pairwise` and `--algorithm hgb` record each one's holdout AUC in its
manifest; `nextbest simulate` measures the decisions, docs/decision-quality.md), and
scoring it is two small matrix products instead of walking 100 trees.

`PairwiseLogistic` fits what scikit-learn's `PolynomialFeatures(interaction_only)` ->
`StandardScaler` -> `LogisticRegression(lbfgs)` pipeline fits, the same objective, solver
and stopping rule (tests/training/test_pairwise.py compares the two), without
materialising the pairwise products: with d columns there are d(d-1)/2 of them, and a
float per row and pair is what made training memory grow with the log. Instead:

- the products' means and standard deviations come from sufficient statistics
  summed over chunks of rows: sum x, X'X and (X*X)'(X*X);
- in the logit, a standardised product's weight folds into a quadratic form on the raw
  columns, logit(x) = b + x . w + sum_ij x_i A_ij x_j (A strictly upper triangular), so
  each objective evaluation is, per chunk, x A and the gradient X' diag(p - y) X: two
  d x d matrix products per row, against the chunk of rows only.

The rows come from a `training.row_store.RowSource` (memory or a file on disk), so peak
memory is one chunk plus d x d matrices, whatever the number of rows. `to_onnx` writes
the quadratic form as Gemm, Mul, ReduceSum, Add: the `logit` output the service reads,
and `probabilities` [n, 2] for everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from threadpoolctl import threadpool_limits

from training.onnx_logit import LOGIT_NAME, logit_model
from training.row_store import ArrayRows, RowSource

log = logging.getLogger(__name__)

#: scikit-learn's LogisticRegression defaults (tol, lbfgs' maxls), which the fit reproduces
TOLERANCE = 1e-4
MAX_LINE_SEARCH = 50


@dataclass(frozen=True)
class Standardisation:
    """Mean and standard deviation of each column (linear) and each product (pairs)."""

    mean_linear: np.ndarray  # (d,)
    scale_linear: np.ndarray  # (d,)
    mean_pairs: np.ndarray  # (d(d-1)/2,) in PolynomialFeatures' order: (0,1), (0,2), ...
    scale_pairs: np.ndarray


def standardisation(rows: RowSource) -> Standardisation:
    """One pass over the rows: population mean and std of the columns and their products;
    a constant one keeps a scale of 1 (as StandardScaler does)."""
    d = rows.n_columns
    total, cross, fourth, n = np.zeros(d), np.zeros((d, d)), np.zeros((d, d)), 0
    for chunk, _ in rows.chunks():
        X = chunk.astype(np.float64)
        squares = X * X
        total += X.sum(axis=0)
        cross += X.T @ X
        fourth += squares.T @ squares
        n += len(X)
    if n == 0:
        raise ValueError("no rows to fit")
    upper = np.triu_indices(d, 1)
    mean_linear, mean_pairs = total / n, cross[upper] / n
    return Standardisation(mean_linear, _scale(np.diag(cross) / n, mean_linear),
                           mean_pairs, _scale(fourth[upper] / n, mean_pairs))


def _scale(second_moment: np.ndarray, mean: np.ndarray) -> np.ndarray:
    variance = second_moment - mean * mean
    # E[f^2] - E[f]^2 rounds to a tiny non-zero value for some constant columns
    constant = variance <= 1e-12 * np.maximum(second_moment, np.finfo(float).tiny)
    return np.where(constant, 1.0, np.sqrt(np.where(constant, 1.0, variance)))


class _Objective:
    """scikit-learn's lbfgs objective in the standardised coordinates theta = (c, b'):
    mean log-loss + (1 / 2Cn) ||c||^2, the intercept unpenalised, streamed over chunks."""

    def __init__(self, rows: RowSource, scaling: Standardisation, C: float) -> None:
        self.rows, self.s = rows, scaling
        self.d = rows.n_columns
        self.upper = np.triu_indices(self.d, 1)
        self.n = rows.n_rows
        self.l2 = 1.0 / (C * self.n)
        self.evaluations = 0

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        d = self.d
        return theta[:d], theta[d:-1], float(theta[-1])

    def raw(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(b, w, A) on the raw columns: sum_k c_k (f_k - mu_k) / s_k folded."""
        c_linear, c_pairs, b = self.split(theta)
        w = c_linear / self.s.scale_linear
        a_upper = c_pairs / self.s.scale_pairs
        A = np.zeros((self.d, self.d))
        A[self.upper] = a_upper
        b -= float(w @ self.s.mean_linear + a_upper @ self.s.mean_pairs)
        return b, w, A

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        # float32 matrix products (as scikit-learn runs on float32 input), sums in float64
        self.evaluations += 1
        b, w, A = self.raw(theta)
        w32, A32 = w.astype(np.float32), A.astype(np.float32)
        loss, g_b = 0.0, 0.0
        g_w, g_A = np.zeros(self.d), np.zeros((self.d, self.d))
        for X, y in self.rows.chunks():
            z = b + (X @ w32 + np.einsum("ij,ij->i", X @ A32, X)).astype(np.float64)
            loss += float(np.sum(np.logaddexp(0.0, z) - y * z))
            r = expit(z) - y
            g_b += float(r.sum())
            g_w += (r.astype(np.float32) @ X).astype(np.float64)
            g_A += (X.T @ (X * r.astype(np.float32)[:, None])).astype(np.float64)
        c_linear, c_pairs, _ = self.split(theta)
        grad = np.concatenate([
            (g_w - self.s.mean_linear * g_b) / self.s.scale_linear / self.n + self.l2 * c_linear,
            (g_A[self.upper] - self.s.mean_pairs * g_b) / self.s.scale_pairs / self.n
            + self.l2 * c_pairs,
            [g_b / self.n],
        ])
        penalty = 0.5 * self.l2 * float(c_linear @ c_linear + c_pairs @ c_pairs)
        return loss / self.n + penalty, grad


class _Labelled:
    """A row source whose labels are 1.0 for `positive` and 0.0 otherwise."""

    def __init__(self, rows: RowSource, positive: Any) -> None:
        self.rows, self.positive = rows, positive
        self.n_rows, self.n_columns = rows.n_rows, rows.n_columns

    @property
    def y(self) -> np.ndarray:
        return (self.rows.y == self.positive).astype(np.float64)

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for X, y in self.rows.chunks():
            yield X, (y == self.positive).astype(np.float64)


class PairwiseLogistic(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """L2-regularised logistic regression on the standardised columns and their products."""

    def __init__(self, C: float = 0.05, max_iter: int = 400, tol: float = TOLERANCE,
                 n_threads: int | None = 1) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        # BLAS threads for the fit (None: the library's default). The products are thin
        # (d columns a chunk), where one thread beats several contending for shared
        # cores (load_tests/train_memory.py measures the fit).
        self.n_threads = n_threads

    def fit(self, X: np.ndarray, y: np.ndarray) -> PairwiseLogistic:
        return self.fit_rows(ArrayRows(np.asarray(X), np.asarray(y)))

    def fit_rows(self, rows: RowSource) -> PairwiseLogistic:
        """Fit on rows read chunk by chunk: memory is one chunk, whatever `rows.n_rows`."""
        classes = np.unique(rows.y)
        if len(classes) != 2:
            raise ValueError(f"needs two classes in y, got {classes.tolist()}")
        d = rows.n_columns
        with threadpool_limits(limits=self.n_threads, user_api="blas"):
            objective = _Objective(_Labelled(rows, classes[1]), standardisation(rows), self.C)
            result = minimize(objective, np.zeros(d + d * (d - 1) // 2 + 1), method="L-BFGS-B",
                              jac=True, options={"maxiter": self.max_iter, "maxls": MAX_LINE_SEARCH,
                                                 "gtol": self.tol, "ftol": 64 * np.finfo(float).eps})
        if result.status == 1:
            log.warning("pairwise fit stopped at max_iter=%d before converging", self.max_iter)
        self.intercept_, self.linear_, self.pairs_ = objective.raw(result.x)
        self.classes_ = classes
        self.n_features_in_ = d
        self.n_iter_ = int(result.nit)
        self.n_evaluations_ = objective.evaluations
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return self.intercept_ + X @ self.linear_ + np.einsum("ij,ij->i", X @ self.pairs_, X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = expit(self.decision_function(X))
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
