"""A registered model's policy on a decision log: what it would have shown, and why.

For every decision of a log (`docs/log-format.md`) and every candidate in it, the
model's P(accept) from the features as they were when the decision was made (Feast's
point-in-time join, `training/dataset.py`, over the world's FeatureService) and the
request's context, encoded by the service's encoder; then the service's priority,
P(accept) x value x context weight x lever from the catalog (`service/arbitration.py`),
with the online learner's correction at zero. The policies built on it are the service's
greedy choice of rank 1 and its exploration (`training.ope_policies.exploring`); the
model's expected reward P(accept) x value is a reward model for doubly robust estimates.

Candidates the catalog does not hold get no score: the service could not show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from features.config import World
from features.encoding import Encoder
from service.catalog import Catalog, load_catalog
from service.model import OnnxScorer
from training.dataset import catalog_actions, encode_rows, historical_features
from training.logged_dataset import context_values
from training.ope_log import FloatArray, LoggedBandit


@dataclass(frozen=True)
class ModelScores:
    """Per decision and candidate slot `(n, K)`, NaN where there is no score."""

    model: str  # name:version
    probability: FloatArray
    value: FloatArray
    priority: FloatArray

    @property
    def expected_reward(self) -> FloatArray:
        """P(accept) x value, 0 where unscored: the model's reward model for DR."""
        return np.where(np.isfinite(self.probability), self.probability * self.value, 0.0)


def candidate_frame(log: LoggedBandit, world: World) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One interactions row per (decision, candidate), and each row's (decision, slot)."""
    if len(log.timestamps) != log.n or len(log.customer_ids) != log.n:
        raise ValueError("the log does not carry each decision's ts and customer_id")
    rows, slots = np.nonzero(log.mask)
    contexts = [context_values(c, world) for c in log.contexts]
    frame = pd.DataFrame({
        "event_timestamp": pd.to_datetime(np.asarray(log.timestamps)[rows], unit="s", utc=True).as_unit("us"),
        "decision_id": np.asarray(log.decision_ids, dtype=object)[rows],
        "customer_id": np.asarray(log.customer_ids, dtype=object)[rows],
        "action_id": np.asarray(log.actions, dtype=object)[log.candidates[rows, slots]],
        "channel": np.asarray(log.channels, dtype=object)[rows],
        "placement": np.asarray(log.placements, dtype=object)[rows],
    })
    for name in world.context:
        frame[name] = [contexts[i][name] for i in rows]
    return frame, rows, slots


def score_log(log: LoggedBandit, model_dir: Path, data_dir: Path, world: World,
              catalog: Catalog | None = None, encoder: Encoder | None = None) -> ModelScores:
    """The model's scores of every candidate of `log` (see the module doc)."""
    encoder = encoder if encoder is not None else Encoder(world)
    catalog = catalog if catalog is not None else load_catalog(Path(data_dir) / "catalog.json", world)
    scorer = OnnxScorer(Path(model_dir), list(encoder.columns), encoder.encoding)
    frame, rows, slots = candidate_frame(log, world)
    joined = historical_features(Path(data_dir), frame, None, world)  # in frame order
    p_pairs = scorer.predict(encode_rows(joined, catalog_actions(Path(data_dir), encoder, world), encoder))
    shape = log.mask.shape
    probability, value, priority = (np.full(shape, np.nan) for _ in range(3))
    index = np.array([catalog.index.get(a, -1) for a in frame["action_id"]], dtype=np.int64)
    known = index >= 0
    r, s, i = rows[known], slots[known], index[known]
    weights = np.array([catalog.context_weight(log.channels[d])[a] for d, a in zip(r, i, strict=True)])
    probability[r, s] = p_pairs[known]
    value[r, s] = catalog.value[i]
    priority[r, s] = p_pairs[known] * catalog.value[i] * weights * catalog.lever[i]
    return ModelScores(f"{scorer.manifest.name}:{scorer.manifest.version}", probability, value, priority)


def since(log: LoggedBandit, start: float | None) -> LoggedBandit:
    """The decisions made at or after `start` (Unix seconds; None: all)."""
    if start is None:
        return log
    return log.take(np.asarray(log.timestamps) >= start)


def parse_time(text: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC unless it names its zone) -> Unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is neither Unix seconds nor an ISO 8601 time") from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
