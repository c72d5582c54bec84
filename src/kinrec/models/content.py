"""Content recommenders: they rank items by what items are, so they can rank unseen items.

* :class:`LMKNN`: items are language-model embeddings of their text; a user is the (weighted)
  mean of the embeddings of the items they interacted with; items are ranked by cosine.
* :class:`KGKNN`: item-item similarity from shared knowledge-graph neighbours (IDF-weighted
  cosine over the item -> entity incidence); a user's score for an item is the mean of its
  similarities to the user's items (item kNN on knowledge instead of co-occurrence).

Both add a content popularity prior (:class:`PopularityPrior`: popularity regressed on the
same content features, so it exists for unseen items too) with a weight chosen on validation
NDCG@10 from ``PRIOR_GRID``: similarity alone ignores that some films are simply watched far
more than others, which is most of what a MovieLens ranking metric rewards.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from kinrec.data.dataset import Dataset, Interactions
from kinrec.knowledge.features import (
    build_item_content,
    content_for_new_items,
    item_texts,
    model_text_embedder,
)
from kinrec.models import memory
from kinrec.models.base import ModelConfig, ProgressCallback, Recommender, Requirement, Validator
from kinrec.models.prior import PopularityPrior, choose_prior_weight

log = logging.getLogger(__name__)


class LMKNNConfig(ModelConfig):
    encoder_path: str | None = Field(None, description="local sentence-transformers folder")
    adapter_path: str | None = Field(None, description="LoRA adapter folder (kinrec adapt)")
    sharpen: float = Field(1.0, ge=1.0, description="scores ** sharpen (on [0, 1] cosine)")


class LMKNN(Recommender):
    """Language-model k-NN: user profile = mean text embedding of the user's items."""

    name = "lm-knn"
    Config = LMKNNConfig
    requires = (Requirement(("text",)),)
    uses = ("text", "attributes")

    def warm_up(self) -> None:
        model_text_embedder(self)(["warm-up"])

    def _vectors(self, texts: list[str]) -> np.ndarray:
        """Unit-length text embeddings (zero rows for empty texts)."""
        vectors = np.asarray(model_text_embedder(self)(texts), dtype=np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        vectors[[not t.strip() for t in texts]] = 0.0
        return vectors

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        vectors = self._vectors(item_texts(self.side, self.item_map.ids()))
        self.text = vectors
        counts = np.bincount(train.items, minlength=train.n_items).astype(np.float64)
        self.popularity, self.prior = PopularityPrior.fit(vectors, counts)
        choose_prior_weight(self, validator)

    def _profile(self, rows: sp.csr_matrix) -> np.ndarray:
        profile = np.asarray(rows @ self.text)
        return profile / np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)

    def _rank(self, profile: np.ndarray, items: np.ndarray | None) -> np.ndarray:
        text = self.text if items is None else self.text[items]
        prior = self.prior if items is None else self.prior[items]
        cos = profile @ text.T
        if self.config.sharpen != 1.0:
            cos = np.sign(cos) * np.abs(cos) ** self.config.sharpen
        return cos + self.prior_weight * prior

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        return self._rank(self._profile(self.seen[users]), items)

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = np.ones(len(items)) if weights is None else np.asarray(weights, float)
        row = sp.csr_matrix((w, (np.zeros(len(items)), items)), shape=(1, len(self.text)))
        return self._rank(self._profile(row), None)[0]

    def item_vectors(self) -> np.ndarray | None:
        return self.text

    def add_items(self, item_ids: list[str], side: Dataset) -> None:
        new = [i for i in item_ids if i not in self.item_map]
        if not new:
            return
        vectors = self._vectors(item_texts(self.described(side), new))
        for i in new:
            self.item_map.add(i)
        self.prior = np.concatenate([self.prior, self.popularity.predict(vectors)])
        self.text = np.vstack([self.text, vectors])
        self._widen_seen()

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "text": self.text,
            "weight": np.array([self.prior_weight]),
            "prior": self.prior,
            **self.popularity.state(),
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.text = arrays["text"]
        self.popularity = PopularityPrior.from_state(arrays)
        self.prior = arrays["prior"]
        self.prior_weight = float(arrays["weight"][0])


class KGKNNConfig(ModelConfig):
    min_entity_items: int = Field(2, ge=1, description="drop entities touching fewer items")
    neighbours: int = Field(100, ge=1, description="similar items kept per item")


