"""The retail world's learner tables, for tests that build a learner without an app."""

from __future__ import annotations

from features.config import shipped_world
from service.learner import learner_tables

#: channel, placement and journey stage, with the retail world's values.
RETAIL_TABLES = learner_tables(shipped_world("retail"))
