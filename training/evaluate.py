"""`nextbest evaluate`: off-policy estimates of a policy on a decision log, and of a model.

Without `--model` the policy is one of `uniform`, `logged`, `greedy` or `epsilon-greedy`
over the log's own `scores` (numpy alone). With `--model DIR` it is a registered model's
policy (`training/model_policy.py`: the service's greedy rank 1 or, with
`epsilon-greedy`, its exploration), evaluated on the decisions from the model's holdout
on (`--since`), with the model's expected reward as the doubly robust reward model;
`--interactions FILE` adds the model's AUC, log loss and calibration on the labelled
interactions of the same period, and `--out DIR` writes `evaluation.json` and, with
matplotlib installed, `reliability.png`.

Exit codes: 0 evaluated; 2 the input or the options are at fault (the message says which).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.ope import (
    REWARD_MODELS,
    Estimate,
    TargetPolicy,
    check_policy,
    epsilon_greedy,
    evaluate,
    exploring,
    greedy,
    importance_weights,
    jsonable,
    logged,
    markdown_table,
    uniform,
)
from training.ope_log import LogFormatError, LoggedBandit, load_log

if TYPE_CHECKING:
    from features.config import World
    from training.model_policy import ModelScores

POLICIES = ("uniform", "logged", "greedy", "epsilon-greedy")
#: The service's default exploration window (NEXTBEST_EXPLORE_TOP).
EXPLORE_TOP = 5


def log_policy(name: str, eps: float) -> TargetPolicy:
    """A policy over the log's own `scores`."""
    if name == "uniform":
        return uniform
    if name == "logged":
        return logged
    return greedy() if name == "greedy" else epsilon_greedy(eps=eps)


def model_policy(scores: ModelScores, name: str, eps: float, top: int) -> TargetPolicy:
    """A model's policy: `greedy` on its priorities, `epsilon-greedy` its exploration."""
    if name == "greedy":
        return greedy(scores.priority)
    if name == "epsilon-greedy":
        return exploring(scores.priority, eps, top)
    raise ValueError(f"a model's policy is greedy or epsilon-greedy, not {name!r}")


def holdout_start(model_dir: Path, since: str) -> float | None:
    """Unix seconds from which a model's evaluation counts decisions; None: all of them.

    `holdout`: where the model's training holdout began (its manifest), so that no
    decision it was fitted on is counted; `all`; or a time (Unix seconds, ISO 8601).
    """
    from service.manifest import read_manifest
    from training.model_policy import parse_time

    if since == "all":
        return None
    if since != "holdout":
        return parse_time(since)
    recorded = read_manifest(Path(model_dir)).training.get("holdout_from")
    return parse_time(str(recorded)) if recorded else None


