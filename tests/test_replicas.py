"""Several service replicas on one store: what one replica accepts (events, items, erasures,
key revocations) the others reflect, through PostgreSQL's LISTEN/NOTIFY (or a poll of the
change log on SQLite); a dropped listener catches up from the log; a model reload swaps the
engine with no failed request."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, text
from test_serving_support import (
    DATASET,
    ToyContent,
    fresh_store,
    make_dataset,
    make_store,
    train,
    train_content,
)

from kinrec.models.base import Recommender
from kinrec.serving.app import create_app
from kinrec.serving.config import ServingConfig
from kinrec.serving.engine import Engine
from kinrec.serving.keys import KeyRing, create_key, revoke_key
from kinrec.serving.reload import fingerprint
from kinrec.store import Store
from kinrec.store import schema as s

WAIT = 10.0  # seconds a change may take to reach the other replica before a test fails


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("replicas")
    url = make_store(root)
    return {"root": root, "url": url, "content": train_content(root, url), "ease": train(root, url)}


def _reset(url: str) -> None:
    """The toy dataset freshly ingested, with none of the service's state of earlier tests."""
    with Store(url) as store:
        if DATASET in store.dataset_names():
            store.delete_dataset(DATASET)
        with store.engine.begin() as conn:
            conn.execute(delete(s.artifacts).where(s.artifacts.c.namespace.like("kinrec.%")))
        store.ingest(make_dataset())


class Replica:
    """One service (its own engine, key ring and replication listener) over ``url``."""

    def __init__(
        self, world: dict, url: str, kind: str = "content", replication: bool = True, **overrides
    ) -> None:
        cls = ToyContent if kind == "content" else Recommender
        self.config = ServingConfig(model_dir=world[kind], db=url, **overrides)
        self.engine = Engine.open(self.config, model_cls=cls)
        self.app = create_app(
            self.config,
            engine=self.engine,
            engine_factory=lambda: Engine.open(self.config, model_cls=cls),
            keyring=KeyRing(Store(url), refresh=3600.0),  # keys change by notification only
            replication=replication,
        )
        self.client = TestClient(self.app)

    def __enter__(self) -> Replica:
        self.client.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.client.__exit__(*exc)

    @property
    def replicator(self):
        return self.app.state.replicator

    def call(self, method: str, path: str, key: str, **kw) -> httpx.Response:
        return self.client.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kw)


@pytest.fixture()
def pg(world, postgres_url) -> str:
    _reset(postgres_url)
    return postgres_url


@pytest.fixture()
def keys(pg) -> dict[str, str]:
    with Store(pg) as store:
        return {r: create_key(store, f"rep-{r}", r)[1] for r in ("read", "write", "admin")}


@pytest.fixture()
def pair(world, pg, keys) -> Iterator[tuple[Replica, Replica]]:
    with Replica(world, pg) as a, Replica(world, pg, replication_reconnect_seconds=2.0) as b:
        assert a.replicator.mode == b.replicator.mode == "notify"
        assert a.replicator.connected.wait(WAIT) and b.replicator.connected.wait(WAIT)
        yield a, b


