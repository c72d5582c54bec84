"""kg-knn: relation weights chosen on validation and a popularity term it cannot rank below.

Small synthetic catalogues built here: items reach entities through named relations (item
attributes, imported triples linked to items), and users choose by taste group or by
popularity alone.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kinrec.data.dataset import Dataset, IdMap, Split
from kinrec.evaluation.protocol import ndcg_validator
from kinrec.knowledge.features import (
    build_item_content,
    entity_columns,
    entity_links,
    weighted_incidence,
)
from kinrec.models.base import Recommender
from kinrec.models.content import KGKNN
from kinrec.models.registry import create_model

GROUPS, PER_GROUP = 4, 12
NOISE = 6


def _frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def _triples(ids: list[str], relations: dict[str, list[list[str]]]) -> pd.DataFrame:
    """Triples ``e_<item> -relation-> tail`` for each relation's tails per item."""
    rows = [
        (f"e_{item}", relation, tail)
        for relation, tails in relations.items()
        for item, item_tails in zip(ids, tails, strict=True)
        for tail in item_tails
    ]
    return pd.DataFrame(rows, columns=["head", "relation", "tail"])


def _links(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"item_id": ids, "entity_id": [f"e_{i}" for i in ids]})


def _noise(rng: np.random.Generator, n_items: int, per_item: int = 2) -> list[list[str]]:
    return [[f"n{k}" for k in rng.choice(NOISE, per_item, replace=False)] for _ in range(n_items)]


def _groups_data() -> tuple[Split, list[list[str]]]:
    """Items in taste groups (relation ``group``) with random ``noise`` entities; each user
    chooses within one group, popular items more often: 7 train, 2 valid, 1 test items."""
    rng = np.random.default_rng(3)
    ids = [f"i{k}" for k in range(GROUPS * PER_GROUP)]
    noise = _noise(rng, len(ids))
    groups = [[f"g{k // PER_GROUP}"] for k in range(len(ids))]
    appeal = rng.permutation(np.linspace(1.0, 4.0, len(ids)))
    parts: list[list[tuple[str, str]]] = [[], [], []]
    for u in range(120):
        own = np.arange(PER_GROUP) + PER_GROUP * (u % GROUPS)
        chosen = rng.choice(own, 10, replace=False, p=appeal[own] / appeal[own].sum())
        for part, chunk in zip(parts, (chosen[:7], chosen[7:9], chosen[9:]), strict=True):
            part.extend((f"u{u}", ids[k]) for k in chunk)
    frames = [_frame(p) for p in parts]
    ds = Dataset(
        "groups",
        pd.concat(frames, ignore_index=True),
        items=pd.DataFrame({"item_id": ids}),
        triples=_triples(ids, {"group": groups, "noise": noise}),
        links=_links(ids),
    )
    return Split.from_frames(*frames, item_ids=ids, dataset=ds), noise


@pytest.fixture(scope="module")
def groups() -> tuple[Split, list[list[str]]]:
    return _groups_data()


@pytest.fixture(scope="module")
def searched(groups) -> Recommender:
    split, _ = groups
    validator = ndcg_validator(split.train, split.valid)
    return create_model("kg-knn").fit(split.train, validator=validator, side=split.dataset)


