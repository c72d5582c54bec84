"""kinformer served through an index: candidates from an HNSW index over its tower and from
its linear head, scored exactly on the candidates only (the service's ``hnsw+rescore``
path), with a dense head and with a sparse one."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient

from kinrec.data.dataset import Dataset
from kinrec.data.splits import random_split
from kinrec.models.base import Ceiling, Recommender
from kinrec.models.transfer.model import TransferRecommender
from kinrec.serving import foldin
from kinrec.serving.app import create_app
from kinrec.serving.config import ServingConfig
from kinrec.serving.engine import Engine
from kinrec.serving.ranking import top_k
from kinrec.store import Event, Store

DATASET = "annflix"
N_ITEMS, N_USERS, N_GROUPS = 1500, 500, 12
RESCORE = 60  # index candidates per request besides k and the history: a few % of the items


def make_dataset(seed: int = 3) -> Dataset:
    """Items in taste groups with skewed popularity (and a few nobody chose); each user
    likes two groups and rates 15-50 of their items, in time order."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, N_GROUPS, N_ITEMS)
    popularity = rng.pareto(1.2, N_ITEMS) + 1.0
    rows = []
    for u in range(N_USERS):
        pool = np.flatnonzero(np.isin(group, rng.choice(N_GROUPS, 2, replace=False)))
        p = popularity[pool] / popularity[pool].sum()
        picked = rng.choice(pool, size=int(rng.integers(15, 50)), replace=False, p=p)
        for pos, i in enumerate(picked):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), 1e3 + u * 100 + pos))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(N_ITEMS)],
            "title": [f"Item {i}" for i in range(N_ITEMS)],
            "genre": [(f"g{g}",) for g in group],
        }
    )
    return Dataset(
        name=DATASET,
        interactions=inter.astype({"user_id": object, "item_id": object}),
        items=items.astype(object),
        text_fields=["title"],
        attribute_fields=["genre"],
    )


def balance_head(model: TransferRecommender) -> None:
    """Give the head as much weight as makes its scores spread like the tower's (a real
    mixture: neither part alone decides), a popularity prior, a dormant-item offset and a
    popularity prior for new users' short histories."""
    users = np.arange(0, len(model.user_map), 7)
    tower = model.user_final[users] @ model.item_final.T / model._scale
    head = np.asarray(model._head_input()[users] @ model.linear)
    model.linear_weight = float(tower.std() / max(head.std(), 1e-9))
    model.prior_weight = 0.5
    model.dormant_offset = -1.0
    model.history_prior_strength = 5.0  # new users' scores lean on popularity


def sparse_copy(model: TransferRecommender) -> TransferRecommender:
    """The model with its head pruned to its strongest entries, as a CSR matrix."""
    dense = np.asarray(model.linear)
    cut = np.quantile(np.abs(dense), 0.95)
    pruned = np.where(np.abs(dense) >= cut, dense, 0.0).astype(np.float32)
    out = copy.copy(model)
    out.__class__ = TransferRecommender
    out.linear = sp.csr_matrix(pruned)
    out._offset_cache = None
    return out


def densified(model: TransferRecommender) -> TransferRecommender:
    """The same model with a dense head (``TransferRecommender``'s own scoring)."""
    out = copy.copy(model)
    out.__class__ = TransferRecommender
    out.linear = model.linear.toarray() if sp.issparse(model.linear) else model.linear
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ann")
    dataset = make_dataset()
    url = f"sqlite:///{root / 'ann.db'}"
    with Store(url) as store:
        store.ingest(dataset)
    split = random_split(dataset, seed=1)
    params = {
        "use_text": False,
        "use_kg": False,
        "max_epochs": 2,
        "dim": 16,
        "n_negatives": 64,
        "batch_size": 4096,
        "linear_l2": 200.0,
        "linear_rating_spread": 0.4,
        "cold_calibration": 0.0,
    }
    model = TransferRecommender(params).fit(split.train, side=dataset)
    assert model.linear is not None and model.head_rows is not None  # rating-strength rows
    balance_head(model)
    return {"root": root, "url": url, "dense": model, "sparse": sparse_copy(model)}


