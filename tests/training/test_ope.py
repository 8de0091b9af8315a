"""Off-policy evaluation on synthetic logs whose target-policy values are known.

The synthetic world: contexts x ~ N(0, I), 8 actions, 3-5 candidates per decision,
expected reward value_a * sigmoid(x . theta_a + b_a), Bernoulli acceptance. The logging
policy is a softmax over the candidates on an unrelated linear score (or uniform), so
logged rewards say little about a target policy until they are reweighted. A target's
true value is its expected reward on 200,000 fresh draws of the same world.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training import evaluate, ope
from training.ope_log import LogFormatError, LoggedBandit, load_log, read_rows, write_log

N_ACTIONS, WIDTH, DIM = 8, 5, 3
N_LOG = 20_000
N_TRUTH = 200_000


class World:
    def __init__(self, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.theta = rng.normal(0.0, 1.0, (N_ACTIONS, DIM))
        self.bias = rng.normal(-1.0, 0.5, N_ACTIONS)
        self.value = rng.uniform(1.0, 3.0, N_ACTIONS)
        self.phi = rng.normal(0.0, 0.6, (N_ACTIONS, DIM))  # the logging policy's own view
        self._truth: dict[int, tuple[LoggedBandit, np.ndarray]] = {}

    def draw(self, n: int, seed: int, uniform_logging: bool = False,
             min_candidates: int = 3) -> tuple[LoggedBandit, np.ndarray]:
        """A log of n decisions and its true expected reward per candidate slot."""
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, DIM))
        candidates = np.argsort(rng.random((n, N_ACTIONS)), axis=1)[:, :WIDTH]
        mask = np.arange(WIDTH) < rng.integers(min_candidates, WIDTH + 1, n)[:, None]
        candidates = np.where(mask, candidates, -1)
        rows = np.arange(n)[:, None]
        expected = (self.value / (1.0 + np.exp(-(x @ self.theta.T + self.bias))))[rows, candidates]
        expected = np.where(mask, expected, 0.0)
        logits = np.zeros((n, WIDTH)) if uniform_logging else (x @ self.phi.T)[rows, candidates]
        mu = np.where(mask, np.exp(logits), 0.0)
        mu /= mu.sum(axis=1, keepdims=True)
        chosen = (rng.random(n)[:, None] > np.cumsum(mu, axis=1)).sum(axis=1)
        accept = rng.random(n) < expected[np.arange(n), chosen] / self.value[candidates[np.arange(n), chosen]]
        reward = np.where(accept, self.value[candidates[np.arange(n), chosen]], 0.0)
        scores = np.where(mask, expected + rng.normal(0.0, 0.05, expected.shape), np.nan)
        log = LoggedBandit(
            actions=tuple(f"a{i}" for i in range(N_ACTIONS)), candidates=candidates, mask=mask,
            chosen=chosen, propensity=mu[np.arange(n), chosen], reward=reward, scores=scores,
            decision_ids=tuple(f"d{i}" for i in range(n)), contexts=({},) * n,
            channels=("web",) * n, placements=("home",) * n,
        )
        return log, expected

    def true_value(self, policy: ope.TargetPolicy, min_candidates: int = 3) -> float:
        """The policy's expected reward per decision, on fresh draws of the same world."""
        if min_candidates not in self._truth:
            self._truth[min_candidates] = self.draw(N_TRUTH, seed=999, min_candidates=min_candidates)
        log, expected = self._truth[min_candidates]
        return float((policy(log) * expected).sum(axis=1).mean())


@pytest.fixture(scope="module")
def world() -> World:
    return World()


@pytest.fixture(scope="module")
def softmax_log(world: World) -> tuple[LoggedBandit, np.ndarray]:
    return world.draw(N_LOG, seed=1)


@pytest.fixture(scope="module")
def uniform_log(world: World) -> tuple[LoggedBandit, np.ndarray]:
    """Uniform over always 5 candidates: the one case where replay is unbiased."""
    return world.draw(N_LOG, seed=2, uniform_logging=True, min_candidates=WIDTH)


POLICIES: dict[str, ope.TargetPolicy] = {
    "greedy": ope.greedy(),
    "epsilon-greedy": ope.epsilon_greedy(eps=0.3),
    "uniform": ope.uniform,
}


def _covers(e: ope.Estimate, truth: float) -> bool:
    return e.ci_low <= truth <= e.ci_high