def reward_range(log: LoggedBandit, reward_max: float | None) -> tuple[float, float] | None:
    if reward_max is None:
        return None
    return min(0.0, float(log.reward.min())), float(reward_max)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options `evaluate --model` and `gate` share."""
    parser.add_argument("--policy", choices=POLICIES, default="greedy",
                        help="target policy: greedy ones rank by the log's `scores`, or with a model by "
                        "its priorities (epsilon-greedy is then the service's exploration)")
    parser.add_argument("--epsilon", type=float, default=0.1, help="exploration rate of epsilon-greedy")
    parser.add_argument("--explore-top", type=int, default=EXPLORE_TOP,
                        help="a model's exploration draws among this many best candidates (0: all)")
    parser.add_argument("--since", default=None,
                        help="evaluate the decisions from this time on: `holdout` (where the model's "
                        "training holdout began; the default with a model), `all` (the default "
                        "without), Unix seconds or ISO 8601")
    parser.add_argument("--interactions", type=Path, default=None,
                        help="labelled interactions (`nextbest dataset`): AUC, log loss and calibration "
                        "over the same period")
    parser.add_argument("--clip", type=float, default=None,
                        help="cap importance weights at this value (less variance, biased towards 0)")
    parser.add_argument("--bootstrap", type=int, default=0, help="percentile bootstrap resamples (0: normal CIs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the cross-fitting folds")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level")
    parser.add_argument("--reward-max", type=float, default=None,
                        help="the largest reward a decision can earn (default: the log's largest); "
                        "bounds the intervals where few decisions earned anything")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nextbest evaluate",
        description="Off-policy evaluation of a policy, or of a registered model's policy, on a "
        "decision log. Exit codes: 0 evaluated, 2 bad input or options.")
    parser.add_argument("--log", type=Path, required=True, help="decision log, JSON Lines (docs/log-format.md)")
    parser.add_argument("--model", type=Path, default=None,
                        help="a registered model's directory (models/<name>/<version>): evaluate its policy")
    add_model_options(parser)
    parser.add_argument("--reward-model", choices=REWARD_MODELS, default="auto",
                        help="DR reward model (with --model, `auto` is the model's expected reward)")
    parser.add_argument("--json", type=Path, default=None, help="also write the estimates here")
    parser.add_argument("--out", type=Path, default=None,
                        help="write evaluation.json (and reliability.png with --interactions) here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        log = load_log(args.log)
        if args.model is None:
            if args.interactions is not None:
                raise ValueError("--interactions needs --model")
            report, estimates, weights, log = _evaluate_log(args, log)
        else:
            report, estimates, weights, log = _evaluate_model(args, log)
    except (LogFormatError, OSError, ValueError) as exc:
        print(f"nextbest evaluate: {exc}", file=sys.stderr)
        return 2
    logged_mean = float(log.reward.mean())
    mean_weight, weight_se = float(weights.mean()), float(weights.std()) / math.sqrt(log.n)
    subject = f"model {report['model']} ({args.policy})" if args.model else f"policy {args.policy}"
    print(f"{subject} on {args.log}: {log.n} decisions, "
          f"mean logged reward {logged_mean:.4f}, clip {args.clip or 'none'}, "
          f"{f'bootstrap {args.bootstrap}' if args.bootstrap else 'normal'} CIs")
    print(f"mean importance weight {mean_weight:.3f} +- {weight_se:.3f} (about 1 if the propensities "
          "are right and the logging policy covers the target's actions)\n")
    print(markdown_table(estimates, args.level))
    holdout = report.get("holdout")
    if holdout is not None:
        m = holdout["metrics"]
        print(f"\nholdout: {int(m['n_holdout'])} interactions, AUC {m['auc']:.4f}, log loss "
              f"{m['log_loss']:.4f}, ECE {m['ece']:.4f}, base rate {m['base_rate']:.4f}")
    report.update({"log": str(args.log), "policy": args.policy, "epsilon": args.epsilon,
                   "decisions": log.n, "logged_mean_reward": logged_mean, "mean_weight": mean_weight,
                   "clip": args.clip, "level": args.level, "bootstrap": args.bootstrap,
                   "seed": args.seed, "reward_model": args.reward_model,
                   "estimates": [asdict(e) for e in estimates]})
    for path in [p for p in (args.json, args.out and args.out / "evaluation.json") if p]:
        write_json(path, report)
        print(f"wrote {path}")
    if args.out is not None and holdout is not None:
        plot = write_plot(args.out / "reliability.png", {report["model"]: holdout["calibration"]})
        if plot is not None:
            print(f"wrote {plot}")
    return 0


def _evaluate_log(args: argparse.Namespace, log: LoggedBandit) -> tuple[dict[str, Any], list[Estimate], Any,
                                                                        LoggedBandit]:
    from training.model_policy import parse_time, since

    log = since(log, None if args.since in (None, "all") else parse_time(args.since))
    if not log.n:
        raise ValueError(f"no decision of the log is from {args.since} on")
    policy = log_policy(args.policy, args.epsilon)
    weights = importance_weights(log, check_policy(log, policy(log)))
    estimates = evaluate(log, policy, clip=args.clip, reward=args.reward_model, level=args.level,
                         bootstrap=args.bootstrap, seed=args.seed,
                         reward_range=reward_range(log, args.reward_max))
    return {}, estimates, weights, log


def _evaluate_model(args: argparse.Namespace, log: LoggedBandit) -> tuple[dict[str, Any], list[Estimate], Any,
                                                                          LoggedBandit]:
    from training.model_policy import score_log, since

    data_dir, world = settings_world()
    start = holdout_start(args.model, args.since or "holdout")
    log = since(log, start)
    if not log.n:
        raise ValueError(f"no decision of the log is from the model's holdout on ({start}): "
                         "pass --since all, or a log of later decisions")
    scores = score_log(log, args.model, data_dir, world)
    policy = model_policy(scores, args.policy, args.epsilon, args.explore_top)
    weights = importance_weights(log, check_policy(log, policy(log)))
    reward = scores.expected_reward if args.reward_model == "auto" else args.reward_model
    estimates = evaluate(log, policy, clip=args.clip, reward=reward, level=args.level,
                         bootstrap=args.bootstrap, seed=args.seed,
                         reward_range=reward_range(log, args.reward_max))
    report: dict[str, Any] = {"model": scores.model, "model_dir": str(args.model), "since": start}
    if args.interactions is not None:
        report["holdout"] = holdout_report(args.model, args.interactions, start, data_dir, world)
    return report, estimates, weights, log


def settings_world() -> tuple[Path, World]:
    """The data dir and world the CLI's settings name (NEXTBEST_DATA_DIR, NEXTBEST_CONFIG)."""
    from features.config import configured_world
    from service.settings import Settings

    settings = Settings()
    return settings.data_dir, configured_world(settings.config)


def holdout_report(model_dir: Path, interactions: Path, start: float | None, data_dir: Path,
                   world: World) -> dict[str, Any]:
    import pandas as pd

    from training.holdout import classification, holdout_rows, training_set

    rows = holdout_rows(pd.read_parquet(interactions), start)
    return classification(model_dir, training_set(rows, data_dir, world), world)


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")


def write_plot(path: Path, tables: dict[str, Any]) -> Path | None:
    """The reliability PNG, or None (and one line on stderr) without matplotlib."""
    from training.holdout import PLOT_EXTRA, plot_available, reliability_plot

    if not plot_available():
        print(f"warning: no {path.name}: drawing it needs matplotlib (the '{PLOT_EXTRA}' extra: "
              f"pip install 'nextbest[{PLOT_EXTRA}]')", file=sys.stderr)
        return None
    return reliability_plot(tables, path)


if __name__ == "__main__":
    sys.exit(main())
