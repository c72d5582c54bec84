"""kinformer's score, written once (:class:`TransferScoring`).

The score of item ``i`` for a user is three parts::

    tower[i] + offset[i] + linear_weight * head[i]

* ``tower``: the two-tower score ``user @ item_final[i] / scale`` (:meth:`~TransferScoring._tower`;
  ``scale``: the temperature under cosine similarity, 1 under dot products), ``user`` a trained
  user's ``user_final`` row or the vector folded in from a history
  (:meth:`~TransferScoring._fold_in`);
* ``offset``: the per-item offset (:meth:`~TransferScoring.item_offset`): the popularity
  prior, the offset of dormant items and the boost of new items;
* ``head``: the linear head's score of the user's input row
  (:mod:`kinrec.models.transfer.head`), a part only where there is a head with a weight
  (:attr:`~TransferScoring._head_on`).

:meth:`~TransferScoring._score_of` adds the parts, in that order (the tower plus the
offset, then the weighted head), for every way of scoring: :meth:`score` (trained users),
:meth:`score_history` (a history folded in),
:meth:`~kinrec.models.transfer.retrieval.TransferRetrieval.score_candidates` (a few
candidates, for the service's retrieval) and the pseudo-cold validation of new items
(:meth:`~kinrec.models.transfer.cold.ColdItems._calibrate_cold`, which adds the head before
the offset, as it always has). The tower, the head and the offset are float32, and so are
the scores: a full-catalogue score row costs half the memory traffic of a float64 one, and
ranking reads float32 anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from kinrec.models import item_item as heads


class TransferScoring:
    """Scoring, mixed into :class:`~kinrec.models.transfer.model.TransferRecommender`.

    ``prior`` / ``prior_weight``: the popularity prior and its weight;
    ``_score_parts``: inside :meth:`reusing_score_parts`, the last users' tower and head
    scores (None outside)."""

    prior: np.ndarray | None
    prior_weight: float
    _score_parts: dict | None = None

    # ----------------------------------------------------------------- the formula
    def _score_of(
        self,
        tower: np.ndarray,
        offset: np.ndarray,
        head: np.ndarray | None = None,
        head_first: bool = False,
    ) -> np.ndarray:
        """The score from its parts: ``tower + offset``, then ``+ linear_weight * head``
        (None: no head in the score). ``tower`` is not changed.

        ``head_first``: the weighted head is added to the tower before the offset, the
        order the pseudo-cold validation of new items has always summed in (the two orders
        round differently), so that what it chooses stays what it was."""
        if head_first:
            scores = tower if head is None else tower + self.linear_weight * head
            return scores + offset
        scores = tower + offset
        if head is not None:
            scores += self.linear_weight * head
        return scores

    def _tower(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The tower's scores ``users @ items.T / scale`` of user vectors (rows; or one
        vector: then ``items @ user / scale``) for item vectors (rows)."""
        if users.ndim == 1:
            return (items @ users) / self._scale
        return (users @ items.T) / self._scale

    @property
    def _head_on(self) -> bool:
        """Whether the linear head is a part of the score: fitted, with a weight."""
        return self.linear is not None and bool(self.linear_weight)

    def item_offset(self) -> np.ndarray:
        """Per-item score offset (float32): the popularity prior, the calibrated boost of new
        items (declared new in the side data, or added after training) and the offset of
        dormant items, each chosen on validation."""
        offset = np.zeros(len(self.item_final), dtype=np.float32)
        if self.prior_weight and self.prior is not None:
            offset += np.float32(self.prior_weight) * self.prior
        if self.dormant_offset:
            offset += np.float32(self.dormant_offset) * self.is_dormant
        if self.cold_boost:
            offset += np.float32(self.cold_boost) * self.is_new
        return offset

    @property
    def _scale(self) -> float:
        return self.config.temperature if self.config.similarity == "cosine" else 1.0

    # ----------------------------------------------------------------- trained users
    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        users = np.asarray(users)
        memo = self._score_parts if items is None else None
        if memo is None:
            memo = {}
        elif "users" not in memo or not np.array_equal(memo["users"], users):
            memo.clear()
            memo["users"] = users.copy()
        if "tower" not in memo:
            item_vectors = self.item_final if items is None else self.item_final[items]
            memo["tower"] = self._tower(self.user_final[users], item_vectors)
        offset = self.item_offset()
        head = None
        if self._head_on:
            if "head" not in memo:
                memo["head"] = heads.scores(self._head_input()[users], self.linear, items)
            head = memo["head"]
        return self._score_of(memo["tower"], offset if items is None else offset[items], head)

    @contextlib.contextmanager
    def reusing_score_parts(self) -> Iterator[None]:
        """Inside, :meth:`score` over all items keeps the tower's and the head's (unweighted)
        scores of the last users it was called with, and reuses them while called with the
        same users: a search over the head's weight or the item offsets then computes them
        once per batch of validation users. The vectors, the head and its input rows must
        not change inside."""
        self._score_parts = {}
        try:
            yield
        finally:
            self._score_parts = None

    def item_vectors(self) -> np.ndarray | None:
        return self.item_final

    def user_vectors(self) -> np.ndarray | None:
        return self.user_final

    # ----------------------------------------------------------------- histories
    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Fold-in: a new user's layers are the same degree-normalised sums over their items.

        The user's own layer-0 embedding is zero (they had none in training), as for any user
        the model meets for the first time.
        """
        items = np.asarray(items, dtype=np.int64)
        if len(items) == 0:
            return np.zeros(len(self.item_final), dtype=np.float32)
        w = np.ones(len(items)) if weights is None else np.asarray(weights, dtype=np.float64)
        user = self._fold_in(items, w)
        head = heads.history_scores(self.linear, items, w) if self._head_on else None
        return self._score_of(self._tower(user, self.item_final), self.item_offset(), head)

    def _fold_in(self, items: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The user vector of a history: ``items`` (not empty) with float64 weights ``w``."""
        scale = self._fold_in_scale(items, w, len(items))
        return self._fold_in_layers([scale @ layer[items] for layer in self.item_layers])[0]

    def _fold_in_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """:meth:`_fold_in` of every row of ``rows`` (users x items, float64 weights) at
        once: one user vector a row (an empty row: the vector of no history)."""
        lengths = np.diff(rows.indptr)
        scale = self._fold_in_scale(rows.indices, rows.data, np.repeat(lengths, lengths))
        scaled = sp.csr_matrix((scale, rows.indices, rows.indptr), shape=rows.shape)
        return self._fold_in_layers([scaled @ layer for layer in self.item_layers])

    def _fold_in_scale(
        self, items: np.ndarray, w: np.ndarray, lengths: int | np.ndarray
    ) -> np.ndarray:
        """Each history entry's share of a folded-in user: its weight over the square root
        of the history's length times the item's training degree."""
        return w / np.sqrt(lengths * np.maximum(self.item_degree[items], 1))

    def _fold_in_layers(self, sums: list[np.ndarray]) -> np.ndarray:
        """Folded-in users (rows) from their sums over each of the items' layers: the mean
        over the layers and the user's own layer 0 (zero: no trained embedding)."""
        total = np.atleast_2d(np.sum(sums, axis=0))
        return self._finish(np.asarray(total, dtype=np.float64) / (len(sums) + 1))
