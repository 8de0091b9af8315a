"""`nextbest models list | promote | shadow | rollback`: what they print and their exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import cli
from tests.demo_fixtures import DemoDirs, registered_copies


@pytest.fixture
def models_env(demo: DemoDirs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two registered versions in a models dir of their own, pointers in it (no Redis)."""
    dirs = registered_copies(demo, tmp_path / "models", count=2)
    for key in ("NEXTBEST_REDIS_URL", "NEXTBEST_MODEL_VERSION", "NEXTBEST_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NEXTBEST_DATA_DIR", str(dirs.data_dir))
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(dirs.models_dir))
    return dirs.models_dir


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["models", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _roles(listing: str) -> dict[str, str]:
    """version -> role column of `models list`."""
    rows = [line.split() for line in listing.splitlines()[1:] if line[:1].isdigit()]
    return {row[0]: row[1] if not row[1][:4].isdigit() else "" for row in rows}


def test_list_promote_shadow_rollback(models_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list")
    assert code == 0 and _roles(out) == {"1": "", "2": ""}
    assert f"pointers: {models_env / 'nextbest-ranker' / 'pointers.json'} (revision 0)" in out

    code, out, _ = _run(capsys, "promote", "1")
    assert code == 0 and "champion v1, no challenger (revision 1" in out
    code, out, _ = _run(capsys, "shadow", "2", "--share", "0.25")
    assert code == 0 and "v2 in shadow on 25% of decisions" in out
    code, out, _ = _run(capsys, "list")
    assert _roles(out) == {"1": "champion", "2": "challenger"}

    code, out, _ = _run(capsys, "promote", "2")
    assert code == 0 and "champion v2, no challenger" in out
    code, out, _ = _run(capsys, "list")
    assert _roles(out) == {"1": "previous", "2": "champion"}
    code, out, _ = _run(capsys, "rollback")
    assert code == 0 and "champion v1" in out


@pytest.mark.parametrize(("argv", "message"), [
    (("promote", "7"), "nextbest models promote: refusing nextbest-ranker v7: model nextbest-ranker "
                       "has no version 7"),
    (("rollback",), "nextbest models rollback: nextbest-ranker has no earlier champion"),
    (("shadow",), "nextbest models shadow: give a VERSION (or --stop)"),
    (("shadow", "2", "--share", "2"), "--share must be in (0, 1]"),
])
def test_refusals_exit_2_with_one_line(models_env: Path, capsys: pytest.CaptureFixture[str],
                                       argv: tuple[str, ...], message: str) -> None:
    code, out, err = _run(capsys, *argv)
    assert code == 2 and message in err and out == ""
    assert not (models_env / "nextbest-ranker" / "pointers.json").exists()
