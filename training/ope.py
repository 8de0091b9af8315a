"""Off-policy evaluation: what a policy would have earned on a logged set of decisions.

`nextbest evaluate` and the retraining gate share this module. The log format is in
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
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from training.ope_log import FloatArray, LogFormatError, LoggedBandit, load_log
from training.ope_policies import (
    TargetPolicy,
    check_policy,
    epsilon_greedy,
    greedy,
    logged,
    uniform,
)

ESTIMATORS: tuple[str, ...] = ("replay", "ips", "snips", "dr")
REWARD_MODELS: tuple[str, ...] = ("auto", "scores", "mean")
_BOOTSTRAP_CELLS = 4_000_000


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


@dataclass(frozen=True)
class GateResult:
    passed: bool
    candidate: Estimate
    incumbent: Estimate
    difference: Estimate
    reason: str


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


def _summarise(t: _Terms, level: float, boot: FloatArray | None) -> Estimate:
    value = t.value
    low, high = _interval(value, t.influence(), level, boot)
    note = t.note or ("no logged decision supports this policy" if math.isnan(value) else "")
    return Estimate(t.name, value, low, high, t.n, _ess(t.weights), note)


# --- public API --------------------------------------------------------------------------

def evaluate(log: LoggedBandit, policy: TargetPolicy, estimators: Sequence[str] = ESTIMATORS, *,
             clip: float | None = None, reward: FloatArray | str = "auto", level: float = 0.95,
             bootstrap: int = 0, seed: int = 0) -> list[Estimate]:
    """Estimate the value of `policy` on `log` with each of `estimators`.

    `reward` is the DR reward model: an `(n, K)` array aligned with `log.candidates`, or
    one of "auto", "scores", "mean" (see `reward_model`).
    """
    probs = check_policy(log, policy(log))
    q = _resolve_reward(log, reward, seed) if "dr" in estimators else None
    terms = [_terms(log, probs, name, clip, q) for name in estimators]
    boot = _bootstrap_values(terms, bootstrap, seed) if bootstrap > 0 else None
    return [_summarise(t, level, None if boot is None else boot[:, j]) for j, t in enumerate(terms)]


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
         seed: int = 0) -> GateResult:
    """Promote the candidate iff the lower bound of (candidate - incumbent) > -margin.

    The difference's interval pairs the two policies' terms decision by decision, which
    is much tighter than comparing two separate intervals.
    """
    q = _resolve_reward(log, reward, seed) if estimator == "dr" else None
    pair = [_terms(log, check_policy(log, p(log)), estimator, clip, q)
            for p in (candidate_policy, incumbent_policy)]
    boot = _bootstrap_values(pair, bootstrap, seed) if bootstrap > 0 else None
    cand, inc = (_summarise(t, level, None if boot is None else boot[:, j]) for j, t in enumerate(pair))
    diff_value = cand.value - inc.value
    low, high = _interval(diff_value, pair[0].influence() - pair[1].influence(), level,
                          None if boot is None else boot[:, 0] - boot[:, 1])
    difference = Estimate(f"{estimator} difference", diff_value, low, high, log.n,
                          min(cand.effective_sample_size, inc.effective_sample_size))
    threshold = 0.0 - margin
    passed = bool(low > threshold)  # NaN (no support) fails
    reason = (f"candidate - incumbent = {diff_value:+.4g} [{low:+.4g}, {high:+.4g}] "
              f"({estimator}, {level:.0%}); lower bound {'>' if passed else 'not >'} "
              f"-margin {threshold:+.4g}: {'pass' if passed else 'fail'}")
    return GateResult(passed, cand, inc, difference, reason)


# --- CLI ---------------------------------------------------------------------------------

def _policy(name: str, eps: float) -> TargetPolicy:
    policies: dict[str, Callable[[], TargetPolicy]] = {
        "uniform": lambda: uniform, "logged": lambda: logged,
        "greedy": lambda: greedy(), "epsilon-greedy": lambda: epsilon_greedy(eps=eps),
    }
    return policies[name]()


def markdown_table(estimates: Sequence[Estimate], level: float = 0.95) -> str:
    rows = [f"| estimator | value | {level:.0%} CI | n | ESS |", "|---|---:|---|---:|---:|"]
    for e in estimates:
        flag = " *" if e.note else ""
        rows.append(f"| {e.name}{flag} | {e.value:.4f} | [{e.ci_low:.4f}, {e.ci_high:.4f}] "
                    f"| {e.n} | {e.effective_sample_size:.1f} |")
    rows += [f"\n\\* {e.name}: {e.note}" for e in estimates if e.note]
    return "\n".join(rows)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nextbest evaluate",
                                     description="Off-policy evaluation of a policy on a decision log.")
    parser.add_argument("--log", type=Path, required=True, help="decision log, JSON Lines (docs/log-format.md)")
    parser.add_argument("--policy", choices=("uniform", "logged", "greedy", "epsilon-greedy"), default="greedy",
                        help="target policy; greedy ones rank by the log's `scores`")
    parser.add_argument("--epsilon", type=float, default=0.1, help="exploration rate of epsilon-greedy")
    parser.add_argument("--clip", type=float, default=None,
                        help="cap importance weights at this value (less variance, biased towards 0)")
    parser.add_argument("--bootstrap", type=int, default=0, help="percentile bootstrap resamples (0: normal CIs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the cross-fitting folds")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level")
    parser.add_argument("--reward-model", choices=REWARD_MODELS, default="auto", help="DR reward model")
    parser.add_argument("--json", type=Path, default=None, help="also write the estimates here")
    args = parser.parse_args(argv)
    try:
        log = load_log(args.log)
        policy = _policy(args.policy, args.epsilon)
        weights = importance_weights(log, check_policy(log, policy(log)))
        estimates = evaluate(log, policy, clip=args.clip,
                             reward=args.reward_model, level=args.level,
                             bootstrap=args.bootstrap, seed=args.seed)
    except (LogFormatError, OSError, ValueError) as exc:
        print(f"nextbest evaluate: {exc}", file=sys.stderr)
        return 2
    logged_mean = float(log.reward.mean())
    mean_weight, weight_se = float(weights.mean()), float(weights.std()) / math.sqrt(log.n)
    print(f"policy {args.policy} on {args.log}: {log.n} decisions, "
          f"mean logged reward {logged_mean:.4f}, clip {args.clip or 'none'}, "
          f"{f'bootstrap {args.bootstrap}' if args.bootstrap else 'normal'} CIs")
    print(f"mean importance weight {mean_weight:.3f} +- {weight_se:.3f} (about 1 if the propensities "
          "are right and the logging policy covers the target's actions)\n")
    print(markdown_table(estimates, args.level))
    if args.json is not None:
        report = {"log": str(args.log), "policy": args.policy, "epsilon": args.epsilon,
                  "decisions": log.n, "logged_mean_reward": logged_mean, "mean_weight": mean_weight,
                  "clip": args.clip,
                  "level": args.level, "bootstrap": args.bootstrap, "seed": args.seed,
                  "reward_model": args.reward_model, "estimates": [asdict(e) for e in estimates]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_jsonable(report), indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
