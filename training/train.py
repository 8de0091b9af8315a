"""Train the offline ranker, export it to ONNX, check the export, register it.

dataset (Feast point-in-time join) -> time-ordered split -> fit -> ONNX -> verify ->
holdout metrics -> `service.manifest.write_model` -> model card (`training/model_card.py`).
The dataset is built a chunk of the log at a time onto scratch files
(`training/streamed_set.py`) and the pairwise learner reads them a chunk at a time, so
training memory does not grow with the log; `hgb` and `logreg` load the training rows.
Registering does not serve the version: `nextbest models promote` does. The split is by time, not at random:
the model is used on decisions that come after its training data, and a random split
would leak each customer's later snapshots into the past.

The default learner is `pairwise` (`training/pairwise.py`: a logistic regression on the
columns and their pairwise products); `hgb` (gradient-boosted trees) and `logreg` remain.
The ONNX graph has one float32 input `input` [None, len(columns)], the output
`probabilities` [None, 2] (zipmap off) and, for pairwise and hgb, a `logit` [None, 1]
output, which is what the service fetches. The export is verified against the fitted
model's predict_proba on the holdout before it is registered.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from features.config import World, configured_world, interactions_path
from features.encoding import Encoder
from service.manifest import ModelManifest, encoding_fingerprint, write_model
from training.dataset import TrainingSet
from training.model_card import write_model_card
from training.onnx_logit import LOGIT_NAME, with_logit_output
from training.pairwise import PairwiseLogistic
from training.row_store import RowFile
from training.streamed_set import StreamedSet, holdout_cut, stream_training_set

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
HOLDOUT_FRACTION = 0.2
ONNX_TOLERANCE = 1e-4
ALGORITHMS = ("pairwise", "hgb", "logreg")


def make_estimator(algorithm: str, seed: int = 0) -> ClassifierMixin:
    """The supported learners: pairwise exports its own graph, the others go through skl2onnx."""
    if algorithm == "pairwise":
        return PairwiseLogistic()
    if algorithm == "hgb":
        return HistGradientBoostingClassifier(
            max_iter=100, max_leaf_nodes=15, learning_rate=0.1, min_samples_leaf=40,
            l2_regularization=1.0, early_stopping=False, random_state=seed,
        )
    if algorithm == "logreg":
        return Pipeline([
            ("scale", StandardScaler()),
            ("logreg", LogisticRegression(C=1.0, max_iter=500)),
        ])
    raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}")


def to_onnx(model: ClassifierMixin, n_columns: int) -> tuple[bytes, str | None]:
    """skl2onnx export with zipmap off, input `input`, probability output `probabilities`.

    Pairwise models and tree ensembles also get a `logit` output (`training/onnx_logit.py`),
    which the service reads instead; the second value names it (None: probabilities only).
    """
    if isinstance(model, PairwiseLogistic):
        return model.to_onnx(INPUT_NAME, OUTPUT_NAME).SerializeToString(), LOGIT_NAME
    with warnings.catch_warnings():
        # skl2onnx 1.20 passes booleans where onnx expects ints (harmless, not ours to fix)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="onnx")
        onx = _convert(model, n_columns)
        with_logit = with_logit_output(onx, INPUT_NAME, OUTPUT_NAME)
    if with_logit is not None:
        onx = with_logit
    outputs = [o.name for o in onx.graph.output]
    if OUTPUT_NAME not in outputs:
        raise RuntimeError(f"ONNX export has outputs {outputs}, not {OUTPUT_NAME!r}")
    return onx.SerializeToString(), (LOGIT_NAME if with_logit is not None else None)


def _convert(model: ClassifierMixin, n_columns: int) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType

    return convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_columns]))],
        final_types=[("label", Int64TensorType([None])),
                     (OUTPUT_NAME, FloatTensorType([None, 2]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )


def onnx_probabilities(onnx_bytes: bytes, X: np.ndarray) -> np.ndarray:
    """P(accept) from the exported graph, fetching only `probabilities` like the service."""
    return _onnx_p(_onnx_session(onnx_bytes), X)


def _onnx_session(onnx_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _onnx_p(session: Any, X: np.ndarray) -> np.ndarray:
    (proba,) = session.run([OUTPUT_NAME], {INPUT_NAME: X.astype(np.float32, copy=False)})
    return np.asarray(proba)[:, 1]


def holdout_predictions(model: ClassifierMixin, onnx_bytes: bytes,
                        rows: RowFile) -> tuple[np.ndarray, np.ndarray]:
    """(the fitted model's, the ONNX graph's) P(accept) of each row, a chunk at a time."""
    session = _onnx_session(onnx_bytes)
    fitted, exported = [], []
    for X, _ in rows.chunks():
        fitted.append(model.predict_proba(X)[:, 1])
        exported.append(_onnx_p(session, X))
    if not fitted:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(fitted), np.concatenate(exported)


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Reliability table over equal-count bins: mean predicted vs observed rate."""
    order = np.argsort(p, kind="stable")
    table = []
    for chunk in np.array_split(order, bins):
        if len(chunk):
            table.append({"n": int(len(chunk)), "predicted": float(p[chunk].mean()),
                          "observed": float(y[chunk].mean())})
    return table


def holdout_metrics(y: np.ndarray, p: np.ndarray, n_train: int) -> dict[str, float]:
    table = calibration(y, p)
    ece = sum(b["n"] * abs(b["predicted"] - b["observed"]) for b in table) / max(len(y), 1)
    return {
        "auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "base_rate": float(y.mean()),
        "mean_prediction": float(p.mean()),
        "ece": float(ece),
        "n_train": float(n_train),
        "n_holdout": float(len(y)),
    }


