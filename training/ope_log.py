"""The decision log that off-policy evaluation reads, and its validation.

One JSON object per line (`docs/log-format.md` documents every field). A row is
rejected with the line number and the field at fault, because a silently skipped row
biases every estimate that follows: the evaluator refuses a log rather than guess.

Candidate sets are ragged; `LoggedBandit` pads them into `(n, K)` matrices with a mask
so that every estimator is a numpy expression over rows and candidate slots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import orjson

    _fast_loads: Any = orjson.loads
except ImportError:  # pragma: no cover - orjson is a project dependency
    _fast_loads = json.loads

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

REQUIRED_FIELDS: tuple[str, ...] = (
    "decision_id", "ts", "customer_id", "channel", "placement", "context",
    "candidates", "action_id", "propensity", "reward",
)


class LogFormatError(ValueError):
    """A row of the decision log breaks the format; names the line and the field."""

    def __init__(self, line: int, field: str, problem: str, source: str = "") -> None:
        self.line = line
        self.field = field
        self.problem = problem
        where = f"{source} line {line}" if source else f"line {line}"
        super().__init__(f"{where}: field {field!r}: {problem}")


@dataclass(frozen=True)
class LoggedBandit:
    """A validated decision log as arrays; row i is the i-th decision of the file.

    `candidates[i, k]` indexes `actions` (the vocabulary of action ids), -1 in padding;
    `chosen[i]` is the slot k of the logged action in row i; `scores` is NaN where the
    log gave no score (and in padding).
    """

    actions: tuple[str, ...]
    candidates: IntArray
    mask: BoolArray
    chosen: IntArray
    propensity: FloatArray
    reward: FloatArray
    scores: FloatArray
    decision_ids: tuple[str, ...]
    contexts: tuple[dict[str, Any], ...] = field(repr=False)
    channels: tuple[str, ...] = field(repr=False)
    placements: tuple[str, ...] = field(repr=False)
    timestamps: tuple[float, ...] = field(default=(), repr=False)  # `ts`; () when not known
    customer_ids: tuple[str | None, ...] = field(default=(), repr=False)

    @property
    def n(self) -> int:
        return int(self.reward.shape[0])

    @property
    def chosen_action(self) -> IntArray:
        """The logged action per row, as an index into `actions`."""
        return self.candidates[np.arange(self.n), self.chosen]

    def take(self, rows: BoolArray) -> LoggedBandit:
        """The decisions where `rows` is True, in order (the candidate padding kept)."""
        index = np.flatnonzero(rows)

        def pick(values: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(values[i] for i in index) if values else values

        return LoggedBandit(
            actions=self.actions, candidates=self.candidates[index], mask=self.mask[index],
            chosen=self.chosen[index], propensity=self.propensity[index], reward=self.reward[index],
            scores=self.scores[index], decision_ids=pick(self.decision_ids),
            contexts=pick(self.contexts), channels=pick(self.channels),
            placements=pick(self.placements), timestamps=pick(self.timestamps),
            customer_ids=pick(self.customer_ids),
        )

    @property
    def has_scores(self) -> BoolArray:
        """Rows whose every candidate has a score."""
        return np.all(np.isfinite(self.scores) | ~self.mask, axis=1)


def _number(row: dict[str, Any], name: str, line: int) -> float:
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LogFormatError(line, name, f"must be a number, got {value!r}")
    return float(value)


def _string(row: dict[str, Any], name: str, line: int, nullable: bool = False) -> str | None:
    value = row[name]
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        raise LogFormatError(line, name, f"must be a non-empty string, got {value!r}")
    return value


def _parse(text: str, line: int) -> dict[str, Any]:
    try:
        row = _fast_loads(text)
    except ValueError:
        try:  # the stdlib also reads NaN/Infinity, which then get a field-level error
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LogFormatError(line, "<json>", f"not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise LogFormatError(line, "<json>", "a line must be one JSON object")
    return row


def validate_row(row: dict[str, Any], line: int) -> tuple[list[str], int, dict[str, float]]:
    """Check one decision; returns (candidates, chosen slot, finite scores of candidates)."""
    for name in REQUIRED_FIELDS:
        if name not in row:
            raise LogFormatError(line, name, "missing")
    _string(row, "decision_id", line)
    _number(row, "ts", line)
    _string(row, "customer_id", line, nullable=True)
    _string(row, "channel", line)
    _string(row, "placement", line)
    if not isinstance(row["context"], dict):
        raise LogFormatError(line, "context", "must be a JSON object")
    candidates = row["candidates"]
    if not isinstance(candidates, list) or not candidates:
        raise LogFormatError(line, "candidates", "must be a non-empty list of action ids")
    if not all(isinstance(c, str) and c for c in candidates):
        raise LogFormatError(line, "candidates", "every action id must be a non-empty string")
    if len(set(candidates)) != len(candidates):
        raise LogFormatError(line, "candidates", "has duplicate action ids")
    action = _string(row, "action_id", line)
    if action not in candidates:
        raise LogFormatError(line, "action_id", f"{action!r} is not among the candidates")
    propensity = _number(row, "propensity", line)
    if not 0.0 < propensity <= 1.0:
        raise LogFormatError(line, "propensity", f"must be in (0, 1], got {propensity!r}")
    if not math.isfinite(_number(row, "reward", line)):
        raise LogFormatError(line, "reward", f"must be finite, got {row['reward']!r}")
    scores: dict[str, float] = {}
    raw = row.get("scores")
    if raw is not None:
        if not isinstance(raw, dict):
            raise LogFormatError(line, "scores", "must be an object {action_id: number}")
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise LogFormatError(line, "scores", f"score of {key!r} must be a finite number, got {value!r}")
            if key in candidates:  # scores of non-candidates are allowed and ignored
                scores[key] = float(value)
    return candidates, candidates.index(action), scores


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                yield number, text


def read_rows(lines: Iterable[tuple[int, str]], source: str = "") -> LoggedBandit:
    """Validate (line number, JSON text) pairs and pack them into a `LoggedBandit`."""
    vocabulary: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    parsed: list[tuple[list[int], int, dict[int, float]]] = []
    for line, text in lines:
        try:
            row = _parse(text, line)
            candidates, slot, scores = validate_row(row, line)
        except LogFormatError as exc:
            raise LogFormatError(exc.line, exc.field, exc.problem, source) from None
        ids = [vocabulary.setdefault(c, len(vocabulary)) for c in candidates]
        parsed.append((ids, slot, {vocabulary[a]: s for a, s in scores.items()}))
        rows.append(row)
    if not rows:
        raise LogFormatError(0, "<file>", "the log has no decisions", source)
    n, width = len(rows), max(len(ids) for ids, _, _ in parsed)
    candidates_m = np.full((n, width), -1, dtype=np.int64)
    scores_m = np.full((n, width), np.nan)
    for i, (ids, _, row_scores) in enumerate(parsed):
        candidates_m[i, : len(ids)] = ids
        for k, a in enumerate(ids):
            scores_m[i, k] = row_scores.get(a, np.nan)
    return LoggedBandit(
        actions=tuple(vocabulary),
        candidates=candidates_m,
        mask=candidates_m >= 0,
        chosen=np.array([slot for _, slot, _ in parsed], dtype=np.int64),
        propensity=np.array([float(r["propensity"]) for r in rows]),
        reward=np.array([float(r["reward"]) for r in rows]),
        scores=scores_m,
        decision_ids=tuple(r["decision_id"] for r in rows),
        contexts=tuple(r["context"] for r in rows),
        channels=tuple(r["channel"] for r in rows),
        placements=tuple(r["placement"] for r in rows),
        timestamps=tuple(float(r["ts"]) for r in rows),
        customer_ids=tuple(r["customer_id"] for r in rows),
    )


def load_log(path: str | Path) -> LoggedBandit:
    """Read and validate a decision log (JSON Lines; blank lines are skipped)."""
    path = Path(path)
    return read_rows(_lines(path), source=str(path))


def write_log(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write decisions as JSON Lines (what converters from other systems should produce)."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, separators=(",", ":")) + "\n")
