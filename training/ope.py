"""Off-policy evaluation: what a policy would have earned on a logged set of decisions.

`nextbest evaluate` (`training/evaluate.py`) and the retraining gate (`training/gate.py`)
share this module. The log format is in
`docs/log-format.md` (reading and validation: `training/ope_log.py`).

A target policy is any callable `LoggedBandit -> (n, K) probabilities` over each row's
candidate slots (zero in padding). Built in: `uniform`, `logged` (the logging policy,
as far as the log reveals it: a sanity check), `greedy(scores)` and
`epsilon_greedy(scores, eps)`; `scores` defaults to the log's own `scores` field, and a
retraining pipeline passes its new model's scores of the logged candidates instead.

Estimators, with w = pi(a|x) / mu(a|x) on the logged action (optionally capped at
`clip`: less variance, a bias towards zero):

- replay: mean reward where the target agrees with the log, weighting each decision by
  the target's probability of the logged action (0/1 for a deterministic target, the
  "matched probability" for a stochastic one). Unbiased only when every logged action
  had the same propensity (uniform logging over a fixed number of candidates); the
  estimate carries a note when it did not.
- ips: mean of w r. Unbiased (without clipping) but high variance.
- snips: sum(w r) / sum(w). Slightly biased, far lower variance; the gate's default.
- dr: sum_a pi(a|x) q(x, a) + w (r - q(x, A)). Unbiased if either the propensities or
  the reward model q are right. Default q: the log's `scores` where every candidate has
  one, else the per-action mean reward, cross-fitted over two folds so that a
  decision's own reward never enters its q.

Every estimator is written as a ratio sum(num) / sum(den) of per-decision terms (den = 1
for ips and dr). Its influence terms V + (num - V den) / mean(den) give the normal
(delta-method) confidence interval, and pair up across two policies on the same log for
the gate's interval on their difference. `bootstrap > 0` replaces the normal intervals
by seeded percentile bootstrap ones.

Where the normal approximation does not hold, the interval says so rather than shrink:
rewards are bounded (by `reward_range`, default the log's own range with 0), and when
the decisions a policy puts weight on hold fewer than `MIN_EVENTS` rewards above the
bottom of the range (or below its top), the interval is widened to contain the exact
binomial (Clopper-Pearson) interval of the value's position in the range over the
estimate's effective sample size. With no reward at all among them it is [low, low +
(high - low)(1 - (alpha/2)^(1/ESS))], not the normal interval's [0, 0]. A log whose
rewards are all equal gives no range: the interval is then NaN, "not enough data",
unless `reward_range` is given. A difference between two policies where either side
needed the exact interval is bounded from the two intervals (each at half the error
rate), since pairing them relies on the same normal approximation; two policies with the
same terms on every decision differ by exactly 0.

The gate refuses to decide (neither pass nor fail) when either policy's effective
sample size is below `min_ess` or either interval is not known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from training.ope_log import FloatArray, LoggedBandit
from training.ope_policies import TargetPolicy, check_policy
from training.ope_policies import epsilon_greedy as epsilon_greedy  # re-exported: the policies
from training.ope_policies import exploring as exploring
from training.ope_policies import greedy as greedy
from training.ope_policies import logged as logged
from training.ope_policies import uniform as uniform

ESTIMATORS: tuple[str, ...] = ("replay", "ips", "snips", "dr")
REWARD_MODELS: tuple[str, ...] = ("auto", "scores", "mean")
_BOOTSTRAP_CELLS = 4_000_000
#: Fewer rewards than this above the bottom (or below the top) of the reward range among
#: the decisions a policy weighs: the normal interval is widened to the exact binomial one.
MIN_EVENTS = 10
#: The gate's default minimum effective sample size, below which it refuses to decide.
DEFAULT_MIN_ESS = 100.0
NOT_ENOUGH_DATA = "not enough data"


@dataclass(frozen=True)
class Estimate:
    """A policy value, its confidence interval, the decisions it uses and the Kish
    effective sample size (sum w)^2 / sum w^2 of its weights."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    effective_sample_size: float
    note: str = ""
    exact: bool = False  # the interval contains the exact binomial one (few rewards)


@dataclass(frozen=True)
class GateResult:
    """`decided` False: the gate refused (too small an effective sample, no valid
    interval); `passed` is then False too, and `reason` says why."""

    passed: bool
    candidate: Estimate
    incumbent: Estimate
    difference: Estimate
    reason: str
    decided: bool = True


# --- weights and reward models -------------------------------------------------------

def importance_weights(log: LoggedBandit, probs: FloatArray, clip: float | None = None) -> FloatArray:
    """pi(A|x) / mu(A|x) on the logged action, capped at `clip` when given."""
    if clip is not None and clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    weights = probs[np.arange(log.n), log.chosen] / log.propensity
    return weights if clip is None else np.minimum(weights, clip)


