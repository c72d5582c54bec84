"""Access control of the service: each role boundary, key expiry, rate limits (429 with
Retry-After, and recovery), keys' last use, the audit log of administrative actions (from the
command line and the service), and key records written before these existed."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select
from test_serving_support import DATASET, fresh_store, make_dataset, make_store, train
from typer.testing import CliRunner

from kinrec.cli import app as kinrec_cli
from kinrec.serving import audit, keys, persist
from kinrec.serving.app import create_app
from kinrec.serving.config import ServingConfig
from kinrec.serving.engine import Engine
from kinrec.serving.keys import (
    KeyRing,
    Rate,
    create_key,
    iso,
    last_uses,
    list_keys,
    parse_when,
    revoke_key,
    write_last_uses,
)
from kinrec.store import Store
from kinrec.store import schema as s

runner = CliRunner()
T0 = 1_800_000_000.0  # 2027-01-15


class Clock:
    """A settable clock, standing in for both wall and monotonic time."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("access")
    url = make_store(root)
    return {"url": url, "ease": train(root, url, "ease")}


class Service:
    """An app over a private store copy, its keyring on a settable clock."""

    def __init__(self, world: dict, tmp_path: Path, last_use_every: float = 60.0) -> None:
        self.url = fresh_store(world, tmp_path)
        self.clock = Clock()
        self.store = Store(self.url)
        self.engine = Engine.open(ServingConfig(model_dir=world["ease"], db=self.url))
        self.keys = {r: self.add_key(r) for r in ("read", "write", "admin")}
        self.keyring = KeyRing(
            self.store,
            refresh=0.0,
            last_use_every=last_use_every,
            clock=self.clock,
            monotonic=self.clock,
        )
        self.app = create_app(engine=self.engine, keyring=self.keyring)
        self.client = TestClient(self.app)

    def add_key(self, role: str = "read", **kw) -> str:
        return create_key(self.store, f"k-{role}", role, **kw)[1]  # type: ignore[arg-type]

    def call(self, method: str, path: str, key: str, body: object = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return self.client.request(method, path, headers=headers, json=body)

    def close(self) -> None:
        self.engine.close()
        self.store.close()


@pytest.fixture()
def svc(world, tmp_path):
    service = Service(world, tmp_path)
    yield service
    service.close()


def key_id(key: str) -> str:
    return key.split("_")[1]


def audit_rows(url: str) -> list[dict]:
    with Store(url) as store, store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(s.audit_log)).all()]


