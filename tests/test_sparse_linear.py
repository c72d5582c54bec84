"""The sparse linear head (each item regressed on its most similar items) against the dense
EASE closed form, in EASE and in kinformer: the same weights where every item is a
neighbour, the same systems from the dense Gram matrix and from its parts, and models that
fit, score, add items and reload with a sparse head."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from test_transfer import _dataset, _new_space_item

from kinrec.data.dataset import Dataset
from kinrec.data.splits import random_split
from kinrec.evaluation.benchmark import fit_with_validation
from kinrec.evaluation.protocol import evaluate
from kinrec.models import item_item
from kinrec.models.base import Recommender
from kinrec.models.ease import collective_gram, dense_gram, ease_weights, mixed_gram
from kinrec.models.registry import create_model
from kinrec.models.sparse_linear import GramParts, neighbourhood_weights, top_neighbours

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rows(users: int = 200, items: int = 30, density: float = 0.4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((users, items)) < density).astype(np.float32))


def _symmetric(n: int, density: float, seed: int) -> sp.csr_matrix:
    m = sp.random(n, n, density=density, random_state=seed, dtype=np.float64)
    m = (m + m.T).tocsr()
    m.setdiag(0.0)
    m.eliminate_zeros()
    return m


def test_every_item_a_neighbour_is_ease_exactly() -> None:
    rows = _rows()
    gram = dense_gram(rows)
    assert gram.min() > 0  # every pair co-occurs: every other item is a neighbour
    n = gram.shape[0]
    exact = ease_weights(gram, 10.0)
    for source in (gram, GramParts(rows)):
        sparse = neighbourhood_weights(source, 10.0, n - 1).toarray()
        np.testing.assert_allclose(sparse, exact, atol=1e-6)


def test_gram_parts_give_the_systems_of_the_dense_variants() -> None:
    rows = _rows(items=40, density=0.15, seed=1)
    session, graph = _symmetric(40, 0.2, 2), _symmetric(40, 0.1, 3)
    dense = collective_gram(mixed_gram(dense_gram(rows), session, 0.3), graph, 2.0)
    parts = GramParts(rows, session, 0.3, graph, 2.0)
    np.testing.assert_array_equal(top_neighbours(dense, 8), top_neighbours(parts, 8))
    several = neighbourhood_weights(parts, [5.0, 50.0], 8, batch=3)
    for l2, from_parts in zip((5.0, 50.0), several, strict=True):
        from_dense = neighbourhood_weights(dense, l2, 8)
        np.testing.assert_allclose(from_parts.toarray(), from_dense.toarray(), atol=1e-5)
        # at most k weights per item's column, none on the diagonal
        assert from_parts.getnnz(axis=0).max() <= 8
        assert not from_parts.diagonal().any()


def test_gram_parts_systems_are_the_dense_blocks_with_padding_zero() -> None:
    rows = _rows(items=40, density=0.15, seed=7)
    session, graph = _symmetric(40, 0.2, 8), _symmetric(40, 0.1, 9)
    dense = collective_gram(mixed_gram(dense_gram(rows), session, 0.3), graph, 2.0)
    parts = GramParts(rows, session, 0.3, graph, 2.0)
    rng = np.random.default_rng(0)
    items = np.array([3, 11, 12, 30])
    nb = np.stack([rng.choice(np.delete(np.arange(40), i), 6, replace=False) for i in items])
    nb[1, 4:] = -1  # an item with fewer neighbours
    nb[2, :] = -1  # and one with none
    blocks = parts.systems(items, nb)
    for b, item in enumerate(items):
        members = np.append(nb[b], item)
        want = dense[np.ix_(np.maximum(members, 0), np.maximum(members, 0))]
        want[members < 0, :] = 0.0
        want[:, members < 0] = 0.0
        np.testing.assert_allclose(blocks[b], want, atol=1e-9)


def test_threads_give_the_same_neighbours_and_weights() -> None:
    rows = _rows(users=300, items=60, density=0.1, seed=5)
    parts = GramParts(rows, _symmetric(60, 0.1, 6), 0.2)
    one = neighbourhood_weights(parts, [5.0, 50.0], 9, batch=4)
    reported: list[int] = []
    three = neighbourhood_weights(
        parts, [5.0, 50.0], 9, batch=4, workers=3, progress=lambda done, _: reported.append(done)
    )
    assert reported == sorted(reported) and reported[-1] == 60  # in order, to the end
    for a, b in zip(one, three, strict=True):
        assert (a != b).nnz == 0
    np.testing.assert_array_equal(
        top_neighbours(parts, 9, block=7), top_neighbours(parts, 9, block=7, workers=3)
    )


def test_neighbours_are_the_most_cosine_similar_items() -> None:
    rows = _rows(items=25, density=0.2, seed=4)
    gram = dense_gram(rows)
    counts = np.diag(gram)
    cosine = gram / np.sqrt(np.outer(counts, counts))
    np.fill_diagonal(cosine, -np.inf)
    nb = top_neighbours(gram, 5)
    for item in range(25):
        picked = cosine[item, nb[item][nb[item] >= 0]]
        others = np.delete(cosine[item], np.r_[nb[item][nb[item] >= 0], item])
        assert picked.min() >= others.max()
        assert np.all(np.diff(picked) <= 0)  # best first


def test_borrowed_rows_and_columns_agree_for_dense_and_sparse_heads() -> None:
    rng = np.random.default_rng(5)
    head = rng.normal(size=(12, 12)).astype(np.float32) * (rng.random((12, 12)) < 0.4)
    np.fill_diagonal(head, 0.0)
    weights = sp.csr_matrix(rng.random((3, 12)) * (rng.random((3, 12)) < 0.5), dtype=np.float32)
    target = np.array([2, 7, 9])
    dense = item_item.with_borrowed(head.copy(), weights, target)
    sparse = item_item.with_borrowed(sp.csr_matrix(head), weights, target)
    np.testing.assert_allclose(sparse.toarray(), dense, atol=1e-6)
    again = item_item.with_borrowed(sparse, weights, target)  # idempotent
    np.testing.assert_allclose(again.toarray(), dense, atol=1e-6)


@pytest.fixture(scope="module")
def data():
    return _dataset(rated=True)


def test_sparse_ease_fits_scores_folds_in_and_reloads(data, tmp_path) -> None:
    _, split = data
    dense = create_model("ease", {"reg_weight": 5.0, "solver": "dense"}).fit(split.train)
    sparse = create_model("ease", {"reg_weight": 5.0, "solver": "sparse", "neighbours": 6})
    sparse.fit(split.train)
    assert sp.issparse(sparse.weights) and sparse.fit_info["solver"] == "sparse"
    assert sparse.weights.getnnz(axis=0).max() <= 6
    users = np.arange(split.n_users)
    scores = sparse.score(users)
    row = split.train.matrix()[3].indices
    np.testing.assert_allclose(sparse.score_history(row), scores[3], atol=1e-5)
    ks = (4,)
    exclude = [split.train, split.valid]
    got = evaluate(sparse, split.test, exclude, ks, segments=False).metrics["recall@4"]
    full = evaluate(dense, split.test, exclude, ks, segments=False).metrics["recall@4"]
    assert got >= 0.8 * full  # six neighbours of 23 keep most of what EASE finds
    assert sparse.similar_items("space0I", 3)
    sparse.save(tmp_path / "ease")
    loaded = Recommender.load(tmp_path / "ease")
    assert sp.issparse(loaded.weights)
    np.testing.assert_allclose(loaded.score(users), scores, atol=1e-6)


def test_ease_auto_goes_sparse_above_its_dense_size(data) -> None:
    _, split = data
    model = create_model("ease", {"max_dense_items": 10}).fit(split.train)
    assert model.fit_info["solver"] == "sparse" and sp.issparse(model.weights)


KINFORMER = {"max_epochs": 4, "batch_size": 64, "dim": 16, "seed": 7}


def _dense_split():
    """Interactions only, with ratings and timestamps, dense enough that every pair of
    items co-occurs in some user's training rows."""
    rng = np.random.default_rng(8)
    rows = [
        (f"u{u}", f"i{i}", float(rng.integers(1, 6)), float(u * 100 + pos))
        for u in range(120)
        for pos, i in enumerate(rng.permutation(20)[: rng.integers(12, 20)])
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return random_split(Dataset("dense", frame.astype({"user_id": object, "item_id": object})))


def test_kinformer_sparse_head_with_every_item_a_neighbour_matches_the_dense_head() -> None:
    """Where every item is a neighbour the two solvers see the same systems: the searches
    differ in order (the sparse one solves every L2 per Gram setting) but with one L2 and
    one setting they end at the same head and the same weight."""
    split = _dense_split()
    assert dense_gram(split.train.matrix()).min() > 0
    fixed = {**KINFORMER, "linear_l2": 5.0, "linear_rating_spread": 0.2,
             "linear_session_window": 0}  # fmt: skip
    dense = create_model("kinformer", {**fixed, "linear_solver": "dense"})
    sparse = create_model(
        "kinformer", {**fixed, "linear_solver": "sparse", "linear_neighbours": 1000}
    )
    fit_with_validation(dense, split)
    fit_with_validation(sparse, split)
    assert isinstance(dense.linear, np.ndarray) and sp.issparse(sparse.linear)
    assert sparse.fit_info["linear_solver"] == "sparse"
    np.testing.assert_allclose(sparse.linear.toarray(), dense.linear, atol=1e-5)
    assert sparse.linear_weight == dense.linear_weight
    users = np.arange(split.n_users)
    np.testing.assert_allclose(sparse.score(users), dense.score(users), rtol=1e-4, atol=1e-4)


def test_kinformer_sparse_head_search_scores_adds_items_and_reloads(data, tmp_path) -> None:
    _, split = data
    model = create_model(
        "kinformer", {**KINFORMER, "dense_linear_items": 10, "linear_neighbours": 5}
    )
    fit_with_validation(model, split)
    info = model.fit_info
    assert info["linear_solver"] == "sparse" and info["linear_head"].startswith("fitted, sparse")
    assert sp.issparse(model.linear)
    alone = [k for k in info["linear_search"] if k.endswith("head alone")]
    # every L2 of the grid is compared for every Gram setting
    assert len(alone) % len(model.LINEAR_L2_GRID) == 0 and len(alone) > len(model.LINEAR_L2_GRID)
    users = np.arange(split.n_users)
    scores = model.score(users)
    assert np.isfinite(scores).all()
    items = np.array([0, 3, 5])
    np.testing.assert_allclose(model.score(users[:4], items), scores[:4, items], atol=1e-5)
    model.save(tmp_path / "kin")
    loaded = Recommender.load(tmp_path / "kin")
    assert sp.issparse(loaded.linear)
    np.testing.assert_allclose(loaded.score(users), scores, atol=1e-5)
    before = len(model.item_map)
    model.add_items(["space9"], _new_space_item())
    assert sp.issparse(model.linear) and model.linear.shape == (before + 1, before + 1)
    assert model.linear[:, before].nnz > 0  # the new item borrowed its neighbours' column
    assert np.isfinite(model.score(users)[:, before]).all()


def test_kinformer_sparse_head_above_its_search_size_solves_once(data) -> None:
    """Above ``linear_search_items`` the plain Gram matrix is solved once for every L2 and
    only the head that validates best alone gets a weight."""
    _, split = data
    params = {**KINFORMER, "dense_linear_items": 10, "linear_neighbours": 5}
    model = create_model("kinformer", {**params, "linear_search_items": 10})
    fit_with_validation(model, split)
    info = model.fit_info
    assert info["linear_search_scope"] == "plain Gram matrix, best L2 alone"
    assert info["linear_session_share"] == 0 and info["linear_text_strength"] == 0
    alone = {k: v for k, v in info["linear_search"].items() if k.endswith("head alone")}
    assert len(alone) == len(model.LINEAR_L2_GRID)
    best = max(alone, key=alone.get).split(" ")[0]
    weighted = {k.split(" ")[0] for k in info["linear_search"] if " weight=" in k}
    assert weighted == {best} == {f"l2={info['linear_l2']:g}"}
    broad = create_model("kinformer", params)
    fit_with_validation(broad, split)
    assert broad.fit_info["linear_search_scope"] == "every setting"
    assert len(broad.fit_info["linear_search"]) > len(info["linear_search"])


def test_sparse_head_neighbours_shrink_above_the_search_size_to_keep_its_cost() -> None:
    from kinrec.models.transfer.config import TransferConfig

    cfg = TransferConfig()
    k, n0 = cfg.linear_neighbours, cfg.linear_search_items
    assert [cfg.head_neighbours(n) for n in (3_706, n0)] == [k, k]
    assert cfg.head_neighbours(150) == 149  # never more than the other items
    for n in (100_000, 1_000_000):
        got = cfg.head_neighbours(n)
        # the solves (k^3 per item) cost what they cost at the search size, within rounding
        assert abs(n * got**3 / (n0 * k**3) - 1) < 0.03 and got < k
    assert cfg.head_neighbours(10**8) == 50  # the floor
    assert TransferConfig(linear_neighbours=30).head_neighbours(10**6) == 30


def test_kinformer_cached_propagation_trains_on_interactions_only() -> None:
    """No item text or graph: the cached steps run the ID view alone."""
    split = _dense_split()
    model = create_model(
        "kinformer",
        {**KINFORMER, "max_epochs": 8, "propagation": "cached", "linear_head": False},
    )
    losses = []
    model.fit(split.train, side=split.dataset, progress=lambda *a: losses.append(a[3]["loss"]))
    assert model.fit_info["propagation"] == "cached"
    assert model.fit_info["views"] == {"id": True, "text": False, "kg": False}
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    assert np.isfinite(model.score(np.arange(split.n_users))).all()
