"""Online learning: a River logistic regression that corrects the offline propensity.

The learner sees one example per feedback event: the offline logit `z` of the shown
action plus indicator features for the action, and the action crossed with what the
world's `learner.crosses` names (retail: the channel, the placement and the journey
stage; `LEARNER_CROSSES` are those it can cross with so far), plus fatigue: how often
this customer had already been shown this action when the decision was made (from the
contact ledger, logged with the decision so learning sees exactly what serving saw).
Fatigue is encoded as thresholds, `exposures>=1` ... `exposures>=cap` (the world's
`learner.exposure_cap`, `EXPOSURE_CAP` by default), one weight each, so the
learner finds the shape of fatigue (linear, saturating, a first repeat that costs most)
instead of being told it. The weight on `z` starts at 1, each threshold weight at a
small negative prior (`EXPOSURE_PRIOR`: a repeat is a little less likely to convert;
the data sets the rest) and everything else at 0, so before any feedback the corrected
propensity of an action the customer has not seen equals the offline one.

Optionally each action belongs to a group (its catalog category, the world's
`learner.group_by`): one more indicator,
`g:<group>`, shared by the actions of the group, lets what is learned from one action
carry over to its siblings. When a whole category falls out of favour (the simulator's
drift), the learner then sees it from every action of the category at once instead of
one action at a time. Serving folds the group weight into each action's weight, so the
decision path is unchanged.

Serving never calls River: after each learned batch the weights are copied into
`OnlineWeights`, numpy arrays over the catalog, and the decision path adds the
correction for all candidates in one vectorised expression. Learning runs in a
background task (see `service/feedback_loop.py`), never on the request path.

Outcome -> (label, sample weight): impression and dismiss are negatives, click a
half-weight positive, accept and purchase positives. Integrators should send
impressions; with only positives the learner can only move up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from river import linear_model, optim

from features.config import World

OUTCOME_LABELS: dict[str, tuple[bool, float]] = {
    "impression": (False, 1.0),
    "dismiss": (False, 1.0),
    "click": (True, 0.5),
    "accept": (True, 1.0),
    "purchase": (True, 1.0),
}

_Z = "z"
_GROUP = "g:"
#: Exposures beyond this many count as this many (one weight per threshold up to here).
EXPOSURE_CAP = 5
#: Initial logit per prior exposure, before feedback says how strong fatigue really is.
EXPOSURE_PRIOR = -0.05
#: What the learner can cross the action with: the example's field -> its table's key prefix.
LEARNER_CROSSES = {"channel": "c", "placement": "p", "journey_stage": "s"}


def _exposed(cap: int) -> tuple[str, ...]:
    return tuple(f"exposures>={k}" for k in range(1, cap + 1))


_EXPOSED = _exposed(EXPOSURE_CAP)


def learner_tables(world: World) -> dict[str, list[str]]:
    """The world's `learner.crosses`, each with the values laid out for it in advance.

    Channel and placement are the world's; a customer feature's values are the
    vocabulary the model one-hot encodes it with (values first seen in feedback get a
    column when learned). A cross the learner cannot make yet is refused here, at start-up.
    """
    tables: dict[str, list[str]] = {}
    for name in world.learner.crosses:
        if name not in LEARNER_CROSSES:
            raise ValueError(f"learner.crosses: the online learner crosses the action with "
                             f"{', '.join(LEARNER_CROSSES)} only, not {name!r}")
        encoding = world.model.one_hot("customer", name)
        vocabulary = {"channel": "channels", "placement": "placements"}.get(name) or (
            encoding.vocabulary if encoding is not None else None)
        tables[name] = world.vocabulary(vocabulary) if vocabulary is not None else []
    return tables


@dataclass(frozen=True)
class LearningExample:
    """One feedback event joined with its decision: everything the learner needs."""

    action_id: str
    channel: str
    placement: str
    journey_stage: str
    offline_logit: float
    outcome: str
    exposures: float = 0.0


def _features(e: LearningExample, group: str | None, crosses: Sequence[str],
              exposed: tuple[str, ...]) -> dict[str, float]:
    x = dict.fromkeys(_keys(e, crosses), 1.0)
    if group:
        x[_GROUP + group] = 1.0
    x[_Z] = e.offline_logit
    for key in exposed[:int(min(e.exposures, len(exposed)))]:
        x[key] = 1.0
    return x


def _keys(e: LearningExample, crosses: Sequence[str]) -> tuple[str, ...]:
    """The action's indicator, then the action crossed with each of `crosses`."""
    a = e.action_id
    return (f"a:{a}", *(f"a:{a}|{LEARNER_CROSSES[c]}:{getattr(e, c)}" for c in crosses))