@pytest.mark.parametrize("policy_name", list(POLICIES))
def test_ips_snips_dr_intervals_cover_the_true_value(world: World, softmax_log: Any, policy_name: str) -> None:
    log, _ = softmax_log
    policy = POLICIES[policy_name]
    truth = world.true_value(policy)
    for e in ope.evaluate(log, policy, ("ips", "snips", "dr")):
        assert _covers(e, truth), (e, truth)
        assert e.n == N_LOG and 0 < e.effective_sample_size <= N_LOG


@pytest.mark.parametrize("policy_name", ["greedy", "epsilon-greedy"])
def test_replay_covers_the_true_value_under_uniform_logging(world: World, uniform_log: Any,
                                                           policy_name: str) -> None:
    log, _ = uniform_log
    e = ope.replay(log, POLICIES[policy_name])
    assert _covers(e, world.true_value(POLICIES[policy_name], min_candidates=WIDTH)), e
    assert e.note == ""
    if policy_name == "greedy":  # deterministic target: n = decisions where it agrees with the log
        assert e.n == int((ope.greedy()(log)[np.arange(log.n), log.chosen] > 0).sum()) < log.n


def test_replay_warns_when_propensities_vary(world: World, softmax_log: Any) -> None:
    assert "replay is biased" in ope.replay(softmax_log[0], ope.greedy()).note
    ragged_uniform, _ = world.draw(500, seed=3, uniform_logging=True)  # 3-5 candidates
    assert "replay is biased" in ope.replay(ragged_uniform, ope.greedy()).note


def test_estimates_move_away_from_the_naive_logged_mean(world: World, softmax_log: Any) -> None:
    log, _ = softmax_log
    naive = float(log.reward.mean())
    truth = world.true_value(ope.greedy())
    assert truth > naive + 0.1
    for e in ope.evaluate(log, ope.greedy(), ("ips", "snips", "dr")):
        assert e.ci_low > naive, e


def test_logged_policy_reproduces_the_mean_logged_reward(softmax_log: Any) -> None:
    log, _ = softmax_log
    np.testing.assert_allclose(ope.importance_weights(log, ope.logged(log)), 1.0)
    by_name = {e.name: e for e in ope.evaluate(log, ope.logged)}
    assert by_name["ips"].value == pytest.approx(log.reward.mean(), rel=1e-12)
    assert by_name["snips"].value == pytest.approx(log.reward.mean(), rel=1e-12)
    assert by_name["ips"].effective_sample_size == pytest.approx(log.n)


def test_snips_normalises_the_importance_weights(softmax_log: Any) -> None:
    log, _ = softmax_log
    w = ope.importance_weights(log, ope.uniform(log))
    se = w.std(ddof=1) / np.sqrt(log.n)
    assert abs(w.mean() - 1.0) < 4 * se  # E_mu[w] = sum_a pi(a|x) = 1
    normalised = w / w.sum()
    assert normalised.sum() == pytest.approx(1.0)
    assert ope.snips(log, ope.uniform).value == pytest.approx(float((normalised * log.reward).sum()))
    # scaling every weight leaves SNIPS unchanged and IPS scaled
    doubled = lambda lg: 0.5 * ope.uniform(lg)  # noqa: E731
    assert ope.snips(log, doubled).value == pytest.approx(ope.snips(log, ope.uniform).value)
    assert ope.ips(log, doubled).value == pytest.approx(0.5 * ope.ips(log, ope.uniform).value)


def test_doubly_robust_with_a_perfect_reward_model_beats_ips(world: World, softmax_log: Any) -> None:
    log, expected = softmax_log
    truth = world.true_value(ope.greedy())
    dr = ope.doubly_robust(log, ope.greedy(), reward=expected)
    plain = ope.ips(log, ope.greedy())
    assert _covers(dr, truth)
    # what is left is the Bernoulli noise of the rewards, which no reward model removes
    assert (dr.ci_high - dr.ci_low) ** 2 < 0.6 * (plain.ci_high - plain.ci_low) ** 2


def test_default_reward_model_is_scores_else_cross_fitted_mean(softmax_log: Any) -> None:
    log, _ = softmax_log
    np.testing.assert_allclose(ope.reward_model(log), np.where(log.mask, log.scores, 0.0))
    q = ope.cross_fitted_mean_reward(log, seed=3)
    altered = np.array(log.reward)
    altered[0] += 100.0
    q_altered = ope.cross_fitted_mean_reward(_replace(log, reward=altered), seed=3)
    np.testing.assert_array_equal(q[0], q_altered[0])  # a decision's own reward never enters its q
    assert not np.array_equal(q, q_altered)
    unscored = _replace(log, scores=np.full(log.scores.shape, np.nan))
    np.testing.assert_array_equal(ope.reward_model(unscored, seed=3), q)
    with pytest.raises(ValueError, match="lack scores"):
        ope.reward_model(unscored, "scores")


