"""The catalog store's contract, over both backends: the data directory and a real Redis.

Versions grow by one per change and only when the document changes; every version has
exactly one audit entry (who, when, what), pages of the trail are newest first;
concurrent changes (threads, each with its own store, as replicas would) all land, none
lost; the revision replicas poll follows the current version.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from service.catalog_store import (
    CatalogStore,
    FileCatalogStore,
    Proposal,
    RedisCatalogStore,
    StoredCatalog,
    changes,
    digest,
)


@pytest.fixture(params=["file", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened: list[CatalogStore] = []

    def make() -> CatalogStore:
        if request.param == "file":
            store: CatalogStore = FileCatalogStore(tmp_path / "catalog-versions")
        else:
            store = RedisCatalogStore(redis.Redis.from_url(request.getfixturevalue("redis_url")))
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


def doc(*ids: str, **extra: Any) -> dict[str, Any]:
    return {"actions": [{"action_id": a, **extra} for a in ids]}


def put(store: CatalogStore, document: dict[str, Any], by: str = "ops",
        operation: str = "put_catalog") -> StoredCatalog | None:
    done = store.update(lambda _: Proposal(document, operation, by))
    return None if done is None else done.stored


def test_an_empty_store_has_no_version(make_store: Any) -> None:
    store = make_store()
    assert store.current() is None and store.revision() is None and store.audit(None, 10) == []


def test_each_change_is_a_version_with_one_audit_entry(make_store: Any) -> None:
    store = make_store()
    first = put(store, doc("a", "b"), by="alice")
    second = put(store, {"actions": [{"action_id": "a", "value": 2.0}, {"action_id": "c"}]},
                 by="bob", operation="put_action")
    assert first is not None and second is not None
    assert (first.version, second.version) == (1, 2)
    assert store.revision() == (2, second.sha256) and second.sha256 == digest(second.document)
    current = store.current()
    assert current is not None and current.document == second.document and current.updated_by == "bob"
    newest, oldest = store.audit(None, 10)
    assert (newest["version"], newest["by"], newest["operation"]) == (2, "bob", "put_action")
    assert newest["changes"]["added"] == ["c"] and newest["changes"]["removed"] == ["b"]
    assert newest["changes"]["changed"] == {"a": ["value"]}
    assert oldest["version"] == 1 and oldest["changes"]["added"] == ["a", "b"]
    assert oldest["at"] <= newest["at"]


def test_an_identical_document_makes_no_version(make_store: Any) -> None:
    store = make_store()
    put(store, doc("a"))
    assert put(store, doc("a")) is None
    assert store.revision() is not None and store.revision()[0] == 1  # type: ignore[index]
    assert len(store.audit(None, 10)) == 1


def test_an_import_of_the_same_content_records_the_file_without_a_version(make_store: Any) -> None:
    store = make_store()
    put(store, doc("a"))
    done = store.update(lambda _: Proposal(doc("a"), "import", "file x", imported_sha256="f1"))
    assert done is not None and done.entry is None
    current = store.current()
    assert current is not None and (current.version, current.imported_sha256) == (1, "f1")
    put(store, doc("a", "b"))  # a later change keeps the file's record
    current = store.current()
    assert current is not None and (current.version, current.imported_sha256) == (2, "f1")


def test_a_refused_change_writes_nothing(make_store: Any) -> None:
    store = make_store()
    put(store, doc("a"))

    def refuse(current: StoredCatalog | None) -> Proposal:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        store.update(refuse)
    assert store.revision()[0] == 1 and len(store.audit(None, 10)) == 1  # type: ignore[index]


def test_the_audit_trail_pages_newest_first(make_store: Any) -> None:
    store = make_store()
    for n in range(7):
        put(store, doc(*[f"a{i}" for i in range(n + 1)]))
    assert [e["version"] for e in store.audit(None, 3)] == [7, 6, 5]
    assert [e["version"] for e in store.audit(5, 3)] == [4, 3, 2]
    assert [e["version"] for e in store.audit(2, 3)] == [1]
    assert store.audit(1, 3) == []


def test_concurrent_changes_all_land(make_store: Any) -> None:
    """Eight writers (each its own store, as replicas) add one action each, at once."""
    put(make_store(), doc("seed"))
    stores = [make_store() for _ in range(8)]
    start = threading.Barrier(len(stores))

    def add(store: CatalogStore, n: int) -> None:
        start.wait()

        def change(current: StoredCatalog | None) -> Proposal:
            assert current is not None
            actions = [*current.document["actions"], {"action_id": f"w{n}"}]
            return Proposal({"actions": actions}, "put_action", f"writer{n}")

        store.update(change)

    threads = [threading.Thread(target=add, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    current = stores[0].current()
    assert current is not None and current.version == 9
    assert sorted(a["action_id"] for a in current.document["actions"]) == sorted(
        ["seed", *[f"w{n}" for n in range(8)]])
    assert [e["version"] for e in stores[0].audit(None, 20)] == list(range(9, 0, -1))


def test_changes_are_summarised_with_bounded_lists() -> None:
    before = doc(*[f"a{i}" for i in range(150)])
    after = {"actions": [{"action_id": f"b{i}"} for i in range(120)], "diversity": {"max_per_category": 1}}
    summary = changes(before, after)
    assert summary["counts"] == {"added": 120, "changed": 0, "removed": 150}
    assert len(summary["added"]) == 100 and len(summary["removed"]) == 100
    assert summary["fields"] == ["diversity"]