@dataclass
class OnlineWeights:
    """A vectorised copy of the learner's weights over the catalog's action rows."""

    z_weight: float
    bias: float
    action: np.ndarray
    by_channel: dict[str, np.ndarray] = field(default_factory=dict)
    by_placement: dict[str, np.ndarray] = field(default_factory=dict)
    by_stage: dict[str, np.ndarray] = field(default_factory=dict)
    #: logit added after n prior exposures, n = 0 .. EXPOSURE_CAP (cumulated thresholds)
    fatigue: np.ndarray = field(default_factory=lambda: np.zeros(EXPOSURE_CAP + 1))

    @classmethod
    def neutral(cls, n_actions: int) -> OnlineWeights:
        return cls(1.0, 0.0, np.zeros(n_actions))

    def correction(
        self, z: np.ndarray, rows: np.ndarray, channel: str, placement: str, stage: str,
        exposures: np.ndarray | None = None,
    ) -> np.ndarray:
        """Logit to add to the offline logits `z` of the actions at `rows`.

        `exposures`: how often this customer has seen each of those actions (None: never).
        """
        c = (self.z_weight - 1.0) * z + self.bias + self.action[rows]
        if exposures is not None:
            c += self.fatigue[np.minimum(exposures, len(self.fatigue) - 1)]
        for table, key in (
            (self.by_channel, channel), (self.by_placement, placement), (self.by_stage, stage)
        ):
            arr = table.get(key)
            if arr is not None:
                c += arr[rows]
        return c


@dataclass(frozen=True)
class LearnerState:
    """What learning has changed, as plain values (snapshots; no River pickle)."""

    keys: list[str]  # River feature names
    weights: np.ndarray  # float64, one per key
    intercept: float
    steps: int  # the optimizer's iterations
    updates: int  # examples learned
    columns: list[tuple[str, str]]  # context columns first seen in feedback (not in the schema)


