"""The contact ledger: exposures, suppression, windows and bounds."""

from __future__ import annotations

import numpy as np
import pytest

from service.contacts import ContactLedger

DAY = 86_400.0
IDS = ["a", "b", "c", "d"]
ALL = np.arange(len(IDS))


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(customer: str | None, action: str, outcome: str, ts: float,
          channel: str = "web") -> dict[str, object]:
    return {"customer_id": customer, "action_id": action, "outcome": outcome, "ts": ts,
            "channel": channel}


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_counts_impressions_per_action_and_customer(clock: Clock) -> None:
    ledger = ContactLedger(IDS, clock=clock)
    t = clock.now - 60
    ledger.record([event("c1", "a", "impression", t), event("c1", "a", "impression", t),
                   event("c1", "c", "impression", t, channel="pos"),
                   event("c1", "a", "accept", t), event("c2", "b", "impression", t)])
    assert ledger.exposures("c1", ALL).tolist() == [2, 0, 1, 0]
    assert ledger.exposures("c1", np.array([2, 0])).tolist() == [1, 2]
    assert ledger.exposures("c2", ALL).tolist() == [0, 1, 0, 0]
    assert ledger.exposures("nobody", ALL).tolist() == [0, 0, 0, 0]
    assert not ledger.suppressed("c1", ALL).any()


def test_dismiss_suppresses_on_every_channel_until_it_expires(clock: Clock) -> None:
    ledger = ContactLedger(IDS, suppress_seconds=7 * DAY, clock=clock)
    ledger.record([event("c1", "b", "dismiss", clock.now, channel="pos")])
    assert ledger.suppressed("c1", ALL).tolist() == [False, True, False, False]
    assert not ledger.suppressed("c2", ALL).any()
    clock.now += 7 * DAY + 1
    assert not ledger.suppressed("c1", ALL).any()


def test_accept_cooldown_is_off_by_default_and_optional(clock: Clock) -> None:
    events = [event("c1", "a", "accept", clock.now), event("c1", "d", "purchase", clock.now)]
    off = ContactLedger(IDS, clock=clock)
    off.record(events)
    assert not off.suppressed("c1", ALL).any()
    on = ContactLedger(IDS, cooldown_seconds=DAY, clock=clock)
    on.record(events)
    assert on.suppressed("c1", ALL).tolist() == [True, False, False, True]
    clock.now += DAY + 1
    assert not on.suppressed("c1", ALL).any()


def test_window_drops_old_impressions(clock: Clock) -> None:
    ledger = ContactLedger(IDS, window_seconds=DAY, suppress_seconds=DAY, clock=clock)
    ledger.record([event("c1", "a", "impression", clock.now - 2 * DAY)])  # too old to keep
    assert len(ledger) == 0
    ledger.record([event("c1", "a", "impression", clock.now - DAY / 2)])
    assert ledger.exposures("c1", ALL)[0] == 1
    clock.now += DAY
    assert ledger.exposures("c1", ALL)[0] == 0  # out of the window at lookup time
    ledger.record([event("c1", "b", "impression", clock.now)])
    assert ledger.exposures("c1", ALL).tolist() == [0, 1, 0, 0]


def test_anonymous_unknown_actions_and_other_outcomes_are_ignored(clock: Clock) -> None:
    ledger = ContactLedger(IDS, clock=clock)
    kept = ledger.record([event(None, "a", "dismiss", clock.now),
                          event("c1", "zzz", "impression", clock.now),
                          event("c1", "a", "click", clock.now)])
    assert kept == 0 and len(ledger) == 0
    assert not ledger.suppressed(None, ALL).any()
    assert ledger.exposures(None, ALL).tolist() == [0, 0, 0, 0]


