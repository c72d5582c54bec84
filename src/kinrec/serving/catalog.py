"""The served catalogue in memory: item metadata, filters, retirement, and the content views
(text TF-IDF and knowledge graph) behind ``similar?by=text|kg`` and explanations.

Item positions are the model's item indices. An item can be stored without being servable
(the model cannot score it); ``servable`` marks those the model scores.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from kinrec.data.dataset import Dataset
from kinrec.serving.persist import StoredCatalog

log = logging.getLogger("kinrec.serving")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class ItemInfo:
    """What the store holds about one item."""

    texts: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    entity_id: str | None = None


def _clean_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    return text if text and text != "nan" else None


class Catalog:
    """Item ids in model order, their metadata, and lazily built content views."""

    def __init__(self, item_ids: Sequence[str], stored: StoredCatalog, dataset: str) -> None:
        self.dataset = dataset
        self.text_fields = list(stored.fields.text_fields)
        self.attribute_fields = list(stored.fields.attribute_fields)
        self.text_template = stored.fields.text_template
        self.entities = set(stored.entities)
        self.relations = set(stored.relations)
        self.triples = stored.triples.copy()
        self.links = stored.links.copy()
        self.info: dict[str, ItemInfo] = {}
        items = stored.items
        columns = list(items.columns)
        # plain tuples: named ones rename a field named like a keyword (ml-100k's ``class``)
        # or one that is not an identifier, which then loses its values
        for row in items.itertuples(index=False, name=None):
            values = dict(zip(columns, row, strict=True))
            texts = {f: t for f in self.text_fields if (t := _clean_text(values.get(f)))}
            attrs = {
                f: tuple(str(x) for x in values.get(f) or ())
                for f in self.attribute_fields
                if values.get(f)
            }
            self.info[str(values["item_id"])] = ItemInfo(texts, attrs)
        for item, entity in zip(self.links["item_id"], self.links["entity_id"], strict=True):
            if item in self.info:
                self.info[item].entity_id = entity
        self.ids: list[str] = []
        self.servable = np.zeros(0, dtype=bool)
        self.retired = np.zeros(0, dtype=bool)
        self.version = 0
        self._masks: dict[str, np.ndarray] = {}
        self._tfidf: sp.csr_matrix | None = None
        self._graph = None
        self._graph_built = False
        self.extend(item_ids)

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, item_ids: Sequence[str]) -> None:
        """Append servable items (the model's new indices, in order)."""
        self.ids.extend(item_ids)
        grow = len(item_ids)
        self.servable = np.concatenate([self.servable, np.ones(grow, dtype=bool)])
        self.retired = np.concatenate([self.retired, np.zeros(grow, dtype=bool)])
        for item in item_ids:
            self.info.setdefault(item, ItemInfo())
        self.changed()

    def retire(self, idx: int) -> None:
        """Never recommend item ``idx`` again (content views are unaffected)."""
        self.retired[idx] = True
        self.version += 1

    def stored_only(self, known: set[str]) -> list[str]:
        """Stored items the model does not know (in stored order)."""
        return [i for i in self.info if i not in known]

    def changed(self) -> None:
        """Drop derived views (filters, TF-IDF, graph) after a catalogue change."""
        self._masks = {}
        self._tfidf = None
        self._graph = None
        self._graph_built = False
        self.version += 1

    def title(self, item_id: str) -> str | None:
        info = self.info.get(item_id)
        if info is None:
            return None
        for f in self.text_fields:
            if f in info.texts:
                return info.texts[f]
        return None

    def upsert(
        self,
        item_id: str,
        texts: Mapping[str, str],
        attributes: Mapping[str, Sequence[str]],
        entity_id: str | None = None,
        triples: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Record a new or updated item's metadata (the store has been written already)."""
        info = self.info.setdefault(item_id, ItemInfo())
        info.texts.update({k: v for k, v in texts.items()})
        info.attributes.update({k: tuple(v) for k, v in attributes.items()})
        if entity_id is not None:
            info.entity_id = entity_id
            self.entities.add(entity_id)
            self.links = pd.concat(
                [
                    self.links[self.links["item_id"] != item_id],
                    pd.DataFrame({"item_id": [item_id], "entity_id": [entity_id]}),
                ],
                ignore_index=True,
            )
            rest = self.triples[self.triples["head"] != entity_id]
            new = pd.DataFrame(
                {
                    "head": [entity_id] * len(triples),
                    "relation": [r for r, _ in triples],
                    "tail": [t for _, t in triples],
                }
            )
            self.triples = pd.concat([rest, new], ignore_index=True)
        self.changed()

    def side(self, item_ids: Sequence[str]) -> Dataset:
        """The side information of some items, as :meth:`Recommender.add_items` takes it."""
        rows = []
        for item in item_ids:
            info = self.info.get(item, ItemInfo())
            row: dict[str, object] = {"item_id": item}
            row.update({f: info.texts.get(f) for f in self.text_fields})
            row.update({f: info.attributes.get(f, ()) for f in self.attribute_fields})
            rows.append(row)
        columns = ["item_id", *self.text_fields, *self.attribute_fields]
        items = pd.DataFrame(rows, columns=columns)
        entities = {self.info[i].entity_id for i in item_ids if self.info.get(i)} - {None}
        links = self.links[self.links["item_id"].isin(set(item_ids))].reset_index(drop=True)
        triples = self.triples[self.triples["head"].isin(entities)].reset_index(drop=True)
        interactions = pd.DataFrame(
            {
                "user_id": pd.Series(dtype=object),
                "item_id": pd.Series(dtype=object),
                "rating": pd.Series(dtype="float64"),
                "timestamp": pd.Series(dtype="float64"),
            }
        )
        return Dataset(
            name=self.dataset,
            interactions=interactions,
            items=items,
            triples=triples,
            links=links,
            text_fields=list(self.text_fields),
            attribute_fields=list(self.attribute_fields),
            text_template=self.text_template,
        )

    def describe(self, idx: int) -> dict[str, object]:
        item = self.ids[idx]
        info = self.info.get(item, ItemInfo())
        return {
            "item_id": item,
            "title": self.title(item),
            "text": dict(info.texts),
            "attributes": {k: list(v) for k, v in info.attributes.items()},
            "entity_id": info.entity_id,
            "retired": bool(self.retired[idx]),
            "recommendable": bool(self.servable[idx] and not self.retired[idx]),
        }

    # ------------------------------------------------------------------ filters
    def category_mask(self, spec: str) -> np.ndarray:
        """Items having an attribute token: ``"Comedy"`` (any attribute field) or
        ``"genre:Comedy"`` (one field). ``ValueError`` for an unknown field."""
        if spec in self._masks:
            return self._masks[spec]
        if not self.attribute_fields:
            raise ValueError("this catalogue has no attribute fields to filter on")
        field_name, sep, token = spec.partition(":")
        if sep and field_name in self.attribute_fields:
            fields = [field_name]
        else:
            fields, token = list(self.attribute_fields), spec
        token_low = token.casefold()
        mask = np.zeros(len(self.ids), dtype=bool)
        for idx, item in enumerate(self.ids):
            attrs = self.info[item].attributes
            if any(token_low == t.casefold() for f in fields for t in attrs.get(f, ())):
                mask[idx] = True
        if len(self._masks) > 256:
            self._masks.clear()
        self._masks[spec] = mask
        return mask

    # ------------------------------------------------------------------ content views
    def has_text(self) -> bool:
        return bool(self.text_fields) and any(i.texts for i in self.info.values())

    def _build_tfidf(self) -> sp.csr_matrix:
        docs = []
        for item in self.ids:
            info = self.info[item]
            docs.append(
                [
                    w.casefold()
                    for f in self.text_fields
                    for w in _WORD.findall(info.texts.get(f, ""))
                ]
            )
        vocab: dict[str, int] = {}
        df: Counter[int] = Counter()
        rows, cols, vals = [], [], []
        for r, words in enumerate(docs):
            counts = Counter(vocab.setdefault(w, len(vocab)) for w in words)
            df.update(counts.keys())
            for c, n in counts.items():
                rows.append(r)
                cols.append(c)
                vals.append(1.0 + math.log(n))
        n_docs = max(len(docs), 1)
        idf = np.zeros(len(vocab), dtype=np.float32)
        for c, d in df.items():
            idf[c] = math.log((1 + n_docs) / (1 + d)) + 1.0
        x = sp.csr_matrix(
            (np.asarray(vals, np.float32), (rows, cols)), shape=(len(docs), len(vocab))
        )
        x = x @ sp.diags(idf)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        return (sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x).tocsr().astype(np.float32)

    def text_similarity(self, idx: int) -> np.ndarray | None:
        """Cosine of TF-IDF text vectors to item ``idx`` (None without text)."""
        if not self.has_text():
            return None
        if self._tfidf is None or self._tfidf.shape[0] != len(self.ids):
            self._tfidf = self._build_tfidf()
        x = self._tfidf
        return np.asarray((x @ x[idx].T).toarray()).ravel()

    def warm(self) -> None:
        """Build the text and graph views ahead of the first request that needs them."""
        if self.has_text() and self._tfidf is None:
            self._tfidf = self._build_tfidf()
        self.graph()

    def graph(self):
        """The knowledge graph of the catalogue (attributes + triples), or None."""
        if self._graph_built:
            return self._graph
        self._graph_built = True
        try:
            from kinrec.knowledge.graph import build_graph

            stored = [i for i in self.ids if self.info.get(i)]
            frame = self.side(stored)
            if not len(frame.triples) and not self.attribute_fields:
                return None
            graph = build_graph(frame)
            if not len(graph.triples):
                return None
            self._graph = graph
            node_of = np.full(len(self.ids), -1, dtype=np.int64)
            position = {item: i for i, item in enumerate(self.ids)}
            for node, item in enumerate(graph.item_ids):
                if item in position:
                    node_of[position[item]] = node
            self._node_of = node_of
            self._kg_rows = graph.item_profile_rows()
        except Exception:  # the graph is an optional view: never fail a request for it
            log.exception("could not build the knowledge graph of %s", self.dataset)
            self._graph = None
        return self._graph

    def kg_similarity(self, idx: int) -> np.ndarray | None:
        """Cosine of IDF-weighted shared graph neighbours with item ``idx`` (None: no graph)."""
        graph = self.graph()
        if graph is None or self._node_of[idx] < 0:
            return None
        x = self._kg_rows
        sims = np.asarray((x @ x[int(self._node_of[idx])].T).toarray()).ravel()
        out = np.zeros(len(self.ids), dtype=np.float32)
        has = self._node_of >= 0
        out[has] = sims[self._node_of[has]]
        return out

    def kg_neighbourhood(
        self, item_id: str, limit: int = 24, examples: int = 3
    ) -> tuple[int, list[dict[str, object]]] | None:
        """The item's edges in the knowledge graph (None: no graph): the number of its
        neighbours and, for the first ``limit``, the relation, its direction, the entity,
        how many other items the entity links to and ``examples`` of them."""
        from kinrec.knowledge.graph import INVERSE_SUFFIX, ITEM_PREFIX

        graph = self.graph()
        if graph is None:
            return None
        node = graph.item_node(item_id)
        if node not in graph.entities:
            return 0, []
        start = graph.entities.index(node)
        first = graph.neighbors(node, hops=1)
        indptr, indices = graph.adjacency.indptr, graph.adjacency.indices
        edges: list[dict[str, object]] = []
        for n in first[:limit]:
            relation, direction = n.relation, "out"
            if relation.endswith(INVERSE_SUFFIX):
                relation, direction = relation[: -len(INVERSE_SUFFIX)], "in"
            entity = graph.entities.index(n.node)
            around = indices[indptr[entity] : indptr[entity + 1]]
            items = np.unique(around[around < graph.n_items])
            items = items[items != start]
            shown = [graph.item_ids[int(i)] for i in items[:examples]]
            own = n.node[len(ITEM_PREFIX) :] if n.node.startswith(ITEM_PREFIX) else None
            edges.append(
                {
                    "relation": relation,
                    "direction": direction,
                    "entity": n.node,
                    "item_id": own,
                    "title": self.title(own) if own is not None else None,
                    "n_items": len(items),
                    "items": [{"item_id": i, "title": self.title(i)} for i in shown],
                }
            )
        return len(first), edges

    def kg_paths(self, a: str, b: str, limit: int = 2) -> list[list[tuple[str, str, str]]]:
        graph = self.graph()
        if graph is None:
            return []
        try:
            return graph.paths(a, b, max_len=3, limit=limit)
        except KeyError:
            return []
