"""The knowledge graph inside kinformer: its neighbours in the linear head and in what new
items borrow, each weighed on validation.

The fixture is a catalogue whose text says nothing (numbered titles) while its graph says
everything: items come in taste groups, each group's items share a studio entity, and each
user takes a few items of one group. A few items of each group have no training interaction.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from kinrec.data.dataset import Dataset, Split
from kinrec.evaluation.protocol import ndcg_validator
from kinrec.models.ease import neighbour_graph, sparse_neighbour_graph
from kinrec.models.registry import create_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GROUPS, PER_GROUP, COLD_PER_GROUP = 10, 8, 2


def _catalogue() -> tuple[Split, dict[str, int], set[str]]:
    rng = np.random.default_rng(5)
    ids = [f"i{g}_{n}" for g in range(GROUPS) for n in range(PER_GROUP)]
    group = {i: int(i[1:].split("_")[0]) for i in ids}
    order = rng.permutation(len(ids))  # titles numbered across groups: text carries no group
    items = pd.DataFrame({"item_id": ids, "title": [f"Title number {k}" for k in order]})
    cold = {f"i{g}_{n}" for g in range(GROUPS) for n in range(COLD_PER_GROUP)}
    rows = []
    for u in range(160):
        g = u % GROUPS
        members = [i for i in ids if group[i] == g]
        warm = [i for i in members if i not in cold]
        for i in rng.choice(warm, size=4, replace=False):
            rows.append((f"u{u}", str(i)))
        for i in rng.choice(sorted(cold & set(members)), size=1):
            rows.append((f"u{u}", str(i)))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id"])
    inter["timestamp"] = np.arange(len(inter), dtype=float)
    triples = pd.DataFrame(
        {
            "head": [f"e_{i}" for i in ids],
            "relation": ["made_by"] * len(ids),
            "tail": [f"studio{group[i]}" for i in ids],
        }
    )
    links = pd.DataFrame({"item_id": ids, "entity_id": [f"e_{i}" for i in ids]})
    ds = Dataset("groups", inter, items=items, triples=triples, links=links, text_fields=["title"])
    is_cold = inter["item_id"].isin(cold)
    warm_rows = inter[~is_cold]
    first = warm_rows.groupby("user_id").cumcount()
    train = warm_rows[first >= 1]
    valid = warm_rows[first == 0]
    split = Split.from_frames(train, valid, inter[is_cold], item_ids=ids, dataset=ds)
    return split, group, cold


@pytest.fixture(scope="module")
def catalogue():
    return _catalogue()


def _fit(split: Split, **params):
    model = create_model("kinformer", {"max_epochs": 4, "batch_size": 64, "dim": 16, **params})
    model.fit(
        split.train,
        split.valid,
        validator=ndcg_validator(split.train, split.valid),
        side=split.dataset,
    )
    return model


@pytest.fixture(scope="module")
def fitted(catalogue):
    split, _, _ = catalogue
    return _fit(split)


def test_sparse_neighbour_graph_is_the_dense_one_of_the_same_rows() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.random((40, 6)) + 0.01  # positive: every pair similar, no ties at zero
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    dense = neighbour_graph(vectors.astype(np.float32), 5).toarray()
    sparse = sparse_neighbour_graph(sp.csr_matrix(vectors), 5, cells=7 * 40).toarray()
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)
    # rows sharing nothing have no edges
    rows = sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    graph = sparse_neighbour_graph(rows, 2).toarray()
    assert graph[0, 1] == pytest.approx(1.0) and graph[2].sum() == 0.0


def test_head_weighs_graph_neighbours_on_validation(fitted) -> None:
    info = fitted.fit_info
    search = info["linear_search"]
    alone = {k: v for k, v in search.items() if k.endswith("head alone")}
    with_graph = {k: v for k, v in alone.items() if " kg=0 " not in k}
    assert with_graph, "the search tried no graph strength"
    assert info["linear_kg_strength"] > 0
    # where the text knows nothing, the graph's head validates above the one without it
    without = {k: v for k, v in alone.items() if " kg=0 " in k}
    assert max(with_graph.values()) > max(without.values())


def test_new_items_borrow_from_graph_neighbours_where_text_knows_nothing(catalogue, fitted) -> None:
    _, group, cold = catalogue
    assert fitted.fit_info["neighbour_graph_share"] > 0
    ids = fitted.item_map.ids()
    items = np.array([fitted.item_map.index(i) for i in sorted(cold)])
    weights = fitted._neighbour_weights(items)
    for row, item in zip(weights, sorted(cold), strict=True):
        lenders = [group[ids[j]] for j in row.indices[row.data > 0.01]]
        assert lenders and set(lenders) == {group[item]}


def test_without_the_graph_view_nothing_reads_the_graph(catalogue) -> None:
    split, _, _ = catalogue
    model = _fit(split, use_kg=False)
    assert model._graph_shares() == (0.0,)
    assert model.graph_share == 0.0
    assert model.fit_info["linear_kg_strength"] == 0.0
    assert not [k for k in model.fit_info["linear_search"] if " kg=0 " not in k]
    assert model._kg_graph(1.0) is None
    # the popularity prior reads the text alone (an intercept beside it)
    assert len(model.popularity.coef) == model.content.text.shape[1] + 1


def test_a_configured_graph_share_is_kept(catalogue) -> None:
    split, _, _ = catalogue
    model = _fit(split, neighbour_graph_share=1.0, max_epochs=2)
    assert model.graph_share == 1.0
    assert {k.split(" offset")[0].split()[1] for k in model.fit_info["cold_search"]} == {"graph=1"}


def test_graph_share_survives_save_and_load(fitted, tmp_path) -> None:
    from kinrec.models.base import Recommender

    fitted.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.graph_share == fitted.graph_share
    users = np.arange(5)
    np.testing.assert_allclose(loaded.score(users), fitted.score(users), rtol=1e-5)