class OnlineLearner:
    """River logistic regression over (offline logit, action x context indicators)."""

    def __init__(self, action_ids: Sequence[str], tables: Mapping[str, Sequence[str]],
                 learning_rate: float = 0.015, exposure_prior: float = EXPOSURE_PRIOR,
                 groups: Sequence[str | None] | None = None,
                 exposure_cap: int = EXPOSURE_CAP) -> None:
        """`groups[i]`: the group (catalog category) of `action_ids[i]`, or None.

        `tables`: the crosses (`learner_tables(world)`), each with its known values.
        """
        self.model = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), intercept_lr=learning_rate / 5, l2=1e-5
        )
        self._crosses = [c for c in LEARNER_CROSSES if c in tables]
        self._crossed = [(c, LEARNER_CROSSES[c]) for c in self._crosses]
        self._exposed = _exposed(exposure_cap)
        self.model._weights[_Z] = 1.0
        for key in self._exposed:
            self.model._weights[key] = exposure_prior
        self.updates = 0
        # Where publication puts each weight: one column per (table, context value), one
        # River key per action in it; values seen in feedback but not in the schema get
        # a column when first learned.
        self._columns: list[tuple[str, str]] = [("", "")] + [
            (LEARNER_CROSSES[cross], value) for cross in self._crosses for value in tables[cross]
        ]
        self._known_columns = set(self._columns)
        self._schema_columns = len(self._columns)
        self._scalar_keys = [_Z, *self._exposed]
        self._action_ids: list[str] = []
        self._lay_out(action_ids, groups)
        self.weights = OnlineWeights.neutral(self._n)
        self.weights.fatigue = exposure_prior * np.arange(exposure_cap + 1.0)

    def _lay_out(self, action_ids: Sequence[str], groups: Sequence[str | None] | None) -> None:
        self._n = len(action_ids)
        self._group: dict[str, str] = {}
        if groups is not None:
            if len(groups) != len(action_ids):
                raise ValueError(f"{len(groups)} groups for {len(action_ids)} actions")
            self._group = {a: g for a, g in zip(action_ids, groups, strict=True) if g}
        self._action_ids = list(action_ids)
        self._slot_keys = self._keys_of(self._columns)
        group_names = sorted(set(self._group.values()))
        self._group_keys = [_GROUP + g for g in group_names]
        position = {g: i for i, g in enumerate(group_names)}
        # group of each action as an index into the group weights; the last slot is a 0
        self._group_of = np.array(
            [position.get(self._group.get(a, ""), len(position)) for a in self._action_ids],
            dtype=np.int64,
        )

    def relayout(self, action_ids: Sequence[str], groups: Sequence[str | None] | None = None) -> None:
        """Serve over a new catalog's rows, and publish: `action_ids` must begin with the
        ids served now (a catalog only ever appends rows), so what was learned for an
        action stays with it; `groups` as in the constructor (a category may change)."""
        if list(action_ids[:self._n]) != self._action_ids:
            raise ValueError("a new catalog's rows must begin with the rows served now")
        self._lay_out(action_ids, groups)
        self.publish()

    def learn(self, examples: Iterable[LearningExample]) -> int:
        """Learn a batch; returns how many examples were used (unknown outcomes skipped)."""
        n = 0
        for e in examples:
            label = OUTCOME_LABELS.get(e.outcome)
            if label is None:
                continue
            for cross, table in self._crossed:
                column = (table, getattr(e, cross))
                if column not in self._known_columns:
                    self._add_column(column)
            self.model.learn_one(self._features(e), label[0], w=label[1])
            n += 1
        self.updates += n
        return n

    def _keys_of(self, columns: Sequence[tuple[str, str]]) -> list[str]:
        return [f"a:{a}|{table}:{value}" if table else f"a:{a}"
                for table, value in columns for a in self._action_ids]

    def _add_column(self, column: tuple[str, str]) -> None:
        self._columns.append(column)
        self._known_columns.add(column)
        self._slot_keys += self._keys_of([column])

    def publish(self) -> OnlineWeights:
        """Copy the River weights into the vectorised form the decision path reads.

        One `to_numpy` call gathers every action x context weight in the layout's order
        (a missing key reads as 0), in C: a Python walk over the weights would stall
        every decision on the event loop for as long as it takes, at every publication
        (`load_tests/learner_bench.py` measures the loop that publishes).
        """
        weights = self.model._weights
        grid = weights.to_numpy(self._slot_keys).reshape(len(self._columns), self._n)
        groups = np.append(weights.to_numpy(self._group_keys), 0.0) if self._group_keys else np.zeros(1)
        z_weight, *steps = weights.to_numpy(self._scalar_keys).tolist()
        w = OnlineWeights(
            z_weight=z_weight, bias=float(self.model.intercept),
            action=grid[0] + groups[self._group_of],
            fatigue=np.cumsum([0.0, *steps]),
        )
        tables = {"c": w.by_channel, "p": w.by_placement, "s": w.by_stage}
        for (table, value), row in zip(self._columns[1:], grid[1:], strict=True):
            tables[table][value] = row
        self.weights = w
        return w

    def state(self) -> LearnerState:
        weights = self.model._weights
        keys = list(weights)
        return LearnerState(
            keys=keys, weights=np.array([weights[k] for k in keys], dtype=np.float64),
            intercept=float(self.model.intercept), steps=int(self.model.optimizer.n_iterations),
            updates=self.updates, columns=self._columns[self._schema_columns:],
        )

    def restore(self, state: LearnerState) -> None:
        """Continue from `state` (a learner that has learned nothing yet), and publish it."""
        weights = self.model._weights
        for key, value in zip(state.keys, state.weights.tolist(), strict=True):
            weights[key] = value
        self.model.intercept = state.intercept
        self.model.optimizer.n_iterations = state.steps
        self.updates = state.updates
        for column in state.columns:
            if column not in self._known_columns:
                self._add_column(column)
        self.publish()

    def predict_proba(self, e: LearningExample) -> float:
        """River's own prediction for one example (tests compare it with the vector copy)."""
        return float(self.model.predict_proba_one(self._features(e))[True])

    def _features(self, e: LearningExample) -> dict[str, float]:
        return _features(e, self._group.get(e.action_id), self._crosses, self._exposed)
