"""Knowledge graph: build, validation, neighbour and path queries, similarity, store round trip."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kinrec.data.dataset import INTERACTION_COLUMNS, Dataset, IdMap, empty_frame
from kinrec.data.errors import DataError
from kinrec.knowledge.graph import KnowledgeGraph, attribute_edges, build_graph

DATA_DIR = Path(os.environ.get("KINREC_DATA_DIR", Path(__file__).parents[2] / "shared/datasets"))


def _frame(rows: list[tuple], columns: list[str], source: str, first_line: int) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    frame.attrs.update(source=source, first_line=first_line)
    return frame


def movie_dataset(
    triples: list[tuple[str, str, str]] | None = None,
    links: list[tuple[str, str]] | None = None,
) -> Dataset:
    """Five films: genres and years; linked entities E1..E4 with directors; i5 unconnected.

    E1 (i1) and E2 (i2) directed_by D1; E3 (i3) directed_by D2; D2 spouse_of D3; E4 (i4)
    directed_by D3.
    """
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4", "i5"],
            "title": ["A", "B", "C", "D", "E"],
            "genre": [("Comedy",), ("Comedy", "Drama"), ("Drama",), (), ()],
            "year": [("1995",), ("1997",), ("1984",), (), ()],
        }
    )
    if triples is None:
        triples = [
            ("E1", "directed_by", "D1"),
            ("E2", "directed_by", "D1"),
            ("E3", "directed_by", "D2"),
            ("D2", "spouse_of", "D3"),
            ("E4", "directed_by", "D3"),
        ]
    if links is None:
        links = [("i1", "E1"), ("i2", "E2"), ("i3", "E3"), ("i4", "E4")]
    return Dataset(
        name="films",
        interactions=empty_frame(INTERACTION_COLUMNS),
        items=items,
        triples=_frame(triples, ["head", "relation", "tail"], "films.kg", 2),
        links=_frame(links, ["item_id", "entity_id"], "films.link", 2),
        text_fields=["title"],
        attribute_fields=["genre", "year"],
    )


@pytest.fixture
def graph() -> KnowledgeGraph:
    return build_graph(movie_dataset())


# ------------------------------------------------------------------------------- build
def test_build_entities_relations_and_stats(graph: KnowledgeGraph) -> None:
    assert graph.item_ids == ["i1", "i2", "i3", "i4", "i5"]
    assert [graph.item_index(i) for i in graph.item_ids] == [0, 1, 2, 3, 4]
    # Linked entities are the item nodes themselves, not separate nodes.
    for raw in ("E1", "E2", "E3", "E4"):
        assert raw not in graph.entities
    stats = graph.stats()
    assert stats["items"] == 5
    assert stats["items_linked"] == 4
    assert stats["items_with_edges"] == 4  # i5 has nothing
    assert stats["item_degree"]["isolated"] == 1
    assert stats["per_relation"] == {
        "has_genre": 4,
        "released_in": 3,
        "in_decade": 3,
        "directed_by": 4,
        "spouse_of": 1,
    }
    assert stats["triples"] == 15
    assert stats["edges"] == 30  # every triple also traversable backwards
    # 5 items + genre x2 + year x3 + decade x2 (1990s, 1980s) + D1, D2, D3
    assert stats["entities"] == 15
    assert set(graph.directed_relations) >= {"directed_by", "directed_by^-1"}


def test_adjacency_holds_both_directions(graph: KnowledgeGraph) -> None:
    i1, d1 = graph.item_index("i1"), graph.entities.index("D1")
    adj = graph.adjacency
    row = adj.indices[adj.indptr[i1] : adj.indptr[i1 + 1]]
    rel = graph.edge_relation[adj.indptr[i1] : adj.indptr[i1 + 1]]
    assert graph.directed_relations[int(rel[list(row).index(d1)])] == "directed_by"
    back = adj.indices[adj.indptr[d1] : adj.indptr[d1 + 1]]
    back_rel = graph.edge_relation[adj.indptr[d1] : adj.indptr[d1 + 1]]
    assert graph.directed_relations[int(back_rel[list(back).index(i1)])] == "directed_by^-1"


def test_attribute_edges_year_category_brand_and_generic() -> None:
    assert attribute_edges("release_year", ["1995"]) == [
        ("released_in", "year:1995"),
        ("in_decade", "decade:1990s"),
    ]
    assert attribute_edges("year", ["unknown"]) == [("released_in", "year:unknown")]
    assert attribute_edges("class", ["Drama"]) == [("has_genre", "genre:Drama")]
    assert attribute_edges("categories", ["Tools", "Saws"]) == [
        ("in_category", "category:Tools"),
        ("in_category", "category:Tools > Saws"),
    ]
    assert attribute_edges("brand", ["ACME"]) == [("has_brand", "brand:ACME")]
    assert attribute_edges("Color", ["red"]) == [("has_color", "color:red")]


def test_category_levels_form_a_hierarchy_without_declared_fields() -> None:
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "text": ["x", "y", "z"],
            "categories": [("Tools", "Saws"), ("Tools", "Drills"), ("Lab",)],
            "brand": [("ACME",), ("ACME",), ("Lab Co",)],
        }
    )
    ds = Dataset("shop", empty_frame(INTERACTION_COLUMNS), items=items, text_fields=["text"])
    g = build_graph(ds)  # no attribute_fields declared: tuple-valued columns are used
    assert g.stats()["per_relation"] == {"in_category": 5, "has_brand": 3, "subcategory_of": 2}
    hop2 = {n.node for n in g.neighbors("item:a", hops=2, relations=["in_category"])}
    assert "item:b" in hop2 and "item:c" not in hop2
    assert [
        n.relation for n in g.neighbors("category:Tools > Saws", relations=["subcategory_of"])
    ] == ["subcategory_of"]
    only_brand = build_graph(ds, attribute_fields=["brand"])
    assert set(only_brand.relations.ids()) == {"has_brand"}


def test_include_triples_false_keeps_attributes_only() -> None:
    g = build_graph(movie_dataset(), include_triples=False)
    assert "D1" not in g.entities
    assert g.stats()["items_linked"] == 0
    assert set(g.relations.ids()) == {"has_genre", "released_in", "in_decade"}


# --------------------------------------------------------------------------- validation
def test_item_known_only_from_a_link_is_a_catalogue_item() -> None:
    # i9 has no row in the item table and no interactions (a new item a KG should help with)
    links = [("i1", "E1"), ("i2", "E2"), ("i9", "E3")]
    g = build_graph(movie_dataset(links=links))
    assert g.item_ids == ["i1", "i2", "i3", "i4", "i5", "i9"]
    assert {n.node for n in g.neighbors("item:i9")} == {"D2"}
    assert ("i9", "E3") in g.links


def test_link_without_item_names_file_and_line() -> None:
    links = [("i1", "E1"), ("i2", "E2"), (" ", "E3")]
    with pytest.raises(DataError) as err:
        build_graph(movie_dataset(links=links))
    assert (err.value.file, err.value.line, err.value.field) == ("films.link", 4, "item_id")
    assert "films.link:4" in str(err.value)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (("E2", "", "D1"), "relation"),
        (("", "directed_by", "D1"), "head"),
        (("E2", "x", " "), "tail"),
    ],
)
def test_empty_triple_parts_name_the_line(bad: tuple[str, str, str], field: str) -> None:
    triples = [("E1", "directed_by", "D1"), bad]
    with pytest.raises(DataError) as err:
        build_graph(movie_dataset(triples=triples))
    assert (err.value.file, err.value.line, err.value.field) == ("films.kg", 3, field)


def test_missing_triple_value_and_entity_linked_twice() -> None:
    with pytest.raises(DataError) as err:
        build_graph(movie_dataset(triples=[("E1", "directed_by", None)]))
    assert (err.value.line, err.value.field) == (2, "tail")
    with pytest.raises(DataError) as err:
        build_graph(movie_dataset(links=[("i1", "E1"), ("i2", "E1")]))
    assert (err.value.line, err.value.field) == (3, "entity_id")


def test_item_linked_to_two_entities_merges_both() -> None:
    triples = [("E1", "directed_by", "D1"), ("E1b", "written_by", "W1")]
    g = build_graph(movie_dataset(triples=triples, links=[("i1", "E1"), ("i1", "E1b")]))
    assert g.stats()["items_linked"] == 1
    assert g.links == [("i1", "E1"), ("i1", "E1b")]
    assert {n.node for n in g.neighbors("item:i1")} >= {"D1", "W1"}


def test_unknown_attribute_field_is_an_error() -> None:
    with pytest.raises(DataError, match="unknown attribute field"):
        build_graph(movie_dataset(), attribute_fields=["colour"])


# ------------------------------------------------------------------------------ queries
def test_neighbors_one_and_two_hops(graph: KnowledgeGraph) -> None:
    one = graph.neighbors("item:i1")
    assert {(n.node, n.hop, n.relation, n.via) for n in one} == {
        ("genre:Comedy", 1, "has_genre", "item:i1"),
        ("year:1995", 1, "released_in", "item:i1"),
        ("decade:1990s", 1, "in_decade", "item:i1"),
        ("D1", 1, "directed_by", "item:i1"),
    }
    two = graph.neighbors("item:i1", hops=2)
    hops = {n.node: n.hop for n in two}
    assert hops["item:i2"] == 2
    assert {n for n, h in hops.items() if h == 2} == {"item:i2"}  # i2 via Comedy/1990s/D1
    assert "item:i1" not in hops
    three = {n.node: n.hop for n in graph.neighbors("item:i1", hops=3)}
    assert three["genre:Drama"] == 3 and three["year:1997"] == 3
    assert "item:i3" not in three  # 4 hops away (i1-Comedy-i2-Drama-i3)


def test_neighbors_relation_filter_and_limit(graph: KnowledgeGraph) -> None:
    hits = graph.neighbors("item:i3", hops=2, relations=["directed_by"])
    assert [(n.node, n.hop, n.relation) for n in hits] == [("D2", 1, "directed_by")]
    hits = graph.neighbors("item:i3", hops=3, relations=["directed_by", "spouse_of"])
    assert [(n.node, n.hop, n.relation, n.via) for n in hits] == [
        ("D2", 1, "directed_by", "item:i3"),
        ("D3", 2, "spouse_of", "D2"),
        ("item:i4", 3, "directed_by^-1", "D3"),
    ]
    # An inverse name follows only the inverse direction: from D1 back to its films.
    back = graph.neighbors("D1", relations=["directed_by^-1"])
    assert {n.node for n in back} == {"item:i1", "item:i2"}
    assert graph.neighbors("item:i1", relations=["directed_by^-1"]) == []
    assert len(graph.neighbors("item:i1", hops=2, limit=3)) == 3
    with pytest.raises(KeyError):
        graph.neighbors("item:i1", relations=["no_such_relation"])


def test_paths_shortest_with_steps(graph: KnowledgeGraph) -> None:
    paths = graph.paths("i1", "i2", limit=10)
    assert {p[0][2] for p in paths} == {"genre:Comedy", "decade:1990s", "D1"}
    for p in paths:
        assert len(p) == 2 and p[0][0] == "item:i1" and p[-1][2] == "item:i2"
    director = next(p for p in paths if p[0][2] == "D1")
    assert director == [("item:i1", "directed_by", "D1"), ("D1", "directed_by^-1", "item:i2")]
    assert len(graph.paths("i1", "i2", limit=2)) == 2


def test_paths_three_steps_max_len_and_disconnected(graph: KnowledgeGraph) -> None:
    assert graph.paths("i3", "i4") == [
        [
            ("item:i3", "directed_by", "D2"),
            ("D2", "spouse_of", "D3"),
            ("D3", "directed_by^-1", "item:i4"),
        ]
    ]
    assert graph.paths("i3", "i4", max_len=2) == []
    assert graph.paths("i4", "i3")[0][0] == ("item:i4", "directed_by", "D3")
    assert graph.paths("i1", "i5", max_len=10) == []
    assert graph.paths("i1", "i1") == []
    # i1 -> i3 needs 4 steps (via Comedy/1990s/D1 to i2, then Drama to i3)
    assert graph.paths("i1", "i3", max_len=3) == []
    four = graph.paths("i1", "i3", max_len=4, limit=100)
    assert four and all(len(p) == 4 for p in four)
    assert graph.paths("i1", "i2", relations=["spouse_of"]) == []


def _reference_shortest(graph: KnowledgeGraph, a: int, b: int, mask) -> tuple[int, int]:
    """(length, number of shortest relation paths) by plain BFS with path counting."""
    adj, rel = graph.adjacency, graph.edge_relation
    dist, count = {a: 0}, {a: 1}
    queue = deque([a])
    while queue:
        v = queue.popleft()
        for k in range(adj.indptr[v], adj.indptr[v + 1]):
            if mask is not None and not mask[rel[k]]:
                continue
            w = int(adj.indices[k])
            if w not in dist:
                dist[w], count[w] = dist[v] + 1, 0
                queue.append(w)
            if dist[w] == dist[v] + 1:
                count[w] += count[v]
    return dist.get(b, -1), count.get(b, 0)


def test_paths_match_reference_bfs_on_random_graph() -> None:
    rng = np.random.default_rng(7)
    n, n_items = 60, 20
    entities = IdMap([f"item:{i}" for i in range(n_items)] + [f"e{i}" for i in range(n - n_items)])
    relations = IdMap(["r0", "r1", "r2"])
    triples = np.column_stack(
        [rng.integers(0, n, 70), rng.integers(0, 3, 70), rng.integers(0, n, 70)]
    )
    triples = triples[triples[:, 0] != triples[:, 2]]
    g = KnowledgeGraph(entities, relations, triples, n_items)
    triple_set = {tuple(x) for x in g.triple_frame().itertuples(index=False)}
    checked = 0
    for a in range(n_items):
        for b in range(a + 1, n_items):
            for rels in (None, ["r0", "r1"]):
                length, count = _reference_shortest(g, a, b, g.relation_mask(rels))
                paths = g.paths(str(a), str(b), max_len=6, limit=10_000, relations=rels)
                if length < 0 or length > 6:
                    assert paths == []
                    continue
                checked += 1
                assert len(paths) == count
                assert len({tuple(p) for p in paths}) == count
                for p in paths:
                    assert len(p) == length
                    assert p[0][0] == f"item:{a}" and p[-1][2] == f"item:{b}"
                    for (x, r, y), nxt in zip(p, [*p[1:], None], strict=True):
                        fact = (y, r[:-3], x) if r.endswith("^-1") else (x, r, y)
                        assert fact in triple_set
                        assert rels is None or fact[1] in rels
                        if nxt is not None:
                            assert nxt[0] == y
    assert checked > 50


# ----------------------------------------------------------------------------- similarity
def test_shared_neighbour_similarity(graph: KnowledgeGraph) -> None:
    cos = graph.item_similarity_shared_neighbors(idf=False).toarray()
    assert cos.shape == (5, 5)
    assert np.allclose(np.diag(cos), 0)
    assert np.allclose(cos, cos.T)
    # Entities shared by >= 2 items: Comedy, Drama, 1990s, D1. i1 has 3 of them, i2 all 4.
    assert cos[0, 1] == pytest.approx(3 / np.sqrt(3 * 4), rel=1e-6)
    assert cos[0, 2] == 0 and cos[4].sum() == 0
    jac = graph.item_similarity_shared_neighbors(measure="jaccard", idf=False).toarray()
    assert jac[0, 1] == pytest.approx(3 / 4)
    assert jac[1, 2] == pytest.approx(1 / 4)  # shared Drama; union Comedy, Drama, 1990s, D1
    idf = graph.item_similarity_shared_neighbors(measure="jaccard").toarray()
    assert idf[0, 1] == pytest.approx(3 / 4)  # every shared entity has df = 2: equal weights
    genre_only = graph.item_similarity_shared_neighbors(relations=["has_genre"], idf=False)
    assert genre_only[0, 1] == pytest.approx(1 / np.sqrt(2))
    with pytest.raises(ValueError):
        graph.item_similarity_shared_neighbors(measure="dice")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- store
def test_store_round_trip(tmp_path: Path, graph: KnowledgeGraph) -> None:
    from kinrec.store import Store

    with Store(f"sqlite:///{tmp_path / 'kg.db'}") as store:
        name = graph.save_to_store(store, "films")
        assert name in store.dataset_names()
        graph.save_to_store(store, "films")  # replaces, does not duplicate
        loaded = KnowledgeGraph.load_from_store(store, "films")
    assert loaded.item_ids == graph.item_ids
    assert loaded.links == graph.links
    assert loaded.stats() == graph.stats()
    assert {tuple(x) for x in loaded.triple_frame().values} == {
        tuple(x) for x in graph.triple_frame().values
    }
    assert loaded.paths("i3", "i4") == graph.paths("i3", "i4")


# ------------------------------------------------------------------------------ real data
@pytest.mark.shared
def test_ml100k_graph_builds_and_answers() -> None:
    folder = DATA_DIR / "ml-100k"
    if not (folder / "ml-100k.kg").exists():
        pytest.skip(f"ml-100k not found under {DATA_DIR} (set KINREC_DATA_DIR)")
    from kinrec.data.loaders import load_recbole_atomic

    g = build_graph(load_recbole_atomic(folder))
    stats = g.stats()
    assert stats["items"] == 1682 and stats["items_linked"] == 1598
    assert stats["per_relation"]["film.film.directed_by"] == 1727
    assert g.paths("1", "2") and all(len(p) == 2 for p in g.paths("1", "2"))
