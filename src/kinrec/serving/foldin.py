"""How the service scores a user whose history changed since training (fold-in).

Strategies, in order of preference, each checked against the model at start-up rather than
assumed:

* ``row``: models whose scores are a function of the user's interaction row (EASE, ItemKNN,
  popularity): score a shallow copy of the model whose ``seen`` matrix is the one history row.
  Used only when, for a probe user, it reproduces the model's own scores exactly; it is the
  model's own ``score()`` on a sparse row, usually cheaper than a dense ``score_history``.
* ``native``: the model's :meth:`~kinrec.models.base.Recommender.score_history`.
* ``vector``: models with item vectors (``item_vectors()``): a ridge fold-in of the user's
  vector from the vectors of the items in their history; when the model also exposes user
  vectors whose dot products are its scores (``user_vectors()`` or ``user_factors``), a known
  user's trained vector is the ridge prior, so new events nudge it rather than replace it.

``none``: the model can do neither; new events then only mask items and new users get the
most popular items.

For a user the model never trained on, ``row`` and ``native`` shrink the history's scores
towards popularity as much as the model's validated ``history_prior_strength`` says for its
length (:meth:`~kinrec.models.base.Recommender.blend_history_prior`); trained users' fold-in
stays as it is, in line with their trained scores.
"""

from __future__ import annotations

import copy
import logging
from typing import Literal

import numpy as np
import scipy.sparse as sp

from kinrec.models.base import Recommender

log = logging.getLogger("kinrec.serving")

FoldIn = Literal["native", "row", "vector", "none"]
USER_VECTOR_ATTRIBUTES = ("user_factors", "user_final", "user_embeddings")


def _as_row(items: np.ndarray, weights: np.ndarray, n_items: int) -> sp.csr_matrix:
    return sp.csr_matrix(
        (weights.astype(np.float32), items.astype(np.int64), np.array([0, len(items)])),
        shape=(1, n_items),
    )


