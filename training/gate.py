"""`nextbest gate`: may a candidate model replace the champion? Judged on logged decisions.

Two criteria, both on the decisions and interactions from the candidate's training
holdout on (`--since`), which neither model was fitted on if the champion is older:

- off-policy value: the lower confidence bound of (candidate - champion) of the two
  models' policies (`training/model_policy.py`), paired decision by decision
  (`training.ope.gate`), must be above `-margin`;
- holdout log loss on the labelled interactions: the candidate's must not exceed the
  champion's by more than `log_loss_margin`.

The gate refuses to decide, rather than pass or fail, when either policy's effective
sample size is below `min_ess` or an interval is "not enough data". Until the registry
keeps a champion pointer the champion is a model directory named on the command line.

Exit codes: 0 pass; 1 fail (the reasons are printed); 3 refused (not enough data to
decide); 2 bad input or options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.evaluate import (
    add_model_options,
    holdout_start,
    model_policy,
    reward_range,
    settings_world,
    write_json,
    write_plot,
)
from training.ope import DEFAULT_MIN_ESS, GateResult, gate
from training.ope_log import LogFormatError, load_log

PASS, FAIL, BAD_INPUT, REFUSED = 0, 1, 2, 3


@dataclass(frozen=True)
class Verdict:
    """The gate's answer: `code` is the exit code; `reasons` one line per criterion."""

    code: int
    reasons: list[str]
    ope: GateResult
    log_loss: dict[str, float]

    @property
    def word(self) -> str:
        return {PASS: "pass", FAIL: "fail", REFUSED: "refused"}[self.code]


def judge(ope: GateResult, candidate_log_loss: float, champion_log_loss: float,
          log_loss_margin: float) -> Verdict:
    """Combine the off-policy verdict with the holdout log loss comparison."""
    loss_ok = candidate_log_loss <= champion_log_loss + log_loss_margin
    loss = (f"log loss: candidate {candidate_log_loss:.5f} vs champion {champion_log_loss:.5f}, "
            f"allowed up to {champion_log_loss + log_loss_margin:.5f} (margin {log_loss_margin:g}): "
            f"{'pass' if loss_ok else 'fail'}")
    reasons = [f"off-policy value: {ope.reason}", loss]
    code = REFUSED if not ope.decided else (PASS if ope.passed and loss_ok else FAIL)
    return Verdict(code, reasons, ope, {"candidate": candidate_log_loss, "champion": champion_log_loss,
                                        "margin": log_loss_margin})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nextbest gate",
        description="Judge a candidate model against the champion on logged decisions: its "
        "policy's off-policy value (lower confidence bound of the difference) and its holdout "
        "log loss. Exit codes: 0 pass, 1 fail, 2 bad input or options, 3 refused (not enough data).")
    parser.add_argument("--candidate", type=Path, required=True, help="the candidate's model directory")
    parser.add_argument("--champion", type=Path, required=True,
                        help="the champion's model directory (models/<name>/<version>)")
    parser.add_argument("--log", type=Path, required=True, help="decision log, JSON Lines (docs/log-format.md)")
    parser.add_argument("--estimator", choices=("snips", "dr", "ips"), default="snips",
                        help="off-policy estimator of the two policies' values")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="the candidate passes when the lower bound of (candidate - champion) "
                        "is above -margin (reward units)")
    parser.add_argument("--log-loss-margin", type=float, default=0.0,
                        help="the candidate's holdout log loss may exceed the champion's by this much")
    parser.add_argument("--min-ess", type=float, default=DEFAULT_MIN_ESS,
                        help="below this effective sample size of either policy, refuse to decide")
    parser.add_argument("--out", type=Path, default=None, help="write gate.json and reliability.png here")
    add_model_options(parser)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The gate's options from a command line, as `run` takes them (`nextbest retrain`
    builds one; argparse exits 2 on a bad one)."""
    return _parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.interactions is None:
        print("nextbest gate: --interactions is required (the holdout log loss is one of the criteria)",
              file=sys.stderr)
        return BAD_INPUT
    try:
        verdict, report = run(args)
    except (LogFormatError, OSError, ValueError) as exc:
        print(f"nextbest gate: {exc}", file=sys.stderr)
        return BAD_INPUT
    for reason in verdict.reasons:
        print(reason)
    print(f"gate: {verdict.word}")
    if args.out is not None:
        write_json(args.out / "gate.json", report)
        write_plot(args.out / "reliability.png", {
            f"candidate {report['candidate']['model']}": report["candidate"]["holdout"]["calibration"],
            f"champion {report['champion']['model']}": report["champion"]["holdout"]["calibration"]})
        print(f"wrote {args.out / 'gate.json'}")
    return verdict.code


def run(args: argparse.Namespace) -> tuple[Verdict, dict[str, Any]]:
    import pandas as pd

    from features.encoding import Encoder
    from service.catalog import load_catalog
    from training.holdout import classification, holdout_rows, training_set
    from training.model_policy import score_log, since

    data_dir, world = settings_world()
    start = holdout_start(args.candidate, args.since or "holdout")
    log = since(load_log(args.log), start)
    if not log.n:
        raise ValueError(f"no decision of the log is from the candidate's holdout on ({start})")
    encoder = Encoder(world)
    catalog = load_catalog(Path(data_dir) / "catalog.json", world)
    scores = {role: score_log(log, getattr(args, role), data_dir, world, catalog, encoder)
              for role in ("candidate", "champion")}
    policies = {role: model_policy(s, args.policy, args.epsilon, args.explore_top) for role, s in scores.items()}
    result = gate(log, policies["candidate"], policies["champion"], args.estimator, args.margin,
                  clip=args.clip, reward=scores["candidate"].expected_reward, level=args.level,
                  bootstrap=args.bootstrap, seed=args.seed, min_ess=args.min_ess,
                  reward_range=reward_range(log, args.reward_max))
    data = training_set(holdout_rows(pd.read_parquet(args.interactions), start), data_dir, world, encoder)
    holdouts = {role: classification(getattr(args, role), data, world, encoder) for role in scores}
    verdict = judge(result, holdouts["candidate"]["metrics"]["log_loss"],
                    holdouts["champion"]["metrics"]["log_loss"], args.log_loss_margin)
    report = {
        "verdict": verdict.word, "exit_code": verdict.code, "reasons": verdict.reasons,
        "log": str(args.log), "since": start, "decisions": log.n, "estimator": args.estimator,
        "policy": args.policy, "margin": args.margin, "log_loss_margin": args.log_loss_margin,
        "min_ess": args.min_ess, "level": args.level,
        "difference": asdict(result.difference),
        **{role: {"model": scores[role].model, "model_dir": str(getattr(args, role)),
                  "estimate": asdict(result.candidate if role == "candidate" else result.incumbent),
                  "holdout": holdouts[role]} for role in scores},
    }
    return verdict, report


if __name__ == "__main__":
    sys.exit(main())
