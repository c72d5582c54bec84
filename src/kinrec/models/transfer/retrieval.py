"""kinformer's candidate retrieval: what an index can search, what its head adds, and exact
scores of a few candidates.

kinformer's score of item ``i`` (:mod:`kinrec.models.transfer.scoring`, where it is
written) is

    user · item_final[i] / scale  +  offset[i]  +  linear_weight · (history row @ linear)[i]

(the offset: popularity prior, dormant-item offset, new-item boost). The first two
terms are one inner product of ``[user / scale, 1]`` with ``[item_final[i], offset[i]]``:
the tower, which an inner-product index searches. The last term (the linear head) is not:
its best items for a history are the largest entries of ``weights @ linear[history]``, which
only the history's rows of the head hold. The service joins both candidate lists and scores
the union exactly here, without touching the rest of the catalogue.

``linear`` is a dense ``(n_items, n_items)`` array, a ``scipy.sparse`` CSR matrix of that
shape (row ``i``: the weights from history item ``i`` to every item) or None; everything
here reads it by history rows only (``linear[items]``), which both kinds slice cheaply.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
import scipy.sparse as sp

EMPTY = np.zeros(0, dtype=np.int64)

_LAST_HEAD = threading.local()
"""Per thread, the last sparse head row computed: (the head, by weak reference; history;
weights; columns; values). A request asks for the same row twice (the head's candidates,
then the candidates' exact scores); the second is read back instead of recomputed."""


class TransferRetrieval:
    """The :class:`~kinrec.models.base.Recommender` retrieval interface for kinformer
    (mixed into :class:`~kinrec.models.transfer.model.TransferRecommender`)."""

    _offset_cache: tuple[tuple, np.ndarray] | None = None

    # ----------------------------------------------------------------- tower
    def retrieval_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``item_final`` and :meth:`item_offset`: ``[user / scale, 1] · [item, offset]``
        is the score without the head."""
        return self.item_final, self._offsets().astype(np.float32, copy=False)

    def retrieval_query(
        self, user: int | None, items: np.ndarray, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """A trained user's final vector, or the fold-in vector of a history (as
        ``score_history`` builds it), divided by the similarity's scale."""
        if user is not None:
            vector = self.user_final[user]
        else:
            vector = self._history_vector(np.asarray(items, dtype=np.int64), weights)
        return np.asarray(vector / self._scale, dtype=np.float32)

    def _history_vector(self, items: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """The user vector ``score_history`` folds in from ``items`` (zero: no items)."""
        if not len(items):
            return np.zeros(self.item_final.shape[1], dtype=np.float32)
        return self._fold_in(items, self._history_weights(items, weights).astype(np.float64))

    @staticmethod
    def _history_weights(items: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        if weights is None:
            return np.ones(len(items), dtype=np.float32)
        return np.asarray(weights, dtype=np.float32)

    def _offsets(self) -> np.ndarray:
        """:meth:`item_offset`, kept until the arrays or weights it is made of change (it is
        a pass over the whole catalogue; a request needs a few of its entries)."""
        key = (
            len(self.item_final),
            self.prior_weight,
            self.dormant_offset,
            self.cold_boost,
            id(self.prior),
            id(self.is_new),
            id(self.item_degree),
        )
        cached = self._offset_cache
        if cached is None or cached[0] != key:
            cached = self._offset_cache = (key, np.asarray(self.item_offset()))
        return cached[1]

    # ----------------------------------------------------------------- head
    def _head_row(
        self, user: int | None, items: np.ndarray, weights: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The head's input row (history items and weights; None: no head in the score): a
        trained user's row of ``seen`` weighted by rating strength, or the history given."""
        if not self._head_on:
            return None
        if user is not None:
            rows = self._head_input()
            lo, hi = rows.indptr[user], rows.indptr[user + 1]
            return rows.indices[lo:hi].astype(np.int64), np.asarray(rows.data[lo:hi], np.float32)
        items = np.asarray(items, dtype=np.int64)
        return items, self._history_weights(items, weights)

    def _sparse_head(self, hist: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``w @ linear[hist]`` of a sparse head as its nonzero columns (sorted) and values,
        from the history's rows alone (no pass over the catalogue's columns). The last row
        computed in this thread is kept (:data:`_LAST_HEAD`): a request's candidates and
        their exact scores read the same row."""
        last = getattr(_LAST_HEAD, "row", None)
        if (
            last is not None
            and last[0]() is self.linear
            and np.array_equal(last[1], hist)
            and np.array_equal(last[2], w)
        ):
            return last[3], last[4]
        columns, values = self._sparse_head_row(hist, w)
        _LAST_HEAD.row = (weakref.ref(self.linear), hist.copy(), w.copy(), columns, values)
        return columns, values

    def _sparse_head_row(self, hist: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_sparse_head`, computed."""
        linear = self.linear
        if linear.format != "csr":
            linear = sp.csr_matrix(linear[hist])
            hist = np.arange(len(hist))
        starts, ends = linear.indptr[hist], linear.indptr[hist + 1]
        lengths = (ends - starts).astype(np.int64)
        total = int(lengths.sum())
        if not total:
            return EMPTY, np.zeros(0, dtype=np.float64)
        # positions of every stored entry of the history's rows in indices / data
        shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        at = np.arange(total, dtype=np.int64) + shift
        columns, inverse = np.unique(linear.indices[at], return_inverse=True)
        values = np.bincount(
            inverse, weights=linear.data[at] * np.repeat(w.astype(np.float64), lengths)
        )
        return columns.astype(np.int64), values

    def head_candidates(
        self, user: int | None, items: np.ndarray, weights: np.ndarray | None, n: int
    ) -> np.ndarray:
        """The ``n`` items with the largest positive head scores ``weights @ linear[items]``
        (a sparse head: among the columns its history rows reach), best first."""
        row = self._head_row(user, items, weights)
        if row is None or not len(row[0]) or n <= 0:
            return EMPTY
        hist, w = row
        if sp.issparse(self.linear):
            columns, values = self._sparse_head(hist, w)
        else:
            values = w @ np.asarray(self.linear[hist])
            columns = np.arange(len(values), dtype=np.int64)
        positive = values > 0
        columns, values = columns[positive], values[positive]
        if len(columns) > n:
            top = np.argpartition(-values, n - 1)[:n]
            columns, values = columns[top], values[top]
        return columns[np.argsort(-values, kind="stable")]

    def _head_scores(self, hist: np.ndarray, w: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """``(w @ linear[hist])[candidates]``, reading only the history's rows."""
        if not len(hist) or not len(candidates):
            return np.zeros(len(candidates), dtype=np.float32)
        if sp.issparse(self.linear):
            columns, values = self._sparse_head(hist, w)
            if not len(columns):
                return np.zeros(len(candidates), dtype=np.float32)
            at = np.minimum(np.searchsorted(columns, candidates), len(columns) - 1)
            return np.where(columns[at] == candidates, values[at], 0.0).astype(np.float32)
        return np.asarray(w @ np.asarray(self.linear)[np.ix_(hist, candidates)], np.float32)

    # ----------------------------------------------------------------- exact scores
    def score_candidates(
        self,
        user: int | None,
        items: np.ndarray,
        weights: np.ndarray | None,
        candidates: np.ndarray,
    ) -> np.ndarray:
        """``score([user], candidates)[0]`` (trained user) or ``score_history(items,
        weights)[candidates]`` (user None), computed over the candidates only."""
        candidates = np.asarray(candidates, dtype=np.int64)
        if user is None and not len(items):
            return np.zeros(len(candidates), dtype=np.float32)  # as score_history does
        vectors = self.item_final[candidates]
        if user is not None:
            tower = self._tower(self.user_final[[user]], vectors)[0]
        else:
            user_vector = self._history_vector(np.asarray(items, dtype=np.int64), weights)
            tower = self._tower(user_vector, vectors)
        row = self._head_row(user, items, weights)
        head = None if row is None else self._head_scores(*row, candidates)
        return self._score_of(tower, self._offsets()[candidates], head)
