"""Touchpoint insights: how each channel x journey stage (x action kind) performs.

From the feedback counts (`service/insights.py`): impressions, accepts, dismissals and
value per touchpoint, with the acceptance rate (accepts per impression, Wilson interval),
the dismissal rate (dismissals per impression) and the value per impression. Rates need
impressions: integrators send an `impression` event for each action they show
(docs/api.md); a touchpoint without any has null rates.

Pleasure points are the channel x stage touchpoints whose acceptance rate lifts most
over their channel's average (lift = rate / the channel's rate, above 1); pain points
those with the highest dismissal rate (above 0). Both consider only touchpoints with at least
`min_impressions` impressions, so a handful of events cannot top the list.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pydantic import BaseModel, Field

from service.insights import EVENTS, VALUE, Counts
from service.uplift import Interval, text_columns, wilson

ANY = "*"


class Touchpoint(BaseModel):
    channel: str
    journey_stage: str
    kind: str = Field(description="an action kind, or `*`: every kind")
    impressions: int
    accepts: int
    dismissals: int
    value: float
    acceptance_rate: Interval = Field(description="accepts per impression, Wilson interval")
    dismissal_rate: float | None
    value_per_impression: float | None
    lift: float | None = Field(None, description="acceptance rate over the channel's average")


class TouchpointReport(BaseModel):
    since: float = Field(description="epoch seconds: the start of the first hour counted")
    until: float
    group: str | None = Field(description="the group counted (null: both)")
    min_impressions: int
    channels: list[Touchpoint] = Field(description="per channel, every stage and kind")
    touchpoints: list[Touchpoint] = Field(description="per channel x journey stage")
    by_kind: list[Touchpoint] = Field(description="per channel x journey stage x action kind")
    pleasure_points: list[Touchpoint] = Field(
        description="highest acceptance lift over the channel's average")
    pain_points: list[Touchpoint] = Field(description="highest dismissal rate")


class _Tally:
    def __init__(self) -> None:
        self.impressions = self.accepts = self.dismissals = 0.0
        self.value = 0.0

    def figures(self, channel: str, stage: str, kind: str, level: float,
                channel_rate: float | None = None) -> Touchpoint:
        n = self.impressions
        rate = self.accepts / n if n else None
        low, high = wilson(self.accepts, n, level) if n else (None, None)
        return Touchpoint(
            channel=channel, journey_stage=stage, kind=kind, impressions=int(n),
            accepts=int(self.accepts), dismissals=int(self.dismissals), value=self.value,
            acceptance_rate=Interval(value=rate, low=low, high=high),
            dismissal_rate=self.dismissals / n if n else None,
            value_per_impression=self.value / n if n else None,
            lift=rate / channel_rate if rate is not None and channel_rate else None,
        )


def touchpoint_report(counts: Counts, since: float, until: float, group: str | None = None,
                      min_impressions: int = 30, top: int = 5,
                      level: float = 0.95) -> TouchpointReport:
    by_kind: defaultdict[tuple[str, str, str], _Tally] = defaultdict(_Tally)
    for (g, channel, stage, kind, outcome), n in counts.rows(EVENTS):
        if group is not None and g != group:
            continue
        for key in ((channel, stage, kind), (channel, stage, ANY), (channel, ANY, ANY)):
            t = by_kind[key]
            if outcome == "impression":
                t.impressions += n
            elif outcome == "accept":
                t.accepts += n
            elif outcome == "dismiss":
                t.dismissals += n
    for (g, channel, stage, kind), v in counts.rows(VALUE):
        if group is None or g == group:
            for key in ((channel, stage, kind), (channel, stage, ANY), (channel, ANY, ANY)):
                by_kind[key].value += v

    def channel_rate(channel: str) -> float | None:
        t = by_kind.get((channel, ANY, ANY))
        return t.accepts / t.impressions if t is not None and t.impressions else None

    def figures(keys: Iterable[tuple[str, str, str]]) -> list[Touchpoint]:
        return [by_kind[k].figures(*k, level, channel_rate(k[0])) for k in sorted(keys)]

    channels = figures(k for k in list(by_kind) if k[1] == ANY)
    stages = figures(k for k in list(by_kind) if k[1] != ANY and k[2] == ANY)
    kinds = figures(k for k in list(by_kind) if k[2] != ANY)
    ranked = [t for t in stages if t.impressions >= min_impressions]
    pleasure = sorted((t for t in ranked if (t.lift or 0.0) > 1.0), key=lambda t: -(t.lift or 0.0))
    pain = sorted((t for t in ranked if (t.dismissal_rate or 0.0) > 0.0),
                  key=lambda t: -(t.dismissal_rate or 0.0))
    return TouchpointReport(since=since, until=until, group=group, min_impressions=min_impressions,
                            channels=channels, touchpoints=stages, by_kind=kinds,
                            pleasure_points=pleasure[:top], pain_points=pain[:top])


def table(report: TouchpointReport) -> str:
    """The report as text: the touchpoints, then the pleasure and the pain points."""
    def rows(points: list[Touchpoint]) -> str:
        out: list[tuple[str, ...]] = [("channel", "journey stage", "impressions", "acceptance",
                                       "lift", "dismissal rate", "value / impression")]
        out += [(p.channel, p.journey_stage, str(p.impressions), _pct(p.acceptance_rate.value),
                 f"{p.lift:.2f}" if p.lift is not None else "-", _pct(p.dismissal_rate),
                 f"{p.value_per_impression:.3f}" if p.value_per_impression is not None else "-")
                for p in points]
        return text_columns(out) if points else "(none)"

    return "\n\n".join([
        "touchpoints (channel x journey stage)", rows(report.touchpoints),
        f"pleasure points (highest acceptance lift; at least {report.min_impressions} impressions)",
        rows(report.pleasure_points), "pain points (highest dismissal rate)", rows(report.pain_points),
    ])


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if x is not None else "-"
