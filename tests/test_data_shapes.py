"""Every registered model on every shape of data, from interactions alone to everything.

Each model either fits, recommends, saves and loads to the same scores and serves from its
saved directory over a store holding the data, or refuses at the start of ``fit`` with a
:class:`DataRequirementError`. Which of the two is read from the model's declared
requirements and what the data holds, so a new model is covered (and judged) automatically.

The catalogue: 44 items in two themes (even items one, odd items the other), 60 users who
each like one theme. Items 40-43 have no interaction (known from the catalogue alone).
Text covers 32 items, attributes 36, knowledge-graph links 34; a text encoder stand-in maps
texts to hashed word vectors, deterministically and without loading a language model.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from functools import cache

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from kinrec.data.dataset import Dataset, Split
from kinrec.evaluation.benchmark import fit_with_validation
from kinrec.models import available_models, create_model
from kinrec.models.base import DataRequirementError, Recommender
from kinrec.serving.app import create_app
from kinrec.serving.config import ServingConfig
from kinrec.serving.engine import Engine
from kinrec.store import Store

N_USERS, N_ITEMS, N_DORMANT = 60, 40, 4
THEMES = {0: "space rocket galaxy orbit", 1: "kitchen bread pasta soup"}

SHAPES: dict[str, frozenset[str]] = {
    "interactions": frozenset(),
    "ratings": frozenset({"ratings"}),
    "timestamps": frozenset({"timestamps"}),
    "ratings+timestamps": frozenset({"ratings", "timestamps"}),
    "text": frozenset({"text"}),
    "attributes": frozenset({"attributes"}),
    "kg": frozenset({"knowledge_graph"}),
    "user-attributes": frozenset({"user_attributes"}),
    "all": frozenset(
        {"ratings", "timestamps", "text", "attributes", "knowledge_graph", "user_attributes"}
    ),
}

# Iterative models: a couple of epochs are enough to show that they train and serve.
FAST: dict[str, dict] = {
    "bpr": {"max_epochs": 2, "embedding_size": 8},
    "lightgcn": {"max_epochs": 2, "embedding_size": 8},
    "multvae": {"max_epochs": 2},
    "kinformer": {"max_epochs": 2, "dim": 16, "n_negatives": 32, "threads": 1},
}


def _item(i: int) -> str:
    return f"i{i}"


@cache
def build(shape: str) -> tuple[Dataset, Split]:
    """The dataset of one shape and its split (per user: last event test, one before valid)."""
    holds = SHAPES[shape]
    rng = np.random.default_rng(11)
    rows = []
    for u in range(N_USERS):
        pool = [i for i in range(N_ITEMS) if i % 2 == u % 2]
        for i in rng.choice(pool, size=8, replace=False):
            rows.append((f"u{u}", _item(int(i))))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id"]).astype(object)
    inter["rating"] = rng.integers(1, 6, len(inter)).astype(float)
    inter["timestamp"] = 1e9 + np.arange(len(inter), dtype=float) * 60
    if "ratings" not in holds:
        inter["rating"] = np.nan
    if "timestamps" not in holds:
        inter["timestamp"] = np.nan

    all_items = [_item(i) for i in range(N_ITEMS + N_DORMANT)]
    items = pd.DataFrame({"item_id": all_items}).astype(object)
    text_fields, attribute_fields = [], []
    if "text" in holds:
        items["title"] = [
            f"{THEMES[i % 2].split()[i % 4]} story {i}: {THEMES[i % 2]}" if i % 11 else None
            for i in range(len(all_items))
        ]
        text_fields = ["title"]
    if "attributes" in holds:
        items["genre"] = [
            ("SciFi" if i % 2 == 0 else "Cooking", f"g{i % 5}") if i % 5 else ()
            for i in range(len(all_items))
        ]
        attribute_fields = ["genre"]
    triples = links = None
    if "knowledge_graph" in holds:
        linked = [i for i in range(len(all_items)) if i % 9]
        links = pd.DataFrame(
            {"item_id": [_item(i) for i in linked], "entity_id": [f"m.{i}" for i in linked]}
        ).astype(object)
        triples = pd.DataFrame(
            {
                "head": [f"m.{i}" for i in linked],
                "relation": ["made_by"] * len(linked),
                "tail": [f"studio.{i % 2}.{i % 3}" for i in linked],
            }
        ).astype(object)
    users = None
    if "user_attributes" in holds:
        users = pd.DataFrame(
            {
                "user_id": [f"u{u}" for u in range(N_USERS)],
                "age": [str(18 + u % 5 * 10) for u in range(N_USERS)],
            }
        ).astype(object)
    side_items = bool(text_fields or attribute_fields)
    tables = {"items": items} if side_items else {}
    if triples is not None:
        tables.update(triples=triples, links=links)
    if users is not None:
        tables.update(users=users, user_attribute_fields=["age"])
    dataset = Dataset(
        f"shape-{shape}",
        inter,
        text_fields=text_fields,
        attribute_fields=attribute_fields,
        **tables,
    )
    # The catalogue holds items without interactions in every shape (an item file, or
    # items known from side tables; in real interactions-only data, items seen only in
    # the valid or test part are the same for training).
    catalogue = all_items
    order = inter.groupby("user_id").cumcount(ascending=False)
    split = Split.from_frames(
        inter[order >= 2], inter[order == 1], inter[order == 0], catalogue, dataset
    )
    return dataset, split


def hashed_embedder(texts: list[str]) -> np.ndarray:
    """Texts as sums of hashed word vectors: a deterministic stand-in for the encoder."""
    out = np.zeros((len(texts), 24), dtype=np.float32)
    for r, text in enumerate(texts):
        for word in text.lower().replace(":", " ").replace(".", " ").split():
            out[r] += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(24)
    return out


@pytest.fixture()
def encoder_loads(monkeypatch) -> list[str]:
    """Replace the text encoder by :func:`hashed_embedder`; each load is recorded."""
    loads: list[str] = []

    def factory(model_path=None, adapter_path=None):
        loads.append(str(model_path))
        return hashed_embedder

    monkeypatch.setattr("kinrec.knowledge.features.default_text_embedder", factory)
    return loads


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, str]:
    """One SQLite store per shape, holding that shape's dataset (created on first use)."""
    root = tmp_path_factory.mktemp("shapes")
    urls: dict[str, str] = {}

    def url(shape: str) -> str:
        if shape not in urls:
            urls[shape] = f"sqlite:///{root / f'{shape}.db'}"
            with Store(urls[shape]) as store:
                store.ingest(build(shape)[0])
        return urls[shape]

    return url  # type: ignore[return-value]


