"""Request and response bodies of the HTTP API (pydantic; they generate /docs).

The decision request follows the world (`features/config.py`): `request_models(world)`
builds, with pydantic's `create_model`, a `DecisionContext` with one field per declared
context field and a `DecisionRequest` whose `channel` and `placement` are the world's,
the placement allowed only on the channels the world lets it appear on. The app builds
them once at start-up (`service/app.py`), so `/docs` shows the configured schema and
requests are validated against it in the one JSON parse they get. `DecisionRequestBase`
is their static base: the engine, the client and tools type against it. Feedback and
the responses do not depend on the world and stay static.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

if TYPE_CHECKING:
    from features.config import World

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class Outcome(StrEnum):
    impression = "impression"
    click = "click"
    accept = "accept"
    dismiss = "dismiss"
    purchase = "purchase"


class DecisionRequestBase(BaseModel):
    """The fields every world's decision request has; `request_models` narrows
    `channel`, `placement` and `context` to the world's."""

    model_config = ConfigDict(extra="forbid")

    #: channel -> the placements that may appear on it, in declaration order (set on
    #: the world's model; empty here: the base checks nothing)
    placements_by_channel: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    _placement_sets: ClassVar[Mapping[str, frozenset[str]]] = {}

    customer_id: Identifier | None = Field(None, description="Omit for anonymous requests.")
    channel: str
    placement: str
    context: BaseModel
    candidates: list[Identifier] | None = Field(
        None, max_length=200, description="Restrict the decision to these action ids."
    )
    limit: int = Field(3, ge=1, le=20)
    explain: bool = False

    @field_validator("placement", mode="after")
    @classmethod
    def _appears_on_the_channel(cls, placement: str, info: ValidationInfo) -> str:
        channel: str = info.data.get("channel", "")
        allowed = cls._placement_sets.get(channel)
        if allowed is not None and placement not in allowed:
            allowed_here = ", ".join(map(repr, cls.placements_by_channel[channel])) or "none"
            raise ValueError(f"placement {placement!r} may not appear on channel {channel!r}: "
                             f"its placements are {allowed_here}")
        return placement


@dataclass(frozen=True)
class RequestModels:
    """A world's request models (built once, by `request_models`)."""

    context: type[BaseModel]
    decision: type[DecisionRequestBase]

    def warmup(self) -> DecisionRequestBase:
        """A valid request: the first channel at its first placement, the context's defaults."""
        channel, placements = next((c, ps) for c, ps in self.decision.placements_by_channel.items() if ps)
        return self.decision.model_validate({"channel": channel, "placement": placements[0]})


def _literal(values: list[str]) -> Any:
    return Literal.__getitem__(tuple(values))  # type: ignore[attr-defined]