def test_clipping_caps_the_weights(softmax_log: Any) -> None:
    log, _ = softmax_log
    w = ope.importance_weights(log, ope.greedy()(log), clip=3.0)
    assert w.max() == 3.0
    assert ope.ips(log, ope.greedy(), clip=3.0).value < ope.ips(log, ope.greedy()).value
    with pytest.raises(ValueError, match="clip"):
        ope.ips(log, ope.greedy(), clip=0.0)
    with pytest.raises(ValueError, match="clip"):
        ope.gate(log, ope.greedy(), ope.uniform, clip=-1.0)


def test_bootstrap_intervals_are_seeded_and_close_to_normal_ones(world: World) -> None:
    log, _ = world.draw(5000, seed=4)
    normal = ope.evaluate(log, ope.greedy())
    boot = ope.evaluate(log, ope.greedy(), bootstrap=400, seed=5)
    assert boot == ope.evaluate(log, ope.greedy(), bootstrap=400, seed=5)
    for n, b in zip(normal, boot, strict=True):
        assert n.value == b.value
        assert b.ci_low < b.value < b.ci_high
        assert (b.ci_high - b.ci_low) == pytest.approx(n.ci_high - n.ci_low, rel=0.25), (n, b)


@pytest.mark.parametrize("policy", [ope.uniform, ope.logged, ope.greedy(), ope.epsilon_greedy(eps=0.1)])
def test_every_policy_is_a_distribution_over_the_candidates(softmax_log: Any, policy: ope.TargetPolicy) -> None:
    log, _ = softmax_log
    probs = ope.check_policy(log, policy(log))
    assert np.all(probs[~log.mask] == 0.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_greedy_splits_ties_and_needs_scores() -> None:
    log = read_rows(enumerate([
        json.dumps(_row(candidates=["a", "b", "c"], scores={"a": 1.0, "b": 1.0, "c": 0.0})),
        json.dumps(_row(candidates=["a", "b"], scores={"b": 2.0})),  # unscored `a` is never picked
    ], start=1))
    np.testing.assert_allclose(ope.greedy()(log), [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(ope.epsilon_greedy(eps=0.3)(log)[1], [0.15, 0.85, 0.0])
    no_scores = read_rows([(1, json.dumps(_row(scores=None)))])
    with pytest.raises(ValueError, match="no scores"):
        ope.greedy()(no_scores)


def test_gate_passes_a_better_policy_and_fails_a_worse_one(softmax_log: Any) -> None:
    log, expected = softmax_log
    oracle = ope.greedy(expected)
    better = ope.gate(log, oracle, ope.uniform)
    assert better.passed and better.difference.ci_low > 0, better.reason
    assert better.candidate.value > better.incumbent.value
    worse = ope.gate(log, ope.uniform, oracle, estimator="dr")
    assert not worse.passed and "fail" in worse.reason
    # identical policies: the difference is exactly 0, so only a positive margin lets it through
    assert not ope.gate(log, oracle, oracle).passed
    assert ope.gate(log, oracle, oracle, margin=0.01).passed
    boot = ope.gate(log, oracle, ope.uniform, estimator="ips", bootstrap=200, seed=1)
    assert boot.passed


# --- the log format --------------------------------------------------------------------

def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "decision_id": "d1", "ts": 1700000000.0, "customer_id": "c1", "channel": "web",
        "placement": "home", "context": {"device": "mobile"}, "candidates": ["a", "b"],
        "action_id": "a", "propensity": 0.5, "reward": 1.0, "scores": {"a": 0.3, "b": 0.1},
    }
    row.update(overrides)
    return {k: v for k, v in row.items() if v is not _DROP}


_DROP = object()


def _replace(log: LoggedBandit, **changes: Any) -> LoggedBandit:
    from dataclasses import replace

    return replace(log, **changes)


@pytest.mark.parametrize(("override", "field"), [
    ({"propensity": _DROP}, "propensity"),
    ({"context": _DROP}, "context"),
    ({"propensity": 0.0}, "propensity"),
    ({"propensity": 1.5}, "propensity"),
    ({"propensity": "0.5"}, "propensity"),
    ({"action_id": "z"}, "action_id"),
    ({"reward": float("nan")}, "reward"),
    ({"reward": float("inf")}, "reward"),
    ({"candidates": []}, "candidates"),
    ({"candidates": ["a", "a"]}, "candidates"),
    ({"customer_id": 5}, "customer_id"),
    ({"scores": {"a": "high"}}, "scores"),
])
def test_malformed_rows_name_the_line_and_the_field(tmp_path: Path, override: dict[str, Any], field: str) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_text(json.dumps(_row()) + "\n\n" + json.dumps(_row(**override)) + "\n")
    with pytest.raises(LogFormatError, match=f"line 3: field '{field}'") as info:
        load_log(path)
    assert (info.value.line, info.value.field) == (3, field)


def test_invalid_json_and_empty_logs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_text(json.dumps(_row()) + "\n{not json\n")
    with pytest.raises(LogFormatError, match="line 2: field '<json>'"):
        load_log(path)
    path.write_text("\n")
    with pytest.raises(LogFormatError, match="no decisions"):
        load_log(path)


def test_a_written_log_reads_back(tmp_path: Path) -> None:
    rows = [_row(decision_id=f"d{i}", customer_id=None if i % 2 else "c1",
                 candidates=["a", "b", "c"][: 2 + i % 2], action_id="b", reward=float(i))
            for i in range(5)]
    write_log(tmp_path / "decisions.jsonl", rows)
    log = load_log(tmp_path / "decisions.jsonl")
    assert log.n == 5 and log.decision_ids[4] == "d4"
    assert [log.actions[a] for a in log.chosen_action] == ["b"] * 5
    assert log.mask.sum(axis=1).tolist() == [2, 3, 2, 3, 2]
    np.testing.assert_array_equal(log.reward, np.arange(5.0))
    assert np.isnan(log.scores[1, 2]) and log.has_scores.tolist() == [True, False, True, False, True]


# --- CLI -----------------------------------------------------------------------------------

def _to_rows(log: LoggedBandit) -> list[dict[str, Any]]:
    rows = []
    for i in range(log.n):
        ids = [log.actions[a] for a in log.candidates[i][log.mask[i]]]
        rows.append(_row(decision_id=log.decision_ids[i], candidates=ids, action_id=ids[log.chosen[i]],
                         propensity=float(log.propensity[i]), reward=float(log.reward[i]),
                         scores=dict(zip(ids, log.scores[i][log.mask[i]].tolist(), strict=True))))
    return rows


def test_cli_prints_a_table_and_writes_json(world: World, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    log, _ = world.draw(3000, seed=6)
    path = tmp_path / "decisions.jsonl"
    write_log(path, _to_rows(log))
    out = tmp_path / "report" / "ope.json"
    code = evaluate.main(["--log", str(path), "--policy", "epsilon-greedy", "--epsilon", "0.2",
                     "--clip", "50", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "| snips |" in table and "| dr |" in table and "replay *" in table
    report = json.loads(out.read_text())
    assert report["decisions"] == 3000 and report["clip"] == 50
    assert [e["name"] for e in report["estimates"]] == list(ope.ESTIMATORS)
    expected = ope.evaluate(log, ope.epsilon_greedy(eps=0.2), clip=50)
    assert report["estimates"][2]["value"] == pytest.approx(expected[2].value)


def test_cli_exits_2_on_a_bad_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_text(json.dumps(_row()) + "\n" + json.dumps(_row(propensity=0)) + "\n")
    assert evaluate.main(["--log", str(path)]) == 2
    assert "line 2: field 'propensity'" in capsys.readouterr().err
    assert evaluate.main(["--log", str(tmp_path / "missing.jsonl")]) == 2
    path.write_text(json.dumps(_row(scores=None)) + "\n")
    assert evaluate.main(["--log", str(path), "--policy", "greedy"]) == 2
    assert evaluate.main(["--log", str(path), "--policy", "uniform"]) == 0


# --- intervals that stay valid where few decisions earned anything, and the ESS guard ---------

def _bandit(candidates: list[list[str]], chosen: list[int], propensity: list[float],
            reward: list[float], scores: list[list[float]] | None = None) -> LoggedBandit:
    rows = []
    for i, (c, k, p, r) in enumerate(zip(candidates, chosen, propensity, reward, strict=True)):
        rows.append(json.dumps(_row(decision_id=f"d{i}", candidates=c, action_id=c[k], propensity=p,
                                    reward=r, scores=dict(zip(c, scores[i], strict=True)) if scores else None)))
    return read_rows(enumerate(rows, start=1))


def _always(action: int) -> ope.TargetPolicy:
    def policy(log: LoggedBandit) -> np.ndarray:
        probs = np.zeros(log.mask.shape)
        probs[:, action] = 1.0
        return probs
    return policy


def test_no_reward_where_the_policy_matches_is_not_a_zero_width_interval() -> None:
    n = 400
    chosen = [i % 4 for i in range(n)]
    reward = [0.0 if k == 0 else 1.0 for k in chosen]  # the target's action never earned
    log = _bandit([["a", "b", "c", "d"]] * n, chosen, [0.25] * n, reward)
    for e in ope.evaluate(log, _always(0), ("ips", "snips", "dr")):
        assert e.value == pytest.approx(0.0, abs=1e-12) and e.exact, e
        assert e.ci_low <= 0.0 < e.ci_high, e  # today's code: [0, 0]
    snips = ope.snips(log, _always(0))
    assert snips.effective_sample_size == pytest.approx(100.0)
    assert snips.ci_high == pytest.approx(1.0 - 0.025 ** (1 / 100.0), rel=1e-6)  # Clopper-Pearson, 0 of 100
    assert "exact binomial" in snips.note


def test_rare_rewards_are_covered_at_the_stated_level() -> None:
    """Uniform logging over 4 candidates, the target always shows `a`, which earns 1 with
    probability 0.005: about half an event per log, where the normal interval is [0, 0]."""
    truth, n, covered, repeats = 0.005, 400, 0, 300
    rng = np.random.default_rng(11)
    for _ in range(repeats):
        chosen = rng.integers(0, 4, n)
        reward = ((chosen == 0) & (rng.random(n) < truth)).astype(float)
        reward[chosen == 1] = rng.random(int((chosen == 1).sum())) < 0.5  # the log has a range
        log = _bandit([["a", "b", "c", "d"]] * n, chosen.tolist(), [0.25] * n, reward.tolist())
        covered += _covers(ope.snips(log, _always(0)), truth)
    assert covered / repeats >= 0.93


def test_a_log_without_any_reward_says_not_enough_data() -> None:
    log = _bandit([["a", "b"]] * 50, [0, 1] * 25, [0.5] * 50, [0.0] * 50)
    e = ope.snips(log, _always(0))
    assert np.isnan(e.ci_low) and np.isnan(e.ci_high) and "not enough data" in e.note
    assert "not enough data" in ope.markdown_table([e])
    bounded = ope.snips(log, _always(0), reward_range=(0.0, 1.0))
    assert bounded.ci_low == 0.0 and bounded.ci_high == pytest.approx(1.0 - 0.025 ** (1 / 25.0))
    with pytest.raises(ValueError, match="outside the reward range"):
        ope.snips(_bandit([["a"]], [0], [1.0], [2.0]), _always(0), reward_range=(0.0, 1.0))
    refused = ope.gate(log, _always(0), _always(1), min_ess=1)
    assert not refused.decided and not refused.passed and "not enough data" in refused.reason


def test_the_gate_refuses_to_decide_below_the_minimum_effective_sample_size(softmax_log: Any) -> None:
    log, expected = softmax_log
    oracle = ope.greedy(expected)
    decided = ope.gate(log, oracle, ope.uniform, min_ess=100)
    assert decided.decided and decided.passed
    refused = ope.gate(log, oracle, ope.uniform, min_ess=decided.candidate.effective_sample_size + 1)
    assert not refused.decided and not refused.passed
    assert refused.reason.startswith("refused: the candidate's effective sample size")


def test_with_few_rewards_the_gate_bounds_the_difference_from_both_intervals() -> None:
    n = 400
    chosen = [i % 4 for i in range(n)]
    log = _bandit([["a", "b", "c", "d"]] * n, chosen, [0.25] * n, [0.0 if k < 2 else 1.0 for k in chosen])
    result = ope.gate(log, _always(0), _always(1), min_ess=50, margin=0.001)
    assert result.difference.value == 0.0 and result.difference.exact
    assert result.difference.ci_low < -0.01  # paired, it was [0, 0] and passed any margin
    assert result.decided and not result.passed


def test_exploring_matches_the_service_s_exploration() -> None:
    from service.exploration import select_top_k

    scores = [[0.9, 0.1, 0.5, 0.7, 0.3, 0.2]]
    log = _bandit([["a", "b", "c", "d", "e", "f"]], [0], [0.5], [1.0], scores)
    probs = ope.exploring(eps=0.2, top=3)(log)[0]
    np.testing.assert_allclose(probs, [0.8 + 0.2 / 3, 0.0, 0.2 / 3, 0.2 / 3, 0.0, 0.0])
    rng = np.random.default_rng(0)
    draws = np.array([select_top_k(np.array(scores[0]), 1, 0.2, rng, 3).positions[0] for _ in range(20_000)])
    np.testing.assert_allclose(np.bincount(draws, minlength=6) / len(draws), probs, atol=0.01)
    np.testing.assert_allclose(ope.exploring(eps=0.2, top=0)(log)[0].sum(), 1.0)