class ModelScorer:
    """One model behind the few calls the service makes, whatever the model can do."""

    def __init__(self, model: Recommender, l2: float = 1.0) -> None:
        model._require_fitted()
        self.model = model
        self.l2 = l2
        self.user_vectors: np.ndarray | None = None
        self.dot_scale = 1.0
        self.item_bias: np.ndarray | None = None
        self.target = 1.0
        self.refresh()
        self.fold_in: FoldIn = self._choose()
        log.info("fold-in strategy for %s: %s", model.name, self.fold_in)

    # ------------------------------------------------------------------ vocabulary
    @property
    def n_items(self) -> int:
        return len(self.model.item_map)

    @property
    def n_users(self) -> int:
        return int(self.model.seen.shape[0])

    def refresh(self) -> None:
        """Re-read what changes when items are added: item vectors and popularity."""
        vectors = self.model.item_vectors()
        self.item_vectors = None if vectors is None else np.asarray(vectors, dtype=np.float32)
        # ridge weight on the vectors' scale: l2 x their mean squared norm
        self.ridge = self.l2
        if self.item_vectors is not None and len(self.item_vectors):
            self.ridge = self.l2 * max(float((self.item_vectors**2).sum(axis=1).mean()), 1e-12)
        counts = np.asarray(self.model.seen.sum(axis=0)).ravel().astype(np.float32)
        self.popularity = np.zeros(self.n_items, dtype=np.float32)  # new items: 0
        self.popularity[: min(len(counts), self.n_items)] = counts[: self.n_items]
        if getattr(self, "user_vectors", None) is not None:
            self._refresh_bias()

    def _pad(self, scores: np.ndarray) -> np.ndarray:
        """Scores over the current catalogue (columns for items added later score -inf)."""
        n = self.n_items
        if len(scores) >= n:
            return scores[:n]
        out = np.full(n, -np.inf, dtype=np.float32)
        out[: len(scores)] = scores
        return out

    # ------------------------------------------------------------------ strategy
    def _probe_user(self) -> int | None:
        """A user other than the first (the row probe scores a copy as user 0)."""
        counts = np.diff(self.model.seen.indptr)
        if len(counts) < 2 or counts[1:].max(initial=0) == 0:
            return None
        return int(np.argmax(counts[1:])) + 1

    def _choose(self) -> FoldIn:
        probe = self._probe_user()
        if probe is not None and self._row_works(probe):
            return "row"  # the model's own score() on the history row: exact, and sparse
        if self.model.supports_fold_in:
            self._find_user_vectors()
            return "native"
        if self.item_vectors is not None:
            self._find_user_vectors()
            return "vector"
        return "none"

    def _row_works(self, user: int) -> bool:
        try:
            row = self.model.seen[user]
            got = self._row_scores(row.indices, row.data)
            want = self.known_scores(user)
        except Exception:  # a model whose score() does not read ``seen`` this way
            return False
        finite = np.isfinite(want)
        return bool(np.allclose(got[finite], want[finite], rtol=1e-4, atol=1e-5))

    def _probe_users(self, count: int = 3) -> list[int]:
        counts = np.diff(self.model.seen.indptr)
        order = np.argsort(-counts, kind="stable")
        return [int(u) for u in order[:count] if counts[u] > 0]

    def _find_user_vectors(self) -> None:
        """User vectors whose dot products with the item vectors give the model's scores, up
        to a positive factor and an item bias (``score = c * u.v + b_i``), from
        ``user_vectors()`` or a user-embedding attribute; verified on probe users."""
        if self.item_vectors is None:
            return
        getter = getattr(self.model, "user_vectors", None)
        candidates = [getter()] if callable(getter) else []
        candidates += [getattr(self.model, name, None) for name in USER_VECTOR_ATTRIBUTES]
        probes = self._probe_users()
        if not probes:
            return
        wanted = {p: self.known_scores(p)[: len(self.item_vectors)] for p in probes}
        for users in candidates:
            if not isinstance(users, np.ndarray) or users.ndim != 2:
                continue
            if users.shape != (self.n_users, self.item_vectors.shape[1]):
                continue
            fit = self._fit_dot(np.asarray(users, dtype=np.float32), probes, wanted)
            if fit is not None:
                self.user_vectors = np.asarray(users, dtype=np.float32)
                self.dot_scale, self.item_bias = fit
                break
        if self.user_vectors is None:
            return
        # typical score of a training positive: the ridge target, on the vectors' own scale
        sample = np.linspace(0, self.n_users - 1, num=min(self.n_users, 200)).astype(int)
        seen = self.model.seen
        values = [
            float((self.item_vectors[seen[u].indices] @ self.user_vectors[u]).mean())
            for u in sample
            if seen[u].nnz
        ]
        self.target = max(float(np.median(values)), 1e-3) if values else 1.0

    def _fit_dot(
        self, users: np.ndarray, probes: list[int], wanted: dict[int, np.ndarray]
    ) -> tuple[float, np.ndarray | None] | None:
        """``(c, b)`` with ``score(u) = c * V u + b`` on every probe user, or None."""
        v = self.item_vectors
        dots = {p: v @ users[p] for p in probes}
        if len(probes) >= 2:
            a, b = probes[0], probes[1]
            diff = dots[a] - dots[b]
            scale = float(diff @ (wanted[a] - wanted[b])) / max(float(diff @ diff), 1e-12)
            bias = wanted[a] - scale * dots[a]
        else:
            a = probes[0]
            scale = float(dots[a] @ wanted[a]) / max(float(dots[a] @ dots[a]), 1e-12)
            bias = np.zeros(len(v), dtype=np.float32)
        if not scale > 0:
            return None
        for p in probes:
            if not np.allclose(scale * dots[p] + bias, wanted[p], rtol=1e-3, atol=1e-3):
                return None
        tiny = np.allclose(bias, 0.0, atol=1e-4 * max(float(np.abs(wanted[a]).max()), 1e-6))
        return scale, None if tiny else bias.astype(np.float32)

    def _refresh_bias(self) -> None:
        """Item biases of items added since start-up (the model's scores minus the dots)."""
        if self.user_vectors is None or self.item_bias is None or self.item_vectors is None:
            return
        n = len(self.item_vectors)
        if len(self.item_bias) >= n:
            return
        p = self._probe_users(1)[0]
        want = self.model.score(np.array([p]))[0][:n].astype(np.float32)
        bias = want - self.dot_scale * (self.item_vectors @ self.user_vectors[p])
        self.item_bias = np.concatenate([self.item_bias, bias[len(self.item_bias) :]])

    def index_vectors(self) -> np.ndarray | None:
        """Item rows of the retrieval index: the item vectors, with ``b / c`` appended for a
        dot-product model with item biases (so that a user's query ranks exactly)."""
        if self.item_vectors is None:
            return None
        if self.item_bias is None or self.user_vectors is None:
            return self.item_vectors
        extra = (self.item_bias / self.dot_scale)[:, None].astype(np.float32)
        return np.hstack([self.item_vectors, extra])

    def index_query(self, vector: np.ndarray, with_bias: bool) -> np.ndarray:
        """A query for the index: a user vector (``with_bias``: count the item biases)."""
        if self.item_bias is None or self.user_vectors is None:
            return vector
        return np.append(vector, np.float32(1.0 if with_bias else 0.0)).astype(np.float32)

    @property
    def dot_model(self) -> bool:
        """Whether trained users have vectors whose dot products are the model's scores."""
        return self.user_vectors is not None

    # ------------------------------------------------------------------ scoring
    def known_scores(self, user: int, items: np.ndarray | None = None) -> np.ndarray:
        """The model's scores for a trained user (all items, or ``items``)."""
        scores = self.model.score(np.array([user]), items)[0].astype(np.float32, copy=False)
        return scores if items is not None else self._pad(scores)

    def _row_scores(self, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        clone = copy.copy(self.model)
        clone.seen = _as_row(items, weights, int(self.model.seen.shape[1]))
        return self._pad(clone.score(np.array([0]))[0].astype(np.float32, copy=False))

    def query(
        self, user: int | None, train: np.ndarray, items: np.ndarray, weights: np.ndarray
    ) -> np.ndarray | None:
        """The user's vector for index retrieval: the trained one (no new events), or a
        ridge fold-in of their history (``train``: trained items, ``items``/``weights``: new
        events) with the trained vector, when there is one, as prior."""
        if self.item_vectors is None:
            return None
        prior = None
        if user is not None and self.user_vectors is not None:
            prior = self.user_vectors[user]
            if not len(items):
                return prior
        else:
            items, weights = combine(train, items, weights)
        if not len(items):
            return None
        v = self.item_vectors[items]
        dim = v.shape[1]
        gram = (v.T * weights) @ v + self.ridge * np.eye(dim, dtype=np.float32)
        rhs = (v.T * weights) @ np.full(len(items), self.target, dtype=np.float32)
        if prior is not None:
            rhs = rhs + self.ridge * prior
        return np.linalg.solve(gram, rhs).astype(np.float32)

    def history_scores(
        self, user: int | None, train: np.ndarray, items: np.ndarray, weights: np.ndarray
    ) -> np.ndarray | None:
        """Scores over all items for a user with trained items ``train`` and new events on
        ``items`` (weighted), or None when the model cannot fold in; for a user the model
        never trained on (``user`` None), with the model's popularity prior for the history's
        length."""
        if self.fold_in == "vector":
            q = self.query(user, train, items, weights)
            return None if q is None else self.item_vectors @ q
        trained = self.model.history_weights(user) if user is not None and len(train) else None
        all_items, all_weights = combine(train, items, weights, trained)
        if not len(all_items):
            return None
        if self.fold_in == "native":
            scores = self.model.score_history(all_items, all_weights)
            scores = self._pad(np.asarray(scores, dtype=np.float32).ravel())
        elif self.fold_in == "row":
            scores = self._row_scores(all_items, all_weights)
        else:
            return None
        if user is not None:  # a trained user: no prior, as in their trained scores
            return scores
        blended = self.model.blend_history_prior(scores, len(all_items))
        return np.asarray(blended, dtype=np.float32)


def combine(
    train: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    train_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Trained items (weight 1, or ``train_weights``) and event items as one history, one
    weight per item (its largest)."""
    if train_weights is None:
        train_weights = np.ones(len(train), np.float32)
    all_items = np.concatenate([train.astype(np.int64), items.astype(np.int64)])
    all_weights = np.concatenate([train_weights, weights]).astype(np.float32)
    if not len(all_items):
        return all_items, all_weights
    order = np.lexsort((-all_weights, all_items))
    all_items, all_weights = all_items[order], all_weights[order]
    first = np.r_[True, all_items[1:] != all_items[:-1]]
    return all_items[first], all_weights[first]
