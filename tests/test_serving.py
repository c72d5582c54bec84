"""The recommendation service end to end on a small catalogue: every endpoint, auth roles,
live events, new items, erasure, caching, restart recovery (in process and after kill -9),
operations endpoints, bad input and the key commands."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_serving_support import (
    DATASET,
    ToyContent,
    admin_key,
    fresh_store,
    make_dataset,
    make_store,
    train,
    train_content,
)
from typer.testing import CliRunner

from kinrec.models.base import Recommender
from kinrec.models.bpr import BPRMF
from kinrec.models.ease import EASE
from kinrec.serving import persist
from kinrec.serving.app import create_app
from kinrec.serving.cli import app as serving_cli
from kinrec.serving.config import ServingConfig
from kinrec.serving.engine import Engine
from kinrec.serving.keys import KeyRing, create_key, list_keys, revoke_key
from kinrec.serving.ranking import top_with_reserved
from kinrec.store import Store

COMEDY = {str(i) for i in range(1, 21)}
DRAMA = {str(i) for i in range(21, 41)}


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """One store with the toy catalogue, and EASE / BPR / content models trained on it."""
    root = tmp_path_factory.mktemp("serving")
    url = make_store(root)
    return {
        "root": root,
        "url": url,
        "ease": train(root, url, "ease"),
        "bpr": train(
            root, url, "bpr", {"max_epochs": 40, "embedding_size": 16, "learning_rate": 0.05}
        ),
        "content": train_content(root, url),
    }


def open_engine(world: dict, url: str, kind: str = "ease", **overrides) -> Engine:
    config = ServingConfig(model_dir=world[kind], db=url, **overrides)
    return Engine.open(config, model_cls=ToyContent if kind == "content" else Recommender)


class Service:
    """An app over an engine, with one key per role."""

    def __init__(
        self, world: dict, tmp_path: Path, kind: str = "ease", url: str | None = None, **overrides
    ) -> None:
        self.url = url or fresh_store(world, tmp_path)
        self.engine = open_engine(world, self.url, kind, **overrides)
        with Store(self.url) as store:
            self.keys = {r: create_key(store, f"k-{r}", r)[1] for r in ("read", "write", "admin")}
        self.keyring = KeyRing(Store(self.url), refresh=0.0)
        self.app = create_app(engine=self.engine, keyring=self.keyring)
        self.client = TestClient(self.app)

    def h(self, role: str = "admin") -> dict:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def get(self, path: str, role: str = "read", **kw) -> httpx.Response:
        return self.client.get(path, headers=self.h(role), **kw)

    def post(self, path: str, body, role: str = "write") -> httpx.Response:
        return self.client.post(path, json=body, headers=self.h(role))

    def recs(self, user: str, **params) -> dict:
        r = self.get(f"/v1/users/{user}/recommendations", params=params)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture()
def svc(world, tmp_path) -> Service:
    return Service(world, tmp_path)


def ids(payload: dict) -> list[str]:
    return [x["item_id"] for x in payload["items"]]


# ------------------------------------------------------------------------ recommendations
def test_recommendations_are_ranked_personal_and_exclude_history(svc: Service) -> None:
    body = svc.recs("1", k=5)
    assert body["user_id"] == "1" and not body["cold_start"]
    assert len(body["items"]) == 5
    scores = [x["score"] for x in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert set(ids(body)) <= COMEDY  # user 1 (odd) watched comedies only
    trained = {
        x["item_id"] for x in svc.get("/v1/users/1/history?limit=100").json()["trained_items"]
    }
    assert not trained & set(ids(body))
    assert all(x["reason"].startswith("because you liked") for x in body["items"])
    assert all(x["title"] for x in body["items"])
    with_seen = svc.recs("1", k=40, exclude_seen="false")
    assert trained <= set(ids(with_seen))


def test_category_filter_and_cold_start(svc: Service) -> None:
    drama = svc.recs("1", k=5, category="genre:Drama")
    assert len(drama["items"]) == 5 and set(ids(drama)) <= DRAMA
    assert set(ids(svc.recs("1", k=5, category="drama"))) <= DRAMA  # any field, any case
    assert svc.recs("1", category="Horror")["items"] == []
    cold = svc.recs("nobody-yet", k=3)
    assert cold["cold_start"] and cold["source"] == "popular" and len(cold["items"]) == 3
    assert all(x["reason"] == "popular with everyone" for x in cold["items"])


def test_a_short_history_leans_on_popularity_as_the_model_says(svc: Service) -> None:
    model = svc.engine.model
    model.history_prior_strength = 1e6  # one event: popularity all but decides
    assert svc.get("/v1/info").json()["history_prior"] == 1e6
    assert (
        svc.post("/v1/events", {"user_id": "fresh", "item_id": "25", "type": "like"}).status_code
        == 201
    )
    got = model.item_map.indices(ids(svc.recs("fresh", k=5)))
    counts = np.asarray(model.seen.sum(axis=0)).ravel()
    others = np.delete(counts, model.item_map.index("25"))
    assert sorted(counts[got], reverse=True) == sorted(others, reverse=True)[:5]


@pytest.mark.parametrize("local_store", [True, False], ids=["inline-write", "thread-write"])
def test_event_is_reflected_by_the_very_next_call(svc: Service, local_store: bool) -> None:
    svc.engine.local_store = local_store  # a networked store commits from a worker thread
    r = svc.post("/v1/events", {"user_id": "newcomer", "item_id": "25", "type": "like"})
    assert r.status_code == 201, r.text
    assert r.json()["accepted"] == 1
    body = svc.recs("newcomer", k=5)
    assert not body["cold_start"]
    assert "25" not in ids(body) and set(ids(body)) <= DRAMA
    assert any("because you liked" in x["reason"] for x in body["items"])
    before = svc.recs("1", k=3)
    top = ids(before)[0]
    r = svc.post("/v1/events", {"user_id": "1", "item_id": top, "type": "purchase"})
    assert r.status_code == 201
    after = svc.recs("1", k=3)
    assert top not in ids(after)
    history = svc.get("/v1/users/1/history").json()
    assert history["events"][0]["item_id"] == top and history["events"][0]["type"] == "purchase"


def test_batch_events_are_all_or_nothing(svc: Service) -> None:
    good = [{"user_id": "b", "item_id": "3", "type": "view", "timestamp": 1_700_000_000}]
    good.append({"user_id": "b", "item_id": "4", "type": "rating", "value": 4.5})
    r = svc.post("/v1/events", {"events": good})
    assert r.status_code == 201 and r.json()["accepted"] == 2
    a, b = r.json()["ids"]
    assert b > a
    bad = [*good, {"user_id": "b", "item_id": "no-such-item", "type": "like"}]
    r = svc.post("/v1/events", {"events": bad})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "events[2].item_id"
    with Store(svc.url) as store:
        assert len(store.events_for_user(DATASET, "b")) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u", "item_id": "1", "type": "poke"}, "body.type"),
        ({"user_id": "", "item_id": "1", "type": "like"}, "body.user_id"),
        ({"user_id": "   ", "item_id": "1", "type": "like"}, "body.user_id"),
        ({"user_id": "u", "type": "like"}, "body.item_id"),
        ({"user_id": "u", "item_id": "1", "type": "like", "timestamp": -5}, "body.timestamp"),
        ({"user_id": "u", "item_id": "1", "type": "like", "mood": "great"}, "body.mood"),
        ({"events": []}, "body.events"),
    ],
)
def test_bad_events_name_the_field(svc: Service, body: dict, field: str) -> None:
    r = svc.post("/v1/events", body)
    assert r.status_code == 422, r.text
    fields = [d["field"] for d in r.json()["detail"]]
    assert field in fields, fields
    assert field in r.json()["error"] or r.json()["detail"]


def test_malformed_requests_are_4xx_never_500(svc: Service) -> None:
    h = {**svc.h("admin"), "Content-Type": "application/json"}
    cases = [
        svc.client.post("/v1/events", content=b"{not json", headers=h),
        svc.client.post(
            "/v1/events",
            content=b'{"user_id":"u","item_id":"1","type":"like","value":NaN}',
            headers=h,
        ),
        svc.client.post(
            "/v1/events", content=b'{"user_id":"\\ud800","item_id":"1","type":"like"}', headers=h
        ),
        svc.client.post("/v1/events", content=b"[]", headers=h),
        svc.client.post("/v1/events", content=b"", headers=h),
        svc.get("/v1/users/1/recommendations?k=0"),
        svc.get("/v1/users/1/recommendations?k=100000"),
        svc.get("/v1/users/1/recommendations?k=abc"),
        svc.get("/v1/users/1/recommendations?exclude_seen=maybe"),
        svc.get("/v1/users/%00/recommendations"),
        svc.get("/v1/items/1/similar?by=astrology"),
        svc.get("/v1/items/nope/similar"),
        svc.get("/v1/users/1/recommendations/nope/explanation"),
        svc.client.patch("/v1/items/1", json={"text": {"title": 5}}, headers=h),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
        assert r.json()["error"]
    assert cases[5].json()["detail"][0]["field"] == "query.k"
    assert cases[10].json()["detail"][0]["field"] == "query.by"


# ------------------------------------------------------------------------ similar, explain
def test_similar_items_by_every_view(svc: Service) -> None:
    views = {}
    for by in ("cf", "text", "kg", "blend"):
        r = svc.get("/v1/items/1/similar", params={"k": 5, "by": by})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["by"] == by and "1" not in ids(body) and len(body["items"]) >= 1
        scores = [x["score"] for x in body["items"]]
        assert scores == sorted(scores, reverse=True)
        views[by] = ids(body)
    assert set(views["cf"]) <= COMEDY
    # item 1 is "The party story 1": the text view finds the other "party" titles
    assert set(ids(svc.get("/v1/items/1/similar?by=text&k=3").json())) == {"6", "11", "16"}
    # graph neighbours: the same director (i % 6) or the same release year (i % 7)
    kg = svc.get("/v1/items/1/similar?by=kg&k=6").json()
    assert len(kg["items"]) == 6
    assert all(int(i) % 6 == 1 or int(i) % 7 == 1 for i in ids(kg))
    assert svc.get("/v1/items/nope/similar").status_code == 404


def test_explanation_shows_liked_items_and_graph_paths(svc: Service) -> None:
    top = svc.recs("1", k=1)["items"][0]["item_id"]
    r = svc.get(f"/v1/users/1/recommendations/{top}/explanation")
    assert r.status_code == 200, r.text
    body = r.json()
    history = {
        x["item_id"] for x in svc.get("/v1/users/1/history?limit=100").json()["trained_items"]
    }
    assert body["item_id"] == top and body["score"] is not None
    assert (
        body["similar_liked_items"]
        and {x["item_id"] for x in body["similar_liked_items"]} <= history
    )
    assert body["reason"].startswith("because you liked")
    assert body["kg_paths"], body
    for path in body["kg_paths"]:
        assert path["from_item_id"] in history
        assert path["steps"][0]["head"] == f"item:{path['from_item_id']}"
        assert path["steps"][-1]["tail"] == f"item:{top}"
    assert svc.get("/v1/users/1/recommendations/nope/explanation").status_code == 404


# ------------------------------------------------------------------------ erasure, cache
def test_erasure_removes_events_state_cache_and_training_history(svc: Service) -> None:
    svc.post("/v1/events", {"user_id": "1", "item_id": "30", "type": "like"})
    personal = svc.recs("1", k=5)
    assert not personal["cold_start"]
    r = svc.client.delete("/v1/users/1", headers=svc.h("write"))
    assert r.status_code == 403
    r = svc.client.delete("/v1/users/1", headers=svc.h("admin"))
    assert r.status_code == 200, r.text
    deleted = r.json()["deleted"]
    assert deleted["events"] == 1 and deleted["interactions"] >= 1
    with Store(svc.url) as store:
        assert store.events_for_user(DATASET, "1") == []
        frame = store.interactions_frame(DATASET)
        assert "1" not in set(frame["user_id"])
    after = svc.recs("1", k=5)  # not served from the cache, not from the model's row
    assert after["cold_start"]
    assert svc.get("/v1/users/1/history").json()["known"] is False
    # the erasure outlives a restart
    again = open_engine({"ease": svc.engine.config.model_dir}, svc.url)
    assert again.recommend("1", 5)["cold_start"]


def test_cache_hits_and_invalidation_by_events_and_catalogue(svc: Service) -> None:
    cache = svc.engine.cache
    first = svc.recs("3", k=4)
    hits = cache.hits
    assert svc.recs("3", k=4) == first and cache.hits == hits + 1
    svc.recs("3", k=5)  # other parameters: another entry
    assert cache.hits == hits + 1
    svc.post("/v1/events", {"user_id": "3", "item_id": ids(first)[0], "type": "like"})
    after_event = svc.recs("3", k=4)
    assert cache.hits == hits + 1 and ids(after_event) != ids(first)
    svc.recs("5", k=4)
    retired = ids(svc.recs("5", k=4))[0]
    hits = cache.hits
    r = svc.client.delete(f"/v1/items/{retired}", headers=svc.h("admin"))
    assert r.status_code == 200 and r.json()["retired"] and not r.json()["recommendable"]
    fresh = svc.recs("5", k=4)
    assert cache.hits == hits and retired not in ids(fresh)
    assert retired not in ids(svc.get("/v1/items/1/similar?k=40").json())
    metrics = svc.client.get("/metrics").text
    assert 'kinrec_cache_total{result="hit"}' in metrics


# ------------------------------------------------------------------------ items
def test_new_item_is_recommendable_on_the_next_call(world, tmp_path) -> None:
    svc = Service(world, tmp_path, "content")
    svc.post(
        "/v1/events", {"user_id": "fan", "item_id": "5", "type": "like"}
    )  # "The laugh story 5"
    before = svc.recs("fan", k=3)
    item = {
        "item_id": "new-1",
        "text": {"title": "The laugh story"},
        "attributes": {"genre": ["Comedy"], "year": ["1995"]},
        "links": [{"relation": "directed_by", "entity_id": "d.5"}],
    }
    assert svc.post("/v1/items", item, role="write").status_code == 403
    r = svc.post("/v1/items", item, role="admin")
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["recommendable"] and created["entity_id"] == "item:new-1"
    after = svc.recs("fan", k=3)
    assert "new-1" not in ids(before) and ids(after)[0] == "new-1"
    assert [x["new"] for x in after["items"]] == [True, False, False]  # toy items all trained
    assert after["items"][0]["reason"] == "because you liked The laugh story 5"
    assert "new-1" in ids(svc.get("/v1/items/5/similar?by=cf&k=3").json())
    assert "new-1" in ids(svc.get("/v1/items/5/similar?by=text&k=5").json())
    expl = svc.get("/v1/users/fan/recommendations/new-1/explanation").json()
    assert expl["kg_paths"] and expl["kg_paths"][0]["from_item_id"] == "5"  # both by d.5
    assert (
        svc.post("/v1/events", {"user_id": "fan", "item_id": "new-1", "type": "click"}).status_code
        == 201
    )
    # PATCH: now a drama; the filter and the stored row follow
    r = svc.client.patch(
        "/v1/items/new-1", json={"attributes": {"genre": ["Drama"]}}, headers=svc.h("admin")
    )
    assert r.status_code == 200 and r.json()["attributes"]["genre"] == ["Drama"]
    assert "new-1" in ids(svc.recs("someone", k=40, category="genre:Drama"))
    with Store(svc.url) as store:
        stored = store.load_dataset(DATASET).items.set_index("item_id").loc["new-1"]
        assert tuple(stored["genre"]) == ("Drama",) and stored["title"].startswith("The laugh")
    # conflicts and bad fields
    assert svc.post("/v1/items", item, role="admin").status_code == 409
    bad = svc.post("/v1/items", {"item_id": "x", "text": {"plot": "..."}}, role="admin")
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "text.plot"
    bad = svc.post(
        "/v1/items",
        {"item_id": "x", "links": [{"relation": "sang", "entity_id": "d.1"}]},
        role="admin",
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "links[0].relation"
    assert svc.client.patch("/v1/items/ghost", json={}, headers=svc.h("admin")).status_code == 404
    # DELETE retires it
    r = svc.client.delete("/v1/items/new-1", headers=svc.h("admin"))
    assert r.status_code == 200 and r.json()["retired"]
    assert "new-1" not in ids(svc.recs("fan", k=40))


def test_model_without_content_views_stores_but_cannot_recommend_new_items(svc: Service) -> None:
    r = svc.post("/v1/items", {"item_id": "fresh", "text": {"title": "Fresh"}}, role="admin")
    assert r.status_code == 201 and r.json()["recommendable"] is False
    assert svc.get("/v1/items/fresh").json()["title"] == "Fresh"
    r = svc.post("/v1/events", {"user_id": "u", "item_id": "fresh", "type": "like"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "item_id"
    found = svc.get("/v1/items", params={"q": "party"}).json()["items"]
    assert {x["item_id"] for x in found} == {"1", "6", "11", "16"}


# ------------------------------------------------------------------------ auth
def test_auth_roles(svc: Service) -> None:
    c = svc.client
    r = c.get("/v1/users/1/recommendations")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    bad = {"Authorization": "Bearer kr_00000000_nope"}
    assert c.get("/v1/users/1/recommendations", headers=bad).status_code == 401
    assert (
        c.get("/v1/users/1/recommendations", headers={"Authorization": "Basic x"}).status_code
        == 401
    )
    assert svc.get("/v1/users/1/recommendations", role="read").status_code == 200
    event = {"user_id": "u", "item_id": "1", "type": "view"}
    assert c.post("/v1/events", json=event, headers=svc.h("read")).status_code == 403
    assert c.post("/v1/events", json=event, headers=svc.h("write")).status_code == 201
    assert c.post("/v1/events", json=event, headers=svc.h("admin")).status_code == 201
    assert c.delete("/v1/items/2", headers=svc.h("write")).status_code == 403
    assert c.delete("/v1/users/2", headers=svc.h("read")).status_code == 403
    assert c.get("/healthz").status_code == 200  # operations stay open
    with Store(svc.url) as store:
        revoke_key(store, svc.keys["read"])
        assert all("secret" not in json.dumps(k.public()) for k in list_keys(store))
        assert not any(svc.keys["admin"].split("_")[2] in str(k) for k in list_keys(store))
    assert svc.get("/v1/users/1/recommendations", role="read").status_code == 401


def test_insecure_mode_needs_the_explicit_flag(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    open_app = create_app(ServingConfig(model_dir=world["ease"], db=url, insecure_no_auth=True))
    with TestClient(open_app) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get("/v1/users/1/recommendations").status_code == 200
        assert client.get("/v1/info").json()["auth"] is False
    secured = create_app(ServingConfig(model_dir=world["ease"], db=url))
    with TestClient(secured) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get("/v1/users/1/recommendations").status_code == 401


def test_keys_commands(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    runner = CliRunner()
    res = runner.invoke(
        serving_cli, ["keys", "create", "--name", "ci", "--role", "write", "--db", url]
    )
    assert res.exit_code == 0, res.output
    key = res.output.strip().splitlines()[-1]
    assert key.startswith("kr_")
    with Store(url) as store:
        assert KeyRing(store).role_of(key) == "write"
    listed = runner.invoke(serving_cli, ["keys", "list", "--db", url])
    key_id = key.split("_")[1]
    assert key_id in listed.output and "write" in listed.output and key not in listed.output
    assert runner.invoke(serving_cli, ["keys", "revoke", key_id, "--db", url]).exit_code == 0
    with Store(url) as store:
        assert KeyRing(store).role_of(key) is None
    bad = runner.invoke(
        serving_cli, ["keys", "create", "--name", "x", "--role", "root", "--db", url]
    )
    assert bad.exit_code == 2
    assert runner.invoke(serving_cli, ["keys", "revoke", "ffffffff", "--db", url]).exit_code == 2


# ------------------------------------------------------------------------ operations
def test_health_ready_metrics_info_openapi(svc: Service) -> None:
    c = svc.client
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json() == {"status": "ready"}
    svc.recs("1")
    svc.post("/v1/events", {"user_id": "m", "item_id": "2", "type": "click"})
    text = c.get("/metrics").text
    assert (
        'kinrec_request_seconds_bucket{le="0.01",method="GET",route="/v1/users/{user_id}/recommendations"'
        in text.replace(',status="200"', "")
        or "kinrec_request_seconds_bucket" in text
    )
    assert 'route="/v1/users/{user_id}/recommendations"' in text
    assert 'kinrec_events_total{type="click"} 1.0' in text
    assert "kinrec_index_items 40.0" in text
    info = svc.get("/v1/info").json()
    assert info["model"] == "ease" and info["fold_in"] == "row" and info["index"] == "exact"
    assert set(info["similar_views"]) == {"cf", "text", "kg", "blend"}
    doc = c.get("/openapi.json").json()
    assert {"/v1/events", "/v1/items", "/v1/users/{user_id}/recommendations"} <= set(doc["paths"])
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    page = c.get("/")
    assert page.status_code == 200 and "kinrec" in page.text
    assert c.get("/static/console.js").status_code == 200


def test_readyz_while_loading(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    release = threading.Event()

    def slow_engine() -> Engine:
        release.wait(10)
        return open_engine(world, url)

    app = create_app(
        ServingConfig(model_dir=world["ease"], db=url, insecure_no_auth=True),
        engine_factory=slow_engine,
    )
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json() == {"status": "loading"}
        assert client.get("/v1/users/1/recommendations").status_code == 503
        release.set()
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get("/v1/users/1/recommendations").status_code == 200


# ------------------------------------------------------------------------ models, index
def test_fold_in_strategies_and_faiss_index(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    bpr = open_engine(world, url, "bpr")
    assert bpr.scorer.fold_in == "vector" and bpr.scorer.dot_model
    assert bpr.index is not None and bpr.index.kind == "flat"
    known = bpr.recommend("2", 5)
    assert known["source"] == "index"
    model = bpr.model
    exact = model.recommend("2", 5)
    assert ids(known) == [s.item_id for s in exact]
    events = bpr.store_events(
        [{"user_id": "nb", "item_id": i, "type": "like"} for i in ("21", "22", "23")]
    )
    bpr.apply_events(events)
    assert len(set(ids(bpr.recommend("nb", 5))) & DRAMA) >= 4
    hnsw = open_engine(world, url, "bpr", hnsw_threshold=10)
    assert hnsw.index.kind == "hnsw"
    assert set(ids(hnsw.recommend("2", 5))) == set(ids(known))

    # scores = c * dot + item bias (a popularity prior): exact retrieval through the index
    class BiasedBPR(BPRMF):
        name = "bpr"

        def score(self, users, items=None):
            bias = self.bias if items is None else self.bias[np.asarray(items)]
            return 2.0 * super().score(users, items) + bias

    biased = BiasedBPR.load(world["bpr"])
    biased.bias = np.random.default_rng(0).normal(size=len(biased.item_map)).astype(np.float32)
    served = Engine(biased, Store(url), DATASET, ServingConfig(model_dir=world["bpr"], db=url))
    assert served.scorer.dot_model and served.scorer.item_bias is not None
    assert served.scorer.dot_scale == pytest.approx(2.0, rel=1e-3)
    for user in ("2", "7", "12"):
        got = served.recommend(user, 5)
        assert got["source"] == "index"
        assert ids(got) == [x.item_id for x in biased.recommend(user, 5)]

    # EASE scores are a function of the history row: the row fold-in, equal to score_history
    # (for a new user with the graph lift and the prior: the model's score_new_user)
    ease = open_engine(world, url, "ease")
    assert ease.scorer.fold_in == "row"
    history, weights = np.array([20, 21, 22]), np.array([1.0, 0.5, 1.0], dtype=np.float32)
    none = np.zeros(0, dtype=np.int64)
    np.testing.assert_allclose(
        ease.scorer.history_scores(None, none, history, weights),
        ease.model.score_new_user(history, weights),
        rtol=1e-5,
        atol=1e-6,
    )

    class RowBlindEASE(EASE):  # scores from its own copy of the rows: the row probe fails
        name = "ease"

        def score(self, users, items=None):
            w = self.weights if items is None else self.weights[:, np.asarray(items)]
            return np.asarray(self.rows[np.asarray(users)] @ w, dtype=np.float32)

    model = RowBlindEASE.load(world["ease"])
    model.rows = model.seen.copy()
    native = Engine(model, Store(url), DATASET, ServingConfig(model_dir=world["ease"], db=url))
    assert native.scorer.fold_in == "native"
    for e in (ease, native):
        e.apply_events(events)
    assert ids(ease.recommend("nb", 5)) == ids(native.recommend("nb", 5))
    np.testing.assert_allclose(
        [x["score"] for x in ease.recommend("nb", 5)["items"]],
        [x["score"] for x in native.recommend("nb", 5)["items"]],
        rtol=1e-5,
    )


# ------------------------------------------------------------------------ restart recovery
def test_restart_restores_events_items_retirements_and_erasures(world, tmp_path) -> None:
    restart_scenario(Service(world, tmp_path, "content"), world)


def test_serving_on_postgresql(world, tmp_path, postgres_url) -> None:
    """The same events, new item, retirement, erasure and restart on a PostgreSQL store."""
    with Store(postgres_url) as store:
        if DATASET in store.dataset_names():
            store.delete_dataset(DATASET)
        store.ingest(make_dataset())
    restart_scenario(Service(world, tmp_path, "content", url=postgres_url), world)


def restart_scenario(svc: Service, world: dict) -> None:
    for body in (
        {"user_id": "x", "item_id": "7", "type": "like"},
        {"user_id": "3", "item_id": "9", "type": "rating", "value": 5},
        {"user_id": "2", "item_id": "25", "type": "view"},
    ):
        assert svc.post("/v1/events", body).status_code == 201
    item = {
        "item_id": "n1",
        "text": {"title": "The wedding party"},
        "attributes": {"genre": ["Comedy"]},
    }
    assert svc.post("/v1/items", item, role="admin").status_code == 201
    assert svc.client.delete("/v1/items/11", headers=svc.h("admin")).status_code == 200
    assert svc.client.delete("/v1/users/2", headers=svc.h("admin")).status_code == 200
    users = ["x", "3", "2", "1"]
    before = {u: svc.recs(u, k=6) for u in users}
    similar = svc.get("/v1/items/n1/similar?k=5").json()
    # a new process: model reloaded from its directory, everything else from the store
    again = Service.__new__(Service)
    again.url, again.keys = svc.url, svc.keys
    again.engine = open_engine(world, svc.url, "content")
    again.app = create_app(engine=again.engine, keyring=KeyRing(Store(svc.url), 0.0))
    again.client = TestClient(again.app)
    for u in users:
        assert again.recs(u, k=6) == before[u], u
    assert again.get("/v1/items/n1").json()["recommendable"]
    assert again.get("/v1/items/11").json()["retired"]
    assert again.get("/v1/items/n1/similar?k=5").json() == similar
    assert again.get("/v1/users/2/history").json()["known"] is False
    assert [e["item_id"] for e in again.get("/v1/users/x/history").json()["events"]] == ["7"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model_dir: Path, url: str, port: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "kinrec.serving",
        "serve",
        "--model-dir",
        str(model_dir),
        "--db",
        url,
        "--port",
        str(port),
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("service did not become ready")


def test_kill_9_loses_no_acknowledged_event(world, tmp_path) -> None:
    url = fresh_store(world, tmp_path)
    key = admin_key(url)
    port = _free_port()
    proc = _start(world["ease"], url, port)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    acked: dict[int, tuple[str, str]] = {}
    stop = threading.Event()

    def post_events() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=5) as client:
            n = 0
            while not stop.is_set():
                user, item = f"crash-{n % 5}", str(1 + n % 40)
                try:
                    r = client.post(
                        "/v1/events", json={"user_id": user, "item_id": item, "type": "like"}
                    )
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if r.status_code == 201:
                    acked[r.json()["ids"][0]] = (user, item)
                n += 1

    writer = threading.Thread(target=post_events)
    writer.start()
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    stop.set()
    writer.join(10)
    assert len(acked) > 5
    with Store(url) as store:
        assert persist.event_ids_present(store, list(acked)) == set(acked)
    proc = _start(world["ease"], url, port)
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=5) as client:
            for user in {u for u, _ in acked.values()}:
                liked = {i for u, i in acked.values() if u == user}
                hist = client.get(f"/v1/users/{user}/history", params={"limit": 1000}).json()
                assert liked <= {e["item_id"] for e in hist["events"]}
                recs = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
                assert not recs["cold_start"] and not liked & set(ids(recs))
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful shutdown
        assert proc.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        assert b"shutdown complete" in proc.stderr.read()


def test_serves_the_transfer_model_with_new_items(world, tmp_path) -> None:
    """kinformer (text + graph + collaborative views): index retrieval for trained users,
    fold-in for new ones, and new items vectorised from their content."""
    from kinrec.models.registry import get_model_class

    try:
        get_model_class("kinformer")
    except (ImportError, KeyError) as exc:
        pytest.skip(f"transfer model not available: {exc}")
    url = fresh_store(world, tmp_path)
    params = {"max_epochs": 2, "dim": 16, "n_negatives": 16, "batch_size": 256}
    # With its linear (EASE) head the scores are not dot products: exact scoring, same lists.
    with_head = Engine.open(
        ServingConfig(model_dir=train(tmp_path / "head", url, "kinformer", params), db=url)
    )
    assert with_head.model.linear is not None and not with_head.scorer.dot_model
    exact = with_head.recommend("1", 5)
    assert exact["source"] == "exact"
    assert ids(exact) == [x.item_id for x in with_head.model.recommend("1", 5)]
    model_dir = train(tmp_path, url, "kinformer", {**params, "linear_head": False})
    engine = Engine.open(ServingConfig(model_dir=model_dir, db=url))
    assert engine.model._text_embedder is not None  # loaded at start, not on the first item
    assert engine.scorer.fold_in == "native" and engine.scorer.dot_model  # dots + item prior
    via_index = engine.recommend("1", 5)
    assert via_index["source"] == "index"
    assert ids(via_index) == [x.item_id for x in engine.model.recommend("1", 5)]
    svc = Service.__new__(Service)
    svc.url, svc.engine = url, engine
    with Store(url) as store:
        svc.keys = {"admin": create_key(store, "k", "admin")[1]}
    svc.keys["read"] = svc.keys["write"] = svc.keys["admin"]
    svc.app = create_app(engine=engine, keyring=KeyRing(Store(url), 0.0))
    svc.client = TestClient(svc.app)
    assert (
        svc.post("/v1/events", {"user_id": "fan", "item_id": "5", "type": "like"}).status_code
        == 201
    )
    item = {
        "item_id": "k-new",
        "text": {"title": "The laugh story"},
        "attributes": {"genre": ["Comedy"]},
    }
    r = svc.post("/v1/items", item, role="admin")
    assert r.status_code == 201 and r.json()["recommendable"], r.text
    assert "k-new" in ids(svc.recs("fan", k=50))  # scored and ranked with the rest
    restarted = Engine.open(ServingConfig(model_dir=model_dir, db=url))
    assert restarted.recommend("fan", 10) == engine.recommend("fan", 10)
    # reserved slots: the best new item joins the index-retrieved list of user 2 (a drama
    # fan: the new comedy is not in their plain top 5), the warm items keep their order, and
    # the request's parameter overrides the server's setting
    new = engine.new_items()
    new_ids = {engine.catalog.ids[i] for i in np.flatnonzero(new)}
    assert "k-new" in new_ids and "1" not in new_ids
    plain = svc.recs("2", k=5)
    slotted = svc.recs("2", k=5, new_item_slots=1)
    assert plain["source"] == slotted["source"] == "index"
    fresh = [i for i in ids(slotted) if i in new_ids]
    assert [x["item_id"] for x in slotted["items"] if x["new"]] == fresh
    assert len(fresh) == 1 and not set(ids(plain)) & new_ids
    assert [i for i in ids(slotted) if i not in new_ids] == ids(plain)[:4]
    scores = engine.model.score(np.array([engine.model.user_map.index("2")]))[0]
    seen = set(engine.model.seen[engine.model.user_map.index("2")].indices)
    best_new = max((i for i in np.flatnonzero(new) if i not in seen), key=lambda i: scores[i])
    assert fresh == [engine.catalog.ids[best_new]]
    assert [x["score"] for x in slotted["items"]] == sorted(
        (x["score"] for x in slotted["items"]), reverse=True
    )
    server_side = Engine.open(ServingConfig(model_dir=model_dir, db=url, new_item_slots=1))
    assert ids(server_side.recommend("2", 5)) == ids(slotted)
    assert ids(server_side.recommend("2", 5, new_item_slots=0)) == ids(plain)
    info = server_side.info()
    assert info["new_item_slots"] == 1 and info["n_new_items"] == len(new_ids)


def test_a_model_that_learned_rating_weights_serves_with_them(world, tmp_path) -> None:
    """kinformer's head weighs rated rows by strength: a rating event takes the model's
    weight (not value / rating_scale), and a trained user's fold-in keeps the strengths of
    their trained items."""
    url = fresh_store(world, tmp_path)
    params = {"max_epochs": 2, "dim": 16, "n_negatives": 16, "batch_size": 256,
              "linear_rating_spread": 0.4}  # fmt: skip
    engine = Engine.open(ServingConfig(model_dir=train(tmp_path, url, "kinformer", params), db=url))
    model = engine.model
    assert model.rating_weight(5.0) == pytest.approx(1.4)
    assert engine.weight_of("rating", 5.0) == pytest.approx(1.4)
    assert engine.weight_of("rating", 1.0) == pytest.approx(0.6)
    ease = open_engine(world, url, "ease")  # no weights of its own: value / rating_scale
    assert ease.weight_of("rating", 4.0) == pytest.approx(0.8)
    user = model.user_map.index("1")
    trained = model.seen[user].indices
    strengths = model.history_weights(user)
    assert len(set(np.round(strengths, 3))) > 1  # the user's ratings differ
    # a weak event on an item the user already rated: the trained strength stays
    view = np.array([trained[0]]), np.array([0.3], dtype=np.float32)
    np.testing.assert_allclose(
        engine.scorer.history_scores(user, trained, *view),
        model.score_history(trained, strengths),
        rtol=1e-5,
        atol=1e-5,
    )


# ------------------------------------------------------------------------ reserved slots
def test_reserved_slots_hold_the_best_new_items_and_fill_when_short() -> None:
    scores = np.array([9.0, 8.0, 7.0, 1.0, 3.0, 2.0, -np.inf])
    new = np.array([False, False, False, True, True, True, True])
    assert top_with_reserved(scores, new, 3, 0).tolist() == [0, 1, 2]
    assert top_with_reserved(scores, new, 3, 1).tolist() == [0, 1, 4]  # best new: 3.0
    assert top_with_reserved(scores, new, 4, 2).tolist() == [0, 1, 4, 5]
    # more slots than usable new items: warm items fill; -inf is never picked
    assert top_with_reserved(scores, new, 6, 5).tolist() == [0, 1, 2, 4, 5, 3]
    # too few warm items: new ones fill the list
    assert top_with_reserved(scores, ~new, 5, 1).tolist() == [0, 1, 4, 5, 3]
    assert len(top_with_reserved(scores, new, 50, 2)) == 6
    with pytest.raises(ValueError, match="same length"):
        top_with_reserved(scores, new[:3], 3, 1)