# ------------------------------------------------------------------ the weighted incidence
def test_unit_relation_weights_give_the_incidence_of_the_item_content() -> None:
    """Attributes and triples, an entity reached through two relations (an attribute and a
    triple), an item outside the graph and an entity on one item only (dropped): with
    every relation at weight 1 the incidence is exactly :func:`build_item_content`'s."""
    ids = [f"i{k}" for k in range(8)]
    items = pd.DataFrame(
        {
            "item_id": ids[:7],
            "genre": [("Drama",), ("Drama", "Comedy"), ("Comedy",), ("Drama",), ("War",),
                      ("Comedy",), ("War", "Drama")],
            "year": ["1990", "1991", "1990", "1995", "1995", "1991", "2001"],
        }
    )  # fmt: skip
    triples = pd.DataFrame(
        {
            "head": ["e_i0", "e_i1", "e_i2", "e_i3", "e_i0", "e_i5", "e_i6"],
            "relation": ["directed_by", "directed_by", "directed_by", "tagged", "tagged",
                         "tagged", "directed_by"],
            "tail": ["d1", "d1", "d2", "genre:Drama", "genre:War", "d2", "d9"],
        }
    )  # fmt: skip
    ds = Dataset(
        "small",
        _frame([("u0", i) for i in ids]),
        items=items,
        triples=triples,
        links=_links(ids[:7]),
        attribute_fields=["genre", "year"],
    )
    item_map = IdMap([*ids, "stranger"])
    today = build_item_content(ds, item_map, embed=lambda t: np.zeros((len(t), 1), np.float32))
    links = entity_links(ds, item_map.ids())
    keep, idf = entity_columns(links.incidence(), min_entity_items=2)
    links = links.columns(keep)
    assert links.entities == today.entity_ids
    np.testing.assert_array_equal(idf, today.entity_idf)
    ones = {name: 1.0 for name in links.relations}
    for weights in (None, ones):
        mine = weighted_incidence(links, idf, weights)
        assert mine.dtype == today.entities.dtype and mine.shape == today.entities.shape
        np.testing.assert_array_equal(mine.indptr, today.entities.indptr)
        np.testing.assert_array_equal(mine.indices, today.entities.indices)
        np.testing.assert_array_equal(mine.data, today.entities.data)
    assert {"has_genre", "released_in", "directed_by", "tagged"} <= set(links.relations)
    # weight 0 drops a relation's pairs: i5 reaches d2 only through "tagged"
    d2 = links.entities.index("d2")
    assert weighted_incidence(links, idf)[5, d2] > 0
    assert weighted_incidence(links, idf, {"tagged": 0.0})[5, d2] == 0


def test_relation_weights_scale_their_entries_before_the_row_norm() -> None:
    ids = ["a", "b", "c"]
    triples = _triples(ids, {"r": [["x"], ["x"], ["y"]], "s": [["y"], ["x"], ["y"]]})
    ds = Dataset("w", _frame([("u", "a")]), triples=triples, links=_links(ids))
    links = entity_links(ds, ids)
    keep, idf = entity_columns(links.incidence(), 2)
    links = links.columns(keep)
    x, y = links.entities.index("x"), links.entities.index("y")
    row = weighted_incidence(links, idf, {"r": 2.0, "s": 0.5}).toarray()[0]
    expected = np.array([2.0 * idf[x], 0.5 * idf[y]])
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(row[[x, y]], expected, rtol=1e-6)
    # b reaches x through both relations: the larger weight counts, once
    assert weighted_incidence(links, idf, {"r": 2.0, "s": 0.5})[1, x] == pytest.approx(1.0)


def test_relations_linking_the_same_pairs_share_a_weight_in_the_search() -> None:
    """An imported relation and its inverse link the same (item, entity) pairs: one unit
    of the search, the groups ordered by the items they touch."""
    ids = ["a", "b", "c", "d"]
    triples = pd.concat(
        [
            _triples(ids, {"directed_by": [["x"], ["x"], ["y"], ["y"]]}),
            pd.DataFrame(
                {"head": ["x", "x", "y", "y"], "relation": ["directs"] * 4,
                 "tail": [f"e_{i}" for i in ids]}
            ),
            _triples(ids[:2], {"scored_by": [["z"], ["z"]]}),
        ]
    )  # fmt: skip
    ds = Dataset("inverse", _frame([("u", "a")]), triples=triples, links=_links(ids))
    links = entity_links(ds, ids)
    assert links.relation_groups() == [["directed_by", "directs"], ["scored_by"]]