def engine_for(world: dict, model: Recommender, url: str | None = None, **overrides) -> Engine:
    config = ServingConfig(model_dir=world["root"], db=url or world["url"], **overrides)
    return Engine(model, Store(config.db), DATASET, config)


def ann_engine(world: dict, model: Recommender, url: str | None = None, **overrides) -> Engine:
    overrides = {"hnsw_threshold": 100, "rescore_candidates": RESCORE, **overrides}
    return engine_for(world, model, url, **overrides)


def top_ids(payload: dict) -> list[str]:
    return [x["item_id"] for x in payload["items"]]


def some_histories(model: Recommender, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = len(model.item_map)
    for _ in range(count):
        items = rng.choice(n, size=int(rng.integers(1, 30)), replace=False)
        yield items, rng.uniform(0.2, 1.5, len(items)).astype(np.float32)


HEADS = ("dense", "sparse")


# ------------------------------------------------------------------ the model's interface
@pytest.mark.parametrize("head", HEADS)
def test_candidate_scores_are_the_model_scores(world, head: str) -> None:
    model = world[head]
    reference = densified(model)  # the full scores, with the head as a dense array
    assert model.supports_retrieval and sp.issparse(model.linear) == (head == "sparse")
    rng = np.random.default_rng(1)
    n = len(model.item_map)
    vectors, offsets = model.retrieval_vectors()
    for user in rng.choice(len(model.user_map), 12, replace=False):
        cand = rng.choice(n, 300, replace=False)  # unsorted, as any caller may give them
        want = reference.score(np.array([user]))[0]
        got = model.score_candidates(int(user), np.zeros(0, np.int64), None, cand)
        np.testing.assert_allclose(got, want[cand], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            reference.score(np.array([user]), cand)[0], want[cand], rtol=1e-5, atol=1e-5
        )
        # the tower is one inner product: query . vector + offset, the head the rest
        q = model.retrieval_query(int(user), np.zeros(0, np.int64))
        row = model._head_input()[int(user)]
        head_part = model.linear_weight * np.asarray(reference.linear[row.indices].T @ row.data)
        np.testing.assert_allclose(
            vectors[cand] @ q + offsets[cand] + head_part[cand], want[cand], rtol=1e-4, atol=1e-4
        )
    for items, weights in some_histories(model, 12):
        cand = rng.choice(n, 300, replace=False)
        want = reference.score_history(items, weights)
        got = model.score_candidates(None, items, weights, cand)
        np.testing.assert_allclose(got, want[cand], rtol=1e-5, atol=1e-5)
        q = model.retrieval_query(None, items, weights)
        head_part = model.linear_weight * (weights @ reference.linear[items])
        np.testing.assert_allclose(
            vectors[cand] @ q + offsets[cand] + head_part[cand], want[cand], rtol=1e-4, atol=1e-4
        )
    assert not len(model.score_candidates(None, np.zeros(0, np.int64), None, np.zeros(0)))


@pytest.mark.parametrize("head", HEADS)
def test_head_candidates_are_the_heads_best_items(world, head: str) -> None:
    model = world[head]
    dense = densified(model).linear
    for items, weights in some_histories(model, 8, seed=2):
        full = weights @ dense[items]
        found = model.head_candidates(None, items, weights, 40)
        assert 0 < len(found) <= 40
        assert (full[found] > 0).all()
        assert np.all(np.diff(full[found]) <= 1e-6)  # best first
        reached = full > 0
        if head == "sparse":  # only columns the history's rows reach
            reached &= np.asarray((model.linear[items] != 0).sum(axis=0)).ravel() > 0
        best = np.sort(full[reached])[::-1][: len(found)]
        np.testing.assert_allclose(np.sort(full[found])[::-1], best, rtol=1e-5, atol=1e-6)
    user = 3
    row = model._head_input()[user]
    found = model.head_candidates(user, np.zeros(0, np.int64), None, 25)
    full = row.data @ dense[row.indices]
    np.testing.assert_allclose(
        np.sort(full[found]), np.sort(full)[::-1][: len(found)][::-1], rtol=1e-5, atol=1e-6
    )


def test_a_sparse_head_row_is_read_back_only_for_the_same_row(world) -> None:
    """A request reads the same head row twice (candidates, then their scores): the second
    read is the kept row, and any other history, weights or head is computed afresh."""
    model = world["sparse"]
    dense = densified(model).linear
    items, weights = next(some_histories(model, 1, seed=5))

    def check(got, head, w) -> None:
        full = w @ np.asarray(head[items])
        np.testing.assert_allclose(got[1], full[got[0]], rtol=1e-5, atol=1e-6)
        assert set(got[0]) == set(np.flatnonzero(np.asarray((head[items] != 0).sum(axis=0))))

    first = model._sparse_head(items, weights)
    check(first, dense, weights)
    again = model._sparse_head(items.copy(), weights.copy())
    assert again[0] is first[0] and again[1] is first[1]
    check(model._sparse_head(items, 2 * weights), dense, 2 * weights)
    check(model._sparse_head(items[::-1].copy(), weights[::-1].copy()), dense, weights)
    tripled = copy.copy(model)
    tripled.linear = (model.linear * 3).tocsr()
    check(tripled._sparse_head(items, weights), 3 * dense, weights)
    check(model._sparse_head(items, weights), dense, weights)


def test_the_default_interface_scores_everything_and_declares_nothing(world) -> None:
    from kinrec.models.ease import EASE

    assert not EASE().supports_retrieval and EASE().retrieval_vectors() is None
    assert not len(EASE().head_candidates(None, np.arange(3), None, 10))
    model = world["dense"]
    cand = np.array([7, 3, 1200, 42])
    items, weights = next(some_histories(model, 1, seed=9))
    for user, hist, w in ((4, np.zeros(0, np.int64), None), (None, items, weights)):
        np.testing.assert_allclose(
            Recommender.score_candidates(model, user, hist, w, cand),
            model.score_candidates(user, hist, w, cand),
            rtol=1e-5,
            atol=1e-5,
        )


def test_subset_blend_equals_the_full_blend_given_every_item(world) -> None:
    model, _ = with_blank_items(world["dense"])  # many items without a train count
    model.history_prior_strength = 3.0
    items, weights = next(some_histories(model, 1, seed=5))
    scores = model.score_history(items, weights)
    everything = np.arange(len(scores))
    full = model.blend_history_prior(scores, len(items))
    # however much of the top is taken as it is (above a ceiling), the rest sampled
    best = np.sort(scores)[::-1]
    popular = np.argsort(-np.asarray(model.seen.sum(axis=0)).ravel(), kind="stable")
    for ceiling in (None, Ceiling(-np.inf, None), Ceiling(float(best[40]), int(popular[30]))):
        subset = model.blend_history_prior_subset(
            scores, everything, len(items), np.ones_like(everything), ceiling
        )
        np.testing.assert_allclose(subset, full, rtol=1e-10)
    # a part given whole (lifted far above the rest) and the rest sampled: the part's share
    # of the spread is exact, so the blend matches where the sample alone misses it
    lifted = np.argsort(scores)[:8]  # the least-scored items, lifted to the top
    scores = scores.copy()
    scores[lifted] += 30 * scores.std()
    full = model.blend_history_prior(scores, len(items))
    sample = np.zeros(len(scores), dtype=bool)
    sample[np.random.default_rng(0).choice(len(scores), len(scores) // 5, replace=False)] = True
    sample[lifted] = False  # a sample that drew none of them
    whole = np.isin(everything, lifted)
    with_whole = model.blend_history_prior_subset(
        scores, everything, len(items), sample, None, whole
    )
    without = model.blend_history_prior_subset(scores, everything, len(items), sample)
    err = lambda blended: np.median(np.abs(blended - full))  # noqa: E731
    assert err(with_whole) < 0.1 < err(without), (err(with_whole), err(without))
    top = np.argsort(-full)[:20]
    np.testing.assert_array_equal(np.argsort(-with_whole)[:20], top)


# ------------------------------------------------------------------ the service
@pytest.mark.parametrize("head", HEADS)
def test_served_lists_match_the_exact_lists(world, head: str, monkeypatch) -> None:
    # new users' blend with popularity is standardised on a sample of the catalogue
    monkeypatch.setattr(foldin, "REFERENCE_ITEMS", N_ITEMS // 5)
    model = world[head]
    exact = ann_engine(world, model, scoring="exact")  # same size, every item scored
    served = ann_engine(world, model)
    assert exact.info()["index"] == "exact" and exact.retrieval is None
    # the neighbour index follows the size, not the scoring (all pairs are quadratic)
    assert exact.cos_index.kind == served.cos_index.kind == "hnsw"
    assert served.info()["index"] == "hnsw+rescore" and served.retrieval.kind == "hnsw"
    rng = np.random.default_rng(4)
    users = [model.user_map.ids([int(u)])[0] for u in rng.choice(len(model.user_map), 40)]
    overlaps, towers = [], []
    for user in users:
        want, got = exact.recommend(user, 10), served.recommend(user, 10)
        assert want["source"] == "exact" and got["source"] == "index"
        overlaps.append(len(set(top_ids(want)) & set(top_ids(got))) / 10)
        u = model.user_map.index(user)
        tower = model.user_final[u] @ model.item_final.T / model._scale + model.item_offset()
        tower[model.seen[u].indices] = -np.inf
        tower_top = model.item_map.ids(np.argsort(-tower)[:10].tolist())
        towers.append(len(set(top_ids(want)) & set(tower_top)) / 10)
        # the scores shown are the model's exact scores of the items listed
        scores = {x["item_id"]: x["score"] for x in want["items"]}
        for x in got["items"]:
            if x["item_id"] in scores:
                assert x["score"] == pytest.approx(scores[x["item_id"]], rel=1e-4, abs=1e-4)
    # fold-in: trained users with new events, and new users with a few events
    events, ids = [], model.item_map.ids()
    for n, user in enumerate(users[:15] + [f"new-{i}" for i in range(15)]):
        for j, item in enumerate(rng.choice(len(ids), int(rng.integers(1, 8)), replace=False)):
            events.append(Event(10_000 + 100 * n + j, user, ids[item], "like", None, 0.0, 0.0))
    for engine in (exact, served):
        engine.apply_events(events)
    for user in users[:15] + [f"new-{i}" for i in range(15)]:
        want, got = exact.recommend(user, 10), served.recommend(user, 10)
        assert got["source"] == "index"
        overlaps.append(len(set(top_ids(want)) & set(top_ids(got))) / 10)
    assert np.mean(overlaps) >= 0.95, overlaps
    assert np.mean(towers) < 0.8  # the head matters here: the tower alone ranks otherwise
    exact.close()
    served.close()


def with_blank_items(model: TransferRecommender, share: float = 0.2, seed: int = 8):
    """A copy in which a ``share`` of the items have no training interaction, a zero tower
    vector (none of their own, none to a user who chose them) and no head row, and all share
    the catalogue's highest offset with a trained item: as items known only by the prior of
    a popular group. Returns the copy and those items."""
    rng = np.random.default_rng(seed)
    n = len(model.item_map)
    trained = np.flatnonzero(~model.is_untrained)  # no dormant items' offset
    blank = np.sort(rng.choice(trained, int(share * n), replace=False))
    out = copy.copy(model)
    keep = np.ones(n)
    keep[blank] = 0.0
    out.seen = sp.csr_matrix(model.seen @ sp.diags(keep))
    out.seen.eliminate_zeros()
    out.item_final = model.item_final.copy()
    out.item_final[blank] = 0.0
    out.item_layers = model.item_layers.copy()
    out.item_layers[:, blank] = 0.0
    linear = np.asarray(model.linear).copy()
    linear[blank] = 0.0
    out.linear = linear
    offsets = model.item_offset()
    trained = np.setdiff1d(trained, blank)
    top = trained[np.argmax(offsets[trained])]
    out.prior = model.prior.copy()
    out.prior[blank] = model.prior[top]
    out._offset_cache = out._popularity = None
    assert np.all(out.item_offset()[blank] == offsets[top])
    return out, blank


@pytest.mark.parametrize("head", HEADS)
def test_new_users_get_the_blank_items_that_the_exact_path_ranks_first(
    world, head: str, monkeypatch
) -> None:
    # A new user who chose only blank items has a zero tower: every item scores its offset,
    # and the blend maps blank items (no train count) to the best blended score of the
    # trained items that share their offset, the highest: they tie the top of the list.
    # The index must find them (the blend's query gives them no popularity) and the rescore
    # must place them as the whole catalogue does, not as its reference sample.
    monkeypatch.setattr(foldin, "REFERENCE_ITEMS", N_ITEMS // 5)
    model, blank = with_blank_items(world["dense"])
    if head == "sparse":
        model = sparse_copy(model)
    exact = ann_engine(world, model, scoring="exact", index_cache=False)
    served = ann_engine(world, model, index_cache=False)
    assert served.info()["index"] == "hnsw+rescore"
    ids = model.item_map.ids()
    rng = np.random.default_rng(2)
    users = [f"blank-{i}" for i in range(8)]
    events = [
        Event(20_000 + 10 * n + j, user, ids[item], "like", None, 0.0, 0.0)
        for n, user in enumerate(users)
        for j, item in enumerate(rng.choice(blank, int(rng.integers(1, 4)), replace=False))
    ]
    for engine in (exact, served):
        engine.apply_events(events)
    for user in users:
        want = exact.recommend(user, 10)
        everything = exact.recommend(user, N_ITEMS)["items"]
        score = {x["item_id"]: x["score"] for x in everything}
        got = served.recommend(user, 10)
        assert got["source"] == "index" and len(top_ids(got)) == 10
        assert set(top_ids(want)) & set(model.item_map.ids(blank.tolist()))
        # the same list up to ties: the served items' exact scores are the exact list's
        np.testing.assert_allclose(
            [score[i] for i in top_ids(got)], [x["score"] for x in want["items"]], rtol=1e-6
        )
        # and the ties are cut alike: in item order, from the blank items of lowest index
        assert top_ids(got) == top_ids(want)
    exact.close()
    served.close()


def test_top_k_cuts_ties_in_position_order() -> None:
    scores = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.5, 2.0])
    assert top_k(scores, 4).tolist() == [1, 3, 2, 4]
    assert top_k(scores[::-1], 4).tolist() == [4, 6, 0, 2]
    assert top_k(scores, 8).tolist() == [1, 3, 2, 4, 5, 7, 0, 6]


@pytest.mark.parametrize("head", HEADS)
def test_an_event_changes_the_next_recommendation(world, head: str, tmp_path: Path) -> None:
    engine = ann_engine(world, world[head])
    client = TestClient(create_app(engine=engine))
    user = world[head].user_map.ids([5])[0]
    before = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert before["source"] == "index"
    top = before["items"][0]["item_id"]
    r = client.post("/v1/events", json={"user_id": user, "item_id": top, "type": "like"})
    assert r.status_code == 201, r.text
    after = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert after["source"] == "index" and top not in top_ids(after)
    assert top_ids(after) != top_ids(before)
    # a new user: their first event is folded in through the index at once
    r = client.post("/v1/events", json={"user_id": "brand-new", "item_id": top, "type": "like"})
    assert r.status_code == 201
    fresh = client.get("/v1/users/brand-new/recommendations", params={"k": 10}).json()
    assert fresh["source"] == "index" and not fresh["cold_start"] and len(fresh["items"]) == 10
    assert client.get("/v1/info").json()["index"] == "hnsw+rescore"
    engine.close()


def test_a_new_item_is_in_the_index_and_servable(world, tmp_path: Path) -> None:
    model = copy.deepcopy(world["dense"])  # items are added to this copy only
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    with Store(url) as store:
        store.ingest(make_dataset())
    engine = ann_engine(world, model, url)
    client = TestClient(create_app(engine=engine))
    size = engine.retrieval.size
    assert size == len(engine.catalog)
    user = model.user_map.ids([9])[0]
    before = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    # a new-item offset that puts a new item first: only the index can find it for the
    # plain list (nothing else adds new items to the candidates without reserved slots)
    model.cold_boost = 1e3
    item = {"item_id": "brand-new-item", "text": {"title": "A new thing"}}
    r = client.post("/v1/items", json=item)
    assert r.status_code == 201 and r.json()["recommendable"], r.text
    assert engine.retrieval.size == size + 1 == len(engine.catalog)
    idx = model.item_map.index("brand-new-item")
    np.testing.assert_array_equal(engine.retrieval.row(idx), engine.scorer.retrieval_rows(idx)[0])
    after = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert after["source"] == "index"
    assert top_ids(after)[0] == "brand-new-item" and after["items"][0]["new"]
    assert top_ids(after)[1:] == top_ids(before)[:9]  # the others keep their order
    # reserved slots join every new item (no training interactions) to the candidates:
    # the slot holds the best of them by the model's exact scores
    model.cold_boost = 0.0
    engine.retrieval.rebuild(engine.scorer.retrieval_rows())  # as a restart would build it
    engine.cache.clear()
    slotted = client.get(
        f"/v1/users/{user}/recommendations", params={"k": 10, "new_item_slots": 1}
    ).json()
    assert slotted["source"] == "index"
    fresh = [x["item_id"] for x in slotted["items"] if x["new"]]
    u = model.user_map.index(user)
    scores = model.score(np.array([u]))[0]
    new = engine.new_items()
    new[model.seen[u].indices] = False
    best = model.item_map.ids([int(np.flatnonzero(new)[np.argmax(scores[new])])])
    assert fresh == best
    engine.close()


def test_hnsw_indexes_are_kept_for_the_next_start(world, tmp_path: Path, caplog) -> None:
    from kinrec.serving.index import ItemIndex

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    built = ItemIndex(vectors, hnsw_threshold=100, cache_dir=tmp_path, name="demo")
    files = list(tmp_path.glob("demo-*.faiss"))
    assert built.kind == "hnsw" and len(files) == 1
    with caplog.at_level(logging.INFO, logger="kinrec.serving.index"):
        again = ItemIndex(vectors, hnsw_threshold=100, cache_dir=tmp_path, name="demo")
    assert any("read from" in r.getMessage() for r in caplog.records)
    for q in vectors[:20]:
        np.testing.assert_array_equal(again.search(q, 10)[0], built.search(q, 10)[0])
    # the table of each item's nearest items is kept beside the index, read back by the next
    ids, sims = built.nearest_to_each(vectors, 6)
    assert ids.shape == (300, 6) and len(list(tmp_path.glob("demo-*.top6.npz"))) == 1

    def no_search(*args, **kwargs):
        raise AssertionError("searched again")

    again.search_many = no_search
    cached_ids, cached_sims = again.nearest_to_each(vectors, 6)
    np.testing.assert_array_equal(cached_ids, ids)
    np.testing.assert_array_equal(cached_sims, sims)
    # other vectors: another file, the stale ones removed; a damaged file is rebuilt
    changed = ItemIndex(vectors * 2 + 1, hnsw_threshold=100, cache_dir=tmp_path, name="demo")
    (kept,) = tmp_path.glob("demo-*.faiss")
    assert kept != files[0] and changed.size == 300
    assert not list(tmp_path.glob("demo-*.npz"))  # the old vectors' table went with them
    kept.write_bytes(b"not an index")
    rebuilt = ItemIndex(vectors * 2 + 1, hnsw_threshold=100, cache_dir=tmp_path, name="demo")
    assert rebuilt.kind == "hnsw" and kept.stat().st_size > 100
    # an unwritable place only costs the build
    blocked = tmp_path / "file"
    blocked.write_text("x")
    assert ItemIndex(vectors, hnsw_threshold=100, cache_dir=blocked / "sub").size == 300
    # the engine keeps its indexes in the model directory unless told not to
    engine = ann_engine(world, world["sparse"])
    names = {p.name.split("-")[0] for p in (world["root"] / "index-cache").glob("*.faiss")}
    assert {"retrieval", "neighbours"} <= names
    engine.close()


def with_graph_lift(model: TransferRecommender, dataset: Dataset) -> TransferRecommender:
    """The model with a strong knowledge-graph lift for new users (items of a genre)."""
    from kinrec.knowledge.features import item_neighbour_graph

    out = copy.copy(model)
    out.profile_graph = item_neighbour_graph(dataset, model.item_map.ids(), 10)
    scores = np.asarray(model.score_history(np.arange(5)), dtype=np.float64)
    out.profile_graph_lift = 20.0 * float(scores.std())  # above the popularity blend
    return out


@pytest.mark.parametrize("head", HEADS)
def test_new_users_get_the_graph_lift_on_the_index_path(world, head: str, monkeypatch) -> None:
    # A new user's history lifts its items' graph neighbours; the index path must find them
    # (they are candidates by right, the index does not know the lift) and score them as
    # the exact path does.
    monkeypatch.setattr(foldin, "REFERENCE_ITEMS", N_ITEMS // 5)
    model = with_graph_lift(world[head], make_dataset())
    plain = ann_engine(world, world[head], scoring="exact", index_cache=False)
    exact = ann_engine(world, model, scoring="exact", index_cache=False)
    served = ann_engine(world, model, index_cache=False)
    assert exact.info()["graph_lift"] == model.profile_graph_lift > 0
    ids = model.item_map.ids()
    rng = np.random.default_rng(5)
    users = [f"graph-{i}" for i in range(12)]
    events = [
        Event(30_000 + 10 * n + j, user, ids[item], "like", None, 0.0, 0.0)
        for n, user in enumerate(users)
        for j, item in enumerate(rng.choice(N_ITEMS, int(rng.integers(1, 4)), replace=False))
    ]
    for engine in (plain, exact, served):
        engine.apply_events(events)
    overlaps, changed = [], 0
    for user in users:
        want, got = exact.recommend(user, 10), served.recommend(user, 10)
        assert got["source"] == "index"
        overlaps.append(len(set(top_ids(want)) & set(top_ids(got))) / 10)
        changed += top_ids(want) != top_ids(plain.recommend(user, 10))
        history = np.array(sorted(ids.index(e.item_id) for e in events if e.user_id == user))
        lifted, _ = model.graph_lift(history)
        listed = [ids.index(i) for i in top_ids(want)]
        assert set(listed) & set(lifted.tolist())  # the lift reaches the list
        np.testing.assert_allclose(  # the exact path is the model's own new-user scores
            [x["score"] for x in want["items"]],
            model.score_new_user(history)[listed],
            rtol=1e-4,
            atol=1e-4,
        )
    assert changed >= len(users) // 2  # the lift matters
    assert np.mean(overlaps) >= 0.95, overlaps
    for engine in (plain, exact, served):
        engine.close()


def test_neighbour_graphs_break_ties_by_item_order() -> None:
    # items sharing only a genre tie: the graph must not depend on the CPU's sort kernel
    from kinrec.models.ease import sparse_neighbour_graph, top_k_rows

    sims = np.array([[0.5, 0.9, 0.5, 0.5, 0.2, 0.5], [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]])
    assert [sorted(row) for row in top_k_rows(sims, 3).tolist()] == [[0, 1, 2], [0, 1, 2]]
    group = np.arange(60) % 3
    rows = sp.csr_matrix(np.eye(3, dtype=np.float32)[group])  # one shared entity each
    graph = sparse_neighbour_graph(rows, 4).tocsr()
    # each item's own picks are the first four others of its group; symmetrised
    picks = {i: [j for j in range(60) if group[j] == group[i] and j != i][:4] for i in range(60)}
    for i in range(60):
        expected = set(picks[i]) | {j for j in range(60) if i in picks[j]}
        assert set(graph[i].indices) == expected
