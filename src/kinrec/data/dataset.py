"""The dataset model: raw tables as loaded, and the indexed interaction matrix models train on.

A :class:`Dataset` holds five tables with external (string) ids:

* ``interactions``: ``user_id``, ``item_id``, ``rating`` (float, NaN when absent),
  ``timestamp`` (float seconds, NaN when absent).
* ``items``: ``item_id`` plus one column per field. Fields listed in ``text_fields`` hold free
  text; fields in ``attribute_fields`` are categorical and hold a tuple of tokens per item (a
  single-valued attribute is a one-token tuple, a genre list a longer one).
* ``users``: ``user_id`` plus categorical attribute columns (one string per user).
* ``triples``: ``head``, ``relation``, ``tail`` (entity ids as strings).
* ``links``: ``item_id``, ``entity_id`` (which knowledge-graph entity an item is).

:class:`Interactions` is the indexed form: integer user and item indices into shared
vocabularies (:class:`IdMap`), so that train, valid and test parts of a split line up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
TRIPLE_COLUMNS = ("head", "relation", "tail")
LINK_COLUMNS = ("item_id", "entity_id")


def empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    """An empty frame with string columns, except ``rating``/``timestamp`` which are float."""
    return pd.DataFrame(
        {
            c: pd.Series(dtype="float64" if c in ("rating", "timestamp") else "object")
            for c in columns
        }
    )


@dataclass
class Dataset:
    """Everything known about a catalogue and its users, with external string ids."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame = field(default_factory=lambda: empty_frame(["item_id"]))
    users: pd.DataFrame = field(default_factory=lambda: empty_frame(["user_id"]))
    triples: pd.DataFrame = field(default_factory=lambda: empty_frame(TRIPLE_COLUMNS))
    links: pd.DataFrame = field(default_factory=lambda: empty_frame(LINK_COLUMNS))
    text_fields: list[str] = field(default_factory=list)
    attribute_fields: list[str] = field(default_factory=list)
    user_attribute_fields: list[str] = field(default_factory=list)
    new_items: list[str] = field(default_factory=list)
    """Items published after the training period (a cold-item split's held-out items): models
    that treat new items specially (kinformer's new-item offset) apply it to these. An item
    that merely has no interactions (one known only from the item table or from a link to a
    knowledge-graph entity) is in the catalogue and ranked through its text and graph, but is
    not listed here: having no interactions does not make an item new."""
    text_template: str | None = None
    """How an item's fields become the text the language model reads (syntax in
    :mod:`kinrec.knowledge.text`), e.g. ``"{title}. {description}"``; ``None``: the default
    derived from ``text_fields`` and ``attribute_fields``."""

    def summary(self) -> dict[str, int]:
        """Row counts per table, and distinct users/items in the interactions."""
        return {
            "interactions": len(self.interactions),
            "users": int(self.interactions["user_id"].nunique()) if len(self.interactions) else 0,
            "items": len(self.items),
            "user_rows": len(self.users),
            "triples": len(self.triples),
            "links": len(self.links),
        }

    def capabilities(self) -> dict[str, bool]:
        """What the dataset holds beyond user-item pairs (the names models' requirements use).

        ``text``: an item with a non-blank value in a declared text field (or a field the
        text template reads); ``attributes``: an item with a token in an attribute field (the
        declared ones, else tuple-valued columns); ``knowledge_graph``: triples, and links
        tying entities to items; ``user_attributes``: a user with a value in a column besides
        ``user_id``; ``ratings`` and ``timestamps``: an interaction with a value (not NaN).
        """

        def filled(value: object) -> bool:
            if isinstance(value, str):
                return bool(value.strip())
            if isinstance(value, (tuple, list, np.ndarray)):
                return any(filled(v) for v in value)
            return value is not None and not bool(pd.isna(value))

        def any_filled(frame: pd.DataFrame, columns: Iterable[str]) -> bool:
            return any(any(map(filled, frame[c])) for c in columns if c in frame.columns)

        items = self.items
        text = list(self.text_fields)
        template = getattr(self, "text_template", None)
        if template:  # the fields a text template reads are text too
            import re

            text += [f.strip() for f in re.findall(r"\{([^{}\[\]]*)\}", template)]
        attributes = list(self.attribute_fields) or [
            c
            for c in items.columns
            if c != "item_id"
            and c not in self.text_fields
            and any(isinstance(v, (tuple, list)) for v in items[c].dropna().iloc[:100])
        ]
        inter = self.interactions

        def valued(column: str) -> bool:
            return column in inter.columns and bool(inter[column].notna().any())

        return {
            "text": any_filled(items, text),
            "attributes": any_filled(items, attributes),
            "knowledge_graph": len(self.triples) > 0 and len(self.links) > 0,
            "user_attributes": any_filled(self.users, [c for c in self.users if c != "user_id"]),
            "ratings": valued("rating"),
            "timestamps": valued("timestamp"),
        }

    def all_item_ids(self) -> list[str]:
        """The catalogue: items of the item table, then items known only from links to
        knowledge-graph entities, then items seen only in interactions (each in file order).

        Every item of any table belongs to the catalogue, interactions or not: an item without
        interactions is ranked through its text and knowledge graph.
        """
        known = list(self.items["item_id"]) if len(self.items) else []
        seen = set(known)
        for column in (self.link_item_ids(), self.interactions["item_id"]):
            extra = [i for i in pd.unique(np.asarray(column, dtype=object)) if i not in seen]
            known += extra
            seen.update(extra)
        return known

    def link_item_ids(self) -> list[str]:
        """Items of the links table that the item table lacks (first appearance order).

        Blank ids are left out here; the store and the graph builder report them as bad rows.
        """
        if not len(self.links) or "item_id" not in self.links.columns:
            return []
        listed = set(self.items["item_id"]) if len(self.items) else set()
        linked = pd.unique(self.links["item_id"].to_numpy(dtype=object))
        return [i for i in linked if i not in listed and isinstance(i, str) and i.strip()]


