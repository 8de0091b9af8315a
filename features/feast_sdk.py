"""`import feast`, the project's way: without switching prometheus_client into multiprocess mode.

The bottom of the Feast side of `features`: `features/definitions.py` and
`features/store.py` both call `import_feast()` before their first `from feast import`,
so this module imports nothing of the project.
"""

from __future__ import annotations

import os

# feast/metrics.py sets these at import (to a fresh `feast_metrics_*` temp dir).
_MULTIPROC_VARS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR", "prometheus_multiproc_dir")


def import_feast() -> None:
    """`import feast` without switching prometheus_client into multiprocess mode.

    Feast sets PROMETHEUS_MULTIPROC_DIR when imported. A prometheus_client imported
    after that (here, or in any child process inheriting the variable) keeps metric
    values in shared mmap files: every metric update then takes a lock and writes to
    its file, CPU on the decision path (`nextbest bench` measures that path,
    docs/benchmarks.md), and counters of one name leak between registries. So decide
    prometheus_client's mode first, then take the variables Feast added back out of
    the environment.
    """
    import prometheus_client.values  # noqa: F401  (fixes this process's value class now)

    before = {k: os.environ.get(k) for k in _MULTIPROC_VARS}
    import feast  # noqa: F401

    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
