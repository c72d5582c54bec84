"""Item content as model inputs: frozen text embeddings and knowledge-graph incidence.

:func:`build_item_content` turns a dataset's side information into two matrices aligned with a
model's item vocabulary:

* ``text``: the language-model embedding of each item's text (L2-normalised; zero rows and
  ``has_text = False`` for items without text);
* ``entities``: a sparse item x entity incidence over the item's 1-hop knowledge-graph
  neighbours (attribute entities such as genres and years, plus imported triples), weighted by
  IDF and L2-normalised per row, so the transfer model can aggregate entity embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from kinrec.data.dataset import Dataset, IdMap

TextEmbedder = Callable[[list[str]], np.ndarray]
"""Maps item texts to an ``(n, d)`` float32 array."""


@dataclass
class ItemContent:
    """Content views of a catalogue, rows in the model's item order."""

    text: np.ndarray
    has_text: np.ndarray
    entities: sp.csr_matrix
    entity_ids: list[str]
    entity_idf: np.ndarray

    @property
    def n_items(self) -> int:
        return self.text.shape[0]


def item_texts(dataset: Dataset, item_ids: Sequence[str]) -> list[str]:
    """Rendered text of each item (empty string when unknown), via the dataset's template."""
    from kinrec.knowledge.text import render_item_texts

    rendered = dict(render_item_texts(dataset))
    return [rendered.get(str(i), "") for i in item_ids]


def default_text_embedder(
    model_path: str | None = None, adapter_path: str | None = None
) -> TextEmbedder:
    """The bundled MiniLM (or a local sentence-transformers folder), optionally with a LoRA
    adapter; vectors are cached in the store named by ``KINREC_DB`` when set."""
    import os

    from kinrec.knowledge.encoder import EncoderConfig, StoreEmbeddingCache, TextEncoder

    options: dict[str, object] = {}
    if model_path is not None:
        options["model_path"] = model_path
    if adapter_path is not None:
        options["adapter_path"] = adapter_path
    cache = StoreEmbeddingCache(os.environ["KINREC_DB"]) if os.environ.get("KINREC_DB") else None
    encoder = TextEncoder(EncoderConfig(**options), cache=cache)
    return lambda texts: encoder.encode(list(texts))


def model_text_embedder(model: Any) -> TextEmbedder:
    """The text encoder named by ``model.config`` (``encoder_path``, ``adapter_path``), loaded
    once per model object and kept on it (new items reuse it)."""
    if getattr(model, "_text_embedder", None) is None:
        model._text_embedder = default_text_embedder(
            model.config.encoder_path, model.config.adapter_path
        )
    return model._text_embedder


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def build_item_content(
    dataset: Dataset,
    item_map: IdMap,
    embed: TextEmbedder | None = None,
    min_entity_items: int = 2,
    use_triples: bool = True,
) -> ItemContent:
    """Text embeddings and entity incidence for every item of ``item_map``.

    Entities touching fewer than ``min_entity_items`` items carry no transferable signal and
    are dropped.
    """
    from kinrec.knowledge.graph import build_graph

    ids = item_map.ids()
    texts = item_texts(dataset, ids)
    has_text = np.array([bool(t.strip()) for t in texts])
    text = np.zeros((len(ids), 0), dtype=np.float32)
    if has_text.any():
        embed = embed or default_text_embedder()
        vectors = np.asarray(embed([t for t, h in zip(texts, has_text, strict=True) if h]))
        text = np.zeros((len(ids), vectors.shape[1]), dtype=np.float32)
        text[has_text] = _normalise_rows(vectors)

    graph = build_graph(dataset, include_triples=use_triples)
    incidence = graph.item_entity_matrix()  # graph item order -> remap to the model's
    graph_rows = {item_id: row for row, item_id in enumerate(graph.item_ids)}
    rows = np.array([graph_rows.get(str(i), -1) for i in ids])
    present = rows >= 0
    if present.any():
        picked = incidence[np.where(present, rows, 0)]
        picked = sp.diags(present.astype(np.float64)) @ picked
    else:  # no item in the graph (or no graph at all)
        picked = sp.csr_matrix((len(ids), incidence.shape[1]), dtype=np.float64)
    keep, idf = entity_columns(picked, min_entity_items)
    picked = picked[:, keep].tocsr()
    entities = _weight_rows(picked, idf)
    names = graph.entities.ids(keep)
    return ItemContent(text, has_text, entities, names, idf)