def cross_fitted_mean_reward(log: LoggedBandit, folds: int = 2, seed: int = 0) -> FloatArray:
    """q(x, a) = mean logged reward of action a, each fold's q fitted on the other folds
    (actions a fold never saw fall back to that fold's overall mean reward)."""
    fold = np.random.default_rng(seed).permutation(log.n) % folds
    action, n_actions = log.chosen_action, len(log.actions)
    q = np.zeros(log.mask.shape)
    for f in range(folds):
        train, test = fold != f, fold == f
        if not train.any():
            continue
        sums = np.bincount(action[train], weights=log.reward[train], minlength=n_actions)
        counts = np.bincount(action[train], minlength=n_actions)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), log.reward[train].mean())
        q[test] = means[log.candidates[test]]
    return np.where(log.mask, q, 0.0)


def reward_model(log: LoggedBandit, kind: str = "auto", seed: int = 0) -> FloatArray:
    """The DR reward model `(n, K)`: "scores", "mean" (cross-fitted) or "auto" (scores
    for decisions that score every candidate, the cross-fitted mean elsewhere)."""
    if kind not in REWARD_MODELS:
        raise ValueError(f"unknown reward model {kind!r}; choose one of {REWARD_MODELS}")
    complete = log.has_scores
    if kind == "scores" and not complete.all():
        raise ValueError(f"{int((~complete).sum())} decisions lack scores for some candidate; "
                         "use the 'auto' or 'mean' reward model")
    if kind == "mean" or not complete.any():
        return cross_fitted_mean_reward(log, seed=seed)
    scored = np.where(log.mask, np.nan_to_num(log.scores), 0.0)
    if complete.all():
        return scored
    return np.where(complete[:, None], scored, cross_fitted_mean_reward(log, seed=seed))


# --- per-decision terms ------------------------------------------------------------------

@dataclass(frozen=True)
class _Terms:
    """value = sum(num) / sum(den); `weights` feed the effective sample size; `n` counts
    the decisions the estimate uses (replay: those where the target agrees with the log)."""

    name: str
    num: FloatArray
    den: FloatArray
    weights: FloatArray
    n: int
    note: str = ""

    @property
    def value(self) -> float:
        total = float(self.den.sum())
        return float(self.num.sum()) / total if total > 0 else math.nan

    def influence(self) -> FloatArray:
        value = self.value
        if math.isnan(value):
            return np.full_like(self.num, np.nan)
        return value + (self.num - value * self.den) / self.den.mean()


def _terms(log: LoggedBandit, probs: FloatArray, name: str, clip: float | None,
           q: FloatArray | None) -> _Terms:
    if name == "replay":
        matched = probs[np.arange(log.n), log.chosen]
        constant = float(np.ptp(log.propensity)) <= 1e-9 * float(log.propensity.max())
        note = "" if constant else "logged propensities vary across decisions: replay is biased"
        return _Terms(name, matched * log.reward, matched, matched, int(np.count_nonzero(matched)), note)
    weights = importance_weights(log, probs, clip)
    ones = np.ones(log.n)
    if name == "ips":
        return _Terms(name, weights * log.reward, ones, weights, log.n)
    if name == "snips":
        return _Terms(name, weights * log.reward, weights, weights, log.n)
    if name == "dr":
        assert q is not None
        direct = (probs * q).sum(axis=1)
        residual = log.reward - q[np.arange(log.n), log.chosen]
        return _Terms(name, direct + weights * residual, ones, weights, log.n)
    raise ValueError(f"unknown estimator {name!r}; choose one of {ESTIMATORS}")


def _ess(weights: FloatArray) -> float:
    squares = float((weights**2).sum())
    return float(weights.sum()) ** 2 / squares if squares > 0 else 0.0


def _bootstrap_values(terms: Sequence[_Terms], resamples: int, seed: int) -> FloatArray:
    """`(resamples, len(terms))` values on shared resamples (paired across policies)."""
    n = terms[0].num.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // n)
    out = np.empty((resamples, len(terms)))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        for j, t in enumerate(terms):
            den = t.den[idx].sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[start:start + idx.shape[0], j] = np.where(den > 0, t.num[idx].sum(axis=1) / den, np.nan)
    return out


def _interval(value: float, influence: FloatArray, level: float,
              boot: FloatArray | None) -> tuple[float, float]:
    if boot is not None:
        tail = (1.0 - level) / 2.0
        finite = boot[np.isfinite(boot)]
        if finite.size == 0:
            return math.nan, math.nan
        low, high = np.quantile(finite, [tail, 1.0 - tail])
        return float(low), float(high)
    n = influence.shape[0]
    if n < 2 or math.isnan(value):
        return math.nan, math.nan
    half = NormalDist().inv_cdf(0.5 + level / 2.0) * float(influence.std(ddof=1)) / math.sqrt(n)
    return value - half, value + half