# ------------------------------------------------------------------------ role boundaries
EVENT = {"user_id": "7", "item_id": "3", "type": "view"}
CALLS = {  # what each call needs, and a body
    "read": ("GET", "/v1/users/1/recommendations", None),
    "write": ("POST", "/v1/events", EVENT),
    "admin-item-create": ("POST", "/v1/items", {"item_id": "n1", "text": {"title": "A n1"}}),
    "admin-item-update": ("PATCH", "/v1/items/4", {"text": {"title": "Renamed"}}),
    "admin-item-retire": ("DELETE", "/v1/items/5", None),
    "admin-erase": ("DELETE", "/v1/users/2", None),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("role", ["read", "write", "admin"])
def test_each_role_boundary(svc: Service, role: str, call: str) -> None:
    method, path, body = CALLS[call]
    needed = call.split("-")[0]
    allowed = keys.RANK[role] >= keys.RANK[needed]  # type: ignore[index]
    r = svc.call(method, path, svc.keys[role], body)
    if allowed:
        assert r.status_code in (200, 201), r.text
    else:
        assert r.status_code == 403, r.text
        assert r.json() == {"error": f"this key's role ({role}) cannot do this ({needed})",
                            "detail": []}  # fmt: skip
    # a refused call changed nothing
    with Store(svc.url) as store:
        stored_events = len(store.events_for_user(DATASET, "7"))
        erased = persist.artifacts(store, persist.erased_namespace(DATASET))
    assert stored_events == (1 if call == "write" and allowed else 0)
    assert bool(erased) == (call == "admin-erase" and allowed)
    admin_entries = [e for e in audit_rows(svc.url) if not e["action"].startswith("key.")]
    assert len(admin_entries) == (1 if needed == "admin" and allowed else 0)


def test_no_key_and_a_wrong_secret_are_401(svc: Service) -> None:
    r = svc.client.get("/v1/users/1/recommendations")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    wrong = f"kr_{key_id(svc.keys['admin'])}_not-the-secret"
    r = svc.call("GET", "/v1/users/1/recommendations", wrong)
    assert r.status_code == 401 and r.json()["error"] == "unknown or revoked API key"


# ------------------------------------------------------------------------ expiry
def test_a_key_works_until_it_expires_then_401_says_when(svc: Service) -> None:
    key = svc.add_key("read", expires_at=T0 + 10)
    path = "/v1/users/1/recommendations"
    assert svc.call("GET", path, key).status_code == 200
    svc.clock.advance(9.9)
    assert svc.call("GET", path, key).status_code == 200
    svc.clock.advance(0.1)
    r = svc.call("GET", path, key)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {
        "error": f"API key {key_id(key)} expired at 2027-01-15T08:00:10Z",
        "detail": [],
    }
    assert svc.keyring.role_of(key) is None
    # the expiry is only told to the key's holder: a wrong secret stays "unknown"
    r = svc.call("GET", path, f"kr_{key_id(key)}_guess")
    assert r.json()["error"] == "unknown or revoked API key"
    # other keys are untouched, and the listing says expired
    assert svc.call("GET", path, svc.keys["read"]).status_code == 200
    listed = {r.id: r for r in list_keys(svc.store)}
    assert listed[key_id(key)].status(svc.clock()) == "expired"
    assert listed[key_id(svc.keys["read"])].status(svc.clock()) == "active"


def test_a_key_that_expired_before_the_service_started(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    with Store(url) as store:
        _, key = create_key(store, "old", "admin", expires_at=time.time() - 5)
    app = create_app(ServingConfig(model_dir=world["ease"], db=url))
    with TestClient(app) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        r = client.get("/v1/info", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401 and "expired at" in r.json()["error"]


def test_expiry_and_rate_options_of_keys_create(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    before = time.time()
    res = runner.invoke(
        kinrec_cli,
        ["keys", "create", "--name", "ci", "--rate", "100/min", "--expires", "12h", "--db", url],
    )
    assert res.exit_code == 0, res.output
    assert "rate 100/min" in res.output and "expires " in res.output
    with Store(url) as store:
        (record,) = list_keys(store)
    assert record.rate == "100/min" and record.limit() == Rate(100, "min")
    assert before + 43_200 <= record.expires_at <= time.time() + 43_200
    res = runner.invoke(
        kinrec_cli, ["keys", "create", "--name", "d", "--expires", "2099-12-31", "--db", url]
    )
    assert res.exit_code == 0, res.output
    with Store(url) as store:
        assert list_keys(store)[-1].expires_at == 4_102_358_400.0  # 2099-12-31T00:00:00Z
    for option, value, message in [
        ("--expires", "2001-01-01", "is in the past"),
        ("--expires", "soon", "expected a duration"),
        ("--rate", "100", "a rate reads N/s, N/min or N/h"),
        ("--rate", "0/s", "a rate reads"),
        ("--rate", "3/fortnight", "a rate reads"),
    ]:
        bad = runner.invoke(
            kinrec_cli, ["keys", "create", "--name", "x", option, value, "--db", url]
        )
        assert bad.exit_code == 2, (option, value, bad.output)
        assert message in bad.output, bad.output
    with Store(url) as store:
        assert len(list_keys(store)) == 2  # refused keys are not stored


def test_parsing_times_and_rates() -> None:
    assert parse_when("30d", T0, ago=False) == T0 + 30 * 86_400
    assert parse_when("90m", T0, ago=True) == T0 - 5_400
    assert parse_when("2027-01-15T08:00:00", 0, ago=False) == T0
    assert parse_when("2027-01-15T09:00:00+01:00", 0, ago=False) == T0
    assert iso(T0) == "2027-01-15T08:00:00Z"
    assert Rate.parse("5/s") == Rate.parse("5 / second") == Rate(5, "s")
    assert Rate.parse("10/hour").per_second == pytest.approx(10 / 3600)
    assert str(Rate.parse("100/m")) == "100/min"


# ------------------------------------------------------------------------ rate limits
def test_over_its_rate_a_key_gets_429_with_retry_after_and_recovers(svc: Service) -> None:
    key = svc.add_key("read", rate="3/s")
    path = "/v1/users/1/recommendations"
    assert [svc.call("GET", path, key).status_code for _ in range(3)] == [200] * 3  # the burst
    r = svc.call("GET", path, key)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json() == {
        "error": f"API key {key_id(key)} is over its rate of 3/s; retry in 1 s",
        "detail": [],
    }
    assert svc.call("GET", path, key).status_code == 429  # refusals spend nothing...
    svc.clock.advance(1 / 3 + 1e-6)  # ...so one token's refill buys exactly one request
    assert svc.call("GET", path, key).status_code == 200
    assert svc.call("GET", path, key).status_code == 429
    svc.clock.advance(5.0)  # the bucket refills to its size, not beyond
    assert [svc.call("GET", path, key).status_code for _ in range(4)] == [200] * 3 + [429]
    # other keys have buckets of their own, and keys without a rate have none
    assert all(svc.call("GET", path, svc.keys["read"]).status_code == 200 for _ in range(30))
    metrics = svc.client.get("/metrics").text
    assert 'kinrec_auth_failures_total{status="429"} 4.0' in metrics


def test_retry_after_is_whole_seconds_until_the_next_request_is_allowed(svc: Service) -> None:
    key = svc.add_key("write", rate="2/min")
    event = {"user_id": "9", "item_id": "3", "type": "view"}
    assert svc.call("POST", "/v1/events", key, event).status_code == 201
    svc.clock.advance(10.0)
    assert svc.call("POST", "/v1/events", key, event).status_code == 201
    r = svc.call("POST", "/v1/events", key, event)
    # 10 s refilled 1/3 of a token; the rest takes 20 s at 2 a minute
    assert r.status_code == 429 and r.headers["retry-after"] == "20"
    svc.clock.advance(19.0)
    assert svc.call("POST", "/v1/events", key, event).headers["retry-after"] == "1"
    svc.clock.advance(1.0)
    assert svc.call("POST", "/v1/events", key, event).status_code == 201
    with Store(svc.url) as store:
        assert len(store.events_for_user(DATASET, "9")) == 3  # refused events were not stored


def test_rate_limit_in_real_time(world, tmp_path) -> None:
    """The same on the real clocks: a burst of 5, then a wait of a fifth of a second."""
    service = Service(world, tmp_path)
    service.client = TestClient(
        create_app(engine=service.engine, keyring=KeyRing(service.store, refresh=0.0))
    )
    try:
        key = service.add_key("read", rate="5/s")
        codes = [service.call("GET", "/v1/info", key).status_code for _ in range(6)]
        assert codes[:5] == [200] * 5 and codes[5] == 429
        time.sleep(0.25)
        assert service.call("GET", "/v1/info", key).status_code == 200
    finally:
        service.close()


# ------------------------------------------------------------------------ last use
def test_last_use_is_recorded_at_most_once_a_minute_per_key(svc: Service, monkeypatch) -> None:
    writes: list[dict[str, float]] = []

    def counted(store: Store, uses: dict[str, float]) -> None:
        writes.append(dict(uses))
        write_last_uses(store, uses)

    monkeypatch.setattr(keys, "write_last_uses", counted)
    read_id = key_id(svc.keys["read"])
    path = "/v1/users/1/recommendations"
    assert svc.call("GET", path, svc.keys["read"]).status_code == 200
    assert last_uses(svc.store) == {read_id: T0}
    for _ in range(20):
        svc.clock.advance(2.0)
        assert svc.call("GET", path, svc.keys["read"]).status_code == 200
    assert writes == [{read_id: T0}]  # 21 requests in 40 s: one write
    svc.clock.advance(20.0)
    assert svc.call("GET", path, svc.keys["read"]).status_code == 200
    assert last_uses(svc.store) == {read_id: T0 + 60}
    assert len(writes) == 2
    svc.clock.advance(5.0)
    svc.call("GET", path, svc.keys["read"])
    svc.keyring.flush()  # what the service does at shutdown
    assert last_uses(svc.store) == {read_id: T0 + 65}
    svc.keyring.flush()
    assert len(writes) == 3  # nothing new to write
    listed = {r.id: r for r in list_keys(svc.store)}
    assert listed[read_id].last_used_at == T0 + 65
    assert listed[key_id(svc.keys["admin"])].last_used_at is None
    # a slower process sharing the store never moves a last use back
    write_last_uses(svc.store, {read_id: T0})
    assert last_uses(svc.store)[read_id] == T0 + 65
    # a revocation is not undone by a later last-use write
    revoke_key(svc.store, read_id)
    write_last_uses(svc.store, {read_id: T0 + 100})
    assert not {r.id: r for r in list_keys(svc.store)}[read_id].active


def test_keys_list_shows_status_last_use_rate_and_expiry(svc: Service) -> None:
    expires = time.time() + 2 * 86_400
    svc.add_key("write", rate="10/s", expires_at=expires)
    svc.call("GET", "/v1/info", svc.keys["read"])
    res = runner.invoke(kinrec_cli, ["keys", "list", "--db", svc.url])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    header = lines[0].split()
    assert header[:5] == ["id", "role", "status", "created", "expires"]
    assert "last" in header and "rate" in header
    row = {line.split()[0]: line for line in lines[1:]}
    assert "2027-01-15 08:00" in row[key_id(svc.keys["read"])]  # last used, on the test clock
    limited = next(line for line in lines if "10/s" in line)
    assert time.strftime("%Y-%m-%d %H:%M", time.gmtime(expires)) in limited
    assert " active " in limited
    assert all(k not in res.output for k in svc.keys.values())
    revoke_key(svc.store, key_id(svc.keys["admin"]))
    res = runner.invoke(kinrec_cli, ["keys", "list", "--db", svc.url])
    assert " revoked " in next(x for x in res.output.splitlines() if key_id(svc.keys["admin"]) in x)


# ------------------------------------------------------------------------ old records
def test_key_records_from_before_limits_and_expiry_still_work(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    secret = "an-old-secret-of-enough-length-000000000000"
    legacy = {
        "id": "0123abcd",
        "name": "legacy",
        "role": "write",
        "created_at": 1_700_000_000.0,
        "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "revoked_at": None,
    }
    with Store(url) as store:
        persist.put_artifact(
            store, persist.KEYS_NAMESPACE, "0123abcd", json.dumps(legacy).encode(), "x/json"
        )
        (record,) = list_keys(store)
        assert (record.rate, record.expires_at, record.last_used_at) == (None, None, None)
        ring = KeyRing(store, refresh=0.0)
        for _ in range(50):
            assert ring.authenticate(f"kr_0123abcd_{secret}").role == "write"
        res = runner.invoke(kinrec_cli, ["keys", "list", "--db", url])
        assert "legacy" in res.output and " active " in res.output
        revoke_key(store, "0123abcd")  # rewrites the record in the new form
        assert ring.role_of(f"kr_0123abcd_{secret}") is None


# ------------------------------------------------------------------------ audit log
def test_cli_key_actions_are_audited_without_secrets(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    res = runner.invoke(
        kinrec_cli,
        ["keys", "create", "--name", "ops", "--role", "admin", "--rate", "5/s", "--db", url],
    )
    assert res.exit_code == 0, res.output
    key = res.output.strip().splitlines()[-1]
    kid = key_id(key)
    assert runner.invoke(kinrec_cli, ["keys", "revoke", kid, "--db", url]).exit_code == 0
    assert runner.invoke(kinrec_cli, ["keys", "revoke", kid, "--db", url]).exit_code == 0
    rows = audit_rows(url)
    assert [(r["actor"], r["action"], r["target_kind"], r["target"]) for r in rows] == [
        ("cli", "key.create", "key", kid),
        ("cli", "key.revoke", "key", kid),  # revoking twice is one action
    ]
    assert json.loads(rows[0]["detail"]) == {
        "name": "ops",
        "role": "admin",
        "rate": "5/s",
        "expires_at": None,
    }
    secret = key.split("_", 2)[2]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        dump = "\n".join(conn.iterdump())
    assert secret not in dump  # not in the audit log, nor anywhere in the store

    shown = runner.invoke(kinrec_cli, ["audit", "--db", url])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert len(lines) == 2 and "key.create" in lines[0] and "key.revoke" in lines[1]
    assert all(" cli " in line and f"key:{kid}" in line for line in lines)
    as_json = runner.invoke(kinrec_cli, ["audit", "--json", "--limit", "1", "--db", url])
    (entry,) = [json.loads(line) for line in as_json.output.splitlines()]
    assert entry["action"] == "key.revoke" and entry["actor"] == "cli"  # the newest one
    assert entry["at"].endswith("Z")
    later = runner.invoke(kinrec_cli, ["audit", "--since", "2099-01-01", "--db", url])
    assert later.exit_code == 0 and "no audit entries since 2099-01-01" in later.output
    recent = runner.invoke(kinrec_cli, ["audit", "--since", "1h", "--db", url])
    assert len(recent.output.splitlines()) == 2
    only = runner.invoke(kinrec_cli, ["audit", "--action", "key.create", "--db", url])
    assert len(only.output.splitlines()) == 1
    bad = runner.invoke(kinrec_cli, ["audit", "--since", "last week", "--db", url])
    assert bad.exit_code == 2 and "--since" in bad.output


def test_service_admin_actions_are_audited_with_the_key_id(svc: Service) -> None:
    admin = svc.keys["admin"]
    item = {"item_id": "n7", "text": {"title": "The party"}, "attributes": {"genre": ["Comedy"]}}
    assert svc.call("POST", "/v1/items", admin, item).status_code == 201
    assert svc.call("PATCH", "/v1/items/n7", admin, {"text": {"title": "A"}}).status_code == 200
    assert svc.call("DELETE", "/v1/items/n7", admin).status_code == 200
    assert svc.call("DELETE", "/v1/users/3", admin).status_code == 200
    # refused and failed admin calls write nothing
    assert svc.call("DELETE", "/v1/users/4", svc.keys["write"]).status_code == 403
    assert svc.call("DELETE", "/v1/items/nope", admin).status_code == 404
    assert svc.call("POST", "/v1/events", admin, EVENT).status_code == 201  # not an admin action
    got = [e for e in audit.entries(svc.store) if not e.action.startswith("key.")]
    digest = "sha256:" + hashlib.sha256(b"3").hexdigest()
    assert [(e.actor, e.action, e.target_kind, e.target) for e in got] == [
        (key_id(admin), "item.create", "item", "n7"),
        (key_id(admin), "item.update", "item", "n7"),
        (key_id(admin), "item.retire", "item", "n7"),
        (key_id(admin), "user.erase", "user", digest),  # the erased id itself is not kept
    ]
    assert got[1].detail == {"fields": ["title"]}
    assert got[3].detail["deleted"]["interactions"] >= 1
    assert digest.removeprefix("sha256:") in persist.artifacts(
        svc.store, persist.erased_namespace(DATASET)
    )  # the same digest the erasure record keeps
    secrets = [k.split("_", 2)[2] for k in svc.keys.values()]
    assert not any(
        sec in json.dumps(r, default=str) for r in audit_rows(svc.url) for sec in secrets
    )


def test_without_authentication_the_actor_says_so(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    engine = Engine.open(ServingConfig(model_dir=world["ease"], db=url))
    try:
        client = TestClient(create_app(engine=engine))  # no keyring: --insecure-no-auth
        assert client.delete("/v1/items/6").status_code == 200
        (entry,) = audit.entries(engine.store)
        assert (entry.actor, entry.action, entry.target) == ("insecure-no-auth", "item.retire", "6")
    finally:
        engine.close()


def test_record_refuses_secrets_and_takes_a_user_target(tmp_path) -> None:
    with Store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        with pytest.raises(ValueError, match="refusing to write an API key"):
            audit.record(store, "cli", "key.create", "key", "0123abcd",
                         {"note": ["kr_0123abcd_s3cret"]})  # fmt: skip
        with pytest.raises(ValueError, match=r"noun\.verb"):
            audit.record(store, "cli", "erase", "user", "u1")
        audit.record(store, "ab12cd34", "user.erase", "user", "u1",
                     user_target=lambda uid: f"pseudonym:{uid[::-1]}", at=T0)  # fmt: skip
        audit.record(store, "ab12cd34", "item.retire", "item", "i9", at=T0 + 10)
        (user, item) = audit.entries(store)
        assert user.target == "pseudonym:1u" and item.target == "i9"  # items stay as given
        assert [e.target for e in audit.entries(store, since=T0 + 5)] == ["i9"]
        assert [e.target for e in audit.entries(store, limit=1)] == ["i9"]


def test_stores_made_before_the_audit_log_gain_it(tmp_path) -> None:
    path = tmp_path / "before.db"
    with Store(f"sqlite:///{path}") as store:
        store.ingest(make_dataset())
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE audit_log")
    with Store(f"sqlite:///{path}") as store:
        assert "audit_log" in inspect(store.engine).get_table_names()
        assert store.dataset_names() == [DATASET]
        create_key(store, "after", "read")
        assert [e.action for e in audit.entries(store)] == ["key.create"]


def test_keys_and_audit_on_postgresql(postgres_url) -> None:
    with Store(postgres_url) as store:
        assert "audit_log" in inspect(store.engine).get_table_names()
        record, key = create_key(store, "pg-access", "admin", rate="2/s", expires_at=T0)
        clock = Clock(T0 - 60)
        ring = KeyRing(store, refresh=0.0, clock=clock, monotonic=clock)
        assert ring.authenticate(key).id == record.id
        assert last_uses(store)[record.id] == T0 - 60
        ring.authenticate(key)
        with pytest.raises(keys.RateLimitedError):
            ring.authenticate(key)
        clock.advance(60)
        with pytest.raises(keys.KeyExpiredError):
            ring.authenticate(key)
        revoke_key(store, record.id)
        mine = [e for e in audit.entries(store, limit=1000) if e.target == record.id]
        assert [e.action for e in mine] == ["key.create", "key.revoke"]
        assert {e.actor for e in mine} == {"cli"}
