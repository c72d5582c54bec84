"""Content models (LM-kNN, KG-kNN) and the transfer model on a tiny synthetic catalogue.

Items belong to two themes (space films vs cooking shows) that show in their text, their genre
attribute and their knowledge-graph links; users like one theme. Some items of each theme have
no training interaction at all (cold).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from kinrec.data.dataset import Dataset, Split
from kinrec.evaluation.benchmark import fit_with_validation
from kinrec.evaluation.protocol import evaluate
from kinrec.models.base import Recommender
from kinrec.models.registry import create_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SPACE = ["Star voyage", "Galaxy rescue", "Mars colony", "Rocket pilots", "Alien moon", "Orbit"]
KIND = {"space": "science fiction", "food": "cooking"}
FOOD = ["Pasta kitchen", "Baking bread", "Sushi chef", "Soup secrets", "Grill master", "Cake"]


def _dataset(rated: bool = False) -> tuple[Dataset, Split]:
    """The themed catalogue; ``rated``: random ratings 1-5 (else none)."""
    items = []
    for theme, titles in (("space", SPACE), ("food", FOOD)):
        for n, title in enumerate(titles):
            for part in ("I", "II"):
                items.append(
                    {
                        "item_id": f"{theme}{n}{part}",
                        "title": f"{title} {part}: a {KIND[theme]} story",
                        "genre": ("SciFi",) if theme == "space" else ("Cooking",),
                    }
                )
    items_df = pd.DataFrame(items)
    rng = np.random.default_rng(0)
    rows = []
    ids = list(items_df["item_id"])
    space = [i for i in ids if i.startswith("space")]
    food = [i for i in ids if i.startswith("food")]
    cold = {space[-1], space[-2], food[-1], food[-2]}
    for u in range(40):
        pool = [i for i in (space if u % 2 else food) if i not in cold]
        for i in rng.choice(pool, size=6, replace=False):
            rows.append({"user_id": f"u{u}", "item_id": str(i)})
        for i in cold & set(space if u % 2 else food):
            rows.append({"user_id": f"u{u}", "item_id": i})
    inter = pd.DataFrame(rows)
    inter["rating"] = np.nan
    if rated:
        inter["rating"] = rng.integers(1, 6, size=len(inter)).astype(float)
    inter["timestamp"] = np.arange(len(inter), dtype=float)
    triples = pd.DataFrame(
        {
            "head": [f"e_{i}" for i in ids],
            "relation": ["made_by"] * len(ids),
            "tail": ["studio_space" if i.startswith("space") else "studio_food" for i in ids],
        }
    )
    links = pd.DataFrame({"item_id": ids, "entity_id": [f"e_{i}" for i in ids]})
    ds = Dataset(
        "themes",
        inter,
        items=items_df,
        triples=triples,
        links=links,
        text_fields=["title"],
        attribute_fields=["genre"],
    )
    is_cold = inter["item_id"].isin(cold)
    warm = inter[~is_cold]
    first = warm.groupby("user_id").cumcount()
    train = warm[first >= 2]
    valid = warm[first == 1]
    test = pd.concat([warm[first == 0], inter[is_cold]])
    return ds, Split.from_frames(train, valid, test, item_ids=ids, dataset=ds)


def _new_space_item() -> Dataset:
    """Side data of one new item, ``space9``, described by text, genre and a KG link."""
    return Dataset(
        "new",
        pd.DataFrame(columns=["user_id", "item_id", "rating", "timestamp"]),
        items=pd.DataFrame(
            [{"item_id": "space9", "title": "Comet hunters: a science fiction story",
              "genre": ("SciFi",)}]
        ),
        triples=pd.DataFrame({"head": ["e_space9"], "relation": ["made_by"],
                              "tail": ["studio_space"]}),
        links=pd.DataFrame({"item_id": ["space9"], "entity_id": ["e_space9"]}),
        text_fields=["title"],
        attribute_fields=["genre"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Split]:
    return _dataset()


def _fit(name: str, split: Split, **params) -> Recommender:
    """Fitted on train alone: this fixture's 2-3 validation rows per user would choose the
    weights on noise (tests of choices on validation pass a validator of their own)."""
    model = create_model(name, params)
    return model.fit(split.train, side=split.dataset)


@pytest.mark.parametrize("name", ["lm-knn", "kg-knn"])
def test_content_models_rank_cold_items_of_the_users_theme(name, data) -> None:
    _, split = data
    model = _fit(name, split)
    res = evaluate(model, split.test, [split.train, split.valid], ks=(4,), train=split.train)
    # After masking a user's 6 known items, 18 remain; a random top 4 finds a given cold item
    # with probability 4/18. Ranking the user's theme first must do clearly better.
    assert res.segments["cold"]["recall@4"] > 1.5 * 4 / 18
    with pytest.raises(ValueError, match="side information"):
        create_model(name).fit(split.train)


@pytest.mark.parametrize("name", ["lm-knn", "kg-knn"])
def test_content_models_prior_choice_and_round_trip(name, data, tmp_path) -> None:
    from kinrec.evaluation.protocol import ndcg_validator

    _, split = data
    model = create_model(name).fit(
        split.train, split.valid, validator=ndcg_validator(split.train, split.valid),
        side=split.dataset,
    )  # fmt: skip
    search = model.fit_info["prior_weight_search"]
    assert model.fit_info["prior_weight"] == float(max(search, key=search.get))
    model.save(tmp_path / name)
    loaded = Recommender.load(tmp_path / name)
    np.testing.assert_allclose(loaded.score(np.arange(6)), model.score(np.arange(6)), rtol=1e-5)


TRANSFER_SWITCHES = [
    {},
    {"use_text": False},
    {"use_kg": False},
    {"use_id": False},
    {"text_adapter": "frozen"},
    {"text_adapter": "linear"},
    {"align_weight": 0.0, "cl_weight": 0.0},
    {"id_dropout": 0.0},
    {"user_embeddings": False, "n_layers": 3},
    {"similarity": "dot"},
    {"linear_head": False, "cold_neighbours": 0},
    {"linear_text_neighbours": 0},
    {"linear_session_window": 0},
    {"linear_rating_spread": 0.4},
    {"propagation": "cached", "cache_refresh_steps": 2},
    {"propagation": "cached", "use_id": False},
    {"propagation": "cached", "user_embeddings": False, "similarity": "dot"},
]


@pytest.mark.parametrize("switch", TRANSFER_SWITCHES, ids=lambda s: ",".join(s) or "default")
def test_every_transfer_switch_trains_and_lowers_the_loss(switch, data) -> None:
    _, split = data
    model = create_model("kinformer", {"max_epochs": 12, "batch_size": 64, **switch})
    losses = []
    model.fit(split.train, side=split.dataset, progress=lambda *a: losses.append(a[3]["loss"]))
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_linear_head_gram_parts_are_chosen_on_validation(data) -> None:
    _, split = data
    model = create_model("kinformer", {"max_epochs": 6, "batch_size": 64, "linear_l2": 5.0})
    fit_with_validation(model, split)
    search = model.fit_info["linear_search"]
    alone = {k: v for k, v in search.items() if k.endswith("head alone")}
    # the session share first (text and graph off), then the text strength at the chosen
    # share, then the graph strength at the chosen text strength
    tried = len(alone) + len(model.fit_info["linear_not_positive_definite"])
    grids = (model.LINEAR_SESSION_GRID, model.LINEAR_TEXT_GRID, model.LINEAR_KG_GRID)
    assert tried == sum(len(g) for g in grids) - 2
    shares = [k for k in alone if k.endswith(" text=0 kg=0 head alone")]
    assert len(shares) == len(model.LINEAR_SESSION_GRID)
    best = max(alone, key=alone.get)
    info = model.fit_info
    assert best == (
        f"l2=5 ratings=0 session={info['linear_session_share']:g} "
        f"text={info['linear_text_strength']:g} kg={info['linear_kg_strength']:g} head alone"
    )
    off = create_model(
        "kinformer",
        {"max_epochs": 6, "batch_size": 64, "linear_l2": 5.0, "linear_text_neighbours": 0,
         "linear_session_window": 0, "linear_kg_neighbours": 0},
    )  # fmt: skip
    fit_with_validation(off, split)
    assert off.fit_info["linear_text_strength"] == 0.0
    assert off.fit_info["linear_session_share"] == 0.0
    assert off.fit_info["linear_kg_strength"] == 0.0
    assert not any(k.endswith("head alone") for k in off.fit_info["linear_search"])


def test_linear_head_rating_strengths_are_chosen_and_kept(tmp_path) -> None:
    from kinrec.models.ease import RatingStrength

    _, split = _dataset(rated=True)
    params = {"max_epochs": 6, "batch_size": 64, "linear_l2": 5.0}
    model = create_model("kinformer", params)
    fit_with_validation(model, split)
    alone = [k for k in model.fit_info["linear_search"] if k.endswith("head alone")]
    # the rating spread first (time order and text off), each of the grid's
    assert [k for k in alone if k.endswith("session=0 text=0 kg=0 head alone")] == [
        f"l2=5 ratings={s:g} session=0 text=0 kg=0 head alone" for s in model.LINEAR_RATING_GRID
    ]
    assert model.fit_info["linear_rating_spread"] in model.LINEAR_RATING_GRID
    # a fixed spread: the head's input rows are the training ratings' strengths
    fixed = create_model("kinformer", {**params, "linear_rating_spread": 0.4})
    fit_with_validation(fixed, split)
    assert fixed.fit_info["linear_rating_spread"] == 0.4
    strength = fixed.rating_strength
    assert (strength.low, strength.high, strength.spread) == (1.0, 5.0, 0.4)
    assert fixed.rating_weight(5.0) == pytest.approx(1.4)
    assert fixed.rating_weight(3.0) == pytest.approx(1.0)
    user = 3
    items = fixed.seen[user].indices
    rows = split.train.users == user
    want = dict(zip(split.train.items[rows], strength(split.train.ratings[rows]), strict=True))
    np.testing.assert_allclose(fixed.history_weights(user), [want[i] for i in items])
    assert fixed.head_rows.dtype == fixed.seen.dtype == np.float32  # float32 scoring path
    # any interactions are read with the same strengths (the new-user fold-in's rows)
    np.testing.assert_array_equal(
        fixed.history_rows(split.train).toarray(), fixed.head_rows.toarray()
    )
    # the fold-in of the user's weighted history gives the head's part of the trained scores
    head = fixed.linear_weight * (fixed.history_weights(user) @ fixed.linear[items])
    trained = fixed.score(np.array([user]))[0]
    tower = fixed.user_final[user] @ fixed.item_final.T / fixed.config.temperature
    np.testing.assert_allclose(trained - tower - fixed.item_offset(), head, rtol=1e-4, atol=1e-4)
    fixed.save(tmp_path / "rated")
    loaded = Recommender.load(tmp_path / "rated")
    np.testing.assert_array_equal(loaded.history_weights(user), fixed.history_weights(user))
    np.testing.assert_allclose(loaded.score(np.arange(6)), fixed.score(np.arange(6)), rtol=1e-5)
    unrated = create_model("kinformer", {**params, "linear_rating_spread": 0.4})
    unrated.fit(_dataset()[1].train, side=split.dataset)
    assert unrated.rating_strength is None and unrated.rating_weight(5.0) is None
    assert RatingStrength.fit(np.array([4.0, 4.0]), 0.4) is None  # nothing to weigh


def test_transfer_cold_items_scores_and_round_trip(data, tmp_path) -> None:
    _, split = data
    model = _fit("kinformer", split, max_epochs=20, batch_size=64)
    cold = np.flatnonzero(np.bincount(split.train.items, minlength=split.n_items) == 0)
    scores = model.score(np.arange(split.n_users))[:, cold]
    assert np.isfinite(scores).all()
    assert np.unique(np.round(scores, 6)).size > 1
    res = evaluate(model, split.test, [split.train, split.valid], ks=(4,), train=split.train)
    assert res.segments["cold"]["recall@4"] > 4 / 24  # better than a random ranking
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.score(np.arange(5)), model.score(np.arange(5)), rtol=1e-6)
    assert loaded.recommend("u1", 5) == model.recommend("u1", 5)


def test_transfer_fold_in_and_new_items(data) -> None:
    _, split = data
    model = _fit("kinformer", split, max_epochs=10, batch_size=64)
    # A brand-new user who liked two space items: space items outrank food items.
    space = split.train.item_map.indices(["space0I", "space1I"])
    scores = model.score_history(space)
    ids = split.train.item_map.ids()
    space_mean = np.mean([s for s, i in zip(scores, ids, strict=True) if i.startswith("space")])
    food_mean = np.mean([s for s, i in zip(scores, ids, strict=True) if i.startswith("food")])
    assert space_mean > food_mean
    # A new item described only by text, genre and a KG link becomes scorable at once.
    new = _new_space_item()
    n_before = len(model.item_map)
    model.add_items(["space9"], new)
    assert len(model.item_map) == n_before + 1
    assert "space9" not in split.train.item_map  # the split's vocabulary is not the model's
    assert model.is_new[-1] and not model.is_dormant[-1]
    scores = model.score_history(space)
    assert np.isfinite(scores[-1])
    ids = model.item_map.ids()
    food_scores = [s for s, i in zip(scores, ids, strict=True) if i.startswith("food")]
    assert scores[-1] > np.median(food_scores)


def test_transfer_without_the_language_model_encodes_no_text(data, monkeypatch) -> None:
    """``use_text = false`` removes the language model from every part: no text is encoded,
    the head gets no text graph, new items borrow no neighbours and use their KG view."""
    import kinrec.models.transfer.model as transfer_model

    def no_encoder(model):
        raise AssertionError("the text encoder was asked for")

    monkeypatch.setattr(transfer_model, "model_text_embedder", no_encoder)
    _, split = data
    model = create_model("kinformer", {"max_epochs": 4, "batch_size": 64, "use_text": False})
    fit_with_validation(model, split)
    assert model.content.text.shape[1] == 0
    assert model.fit_info["linear_text_strength"] == 0.0
    new = Dataset(
        "new",
        pd.DataFrame(columns=["user_id", "item_id", "rating", "timestamp"]),
        items=pd.DataFrame([{"item_id": "space9", "title": "Comet hunters", "genre": ("SciFi",)}]),
        triples=pd.DataFrame({"head": ["e_space9"], "relation": ["made_by"],
                              "tail": ["studio_space"]}),
        links=pd.DataFrame({"item_id": ["space9"], "entity_id": ["e_space9"]}),
        text_fields=["title"],
        attribute_fields=["genre"],
    )  # fmt: skip
    model.add_items(["space9"], new)
    scores = model.score(np.arange(3))
    assert scores.shape == (3, len(model.item_map)) and np.isfinite(scores).all()


def test_transfer_cold_offset_and_temperature_are_chosen_on_validation(data) -> None:
    from kinrec.evaluation.protocol import ndcg_validator

    _, split = data
    model = create_model("kinformer", {"max_epochs": 6, "batch_size": 64})
    model.fit(
        split.train, split.valid, validator=ndcg_validator(split.train, split.valid),
        side=split.dataset,
    )  # fmt: skip
    search = model.fit_info["cold_search"]
    shares = model._graph_shares()
    assert len(search) == len(model.COLD_BOOSTS) * len(model.NEIGHBOUR_TEMPERATURES) * len(shares)
    best = max(search, key=search.get)
    assert best == model._cold_tag(model.neighbour_temperature, model.graph_share, model.cold_boost)
    raw = model.user_final[:3] @ model.item_final.T / model.config.temperature
    linear = model.linear_weight * (model.seen[:3] @ model.linear)
    shift = model.score(np.arange(3)) - raw - linear
    expected = (
        model.prior_weight * model.prior
        + model.cold_boost * model.is_new
        + model.dormant_offset * model.is_dormant
    )
    np.testing.assert_allclose(shift, np.tile(expected, (3, 1)), atol=1e-4)


def test_transfer_dormant_items_offset_is_chosen_on_validation_and_saved(data, tmp_path) -> None:
    import dataclasses

    from kinrec.evaluation.protocol import ndcg_validator

    _, split = data
    cold = np.flatnonzero(np.bincount(split.train.items, minlength=split.n_items) == 0)
    ids = split.train.item_map.ids()
    side = dataclasses.replace(split.dataset, new_items=[ids[i] for i in cold[:2]])
    model = create_model("kinformer", {"max_epochs": 4, "batch_size": 64})
    model.fit(
        split.train, split.valid, validator=ndcg_validator(split.train, split.valid), side=side
    )
    # Items without training interactions that are not declared new are dormant.
    assert sorted(np.flatnonzero(model.is_dormant)) == sorted(cold[2:])
    search = model.fit_info["dormant_offset_search"]
    scale = max(1.0, model.linear_weight / 64.0)
    assert set(search) == {str(o * scale) for o in model.DORMANT_OFFSETS}
    assert model.dormant_offset == float(max(search, key=search.get))
    # Where the head dominates (weight beyond 64), the offsets' grid grows with its weight.
    chosen_weight, model.linear_weight = model.linear_weight, 256.0
    model._choose_dormant_offset(ndcg_validator(split.train, split.valid))
    assert set(model.fit_info["dormant_offset_search"]) == {
        str(o * 4.0) for o in model.DORMANT_OFFSETS
    }
    model.linear_weight = chosen_weight
    model._choose_dormant_offset(ndcg_validator(split.train, split.valid))
    # Validation rows never name a dormant item here: pushing them down cannot lose a hit.
    assert search[str(min(model.DORMANT_OFFSETS) * scale)] >= search["0.0"]
    model.dormant_offset = -2.0
    shifted = model.score(np.arange(3))
    model.dormant_offset = 0.0
    delta = model.score(np.arange(3)) - shifted
    np.testing.assert_allclose(delta[:, cold[2:]], 2.0, atol=1e-5)
    np.testing.assert_allclose(np.delete(delta, cold[2:], axis=1), 0.0, atol=1e-5)
    model.dormant_offset = -2.0
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.dormant_offset == -2.0
    np.testing.assert_allclose(loaded.score(np.arange(3)), shifted, rtol=1e-6)
    # A configured offset is used as given, without a search.
    fixed = create_model("kinformer", {"max_epochs": 2, "batch_size": 64, "dormant_offset": -1})
    fixed.fit(
        split.train, split.valid, validator=ndcg_validator(split.train, split.valid), side=side
    )
    assert fixed.dormant_offset == -1.0 and "dormant_offset_search" not in fixed.fit_info


def test_transfer_offset_applies_to_declared_and_added_new_items_only(data) -> None:
    import dataclasses

    _, split = data
    cold = np.flatnonzero(np.bincount(split.train.items, minlength=split.n_items) == 0)
    ids = split.train.item_map.ids()
    declared = [ids[i] for i in cold[:2]]
    side = dataclasses.replace(split.dataset, new_items=declared)
    model = create_model("kinformer", {"max_epochs": 2, "batch_size": 64})
    model.fit(split.train, split.valid, side=side)
    assert sorted(np.flatnonzero(model.is_new)) == sorted(cold[:2])  # not the other cold ones
    model.cold_boost = 3.0
    before = model.score(np.arange(2))
    model.cold_boost = 0.0
    delta = before - model.score(np.arange(2))
    np.testing.assert_allclose(delta[:, cold[:2]], 3.0, atol=1e-5)
    np.testing.assert_allclose(np.delete(delta, cold[:2], axis=1), 0.0, atol=1e-5)


def test_sparse_operator_matches_dense_products_and_gradients() -> None:
    import scipy.sparse as sp
    import torch

    from kinrec.models.transfer import SparseOperator

    rng = np.random.default_rng(0)
    matrix = sp.random(7, 5, density=0.4, random_state=1, dtype=np.float32)
    dense = torch.from_numpy(matrix.toarray())
    x = torch.from_numpy(rng.normal(size=(5, 3)).astype(np.float32)).requires_grad_()
    y = torch.from_numpy(rng.normal(size=(7, 3)).astype(np.float32)).requires_grad_()
    op = SparseOperator(matrix)
    out = (op @ x).pow(2).sum() + (op.T @ y).pow(3).sum()
    out.backward()
    gx, gy = x.grad.clone(), y.grad.clone()
    x.grad, y.grad = None, None
    ((dense @ x).pow(2).sum() + (dense.T @ y).pow(3).sum()).backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gy, y.grad)


def test_transfer_new_items_borrow_their_text_neighbours(data) -> None:
    _, split = data
    model = _fit("kinformer", split, max_epochs=6, batch_size=64, cold_neighbours=3)
    cold = np.flatnonzero((model.item_degree == 0) & model.content.has_text)
    weights = model._neighbour_weights(cold)
    assert np.allclose(weights.sum(axis=1), 1.0)
    neighbours = weights.indices.reshape(len(cold), 3)
    assert (model.item_degree[neighbours] > 0).all()  # only items with interactions lend
    expected = weights @ model.item_final
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(model.item_final[cold], expected, atol=1e-5)
    # The linear head scores a new item through its neighbours' columns, never its own.
    warm = np.flatnonzero(model.item_degree > 0)
    np.testing.assert_allclose(
        model.linear[np.ix_(warm, cold)], np.asarray(weights @ model.linear[warm].T).T, atol=1e-5
    )
    assert np.abs(model.linear[np.ix_(warm, cold)]).sum() > 0


def test_transfer_neighbour_temperature_sharpens_towards_the_closest_item(data) -> None:
    _, split = data
    model = _fit("kinformer", split, max_epochs=2, batch_size=64, cold_neighbours=5)
    warm = np.flatnonzero(model.item_degree > 0)[:10]
    shares = {}  # each warm item's nearest warm item is itself: text and graph alike
    for temperature in (1.0, 0.02):
        weights = model._neighbour_weights(warm, temperature=temperature).toarray()
        assert np.allclose(weights.sum(axis=1), 1.0)
        shares[temperature] = weights[np.arange(len(warm)), warm]
    assert (shares[0.02] >= shares[1.0]).all()
    assert (shares[0.02] > 0.5).all() and (shares[1.0] < 0.5).all()


def test_transfer_is_seeded_and_deterministic(data) -> None:
    _, split = data
    params = {"max_epochs": 4, "batch_size": 64, "seed": 7}
    first, second = (_fit("kinformer", split, **params) for _ in range(2))
    np.testing.assert_array_equal(first.score(np.arange(8)), second.score(np.arange(8)))
    other = _fit("kinformer", split, **{**params, "seed": 8})
    assert not np.array_equal(first.score(np.arange(8)), other.score(np.arange(8)))


def test_cached_propagation_equals_full_right_after_a_refresh(data) -> None:
    """A cached step's batch vectors are the full propagation's, refreshed with the same
    parameters; gradients reach the batch's own layer-0 rows only."""
    import torch

    from kinrec.models.transfer import TransferConfig
    from kinrec.models.transfer.network import FusionNetwork
    from kinrec.models.transfer.propagation import (
        CachedPropagation,
        FullPropagation,
        Graph,
        make_propagation,
    )

    _, split = data
    model = _fit("kinformer", split, max_epochs=2, batch_size=64)
    content, seen = model.content, model.seen
    cfg = TransferConfig(propagation="cached", n_layers=2)
    graph = Graph(seen, cfg.n_layers)
    text = torch.from_numpy(content.text)
    net = FusionNetwork(cfg, seen.shape[1], content.text, content.entities.shape[1], seen.shape[0])
    available = np.ones((seen.shape[1], 3), dtype=bool)
    available[:, 0] = graph.item_degree > 0
    content_only = graph.item_degree == 0
    full = FullPropagation(cfg, net, graph, text, content.entities)
    cached = make_propagation(cfg, net, graph, text, content.entities, available)
    assert isinstance(cached, CachedPropagation)
    bu, rows = np.array([0, 3, 3, 7]), np.array([1, 2, 5, 20, 23])
    a = full.step(bu, rows, available, content_only)
    b = cached.step(bu, rows, available, content_only)
    torch.testing.assert_close(b.users, a.users, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.items, a.items, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.x, a.x, rtol=1e-5, atol=1e-6)
    b.items.sum().backward()
    touched = net.id_emb.weight.grad.abs().sum(dim=1).numpy() > 0
    assert set(np.flatnonzero(touched)) <= set(rows[~content_only[rows]])
    # after an optimiser step the cache is stale until the next refresh
    with torch.no_grad():
        net.id_emb.weight.add_(0.5)
    stale = cached.step(bu, rows, available, content_only).items
    fresh = full.step(bu, rows, available, content_only).items
    assert not torch.allclose(stale, fresh, atol=1e-4)
    cached.refresh()
    torch.testing.assert_close(
        cached.step(bu, rows, available, content_only).items, fresh, rtol=1e-5, atol=1e-6
    )


def test_propagation_auto_follows_the_catalogue_size(data) -> None:
    from kinrec.models.transfer import TransferConfig
    from kinrec.models.transfer.propagation import propagation_mode

    _, split = data
    n = split.n_items
    assert propagation_mode(TransferConfig(full_propagation_items=n), n) == "full"
    assert propagation_mode(TransferConfig(full_propagation_items=n - 1), n) == "cached"
    contrast = TransferConfig(full_propagation_items=0, cl_weight=0.1)
    assert propagation_mode(contrast, n) == "full"
    with pytest.raises(ValueError, match="cl_weight > 0"):
        TransferConfig(propagation="cached", cl_weight=0.1)
    model = _fit("kinformer", split, max_epochs=20, batch_size=64, full_propagation_items=n - 1)
    assert model.fit_info["propagation"] == "cached"
    assert model.fit_info["cache_refreshes"] >= 1
    res = evaluate(model, split.test, [split.train, split.valid], ks=(4,), train=split.train)
    assert res.segments["cold"]["recall@4"] > 4 / 24  # better than a random ranking
