"""`nextbest simulate`: decision quality of a running service, in a closed loop, seeded.

The simulator drives a running nextbest through its HTTP API, on an example world: the
one whose data the service serves, named in `<data_dir>/demo/world.json` (`--example`
retail or telco picks the directories as `nextbest demo --example` lays them out).
Every step draws a customer (activity-weighted, from the world whose features the
service reads) and a request the world's truth draws for them (retail: a channel from
the customer's true habits, a placement, a device and a basket; telco: a channel, a
placement and, at the call centre, a call reason); asks nextbest for a decision (the
customer's current simulated journey stage is sent as `context.journey_stage`); draws
the response to the top action from the world's ground truth (`training/truth.py`:
retail's `training/world.py`, telco's `training/telco_world.py`) plus fatigue and drift
(`training/environment.py`); and sends feedback: `impression` for the shown action, plus `accept` with the action's
value when accepted, and with `--dismissals` a `dismiss` when the customer says no
(the world's `dismiss_rates` by channel, more often for an action seen before; off by
default, so that the decision-quality figures stay comparable: a dismissal starts the
action's cooldown). Reward = value if accepted.

Baselines (`training/policies.py`) run in-process on the SAME draws (common random
numbers: customers, slots, baskets and the response uniforms are drawn up front), each
in its own copy of the dynamic world (stages, fatigue): an oracle that knows the truth,
uniform random, the offline ONNX model alone, and context-free Thompson sampling.

Drift: at `--drift-at` the category carrying the largest share of the oracle's reward so
far falls out of favour (logit - 2 for everyone): a rule fixed in advance, not chosen
to flatter or hurt any policy.

Why this does not mirror the model's features: the truth is a function of LATENT state
(retail: true category preferences, price sensitivity, channel habits, true stage;
telco: true family interests, data need, churn propensity...; hidden action quality),
while the service sees noisy observations of it (the truth modules' docstrings say
which), and fatigue and drift are in neither the features nor the training data. The
report quantifies the gap (section "fidelity"): the truth's own measures (e.g. the
correlation of the observed category affinities with the latent preferences, how often
the stored stage equals the true one) and on the random policy's steps the AUC of the offline
model's propensity against the AUC of the true probability (the best any model could
reach). If the simulator mirrored the features, the two AUCs would coincide.

Every policy's reward is recorded twice: as drawn (value if the drawn response accepted)
and in expectation (the true P(accept) x value of the action it showed, in its own world
at that step), which removes the response noise from the comparison.

Outputs: the report (`training/sim_report.py`: report.json, report.md, steps.npz, plots)
and `decisions.jsonl`, nextbest's decisions in the off-policy log format (one line per
decision; see `logged_decision`) that `training/ope.py` evaluates other policies on.

Reproducible: the same seed gives the same scenario and the same baseline results
exactly; nextbest's own numbers also depend on its exploration seed
(`NEXTBEST_SEED`) and on when its background learner folds in the feedback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from tqdm import tqdm

from service.client import NextbestClient
from service.schemas import DecisionResponse
from training.environment import CustomerState, Scenario, draw_scenario
from training.policies import (
    ContextFreeThompson,
    FeatureSnapshot,
    OfflineModel,
    OfflineOnly,
    Oracle,
    Policy,
    UniformRandom,
    observed_world,
)
from training.sim_report import NEXTBEST, POLICIES, SimulationReport
from training.truth import Truth
from training.worlds import EXAMPLES, load_truth

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["NEXTBEST", "POLICIES", "SimulationReport", "main", "run_loop", "simulate"]

LogDecision = Callable[[dict[str, Any]], None]


# --- the closed loop ----------------------------------------------------------------------
def request_body(truth: Truth, scenario: Scenario, step: int, stage: str, limit: int) -> dict[str, Any]:
    return {
        "customer_id": truth.customer_ids[int(scenario.customers[step])],
        "channel": str(scenario.channels[step]),
        "placement": str(scenario.placements[step]),
        "context": truth.request_context(scenario.requests, step, stage, truth.action_ids),
        "limit": limit,
    }


def logged_decision(step: int, body: dict[str, Any], response: DecisionResponse,
                    candidates: Sequence[str], reward: float) -> dict[str, Any]:
    """One line of decisions.jsonl, the off-policy log `training/ope.py` reads.

    `ts` is the step index; `propensity` is the probability the service logged for the
    action it showed at rank 1; `scores` are its arbitration scores of the actions it
    returned; `candidates` are the actions eligible in the slot (basket excluded).
    """
    top = response.actions[0]
    return {
        "decision_id": response.decision_id,
        "ts": float(step),
        "customer_id": body["customer_id"],
        "channel": body["channel"],
        "placement": body["placement"],
        "context": body["context"],
        "candidates": list(candidates),
        "action_id": top.action_id,
        "propensity": top.probability,
        "reward": reward,
        "scores": {a.action_id: a.score for a in response.actions},
    }


@contextmanager
def jsonl_log(path: Path | None) -> Iterator[LogDecision | None]:
    """A writer of one JSON object per line to `path` (None: no log)."""
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        def write(record: dict[str, Any]) -> None:
            f.write(json.dumps(record) + "\n")

        yield write


def _batches(n: int, size: int, cut: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) batches of at most `size`, never straddling `cut`."""
    out, start = [], 0
    while start < n:
        end = min(start + size, n)
        if start < cut < end:
            end = cut
        out.append((start, end))
        start = end
    return out