def entity_columns(incidence: sp.spmatrix, min_entity_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The entity columns of an item x entity ``incidence`` that touch at least
    ``min_entity_items`` items, and their IDF ``log(n_items / items touched)`` (float32)."""
    df = np.asarray((incidence > 0).sum(axis=0)).ravel()
    keep = np.flatnonzero(df >= min_entity_items)
    return keep, np.log(incidence.shape[0] / df[keep]).astype(np.float32)


def _weight_rows(incidence: sp.spmatrix, idf: np.ndarray) -> sp.csr_matrix:
    """IDF-weighted, row-L2-normalised incidence (float32 CSR)."""
    weighted = sp.csr_matrix(incidence, dtype=np.float64) @ sp.diags(idf.astype(np.float64))
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    weighted = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ weighted
    return sp.csr_matrix(weighted, dtype=np.float32)


def content_for_new_items(
    dataset: Dataset,
    item_ids: Sequence[str],
    entity_ids: Sequence[str],
    entity_idf: np.ndarray,
    embed: TextEmbedder,
) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """Text embeddings, has-text mask and incidence for new items over a fixed entity vocabulary.

    Entities the model has never seen are ignored (their embeddings do not exist).
    """
    texts = item_texts(dataset, item_ids)
    has_text = np.array([bool(t.strip()) for t in texts])
    vectors = embed(texts) if has_text.any() else np.zeros((len(texts), 1))
    text = _normalise_rows(np.asarray(vectors, dtype=np.float32))
    text[~has_text] = 0.0
    links = entity_links(dataset, item_ids, entity_ids)
    return text, has_text, weighted_incidence(links, entity_idf)


@dataclass
class EntityLinks:
    """The item -> entity links of a catalogue, each with the relation that makes it.

    One entry per (item row, entity column, relation); ``relation`` indexes ``relations``.
    A relation names both its directions: an item that is the tail of a triple reaches the
    head through that triple's relation. Columns are the entities of ``entities``.
    """

    rows: np.ndarray
    cols: np.ndarray
    relation: np.ndarray
    relations: list[str]
    entities: list[str]
    n_items: int

    def incidence(self, weights: Mapping[str, float] | None = None) -> sp.csr_matrix:
        """The ``n_items x len(entities)`` incidence (float64 CSR): each linked pair holds
        the weight of its relation (``weights``; 1 for a relation not named there). A pair
        linked through several relations holds the largest of their weights, so that unit
        weights give the binary incidence. Pairs of weight 0 are dropped."""
        w = np.ones(len(self.relations))
        for r, name in enumerate(self.relations):
            w[r] = (weights or {}).get(name, 1.0)
        n_cols = len(self.entities)
        key = self.rows.astype(np.int64) * n_cols + self.cols
        order = np.argsort(key, kind="stable")
        key, data = key[order], w[self.relation[order]]
        if len(key):
            first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            data, key = np.maximum.reduceat(data, first), key[first]
        rows, cols = np.divmod(key, max(n_cols, 1))
        matrix = sp.csr_matrix((data, (rows, cols)), shape=(self.n_items, n_cols))
        matrix.eliminate_zeros()
        return matrix

    def items_per_relation(self) -> np.ndarray:
        """How many items each relation links to at least one entity."""
        pairs = np.unique(self.relation.astype(np.int64) * max(self.n_items, 1) + self.rows)
        return np.bincount(pairs // max(self.n_items, 1), minlength=len(self.relations))

    def relation_groups(self) -> list[list[str]]:
        """The relations that link items, grouped where they link the very same (item,
        entity) pairs (a relation and its inverse imported as a relation of its own), the
        groups in descending order of the items they touch."""
        import hashlib

        key = self.rows.astype(np.int64) * max(len(self.entities), 1) + self.cols
        order = np.lexsort((key, self.relation))
        relation, key = self.relation[order], key[order]
        bounds = np.searchsorted(relation, np.arange(len(self.relations) + 1))
        touched = self.items_per_relation()
        groups: dict[bytes, list[str]] = {}
        for r in np.argsort(-touched, kind="stable"):
            if touched[r] == 0:
                break
            pairs = np.unique(key[bounds[r] : bounds[r + 1]])
            groups.setdefault(hashlib.sha1(pairs.tobytes()).digest(), []).append(self.relations[r])
        return list(groups.values())

    def columns(self, keep: np.ndarray) -> EntityLinks:
        """These links restricted to the entity columns ``keep`` (renumbered in that order)."""
        new = np.full(len(self.entities), -1, dtype=np.int64)
        new[keep] = np.arange(len(keep))
        cols = new[self.cols]
        inside = cols >= 0
        return EntityLinks(
            self.rows[inside],
            cols[inside],
            self.relation[inside],
            self.relations,
            [self.entities[k] for k in keep],
            self.n_items,
        )


def entity_links(
    dataset: Dataset,
    item_ids: Sequence[str],
    entity_ids: Sequence[str] | None = None,
    use_triples: bool = True,
) -> EntityLinks:
    """The links of ``item_ids`` (rows in that order) to their 1-hop knowledge-graph
    neighbours, with their relations: the binary incidence of :func:`build_item_content`
    split by relation. ``entity_ids``: a fixed entity vocabulary (the columns; entities
    outside it are ignored), else every entity of the graph. Items not in the graph have
    no links."""
    from kinrec.knowledge.graph import build_graph

    graph = build_graph(dataset, include_triples=use_triples)
    indptr = graph.adjacency.indptr
    end = indptr[graph.n_items]
    graph_rows = np.repeat(np.arange(graph.n_items), np.diff(indptr[: graph.n_items + 1]))
    cols = graph.adjacency.indices[:end].astype(np.int64)
    relation = graph.edge_relation[:end] % max(graph.n_relations, 1)
    position = {item_id: row for row, item_id in enumerate(graph.item_ids)}
    out = np.full(graph.n_items, -1, dtype=np.int64)
    for row, item_id in enumerate(item_ids):
        if (node := position.get(str(item_id))) is not None:
            out[node] = row
    rows = out[graph_rows]
    inside = rows >= 0
    rows, cols, relation = rows[inside], cols[inside], relation[inside]
    if entity_ids is None:
        entities = graph.entities.ids()
    else:
        entities = list(entity_ids)
        vocab = {name: k for k, name in enumerate(entities)}
        used, at = np.unique(cols, return_inverse=True)
        known = np.array([vocab.get(n, -1) for n in graph.entities.ids(used)], dtype=np.int64)
        cols = known[at]
        inside = cols >= 0
        rows, cols, relation = rows[inside], cols[inside], relation[inside]
    return EntityLinks(rows, cols, relation, graph.relations.ids(), entities, len(item_ids))


def weighted_incidence(
    links: EntityLinks, idf: np.ndarray, weights: Mapping[str, float] | None = None
) -> sp.csr_matrix:
    """The IDF-weighted, row-L2-normalised incidence of ``links`` with relation weights:
    ``sum_r w_r X_r`` normalised per row, ``X_r`` the IDF-weighted binary incidence of
    relation ``r`` (a pair that several relations link counts once, at the largest of
    their weights). Unit weights give :func:`build_item_content`'s ``entities``: one
    definition for the items a model is fitted on and the items it takes later."""
    return _weight_rows(links.incidence(weights), idf)


def item_neighbour_graph(
    dataset: Dataset, item_ids: Sequence[str], k: int, min_entity_items: int = 2
) -> sp.csr_matrix | None:
    """Each item's ``k`` knowledge-graph neighbours, the items sharing its most specific
    entities (cosine of the IDF-weighted entity rows of :func:`weighted_incidence`,
    symmetrised), each row scaled to sum to 1 (items without a shared entity: an empty
    row); None where no two items share an entity (or the data has no graph)."""
    from kinrec.models.ease import sparse_neighbour_graph

    links = entity_links(dataset, item_ids)
    keep, idf = entity_columns(links.incidence(), min_entity_items)
    if not len(keep) or k <= 0:
        return None
    graph = sparse_neighbour_graph(weighted_incidence(links.columns(keep), idf), k)
    if graph.nnz == 0:
        return None
    sums = np.asarray(graph.sum(axis=1)).ravel()
    scaled = sp.diags(1.0 / np.where(sums > 0, sums, 1.0)) @ graph
    return sp.csr_matrix(scaled, dtype=np.float32)