def until(check: Callable[[], bool], timeout: float = WAIT) -> float:
    """Seconds until ``check()`` holds; fails the test after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not reflected within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - start


def history_items(r: Replica, key: str, user: str) -> list[str]:
    body = r.call("GET", f"/v1/users/{user}/history", key).json()
    return [e["item_id"] for e in body["events"]]


def recs(r: Replica, key: str, user: str, **params) -> dict:
    got = r.call("GET", f"/v1/users/{user}/recommendations", key, params=params)
    assert got.status_code == 200, got.text
    return got.json()


# ------------------------------------------------------------------------------ events
def test_an_event_on_one_replica_is_reflected_by_the_other(pair, keys) -> None:
    a, b = pair
    # user 1 likes comedies; item 25 is a drama it would not otherwise have in its history
    before = [x["item_id"] for x in recs(b, keys["read"], "1", k=40)["items"]]
    r = a.call(
        "POST", "/v1/events", keys["write"], json={"user_id": "1", "item_id": "25", "type": "like"}
    )
    assert r.status_code == 201, r.text
    until(lambda: history_items(b, keys["read"], "1") == ["25"])
    after = [x["item_id"] for x in recs(b, keys["read"], "1", k=40)["items"]]
    assert "25" not in after and after != before  # B's cached list was dropped, seen excluded
    # a new user's events, a batch, and nothing applied twice on either side
    batch = {"events": [{"user_id": "rep-new", "item_id": str(i), "type": "view"} for i in (3, 4)]}
    assert a.call("POST", "/v1/events", keys["write"], json=batch).status_code == 201
    until(lambda: history_items(b, keys["read"], "rep-new") == ["4", "3"])
    assert history_items(a, keys["read"], "rep-new") == ["4", "3"]
    assert not recs(b, keys["read"], "rep-new")["cold_start"]
    assert b.replicator.status()["applied"] >= 2 and a.replicator.status()["applied"] == 0


# ------------------------------------------------------------------------------ items
def test_a_new_item_on_one_replica_is_known_and_recommendable_on_the_other(pair, keys) -> None:
    a, b = pair
    assert b.call("GET", "/v1/items/rep-n1", keys["read"]).status_code == 404
    item = {
        "item_id": "rep-n1",
        "text": {"title": "The wedding party prank"},
        "attributes": {"genre": ["Comedy"]},
    }
    assert a.call("POST", "/v1/items", keys["admin"], json=item).status_code == 201
    until(lambda: b.call("GET", "/v1/items/rep-n1", keys["read"]).status_code == 200)
    got = b.call("GET", "/v1/items/rep-n1", keys["read"]).json()
    assert got["recommendable"] and got["title"] == "The wedding party prank"
    listed = b.call("GET", "/v1/items?q=wedding party prank", keys["read"]).json()["items"]
    assert [x["item_id"] for x in listed] == ["rep-n1"]
    ranked = [x["item_id"] for x in recs(b, keys["read"], "1", k=40)["items"]]
    assert "rep-n1" in ranked  # scored by B's model, vectorised from the replicated content
    # an event on B for the item A added, then A retires it: B stops recommending it
    ev = {"user_id": "rep-x", "item_id": "rep-n1", "type": "like"}
    assert b.call("POST", "/v1/events", keys["write"], json=ev).status_code == 201
    assert a.call("DELETE", "/v1/items/rep-n1", keys["admin"]).status_code == 200
    until(lambda: b.call("GET", "/v1/items/rep-n1", keys["read"]).json()["retired"])
    ranked = [x["item_id"] for x in recs(b, keys["read"], "1", k=41)["items"]]
    assert "rep-n1" not in ranked


# ------------------------------------------------------------------------------ erasure
def test_an_erasure_on_one_replica_is_reflected_by_the_other(pair, keys) -> None:
    a, b = pair
    ev = {"user_id": "3", "item_id": "9", "type": "like"}
    assert b.call("POST", "/v1/events", keys["write"], json=ev).status_code == 201
    until(lambda: history_items(a, keys["read"], "3") == ["9"])
    assert not recs(b, keys["read"], "3")["cold_start"]
    assert a.call("DELETE", "/v1/users/3", keys["admin"]).status_code == 200
    until(lambda: not b.call("GET", "/v1/users/3/history", keys["read"]).json()["known"])
    body = recs(b, keys["read"], "3")
    assert body["cold_start"] and body["source"] == "popular"  # no cached personal list
    assert "3" not in b.call("GET", "/v1/users?prefix=3", keys["read"]).json()["users"]
    # B's model forgets the user as A's did (exactly where it can, else pending a retrain)
    erasure = a.call("GET", "/v1/info", keys["read"]).json()["erasure"]
    assert erasure["n_forgotten"] + erasure["n_pending"] == 1
    until(lambda: b.call("GET", "/v1/info", keys["read"]).json()["erasure"] == erasure)


# ------------------------------------------------------------------------------ keys
def test_a_revoked_key_is_refused_by_every_replica(pair, keys, pg) -> None:
    a, b = pair
    with Store(pg) as store:
        record, key = create_key(store, "rep-soon-revoked", "read")
    for r in (a, b):  # a new key reaches the replicas through the change log too
        until(lambda r=r: r.call("GET", "/v1/info", key).status_code == 200)
    with Store(pg) as store:
        revoke_key(store, record.id)  # what `kinrec keys revoke` does
    # the key rings re-read their keys hourly here: only the notification can refuse it now
    until(lambda: b.call("GET", "/v1/info", key).status_code == 401)
    assert a.call("GET", "/v1/info", key).status_code == 401


# ------------------------------------------------------------------------------ reconnect
def test_a_dropped_listener_catches_up_from_the_change_log(pair, keys, pg) -> None:
    a, b = pair
    pid = b.replicator._conn.info.backend_pid
    with Store(pg) as store, store.engine.begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    until(lambda: not b.replicator.connected.is_set())
    # committed and notified while B listens to nobody (it waits 2 s before reconnecting)
    ev = {"user_id": "rep-gap", "item_id": "12", "type": "click"}
    assert a.call("POST", "/v1/events", keys["write"], json=ev).status_code == 201
    item = {"item_id": "rep-gap-item", "text": {"title": "A winter letters trial"}}
    assert a.call("POST", "/v1/items", keys["admin"], json=item).status_code == 201
    assert not b.replicator.connected.is_set()
    assert history_items(b, keys["read"], "rep-gap") == []  # missed, for now
    until(lambda: history_items(b, keys["read"], "rep-gap") == ["12"])
    assert b.call("GET", "/v1/items/rep-gap-item", keys["read"]).json()["recommendable"]
    status = b.replicator.status()
    assert status["connections"] >= 2 and status["resyncs"] >= 2 and status["connected"]


# ------------------------------------------------------------------------------ reload
def test_reload_swaps_the_model_on_every_replica_without_a_failed_request(pair, keys) -> None:
    a, b = pair
    old = (a.app.state.engine, b.app.state.engine)
    statuses: list[int] = []
    posted: list[str] = []
    stop = threading.Event()

    def load(r: Replica, user: str) -> None:
        n = 0
        while not stop.is_set():
            got = r.call("GET", f"/v1/users/{user}/recommendations", keys["read"], params={"k": 5})
            statuses.append(got.status_code)
            if n % 5 == 0:  # events accepted by the engine being replaced are not lost
                item = str(1 + len(posted) % 40)
                ev = {"user_id": "rep-reload", "item_id": item, "type": "view"}
                got = r.call("POST", "/v1/events", keys["write"], json=ev)
                statuses.append(got.status_code)
                if got.status_code == 201:
                    posted.append(item)
            n += 1

    threads = [threading.Thread(target=load, args=(r, u)) for r, u in ((a, "1"), (b, "2"))]
    for t in threads:
        t.start()
    time.sleep(0.3)
    got = a.call("POST", "/v1/admin/reload", keys["admin"])
    assert got.status_code == 202 and got.json()["scope"] == "all"
    until(lambda: a.app.state.reloader.status()["generation"] == 1, 60)
    until(lambda: b.app.state.reloader.status()["generation"] == 1, 60)  # told by A
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(30)
    assert a.app.state.engine is not old[0] and b.app.state.engine is not old[1]
    assert len(statuses) > 20 and set(statuses) <= {200, 201}, sorted(set(statuses))
    for r in (a, b):
        assert r.app.state.reloader.status()["state"] == "idle"
        until(lambda r=r: len(history_items(r, keys["read"], "rep-reload")) == len(posted))
    assert a.call("GET", "/v1/admin/reload", keys["read"]).status_code == 403


def test_reload_without_replication_keeps_the_events_posted_meanwhile(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    with Store(url) as store:
        key = create_key(store, "rep", "admin")[1]
    with Replica(world, url, replication=False) as a:
        assert a.app.state.replicator is None
        old, statuses, posted = a.app.state.engine, [], []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                got = a.call("GET", "/v1/users/1/recommendations", key)
                ev = {"user_id": "solo", "item_id": str(1 + len(posted) % 40), "type": "view"}
                posted_now = a.call("POST", "/v1/events", key, json=ev)
                statuses.extend([got.status_code, posted_now.status_code])
                if posted_now.status_code == 201:
                    posted.append(posted_now.json()["ids"][0])

        thread = threading.Thread(target=load)
        thread.start()
        time.sleep(0.2)
        assert a.call("POST", "/v1/admin/reload?scope=this", key).status_code == 202
        until(lambda: a.app.state.reloader.status()["generation"] == 1, 60)
        time.sleep(0.2)
        stop.set()
        thread.join(30)
        assert a.app.state.engine is not old
        assert len(statuses) > 20 and set(statuses) <= {200, 201}, sorted(set(statuses))
        history = a.call("GET", "/v1/users/solo/history?limit=1000", key).json()["events"]
        assert sorted(e["id"] for e in history) == sorted(posted)


def test_a_failed_reload_keeps_serving_the_current_model(pair, keys) -> None:
    a, _ = pair
    serving = a.app.state.engine

    def broken() -> Engine:
        raise FileNotFoundError("model.json is missing")

    a.app.state.reloader.factory = broken
    assert a.call("POST", "/v1/admin/reload?scope=this", keys["admin"]).status_code == 202
    until(lambda: a.app.state.reloader.status()["state"] == "failed")
    status = a.call("GET", "/v1/admin/reload", keys["admin"]).json()
    assert "model.json is missing" in status["last_error"] and status["generation"] == 0
    assert a.app.state.engine is serving
    assert recs(a, keys["read"], "1")["items"]


def test_a_watched_model_folder_is_reloaded_when_a_new_model_is_published(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    with Store(url) as store:
        key = create_key(store, "rep", "admin")[1]
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    shutil.copytree(world["ease"], v1)
    shutil.copytree(world["ease"], v2)
    current = tmp_path / "current"
    current.symlink_to(v1)
    config = ServingConfig(
        model_dir=current, db=url, watch_model=True, watch_seconds=0.1, log_requests=False
    )
    app = create_app(config)
    with TestClient(app) as client:
        until(lambda: client.get("/readyz").status_code == 200, 60)
        first = app.state.engine
        before = fingerprint(current)
        tmp = tmp_path / "next"
        tmp.symlink_to(v2)
        tmp.rename(current)  # published atomically
        assert fingerprint(current) != before
        until(lambda: app.state.reloader.status()["generation"] == 1, 60)
        assert app.state.engine is not first
        got = client.get("/v1/users/1/recommendations", headers={"Authorization": f"Bearer {key}"})
        assert got.status_code == 200 and got.json()["items"]
        assert app.state.replicator.mode == "poll"  # SQLite


# ------------------------------------------------------------------------------ SQLite
def test_replicas_on_one_sqlite_store_poll_the_change_log(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    with Store(url) as store:
        key = create_key(store, "rep", "admin")[1]
    with Replica(world, url) as a, Replica(world, url) as b:
        assert b.replicator.mode == "poll"
        ev = {"user_id": "sq-1", "item_id": "5", "type": "like"}
        assert a.call("POST", "/v1/events", key, json=ev).status_code == 201
        until(lambda: history_items(b, key, "sq-1") == ["5"])
        assert b.call("DELETE", "/v1/users/sq-1", key).status_code == 200
        until(lambda: not a.call("GET", "/v1/users/sq-1/history", key).json()["known"])


def test_changes_are_logged_in_the_writing_transaction_only(world, tmp_path) -> None:
    """A write that fails (an unknown dataset) leaves no change behind to replicate."""
    from kinrec.store import changes

    url = fresh_store(world, tmp_path)
    with Store(url) as store:
        with store.engine.connect() as conn:
            start = changes.latest(conn)
        with pytest.raises(KeyError):
            store.add_events(
                "no-such-dataset", [{"user_id": "u", "item_id": "1", "type": "view"}], origin="t"
            )
        ids = store.add_events(
            DATASET, [{"user_id": "u", "item_id": "1", "type": "view"}], origin="t"
        )
        with store.engine.connect() as conn:
            logged = changes.since(conn, start, DATASET)
    assert [(c.kind, c.origin, c.data) for c in logged] == [("events", "t", {"ids": ids})]
