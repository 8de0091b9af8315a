"""The uplift report: nextbest (the treatment) against the control group's baseline.

Per channel and over all channels, for each group: decisions, accepts, the acceptance
rate (accepts per decision) with a Wilson score interval, and the value per decision
with a normal interval from the value's sum and sum of squares; then the uplift of the
treatment over the control, as a difference (acceptance: Newcombe's hybrid score
interval, built from the two Wilson intervals; value: Welch's) and as a ratio (log
scale: Katz's interval for the acceptance rates, the delta method for the values).

The counts come from `service/insights.py`. They make the figures exact when a decision
gets at most one `accept` and one valued event (one action shown, or one accepted, per
decision); with more, accepts per decision is counted as a rate (capped at 1 for its
interval) and the value's variance treats each valued event as its own decision's.
An interval is null where it is undefined (no decisions; a ratio over zero).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from statistics import NormalDist

from pydantic import BaseModel, Field

from service.control import CONTROL, GROUPS, TREATMENT
from service.insights import DECISIONS, EVENTS, SQUARES, VALUE, Counts

ALL = "all"
#: the outcome that counts as an acceptance
ACCEPT = "accept"


class Interval(BaseModel):
    value: float | None
    low: float | None
    high: float | None


class GroupFigures(BaseModel):
    channel: str = Field(description="a channel, or `all`")
    group: str = Field(description="`treatment` (nextbest) or `control` (the baseline)")
    decisions: int
    accepts: int
    value: float = Field(description="value of the group's feedback events")
    acceptance_rate: Interval = Field(description="accepts per decision, Wilson interval")
    value_per_decision: Interval


class Uplift(BaseModel):
    channel: str
    metric: str = Field(description="`acceptance_rate` or `value_per_decision`")
    difference: Interval = Field(description="treatment minus control")
    ratio: Interval = Field(description="treatment over control")


class UpliftReport(BaseModel):
    since: float = Field(description="epoch seconds: the start of the first hour counted")
    until: float
    level: float = Field(description="confidence level of every interval")
    control_share: float
    control_policy: str
    groups: list[GroupFigures]
    uplift: list[Uplift]


def wilson(successes: float, trials: float, level: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion."""
    if trials <= 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = min(successes, trials) / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe(a1: float, n1: float, a2: float, n2: float, level: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval of p1 - p2 (method 10)."""
    p1, p2 = min(a1, n1) / n1, min(a2, n2) / n2
    l1, u1 = wilson(a1, n1, level)
    l2, u2 = wilson(a2, n2, level)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def _mean(total: float, squares: float, n: float) -> tuple[float, float]:
    """(mean, its standard error) of n values with this sum and sum of squares."""
    mean = total / n
    variance = max(0.0, (squares - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return mean, math.sqrt(variance / n)


def _none(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


def _interval(value: float, low: float, high: float) -> Interval:
    return Interval(value=_none(value), low=_none(low), high=_none(high))


NAN = Interval(value=None, low=None, high=None)


class _Group:
    def __init__(self) -> None:
        self.decisions = self.accepts = self.value = self.squares = 0.0


def uplift_report(counts: Counts, since: float, until: float, level: float = 0.95,
                  control_share: float = 0.0, control_policy: str = "random") -> UpliftReport:
    z = NormalDist().inv_cdf(0.5 + level / 2)
    by: defaultdict[tuple[str, str], _Group] = defaultdict(_Group)

    def add(group: str, channel: str, attr: str, n: float) -> None:
        for c in (channel, ALL):
            g = by[(c, group)]
            setattr(g, attr, getattr(g, attr) + n)

    for (group, channel), n in counts.rows(DECISIONS):
        add(group, channel, "decisions", n)
    for (group, channel, _stage, _kind, outcome), n in counts.rows(EVENTS):
        if outcome == ACCEPT:
            add(group, channel, "accepts", n)
    for (group, channel, _stage, _kind), v in counts.rows(VALUE):
        add(group, channel, "value", v)
    for (group, channel), q in counts.rows(SQUARES):
        add(group, channel, "squares", q)

    channels = sorted({c for c, _ in by if c != ALL}) + [ALL]
    groups: list[GroupFigures] = []
    uplift: list[Uplift] = []
    for channel in channels:
        for name in GROUPS:
            g = by[(channel, name)]
            if g.decisions > 0:
                p = min(g.accepts, g.decisions) / g.decisions
                mean, se = _mean(g.value, g.squares, g.decisions)
                rate = _interval(p, *wilson(g.accepts, g.decisions, level))
                per = _interval(mean, mean - z * se, mean + z * se)
            else:
                rate = per = NAN
            groups.append(GroupFigures(channel=channel, group=name, decisions=int(g.decisions),
                                       accepts=int(g.accepts), value=g.value,
                                       acceptance_rate=rate, value_per_decision=per))
        t, c = by[(channel, TREATMENT)], by[(channel, CONTROL)]
        if t.decisions > 0 and c.decisions > 0:
            uplift += _uplift(channel, t, c, level, z)
    return UpliftReport(since=since, until=until, level=level, control_share=control_share,
                        control_policy=control_policy, groups=groups, uplift=uplift)


def _uplift(channel: str, t: _Group, c: _Group, level: float, z: float) -> list[Uplift]:
    pt, pc = min(t.accepts, t.decisions) / t.decisions, min(c.accepts, c.decisions) / c.decisions
    difference = _interval(pt - pc, *newcombe(t.accepts, t.decisions, c.accepts, c.decisions, level))
    ratio = NAN
    if 0 < t.accepts < t.decisions and 0 < c.accepts < c.decisions:
        se = math.sqrt(1 / t.accepts - 1 / t.decisions + 1 / c.accepts - 1 / c.decisions)
        r = pt / pc
        ratio = _interval(r, r * math.exp(-z * se), r * math.exp(z * se))
    mt, st = _mean(t.value, t.squares, t.decisions)
    mc, sc = _mean(c.value, c.squares, c.decisions)
    se_d = math.sqrt(st * st + sc * sc)
    value_difference = _interval(mt - mc, mt - mc - z * se_d, mt - mc + z * se_d)
    value_ratio = NAN
    if mt > 0 and mc > 0:
        se_log = math.sqrt((st / mt) ** 2 + (sc / mc) ** 2)
        r = mt / mc
        value_ratio = _interval(r, r * math.exp(-z * se_log), r * math.exp(z * se_log))
    return [Uplift(channel=channel, metric="acceptance_rate", difference=difference, ratio=ratio),
            Uplift(channel=channel, metric="value_per_decision", difference=value_difference,
                   ratio=value_ratio)]


def _pct(i: Interval) -> str:
    if i.value is None:
        return "-"
    span = f" [{100 * i.low:.1f}, {100 * i.high:.1f}]" if i.low is not None and i.high is not None else ""
    return f"{100 * i.value:.1f}%{span}"


def _num(i: Interval, digits: int = 3) -> str:
    if i.value is None:
        return "-"
    span = (f" [{i.low:.{digits}f}, {i.high:.{digits}f}]"
            if i.low is not None and i.high is not None else "")
    return f"{i.value:.{digits}f}{span}"


def table(report: UpliftReport) -> str:
    """The report as text: one table of the groups, one of the uplift."""
    head = (f"control group: {report.control_share:.0%} of customers, policy {report.control_policy}; "
            f"{report.level:.0%} intervals" if report.control_share > 0
            else "no control group configured (NEXTBEST_CONTROL_SHARE is 0)")
    rows: list[tuple[str, ...]] = [
        ("channel", "group", "decisions", "accepts", "acceptance rate", "value / decision")]
    rows += [(g.channel, g.group, str(g.decisions), str(g.accepts), _pct(g.acceptance_rate),
              _num(g.value_per_decision)) for g in report.groups]
    uplift: list[tuple[str, ...]] = [("channel", "metric", "difference", "ratio")]
    uplift += [(u.channel, u.metric, _pct(u.difference) if u.metric == "acceptance_rate"
                else _num(u.difference), _num(u.ratio, 2)) for u in report.uplift]
    return "\n\n".join([head, text_columns(rows), text_columns(uplift) if report.uplift
                        else "no uplift: a group has no decisions"])


def text_columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
