"""Request bodies over the service's ``max_body_bytes`` get 413 before they are read: at once
when ``Content-Length`` announces them, and cut at the limit when they come chunked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_serving_support import make_store, train
from typer.testing import CliRunner

from kinrec.models.memory import MemoryLimitError
from kinrec.serving.app import create_app
from kinrec.serving.config import DEFAULT_MAX_BODY_BYTES, ServingConfig
from kinrec.serving.engine import Engine

MB = 1024 * 1024
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    root = tmp_path_factory.mktemp("limits")
    url = make_store(root)
    return Engine.open(ServingConfig(model_dir=train(root, url, "ease"), db=url))


def event(user: str = "1", item: str = "2") -> dict:
    return {"user_id": user, "item_id": item, "type": "click"}


def call(app, body_bytes: int, content_length: bool) -> tuple[int, dict, dict, int]:
    """POST ``body_bytes`` of JSON-ish bytes to /v1/events straight through ASGI, in chunks
    of 64 KiB; returns the status, headers, JSON body and how many bytes the app read."""
    headers = [(b"content-type", b"application/json")]
    if content_length:
        headers.append((b"content-length", str(body_bytes).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/events",
        "raw_path": b"/v1/events",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        size = min(CHUNK, body_bytes - read)
        read += size
        return {"type": "http.request", "body": b" " * size, "more_body": read < body_bytes}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, json.loads(body), read


def test_a_20_mb_body_with_content_length_is_refused_unread(engine) -> None:
    app = create_app(engine=engine)
    status, headers, body, read = call(app, 20 * MB, content_length=True)
    assert status == 413
    assert read == 0  # not one byte of the body was pulled
    assert body == {
        "error": f"request body larger than {DEFAULT_MAX_BODY_BYTES:,} bytes "
        "(the service's max_body_bytes)",
        "detail": [],
    }
    assert headers["connection"] == "close"


def test_a_chunked_20_mb_body_is_cut_at_the_limit(engine) -> None:
    app = create_app(engine=engine, max_body_bytes=MB)
    status, headers, body, read = call(app, 20 * MB, content_length=False)
    assert status == 413
    assert MB < read <= MB + CHUNK  # read up to the limit, never the whole 20 MB
    assert body["error"].startswith("request body larger than 1,048,576 bytes")
    assert headers["connection"] == "close"


def test_bodies_within_the_limit_are_served(engine) -> None:
    client = TestClient(create_app(engine=engine, max_body_bytes=4096))
    assert client.post("/v1/events", json=event()).status_code == 201
    batch = {"events": [event(str(u)) for u in range(1, 41)]}  # about 2.4 KB
    assert client.post("/v1/events", json=batch).status_code == 201
    big = {"events": [event(str(u % 40 + 1)) for u in range(200)]}  # about 12 KB
    res = client.post("/v1/events", json=big)
    assert res.status_code == 413
    assert res.json()["error"].startswith("request body larger than 4,096 bytes")
    assert client.get("/v1/users/1/recommendations").status_code == 200  # no body, no limit
    default = TestClient(create_app(engine=engine))
    assert default.post("/v1/events", json=big).status_code == 201


def test_the_limit_comes_before_authentication(engine, tmp_path: Path) -> None:
    config = ServingConfig(model_dir=tmp_path, db=engine.config.db, max_body_bytes=2048)
    app = create_app(config, engine_factory=lambda: engine)
    with TestClient(app) as client:
        res = client.post("/v1/events", content=b"x" * 4096)  # no key either
        assert res.status_code == 413
        assert client.post("/v1/events", json=event()).status_code == 401


def test_a_refusal_for_memory_is_a_503_naming_it(engine, monkeypatch) -> None:
    message = "kinformer add_items (1 new, 25,001 items in all) needs 2.33 GiB of memory ..."

    def refuse(*args, **kwargs):
        raise MemoryLimitError(message)

    monkeypatch.setattr(engine, "apply_item", refuse)
    client = TestClient(create_app(engine=engine))
    res = client.post("/v1/items", json={"item_id": "memory-1", "text": {"title": "A film"}})
    assert res.status_code == 503
    assert res.json() == {"error": message, "detail": []}


def test_serve_takes_max_body_bytes(monkeypatch, tmp_path: Path) -> None:
    import uvicorn

    from kinrec.serving import app as app_module
    from kinrec.serving.cli import app as serving_cli

    seen: dict = {}
    monkeypatch.setattr(app_module, "create_app", lambda config: seen.setdefault("c", config))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    res = CliRunner().invoke(
        serving_cli,
        ["serve", "--model-dir", str(tmp_path), "--max-body-bytes", "65536", "--no-access-log"],
    )
    assert res.exit_code == 0, res.output
    assert seen["c"].max_body_bytes == 65536
    assert ServingConfig(model_dir=tmp_path).max_body_bytes == DEFAULT_MAX_BODY_BYTES == MB
    res = CliRunner().invoke(serving_cli, ["serve", "--help"])
    assert "--max-body-bytes" in res.output
