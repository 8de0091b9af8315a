"""The console: one HTML page and one small script, served by the app, no build step.

The page (`index.html`) and its script (`console.js`) hold no data: the script fetches
it from the API with the key typed into the page (kept in the tab's session storage):
the catalog serving now (`GET /v1/console/catalog`, built here), a decision with
`explain` (`POST /v1/decisions`), the touchpoint insights and the uplift report. Tables
and inline SVG bars are drawn by the script; nothing else is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

from pydantic import BaseModel, Field

from service.catalog import Catalog
from service.limits import Limiter

log = logging.getLogger(__name__)


class ActionView(BaseModel):
    action_id: str
    name: str
    kind: str
    category: str
    value: float
    lever: float
    channels: list[str]
    placements: list[str]
    exclusion_group: str | None
    rules: dict[str, Any] | None = Field(description="eligibility rules (docs/rules.md)")
    contact: dict[str, Any] | None = Field(description="caps and cooldowns per customer")
    budget: dict[str, Any] | None
    budget_left: int | None = Field(description="left in the budget's current period "
                                    "(null: no budget, or the counters could not be read)")


class CatalogView(BaseModel):
    version: str
    slots: dict[str, list[str]] = Field(description="channel -> the placements it has")
    actions: list[ActionView]
    budgets_unavailable: bool = Field(False, description="the budget counters could not be read")


async def catalog_view(catalog: Catalog, limiter: Limiter | None,
                       slots: Mapping[str, Sequence[str]]) -> CatalogView:
    left: dict[str, int] = {}
    unavailable = False
    if limiter is not None and catalog.limits.budgeted.any():
        try:
            left = await limiter.left(catalog.limits)
        except Exception as exc:
            log.warning("reading budgets for the console failed: %r", exc)
            unavailable = True

    def dump(model: BaseModel | None) -> dict[str, Any] | None:
        return (model.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
                if model is not None else None)

    return CatalogView(version=catalog.version, budgets_unavailable=unavailable,
                       slots={c: list(p) for c, p in slots.items()}, actions=[
        ActionView(action_id=a.action_id, name=a.name, kind=a.kind, category=a.category,
                   value=a.value, lever=a.lever, channels=a.channels, placements=a.placements,
                   exclusion_group=a.exclusion_group, rules=dump(a.rules),
                   contact=dump(a.contact), budget=dump(a.budget),
                   budget_left=left.get(a.action_id))
        for a in catalog.actions
    ])


@cache
def page() -> str:
    return files(__name__).joinpath("index.html").read_text(encoding="utf-8")


@cache
def script() -> str:
    return files(__name__).joinpath("console.js").read_text(encoding="utf-8")