async def run_loop(
    decide: Callable[[dict[str, Any]], Awaitable[DecisionResponse]],
    send_feedback: Callable[[list[dict[str, Any]]], Awaitable[object]],
    data_dir: Path,
    models_dir: Path,
    decisions: int = 20_000,
    seed: int = 0,
    drift_at: float = 0.5,
    concurrency: int = 8,
    limit: int = 1,
    progress: bool = True,
    accept_replaces_impression: bool = False,
    log_decision: LogDecision | None = None,
    dismissals: bool = False,
) -> SimulationReport:
    """The closed loop against any `decide`/`send_feedback` pair (HTTP in practice).

    `accept_replaces_impression` is a diagnostic: an accepted decision then sends only
    `accept` (the default sends `impression` + `accept`, as docs/api.md asks integrators to).
    `log_decision` receives nextbest's decisions in the off-policy log format
    (`logged_decision`), in step order. `dismissals`: customers who do not accept may
    dismiss (`CustomerState.dismiss_probability`), sent as `dismiss` feedback.
    """
    started = time.perf_counter()
    world = load_truth(Path(data_dir))
    scenario = draw_scenario(world, decisions, seed, drift_at)
    values = world.action_value
    ids = world.action_ids
    index = {a: i for i, a in enumerate(ids)}
    offline = OfflineModel(Path(data_dir), Path(models_dir), world)
    baselines: list[Policy] = [
        Oracle(values), UniformRandom(), OfflineOnly(offline), ContextFreeThompson(values, seed),
        Oracle(values, fatigue_aware=False),
        Oracle(values, view=observed_world(world, Path(data_dir)), name="oracle_observed"),
    ]
    states = {name: CustomerState.start(world) for name in POLICIES}
    rewards = {name: np.zeros(decisions) for name in POLICIES}
    accepted = {name: np.zeros(decisions, dtype=bool) for name in POLICIES}
    expected = {name: np.zeros(decisions) for name in POLICIES}
    oracle_by_category = np.zeros(len(world.category_names))
    categories = world.action_arrays()["category"]
    true_p, offline_p = np.zeros(decisions), np.zeros(decisions)
    drift_category: str | None = None
    explored = dismissed = 0

    bar = tqdm(total=decisions, desc="simulate", unit="dec", disable=not progress)
    for start, end in _batches(decisions, max(1, concurrency), scenario.drift_step):
        if start == scenario.drift_step and drift_category is None:
            code = int(np.argmax(oracle_by_category))
            drift_category = world.category_names[code]
            for state in states.values():
                state.drift_category = code
        nb = states[NEXTBEST]
        bodies = [request_body(world, scenario, s, nb.stage_name(int(scenario.customers[s])), limit)
                  for s in range(start, end)]
        responses = await asyncio.gather(*(decide(b) for b in bodies))
        events: list[dict[str, Any]] = []
        for step, body, response in zip(range(start, end), bodies, responses, strict=True):
            if response.actions:
                top = response.actions[0]
                explored += int(top.explored)
                a = index[top.action_id]
                q_dismiss = nb.dismiss_probability(scenario, step, a) if dismissals else 0.0
                ok, p_shown = nb.respond(scenario, step, a)
                accepted[NEXTBEST][step] = ok
                expected[NEXTBEST][step] = p_shown * values[a]
                rewards[NEXTBEST][step] = values[a] if ok else 0.0
                if log_decision is not None:
                    eligible = [ids[c] for c in scenario.candidates(step).tolist()]
                    log_decision(logged_decision(step, body, response, eligible,
                                                 float(rewards[NEXTBEST][step])))
                if not (ok and accept_replaces_impression):
                    events.append({"decision_id": response.decision_id,
                                   "action_id": top.action_id, "outcome": "impression"})
                if ok:
                    events.append({"decision_id": response.decision_id,
                                   "action_id": top.action_id, "outcome": "accept",
                                   "value": float(values[a])})
                elif scenario.dismiss_u[step] < q_dismiss:
                    dismissed += 1
                    events.append({"decision_id": response.decision_id,
                                   "action_id": top.action_id, "outcome": "dismiss"})
            for policy in baselines:
                state = states[policy.name]
                if not len(scenario.candidates(step)):
                    continue
                a = policy.choose(scenario, step, state)
                ok, p = state.respond(scenario, step, a)
                policy.update(a, ok)
                accepted[policy.name][step] = ok
                expected[policy.name][step] = p * values[a]
                rewards[policy.name][step] = values[a] if ok else 0.0
                if policy.name == "oracle" and ok:
                    oracle_by_category[categories[a]] += values[a]
                if policy.name == "random":
                    true_p[step] = p
                    stage = state.stage_name(int(scenario.customers[step]))
                    offline_p[step] = offline.propensity(scenario, step, stage, np.array([a]))[0]
        await send_feedback(events)
        bar.update(end - start)
    bar.close()

    tail = 5000 if decisions >= 20_000 else max(1, decisions // 4)
    report = SimulationReport(
        decisions=decisions, seed=seed, drift_step=scenario.drift_step,
        drift_category=drift_category, tail=tail, rewards=rewards, accepted=accepted,
        expected=expected, explored=explored, dismissed=dismissed,
    )
    report.fidelity = fidelity(world, Path(data_dir), accepted["random"], true_p, offline_p)
    report.seconds = time.perf_counter() - started
    return report


def fidelity(world: Truth, data_dir: Path, outcome: np.ndarray, true_p: np.ndarray,
             offline_p: np.ndarray) -> dict[str, float]:
    """How far the service's view is from the truth (see the module docstring)."""
    from sklearn.metrics import roc_auc_score

    from features.config import shipped_world

    out = world.fidelity(FeatureSnapshot(data_dir, shipped_world(world.name)).customers)
    if 0 < outcome.sum() < len(outcome):
        out["AUC of true p (random policy's steps)"] = float(roc_auc_score(outcome, true_p))
        out["AUC of offline model (same steps)"] = float(roc_auc_score(outcome, offline_p))
    return out


def simulate(url: str, data_dir: Path, models_dir: Path, *, decisions: int = 20_000,
             seed: int = 0, drift_at: float = 0.5, concurrency: int = 8, limit: int = 1,
             api_key: str | None = None, progress: bool = True,
             accept_replaces_impression: bool = False,
             decision_log: Path | None = None, dismissals: bool = False) -> SimulationReport:
    """Run the closed loop against the nextbest at `url` (blocking).

    `decision_log`: where to write nextbest's decisions as JSONL (`logged_decision`).
    """

    async def go() -> SimulationReport:
        async with NextbestClient(url, api_key=api_key, timeout=10.0,
                                  max_connections=max(8, concurrency)) as client:
            with jsonl_log(decision_log) as log:
                return await run_loop(client.decide, client.feedback_batch, data_dir,
                                      models_dir, decisions, seed, drift_at, concurrency, limit,
                                      progress, accept_replaces_impression, log,
                                      dismissals=dismissals)

    return asyncio.run(go())


# --- command line -------------------------------------------------------------------------
def _start_service(settings: Settings, example: str, port: int, seed: int,
                   n_actions: int | None = None) -> subprocess.Popen[bytes]:
    """Prepare the example's data and model where missing (as `nextbest demo` does), then serve."""
    from training.demo import prepare_demo

    prepare_demo(settings, example=example, n_actions=n_actions)
    env = dict(os.environ, NEXTBEST_DATA_DIR=str(settings.data_dir),
               NEXTBEST_MODELS_DIR=str(settings.models_dir), NEXTBEST_SEED=str(seed))
    if settings.config is not None:
        env["NEXTBEST_CONFIG"] = str(settings.config)
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                            env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the service did not become ready within 120 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nextbest simulate", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running nextbest, e.g. http://127.0.0.1:8000")
    parser.add_argument("--start", action="store_true",
                        help="prepare demo data and model where missing, start `nextbest serve` on --port "
                             "for the run, stop it after")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--example", choices=EXAMPLES, default="retail",
                        help="the example world: retail (--data-dir and --models-dir as given) or "
                             "telco (its shipped world, <data-dir>/telco and <models-dir>/telco, "
                             "as `nextbest demo --example telco` prepares them)")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("NEXTBEST_DATA_DIR", "var")))
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("NEXTBEST_MODELS_DIR", "models")))
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drift-at", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("load_tests/results/sim"))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--n-actions", type=int, default=None, metavar="N",
                        help="with --start, retail: prepare the world with a catalog of N actions "
                             "(as `nextbest demo --n-actions`)")
    parser.add_argument("--accept-replaces-impression", action="store_true",
                        help="diagnostic: send only `accept` (no `impression`) when accepted")
    parser.add_argument("--dismissals", action="store_true",
                        help="customers who do not accept may dismiss (the world's rates by "
                        "channel), sent as `dismiss` feedback")
    args = parser.parse_args(argv)
    if not args.url and not args.start:
        parser.error("give --url of a running nextbest, or --start")
    from service.settings import Settings
    from training.demo import ExampleRefused, example_settings

    try:
        settings = example_settings(Settings(data_dir=args.data_dir, models_dir=args.models_dir),
                                    args.example)
    except ExampleRefused as exc:
        print(f"nextbest simulate: {exc}", file=sys.stderr)
        return 2
    if args.n_actions is not None and (args.example != "retail" or not args.start):
        parser.error("--n-actions needs --start and the retail example")
    proc = (_start_service(settings, args.example, args.port, args.seed, args.n_actions)
            if args.start else None)
    url = args.url or f"http://127.0.0.1:{args.port}"
    try:
        report = simulate(url, settings.data_dir, settings.models_dir, decisions=args.decisions,
                          seed=args.seed, drift_at=args.drift_at, concurrency=args.concurrency,
                          limit=args.limit, api_key=os.environ.get("NEXTBEST_API_KEY"),
                          progress=not args.no_progress,
                          accept_replaces_impression=args.accept_replaces_impression,
                          decision_log=args.out / "decisions.jsonl",
                          dismissals=args.dismissals)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    paths = [*report.write(args.out), args.out / "decisions.jsonl"]
    print(report.markdown())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