def reward_bounds(log: LoggedBandit, reward_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """The range rewards lie in: `reward_range`, else the log's own range with 0 in it."""
    if reward_range is not None:
        low, high = (float(v) for v in reward_range)
        if not high > low:
            raise ValueError(f"reward range must have low < high, got {reward_range}")
        if log.reward.min() < low or log.reward.max() > high:
            raise ValueError(f"logged rewards lie in [{log.reward.min():g}, {log.reward.max():g}], "
                             f"outside the reward range {reward_range}")
        return low, high
    return min(0.0, float(log.reward.min())), max(0.0, float(log.reward.max()))


def _few_events(t: _Terms, reward: FloatArray, bounds: tuple[float, float]) -> bool:
    """Whether the decisions the policy weighs hold too few rewards off either bound."""
    supported = reward[t.weights > 0]
    low, high = bounds
    return min(int((supported > low).sum()), int((supported < high).sum())) < MIN_EVENTS


def clopper_pearson(share: float, trials: float, level: float) -> tuple[float, float]:
    """The exact binomial interval of a proportion `share` over `trials` (which may be a
    fractional effective sample size), at confidence `level`."""
    from scipy.stats import beta

    share = min(max(share, 0.0), 1.0)
    k = share * trials
    tail = (1.0 - level) / 2.0
    low = 0.0 if k <= 0 else float(beta.ppf(tail, k, trials - k + 1))
    high = 1.0 if k >= trials else float(beta.ppf(1.0 - tail, k + 1, trials - k))
    return low, high


def _summarise(t: _Terms, level: float, boot: FloatArray | None, reward: FloatArray,
               bounds: tuple[float, float]) -> Estimate:
    value = t.value
    ess = _ess(t.weights)
    low, high = _interval(value, t.influence(), level, boot)
    note = t.note or ("no logged decision supports this policy" if math.isnan(value) else "")
    if math.isnan(value) or not _few_events(t, reward, bounds):
        return Estimate(t.name, value, low, high, t.n, ess, note)
    floor, top = bounds
    if not top > floor or ess < 1.0:
        why = ("every logged reward is the same: give the rewards' range" if not top > floor
               else "the effective sample size is below 1")
        return Estimate(t.name, value, math.nan, math.nan, t.n, ess,
                        "; ".join(x for x in (note, f"{NOT_ENOUGH_DATA}: {why}") if x), True)
    share_low, share_high = clopper_pearson((value - floor) / (top - floor), ess, level)
    exact_low, exact_high = floor + (top - floor) * share_low, floor + (top - floor) * share_high
    low = exact_low if math.isnan(low) else min(low, exact_low)
    high = exact_high if math.isnan(high) else max(high, exact_high)
    note = "; ".join(x for x in (note, "few rewards: exact binomial interval") if x)
    return Estimate(t.name, value, low, high, t.n, ess, note, True)


# --- public API --------------------------------------------------------------------------

def evaluate(log: LoggedBandit, policy: TargetPolicy, estimators: Sequence[str] = ESTIMATORS, *,
             clip: float | None = None, reward: FloatArray | str = "auto", level: float = 0.95,
             bootstrap: int = 0, seed: int = 0,
             reward_range: tuple[float, float] | None = None) -> list[Estimate]:
    """Estimate the value of `policy` on `log` with each of `estimators`.

    `reward` is the DR reward model: an `(n, K)` array aligned with `log.candidates`, or
    one of "auto", "scores", "mean" (see `reward_model`). `reward_range` bounds the
    rewards (default: the log's range, with 0).
    """
    probs = check_policy(log, policy(log))
    bounds = reward_bounds(log, reward_range)
    q = _resolve_reward(log, reward, seed) if "dr" in estimators else None
    terms = [_terms(log, probs, name, clip, q) for name in estimators]
    boot = _bootstrap_values(terms, bootstrap, seed) if bootstrap > 0 else None
    return [_summarise(t, level, None if boot is None else boot[:, j], log.reward, bounds)
            for j, t in enumerate(terms)]


def _resolve_reward(log: LoggedBandit, reward: FloatArray | str, seed: int) -> FloatArray:
    if isinstance(reward, str):
        return reward_model(log, reward, seed)
    q = np.asarray(reward, dtype=np.float64)
    if q.shape != log.mask.shape:
        raise ValueError(f"reward model has shape {q.shape}, expected {log.mask.shape}")
    return np.where(log.mask, q, 0.0)


def replay(log: LoggedBandit, policy: TargetPolicy, **options: Any) -> Estimate:
    return evaluate(log, policy, ("replay",), **options)[0]


def ips(log: LoggedBandit, policy: TargetPolicy, **options: Any) -> Estimate:
    return evaluate(log, policy, ("ips",), **options)[0]


def snips(log: LoggedBandit, policy: TargetPolicy, **options: Any) -> Estimate:
    return evaluate(log, policy, ("snips",), **options)[0]


def doubly_robust(log: LoggedBandit, policy: TargetPolicy, **options: Any) -> Estimate:
    return evaluate(log, policy, ("dr",), **options)[0]


def gate(log: LoggedBandit, candidate_policy: TargetPolicy, incumbent_policy: TargetPolicy,
         estimator: str = "snips", margin: float = 0.0, *, clip: float | None = None,
         reward: FloatArray | str = "auto", level: float = 0.95, bootstrap: int = 0,
         seed: int = 0, min_ess: float = DEFAULT_MIN_ESS,
         reward_range: tuple[float, float] | None = None) -> GateResult:
    """Promote the candidate iff the lower bound of (candidate - incumbent) > -margin;
    refuse to decide when either policy's effective sample size is below `min_ess` or
    an interval is not known.

    The difference's interval pairs the two policies' terms decision by decision, which
    is much tighter than comparing two separate intervals; where either estimate needed
    the exact interval (few rewards), the two intervals bound it instead.
    """
    bounds = reward_bounds(log, reward_range)
    q = _resolve_reward(log, reward, seed) if estimator == "dr" else None
    pair = [_terms(log, check_policy(log, p(log)), estimator, clip, q)
            for p in (candidate_policy, incumbent_policy)]
    boot = _bootstrap_values(pair, bootstrap, seed) if bootstrap > 0 else None
    cand, inc = (_summarise(t, level, None if boot is None else boot[:, j], log.reward, bounds)
                 for j, t in enumerate(pair))
    diff_value = cand.value - inc.value
    if np.array_equal(pair[0].num, pair[1].num) and np.array_equal(pair[0].den, pair[1].den):
        low = high = 0.0  # the same terms on every logged decision: no uncertainty to bound
        how = "identical on every decision"
    elif cand.exact or inc.exact:
        half = 1.0 - (1.0 - level) / 2.0  # each side at half the error rate
        wide = [_summarise(t, half, None if boot is None else boot[:, j], log.reward, bounds)
                for j, t in enumerate(pair)]
        low, high = wide[0].ci_low - wide[1].ci_high, wide[0].ci_high - wide[1].ci_low
        how = "from the two exact intervals"
    else:
        low, high = _interval(diff_value, pair[0].influence() - pair[1].influence(), level,
                              None if boot is None else boot[:, 0] - boot[:, 1])
        how = "paired"
    ess = min(cand.effective_sample_size, inc.effective_sample_size)
    difference = Estimate(f"{estimator} difference", diff_value, low, high, log.n, ess,
                          "" if how == "paired" else how, how == "from the two exact intervals")
    interval = f"{diff_value:+.4g} [{low:+.4g}, {high:+.4g}] ({estimator}, {level:.0%}, {how})"
    if ess < min_ess:
        who = "candidate" if cand.effective_sample_size < min_ess else "incumbent"
        size = min(cand.effective_sample_size, inc.effective_sample_size)
        reason = (f"refused: the {who}'s effective sample size {size:.1f} is below the minimum "
                  f"{min_ess:g}: too few logged decisions support its choices to judge it "
                  f"(candidate - incumbent = {interval})")
        return GateResult(False, cand, inc, difference, reason, decided=False)
    if math.isnan(low):
        notes = "; ".join(e.note for e in (cand, inc) if e.note) or "no interval"
        return GateResult(False, cand, inc, difference,
                          f"refused: {NOT_ENOUGH_DATA} ({notes})", decided=False)
    threshold = 0.0 - margin
    passed = bool(low > threshold)
    reason = (f"candidate - incumbent = {interval}; lower bound {'>' if passed else 'not >'} "
              f"-margin {threshold:+.4g}: {'pass' if passed else 'fail'}")
    return GateResult(passed, cand, inc, difference, reason)


# --- reports ---------------------------------------------------------------------------

def markdown_table(estimates: Sequence[Estimate], level: float = 0.95) -> str:
    rows = [f"| estimator | value | {level:.0%} CI | n | ESS |", "|---|---:|---|---:|---:|"]
    for e in estimates:
        flag = " *" if e.note else ""
        interval = (NOT_ENOUGH_DATA if math.isnan(e.ci_low) or math.isnan(e.ci_high)
                    else f"[{e.ci_low:.4f}, {e.ci_high:.4f}]")
        rows.append(f"| {e.name}{flag} | {e.value:.4f} | {interval} "
                    f"| {e.n} | {e.effective_sample_size:.1f} |")
    rows += [f"\n\\* {e.name}: {e.note}" for e in estimates if e.note]
    return "\n".join(rows)


def jsonable(value: Any) -> Any:
    """`value` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