class KGKNN(Recommender):
    """Knowledge-graph item k-NN: similarity = cosine of IDF-weighted entity incidence."""

    name = "kg-knn"
    Config = KGKNNConfig
    requires = (Requirement(("knowledge_graph", "attributes")),)
    uses = ("attributes", "knowledge_graph")

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        content = build_item_content(
            self.side,
            self.item_map,
            embed=lambda texts: np.zeros((len(texts), 1), np.float32),
            min_entity_items=self.config.min_entity_items,
        )
        self.entity_ids, self.entity_idf = content.entity_ids, content.entity_idf
        self.incidence = content.entities
        self._build_similarity()
        counts = np.bincount(train.items, minlength=train.n_items).astype(np.float64)
        self.popularity, self.prior = PopularityPrior.fit(self.incidence, counts)
        choose_prior_weight(self, validator)

    ENTRY_BYTES = 40  # one entry of the item-item product: value, index and copies on the way

    def _build_similarity(self) -> None:
        """Each item's ``neighbours`` most similar items.

        The item-item product can be nearly dense (an entity shared by many items links
        them all). Where the upper bound of its entries does not fit in memory, it is
        computed for blocks of rows, each cut to its top neighbours before the next (ties
        among equal similarities may then be broken differently)."""
        inc = self.incidence.tocsr()
        n, k = inc.shape[0], self.config.neighbours
        linked = (inc != 0).astype(np.float64)
        per_entity = np.asarray(linked.sum(axis=0)).ravel()
        bound = np.minimum(np.asarray(linked @ per_entity).ravel(), n)  # entries per row
        whole = memory.Dense(
            "item-item similarity entries", (int(bound.sum()),), np.uint8, self.ENTRY_BYTES
        )
        if memory.fits(whole):
            sim = (self.incidence @ self.incidence.T).tocsr()
            sim.setdiag(0.0)
            sim.eliminate_zeros()
            self.similarity = _top_k_rows(sim, k)
            return
        budget = memory.rows_that_fit(self.ENTRY_BYTES, int(bound.sum()))  # entries per block
        cum = np.cumsum(bound)
        rows, cols, vals, start, blocks = [], [], [], 0, 0
        while start < n:
            below = cum[start - 1] if start else 0.0
            stop = max(start + 1, int(np.searchsorted(cum, below + budget, side="right")))
            stop = min(stop, n)
            sim = (inc[start:stop] @ inc.T).tocsr()
            own = np.repeat(np.arange(start, stop), np.diff(sim.indptr))
            sim.data[sim.indices == own] = 0.0
            sim.eliminate_zeros()
            top = _top_k_rows(sim, k).tocoo()
            rows.append(top.row + start)
            cols.append(top.col)
            vals.append(top.data)
            start, blocks = stop, blocks + 1
        self.similarity = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n, n),
            dtype=np.float32,
        )
        reason = memory.short_reason(whole)
        self.fit_info["similarity_blocks"] = f"{blocks} blocks of rows: the whole {reason}"
        log.warning("kg-knn: item similarity in %d blocks of rows (%s)", blocks, reason)

    def _user_scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """Mean similarity to the user's items, plus the weighted content popularity prior."""
        n = np.maximum(np.asarray(rows.sum(axis=1)), 1.0)
        return np.asarray((rows @ self.similarity).todense()) / n + self.prior_weight * self.prior

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        scores = self._user_scores(self.seen[users])
        return scores if items is None else scores[:, items]

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = np.ones(len(items)) if weights is None else np.asarray(weights, float)
        row = sp.csr_matrix((w, (np.zeros(len(items)), items)), shape=(1, self.similarity.shape[0]))
        return self._user_scores(row)[0]

    def similar_items(self, item_id: str, k: int = 10):
        self._require_fitted()
        row = self.similarity[self.item_map.index(item_id)].toarray()[0].astype(np.float64)
        row[row <= 0] = -np.inf
        return self._top(row, k)

    def add_items(self, item_ids: list[str], side: Dataset) -> None:
        new = [i for i in item_ids if i not in self.item_map]
        if not new:
            return
        _, _, incidence = content_for_new_items(
            side,
            new,
            self.entity_ids,
            self.entity_idf,
            embed=lambda texts: np.zeros((len(texts), 1), np.float32),
        )
        for i in new:
            self.item_map.add(i)
        self.incidence = sp.vstack([self.incidence, incidence]).tocsr()
        self.prior = np.concatenate([self.prior, self.popularity.predict(incidence)])
        self._build_similarity()
        self._widen_seen()

    def _state(self) -> dict[str, np.ndarray]:
        import json

        inc = self.incidence.tocsr()
        return {
            "inc_indptr": inc.indptr.astype(np.int64),
            "inc_indices": inc.indices.astype(np.int64),
            "inc_data": inc.data.astype(np.float32),
            "idf": self.entity_idf.astype(np.float32),
            "entity_names": np.frombuffer(json.dumps(self.entity_ids).encode(), dtype=np.uint8),
            "weight": np.array([self.prior_weight]),
            "prior": self.prior,
            **self.popularity.state(),
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        import json

        self.entity_idf = arrays["idf"]
        self.entity_ids = json.loads(bytes(arrays["entity_names"]).decode())
        n_items = len(arrays["inc_indptr"]) - 1
        self.incidence = sp.csr_matrix(
            (arrays["inc_data"], arrays["inc_indices"], arrays["inc_indptr"]),
            shape=(n_items, len(self.entity_idf)),
        )
        self._build_similarity()
        self.popularity = PopularityPrior.from_state(arrays)
        self.prior = arrays["prior"]
        self.prior_weight = float(arrays["weight"][0])


def _top_k_rows(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row (float32 CSR)."""
    rows, cols, vals = [], [], []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        data, idx = matrix.data[start:end], matrix.indices[start:end]
        if len(data) > k:
            top = np.argpartition(-data, k - 1)[:k]
            data, idx = data[top], idx[top]
        rows.append(np.full(len(data), r))
        cols.append(idx)
        vals.append(data)
    return sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=matrix.shape,
    )
