"""What `nextbest simulate` reports: per-step rewards of every policy, and what follows.

`SimulationReport` holds the per-step series of the closed loop (`training/simulator.py`)
and derives the summary table, the pass/miss targets, and the files of a run: report.json,
report.md, steps.npz and two plots (cumulative reward, rolling acceptance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NEXTBEST = "nextbest"
POLICIES = (NEXTBEST, "oracle", "random", "offline", "thompson", "oracle_fatigue_blind",
            "oracle_observed")
ROLLING_WINDOW = 1000


@dataclass
class SimulationReport:
    """Per-step rewards and acceptances of every policy, and what was derived from them."""

    decisions: int
    seed: int
    drift_step: int
    drift_category: str | None
    tail: int
    rewards: dict[str, np.ndarray]
    accepted: dict[str, np.ndarray]
    #: true P(accept) x value of the shown action: the reward without the response noise
    expected: dict[str, np.ndarray]
    fidelity: dict[str, float] = field(default_factory=dict)
    explored: int = 0
    dismissed: int = 0  # dismissals the simulated customers sent (with --dismissals)
    seconds: float = 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        oracle = self.rewards["oracle"]
        d, t = self.drift_step, self.tail

        def share(x: np.ndarray, o: np.ndarray) -> float:
            return float(x.sum() / o.sum()) if o.sum() > 0 else float("nan")

        out = {}
        for name in POLICIES:
            r, a, e = self.rewards[name], self.accepted[name], self.expected[name]
            out[name] = {
                "total_reward": float(r.sum()),
                "share_of_oracle": share(r, oracle),
                "share_of_oracle_last": share(r[-t:], oracle[-t:]),
                "expected_share_of_oracle_last": share(e[-t:], self.expected["oracle"][-t:]),
                "share_of_oracle_after_drift": share(r[d:], oracle[d:]),
                "acceptance_rate": float(a.mean()),
                "acceptance_after_drift": float(a[d:].mean()) if d < len(a) else float("nan"),
                "regret": float(oracle.sum() - r.sum()),
            }
        return out

    def targets(self) -> dict[str, dict[str, Any]]:
        s = self.summary()
        nb = s[NEXTBEST]
        return {
            f"nextbest >= 90% of oracle over the last {self.tail}": {
                "value": nb["share_of_oracle_last"], "met": nb["share_of_oracle_last"] >= 0.9},
            "nextbest beats offline-only after the drift": {
                "value": nb["share_of_oracle_after_drift"] - s["offline"]["share_of_oracle_after_drift"],
                "met": nb["share_of_oracle_after_drift"] > s["offline"]["share_of_oracle_after_drift"]},
            "nextbest beats context-free Thompson overall": {
                "value": nb["share_of_oracle"] - s["thompson"]["share_of_oracle"],
                "met": nb["share_of_oracle"] > s["thompson"]["share_of_oracle"]},
            "random earns at most 50% of oracle": {
                "value": s["random"]["share_of_oracle"], "met": s["random"]["share_of_oracle"] <= 0.5},
        }

    def table(self) -> str:
        rows = [f"| policy | reward | share of oracle | last {self.tail} | last {self.tail}, "
                "expected | after drift | acceptance | regret |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, m in self.summary().items():
            rows.append(
                f"| {name} | {m['total_reward']:.1f} | {m['share_of_oracle']:.1%} | "
                f"{m['share_of_oracle_last']:.1%} | {m['expected_share_of_oracle_last']:.1%} | "
                f"{m['share_of_oracle_after_drift']:.1%} | "
                f"{m['acceptance_rate']:.2%} | {m['regret']:.1f} |")
        return "\n".join(rows)

    def markdown(self) -> str:
        lines = [
            "# nextbest simulate", "",
            f"{self.decisions} decisions, seed {self.seed}, drift at step {self.drift_step} "
            f"(category `{self.drift_category}` falls out of favour), {self.seconds:.0f} s, "
            f"nextbest explored {self.explored} times; customers dismissed {self.dismissed} "
            "offers.", "", self.table(), "",
            "`expected`: the same share computed on each shown action's true P(accept) x "
            "value instead of the drawn outcome, which removes most of the response noise.", "",
            "Diagnostics, not targets: `oracle_fatigue_blind` knows everything but the exposure "
            "history; `oracle_observed` knows the truth's form, the dynamics and each action's "
            "hidden appeal, but sees customers only through the service's features (which ones, the "
            "world's truth says: retail's observed category and channel affinities and price "
            "sensitivity, telco's family and channel affinities, data usage and support calls): about "
            "what a perfect model of the service's inputs could earn.", "",
            "## Targets", "",
        ]
        for name, t in self.targets().items():
            lines.append(f"- {'MET' if t['met'] else 'MISSED'}: {name} ({t['value']:.3f})")
        lines += ["", "## Fidelity (the simulator does not mirror the model's features)", ""]
        lines += [f"- {k}: {v:.3f}" for k, v in self.fidelity.items()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions, "seed": self.seed, "drift_step": self.drift_step,
            "drift_category": self.drift_category, "tail": self.tail, "seconds": self.seconds,
            "explored": self.explored, "dismissed": self.dismissed, "summary": self.summary(),
            "targets": self.targets(), "fidelity": self.fidelity,
        }

    def write(self, out: Path) -> list[Path]:
        """report.json, report.md, steps.npz (per-step series), and the two PNG plots."""
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "report.json", out / "report.md", out / "steps.npz"]
        paths[0].write_text(json.dumps(self.to_json(), indent=1))
        paths[1].write_text(self.markdown())
        series: dict[str, Any] = {f"reward_{k}": v for k, v in self.rewards.items()}
        series.update({f"accepted_{k}": v for k, v in self.accepted.items()})
        series.update({f"expected_{k}": v for k, v in self.expected.items()})
        np.savez_compressed(paths[2], **series)
        paths += self._plots(out)
        return paths

    def _plots(self, out: Path) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = np.arange(1, self.decisions + 1)
        window = max(1, min(ROLLING_WINDOW, self.decisions // 10))

        def trailing_mean(x: np.ndarray) -> np.ndarray:
            c = np.cumsum(x.astype(float))
            mean = (c - np.concatenate([np.zeros(window), c[:-window]])[: len(c)]) / np.minimum(steps, window)
            mean[: window // 10] = np.nan  # too few steps for a rate worth drawing
            return mean

        paths = []
        for fname, title, series in (
            ("cumulative_reward.png", "cumulative reward", lambda n: np.cumsum(self.rewards[n])),
            ("rolling_acceptance.png", f"acceptance rate (rolling {window})",
             lambda n: trailing_mean(self.accepted[n])),
        ):
            fig, ax = plt.subplots(figsize=(9, 5))
            for name in POLICIES:
                ax.plot(steps, series(name), label=name, lw=1.2)
            ax.axvline(self.drift_step, color="grey", ls="--", lw=1,
                       label=f"drift ({self.drift_category})")
            ax.set_xlabel("decision")
            ax.set_title(title)
            ax.legend()
            fig.tight_layout()
            fig.savefig(out / fname, dpi=110)
            plt.close(fig)
            paths.append(out / fname)
        return paths
