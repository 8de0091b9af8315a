"""The ML engineer's loop end to end, on a real Redis and a real `nextbest serve` process.

The champion in production at the start is a bad model: trained on the demo's
interactions with their labels inverted (what a broken label join would do). The
simulator's customers (the demo world's hidden truth) answer a few thousand decisions
over HTTP with feedback; then `nextbest retrain --promote` (through the CLI's entry
point) exports the streams, builds the dataset, trains a candidate on it, and the gate
must pass it against the inverted-label champion; it is registered and promoted, and
the running service reports the new version without a restart. Running `retrain` again
on the same logs registers nothing. A candidate trained on the same logged dataset with
shuffled labels is judged next (`--candidate`) and must fail, unregistered. Then
`nextbest models rollback`. Decisions keep flowing over HTTP throughout; none may fail.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import redis

from features.config import interactions_path, shipped_world
from load_tests.processes import Server, free_port, nextbest_args, start_http
from service import cli
from service.client import NextbestClient
from service.manifest import read_manifest, versions
from tests.demo_fixtures import DemoDirs, materialize_into
from training.environment import CustomerState, draw_scenario
from training.simulator import request_body
from training.worlds import load_truth

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WORLD = shipped_world("retail")
NAME = "nextbest-ranker"
DECISIONS = 5000
#: candidates a simulated caller offers per decision; the service explores uniformly among
#: them (epsilon 1), so each target policy's effective sample size is about a quarter of
#: the holdout's decisions
OFFERED = 4
WINDOW = "2s"
#: the documented bound with the default watch interval: 1 s between reads, plus the load
BOUND = 2.0
#: the pipeline's options in this test. The gate compares the two models' exploring
#: policies (the service's epsilon-greedy) with the doubly robust estimator: the
#: inverted-label champion's greedy choices earn so rarely on a log of this size that its
#: interval would be the exact one (few rewards), too wide to separate anything. On a log
#: of this size the difference's interval is still about as wide as the difference itself
#: (docs/retraining.md has the figures), so the off-policy criterion is given a margin of
#: one reward unit; the log loss criterion and the minimum effective sample size are the
#: defaults.
GATE = ["--attribution-window", WINDOW, "--policy", "epsilon-greedy", "--estimator", "dr",
        "--margin", "1", "--no-progress"]


@dataclass(frozen=True)
class Reply:
    sent: float
    status: int
    version: str | None


def _broken_model(data_dir: Path, interactions: Path, models_dir: Path, labels: str) -> Path:
    """A model trained on `interactions` with broken labels: `inverted` (it learns to
    prefer what customers refuse) or `shuffled` (no signal)."""
    from training.train import train

    frame = pd.read_parquet(interactions)
    if labels == "inverted":
        frame["label"] = 1 - frame["label"]
    else:
        order = np.random.default_rng(0).permutation(len(frame))
        frame["label"] = frame["label"].to_numpy()[order]
        frame["reward"] = frame["reward"].to_numpy()[order]
    path = models_dir.parent / f"{labels}.parquet"
    frame.to_parquet(path)
    directory, _ = train(data_dir, models_dir, interactions=path, progress=False, world=WORLD)
    return directory


@pytest.fixture
def loop_env(demo: DemoDirs, redis_server: str, tmp_path: Path) -> dict[str, str]:
    """A copy of the demo's data, v1 = a model trained on inverted labels as champion, features
    materialized into db 6 of the suite's Redis (the loop's own: streams, pointers)."""
    data_dir = tmp_path / "var"
    shutil.copytree(demo.data_dir, data_dir)
    models_dir = tmp_path / "models"
    _broken_model(data_dir, interactions_path(data_dir), models_dir, "inverted")
    url = materialize_into(DemoDirs(data_dir, models_dir), redis_server.rsplit("/", 1)[0] + "/6")
    return {"NEXTBEST_REDIS_URL": url, "NEXTBEST_DATA_DIR": str(data_dir),
            "NEXTBEST_MODELS_DIR": str(models_dir), "NEXTBEST_LOG_LEVEL": "WARNING",
            "NEXTBEST_EPSILON": "1", "NEXTBEST_EXPLORE_TOP": "0", "NEXTBEST_SEED": "3",
            "PYTHONPATH": str(ROOT)}


@pytest.fixture
def service(loop_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    server = start_http("nextbest", nextbest_args(port), loop_env, port, tmp_path / "serve.log", cwd=ROOT)
    try:
        yield server
    finally:
        server.stop()


class Traffic:
    """Decisions over HTTP in a thread, every reply recorded, and the moments the
    registry's champion pointer was seen to change (read from Redis)."""

    def __init__(self, url: str, redis_url: str) -> None:
        self.url, self.redis_url = url, redis_url
        self.replies: list[Reply] = []
        self.pointer_changes: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        r = redis.Redis.from_url(self.redis_url)
        seen: str | None = None
        with httpx.Client(base_url=self.url, timeout=5) as http:
            i = 0
            while not self._stop.is_set():
                blob: bytes | None = r.get(f"nb:registry:{NAME}")  # type: ignore[assignment]
                champion: str | None = json.loads(blob)["champion"] if blob else None
                if champion != seen:
                    self.pointer_changes.append((time.monotonic(), champion))
                    seen = champion
                body = {"customer_id": f"c{i % 300:05d}", "channel": "web", "placement": "home",
                        "limit": 3}
                sent = time.monotonic()
                try:
                    reply = http.post("/v1/decisions", json=body)
                    version = (reply.json()["model_versions"]["offline"]
                               if reply.status_code == 200 else None)
                    self.replies.append(Reply(sent, reply.status_code, version))
                except httpx.HTTPError:
                    self.replies.append(Reply(sent, 0, None))
                i += 1
                time.sleep(0.02)
        r.close()

    def changed_to(self, version: str, after: float) -> float:
        """When the champion pointer was first read as `version` after `after`."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            hit = next((t for t, v in list(self.pointer_changes) if v == version and t > after), None)
            if hit is not None:
                return hit
            time.sleep(0.02)
        pytest.fail(f"the champion pointer never read {version}")

    def wait_for(self, version: str, after: float) -> float:
        """When the first reply sent after `after` reported `version` (fails after the bound)."""
        deadline = after + BOUND + 5
        while time.monotonic() < deadline:
            hit = next((r.sent for r in list(self.replies) if r.sent > after and r.version == version), None)
            if hit is not None:
                return hit
            time.sleep(0.05)
        pytest.fail(f"no reply reported {version} within {BOUND + 5} s")


def _retrain(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], capsys: pytest.CaptureFixture[str],
             *argv: str) -> tuple[int, list[str]]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = cli.main(["retrain", *GATE, *argv])
    lines = capsys.readouterr().out.splitlines()
    _show(capsys, *lines)
    return code, lines


def _show(capsys: pytest.CaptureFixture[str], *lines: str) -> None:
    """Print past the capture (with -s): the figures docs/retraining.md quotes."""
    with capsys.disabled():
        print("\n".join(lines))


def _drive(url: str, data_dir: Path, decisions: int, seed: int) -> tuple[int, float]:
    """The simulator's customers (`training/environment.py`: the demo world's truth, its
    journey stages and fatigue) in a closed loop over HTTP, the caller offering `OFFERED`
    of the slot's eligible actions at random; feedback `impression` (+ `accept` with the
    action's value). Returns (accepted, seconds)."""
    world = load_truth(data_dir)
    scenario = draw_scenario(world, decisions, seed, drift_at=1.0)
    state = CustomerState.start(world)
    rng = np.random.default_rng(seed)
    index = {a: i for i, a in enumerate(world.action_ids)}
    started, accepted = time.perf_counter(), 0

    async def go() -> None:
        nonlocal accepted
        async with NextbestClient(url, timeout=10.0, max_connections=16) as client:
            for begin in range(0, decisions, 16):
                steps = range(begin, min(begin + 16, decisions))
                bodies = []
                for step in steps:
                    body = request_body(world, scenario, step,
                                        state.stage_name(int(scenario.customers[step])), 1)
                    rows = scenario.candidates(step)
                    offered = rng.choice(rows, size=min(OFFERED, len(rows)), replace=False)
                    bodies.append({**body, "candidates": [world.action_ids[r] for r in offered]})
                replies = await asyncio.gather(*(client.decide(b) for b in bodies))
                events: list[dict[str, object]] = []
                for step, reply in zip(steps, replies, strict=True):
                    top = reply.actions[0]
                    ok, _ = state.respond(scenario, step, index[top.action_id])
                    events.append({"decision_id": reply.decision_id, "action_id": top.action_id,
                                   "outcome": "impression"})
                    if ok:
                        accepted += 1
                        events.append({"decision_id": reply.decision_id, "action_id": top.action_id,
                                       "outcome": "accept",
                                       "value": float(world.action_value[index[top.action_id]])})
                await client.feedback_batch(events)

    asyncio.run(go())
    return accepted, time.perf_counter() - started