# ------------------------------------------------------------------ popularity
def _popularity_data() -> tuple[Split, list[str]]:
    """Distinct train counts (item k: 3 * (n - k) users), a pure-noise graph (two random
    relations) and validation items drawn by popularity among each user's unseen items."""
    rng = np.random.default_rng(5)
    n_items, n_users = 30, 100
    ids = [f"i{k}" for k in range(n_items)]
    counts = 3 * (n_items - np.arange(n_items))
    train = [
        (f"u{u}", ids[k])
        for k in range(n_items)
        for u in rng.choice(n_users, counts[k], replace=False)
    ]
    seen = {(u, i) for u, i in train}
    valid, test = [], []
    for u in range(n_users):
        unseen = [k for k in range(n_items) if (f"u{u}", ids[k]) not in seen]
        p = counts[unseen] / counts[unseen].sum()
        picked = rng.choice(unseen, min(3, len(unseen)), replace=False, p=p)
        valid.extend((f"u{u}", ids[k]) for k in picked[:2])
        test.extend((f"u{u}", ids[k]) for k in picked[2:])
    frames = [_frame(train), _frame(valid), _frame(test)]
    ds = Dataset(
        "popular",
        pd.concat(frames, ignore_index=True),
        items=pd.DataFrame({"item_id": ids}),
        triples=_triples(ids, {"noise_a": _noise(rng, n_items), "noise_b": _noise(rng, n_items)}),
        links=_links(ids),
    )
    return Split.from_frames(*frames, item_ids=ids, dataset=ds), ids


def test_a_large_popularity_weight_ranks_items_as_popularity_does() -> None:
    split, _ = _popularity_data()
    model = create_model("kg-knn").fit(split.train, side=split.dataset)
    pop = create_model("pop").fit(split.train)
    counts = np.bincount(split.train.items, minlength=split.train.n_items)
    logs = np.log1p(counts)
    np.testing.assert_allclose(model.prior, (logs - logs.mean()) / logs.std(), rtol=1e-5)
    users = np.arange(split.train.n_users)
    model.prior_weight = 0.0
    by_similarity = model.score(users)
    assert np.ptp(by_similarity, axis=1).min() > 0  # the graph does score the items
    model.prior_weight = KGKNN.PRIOR_WEIGHTS[-1]
    scores = model.score(users)
    popularity = np.broadcast_to(model.prior_weight * model.prior, scores.shape)
    np.testing.assert_allclose(scores - by_similarity, popularity, rtol=1e-6, atol=1e-3)
    expected = np.argsort(-pop.score(users), axis=1, kind="stable")
    np.testing.assert_array_equal(np.argsort(-scores, axis=1, kind="stable"), expected)
    assert (np.argsort(-by_similarity, axis=1) != expected).any()


def test_on_a_noise_graph_it_validates_at_least_as_well_as_popularity() -> None:
    split, _ = _popularity_data()
    validator = ndcg_validator(split.train, split.valid)
    model = create_model("kg-knn").fit(split.train, validator=validator, side=split.dataset)
    pop = create_model("pop").fit(split.train)
    assert validator(model) >= validator(pop) > 0
    best = max(model.fit_info["prior_weight_search"].values())  # rounded to 5 places
    assert validator(model) == pytest.approx(best, abs=1e-5)
    assert set(model.fit_info["relation_weights"]) == {"noise_a", "noise_b"}


