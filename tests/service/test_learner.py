from __future__ import annotations

import numpy as np
import pytest

from features.config import World, shipped_world
from service.learner import LearningExample, OnlineLearner, OnlineWeights, learner_tables
from service.model import sigmoid
from tests.service.retail import RETAIL_TABLES


def example(action: str = "a", outcome: str = "accept", z: float = -2.0,
            channel: str = "web", stage: str = "purchase") -> LearningExample:
    return LearningExample(action, channel, "home", stage, z, outcome)


def test_neutral_before_any_feedback() -> None:
    learner = OnlineLearner(["a", "b"], RETAIL_TABLES)
    z = np.array([-1.0, 0.5])
    corr = learner.publish().correction(z, np.array([0, 1]), "web", "home", "purchase")
    assert corr == pytest.approx([0.0, 0.0])


@pytest.mark.parametrize("groups", [None, ["x", "x", None]])
def test_vectorised_copy_equals_river(groups: list[str | None] | None) -> None:
    learner = OnlineLearner(["a", "b", "c"], RETAIL_TABLES, groups=groups)
    rng = np.random.default_rng(0)
    for _ in range(300):
        learner.learn([example(
            action=str(rng.choice(["a", "b", "c"])), outcome=str(rng.choice(["accept", "dismiss", "impression"])),
            z=float(rng.normal(-2, 1)), channel=str(rng.choice(["web", "pos"])),
            stage=str(rng.choice(["purchase", "retention"])),
        )])
    w = learner.publish()
    for action, row in (("a", 0), ("b", 1), ("c", 2)):
        for channel in ("web", "pos", "email"):
            e = example(action=action, channel=channel, z=-1.5, stage="retention")
            z = np.array([-1.5])
            vec = sigmoid(z + w.correction(z, np.array([row]), channel, "home", "retention"))[0]
            assert vec == pytest.approx(learner.predict_proba(e), rel=1e-9)


def test_positive_feedback_raises_only_that_action_in_that_context() -> None:
    learner = OnlineLearner(["a", "b"], RETAIL_TABLES)
    for _ in range(50):
        learner.learn([example("a", "accept", channel="pos")])
    w = learner.publish()
    z = np.array([-2.0, -2.0])
    on_pos = w.correction(z, np.array([0, 1]), "pos", "home", "purchase")
    on_web = w.correction(z, np.array([0, 1]), "web", "home", "purchase")
    assert on_pos[0] > on_pos[1] + 1.0
    assert on_pos[0] > on_web[0]


def test_unknown_outcomes_and_actions_are_ignored() -> None:
    learner = OnlineLearner(["a"], RETAIL_TABLES)
    assert learner.learn([example(outcome="teleport")]) == 0
    assert learner.learn([example(action="zzz")]) == 1
    w = learner.publish()
    assert isinstance(w, OnlineWeights) and w.action.shape == (1,)


def test_exposures_enter_the_vectorised_copy_like_river() -> None:
    learner = OnlineLearner(["a", "b"], RETAIL_TABLES)
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(0, 8))
        learner.learn([LearningExample("a", "web", "home", "purchase", -1.0,
                                       "accept" if n == 0 and rng.random() < 0.5 else "impression",
                                       exposures=n)])
    w = learner.publish()
    for n in (0, 1, 3, 9):
        e = LearningExample("a", "web", "home", "purchase", -1.0, "impression", exposures=n)
        z = np.array([-1.0])
        vec = sigmoid(z + w.correction(z, np.array([0]), "web", "home", "purchase",
                                       np.array([n])))[0]
        assert vec == pytest.approx(learner.predict_proba(e), rel=1e-9)


def test_learned_fatigue_lowers_repeat_exposures_only() -> None:
    """Repeated impressions of `a` that never convert teach a negative exposure weight,
    starting from no prior at all; a customer who never saw `a` keeps its correction."""
    learner = OnlineLearner(["a", "b"], RETAIL_TABLES, exposure_prior=0.0)
    rng = np.random.default_rng(2)
    for _ in range(400):
        n = int(rng.integers(0, 5))
        accepted = n == 0 and rng.random() < 0.3
        learner.learn([LearningExample("a", "web", "home", "purchase", -1.0, "impression",
                                       exposures=n)])
        if accepted:
            learner.learn([LearningExample("a", "web", "home", "purchase", -1.0, "accept",
                                           exposures=n)])
    w = learner.publish()
    assert w.fatigue[0] == 0.0
    assert w.fatigue[1] < -0.2 and w.fatigue[3] < w.fatigue[1]
    z = np.array([-1.0, -1.0])
    rows = np.array([0, 0])
    fresh, repeat = w.correction(z, rows, "web", "home", "purchase", np.array([0, 3]))
    assert repeat < fresh - 0.5
    no_ledger = w.correction(z[:1], rows[:1], "web", "home", "purchase")
    assert no_ledger[0] == pytest.approx(fresh)