# ------------------------------------------------------------------------ the fixtures
@pytest.mark.parametrize("shape", SHAPES)
def test_fixture_holds_what_its_shape_says(shape) -> None:
    dataset, split = build(shape)
    holds = dataset.capabilities()
    assert {c for c, on in holds.items() if on} == SHAPES[shape]
    assert len(split.train) and len(split.valid) and len(split.test)


# ------------------------------------------------------------------------ the matrix
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", available_models())
def test_model_serves_or_refuses_at_once(name, shape, stores, encoder_loads, tmp_path) -> None:
    dataset, split = build(shape)
    model = create_model(name, FAST.get(name, {}))
    unmet = model.unmet_requirements(dataset.capabilities())
    if unmet:
        with pytest.raises(DataRequirementError, match=f"^{name} needs ") as caught:
            fit_with_validation(model, split)
        assert caught.value.requirement == unmet[0]
        assert model.user_map is None and model.seen is None  # refused before any work
        assert not encoder_loads
        return

    fit_with_validation(model, split)
    user = split.train.user_map.ids([0])[0]
    recs = model.recommend(user, k=5)
    assert len(recs) == 5 and all(np.isfinite(r.score) for r in recs)
    assert model.data_holds == dataset.capabilities()

    out = model.save(
        tmp_path / name, extra_files={"split.json": json.dumps({"dataset": dataset.name})}
    )
    loaded = Recommender.load(out)
    users = np.arange(6)
    np.testing.assert_allclose(loaded.score(users), model.score(users), rtol=1e-5, atol=1e-5)

    loads_before = len(encoder_loads)
    engine = Engine.open(ServingConfig(model_dir=out, db=stores(shape), insecure_no_auth=True))
    try:
        client = TestClient(create_app(engine=engine))
        info = client.get("/v1/info")
        assert info.status_code == 200, info.text
        r = client.get(f"/v1/users/{user}/recommendations", params={"k": 5})
        assert r.status_code == 200, r.text
        assert len(r.json()["items"]) == 5
    finally:
        engine.close()
    if name == "kinformer":
        views = info.json()["views"]
        assert views == model.fit_info["views"] == loaded.views
        if not views["text"]:  # a model without text never loads a text encoder
            assert len(encoder_loads) == loads_before == 0


