"""The web console in headless Chromium (Debian's ``chromium`` driven by Playwright): enter a
key, see the model's training curve, pick a user, see recommendations with reasons and an
explanation, like an item and watch the list change, look at an item (similar items, its
knowledge-graph neighbourhood), add a new item with every attribute field of the catalogue
and see it recommended; a screenshot of the whole console is a valid PNG."""

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

    from kinrec.plots import write_training_curve
    from kinrec.serving.app import create_app
    from kinrec.serving.config import ServingConfig
    from kinrec.serving.engine import Engine
    from kinrec.serving.keys import KeyRing
    from kinrec.store import Store
    from kinrec.training.loop import train_epochs

    root = tmp_path_factory.mktemp("console")
    url = make_store(root)
    model_dir = train_content(root, url)
    # what `kinrec train` leaves in the directory of a model trained in epochs
    scores = iter([0.1, 0.2, 0.25, 0.24, 0.22])
    fit = train_epochs(lambda e: 1.0 / e, 5, validate=lambda: next(scores), patience=2)
    assert write_training_curve(fit.fit_info(), model_dir, "toy-content") is not None
    config = ServingConfig(model_dir=model_dir, db=url, log_requests=False)
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

        # the training curve is shown (the model directory's training.png)
        page.wait_for_selector("#training-curve:not([hidden])")
        width = page.wait_for_function(
            "() => document.querySelector('#training-curve').naturalWidth"
        ).json_value()
        assert width > 300
        assert "NDCG@10" in page.locator("#training-note").inner_text()

        # the add-item form has an input for every text and attribute field of the catalogue
        page.wait_for_selector("#item-fields input[data-attr]")
        attrs = page.eval_on_selector_all(
            "#item-fields input[data-attr]", "els => els.map(e => e.dataset.attr)"
        )
        texts = page.eval_on_selector_all(
            "#item-fields input[data-text]", "els => els.map(e => e.dataset.text)"
        )
        assert attrs == ["genre", "year"] and texts == ["title"]
        page.wait_for_function(  # placeholders from catalogue items
            "() => document.querySelector(\"#item-fields input[data-attr='genre']\")"
            ".placeholder.startsWith('e.g.')"
        )

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
        page.fill("#item-fields input[data-attr='genre']", genre)
        year = str(1990 + int(liked_id) % 7)  # the liked item's year, as the toy's titles
        page.fill("#item-fields input[data-attr='year']", f" {year} ,")
        page.click("#add-item")
        page.wait_for_selector("#message:has-text('added')")
        stored = page.evaluate(
            "async key => (await fetch('/v1/items/console-new',"
            " {headers: {Authorization: 'Bearer ' + key}})).json()",
            server["key"],
        )
        assert stored["attributes"] == {"genre": [genre], "year": [year]}
        assert stored["text"] == {"title": words}
        page.wait_for_selector("#recs li[data-item='console-new']")
        assert page.locator("#recs li").first.get_attribute("data-item") == "console-new"
        assert page.locator("#recs li[data-item='console-new'] .badge").inner_text() == "new"
        assert page.locator("#recs li .badge").count() == 1  # the toy's own items are trained
        # looking at an item: similar items and its knowledge-graph neighbourhood
        page.locator("#recs li .title").nth(1).click()
        page.wait_for_selector("#similar li")
        page.wait_for_selector("#kg svg .node-label")
        look = page.locator("#item-name").inner_text()
        assert page.locator("#kg svg line.edge").count() >= 3
        assert look and look in page.locator("#kg svg").text_content()
        edges = page.locator("#kg-list li")
        assert edges.count() >= 3
        graph = page.locator("#kg-list").inner_text()
        assert "has_genre" in graph and "genre:" in graph and "directed_by" in graph
        assert "other items" in graph
        page.locator("#similar li .title").first.click()  # walk on to a similar item
        page.wait_for_function(
            "t => document.querySelector('#item-name').textContent !== t", arg=look
        )
        page.wait_for_selector("#kg svg .node-label")

        shot = tmp_path / "console.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
        assert not errors, errors
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    from PIL import Image

    with Image.open(shot) as image:
        image.verify()
        assert image.size[0] > 800 and image.size[1] > 600