def test_offline_only_learner_has_no_fatigue_prior() -> None:
    w = OnlineLearner(["a"], RETAIL_TABLES, exposure_prior=0.0).publish()
    z = np.array([-1.0])
    assert w.correction(z, np.array([0]), "web", "home", "purchase", np.array([4]))[0] == 0.0
    prior = OnlineLearner(["a"], RETAIL_TABLES).weights
    assert prior.correction(z, np.array([0]), "web", "home", "purchase", np.array([2]))[0] < 0


def test_group_carries_feedback_to_the_other_actions_of_the_group() -> None:
    """Negatives on `a` lower `b` (same group) more than `c` (another group); without
    groups `b` and `c` move alike (only the shared intercept)."""
    for groups, sibling_moves in ((["x", "x", "y"], True), (None, False)):
        learner = OnlineLearner(["a", "b", "c"], RETAIL_TABLES, groups=groups)
        for _ in range(200):
            learner.learn([example("a", "impression", z=-1.0)])
        w = learner.publish()
        z = np.zeros(3)
        a, b, c = w.correction(z, np.arange(3), "pos", "cart", "awareness")
        assert a < b
        if sibling_moves:
            assert b < c - 0.2
        else:
            assert b == pytest.approx(c)


def test_groups_must_match_the_actions() -> None:
    with pytest.raises(ValueError, match="groups"):
        OnlineLearner(["a", "b"], RETAIL_TABLES, groups=["x"])


def test_a_placement_outside_the_schema_is_published_too() -> None:
    """Placements are free-form in requests: one the schema does not list still gets its
    learned weights served (publication adds a column for it), exposures included."""
    learner = OnlineLearner(["a", "b"], RETAIL_TABLES, groups=["x", "x"])
    for i in range(40):
        learner.learn([LearningExample("a", "web", "kiosk", "purchase", -1.0,
                                       "accept" if i % 3 else "dismiss", exposures=i % 3)])
    w = learner.publish()
    assert "kiosk" in w.by_placement
    for exposures in (0, 2):
        e = LearningExample("a", "web", "kiosk", "purchase", -1.0, "accept", exposures=exposures)
        z = np.array([-1.0])
        corr = w.correction(z, np.array([0]), "web", "kiosk", "purchase", np.array([exposures]))
        assert sigmoid(z + corr)[0] == pytest.approx(learner.predict_proba(e), rel=1e-9)


def test_the_worlds_learner_section_sets_the_crosses_and_the_fatigue_cap() -> None:
    retail = shipped_world("retail")
    assert learner_tables(retail) == {
        "channel": ["web", "app", "pos", "call_center", "email"],
        "placement": ["home", "product", "cart", "checkout", "search", "inbox", "service"],
        "journey_stage": ["awareness", "consideration", "purchase", "retention", "churn_risk"],
    }
    document = retail.model_dump(mode="json")
    document["learner"] = {"crosses": ["channel"], "group_by": None, "exposure_cap": 2}
    world = World.model_validate(document)
    learner = OnlineLearner(["a", "b"], tables=learner_tables(world),
                            exposure_cap=world.learner.exposure_cap)
    learner.learn([example("a", "accept", channel="pos")] * 5)
    keys = set(learner.state().keys)
    assert "a:a|c:pos" in keys and not any("|p:" in k or "|s:" in k for k in keys)
    assert {k for k in keys if k.startswith("exposures")} == {"exposures>=1", "exposures>=2"}
    weights = learner.publish()
    assert len(weights.fatigue) == 3 and set(weights.by_channel) == set(world.channels)
    assert not weights.by_placement and not weights.by_stage
    document["learner"]["crosses"] = ["device"]
    with pytest.raises(ValueError, match="learner.crosses: .* not 'device'"):
        learner_tables(World.model_validate(document))


def test_a_relayout_keeps_what_was_learned_with_each_action() -> None:
    """A new catalog appends rows: learned weights stay with their actions, the new one
    starts neutral, and the vectorised copy still equals River (groups changed too)."""
    learner = OnlineLearner(["a", "b"], RETAIL_TABLES, groups=["x", "y"])
    for _ in range(30):
        learner.learn([example("a", "accept", channel="pos"), example("b", "dismiss")])
    before = learner.publish()
    learner.relayout(["a", "b", "c"], ["x", "x", "x"])
    after = learner.weights
    assert after.action.shape == (3,) and after.by_channel["pos"].shape == (3,)
    assert after.by_channel["pos"][0] == before.by_channel["pos"][0]
    for action, row in (("a", 0), ("b", 1), ("c", 2)):
        z = np.array([-1.5])
        vec = sigmoid(z + after.correction(z, np.array([row]), "pos", "home", "purchase"))[0]
        assert vec == pytest.approx(learner.predict_proba(example(action, z=-1.5, channel="pos")), rel=1e-9)
    with pytest.raises(ValueError, match="must begin with the rows served now"):
        learner.relayout(["b", "a", "c"])
