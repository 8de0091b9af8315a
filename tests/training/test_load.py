"""`nextbest load` and the bring-your-own-files walkthrough (docs/byo.md).

The files are the bookshop's (docs/examples/bookshop/world.yaml), built here by hand:
neither demo generator is involved. Readers like the genres they read most; the log's
labels follow that, so a model trained on it must rank a reader's genre first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from features.config import World, interactions_path, load_world, source_path
from load_tests.processes import free_port, nextbest_args, start_http
from training.load import LoadError, load

ROOT = Path(__file__).resolve().parents[2]
BOOKSHOP = ROOT / "docs" / "examples" / "bookshop" / "world.yaml"
GENRES = ("fiction", "crime", "science", "cooking")
FORMATS = ("book", "ebook")
SLOTS = (("web", "home"), ("web", "basket"), ("email", "newsletter"))


@pytest.fixture(scope="module")
def world() -> World:
    return load_world(BOOKSHOP)


def bookshop_files(directory: Path, readers: int = 240, decisions: int = 6000) -> dict[str, Path]:
    """readers.csv (with history), titles.parquet (no timestamps), log.csv: hand-made."""
    rng = np.random.default_rng(11)
    now = datetime.now(UTC).replace(microsecond=0)
    favourite = rng.integers(len(GENRES), size=readers)
    shares = np.full((readers, len(GENRES)), 0.1)
    shares[np.arange(readers), favourite] = 0.7
    rows = []
    for age_days, noise in ((40, 0.05), (20, 0.02)):  # two snapshots: a history
        for r in range(readers):
            share = np.clip(shares[r] + rng.normal(0, noise, len(GENRES)), 0.01, 1)
            rows.append({
                "reader_id": f"r{r:04d}",
                "event_timestamp": (now - timedelta(days=age_days)).isoformat(),
                "tier": "member" if r % 3 == 0 else "basic",
                "books_per_year": str(int(rng.integers(1, 30))),
                "avg_price": f"{rng.uniform(8, 30):.2f}",
                **{f"genre_share_{g}": f"{share[j] / share.sum():.4f}" for j, g in enumerate(GENRES)},
                "note": "ignored column",
            })
    pd.DataFrame(rows).to_csv(directory / "readers.csv", index=False)

    titles = [{"title_id": f"t{g[:2]}{k}", "name": f"{g} {fmt} {k}", "kind": fmt, "category": g,
               "price": 12.0 + 3 * k, "rating": 3.5 + 0.2 * k, "value": 2.0,
               "channels": "web|email", "placements": "home|basket|newsletter"}
              for g in GENRES for k, fmt in enumerate(FORMATS)]
    pd.DataFrame(titles).to_parquet(directory / "titles.parquet")

    title_genre = np.array([GENRES.index(t["category"]) for t in titles])
    who = rng.integers(readers, size=decisions)
    shown = rng.integers(len(titles), size=decisions)
    slot = rng.integers(len(SLOTS), size=decisions)
    logit = -2.2 + 2.6 * (title_genre[shown] == favourite[who])
    label = (rng.random(decisions) < 1 / (1 + np.exp(-logit))).astype(int)
    when = [now - timedelta(days=15) + timedelta(seconds=int(s))
            for s in np.sort(rng.integers(0, 14 * 86400, size=decisions))]
    pd.DataFrame({
        "event_timestamp": [w.isoformat() for w in when],
        "reader_id": [f"r{r:04d}" for r in who],
        "title_id": [titles[t]["title_id"] for t in shown],
        "channel": [SLOTS[s][0] for s in slot],
        "placement": [SLOTS[s][1] for s in slot],
        "hour": rng.integers(0, 24, size=decisions),
        "propensity": 1.0 / len(titles),
        "label": label,
    }).to_csv(directory / "log.csv", index=False)
    favourites = {f"r{r:04d}": GENRES[favourite[r]] for r in range(readers)}
    (directory / "favourites.json").write_text(json.dumps(favourites))
    return {"readers": directory / "readers.csv", "titles": directory / "titles.parquet",
            "log": directory / "log.csv", "favourites": directory / "favourites.json"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return bookshop_files(tmp_path_factory.mktemp("bookshop-files"))


# --- what load writes ---------------------------------------------------------------------
def test_load_writes_the_sources_catalog_and_log(world: World, files: dict[str, Path],
                                                 tmp_path: Path) -> None:
    as_of = datetime.now(UTC) - timedelta(days=60)
    result = load(world, tmp_path, files={"reader": files["readers"], "title": files["titles"]},
                  interactions=files["log"], as_of=as_of)
    readers = pd.read_parquet(source_path(tmp_path, "reader"))
    assert list(readers.columns[:3]) == ["reader_id", "event_timestamp", "created"]
    assert "note" not in readers.columns  # only what the world declares
    assert readers["books_per_year"].dtype.kind == "i" and readers["avg_price"].dtype == "float32"
    assert len(readers) == 480 and readers["reader_id"].nunique() == 240
    titles = pd.read_parquet(source_path(tmp_path, "title"))
    assert (titles["event_timestamp"] == pd.Timestamp(as_of).floor("us")).all()
    catalog = json.loads((tmp_path / "catalog.json").read_text())
    first = catalog["actions"][0]
    assert first == {"action_id": "tfi0", "name": "fiction book 0", "kind": "book",
                     "category": "fiction", "value": 2.0, "channels": ["web", "email"],
                     "placements": ["home", "basket", "newsletter"]}
    log = pd.read_parquet(interactions_path(tmp_path))
    assert log["event_timestamp"].is_monotonic_increasing and len(log) == 6000
    assert set(log.columns) >= {"reader_id", "title_id", "channel", "placement", "hour",
                                "propensity", "label", "reward", "decision_id"}
    assert (log["reward"] == 2.0 * log["label"]).all()  # label x the catalog value
    assert result.written[interactions_path(tmp_path)] == 6000 and not result.warnings


def test_entity_rows_without_timestamps_need_as_of(world: World, files: dict[str, Path],
                                                   tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"titles.parquet: no event_timestamp column.*--as-of"):
        load(world, tmp_path, files={"title": files["titles"]})
    assert not (tmp_path / "sources").exists()  # nothing written


@pytest.mark.parametrize(("column", "value", "message"), [
    ("avg_price", "cheap", r"readers.csv: column avg_price: not a number at row 3 \('cheap'\)"),
    ("books_per_year", "2.5", r"column books_per_year: not an integer at row 3"),
    ("event_timestamp", "yesterday", r"column event_timestamp: not a timestamp at row 3"),
    ("reader_id", "", r"column reader_id: empty at row 3"),
])
def test_bad_entity_values_name_file_column_and_row(world: World, files: dict[str, Path],
                                                    tmp_path: Path, column: str, value: str,
                                                    message: str) -> None:
    frame = pd.read_csv(files["readers"], dtype=str)
    frame.loc[2, column] = value
    bad = tmp_path / "readers.csv"
    frame.to_csv(bad, index=False)
    with pytest.raises(LoadError, match=message):
        load(world, tmp_path / "var", files={"reader": bad})


def test_missing_feature_columns_are_named(world: World, files: dict[str, Path],
                                           tmp_path: Path) -> None:
    frame = pd.read_csv(files["readers"], dtype=str).drop(columns=["tier", "genre_share_crime"])
    frame.to_csv(tmp_path / "readers.csv", index=False)
    with pytest.raises(LoadError, match=r"missing columns tier, genre_share_crime \(the reader "
                       r"entity's join key and the features of its feature views "
                       r"\(reader_profile, reader_taste\)\)"):
        load(world, tmp_path / "var", files={"reader": tmp_path / "readers.csv"})


@pytest.mark.parametrize(("column", "value", "message"), [
    ("channel", "sms", r"column channel: not one of web, email at row 1 \('sms'\)"),
    ("placement", "newsletter", r"a placement not allowed on its channel .* at row 1"),
    ("title_id", "nope", r"column title_id: not in the catalog at row 1 \('nope'\)"),
    ("label", "2", r"column label: expected 0 or 1 at row 1"),
    ("hour", "30", r"column hour: outside \[0, 23\] at row 1"),
    ("propensity", "0", r"column propensity: expected a probability in \(0, 1\] at row 1"),
])
def test_bad_log_rows_name_file_column_row_and_allowed(world: World, files: dict[str, Path],
                                                       tmp_path: Path, column: str, value: str,
                                                       message: str) -> None:
    frame = pd.read_csv(files["log"], dtype=str)
    frame.loc[0, ["channel", "placement"]] = ["web", "home"]
    frame.loc[0, column] = value
    frame.to_csv(tmp_path / "log.csv", index=False)
    with pytest.raises(LoadError, match=message):
        load(world, tmp_path / "var", files={"title": files["titles"]},
             interactions=tmp_path / "log.csv", as_of=datetime.now(UTC))


def test_a_catalog_outside_the_vocabulary_is_refused(world: World, files: dict[str, Path],
                                                     tmp_path: Path) -> None:
    frame = pd.read_parquet(files["titles"])
    frame.loc[1, "category"] = "poetry"
    frame.to_parquet(tmp_path / "titles.parquet")
    with pytest.raises(LoadError, match=r"titles.parquet: the catalog is invalid: .*tfi1.*category"):
        load(world, tmp_path / "var", files={"title": tmp_path / "titles.parquet"},
             as_of=datetime.now(UTC))


def test_a_log_without_propensities_loads_with_a_warning(world: World, files: dict[str, Path],
                                                         tmp_path: Path) -> None:
    frame = pd.read_csv(files["log"], dtype=str).drop(columns=["propensity"])
    frame.to_csv(tmp_path / "log.csv", index=False)
    result = load(world, tmp_path / "var", files={"title": files["titles"]},
                  interactions=tmp_path / "log.csv", as_of=datetime.now(UTC))
    assert any("no propensity column" in w for w in result.warnings)
    assert any("no reader source yet" in w for w in result.warnings)
    assert pd.read_parquet(interactions_path(tmp_path / "var"))["propensity"].isna().all()


# --- the walkthrough, command by command ----------------------------------------------------
def _nextbest(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"nextbest {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def test_bring_your_own_files_from_files_to_a_served_model(files: dict[str, Path],
                                                           tmp_path: Path) -> None:
    """docs/byo.md's commands, in order, on the bookshop's files: load, materialize
    (Feast apply + materialize), train, promote, serve; the served model ranks each
    reader's genre."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    env.update(NEXTBEST_CONFIG=str(BOOKSHOP), NEXTBEST_DATA_DIR=str(tmp_path / "var"),
               NEXTBEST_MODELS_DIR=str(tmp_path / "models"), PYTHONPATH=str(ROOT))
    as_of = (datetime.now(UTC) - timedelta(days=60)).isoformat()
    loaded = _nextbest(env, "load", "--customers", str(files["readers"]), "--actions",
                       str(files["titles"]), "--interactions", str(files["log"]), "--as-of", as_of)
    assert "wrote 6000 rows to" in loaded.stdout
    _nextbest(env, "materialize")
    trained = _nextbest(env, "train")
    assert "registered" in trained.stdout
    _nextbest(env, "models", "promote", "1")  # registering never serves: promote it
    manifest = json.loads(next((tmp_path / "models").rglob("manifest.json")).read_text())
    assert manifest["metrics"]["auc"] > 0.75  # the genre signal the log carries

    port = free_port()
    server = start_http("nextbest", nextbest_args(port), env, port, tmp_path / "serve.log", cwd=ROOT)
    try:
        favourites = json.loads(files["favourites"].read_text())
        hits = 0
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for reader in list(favourites)[:40]:
                response = client.post("/v1/decisions", json={
                    "customer_id": reader, "channel": "web", "placement": "home",
                    "context": {"hour": 20}, "limit": 2, "explain": True})
                assert response.status_code == 200, response.text
                top = response.json()["actions"][0]["action_id"]
                hits += top[1:3] == favourites[reader][:2]
            refused = client.post("/v1/decisions", json={
                "customer_id": "r0001", "channel": "web", "placement": "home",
                "context": {"hour": 30}})
            schema = client.get("/openapi.json").json()
        assert hits >= 34, f"the reader's genre ranked first for {hits} of 40"
        assert refused.status_code == 422 and "hour" in refused.text
        assert "hour" in json.dumps(schema)  # /docs shows the bookshop's context
    finally:
        server.stop()
