"""Request and response bodies of the HTTP API (pydantic; they generate /docs)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from features.schema import CHANNELS, JOURNEY_STAGES

Channel = Literal["web", "app", "pos", "call_center", "email"]
assert set(Channel.__args__) == set(CHANNELS)  # type: ignore[attr-defined]

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class Outcome(StrEnum):
    impression = "impression"
    click = "click"
    accept = "accept"
    dismiss = "dismiss"
    purchase = "purchase"


class DecisionContext(BaseModel):
    """Request-time features. Unknown keys are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    store_id: Identifier | None = None
    basket: list[Identifier] = Field(default_factory=list, max_length=50,
                                     description="Action/product ids already in the basket.")
    device: Literal["mobile", "desktop", "tablet", "terminal"] | None = None
    cart_value: float = Field(0.0, ge=0.0, le=1_000_000.0)
    journey_stage: Literal[JOURNEY_STAGES] | None = Field(  # type: ignore[valid-type]
        None, description="Overrides the customer's stored journey stage."
    )


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier | None = Field(None, description="Omit for anonymous requests.")
    channel: Channel
    placement: Identifier = Field("home", description="e.g. home, product, cart, checkout.")
    context: DecisionContext = Field(default_factory=DecisionContext)
    candidates: list[Identifier] | None = Field(
        None, max_length=200, description="Restrict the decision to these action ids."
    )
    limit: int = Field(3, ge=1, le=20)
    explain: bool = False


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


class DecisionResponse(BaseModel):
    decision_id: str
    customer_id: str | None
    channel: str
    placement: str
    actions: list[RankedAction]
    model_versions: dict[str, str]
    degraded: list[str]


class FeedbackEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision_id: Identifier
    action_id: Identifier
    outcome: Outcome
    value: float | None = Field(None, ge=0.0, le=1_000_000.0,
                                description="Monetary value of the outcome, if any.")
    timestamp: datetime | None = Field(None, description="When it happened; default: now.")


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
    accepted: int
    rejected: list[RejectedEvent] = Field(default_factory=list)


class ErrorBody(BaseModel):
    error: str
    message: str
