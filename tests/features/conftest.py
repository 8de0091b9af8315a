"""Feast is imported at module level by these tests: import it the project's way first."""

from features.feast_sdk import import_feast

import_feast()
