"""`nextbest dataset`: the exported decision and feedback logs -> the interactions training reads.

The second step of retraining (docs/retraining.md). Input: an export directory
(`training/export.py`: `decisions/` and `feedback/` Parquet by day, `_watermark.json`).
Output: the interactions frame that `training/dataset.py` joins point-in-time with the
world's FeatureService, one row per (decision, shown action), with the columns of
`INTERACTION_COLUMNS` plus one per context field of the world; optionally also the
decision log that off-policy evaluation reads (`docs/log-format.md`), one row per
decision for its rank-1 action.

Rules (each documented in docs/retraining.md):

- shown: by default (`events`) the actions of a decision that have at least one
  feedback event (impression, click, accept, dismiss, purchase), else its rank-1
  action when it has no event at all; `rank1` keeps only rank 1, `all` every returned
  action.
- label: 1 when an outcome of `label_outcomes` (accept and purchase by default) for
  that action arrives at most `window` after the decision (by the event's own `ts`).
- reward: the value of the first such outcome; an outcome without a value counts the
  action's catalog value (what arbitration weighed), 0 for an action the catalog lacks.
- propensity: the logged probability that the policy picked the action at its rank
  (`probabilities`; for ranks below 1 conditional on the ranks above).
- censoring: a decision whose window is still open at the export's feedback horizon
  (the feedback watermark's time; without one, the newest exported event or decision)
  is left out: its label is not known yet. The next run includes it.

The output is a function of the export alone (and the options): running it again over
the same export writes the same file; it is written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from tqdm import tqdm

from features.config import CategoryField, IdListField, NumberField, World
from service.export_status import id_ms
from training.export import WATERMARK_FILE

OUTCOMES = ("impression", "click", "accept", "dismiss", "purchase")
DEFAULT_LABEL_OUTCOMES = ("accept", "purchase")
SHOWN_RULES = ("events", "rank1", "all")
DEFAULT_WINDOW = timedelta(hours=24)

#: The interactions columns besides the world's context fields (docs/retraining.md's
#: table is generated from here). Context fields follow `placement`, by their names.
INTERACTION_COLUMNS: dict[str, tuple[str, str]] = {
    "event_timestamp": ("timestamp (UTC)", "when the decision was made: the point in time of the feature join"),
    "decision_id": ("string", "the decision"),
    "customer_id": ("string", "who it was for (null: anonymous; joined with no features, so the world's defaults)"),
    "action_id": ("string", "the shown action this row is about"),
    "channel": ("string", "the decision's channel"),
    "placement": ("string", "the decision's placement"),
    "propensity": ("double", "the logged probability that the policy picked the action at its rank"),
    "label": ("int64", "1: a labelling outcome within the attribution window, else 0"),
    "reward": ("double", "the first labelling outcome's value (no value: the action's catalog value); 0 without one"),
    "rank": ("int64", "the action's rank in the decision (1: first)"),
    "explored": ("bool", "shown by exploration rather than by rank"),
    "logged_model": ("string", "the offline model that made the decision, `name:version`"),
}

_DECISION_COLUMNS = ["stream_id", "decision_id", "ts", "customer_id", "channel", "placement",
                     "model", "context", "candidates", "action_ids", "probabilities", "explored"]
_FEEDBACK_COLUMNS = ["decision_id", "action_id", "outcome", "value", "ts"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DatasetError(ValueError):
    """The export cannot be turned into a dataset as asked (the CLI says why and exits 2)."""


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `24h`, `7d` -> a timedelta (positive)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30m, 24h or 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"the duration must be positive, got {text!r}")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class LoggedDataset:
    """What one run built: the interactions, the decisions' OPE rows and what it left out."""

    interactions: pd.DataFrame
    decisions: list[dict[str, Any]]  # docs/log-format.md rows, in time order
    horizon: float  # Unix seconds: outcomes up to here are known
    n_decisions: int  # exported decisions read
    open_window: int  # left out: their window closes after the horizon
    without_actions: int  # left out: nothing was shown (no eligible action)

    def summary(self) -> str:
        labelled = int(self.interactions["label"].sum()) if len(self.interactions) else 0
        return (f"{len(self.interactions)} interactions ({labelled} labelled 1) from "
                f"{len(self.decisions)} of {self.n_decisions} decisions; left out: "
                f"{self.open_window} whose attribution window is still open, "
                f"{self.without_actions} that showed nothing")


