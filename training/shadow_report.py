"""`nextbest models shadow-report`: the challenger against the champion on the decisions
it scored in shadow.

It reads what `nextbest export` wrote (`<export>/decisions` and `<export>/feedback`,
docs/retraining.md) and keeps the decisions that carry a challenger (`shadow_model`).
On those, both models saw the same candidates and features, so they compare like for
like:

- **agreement**: how often the challenger would have shown the same first action, and
  the share of shown actions it would have shown too;
- **calibration and ranking** on the shown actions of decisions that received feedback
  (label: accepted or purchased): each model's log loss and AUC of its own propensity
  for those actions;
- **off-policy value at rank 1**: the self-normalised importance-sampling estimate of the
  challenger's acceptance rate of its first action (its probability of the logged first
  action over the logging policy's), next to the logged rate, with the effective sample
  size. A small effective sample size means the challenger chose differently too often
  for the logs to say much; intervals and the gate are `nextbest evaluate`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds
from sklearn.metrics import log_loss, roc_auc_score

#: outcomes that make a shown action's label 1
POSITIVE = frozenset({"accept", "purchase"})


class NoShadowData(Exception):
    """Nothing to report on: no export, or no decision scored in shadow."""


@dataclass(frozen=True)
class ModelScores:
    model: str
    log_loss: float
    auc: float


@dataclass(frozen=True)
class ShadowReport:
    challenger: str
    champions: tuple[str, ...]
    decisions: int
    with_feedback: int
    first_action_agreement: float
    shown_overlap: float
    champion: ModelScores | None
    shadow: ModelScores | None
    logged_rate: float | None
    challenger_rate: float | None
    effective_sample_size: float | None

    def text(self) -> str:
        lines = [
            f"challenger {self.challenger} against {', '.join(self.champions)} on "
            f"{self.decisions} decisions scored in shadow ({self.with_feedback} with feedback)",
            f"  same first action: {self.first_action_agreement:.1%}; shown actions it would "
            f"have shown too: {self.shown_overlap:.1%}",
        ]
        if self.champion is None or self.shadow is None:
            lines.append("  no feedback on those decisions yet: no log loss, AUC or value")
            return "\n".join(lines)
        lines += [
            "  on the shown actions with feedback:   log loss    AUC",
            f"    champion   {self.champion.model:<24} {self.champion.log_loss:8.4f} {_fmt(self.champion.auc)}",
            f"    challenger {self.shadow.model:<24} {self.shadow.log_loss:8.4f} {_fmt(self.shadow.auc)}",
            f"  first action's acceptance rate: logged {_fmt(self.logged_rate)}, challenger "
            f"(SNIPS) {_fmt(self.challenger_rate)}, effective sample size "
            f"{_fmt(self.effective_sample_size, '.0f')}",
        ]
        return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def _table(directory: Path, columns: list[str]) -> list[dict[str, Any]]:
    if not directory.is_dir() or not any(directory.rglob("*.parquet")):
        raise NoShadowData(f"no exported files under {directory}: run `nextbest export` first")
    dataset = ds.dataset(directory, format="parquet", partitioning="hive")
    present = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=present).to_pylist()


def shadow_report(export_dir: Path, challenger: str | None = None) -> ShadowReport:
    """Compare the challenger (`name:version`, default: the latest one logged) with the
    champion on the exported decisions it scored in shadow."""
    rows = [r for r in _table(export_dir / "decisions", [
        "decision_id", "ts", "model", "action_ids", "probabilities", "propensities",
        "shadow_model", "shadow_action_ids", "shadow_probabilities", "shadow_propensities",
    ]) if r.get("shadow_model") and r.get("action_ids")]
    if not rows:
        raise NoShadowData(f"no decision in {export_dir / 'decisions'} was scored in shadow: "
                           "`nextbest models shadow VERSION --share S`, then export again")
    if challenger is None:
        challenger = str(max(rows, key=lambda r: float(r["ts"]))["shadow_model"])
    rows = [r for r in rows if r["shadow_model"] == challenger]
    if not rows:
        raise NoShadowData(f"no exported decision was scored by {challenger} in shadow")
    labels = _labels(export_dir / "feedback", {str(r["decision_id"]) for r in rows})

    first_same = [list(r["shadow_action_ids"])[:1] == list(r["action_ids"])[:1] for r in rows]
    overlap = [len(set(r["shadow_action_ids"]) & set(r["action_ids"])) / len(r["action_ids"])
               for r in rows]
    y: list[int] = []
    p_champion: list[float] = []
    p_challenger: list[float] = []
    weights: list[float] = []
    first_rewards: list[float] = []
    for r in rows:
        accepted = labels.get(str(r["decision_id"]))
        if accepted is None:
            continue
        actions = list(r["action_ids"])
        y += [int(a in accepted) for a in actions]
        p_champion += list(r["propensities"])
        p_challenger += list(r["shadow_propensities"])
        logged = float(list(r["probabilities"])[0])
        weights.append(float(list(r["shadow_probabilities"])[0]) / logged)
        first_rewards.append(float(actions[0] in accepted))
    champions = tuple(sorted({str(r["model"]) for r in rows}))
    base: dict[str, Any] = dict(challenger=challenger, champions=champions, decisions=len(rows),
                with_feedback=len(weights), first_action_agreement=float(np.mean(first_same)),
                shown_overlap=float(np.mean(overlap)))
    if not weights:
        return ShadowReport(**base, champion=None, shadow=None, logged_rate=None,
                            challenger_rate=None, effective_sample_size=None)
    w, rewards = np.asarray(weights), np.asarray(first_rewards)
    return ShadowReport(
        **base,
        champion=_scores(", ".join(champions), y, p_champion),
        shadow=_scores(challenger, y, p_challenger),
        logged_rate=float(rewards.mean()),
        challenger_rate=float((w * rewards).sum() / w.sum()) if w.sum() > 0 else None,
        effective_sample_size=float(w.sum() ** 2 / (w ** 2).sum()) if w.sum() > 0 else 0.0,
    )


def _labels(directory: Path, decisions: Iterable[str]) -> dict[str, set[str]]:
    """decision id -> the actions accepted or purchased, for the decisions with feedback."""
    wanted = set(decisions)
    out: dict[str, set[str]] = {}
    try:
        events = _table(directory, ["decision_id", "action_id", "outcome"])
    except NoShadowData:
        return out
    for e in events:
        decision = str(e["decision_id"])
        if decision not in wanted:
            continue
        accepted = out.setdefault(decision, set())
        if e["outcome"] in POSITIVE:
            accepted.add(str(e["action_id"]))
    return out


def _scores(model: str, y: list[int], p: list[float]) -> ModelScores:
    labels, probs = np.asarray(y), np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    auc = float(roc_auc_score(labels, probs)) if 0 < labels.sum() < len(labels) else float("nan")
    return ModelScores(model, float(log_loss(labels, probs, labels=[0, 1])), auc)
