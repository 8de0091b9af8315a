"""nextbest: the next-best-action service.

`__version__` is the project's one version source: the package metadata
(pyproject.toml), the app (`/openapi.json`) and the Helm chart (checked by
tests/ops/test_chart.py) all follow it.
"""

__version__ = "0.1.0"
