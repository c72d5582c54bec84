"""How the service scores a user whose history changed since training (fold-in).

Strategies, in order of preference, each checked against the model at start-up rather than
assumed:

* ``row``: models whose scores are a function of the user's interaction row (EASE, ItemKNN,
  popularity): score a shallow copy of the model whose ``seen`` matrix is the one history row.
  Used only when, for a probe user, it reproduces the model's own scores exactly; it is the
  model's own ``score()`` on a sparse row, usually cheaper than a dense ``score_history``.
* ``native``: the model's :meth:`~kinrec.models.base.Recommender.score_history`.
* ``vector``: models with item vectors (``item_vectors()``): a ridge fold-in of the user's
  vector from the vectors of the items in their history; when the model also declares user
  vectors whose dot products are its scores
  (:meth:`~kinrec.models.base.Recommender.user_vectors`, verified on probe users), a known
  user's trained vector is the ridge prior, so new events nudge it rather than replace it.

``none``: the model can do neither; new events then only mask items and new users get the
most popular items.

Models whose score is not one dot product may declare candidate retrieval
(:meth:`~kinrec.models.base.Recommender.retrieval_vectors`): :class:`RetrievalRequest` and
the ``retrieval_*`` / :meth:`ModelScorer.rescore` methods turn a user's state into the
model's query, head candidates and exact candidate scores; the engine searches the index.

For a user the model never trained on, ``row`` and ``native`` add the lift the history gives
its items' knowledge-graph neighbours (:meth:`~kinrec.models.base.Recommender.graph_lift`,
as much as the model's validated ``profile_graph_lift``) and shrink the scores towards
popularity as much as ``history_prior_strength`` says for the history's length
(:meth:`~kinrec.models.base.Recommender.blend_history_prior`): together
:meth:`~kinrec.models.base.Recommender.score_new_user`. Trained users' fold-in stays as it
is, in line with their trained scores.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from kinrec.models.base import REFERENCE_ITEMS, Ceiling, Recommender, reference_items

log = logging.getLogger("kinrec.serving")

FoldIn = Literal["native", "row", "vector", "none"]
EMPTY = np.zeros(0, dtype=np.int64)
EXTRA_COLUMN_SPREAD = 0.25
"""Spread of the retrieval index's offset and popularity columns, relative to one vector
component's (:meth:`ModelScorer.column_scales`)."""