def time_split(data: TrainingSet, holdout_fraction: float = HOLDOUT_FRACTION) -> int:
    """Index of the first holdout row (rows are in time order)."""
    return holdout_cut(len(data), holdout_fraction)


def train(
    data_dir: Path,
    models_dir: Path,
    name: str = "nextbest-ranker",
    redis_url: str | None = None,
    algorithm: str = "pairwise",
    progress: bool = True,
    world: World | None = None,
    interactions: Path | None = None,
    parent_version: str | None = None,
) -> tuple[Path, ModelManifest]:
    """Train on the logged decisions of `data_dir` and register a new model version.

    `world` (default: the default shipped world) declares the encoding; the manifest
    records it and its fingerprint, which the service checks against its own world.
    `interactions` is the interaction log to train on (default: `<data_dir>/sources/
    interactions.parquet`; `nextbest dataset` builds one from the service's own logs).
    `parent_version`: the champion when training started, recorded in the manifest.
    """
    started = time.perf_counter()
    world = world if world is not None else configured_world(None)
    encoder = Encoder(world)
    estimator = make_estimator(algorithm)
    steps = tqdm(total=5, desc=f"train {name}", disable=not progress, unit="step")

    steps.set_postfix_str("point-in-time join")
    source = Path(interactions) if interactions is not None else interactions_path(data_dir)
    with tempfile.TemporaryDirectory(prefix="nextbest-train-") as scratch:
        data = stream_training_set(Path(data_dir), source, Path(scratch), world, encoder,
                                   HOLDOUT_FRACTION, redis_url)
        cut, y_hold = data.cut, data.holdout.y
        log.info("training set: %d train, %d holdout, base rate %.4f", cut, len(y_hold),
                 (data.train.y.sum() + y_hold.sum()) / len(data))
        steps.update()

        steps.set_postfix_str(f"fit {algorithm}")
        t = time.perf_counter()
        if isinstance(estimator, PairwiseLogistic):
            estimator.fit_rows(data.train)
        else:
            estimator.fit(data.train.to_array(), data.train.y)
        data.seconds["fit"] = time.perf_counter() - t
        steps.update()

        steps.set_postfix_str("export ONNX")
        onnx_bytes, logit_name = to_onnx(estimator, len(encoder.columns))
        steps.update()

        steps.set_postfix_str("verify + evaluate")
        t = time.perf_counter()
        p_sklearn, p_onnx = holdout_predictions(estimator, onnx_bytes, data.holdout)
        data.seconds["verify"] = time.perf_counter() - t
    gap = float(np.max(np.abs(p_onnx - p_sklearn))) if len(p_onnx) else 0.0
    if gap > ONNX_TOLERANCE:
        raise RuntimeError(f"ONNX export disagrees with scikit-learn by {gap:.2e}")
    metrics = holdout_metrics(y_hold, p_onnx, cut)
    steps.update()

    steps.set_postfix_str("register")
    directory, manifest = write_model(
        Path(models_dir), name, onnx_bytes,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        algorithm=algorithm,
        feature_service=world.model.feature_service,
        columns=list(encoder.columns),
        encoding_fingerprint=encoding_fingerprint(encoder.encoding),
        encoding=encoder.encoding,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        logit_name=logit_name,
        metrics=metrics,
        training=_training_info(
            data_dir, source, data, cut, estimator, gap, calibration(y_hold, p_onnx), started),
        data_window=_data_window(data, cut),
        parent_version=parent_version,
    )
    write_model_card(directory, manifest)
    steps.update()
    steps.close()
    log.info("registered %s v%s: auc %.3f log_loss %.4f", name, manifest.version,
             metrics["auc"], metrics["log_loss"])
    return directory, manifest


def _data_window(data: StreamedSet, cut: int) -> dict[str, str] | None:
    ts = data.event_timestamp
    if not len(ts):
        return None
    window = {"start": str(ts[0]), "end": str(ts[-1])}
    if cut < len(ts):
        window["holdout_start"] = str(ts[cut])
    return window


def _training_info(
    data_dir: Path, source: Path, data: StreamedSet, cut: int, estimator: ClassifierMixin, gap: float,
    reliability: list[dict[str, float]], started: float,
) -> dict[str, Any]:
    import sklearn

    ts = data.event_timestamp
    world_file = Path(data_dir) / "demo" / "world.json"
    return {
        "data_dir": str(Path(data_dir).resolve()),
        "source": f"{Path(source).resolve()} + Feast get_historical_features",
        "n_examples": len(data),
        "first_event": str(ts[0]) if len(ts) else None,
        "holdout_from": str(ts[cut]),
        "last_event": str(ts[-1]) if len(ts) else None,
        "split": "time-ordered, last 20% held out",
        "params": {k: v for k, v in estimator.get_params().items()
                   if isinstance(v, (int, float, str, bool, type(None)))},
        "onnx_max_abs_diff": gap,
        "calibration": reliability,
        "sklearn_version": sklearn.__version__,
        "world": json.loads(world_file.read_text()) if world_file.is_file() else None,
        "duration_seconds": round(time.perf_counter() - started, 2),
        "step_seconds": {step: round(s, 2) for step, s in data.seconds.items()},
        "fit_iterations": _iterations(estimator),
    }


def _iterations(estimator: ClassifierMixin) -> int | None:
    """The solver's iterations (boosting rounds for hgb), where the estimator says."""
    n = getattr(estimator, "n_iter_", None)
    return None if n is None else int(np.max(n))