# ------------------------------------------------------------------------ kinformer views
@pytest.mark.parametrize("shape", SHAPES)
def test_kinformer_turns_views_on_from_the_data(shape, encoder_loads) -> None:
    dataset, split = build(shape)
    model = create_model("kinformer", FAST["kinformer"])
    model.fit(split.train, split.valid, side=dataset)
    holds = SHAPES[shape]
    expected = {
        "id": True,
        "text": "text" in holds,
        "kg": bool(holds & {"attributes", "knowledge_graph"}),
    }
    assert model.fit_info["views"] == expected
    assert model.config.use_text is expected["text"] and model.config.use_kg is expected["kg"]
    assert model.requested_config.use_text is None  # the setting as asked stays "auto"
    reasons = model.fit_info["view_reasons"]
    assert all(reasons[v].startswith("auto: the data has") for v in ("text", "kg"))
    if not expected["text"]:
        assert not encoder_loads
        assert model.content.text.shape[1] == 0
        assert "linear_text_strength" not in model.fit_info or not model.fit_info.get(
            "linear_text_strength"
        )
    gate = model.fit_info["gate_mean"]
    assert (gate["text"] > 0) is expected["text"] and (gate["kg"] > 0) is expected["kg"]


def test_kinformer_on_interactions_only_uses_id_head_and_popularity(encoder_loads) -> None:
    from kinrec.evaluation.protocol import evaluate

    _, split = build("interactions")
    model = fit_with_validation(create_model("kinformer", FAST["kinformer"]), split)
    assert model.fit_info["views"] == {"id": True, "text": False, "kg": False}
    assert model.linear is not None  # the linear head trains without any content
    counts = np.bincount(split.train.items, minlength=split.n_items)
    # Without content, the prior is the items' own popularity.
    assert np.corrcoef(model.prior, np.log1p(counts))[0, 1] > 0.99
    result = evaluate(model, split.test, [split.train, split.valid], ks=(5,))
    assert result.metrics["recall@5"] > 0.2  # users like one theme: better than chance
    assert not encoder_loads


@pytest.mark.parametrize(
    ("setting", "shape", "needs"),
    [
        ({"use_text": True}, "interactions", "item text"),
        ({"use_text": True}, "attributes", "item text"),
        ({"use_kg": True}, "text", "item attributes or knowledge-graph"),
    ],
)
def test_kinformer_refuses_an_explicit_view_the_data_cannot_feed(
    setting, shape, needs, encoder_loads
) -> None:
    _, split = build(shape)
    model = create_model("kinformer", {**FAST["kinformer"], **setting})
    key = next(iter(setting))
    with pytest.raises(DataRequirementError, match=f"{needs}.*{key} = true") as caught:
        model.fit(split.train, split.valid, side=split.dataset)
    assert f"set {key} = false" in str(caught.value)
    assert model.user_map is None and not encoder_loads


def test_kinformer_without_ids_needs_content(encoder_loads) -> None:
    from kinrec.models.transfer import TransferConfig

    _, split = build("interactions")
    model = create_model("kinformer", {**FAST["kinformer"], "use_id": False})
    with pytest.raises(DataRequirementError, match=r"\(use_id = false\).*set use_id = true"):
        model.fit(split.train, split.valid, side=split.dataset)
    _, split = build("attributes")
    model.fit(split.train, split.valid, side=split.dataset)
    assert model.fit_info["views"] == {"id": False, "text": False, "kg": True}
    with pytest.raises(ValueError, match="no item view"):
        TransferConfig(use_id=False, use_text=False, use_kg=False)


def test_kinformer_explicit_false_turns_a_view_off(encoder_loads) -> None:
    _, split = build("all")
    params = {**FAST["kinformer"], "use_text": False}
    model = create_model("kinformer", params).fit(split.train, split.valid, side=split.dataset)
    assert model.fit_info["views"] == {"id": True, "text": False, "kg": True}
    assert model.fit_info["view_reasons"]["text"] == "use_text = false"
    assert not encoder_loads


@pytest.mark.parametrize("shape", ["interactions", "text", "all"])
def test_kinformer_adds_items_with_or_without_text(shape, encoder_loads) -> None:
    """New items are added whatever they hold; a model without text never encodes any."""
    _, split = build(shape)
    model = fit_with_validation(create_model("kinformer", FAST["kinformer"]), split)
    loads = len(encoder_loads)
    side = Dataset(
        "new",
        pd.DataFrame(columns=["user_id", "item_id", "rating", "timestamp"]),
        items=pd.DataFrame({"item_id": ["n1", "n2"], "title": ["space rocket story", None]}).astype(
            object
        ),
        text_fields=["title"],
    )
    model.add_items(["n1"], side)  # a text
    model.add_items(["n2"], side)  # no text
    scores = model.score(np.arange(3))
    assert scores.shape == (3, N_ITEMS + N_DORMANT + 2) and np.isfinite(scores).all()
    assert model.content.text.shape[1] == (24 if model.views["text"] else 0)
    if not model.views["text"]:
        assert len(encoder_loads) == loads == 0


