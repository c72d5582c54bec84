"""Content recommenders: they rank items by what items are, so they can rank unseen items.

* :class:`LMKNN`: items are language-model embeddings of their text; a user is the (weighted)
  mean of the embeddings of the items they interacted with; items are ranked by cosine. It
  adds a content popularity prior (:class:`PopularityPrior`: popularity regressed on the
  text, so it exists for unseen items too) with a weight chosen on validation NDCG@10 from
  ``PRIOR_GRID``: similarity alone ignores that some films are simply watched far more than
  others, which is most of what a MovieLens ranking metric rewards.
* :class:`KGKNN`: item kNN on knowledge instead of co-occurrence: item-item similarity is
  the cosine of the IDF-weighted item -> entity incidence, each relation (genre, year,
  director...) weighted; a user's score for an item is the mean of its similarities to the
  user's items plus a weighted popularity term: the observed popularity of items with
  interactions, the content prior's prediction of it for the others. The relation weights
  and the popularity weight are chosen on validation NDCG@10, up to weights at which
  popularity decides and the graph only breaks ties.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from kinrec.data.dataset import Dataset, Interactions
from kinrec.knowledge.features import (
    EntityLinks,
    entity_columns,
    entity_links,
    item_texts,
    model_text_embedder,
    weighted_incidence,
)
from kinrec.models import memory
from kinrec.models.base import ModelConfig, ProgressCallback, Recommender, Requirement, Validator
from kinrec.models.prior import PRIOR_GRID, PopularityPrior, choose_prior_weight
from kinrec.training.loop import choose_on_validation

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
    relation_search: int = Field(
        8,
        ge=0,
        description="relations whose weight is chosen on validation, those touching most "
        "items first; relations linking the same pairs (a relation and its inverse) count as "
        "one (the others weigh 1; 0: no search)",
    )


class KGKNN(Recommender):
    """Knowledge-graph item k-NN: similarity = cosine of the relation- and IDF-weighted
    entity incidence; score = mean similarity to the user's items + weight * popularity."""

    name = "kg-knn"
    Config = KGKNNConfig
    requires = (Requirement(("knowledge_graph", "attributes")),)
    uses = ("attributes", "knowledge_graph")

    PRIOR_WEIGHTS = (*PRIOR_GRID, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)
    """Weights of the popularity term tried on validation. Beyond ``PRIOR_GRID`` (the grid
    of lm-knn and kinformer), large weights let observed popularity decide the ranking of
    items with interactions, the similarity (at most 1) only breaking ties between items of
    (nearly) equal popularity: where the graph says little about what a user will choose,
    kg-knn then ranks as the popularity model does instead of below it."""

    RELATION_WEIGHTS = (0.0, 0.5, 2.0)
    """Weights a searched relation tries against its current weight 1."""

    _score_parts: dict | None = None

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        links = entity_links(self.side, self.item_map.ids())
        keep, self.entity_idf = entity_columns(links.incidence(), self.config.min_entity_items)
        links = links.columns(keep)
        self.entity_ids = links.entities
        counts = np.bincount(train.items, minlength=train.n_items).astype(np.float64)
        # The content prior reads the unit-weight incidence, whatever the relation weights:
        # it does not change along the search, and new items are predicted alike.
        self.popularity, predicted = PopularityPrior.fit(
            weighted_incidence(links, self.entity_idf), counts
        )
        self.prior = self._popularity_term(predicted, counts)
        self._choose_relation_weights(links, validator)

    # ------------------------------------------------------------------ popularity term
    def _popularity_term(self, predicted: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """The popularity term of every item: ``log(1 + train count)`` standardised over the
        items with train interactions; for the others (no interaction, or new) the content
        prior's prediction of it, on the same scale (:meth:`_predicted_term`)."""
        warm = counts > 0
        logs = np.log1p(counts[warm])
        if len(logs):
            spread = float(logs.std())
            self.popularity_scale = np.array([logs.mean(), spread if spread > 1e-9 else 1.0])
        else:  # nothing observed: the prior's own standardisation
            self.popularity_scale = np.array([self.popularity.mean, self.popularity.std])
        term = self._predicted_term(predicted)
        mean, spread = self.popularity_scale
        term[warm] = ((logs - mean) / spread).astype(np.float32)
        return term

    def _predicted_term(self, predicted: np.ndarray) -> np.ndarray:
        """Standardised content-prior predictions as popularity terms: back to the
        predicted ``log(1 + count)`` (the prior standardises it over the catalogue), then
        standardised as the observed ones are."""
        mean, spread = self.popularity_scale
        raw = np.asarray(predicted, np.float64) * self.popularity.std + self.popularity.mean
        return ((raw - mean) / spread).astype(np.float32)

    # ------------------------------------------------------------------ relation weights
    def _choose_relation_weights(self, links: EntityLinks, validator: Validator | None) -> None:
        """Relation weights and the popularity weight, chosen on validation NDCG@10.

        One greedy coordinate pass over the relations in descending order of the items they
        touch (at most ``relation_search`` of them; relations that link the same pairs, such
        as a relation and its inverse, share one weight): each tries
        :attr:`RELATION_WEIGHTS` against its current weight 1 and keeps the one that
        validates best (1 on ties). The other relations weigh 1. Each candidate is scored
        at its best popularity weight among the best one so far and its neighbours in
        :attr:`PRIOR_WEIGHTS`; the popularity weight is chosen over the whole grid before
        the search and again after it. No search without a validator or with a single
        relation."""
        groups = links.relation_groups()
        touched = dict(zip(links.relations, links.items_per_relation(), strict=True))
        if validator is None:
            skipped = "no validation data"
        elif len(groups) < 2:
            skipped = "a single relation"
        elif not self.config.relation_search:
            skipped = "relation_search is 0"
        else:
            skipped = None
        weights: dict[str, float] = {}
        current = weighted_incidence(links, self.entity_idf)  # the incidence of ``weights``
        self._take_incidence(current)
        best = self._choose_prior_weight(validator, self.PRIOR_WEIGHTS)
        held = weights  # the weights whose incidence and similarity the model holds
        search: dict[str, dict] = {}
        for group in [] if skipped else groups[: self.config.relation_search]:
            scores, choice = {1.0: best}, None
            at = self.PRIOR_WEIGHTS.index(self.prior_weight)
            near = self.PRIOR_WEIGHTS[max(at - 1, 0) : at + 2]
            prior_weight = self.prior_weight
            for value in self.RELATION_WEIGHTS:
                trial = {**weights, **dict.fromkeys(group, value)}
                incidence = weighted_incidence(links, self.entity_idf, trial)
                if (incidence != current).nnz == 0:  # other relations link the same pairs
                    scores[value] = scores[1.0]
                    continue
                held = trial
                self._take_incidence(incidence)
                scores[value] = self._choose_prior_weight(validator, near)
                if scores[value] > best:
                    best, choice = scores[value], (trial, incidence)
                    prior_weight = self.prior_weight
            if choice is not None:
                weights, current = choice
            self.prior_weight = prior_weight
            search[" / ".join(group)] = {
                "items": int(touched[group[0]]),
                "ndcg@10": {str(v): round(score, 5) for v, score in scores.items()},
            }
            log.info("kg-knn: %s weighs %s (%s)", group, weights.get(group[0], 1.0), scores)
        if held != weights:  # the model holds the last candidate: back to the best one
            self._take_incidence(current)
        if search:
            self._choose_prior_weight(validator, self.PRIOR_WEIGHTS)
        self.relation_weights = weights
        names = [name for group in groups for name in group]
        self.fit_info["relation_weights"] = {n: float(weights.get(n, 1.0)) for n in names}
        self.fit_info["relation_search"] = f"skipped: {skipped}" if skipped else search

    def _take_incidence(self, incidence: sp.csr_matrix) -> None:
        """Hold ``incidence`` and the item similarity built from it."""
        self.incidence = incidence
        self.fit_info.pop("similarity_blocks", None)
        self._build_similarity()

    def _choose_prior_weight(self, validator: Validator | None, grid: tuple[float, ...]) -> float:
        """Set the popularity weight of ``grid`` that validates best; its validation
        NDCG@10 (0 without a validator)."""
        self.fit_info.pop("prior_weight_search", None)
        choose_on_validation(self, "prior_weight", grid, validator)
        search = self.fit_info.get("prior_weight_search", {})
        return max(search.values()) if search else 0.0

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

    def _similarity_scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """Mean similarity of every item to the items of each row (user)."""
        n = np.maximum(np.asarray(rows.sum(axis=1)), 1.0)
        return np.asarray((rows @ self.similarity).todense()) / n

    def _user_scores(self, rows: sp.csr_matrix) -> np.ndarray:
        """Mean similarity to the user's items, plus the weighted popularity term."""
        return self._similarity_scores(rows) + self.prior_weight * self.prior

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        memo = self._score_parts
        if memo is not None and "users" in memo and np.array_equal(memo["users"], users):
            similarity = memo["similarity"]
        else:
            similarity = self._similarity_scores(self.seen[users])
            if memo is not None:
                memo.update(users=np.array(users, copy=True), similarity=similarity)
        scores = similarity + self.prior_weight * self.prior
        return scores if items is None else scores[:, items]

    @contextlib.contextmanager
    def reusing_score_parts(self) -> Iterator[None]:
        """Inside, :meth:`score` keeps the similarity part of the last users it scored and
        reuses it while called with the same users: a search over the popularity weight
        computes it once per batch of validation users. The similarity must not change
        inside."""
        self._score_parts = {}
        try:
            yield
        finally:
            self._score_parts = None

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
        links = entity_links(side, new, self.entity_ids)
        incidence = weighted_incidence(links, self.entity_idf, self.relation_weights)
        predicted = self.popularity.predict(weighted_incidence(links, self.entity_idf))
        for i in new:
            self.item_map.add(i)
        self.incidence = sp.vstack([self.incidence, incidence]).tocsr()
        self.prior = np.concatenate([self.prior, self._predicted_term(predicted)])
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
            "popularity_scale": np.asarray(self.popularity_scale, np.float64),
            "relation_names": np.frombuffer(
                json.dumps(list(self.relation_weights)).encode(), dtype=np.uint8
            ),
            "relation_weights": np.array(list(self.relation_weights.values()), np.float64),
            **self.popularity.state(),
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        import json

        names = json.loads(bytes(arrays.get("relation_names", b"[]")).decode())
        weights = arrays.get("relation_weights", ())
        self.relation_weights = {n: float(w) for n, w in zip(names, weights, strict=True)}
        self.entity_idf = arrays["idf"]
        self.entity_ids = json.loads(bytes(arrays["entity_names"]).decode())
        n_items = len(arrays["inc_indptr"]) - 1
        self.incidence = sp.csr_matrix(
            (arrays["inc_data"], arrays["inc_indices"], arrays["inc_indptr"]),
            shape=(n_items, len(self.entity_idf)),
        )
        self._build_similarity()
        self.popularity = PopularityPrior.from_state(arrays)
        scale = (self.popularity.mean, self.popularity.std)  # saved before: the prior's own
        self.popularity_scale = arrays.get("popularity_scale", np.array(scale))
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