class IdMap:
    """A bijection between external string ids and dense integer indices ``0..n-1``."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        for i in ids:
            self.add(i)

    def add(self, external_id: str) -> int:
        """Index of ``external_id``, appending it if new."""
        idx = self._index.get(external_id)
        if idx is None:
            idx = len(self._ids)
            self._index[external_id] = idx
            self._ids.append(external_id)
        return idx

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._index

    def index(self, external_id: str) -> int:
        """Index of a known id; ``KeyError`` naming the id otherwise."""
        try:
            return self._index[external_id]
        except KeyError:
            raise KeyError(f"unknown id {external_id!r}") from None

    def indices(self, external_ids: Iterable[str]) -> np.ndarray:
        """Indices of many known ids, as int64."""
        lookup = self._index
        return np.fromiter((lookup[i] for i in external_ids), dtype=np.int64)

    def ids(self, indices: Iterable[int] | None = None) -> list[str]:
        """External ids (all, or those at ``indices``)."""
        if indices is None:
            return list(self._ids)
        return [self._ids[int(i)] for i in indices]

    def copy(self) -> IdMap:
        return IdMap(self._ids)


def _indexed(ids: pd.Series, id_map: IdMap) -> np.ndarray:
    """The indices of ``ids`` in ``id_map``, unknown ids added in order of first appearance
    (as adding them row by row would): each distinct id is looked up once."""
    codes, uniques = pd.factorize(ids, use_na_sentinel=False)
    lookup = np.fromiter((id_map.add(u) for u in uniques), np.int64, len(uniques))
    return lookup[codes]


@dataclass(frozen=True)
class Interactions:
    """Indexed user-item pairs over shared vocabularies; what models train and evaluate on."""

    users: np.ndarray  # int64 user indices
    items: np.ndarray  # int64 item indices
    user_map: IdMap
    item_map: IdMap
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, user_map: IdMap, item_map: IdMap) -> Interactions:
        """Index ``frame`` (columns ``user_id``, ``item_id``) with the given maps.

        Unknown users are added to ``user_map``; unknown items are added to ``item_map``
        (callers that need a fixed catalogue build the map from the item table first).
        """
        users = _indexed(frame["user_id"], user_map)
        items = _indexed(frame["item_id"], item_map)
        ratings = frame["rating"].to_numpy(np.float64) if "rating" in frame else None
        stamps = frame["timestamp"].to_numpy(np.float64) if "timestamp" in frame else None
        return cls(users, items, user_map, item_map, ratings, stamps)

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    def __len__(self) -> int:
        return len(self.users)

    def matrix(self) -> sp.csr_matrix:
        """Binary ``n_users x n_items`` CSR matrix (duplicate pairs count once)."""
        data = np.ones(len(self.users), dtype=np.float32)
        m = sp.csr_matrix((data, (self.users, self.items)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def subset(self, mask: np.ndarray) -> Interactions:
        """The rows selected by a boolean mask or index array, same vocabularies."""
        return Interactions(
            self.users[mask],
            self.items[mask],
            self.user_map,
            self.item_map,
            None if self.ratings is None else self.ratings[mask],
            None if self.timestamps is None else self.timestamps[mask],
        )


@dataclass(frozen=True)
class Split:
    """Train, validation and test interactions over one user and one item vocabulary.

    ``item_map`` covers the whole catalogue (the item file plus any item in any part), so that
    full ranking is over all items, as in RecBole.
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    dataset: Dataset | None = None

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items

    @classmethod
    def from_frames(
        cls,
        train: pd.DataFrame,
        valid: pd.DataFrame,
        test: pd.DataFrame,
        item_ids: Sequence[str] = (),
        dataset: Dataset | None = None,
    ) -> Split:
        """Index three frames with shared maps; ``item_ids`` fixes the catalogue order first."""
        user_map, item_map = IdMap(), IdMap(item_ids)
        parts = [Interactions.from_frame(f, user_map, item_map) for f in (train, valid, test)]
        # Re-bind so every part sees the final (complete) vocabularies.
        parts = [
            Interactions(p.users, p.items, user_map, item_map, p.ratings, p.timestamps)
            for p in parts
        ]
        return cls(parts[0], parts[1], parts[2], dataset)