def test_kinformer_threads_follow_the_machine() -> None:
    import os

    from kinrec.models.transfer import TransferConfig

    assert TransferConfig().threads is None
    assert TransferConfig().fit_threads() == len(os.sched_getaffinity(0))
    assert TransferConfig(threads="auto").fit_threads() == len(os.sched_getaffinity(0))
    assert TransferConfig(threads=3).fit_threads() == 3
    with pytest.raises(ValueError):
        TransferConfig(threads=0)


# ------------------------------------------------------------------------ messages
def test_refusal_says_what_is_needed_and_what_the_data_holds() -> None:
    _, split = build("ratings+timestamps")
    with pytest.raises(DataRequirementError) as caught:
        create_model("lm-knn").fit(split.train, side=split.dataset)
    message = str(caught.value)
    assert message.startswith("lm-knn needs item text: the data holds interactions with ")
    assert "ratings, timestamps" in message
    assert "kinformer" in message and "ease" in message and "lm-knn" not in message[10:]
    with pytest.raises(DataRequirementError, match="no side information was given"):
        create_model("kg-knn").fit(split.train)


@pytest.mark.parametrize("shape", ["attributes", "kg", "all"])
def test_kg_knn_ranks_by_attributes_or_the_graph(shape) -> None:
    _, split = build(shape)
    model = create_model("kg-knn").fit(split.train, side=split.dataset)
    assert model.incidence.shape[1] > 0
    # the dormant items (no interaction) are scored from their content like the others
    dormant = split.train.item_map.indices([_item(N_ITEMS + k) for k in range(N_DORMANT)])
    assert np.isfinite(model.score(np.arange(3))[:, dormant]).all()


@pytest.mark.parametrize("name", ["lm-knn", "kinformer"])
def test_items_added_later_read_as_in_training(name, monkeypatch, tmp_path) -> None:
    """A model keeps the item-text template it was trained with (saved with it), so an item
    added later through side data without that template is rendered as training items were."""
    seen_texts: list[str] = []

    def recording(texts):
        seen_texts.extend(texts)
        return hashed_embedder(texts)

    monkeypatch.setattr(
        "kinrec.knowledge.features.default_text_embedder", lambda *a, **k: recording
    )
    dataset, split = build("text")
    custom = dataclasses.replace(dataset, text_template="A tale of {title}")
    split = dataclasses.replace(split, dataset=custom)
    model = fit_with_validation(create_model(name, FAST.get(name, {})), split)
    assert model.text_template == "A tale of {title}"
    assert any(t.startswith("A tale of ") for t in seen_texts)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.text_template == "A tale of {title}"
    side = Dataset(
        "new",
        pd.DataFrame(columns=["user_id", "item_id", "rating", "timestamp"]),
        items=pd.DataFrame({"item_id": ["n1"], "title": ["space rocket"]}).astype(object),
        text_fields=["title"],
    )
    seen_texts.clear()
    loaded.add_items(["n1"], side)
    assert seen_texts == ["A tale of space rocket"]
    assert side.text_template is None  # the caller's side data is left as it was


def test_kinformer_cold_calibration_scales_with_what_it_can_use(monkeypatch) -> None:
    """Without text there is no neighbour to borrow from, so only the offset is searched (one
    temperature); past the users a validation pass scores, a seeded sample of them scores
    the search."""
    from kinrec.evaluation import protocol
    from kinrec.models.transfer import TransferRecommender

    monkeypatch.setattr(protocol, "VALIDATION_USERS", 20)
    monkeypatch.setattr(protocol, "MIN_VALIDATION_USERS", 20)
    _, split = build("interactions")
    model = fit_with_validation(create_model("kinformer", FAST["kinformer"]), split)
    searched = model.fit_info["cold_search"]
    temperatures = {key.split()[0] for key in searched}
    assert len(temperatures) == 1
    assert len(searched) == len(TransferRecommender.COLD_BOOSTS)
    assert model.fit_info["cold_search_users"] == 20