def test_bounded_in_customers_and_contacts(clock: Clock) -> None:
    ledger = ContactLedger(IDS, max_customers=3, max_contacts=5, clock=clock)
    ledger.record([event("c1", "a", "impression", clock.now) for _ in range(8)])
    assert ledger.exposures("c1", ALL)[0] == 5
    for c in ("c2", "c3"):
        ledger.record([event(c, "a", "impression", clock.now)])
    ledger.record([event("c1", "b", "impression", clock.now)])  # c1 recently contacted again
    ledger.record([event("c4", "a", "impression", clock.now)])
    assert len(ledger) == 3
    assert ledger.exposures("c2", ALL)[0] == 0  # least recently contacted: evicted
    assert ledger.exposures("c1", ALL).tolist() == [4, 1, 0, 0]
    assert ledger.exposures("c4", ALL)[0] == 1


def test_same_stream_same_ledger(clock: Clock) -> None:
    """Replicas fold the same ordered stream, in any chunking, into the same ledger."""
    rng = np.random.default_rng(0)
    stream = [event(f"c{rng.integers(20)}", IDS[rng.integers(4)],
                    str(rng.choice(["impression", "dismiss", "accept"])), clock.now - rng.random())
              for _ in range(500)]
    one, two = ContactLedger(IDS, clock=clock), ContactLedger(IDS, clock=clock)
    one.record(stream)
    for start in range(0, len(stream), 37):
        two.record(stream[start:start + 37])
    for c in (f"c{i}" for i in range(20)):
        assert one.exposures(c, ALL).tolist() == two.exposures(c, ALL).tolist()
        assert one.suppressed(c, ALL).tolist() == two.suppressed(c, ALL).tolist()


def test_lookups_follow_time_and_new_contacts_as_a_fresh_count_would(clock: Clock) -> None:
    """Lookups between contacts, as the clock moves past each contact's window, give what
    counting the customer's recorded contacts by hand gives."""
    window, suppress, cooldown = 10.0, 4.0, 2.0
    ledger = ContactLedger(IDS, window_seconds=window, suppress_seconds=suppress,
                           cooldown_seconds=cooldown, clock=clock)
    rng = np.random.default_rng(3)
    kept: list[tuple[str, str, str, float]] = []
    for _ in range(300):
        clock.now += float(rng.exponential(0.7))
        if rng.random() < 0.4:
            e = (f"c{rng.integers(3)}", IDS[rng.integers(4)],
                 str(rng.choice(["impression", "impression", "dismiss", "purchase"])),
                 clock.now - float(rng.random()))
            ledger.record([event(*e)])
            kept.append(e)
        customer = f"c{rng.integers(3)}"
        mine = [e for e in kept if e[0] == customer][-ledger.max_contacts:]
        seen = [sum(1 for _, a, o, ts in mine
                    if a == action and o == "impression" and ts >= clock.now - window)
                for action in IDS]
        blocked = [any(a == action and ((o == "dismiss" and ts >= clock.now - suppress)
                                        or (o == "purchase" and ts >= clock.now - cooldown))
                       for _, a, o, ts in mine)
                   for action in IDS]
        assert ledger.exposures(customer, ALL).tolist() == seen
        assert ledger.suppressed(customer, ALL).tolist() == blocked


def test_new_rows_keep_every_contact_with_its_action(clock: Clock) -> None:
    ledger = ContactLedger(IDS, suppress_seconds=DAY, clock=clock)
    ledger.record([event("c1", "b", "dismiss", clock.now), event("c1", "c", "impression", clock.now)])
    assert ledger.suppressed("c1", ALL).tolist() == [False, True, False, False]
    ledger.extend([*IDS, "e"])
    ledger.record([event("c1", "e", "dismiss", clock.now)])
    rows = np.arange(5)
    assert ledger.suppressed("c1", rows).tolist() == [False, True, False, False, True]
    assert ledger.exposures("c1", rows).tolist() == [0, 0, 1, 0, 0]
    ledger.policies(np.array([np.nan, np.nan, np.nan, np.nan, 0.0]), None)
    clock.now += 1
    assert ledger.suppressed("c1", rows).tolist() == [False, True, False, False, False]
    with pytest.raises(ValueError, match="must begin with the rows known now"):
        ledger.extend(["e", *IDS])
