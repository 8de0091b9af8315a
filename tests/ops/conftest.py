"""Fixtures for the operations tests: the real helm, kubernetes-validate, promtool and
prometheus binaries, found on PATH or in .tools/bin (where .ci/install-ops-tools.sh puts
them). A missing tool is a failure that says how to install it, never a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "nextbest"
RULES = CHART / "files" / "rules.yaml"
TOOLS_BIN = ROOT / ".tools" / "bin"


def find_tool(name: str) -> str:
    """Path of an ops tool; fails the test with the install command if it is missing."""
    local = TOOLS_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(
        f"{name} not found on PATH or in {TOOLS_BIN}: run `bash .ci/install-ops-tools.sh` "
        "(installs helm, kubernetes-validate, promtool and prometheus)",
        pytrace=False,
    )


def run(cmd: list[str], *, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    return find_tool("kubernetes-validate")


@pytest.fixture(scope="session")
def promtool() -> str:
    return find_tool("promtool")


@pytest.fixture(scope="session")
def prometheus() -> str:
    return find_tool("prometheus")
