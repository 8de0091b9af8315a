"""A registered model on labelled interactions: AUC, log loss, calibration, a reliability plot.

The interactions are those `nextbest dataset` writes (or the demo's), joined
point-in-time and encoded as training does (`training/dataset.py`), scored by the
registered ONNX file through the service's scorer. The calibration table has equal-count
bins (`training.train.calibration`); the expected calibration error is the count-weighted
mean gap between predicted and observed rates over those bins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from features.config import World
from features.encoding import Encoder
from service.model import OnnxScorer
from training.dataset import TrainingSet, build_training_set
from training.train import calibration, holdout_metrics

PLOT_EXTRA = "bench"


def holdout_rows(interactions: pd.DataFrame, start: float | None) -> pd.DataFrame:
    """The interactions at or after `start` (Unix seconds; None: all)."""
    if start is None:
        return interactions
    ts = pd.to_datetime(interactions["event_timestamp"], utc=True)
    return interactions[ts >= pd.Timestamp(start, unit="s", tz="UTC")]


def training_set(interactions: pd.DataFrame, data_dir: Path, world: World,
                 encoder: Encoder | None = None) -> TrainingSet:
    if not len(interactions):
        raise ValueError("no labelled interactions in the holdout")
    return build_training_set(Path(data_dir), interactions=interactions, world=world,
                              encoder=encoder if encoder is not None else Encoder(world))


def classification(model_dir: Path, data: TrainingSet, world: World,
                   encoder: Encoder | None = None) -> dict[str, Any]:
    """The model's metrics on `data`: auc, log_loss, brier, ece, base rate, its
    calibration table, and the rows it was computed on."""
    encoder = encoder if encoder is not None else Encoder(world)
    scorer = OnnxScorer(Path(model_dir), list(encoder.columns), encoder.encoding)
    p = scorer.predict(data.X)
    metrics = holdout_metrics(data.y, p, 0)
    metrics.pop("n_train")
    return {"model": f"{scorer.manifest.name}:{scorer.manifest.version}", "metrics": metrics,
            "calibration": calibration(data.y, p)}


def plot_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def reliability_plot(tables: Mapping[str, Sequence[Mapping[str, float]]], path: Path) -> Path:
    """A reliability diagram (observed vs predicted rate per bin, one line per model) as PNG.

    Needs matplotlib (the `bench` extra; `plot_available` says whether it is installed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    top = max([b["predicted"] for t in tables.values() for b in t]
              + [b["observed"] for t in tables.values() for b in t] + [1e-3])
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for label, table in tables.items():
        ax.plot([b["predicted"] for b in table], [b["observed"] for b in table], marker="o", label=label)
    ax.set_xlabel("mean predicted P(accept), per bin")
    ax.set_ylabel("observed acceptance rate")
    ax.set_title("Reliability on the holdout (equal-count bins)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

