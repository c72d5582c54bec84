"""New users' histories expanded through the items' knowledge-graph neighbours: the
expansion itself, its choice on validation, its persistence and the service's use of it.

Small synthetic catalogues built here: items in groups that the graph knows (a ``group``
relation, or one shuffled so that it says nothing), users who choose within their group
half the time and anywhere the other half.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from kinrec.data.dataset import Dataset, Split
from kinrec.evaluation.benchmark import fit_with_validation
from kinrec.evaluation.history_prior import choose_history_prior
from kinrec.knowledge.features import item_neighbour_graph
from kinrec.models.base import Recommender
from kinrec.models.registry import create_model
from kinrec.serving.foldin import ModelScorer

GROUPS, PER_GROUP, USERS, EVENTS = 6, 20, 300, 12


def noisy_groups(graph_knows: bool = True, seed: int = 0) -> Split:
    """Users choose half their events in their own group, half anywhere, in time order:
    co-occurrence is noisy, the ``group`` relation exact (``graph_knows``) or shuffled over
    the items (it says nothing)."""
    rng = np.random.default_rng(seed)
    n = GROUPS * PER_GROUP
    ids = [f"i{k}" for k in range(n)]
    group = np.arange(n) // PER_GROUP
    told = group if graph_knows else rng.permutation(group)
    parts: list[list[tuple[str, str, float]]] = [[], [], []]
    for u in range(USERS):
        own = np.flatnonzero(group == u % GROUPS)
        inside = rng.random(EVENTS) < 0.5
        chosen = np.where(inside, rng.choice(own, EVENTS), rng.integers(0, n, EVENTS))
        chosen = list(dict.fromkeys(chosen.tolist()))
        cut = (len(chosen) - 3, len(chosen) - 1)
        for part, chunk in zip(parts, np.split(np.array(chosen), cut), strict=True):
            part.extend((f"u{u}", ids[k], float(t)) for t, k in enumerate(chunk))
    frames = [pd.DataFrame(p, columns=["user_id", "item_id", "timestamp"]) for p in parts]
    triples = pd.DataFrame(
        [(f"e_{i}", "group", f"g{g}") for i, g in zip(ids, told, strict=True)],
        columns=["head", "relation", "tail"],
    )
    links = pd.DataFrame({"item_id": ids, "entity_id": [f"e_{i}" for i in ids]})
    ds = Dataset(
        "groups",
        pd.concat(frames, ignore_index=True),
        items=pd.DataFrame({"item_id": ids}),
        triples=triples,
        links=links,
    )
    return Split.from_frames(*frames, item_ids=ids, dataset=ds)


@pytest.fixture(scope="module")
def itemknn() -> tuple[Recommender, Split]:
    split = noisy_groups()
    return fit_with_validation(create_model("itemknn"), split), split


def test_neighbour_graph_joins_items_sharing_entities() -> None:
    split = noisy_groups()
    graph = item_neighbour_graph(split.dataset, split.train.item_map.ids(), k=5)
    assert graph.shape == (GROUPS * PER_GROUP,) * 2
    np.testing.assert_allclose(np.asarray(graph.sum(axis=1)).ravel(), 1.0, rtol=1e-5)
    rows, cols = graph.nonzero()
    assert np.array_equal(rows // PER_GROUP, cols // PER_GROUP)  # same group only
    assert not (rows == cols).any()
    # no relation shared by two items: no graph
    lone = Dataset(
        "lone",
        split.dataset.interactions,
        items=split.dataset.items,
        triples=split.dataset.triples.assign(tail=[f"t{k}" for k in range(GROUPS * PER_GROUP)]),
        links=split.dataset.links,
    )
    assert item_neighbour_graph(lone, split.train.item_map.ids(), k=5) is None


def test_lift_reaches_the_history_items_neighbours() -> None:
    model = create_model("pop")
    graph = sp.csr_matrix(
        np.array([[0, 0.25, 0.75, 0], [1, 0, 0, 0], [0.5, 0, 0, 0.5], [0, 0, 1, 0]])
    )
    items, weights = np.array([0, 3]), np.array([2.0, 1.0])
    assert len(model.graph_lift(items, weights)[0]) == 0  # no graph: no lift
    model.profile_graph, model.profile_graph_lift = graph, 3.0
    lifted, lift = model.graph_lift(items, weights)
    # item 0 spreads 2 (0.5 to 1, 1.5 to 2), item 3 spreads 1 to 2: 2 is highest, lifted by 3
    assert lifted.tolist() == [1, 2]
    np.testing.assert_allclose(lift, [3.0 * 0.5 / 2.5, 3.0])
    # an item the graph does not know (added after fitting) lifts nothing
    lifted, lift = model.graph_lift(np.array([1, 7]))
    assert lifted.tolist() == [0]
    np.testing.assert_allclose(lift, [3.0])


def test_expansion_is_chosen_where_the_graph_knows_and_refused_where_it_does_not() -> None:
    chosen = {}
    for knows in (True, False):
        split = noisy_groups(graph_knows=knows)
        model = fit_with_validation(create_model("itemknn"), split)
        info = model.fit_info["profile_graph"]
        chosen[knows] = info["strength"]
        assert info["lift"] == model.profile_graph_lift
        assert set(info["search"]) == {"0", "0.25", "0.5", "1", "2", "4", "8"}
        if knows:
            assert max(info["search"].values()) > info["search"]["0"]
    assert chosen[True] > 0
    assert chosen[False] == 0
    # refused: the model keeps no graph
    assert model.profile_graph is None


def test_models_told_not_to_read_the_graph_do_not() -> None:
    split = noisy_groups()
    off = fit_with_validation(create_model("itemknn", {"kg_profile_neighbours": 0}), split)
    assert off.profile_graph is None and "profile_graph" not in off.fit_info
    interactions_only = Split(split.train, split.valid, split.test, None)
    alone = fit_with_validation(create_model("itemknn"), interactions_only)
    assert alone.profile_graph is None and "profile_graph" not in alone.fit_info


def test_large_catalogues_skip_the_neighbour_search(itemknn) -> None:
    model, split = itemknn
    keep = (model.profile_graph, model.profile_graph_lift, model.history_prior_strength)
    try:
        choose_history_prior(model, split.train, split.valid, exact_items=10, candidates=20)
        assert model.fit_info["profile_graph"]["skipped"].startswith("catalogue of 120 items")
        assert model.profile_graph is None and model.profile_graph_lift == 0
    finally:
        model.profile_graph, model.profile_graph_lift, model.history_prior_strength = keep


def test_expansion_survives_save_and_load(itemknn, tmp_path: Path) -> None:
    model, _ = itemknn
    assert model.profile_graph_lift > 0
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert loaded.profile_graph_lift == model.profile_graph_lift
    assert (loaded.profile_graph != model.profile_graph).nnz == 0
    history = np.array([3, 50])
    np.testing.assert_allclose(loaded.score_new_user(history), model.score_new_user(history))


def test_service_scores_new_users_through_the_expansion(itemknn) -> None:
    model, _ = itemknn
    scorer = ModelScorer(model)
    history, none = np.array([3, 50]), np.zeros(0, dtype=np.int64)
    got = scorer.history_scores(None, none, history, np.ones(2, np.float32))
    np.testing.assert_allclose(got, model.score_new_user(history), rtol=1e-5, atol=1e-5)
    b = model.profile_graph_lift
    model.profile_graph_lift = 0.0
    try:
        plain = scorer.history_scores(None, none, history, np.ones(2, np.float32))
    finally:
        model.profile_graph_lift = b
    assert not np.allclose(got, plain)
    # a trained user's new events are not expanded: their fold-in stays the model's own
    train = model.seen[0].indices
    known = scorer.history_scores(0, train, history, np.ones(2, np.float32))
    model.profile_graph_lift = 0.0
    try:
        unexpanded = scorer.history_scores(0, train, history, np.ones(2, np.float32))
    finally:
        model.profile_graph_lift = b
    assert np.array_equal(known, unexpanded)


def test_python_api_recommends_by_the_new_user_scores(itemknn) -> None:
    import kinrec

    model, _ = itemknn
    ids = model.item_map.ids([3, 50])
    scores = model.score_new_user(np.array([3, 50]))
    scores[[3, 50]] = -np.inf
    want = model.item_map.ids(np.argsort(-scores, kind="stable")[:10].tolist())
    got = [x.item_id for x in kinrec.recommend(model, history=ids, k=10)]
    assert got == want
