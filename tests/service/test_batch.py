"""Outbound decisions in batch, on every state backend: `POST /v1/decisions/batch` under
the same rules, caps and budgets as single decisions (a budget of K is granted exactly K
times by a batch of more customers than K), each decision logged so its feedback joins,
errors answered by index, the size bounded (413); `nextbest decide-batch` end to end
against a served app, through the Python client."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from load_tests.processes import free_port
from service import cli
from service.app import create_app
from service.settings import Settings
from tests.demo_fixtures import DemoDirs, clear_service_state, serve_in_thread

BUDGET = 30
CUSTOMERS = 80
#: the budgeted action, made the best one in the inbox so every customer would get it
VOUCHER = "p003"


@pytest.fixture
def settings(backend_settings: Settings, demo: DemoDirs, tmp_path: Path) -> Iterator[Settings]:
    document = json.loads((demo.data_dir / "catalog.json").read_text())
    for action in document["actions"]:
        if action["action_id"] == VOUCHER:
            action.update(lever=1000.0, budget={"limit": BUDGET, "per": "total",
                                                "counts": "impression"})
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(document))
    yield backend_settings.model_copy(update={"catalog_path": path, "batch_max_requests": 200})
    if backend_settings.redis_url:
        clear_service_state(backend_settings.redis_url, cluster=backend_settings.redis_cluster)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def inbox(n: int, **extra: Any) -> dict[str, Any]:
    return {"customer_id": f"c{n:05d}", "channel": "email", "placement": "inbox", "limit": 1, **extra}


def test_a_batch_never_spends_more_than_the_budget(api: TestClient) -> None:
    r = api.post("/v1/decisions/batch", json={"requests": [inbox(n) for n in range(CUSTOMERS)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["decided"], body["failed"]) == (CUSTOMERS, 0)
    assert [x["index"] for x in body["results"]] == list(range(CUSTOMERS))
    firsts = Counter(x["decision"]["actions"][0]["action_id"] for x in body["results"])
    assert firsts[VOUCHER] == BUDGET  # every decision that could get the voucher got it
    again = api.post("/v1/decisions/batch", json={"requests": [inbox(n) for n in range(10)]})
    assert all(x["decision"]["actions"][0]["action_id"] != VOUCHER for x in again.json()["results"])
    single = api.post("/v1/decisions", json=inbox(999))
    assert single.json()["actions"][0]["action_id"] != VOUCHER  # spent for single decisions too


def test_each_decision_is_logged_and_its_feedback_joins(api: TestClient) -> None:
    results = api.post("/v1/decisions/batch",
                       json={"requests": [inbox(n) for n in range(5)]}).json()["results"]
    ids = [x["decision"]["decision_id"] for x in results]
    assert len(set(ids)) == 5
    for x in results:
        d = x["decision"]
        r = api.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": "impression",
                                           "action_id": d["actions"][0]["action_id"]})
        assert r.status_code == 202 and r.json()["accepted"] == 1, r.text


def test_errors_are_answered_by_index(api: TestClient) -> None:
    requests = [inbox(1), inbox(2, channel="fax"), inbox(3, candidates=["nope"]), inbox(4, limit=0)]
    r = api.post("/v1/decisions/batch", json={"requests": requests})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["status"] for x in results] == [200, 422, 422, 422]
    assert r.json()["decided"] == 1 and r.json()["failed"] == 3
    assert results[1]["error"] == "invalid_request" and "requests.1.channel" in results[1]["message"]
    assert results[2]["error"] == "unknown_candidates"
    assert "requests.3.limit" in results[3]["message"]
    assert "decision" not in results[1] or results[1]["decision"] is None


def test_the_batch_is_bounded(api: TestClient) -> None:
    r = api.post("/v1/decisions/batch", json={"requests": [inbox(n) for n in range(201)]})
    assert r.status_code == 413 and "the limit is 200" in r.json()["message"]
    bodies: list[object] = [{"requests": []}, {"customers": []}, [inbox(1)]]
    for body in bodies:
        r = api.post("/v1/decisions/batch", json=body)
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_decide_batch_writes_every_customers_decision(settings: Settings, tmp_path: Path,
                                                      suffix: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    customers = tmp_path / "customers.csv"
    with customers.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "cart_value", "basket"])
        for n in range(CUSTOMERS):
            w.writerow([f"c{n:05d}", 10.0 * n, "p001|p002" if n % 2 else ""])
    out = tmp_path / f"decisions{suffix}"
    with serve_in_thread(create_app(settings), free_port()) as url:
        code = cli.main(["decide-batch", "--customers", str(customers), "--channel", "email",
                         "--placement", "inbox", "--out", str(out), "--url", url,
                         "--batch-size", "25", "--no-progress"])
    assert code == 0
    assert f"decided {CUSTOMERS} of {CUSTOMERS} customers" in capsys.readouterr().out
    if suffix == ".jsonl":
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        shown = [(x["customer_id"], x["decision"]["actions"][0]["action_id"]) for x in lines]
    else:
        import pandas as pd

        frame = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
        assert set(frame["rank"]) == {1} and frame["error"].isna().all()
        assert frame["decision_id"].nunique() == CUSTOMERS
        shown = list(zip(frame["customer_id"], frame["action_id"], strict=True))
    assert [c for c, _ in shown] == [f"c{n:05d}" for n in range(CUSTOMERS)]
    assert sum(a == VOUCHER for _, a in shown) == BUDGET


def test_decide_batch_refuses_a_column_the_world_does_not_have(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    customers = tmp_path / "customers.csv"
    customers.write_text("customer_id,shoe_size\nc00001,42\n")
    code = cli.main(["decide-batch", "--customers", str(customers), "--channel", "email",
                     "--out", str(tmp_path / "out.csv"), "--url", "http://127.0.0.1:9"])
    assert code == 2
    assert "'shoe_size' is not a context field of the retail world" in capsys.readouterr().err