def _context_field(world: World, name: str, spec: Any) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of one declared context field."""
    description = spec.description or None
    if spec.type == "category":
        values = _literal(world.vocabulary(spec.vocabulary))
        if spec.default is not None:
            return values, Field(spec.default, description=description)
        return values | None, Field(None, description=description)
    if spec.type == "number":
        return float, Field(spec.default, ge=spec.min, le=spec.max, description=description)
    if spec.type == "id":
        return Identifier | None, Field(None, description=description)
    if spec.type == "id_list":
        return list[Identifier], Field(default_factory=list, max_length=spec.max_items,
                                       description=description)
    raise ValueError(f"context.{name}: no request field for type {spec.type!r}")


def request_models(world: World) -> RequestModels:
    """The decision request of `world`, as pydantic models (no eval: `create_model`)."""
    fields: dict[str, Any] = {name: _context_field(world, name, spec)
                              for name, spec in world.context.items()}
    context = create_model(
        "DecisionContext", __config__=ConfigDict(extra="forbid"),
        __doc__="Request-time features, as the world declares them. Unknown keys are "
                "refused so typos do not pass silently.",
        **fields,
    )
    placements = list(world.placements)
    home = "home" if "home" in world.placements else ...
    decision = create_model(
        "DecisionRequest", __base__=DecisionRequestBase,
        channel=(_literal(list(world.channels)), Field(description="The touchpoint.")),
        placement=(_literal(placements), Field(
            home, validate_default=True,
            description="The slot on the channel; each may appear only on the channels "
                        "the world lets it.")),
        context=(context, Field(default_factory=context)),
    )
    by_channel = {c: tuple(p for p in placements if c in world.placements[p]) for c in world.channels}
    decision.placements_by_channel = by_channel
    decision._placement_sets = {c: frozenset(ps) for c, ps in by_channel.items()}
    return RequestModels(context=context, decision=decision)


class Explanation(BaseModel):
    offline_propensity: float
    online_correction: float = Field(description="Logit added by the online learner.")
    exposures: int = Field(0, description="How often this customer was already shown this "
                           "action within the contact window (any channel); fatigue input.")
    propensity: float = Field(description="Corrected propensity used in arbitration.")
    value: float
    context_weight: float
    lever: float
    priority: float


class RankedAction(BaseModel):
    action_id: str
    rank: int
    score: float = Field(description="Arbitration priority (propensity x value x weights).")
    propensity: float = Field(description="Predicted probability of acceptance.")
    probability: float = Field(
        description="Probability that the policy picks this action at this rank "
        "(logged for off-policy evaluation)."
    )
    value: float
    explored: bool
    explanation: Explanation | None = None


class Removed(BaseModel):
    action_id: str
    rule: str = Field(description="What removed it: `channel`, `placement`, `in_basket`, "
                      "`rule:<key>` (an eligibility rule, e.g. `rule:window`, `rule:segments`, "
                      "`rule:context.cart_value`), `cooldown_after_dismiss`, "
                      "`cooldown_after_accept`, `cap`, `budget`, `limits_unavailable`, "
                      "`limit_rounds`, `exclusion_group:<group>`, `diversity:<category>`.")


class DecisionResponse(BaseModel):
    decision_id: str
    customer_id: str | None
    channel: str
    placement: str
    actions: list[RankedAction]
    model_versions: dict[str, str]
    degraded: list[str]
    group: Literal["treatment", "control"] = Field(
        "treatment", description="`control`: served by the control group's baseline policy "
        "(docs/insights.md), not by nextbest's ranking.")
    removed: list[Removed] | None = Field(
        None, description="With `explain`: every candidate removed before ranking or by "
        "arbitration, with the rule that removed it.")


class FeedbackEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision_id: Identifier
    action_id: Identifier
    outcome: Outcome
    value: float | None = Field(None, ge=0.0, le=1_000_000.0,
                                description="Monetary value of the outcome, if any.")
    timestamp: datetime | None = Field(None, description="When it happened; default: now.")
    event_id: Identifier | None = Field(
        None, description="Makes the event idempotent: an event whose id was accepted before "
        "(within the decision TTL) is not applied again. Default: "
        "`<decision_id>:<action_id>:<outcome>`, one outcome of each kind per shown action.")

    def key(self) -> str:
        """What identifies this event for deduplication (`event_id`, or the derived key)."""
        return self.event_id or f"{self.decision_id}:{self.action_id}:{self.outcome.value}"


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[FeedbackEvent] = Field(min_length=1, max_length=1000)


class RejectedEvent(BaseModel):
    index: int
    decision_id: str
    action_id: str
    reason: str
    message: str


class FeedbackResponse(BaseModel):
    accepted: int = Field(description="Events applied now, duplicates included (a resent "
                          "event is accepted, and applied once).")
    duplicates: int = Field(0, description="Of the accepted, how many had been applied "
                            "before (same event key) and were not applied again.")
    rejected: list[RejectedEvent] = Field(default_factory=list)


class ErrorBody(BaseModel):
    error: str
    message: str


class CatalogChange(BaseModel):
    """What a change of the catalog wrote."""

    version: int = Field(description="The catalog version now current (also the `ETag`).")
    sha256: str = Field(description="sha256 of the version's canonical JSON document.")
    changed: bool = Field(description="False when the document was already so: no new version.")
    audit: dict[str, Any] | None = Field(
        None, description="The audit entry the change appended (who, when, what).")


class CatalogVersion(BaseModel):
    version: int
    sha256: str
    updated_at: str
    updated_by: str
    serving: str = Field(description="The catalog version this replica serves now; it "
                         "follows `version` within NEXTBEST_CATALOG_WATCH_SECONDS plus the build.")
    document: dict[str, Any] = Field(description="The catalog document (`PUT /v1/catalog` format).")


class ActionList(BaseModel):
    version: int
    actions: list[dict[str, Any]]


class ActionVersion(BaseModel):
    version: int
    action: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[dict[str, Any]] = Field(description="Newest first: version, sha256, at, by, "
                                          "operation, changes (added, changed, removed, fields).")
    next_before: int | None = Field(None, description="Pass as `before` for the next page "
                                    "(None: this was the last).")


class BatchResult(BaseModel):
    """One request of a batch: its decision (status 200), or the error it got."""

    index: int = Field(description="The request's position in `requests`.")
    status: int = Field(description="What the request alone would have been answered.")
    decision: DecisionResponse | None = None
    error: str | None = None
    message: str | None = None


class DecisionBatchResponse(BaseModel):
    results: list[BatchResult] = Field(description="One per request, in their order.")
    decided: int
    failed: int