# ------------------------------------------------------------------ relation search
def test_the_search_weighs_the_noise_relation_below_the_signal_relation(groups, searched) -> None:
    split, _ = groups
    weights = searched.fit_info["relation_weights"]
    assert weights["noise"] < weights["group"]
    search = searched.fit_info["relation_search"]
    assert set(search) == {"group", "noise"}
    assert set(search["noise"]["ndcg@10"]) == {"1.0", "0.0", "0.5", "2.0"}
    assert search["group"]["items"] == GROUPS * PER_GROUP
    assert searched.fit_info["prior_weight"] in KGKNN.PRIOR_WEIGHTS
    validator = ndcg_validator(split.train, split.valid)
    unit = create_model("kg-knn", {"relation_search": 0}).fit(
        split.train, validator=validator, side=split.dataset
    )
    assert unit.fit_info["relation_weights"] == {"group": 1.0, "noise": 1.0}
    assert unit.fit_info["relation_search"] == "skipped: relation_search is 0"
    content = build_item_content(
        split.dataset, unit.item_map, embed=lambda t: np.zeros((len(t), 1), np.float32)
    )
    assert (unit.incidence != content.entities).nnz == 0  # unit weights: the item content's
    assert validator(searched) >= validator(unit)
    # the model holds the chosen weights' incidence
    links = entity_links(split.dataset, searched.item_map.ids(), searched.entity_ids)
    chosen = weighted_incidence(links, searched.entity_idf, weights)
    assert (chosen != searched.incidence).nnz == 0


def test_no_search_without_validation_or_with_one_relation(groups) -> None:
    split, _ = groups
    model = create_model("kg-knn").fit(split.train, side=split.dataset)
    assert model.fit_info["relation_search"] == "skipped: no validation data"
    assert model.fit_info["relation_weights"] == {"group": 1.0, "noise": 1.0}
    assert model.prior_weight == 0.0
    ds = split.dataset
    one = Dataset("one", ds.interactions, items=ds.items, links=ds.links,
                  triples=ds.triples[ds.triples["relation"] == "group"])  # fmt: skip
    validator = ndcg_validator(split.train, split.valid)
    single = create_model("kg-knn").fit(split.train, validator=validator, side=one)
    assert single.fit_info["relation_search"] == "skipped: a single relation"
    assert single.fit_info["relation_weights"] == {"group": 1.0}


def test_relation_weights_survive_save_load_and_apply_to_added_items(
    groups, searched, tmp_path: Path
) -> None:
    _, noise = groups
    searched = copy.deepcopy(searched)  # items are added below
    assert searched.relation_weights and set(searched.relation_weights.values()) != {1.0}
    searched.save(tmp_path / "kg")
    loaded = Recommender.load(tmp_path / "kg")
    assert loaded.relation_weights == searched.relation_weights
    users = np.arange(10)
    np.testing.assert_allclose(loaded.score(users), searched.score(users), rtol=1e-5)
    # a new item with the entities of i3 gets i3's incidence row (the same relation weights)
    new = Dataset(
        "new",
        pd.DataFrame(columns=["user_id", "item_id"]),
        items=pd.DataFrame({"item_id": ["fresh"]}),
        triples=_triples(["fresh"], {"group": [["g0"]], "noise": [noise[3]]}),
        links=_links(["fresh"]),
    )
    for model in (searched, loaded):
        model.add_items(["fresh"], new)
        fresh = model.item_map.index("fresh")
        twin = model.item_map.index("i3")
        assert (model.incidence[fresh] != model.incidence[twin]).nnz == 0
        assert model.similarity[twin, fresh] == pytest.approx(model.similarity[twin].max())
        # its popularity is predicted from its content, on the scale of the observed ones
        assert np.isfinite(model.prior[fresh])
        assert model.prior.min() - 1 < model.prior[fresh] < model.prior.max() + 1
    np.testing.assert_allclose(loaded.score(users), searched.score(users), rtol=1e-5)


def test_a_model_saved_without_relation_weights_loads_with_unit_weights(searched) -> None:
    """State written before relation weights and the observed popularity scale existed: every
    relation weighs 1 and new items keep the prior's own standardisation."""
    arrays = searched._state()
    for key in ("relation_names", "relation_weights", "popularity_scale"):
        del arrays[key]
    old = KGKNN(searched.config)
    old._load_state(arrays)
    assert old.relation_weights == {}
    np.testing.assert_array_equal(old.prior, searched.prior)
    predicted = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
    np.testing.assert_allclose(old._predicted_term(predicted), predicted, rtol=1e-6, atol=1e-6)