def _close_windows(url: str) -> None:
    """After the attribution window, one more decision and feedback event: the export's
    feedback horizon then lies past every simulated decision's window."""
    time.sleep(float(WINDOW.rstrip("s")) + 0.5)
    decision = httpx.post(f"{url}/v1/decisions", json={"customer_id": "c00001", "channel": "web",
                                                        "placement": "home", "limit": 1}, timeout=5)
    assert decision.status_code == 200, decision.text
    body = decision.json()
    reply = httpx.post(f"{url}/v1/feedback", json={"decision_id": body["decision_id"],
                                                    "action_id": body["actions"][0]["action_id"],
                                                    "outcome": "impression"}, timeout=5)
    assert reply.status_code == 202, reply.text


def test_serve_log_retrain_gate_promote_and_roll_back(
        service: Server, loop_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data_dir, models_dir = Path(loop_env["NEXTBEST_DATA_DIR"]), Path(loop_env["NEXTBEST_MODELS_DIR"])
    redis_url = loop_env["NEXTBEST_REDIS_URL"]
    accepted, seconds = _drive(service.url, data_dir, DECISIONS, seed=5)
    _show(capsys, f"simulated {DECISIONS} decisions in {seconds:.1f} s, {accepted} accepted")
    assert accepted > 100
    _close_windows(service.url)

    with Traffic(service.url, redis_url) as traffic:
        time.sleep(0.5)
        started = time.monotonic()
        code, lines = _retrain(monkeypatch, loop_env, capsys, "--promote")
        assert code == 0, "\n".join(lines)
        steps = [line.split(":", 1)[0] for line in lines]
        assert steps == ["export", "dataset", "train", *["gate"] * 3, "register", "promote", "retrain"]
        assert lines[5].startswith("gate: pass against champion v1")
        assert lines[-1] == "retrain: registered and promoted v2 (exit 0)"
        moved = traffic.changed_to("2", started)
        swap_latency = traffic.wait_for(f"{NAME}:2", moved) - moved
        _show(capsys, f"swap: the first decision reporting v2 was sent {swap_latency:.2f} s "
                      "after the pointer moved")
        assert swap_latency < BOUND

        manifest = read_manifest(models_dir / NAME / "2")
        assert manifest.parent_version == "1"
        assert manifest.training["retrain"]["gate"]["verdict"] == "pass"
        assert (models_dir / NAME / "2" / "gate.json").is_file()
        assert "## Gate" in (models_dir / NAME / "2" / "model_card.md").read_text()

        # the same logs again: nothing new is registered, nothing is promoted
        code, lines = _retrain(monkeypatch, loop_env, capsys, "--promote")
        assert code == 0, "\n".join(lines)
        assert lines[-1].startswith("retrain: nothing new: v2 was registered from this dataset")
        assert versions(models_dir, NAME) == [1, 2]

        # a worse candidate: the same logged dataset, labels shuffled; judged, refused
        worse = _broken_model(data_dir, data_dir / "dataset" / "interactions.parquet",
                              tmp_path / "elsewhere", "shuffled")
        code, lines = _retrain(monkeypatch, loop_env, capsys, "--promote", "--candidate", str(worse))
        assert code == 1, "\n".join(lines)
        assert any(line.startswith("gate: fail against champion v2") for line in lines)
        assert lines[-1].startswith("retrain: the gate failed against champion v2: nothing registered")
        assert versions(models_dir, NAME) == [1, 2]
        # judged once: the same candidate on the same logs repeats the verdict, untrained
        code, lines = _retrain(monkeypatch, loop_env, capsys, "--promote", "--candidate", str(worse))
        assert code == 1 and lines[-1].startswith("retrain: nothing new: the same verdict as last time (fail")

        monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models_dir))
        rolling = time.monotonic()
        assert cli.main(["models", "rollback"]) == 0
        moved = traffic.changed_to("1", rolling)
        rollback_latency = traffic.wait_for(f"{NAME}:1", moved) - moved
        _show(capsys, f"rollback: the first decision reporting v1 was sent {rollback_latency:.2f} s "
                      "after the pointer moved")
        assert rollback_latency < BOUND
        time.sleep(0.5)

    failed = [r for r in traffic.replies if r.status != 200]
    assert not failed, f"{len(failed)} of {len(traffic.replies)} decisions failed: {failed[:5]}"
    served = [r.version for r in traffic.replies]
    runs = [served[0]] + [b for a, b in zip(served, served[1:], strict=False) if a != b]
    assert runs == [f"{NAME}:1", f"{NAME}:2", f"{NAME}:1"], runs
    _show(capsys, f"{len(traffic.replies)} decisions during the swaps, 0 failed")