def _read(directory: Path, columns: list[str]) -> pd.DataFrame:
    if not directory.is_dir() or not any(directory.glob("day=*/part-*.parquet")):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    dataset = ds.dataset(directory, format="parquet", partitioning="hive",
                         exclude_invalid_files=True)
    frame: pd.DataFrame = dataset.to_table(columns=columns).to_pandas()
    return frame


def _horizon(export_dir: Path, decisions: pd.DataFrame, feedback: pd.DataFrame) -> float:
    """Unix seconds up to which the export knows the outcomes."""
    path = export_dir / WATERMARK_FILE
    if path.is_file():
        mark = json.loads(path.read_text()).get("feedback")
        if mark and mark.get("last_id") not in (None, "0-0"):
            return id_ms(mark["last_id"]) / 1000.0
    times = [float(f["ts"].max()) for f in (feedback, decisions) if len(f)]
    return max(times) if times else 0.0


def context_columns(world: World) -> list[str]:
    """The world's context fields, as interaction columns (id lists comma-joined)."""
    return list(world.context)


def _context_values(raw: str | None, world: World) -> dict[str, Any]:
    return context_values(json.loads(raw) if raw else {}, world)


def context_values(ctx: Mapping[str, Any], world: World) -> dict[str, Any]:
    """A decision's logged context (defaults left out) by the world's field names, with
    the declared defaults filled in as the service's request model fills them."""
    out: dict[str, Any] = {}
    for name, spec in world.context.items():
        value = ctx.get(name)
        if isinstance(spec, IdListField):
            out[name] = ",".join(str(v) for v in value) if isinstance(value, list) else ""
        elif value is None and isinstance(spec, NumberField):
            out[name] = float(spec.default)
        elif value is None and isinstance(spec, CategoryField):
            out[name] = spec.default
        else:
            out[name] = value
    return out


def build(export_dir: Path, world: World, window: timedelta = DEFAULT_WINDOW,
          label_outcomes: Sequence[str] = DEFAULT_LABEL_OUTCOMES, shown: str = "events",
          values: Mapping[str, float] | None = None, progress: bool = True) -> LoggedDataset:
    """The interactions and OPE rows of the export in `export_dir` (see the module doc).

    `values`: action id -> catalog value, for outcomes logged without a value.
    """
    if shown not in SHOWN_RULES:
        raise DatasetError(f"unknown rule for shown actions {shown!r}; choose one of {SHOWN_RULES}")
    unknown = sorted(set(label_outcomes) - set(OUTCOMES))
    if unknown or not label_outcomes:
        raise DatasetError(f"label outcomes must be some of {OUTCOMES}, got {list(label_outcomes)}")
    export_dir = Path(export_dir)
    if not (export_dir / "decisions").is_dir():
        raise DatasetError(f"{export_dir} holds no exported decisions ({export_dir / 'decisions'} "
                           "is missing): run `nextbest export` first")
    steps = tqdm(total=4, desc="dataset", unit="step", disable=not progress)
    steps.set_postfix_str("read")
    decisions = _read(export_dir / "decisions", _DECISION_COLUMNS)
    feedback = _read(export_dir / "feedback", _FEEDBACK_COLUMNS)
    n_read = len(decisions)
    decisions = (decisions.sort_values("stream_id", kind="stable")
                 .drop_duplicates("decision_id", keep="first"))
    horizon = _horizon(export_dir, decisions, feedback)
    steps.update()

    steps.set_postfix_str("attribution")
    limit = window.total_seconds()
    has_actions = decisions["action_ids"].map(len) > 0
    closed = decisions["ts"].astype(float) + limit <= horizon
    kept = decisions[has_actions & closed].sort_values(["ts", "stream_id"], kind="stable")
    rows = kept.explode(["action_ids", "probabilities", "explored"], ignore_index=False)
    rows["rank"] = rows.groupby(level=0).cumcount() + 1
    rows = rows.reset_index(drop=True).rename(columns={
        "action_ids": "action_id", "probabilities": "propensity", "model": "logged_model"})
    events = feedback.merge(kept[["decision_id", "ts"]].rename(columns={"ts": "decided_at"}),
                            on="decision_id", how="inner")
    key = ["decision_id", "action_id"]
    positive = events[events["outcome"].isin(list(label_outcomes))
                      & (events["ts"].astype(float) - events["decided_at"].astype(float) <= limit)]
    first = positive.sort_values("ts", kind="stable").drop_duplicates(key, keep="first")
    rows = rows.merge(first[[*key, "value"]].assign(label=1), on=key, how="left")
    rows["label"] = rows["label"].fillna(0).astype(np.int64)
    catalog_value = rows["action_id"].map(dict(values or {})).fillna(0.0).astype(float)
    value = rows["value"].astype(float)
    rows["reward"] = np.where(rows["label"] == 1, value.fillna(catalog_value), 0.0)
    steps.update()

    steps.set_postfix_str("shown actions")
    rows = _shown(rows, events, shown)
    contexts = pd.DataFrame([_context_values(c, world) for c in rows["context"]],
                            columns=context_columns(world), index=rows.index)
    frame = pd.DataFrame({
        "event_timestamp": pd.to_datetime(rows["ts"].astype(float), unit="s", utc=True).dt.as_unit("us"),
        "decision_id": rows["decision_id"], "customer_id": rows["customer_id"],
        "action_id": rows["action_id"], "channel": rows["channel"], "placement": rows["placement"],
    })
    frame = pd.concat([frame, contexts], axis=1)
    frame["propensity"] = rows["propensity"].astype(float)
    frame["label"] = rows["label"]
    frame["reward"] = rows["reward"].astype(float)
    frame["rank"] = rows["rank"].astype(np.int64)
    frame["explored"] = rows["explored"].astype(bool)
    frame["logged_model"] = rows["logged_model"]
    steps.update()

    steps.set_postfix_str("decision log")
    ope_rows = _decision_log(kept, first, values or {})
    steps.update()
    steps.close()
    return LoggedDataset(frame.reset_index(drop=True), ope_rows, horizon, n_read,
                         int((has_actions & ~closed).sum()), int((~has_actions).sum()))


