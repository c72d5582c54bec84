"""The web console in headless Chromium (Debian's ``chromium`` driven by Playwright): enter a
key, pick a user, see recommendations with reasons and an explanation, like an item and watch
the list change, add a new item by text and see it recommended."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from test_serving_support import ToyContent, admin_key, make_store, train_content

CHROMIUM = Path(os.environ.get("KINREC_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from kinrec.serving.app import create_app
    from kinrec.serving.config import ServingConfig
    from kinrec.serving.engine import Engine
    from kinrec.serving.keys import KeyRing
    from kinrec.store import Store

    root = tmp_path_factory.mktemp("console")
    url = make_store(root)
    config = ServingConfig(model_dir=train_content(root, url), db=url, log_requests=False)
    engine = Engine.open(config, model_cls=ToyContent)
    key = admin_key(url)
    app = create_app(engine=engine, keyring=KeyRing(Store(url)), config=config)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not uv.started and time.time() < deadline:
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    yield {"base": f"http://127.0.0.1:{port}", "key": key}
    uv.should_exit = True
    thread.join(10)


def test_console_end_to_end(server: dict, tmp_path: Path) -> None:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server["base"] + "/")
        page.wait_for_selector("#status:has-text('enter an API key')")
        page.fill("#api-key", server["key"])
        page.click("#save-key")
        page.wait_for_selector("#status:has-text('toy-content')")

        # a known user: recommendations with reasons, and an explanation
        page.fill("#user-input", "1")
        page.click("#load-user")
        page.wait_for_selector("#recs li")
        assert page.locator("#recs li").count() == 10
        assert "because you liked" in page.locator("#recs li .reason").first.inner_text()
        assert page.locator("#history li").count() > 0
        page.locator("#recs li .why-btn").first.click()
        page.wait_for_selector("#explanation:not([hidden]) #why-liked li")

        # a new visitor likes an item: the list changes at once
        page.fill("#user-input", "browser-fan")
        page.click("#load-user")
        page.wait_for_selector("#rec-user:has-text('new user')")
        first = page.locator("#recs li").first
        liked_id = first.get_attribute("data-item")
        liked_title = first.locator(".title").inner_text()
        first.locator(".like-btn").click()
        page.wait_for_selector(f"#events li:has-text('like {liked_title}')")
        page.wait_for_function(
            "id => ![...document.querySelectorAll('#recs li')].some(li => li.dataset.item === id)",
            arg=liked_id,
        )
        assert "new user" not in page.locator("#rec-user").inner_text()
        assert page.locator("#recs li.changed").count() > 0
        assert f"because you liked {liked_title}" in page.locator("#recs").inner_text()

        # add an item like the liked one: it is recommended on the next list
        genre = "Comedy" if int(liked_id) <= 20 else "Drama"
        words = " ".join(liked_title.split()[:-1])  # "The winter story 23" -> "The winter story"
        page.fill("#new-item-id", "console-new")
        page.fill("#new-item-title", words)
        page.fill("#new-item-attrs", genre)
        page.click("#add-item")
        page.wait_for_selector("#message:has-text('added')")
        page.wait_for_selector("#recs li[data-item='console-new']")
        assert page.locator("#recs li").first.get_attribute("data-item") == "console-new"
        assert page.locator("#recs li[data-item='console-new'] .badge").inner_text() == "new"
        assert page.locator("#recs li .badge").count() == 1  # the toy's own items are trained
        page.locator("#recs li .title").first.click()
        page.wait_for_selector("#similar li")
        page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
        browser.close()
        assert not errors, errors
