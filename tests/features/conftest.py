"""Feast is imported at module level by these tests: import it the project's way first."""

from features.store import import_feast

import_feast()
