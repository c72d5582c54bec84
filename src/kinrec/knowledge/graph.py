"""Knowledge graph over a catalogue: build from a Dataset, CSR view, neighbour and path queries.

Nodes are typed strings. Every item of the dataset is a node ``"item:<item_id>"`` and the first
``n_items`` node indices are the items in :meth:`Dataset.all_item_ids` order, so item index and
node index coincide. Item attributes become typed entities (``"genre:Comedy"``, ``"year:1995"``,
``"decade:1990s"``, ``"brand:<b>"``, ``"category:<a> > <b>"``, ``"<field>:<token>"``). Imported
triples keep their entity ids, except that an entity linked to an item (``Dataset.links``) *is*
that item's node.

Triples are stored once, forward. For traversal the CSR adjacency holds every triple twice:
``head -> tail`` with relation id ``r`` and ``tail -> head`` with ``r + n_relations``, named
``"<relation>^-1"``. The adjacency is symmetric, so a breadth-first search over it finds paths
in both directions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from kinrec.data.dataset import INTERACTION_COLUMNS, LINK_COLUMNS, Dataset, IdMap, empty_frame
from kinrec.data.errors import DataError

if TYPE_CHECKING:
    from kinrec.store import Store

ITEM_PREFIX = "item:"
INVERSE_SUFFIX = "^-1"
GENRE_FIELDS = frozenset({"genre", "genres", "class", "classes"})
YEAR_FIELDS = frozenset({"year", "release_year"})
CATEGORY_FIELDS = frozenset({"category", "categories", "category_path"})
BRAND_FIELDS = frozenset({"brand", "brands"})
CATEGORY_SEPARATOR = " > "
GRAPH_STORE_SUFFIX = "#graph"
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")

Step = tuple[str, str, str]
"""One edge of a path: ``(from_node, directed_relation, to_node)``."""


@dataclass(frozen=True)
class Neighbor:
    """A node reached from a start node: its hop distance and the last step that reached it."""

    node: str
    hop: int
    relation: str
    via: str


def graph_store_name(dataset_name: str) -> str:
    """The store dataset name under which the graph of ``dataset_name`` is kept."""
    return f"{dataset_name}{GRAPH_STORE_SUFFIX}"


# ---------------------------------------------------------------------------------- building
def _tokens(value: Any) -> tuple[str, ...]:
    """An attribute cell as a tuple of non-empty stripped tokens (tuple, list, str or missing)."""
    if isinstance(value, str):
        value = (value,)
    elif not isinstance(value, (tuple, list, np.ndarray)):
        value = () if pd.isna(value) else (value,)
    return tuple(t for t in (str(v).strip() for v in value) if t)


def attribute_edges(field: str, tokens: Sequence[str]) -> list[tuple[str, str]]:
    """``(relation, entity)`` pairs for one item's attribute ``field`` holding ``tokens``.

    Genre-like fields give ``has_genre -> genre:<g>``; year fields ``released_in -> year:<y>``
    and ``in_decade -> decade:<d>0s``; category fields are a path root-first and give
    ``in_category`` to every level (``category:A``, ``category:A > B``...); brand gives
    ``has_brand``; any other field ``has_<field> -> <field>:<token>``.
    """
    key = field.lower()
    if key in GENRE_FIELDS:
        return [("has_genre", f"genre:{t}") for t in tokens]
    if key in YEAR_FIELDS:
        out = []
        for t in tokens:
            match = _YEAR.search(t)
            year = match.group(1) if match else t
            out.append(("released_in", f"year:{year}"))
            if match:
                out.append(("in_decade", f"decade:{year[:3]}0s"))
        return out
    if key in CATEGORY_FIELDS:
        return [
            ("in_category", "category:" + CATEGORY_SEPARATOR.join(tokens[: i + 1]))
            for i in range(len(tokens))
        ]
    if key in BRAND_FIELDS:
        return [("has_brand", f"brand:{t}") for t in tokens]
    return [(f"has_{key}", f"{key}:{t}") for t in tokens]


def _category_parents(entity: str) -> str | None:
    """The parent level of a category-path entity, or None at the root."""
    path = entity[len("category:") :]
    if CATEGORY_SEPARATOR not in path:
        return None
    return "category:" + path.rsplit(CATEGORY_SEPARATOR, 1)[0]


def _where(frame: pd.DataFrame, pos: int, table: str) -> tuple[str, int | None, str]:
    """File, line and a row note for row ``pos`` of a loaded frame (attrs source/first_line)."""
    source = frame.attrs.get("source", f"<dataset.{table}>")
    first = frame.attrs.get("first_line")
    line = int(first) + pos if first is not None else None
    return source, line, f"(row {pos})"


def _blank(series: pd.Series) -> np.ndarray:
    """Boolean mask of missing or whitespace-only cells."""
    return (series.isna() | (series.astype("string").str.strip() == "")).to_numpy(bool)


def _check_present(frame: pd.DataFrame, columns: Iterable[str], table: str) -> None:
    for column in columns:
        if column not in frame.columns:
            raise DataError(f"{table} has no column {column!r}", file=_where(frame, 0, table)[0])
        bad = np.flatnonzero(_blank(frame[column]))
        if len(bad):
            file, line, row = _where(frame, int(bad[0]), table)
            raise DataError(f"empty {column} {row}", file=file, line=line, field=column)


def _default_fields(dataset: Dataset) -> list[str]:
    """Declared attribute fields, else every item column (not id/text) holding tuples."""
    if dataset.attribute_fields:
        return [f for f in dataset.attribute_fields if f in dataset.items.columns]
    fields = []
    for column in dataset.items.columns:
        if column == "item_id" or column in dataset.text_fields:
            continue
        values = dataset.items[column].dropna()
        if len(values) and all(isinstance(v, (tuple, list)) for v in values.iloc[:100]):
            fields.append(column)
    return fields


def build_graph(
    dataset: Dataset,
    attribute_fields: Sequence[str] | None = None,
    include_triples: bool = True,
) -> KnowledgeGraph:
    """Build the knowledge graph of ``dataset``: item attributes plus imported triples.

    ``attribute_fields`` defaults to ``dataset.attribute_fields`` (or, when none are declared,
    every tuple-valued item column). Items are the catalogue of :meth:`Dataset.all_item_ids`
    (items known only from links included). Raises :class:`DataError` naming file and line for
    an entity linked to two items, or an empty item, entity, head, relation or tail.
    """
    item_ids = [str(i) for i in dataset.all_item_ids()]
    entities = IdMap(ITEM_PREFIX + i for i in item_ids)
    relations = IdMap()
    heads: list[int] = []
    rels: list[int] = []
    tails: list[int] = []

    fields = _default_fields(dataset) if attribute_fields is None else list(attribute_fields)
    items = dataset.items
    categories: set[str] = set()
    for field in fields:
        if field not in items.columns:
            raise DataError(
                "unknown attribute field", file=_where(items, 0, "items")[0], field=field
            )
        for item_id, value in zip(items["item_id"], items[field], strict=True):
            node = entities.index(ITEM_PREFIX + str(item_id))
            for relation, entity in attribute_edges(field, _tokens(value)):
                heads.append(node)
                rels.append(relations.add(relation))
                tails.append(entities.add(entity))
                if entity.startswith("category:"):
                    categories.add(entity)
    for entity in sorted(categories):
        parent = _category_parents(entity)
        if parent is not None:
            heads.append(entities.add(entity))
            rels.append(relations.add("subcategory_of"))
            tails.append(entities.add(parent))

    links: list[tuple[str, str]] = []
    if include_triples:
        alias = _link_aliases(dataset, links)
        triples = dataset.triples
        if len(triples):
            _check_present(triples, ("head", "relation", "tail"), "triples")
            for h, r, t in zip(triples["head"], triples["relation"], triples["tail"], strict=True):
                h, t = str(h).strip(), str(t).strip()
                heads.append(entities.add(alias.get(h, h)))
                rels.append(relations.add(str(r).strip()))
                tails.append(entities.add(alias.get(t, t)))

    array = np.array([heads, rels, tails], dtype=np.int64).T
    return KnowledgeGraph(entities, relations, array, len(item_ids), links, name=dataset.name)


def _link_aliases(dataset: Dataset, links: list[tuple[str, str]]) -> dict[str, str]:
    """Validate ``dataset.links``; map each linked entity id to its item node (fills ``links``).

    A linked item needs no row in the item table nor interactions: it is in the catalogue
    (:meth:`Dataset.all_item_ids`), so it has an item node, and reaches other items through
    its entity's triples.
    """
    frame = dataset.links
    alias: dict[str, str] = {}
    if not len(frame):
        return alias
    _check_present(frame, ("item_id", "entity_id"), "links")
    for pos, (item, entity) in enumerate(zip(frame["item_id"], frame["entity_id"], strict=True)):
        item, entity = str(item).strip(), str(entity).strip()
        node = ITEM_PREFIX + item
        if alias.get(entity, node) != node:
            file, line, row = _where(frame, pos, "links")
            raise DataError(
                f"entity {entity!r} is already linked to {alias[entity]!r} {row}",
                file=file,
                line=line,
                field="entity_id",
            )
        if entity not in alias:
            alias[entity] = node
            links.append((item, entity))
    return alias


# ---------------------------------------------------------------------------------- the graph
class KnowledgeGraph:
    """Entities, relations and triples as int arrays, with a CSR adjacency for traversal.

    ``triples`` is an ``(m, 3)`` int64 array of ``(head, relation, tail)`` indices into
    ``entities`` and ``relations`` (deduplicated). ``adjacency`` is an ``n x n`` scipy CSR
    matrix whose stored entries are the directed edges (multi-edges allowed: its arrays are
    kept as built, do not canonicalise them); ``edge_relation[k]`` is the directed relation id
    of the edge stored at position ``k`` (``r`` forward, ``r + n_relations`` inverse).
    ``links`` lists the ``(item_id, entity_id)`` pairs that merged an entity into an item node.
    """

    def __init__(
        self,
        entities: IdMap,
        relations: IdMap,
        triples: np.ndarray,
        n_items: int,
        links: Sequence[tuple[str, str]] = (),
        name: str = "",
    ) -> None:
        self.entities = entities
        self.relations = relations
        self.n_items = int(n_items)
        self.links = list(links)
        self.name = name
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        self.triples = np.unique(triples, axis=0) if len(triples) else triples
        n, n_rel = len(entities), len(relations)
        h, r, t = self.triples.T
        src = np.concatenate([h, t])
        dst = np.concatenate([t, h])
        rel = np.concatenate([r, r + n_rel])
        order = np.argsort(src, kind="stable")
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
        self.adjacency = sp.csr_matrix(
            (np.ones(len(order), dtype=np.float32), dst[order], indptr), shape=(n, n)
        )
        self.edge_relation = rel[order]
        self._indptr = self.adjacency.indptr
        self._indices = self.adjacency.indices
        self._degree = np.diff(indptr)
        self._names = entities.ids()
        self.item_ids = [e[len(ITEM_PREFIX) :] for e in self._names[: self.n_items]]
        """Dataset item ids in item (= node) order."""
        names = relations.ids()
        self.directed_relations = names + [f"{x}{INVERSE_SUFFIX}" for x in names]

    # ------------------------------------------------------------------ vocabulary helpers
    @property
    def n_entities(self) -> int:
        return len(self.entities)

    @property
    def n_relations(self) -> int:
        return len(self.relations)

    @staticmethod
    def item_node(item_id: str) -> str:
        """The node id of an item."""
        return f"{ITEM_PREFIX}{item_id}"

    def item_index(self, item_id: str) -> int:
        """Node index (= item index) of a dataset item id; ``KeyError`` when unknown."""
        return self.entities.index(self.item_node(item_id))

    def relation_mask(self, relations: Iterable[str] | None) -> np.ndarray | None:
        """Allowed directed relation ids as a boolean mask (None: all).

        A base name allows the relation in both directions; ``"name^-1"`` only the inverse.
        """
        if relations is None:
            return None
        n_rel = self.n_relations
        mask = np.zeros(2 * n_rel, dtype=bool)
        for name in relations:
            if name in self.relations:
                r = self.relations.index(name)
                mask[[r, r + n_rel]] = True
            elif name.endswith(INVERSE_SUFFIX) and name[: -len(INVERSE_SUFFIX)] in self.relations:
                mask[self.relations.index(name[: -len(INVERSE_SUFFIX)]) + n_rel] = True
            else:
                raise KeyError(f"unknown relation {name!r}")
        return mask

    def _inverse(self, directed: np.ndarray | int) -> np.ndarray | int:
        n_rel = self.n_relations
        return np.where(directed < n_rel, directed + n_rel, directed - n_rel)

    # ------------------------------------------------------------------ traversal
    def _expand(
        self, frontier: np.ndarray, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All allowed edges leaving ``frontier``: ``(src, dst, directed_relation)`` arrays."""
        starts = self._indptr[frontier]
        counts = self._indptr[frontier + 1] - starts
        total = int(counts.sum())
        offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
        src = np.repeat(frontier, counts)
        dst = self._indices[offsets]
        rel = self.edge_relation[offsets]
        if mask is not None:
            keep = mask[rel]
            src, dst, rel = src[keep], dst[keep], rel[keep]
        return src, dst, rel

    def neighbors(
        self,
        node: str,
        hops: int = 1,
        relations: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[Neighbor]:
        """Nodes within ``hops`` of ``node`` (itself excluded), nearest first.

        Each comes with its hop distance and the first edge (in adjacency order) that reached
        it. ``relations`` restricts the edges followed (see :meth:`relation_mask`); ``limit``
        caps the number returned.
        """
        start = self.entities.index(node)
        mask = self.relation_mask(relations)
        seen = np.zeros(self.n_entities, dtype=bool)
        seen[start] = True
        frontier = np.array([start], dtype=np.int64)
        out: list[Neighbor] = []
        names = self._names
        for hop in range(1, hops + 1):
            if not len(frontier) or (limit is not None and len(out) >= limit):
                break
            src, dst, rel = self._expand(frontier, mask)
            fresh = ~seen[dst]
            src, dst, rel = src[fresh], dst[fresh], rel[fresh]
            _, first = np.unique(dst, return_index=True)
            first.sort()
            src, dst, rel = src[first], dst[first], rel[first]
            seen[dst] = True
            take = len(dst) if limit is None else min(len(dst), limit - len(out))
            steps = zip(src[:take].tolist(), dst[:take].tolist(), rel[:take].tolist(), strict=True)
            out.extend(
                Neighbor(names[d], hop, self.directed_relations[r], names[s]) for s, d, r in steps
            )
            frontier = dst
        return out

    def paths(
        self,
        item_a: str,
        item_b: str,
        max_len: int = 3,
        limit: int = 10,
        relations: Iterable[str] | None = None,
    ) -> list[list[Step]]:
        """Shortest relation paths between two items (by item id), at most ``max_len`` edges.

        Bidirectional breadth-first search over the CSR view; returns up to ``limit`` paths,
        all of the shortest length, each a list of ``(node, relation, node)`` steps from
        ``item_a`` to ``item_b``. Paths through low-degree (more specific) nodes come first,
        so "same director" precedes "same language". Empty when none exists within
        ``max_len`` (or a == b).
        """
        return self.node_paths(
            self.item_node(item_a), self.item_node(item_b), max_len, limit, relations
        )

    def node_paths(
        self,
        node_a: str,
        node_b: str,
        max_len: int = 3,
        limit: int = 10,
        relations: Iterable[str] | None = None,
    ) -> list[list[Step]]:
        """:meth:`paths` between any two nodes (by node id)."""
        a, b = self.entities.index(node_a), self.entities.index(node_b)
        if a == b or limit <= 0:
            return []
        fwd = self.relation_mask(relations)
        bwd = None if fwd is None else fwd[self._inverse(np.arange(len(fwd)))]
        n = self.n_entities
        dist = {True: np.full(n, -1, np.int64), False: np.full(n, -1, np.int64)}
        dist[True][a], dist[False][b] = 0, 0
        frontier = {True: np.array([a]), False: np.array([b])}
        depth = {True: 0, False: 0}
        middle = np.empty(0, dtype=np.int64)
        while depth[True] + depth[False] < max_len:
            side = len(frontier[True]) <= len(frontier[False])  # True: expand from a
            _, dst, _ = self._expand(frontier[side], fwd if side else bwd)
            dst = np.unique(dst[dist[side][dst] < 0])
            depth[side] += 1
            dist[side][dst] = depth[side]
            frontier[side] = dst
            middle = dst[dist[not side][dst] >= 0]
            if len(middle) or not len(dst):
                break
        if not len(middle):
            return []
        out: list[list[Step]] = []
        for m in middle[np.argsort(self._degree[middle], kind="stable")].tolist():
            rights = list(islice(self._walk(m, dist[False], fwd, forward=True), limit))
            for left in self._walk(m, dist[True], bwd, forward=False):
                for right in rights:
                    out.append(left[::-1] + right)
                    if len(out) >= limit:
                        return out
        return out

    def _walk(
        self, node: int, dist: np.ndarray, mask: np.ndarray | None, forward: bool
    ) -> Iterator[list[Step]]:
        """Steps from ``node`` down the BFS layers of ``dist`` to its root (distance 0).

        ``forward``: steps read node -> next; otherwise next -> node (the relation inverted),
        so that the reversed list reads from the root to ``node``.
        """
        if dist[node] == 0:
            yield []
            return
        lo, hi = self._indptr[node], self._indptr[node + 1]
        nxt, rel = self._indices[lo:hi], self.edge_relation[lo:hi]
        keep = dist[nxt] == dist[node] - 1
        if mask is not None:
            keep &= mask[rel]
        nxt, rel = nxt[keep], rel[keep]
        order = np.argsort(self._degree[nxt], kind="stable")
        here = self._names[node]
        for w, r in zip(nxt[order].tolist(), rel[order].tolist(), strict=True):
            there = self._names[w]
            if forward:
                step = (here, self.directed_relations[r], there)
            else:
                step = (there, self.directed_relations[int(self._inverse(r))], here)
            for rest in self._walk(w, dist, mask, forward):
                yield [step, *rest]

    # ------------------------------------------------------------------ similarity
    def item_entity_matrix(self, relations: Iterable[str] | None = None) -> sp.csr_matrix:
        """Binary ``n_items x n_entities`` incidence of items and their 1-hop neighbours."""
        end = self._indptr[self.n_items]
        cols, rel = self._indices[:end], self.edge_relation[:end]
        rows = np.repeat(np.arange(self.n_items), np.diff(self._indptr[: self.n_items + 1]))
        mask = self.relation_mask(relations)
        if mask is not None:
            keep = mask[rel]
            rows, cols = rows[keep], cols[keep]
        m = sp.csr_matrix(
            (np.ones(len(rows), np.float64), (rows, cols)), shape=(self.n_items, self.n_entities)
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def _entity_weights(self, incidence: sp.csr_matrix, idf: bool, max_df: float) -> np.ndarray:
        """``log(n_items / df)`` per entity (or 1), 0 for entities on one item or > max_df."""
        df = np.asarray(incidence.sum(axis=0)).ravel()
        weight = np.log(self.n_items / np.maximum(df, 1)) if idf else np.ones_like(df)
        weight[(df < 2) | (df > max_df * self.n_items)] = 0.0
        return weight

    def item_profile_rows(
        self, relations: Iterable[str] | None = None, idf: bool = True, max_df: float = 1.0
    ) -> sp.csr_matrix:
        """Items as L2-normalised, IDF-weighted rows over their 1-hop neighbours (CSR):
        the dot product of two rows is their shared-neighbour cosine."""
        incidence = self.item_entity_matrix(relations)
        x = incidence @ sp.diags(self._entity_weights(incidence, idf, max_df))
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        return (sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x).tocsr()

    def item_similarity_shared_neighbors(
        self,
        relations: Iterable[str] | None = None,
        measure: Literal["cosine", "jaccard"] = "cosine",
        idf: bool = True,
        max_df: float = 1.0,
    ) -> sp.csr_matrix:
        """Item-item similarity from shared 1-hop neighbours, ``n_items x n_items`` in item order.

        Each neighbour entity weighs ``log(n_items / df)`` (``idf``; else 1), ``df`` = the
        number of items it touches; entities touching one item, or more than ``max_df`` of the
        items, are dropped. ``cosine`` is over the weighted incidence rows; ``jaccard`` is the
        weighted Jaccard (shared weight / union weight). Diagonal is zero; float32 CSR.
        """
        incidence = self.item_entity_matrix(relations)
        weight = self._entity_weights(incidence, idf, max_df)
        if measure == "cosine":
            x = self.item_profile_rows(relations, idf, max_df)
            sim = (x @ x.T).tocsr()
        elif measure == "jaccard":
            shared = (incidence @ sp.diags(weight) @ incidence.T).tocoo()
            total = np.asarray(incidence @ weight).ravel()
            union = total[shared.row] + total[shared.col] - shared.data
            data = np.divide(shared.data, union, out=np.zeros_like(shared.data), where=union > 0)
            sim = sp.csr_matrix((data, (shared.row, shared.col)), shape=shared.shape)
        else:
            raise ValueError(f"unknown measure {measure!r}")
        sim = sim.tocoo()
        keep = (sim.row != sim.col) & (sim.data != 0)
        return sp.csr_matrix(
            (sim.data[keep].astype(np.float32), (sim.row[keep], sim.col[keep])), shape=sim.shape
        )

    # ------------------------------------------------------------------ summary
    def stats(self) -> dict[str, Any]:
        """Counts, per-relation triple counts and degree statistics (both directions)."""
        degree = self._degree
        item_degree = degree[: self.n_items]
        per_relation = np.bincount(self.triples[:, 1], minlength=self.n_relations)

        def summary(d: np.ndarray) -> dict[str, float]:
            if not len(d):
                return {"mean": 0.0, "median": 0.0, "max": 0, "isolated": 0}
            return {
                "mean": round(float(d.mean()), 3),
                "median": float(np.median(d)),
                "max": int(d.max()),
                "isolated": int((d == 0).sum()),
            }

        return {
            "entities": self.n_entities,
            "items": self.n_items,
            "items_linked": len({item for item, _ in self.links}),
            "items_with_edges": int((item_degree > 0).sum()),
            "relations": self.n_relations,
            "triples": len(self.triples),
            "edges": int(self._indptr[-1]),
            "per_relation": {
                name: int(c) for name, c in zip(self.relations.ids(), per_relation, strict=True)
            },
            "degree": summary(degree),
            "item_degree": summary(item_degree),
        }

    def triple_frame(self) -> pd.DataFrame:
        """The triples with string ids: columns ``head``, ``relation``, ``tail``."""
        ent, rel = self.entities.ids(), self.relations.ids()
        h, r, t = self.triples.T.tolist() if len(self.triples) else ([], [], [])
        return pd.DataFrame(
            {
                "head": [ent[i] for i in h],
                "relation": [rel[i] for i in r],
                "tail": [ent[i] for i in t],
            }
        )

    # ------------------------------------------------------------------ store
    def save_to_store(self, store: Store, dataset_name: str) -> str:
        """Write this graph into ``store``'s knowledge tables; returns the stored name.

        The graph is derived data (attribute entities, item nodes), so it is kept apart from
        the raw dataset ``dataset_name``, as the companion dataset
        ``"<dataset_name>#graph"``: its item table is the graph's item order, its triples are
        the graph's triples (string ids), its links the item-entity merges. A graph stored
        before under that name is replaced.
        """
        name = graph_store_name(dataset_name)
        if name in store.dataset_names():
            store.delete_dataset(name)
        store.ingest(
            Dataset(
                name=name,
                interactions=empty_frame(INTERACTION_COLUMNS),
                items=pd.DataFrame({"item_id": pd.Series(self.item_ids, dtype=object)}),
                triples=self.triple_frame(),
                links=pd.DataFrame(self.links or None, columns=list(LINK_COLUMNS), dtype=object),
            )
        )
        return name

    @classmethod
    def load_from_store(cls, store: Store, dataset_name: str) -> KnowledgeGraph:
        """The graph :meth:`save_to_store` wrote for ``dataset_name``.

        Items keep their order (and indices); the other entities are numbered by first
        appearance in the stored triples, so their indices may differ from the saved graph's.
        """
        stored = store.load_dataset(graph_store_name(dataset_name))
        item_ids = [str(i) for i in stored.items["item_id"]]
        entities = IdMap(ITEM_PREFIX + i for i in item_ids)
        relations = IdMap()
        frame = stored.triples
        triples = np.array(
            [
                (entities.add(h), relations.add(r), entities.add(t))
                for h, r, t in zip(frame["head"], frame["relation"], frame["tail"], strict=True)
            ],
            dtype=np.int64,
        ).reshape(-1, 3)
        links = list(zip(stored.links["item_id"], stored.links["entity_id"], strict=True))
        return cls(entities, relations, triples, len(item_ids), links, name=dataset_name)

    def __repr__(self) -> str:
        return (
            f"KnowledgeGraph({self.name!r}: {self.n_entities} entities, {self.n_items} items, "
            f"{self.n_relations} relations, {len(self.triples)} triples)"
        )
