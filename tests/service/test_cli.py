"""The command line on an install without some extra: one line naming it, exit code 2.

The CLI runs in a child process whose meta-path finder refuses the modules of the
extras a test leaves out, as if they were not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import NEEDS, PASS_THROUGH, missing_extras

ROOT = Path(__file__).resolve().parents[2]

# A finder in front of all others, raising for hidden modules as a missing one would.
_RUN_WITHOUT = """
import sys

HIDDEN = set(sys.argv[1].split(","))


class Uninstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Uninstalled)
from service.cli import main

sys.exit(main(sys.argv[2:]))
"""


def run_without(hidden: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _RUN_WITHOUT, ",".join(hidden), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_simulate_without_the_bench_extra_names_it() -> None:
    done = run_without(["matplotlib"], "simulate", "--start")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == ("nextbest simulate needs matplotlib (the 'bench' extra): "
                           "pip install 'nextbest[bench]'\n")


def test_serve_on_the_client_install_names_the_server_extra() -> None:
    done = run_without(["fastapi", "pydantic_settings", "feast"], "serve", "--port", "1")
    assert done.returncode == 2
    assert done.stderr == ("nextbest serve needs pydantic_settings, fastapi (the 'server' extra): "
                           "pip install 'nextbest[server]'\n")


def test_bench_without_both_extras_names_both() -> None:
    done = run_without(["feast", "matplotlib"], "bench")
    assert done.returncode == 2
    assert done.stderr == ("nextbest bench needs feast, matplotlib (the 'server' and 'bench' extras): "
                           "pip install 'nextbest[server,bench]'\n")


def test_help_needs_no_extra() -> None:
    everything = sorted({m for extras in NEEDS.values() for ms in extras.values() for m in ms})
    done = run_without(everything, "--help")
    assert done.returncode == 0, done.stderr
    assert "simulate" in done.stdout and done.stderr == ""
    done = run_without(everything, "serve", "--help")
    assert done.returncode == 0, done.stderr
    assert "--port" in done.stdout


def test_a_pass_through_help_needs_only_what_its_parser_imports() -> None:
    done = run_without(["matplotlib"], "simulate", "--help")
    assert done.returncode == 0, done.stderr
    assert "--decisions" in done.stdout


def test_a_pass_through_help_without_the_server_extra_names_it() -> None:
    done = run_without(["numpy"], "simulate", "--help")
    assert done.returncode == 2
    assert done.stderr.startswith("nextbest simulate needs numpy (the 'server' extra)")


def test_every_command_has_its_needs() -> None:
    assert set(NEEDS) == {"demo", "serve", "train", "materialize", "export", "load", "dataset", "retrain",
                          "models", "decide-batch", "report",
                          *PASS_THROUGH}


def test_find_spec_answering_none_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(NEEDS, "plot", {"server": ("json",), "bench": ("matplotlib",)})
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec answers None for it
    assert missing_extras("plot") == "nextbest plot needs matplotlib (the 'bench' extra): pip install 'nextbest[bench]'"
    monkeypatch.setitem(NEEDS, "plot", {"server": ("json",)})
    assert missing_extras("plot") is None


def test_a_bad_world_configuration_stops_a_command_naming_the_file_and_key(tmp_path: Path) -> None:
    world = tmp_path / "world.yaml"
    text = (ROOT / "features" / "worlds" / "retail.yaml").read_text()
    world.write_text(text.replace("checkout: [pos]", "checkout: [pos, kiosk]"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NEXTBEST_CONFIG": str(world),
           "NEXTBEST_DATA_DIR": str(tmp_path / "var")}
    done = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--port", "1"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid world configuration (NEXTBEST_CONFIG)" in done.stderr
    assert f"{world}: placements.checkout: channel 'kiosk' is not in channels" in done.stderr