def _shown(rows: pd.DataFrame, events: pd.DataFrame, rule: str) -> pd.DataFrame:
    if rule == "all":
        return rows
    if rule == "rank1":
        return rows[rows["rank"] == 1]
    seen = events[["decision_id", "action_id"]].drop_duplicates().assign(_seen=True)
    marked = rows.merge(seen, on=["decision_id", "action_id"], how="left")
    marked["_seen"] = marked["_seen"].notna()
    any_seen = marked.groupby("decision_id")["_seen"].transform("any")
    keep = marked["_seen"] | (~any_seen & (marked["rank"] == 1))
    return marked[keep].drop(columns="_seen")


def _decision_log(kept: pd.DataFrame, first: pd.DataFrame,
                  values: Mapping[str, float]) -> list[dict[str, Any]]:
    """One docs/log-format.md row per decision: its rank-1 action, reward and propensity."""
    earned = {(d, a): v for d, a, v in zip(first["decision_id"], first["action_id"],
                                           first["value"], strict=True)}
    out = []
    for r in kept.itertuples(index=False):
        action = r.action_ids[0]
        hit = (r.decision_id, action) in earned
        value = earned.get((r.decision_id, action))
        reward = 0.0 if not hit else (float(value) if value is not None and not math.isnan(value)
                                      else float(values.get(action, 0.0)))
        candidates = list(r.candidates) if len(r.candidates) else list(r.action_ids)
        out.append({
            "decision_id": r.decision_id, "ts": float(r.ts), "customer_id": r.customer_id,
            "channel": r.channel, "placement": r.placement,
            "context": json.loads(r.context) if r.context else {},
            "candidates": candidates, "action_id": action,
            "propensity": float(r.probabilities[0]), "reward": reward,
            "model": r.model,
        })
    return out


def write_interactions(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, fsynced, renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    frame.to_parquet(tmp, index=False)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_decision_log(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """The OPE decision log (JSON Lines), written atomically like the interactions."""
    from training.ope_log import write_log

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    write_log(tmp, rows)
    os.replace(tmp, path)