@dataclass(frozen=True)
class RetrievalRequest:
    """Whose scores a retrieval is for, in the model's retrieval terms: a trained ``user``
    (their ``score()``), or a history ``items`` / ``weights`` (its ``score_history()``).

    ``blend_events``: a new user's history length, whose scores are blended with popularity
    (None: no blend, as for trained users); ``reference`` / ``reference_scores``: then the
    sample of the catalogue (:data:`REFERENCE_ITEMS`) and its exact scores, which stand in
    for the whole catalogue's in the blend (with the graph lift); ``query``: the model's
    retrieval query (None: asked of the model when needed); ``lifted``: a new user's graph
    lift, items and lifts (:meth:`~kinrec.models.base.Recommender.graph_lift`), which the
    candidates must hold (no other item is lifted)."""

    user: int | None
    items: np.ndarray
    weights: np.ndarray
    blend_events: int | None = None
    reference: np.ndarray | None = None
    reference_scores: np.ndarray | None = None
    query: np.ndarray | None = None
    lifted: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class Covered:
    """The ranked lists a new user's candidates come from, each of the ``n`` best items of
    the whole catalogue (none left out for the user's history or filters) by one part of
    the blended score: ``tower``, by the model's own query (tower and offset, the index
    searched as for a trained user); ``head``, by the head's lift; ``popular``, by training
    interactions. ``index_size``: the items the index held.

    An item in none of them has no more of each part than the last item of that list (of
    the head's lift: none, when the head listed fewer than ``n``), so it cannot outscore
    what those bounds allow together (:meth:`ModelScorer.ceiling`): above that, the top of
    the catalogue is known, not estimated from the reference sample."""

    tower: np.ndarray
    head: np.ndarray
    popular: np.ndarray
    n: int
    index_size: int

    @property
    def items(self) -> np.ndarray:
        return np.unique(np.concatenate([self.tower, self.head, self.popular]))


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
        self._popular: tuple[int, np.ndarray] | None = None
        self._blank: np.ndarray | None = None
        self._reference: tuple[int, np.ndarray] | None = None
        self._column_scales: tuple[float, float] | None = None
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
        counts = self.model.item_counts().astype(np.float32)
        self.popularity = np.zeros(self.n_items, dtype=np.float32)  # new items: 0
        self.popularity[: min(len(counts), self.n_items)] = counts[: self.n_items]
        self.log_popularity_std = float(np.log1p(self.popularity).std()) if self.n_items else 0.0
        self._popular = self._blank = None
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
        to a positive factor and an item bias (``score = c * u.v + b_i``): the model's
        declared ``user_vectors()``, verified on probe users (``c`` and ``b`` fitted)."""
        if self.item_vectors is None:
            return
        users = self.model.user_vectors()
        probes = self._probe_users()
        if not probes:
            return
        if not isinstance(users, np.ndarray) or users.ndim != 2:
            return
        if users.shape != (self.n_users, self.item_vectors.shape[1]):
            return
        wanted = {p: self.known_scores(p)[: len(self.item_vectors)] for p in probes}
        fit = self._fit_dot(np.asarray(users, dtype=np.float32), probes, wanted)
        if fit is None:
            return
        self.user_vectors = np.asarray(users, dtype=np.float32)
        self.dot_scale, self.item_bias = fit
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

    # ------------------------------------------------------------------ retrieval
    @property
    def retrieves(self) -> bool:
        """Whether the model is served by candidate retrieval and exact re-scoring: it
        declares retrieval and is neither a dot-product model nor a vector fold-in (those are
        searched exactly by their own index)."""
        return (
            self.model.supports_retrieval
            and not self.dot_model
            and self.fold_in != "vector"
            and self.model.retrieval_vectors() is not None
        )

    def retrieval_rows(self, start: int = 0) -> np.ndarray:
        """Rows ``start..`` of the retrieval index: ``[item vector, offset, log(1 + train
        count)]``, the last two scaled by :meth:`column_scales`. A trained user's query is
        ``[model query, 1, 0]`` (inversely scaled): the inner product is the model's tower
        score; a new user's adds the popularity their scores are blended with
        (:meth:`retrieval_query`)."""
        vectors, offsets = self.model.retrieval_vectors()
        offset_scale, pop_scale = self.column_scales()
        v = np.asarray(vectors[start:], dtype=np.float32)
        b = np.asarray(offsets[start:], dtype=np.float64) * offset_scale
        pop = np.log1p(self.popularity[start : start + len(v)]) * pop_scale
        return np.hstack([v, b[:, None], pop[:, None]]).astype(np.float32)

    def column_scales(self) -> tuple[float, float]:
        """Factors of the offset and popularity columns of the retrieval index (the queries
        hold their inverses, so inner products are unchanged): each column's spread becomes
        :data:`EXTRA_COLUMN_SPREAD` of one vector component's, so that neither dominates
        the neighbourhoods of an HNSW graph built over the vectors. Chosen at the first
        build and kept: rows appended later use the same."""
        if self._column_scales is None:
            vectors, offsets = self.model.retrieval_vectors()
            target = EXTRA_COLUMN_SPREAD * float(np.asarray(vectors).std())
            spreads = (float(np.std(offsets)), float(np.log1p(self.popularity).std()))
            self._column_scales = tuple(  # type: ignore[assignment]
                target / s if s > 1e-12 and target > 0 else 1.0 for s in spreads
            )
        return self._column_scales

    def retrieval_request(
        self, user: int | None, train: np.ndarray, items: np.ndarray, weights: np.ndarray
    ) -> RetrievalRequest | None:
        """What the exact path would score (:meth:`known_scores` or :meth:`history_scores`)
        as a retrieval request; None where retrieval cannot reproduce it (no history, or a
        fold-in other than the model's own ``score_history``)."""
        if user is not None and not len(items):
            return RetrievalRequest(user, EMPTY, np.zeros(0, dtype=np.float32))
        if self.fold_in != "native" or not (len(items) or len(train)):
            return None
        trained = self.model.history_weights(user) if user is not None and len(train) else None
        all_items, all_weights = combine(train, items, weights, trained)
        if not len(all_items):
            return None
        if user is not None:
            return RetrievalRequest(None, all_items, all_weights)
        lifted = self.model.graph_lift(all_items, all_weights)  # a new user's graph lift
        if self.model.history_prior_strength <= 0:
            return RetrievalRequest(None, all_items, all_weights, lifted=lifted)
        reference = self.reference_items()
        scores = self.model.score_candidates(None, all_items, all_weights, reference)
        query = self.model.retrieval_query(None, all_items, all_weights)
        return RetrievalRequest(
            None,
            all_items,
            all_weights,
            len(all_items),
            reference,
            _with_lift(np.asarray(scores, dtype=np.float64), reference, lifted),
            np.asarray(query, dtype=np.float32),
            lifted,
        )

    def _model_query(self, request: RetrievalRequest) -> np.ndarray:
        q = request.query
        if q is None:
            q = self.model.retrieval_query(request.user, request.items, request.weights)
        return np.asarray(q, dtype=np.float32)

    def tower_query(self, request: RetrievalRequest) -> np.ndarray:
        """The index query of the model's own score (tower and offset, no popularity): a
        trained user's, and the fold-in part of a new user's blend."""
        offset_scale, _ = self.column_scales()
        extra = np.array([1.0 / offset_scale, 0.0], dtype=np.float32)
        return np.append(self._model_query(request), extra).astype(np.float32)

    def retrieval_query(self, request: RetrievalRequest) -> np.ndarray:
        """The index query of a request (see :meth:`retrieval_rows`). For a new user, the
        model's part is scaled as the blend standardises it (by the spread of the reference
        scores) and the popularity part weighs as much as the blend gives it, so that the
        index ranks by the blend of the tower and popularity."""
        if request.blend_events is None:
            return self.tower_query(request)
        q = self._model_query(request)
        offset_scale, pop_scale = self.column_scales()
        c = self.model.history_prior_strength
        share = c / (c + max(request.blend_events, 0))
        finite = request.reference_scores[np.isfinite(request.reference_scores)]
        own = (1 - share) / (float(finite.std()) + 1e-12) if len(finite) else 1.0
        pop = share / (self.log_popularity_std + 1e-12)
        extra = np.array([own / offset_scale, pop / pop_scale], dtype=np.float32)
        return np.append(own * q, extra).astype(np.float32)

    def head_candidates(self, request: RetrievalRequest, n: int) -> np.ndarray:
        """Items the part of the model's score outside its tower ranks highest."""
        found = self.model.head_candidates(request.user, request.items, request.weights, n)
        return np.asarray(found, dtype=np.int64)

    def popular(self, n: int) -> np.ndarray:
        """The (at most) ``n`` items with the most training interactions, most first (a
        blended new user's scores lean on them); kept, and grown when more are asked for."""
        n = min(n, len(self.popularity))
        if self._popular is None or self._popular[0] < n:
            size = min(max(2 * n, 1024), len(self.popularity))
            top = np.argpartition(-self.popularity, size - 1)[:size] if size else EMPTY
            top = top[np.argsort(-self.popularity[top], kind="stable")]
            self._popular = (size, top[self.popularity[top] > 0].astype(np.int64))
        return self._popular[1][:n]

    def blank(self, n: int) -> np.ndarray:
        """The (at most) ``n`` items whose retrieval vector is zero, highest offset first,
        ties by item index. The tower scores them nothing whatever the query, so each is
        scored by its offset (and head) alone, and many tie (items the model learned no
        vector for, sharing a prior): an index returns some of a run of tied items, not the
        first ones, while this list holds the best of them for every query, the ones a list
        cut in item order takes (:func:`~kinrec.serving.ranking.top_k`). Kept until the
        model's items change (:meth:`refresh`)."""
        if self._blank is None:
            vectors, offsets = self.model.retrieval_vectors()
            idx = np.flatnonzero(~np.any(np.asarray(vectors) != 0, axis=1))
            self._blank = idx[np.lexsort((idx, -np.asarray(offsets)[idx]))].astype(np.int64)
        return self._blank[:n]

    def reference_items(self) -> np.ndarray:
        """A seeded uniform sample of the catalogue (sorted): see :data:`REFERENCE_ITEMS`."""
        n = self.n_items
        if self._reference is None or self._reference[0] != n:
            self._reference = (n, reference_items(n, REFERENCE_ITEMS))
        return self._reference[1]

    def rescore(
        self, request: RetrievalRequest, candidates: np.ndarray, covered: Covered | None = None
    ) -> np.ndarray:
        """Exact model scores of ``candidates`` for the request, as the exact path scores
        them; a new user's are blended with popularity, the blend's standardisation taken
        from the request's reference sample rather than from the whole catalogue, and its
        rank correspondence (which places items without a train count) from the items of
        ``covered`` at the top of the catalogue and from the sample below them."""
        model = self.model
        if request.blend_events is None:
            raw = model.score_candidates(request.user, request.items, request.weights, candidates)
            raw = _with_lift(np.asarray(raw, dtype=np.float64), candidates, request.lifted)
            return np.asarray(raw, dtype=np.float32)
        scored = candidates if covered is None else np.union1d(candidates, covered.items)
        raw = np.asarray(
            model.score_candidates(request.user, request.items, request.weights, scored),
            dtype=np.float64,
        )
        ceiling = None if covered is None else self.ceiling(request, covered, scored, raw)
        raw = _with_lift(raw, scored, request.lifted)
        items = np.concatenate([request.reference, scored])
        scores = np.concatenate([request.reference_scores, raw])
        items, first = np.unique(items, return_index=True)
        reference = first < len(request.reference)
        whole = None if request.lifted is None else np.isin(items, request.lifted[0])
        blended = model.blend_history_prior_subset(
            scores[first], items, request.blend_events, reference, ceiling, whole
        )
        return np.asarray(blended, dtype=np.float32)[np.searchsorted(items, candidates)]

    def ceiling(
        self, request: RetrievalRequest, covered: Covered, scored: np.ndarray, raw: np.ndarray
    ) -> Ceiling | None:
        """What no item outside ``covered`` exceeds (``scored``: items, sorted, with the
        request's fold-in scores ``raw`` before any graph lift, covering ``covered``; the
        lifted items are candidates themselves, so none outside is lifted): a fold-in score
        of the last
        tower item's tower and offset plus the least lift of a listed head item (none when
        the head listed fewer than ``n``: it lifts no other), and the popularity of the last
        popular item (None: fewer than ``n``, every item with interactions). None where the
        index did not hold every item or returned fewer than asked (nothing is known)."""
        n = covered.n
        size = covered.index_size
        if size < self.n_items or len(covered.tower) < min(n, size):
            return None
        vectors, offsets = self.model.retrieval_vectors()
        q = self._model_query(request).astype(np.float64)

        def tower(items: np.ndarray) -> np.ndarray:
            return np.asarray(vectors[items], np.float64) @ q + offsets[items]

        score = -np.inf if n >= size else float(tower(covered.tower).min())
        if len(covered.head) >= n:
            lift = raw[np.searchsorted(scored, covered.head)] - tower(covered.head)
            score += max(float(lift.min()), 0.0)
        popular = int(covered.popular[-1]) if len(covered.popular) >= n else None
        return Ceiling(score, popular)

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
        lifted = self.model.graph_lift(all_items, all_weights)
        scores = _with_lift(np.asarray(scores, dtype=np.float64), None, lifted)
        blended = self.model.blend_history_prior(scores, len(all_items))
        return np.asarray(blended, dtype=np.float32)


def _with_lift(
    scores: np.ndarray, items: np.ndarray | None, lifted: tuple[np.ndarray, np.ndarray] | None
) -> np.ndarray:
    """``scores`` (of ``items``, sorted; None: of every item) with a graph lift added, as
    :meth:`~kinrec.models.base.Recommender.score_new_user` adds it."""
    if lifted is None or not len(lifted[0]):
        return scores
    out = np.array(scores, dtype=np.float64)
    where, lift = lifted
    if items is None:
        inside = where < len(out)
        out[where[inside]] += lift[inside]
        return out
    pos = np.searchsorted(items, where)
    hit = pos < len(items)
    hit[hit] = items[pos[hit]] == where[hit]
    out[pos[hit]] += lift[hit]
    return out


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
