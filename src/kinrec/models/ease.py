"""EASE (Steck, 2019): a closed-form linear item-item autoencoder with a zero diagonal."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from pydantic import Field

from kinrec.data.dataset import IdMap, Interactions
from kinrec.models import item_item, memory
from kinrec.models.base import ProgressCallback, Recommender, Scored, Validator
from kinrec.privacy.dp import DPConfig
from kinrec.training.loop import validate_one_pass


class EASEConfig(DPConfig):
    """L2 weight of the item-item matrix (RecBole's default 250) and how it is solved; with
    ``dp_epsilon``, user-level differential privacy (:mod:`kinrec.privacy.dp`)."""

    reg_weight: float = Field(250.0, gt=0.0)
    dp_noise_l2: float = Field(
        0.5,
        ge=0.0,
        description="with dp_epsilon: L2 added for the Gram matrix's noise, in units of the "
        "noise's spectral norm (2 sigma sqrt(items)); fixed in advance (0.5: measured on "
        "ml-100k), never chosen on validation",
    )
    dp_item_threshold: float = Field(
        0.1,
        ge=0.0,
        description="with dp_epsilon: the Gram matrix covers the items whose noisy count "
        "(10% of the budget) is at least this times its noise on one item's column (sigma "
        "sqrt(items covered)); the others are not recommended; 0: every item, no count "
        "release. Fixed in advance (0.1: measured on ml-100k), never chosen on validation",
    )
    solver: Literal["auto", "dense", "sparse"] = Field(
        "auto",
        description=(
            "'dense': the closed form over the whole catalogue (items^2 memory, items^3 "
            "work); 'sparse': each item regressed on its `neighbours` most similar items "
            "(items x neighbours memory); 'auto': dense up to max_dense_items items where "
            "it fits in memory, sparse otherwise"
        ),
    )
    max_dense_items: int = Field(
        20_000,
        ge=0,
        description="largest catalogue 'auto' solves densely (3.2 GiB and minutes at 20,000)",
    )
    neighbours: int = Field(200, ge=1, description="regressors per item of the sparse solver")


NO_DENSE_HINT = "use a model without a dense item-item matrix (itemknn, lightgcn, bpr, multvae)"


def dense_gram(rows: sp.spmatrix, block: int = 1024) -> np.ndarray:
    """``rows.T @ rows`` as a dense float64 array in Fortran order (what LAPACK factorises in
    place, see :func:`ease_weights`), built one block of columns at a time so that the sparse
    product never exists whole. Each entry sums the same products in the same order as
    ``(rows.T @ rows).toarray()``, so the two are equal to the last bit."""
    x = sp.csc_matrix(rows, dtype=np.float64)
    xt = x.T.tocsr()
    n = x.shape[1]
    gram = np.empty((n, n), dtype=np.float64, order="F")
    for start in range(0, n, block):
        stop = min(start + block, n)
        (xt @ x[:, start:stop]).toarray(out=gram[:, start:stop])
    return gram


def _fill_lower(p: np.ndarray, block: int = 1024) -> None:
    """Copy the upper triangle of the square array ``p`` onto its lower one, in place,
    one block of columns at a time (temporaries of ``block`` columns, never of ``p``)."""
    n = p.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        square = p[start:stop, start:stop]
        square[...] = np.triu(square) + np.triu(square, 1).T
        p[stop:, start:stop] = p[start:stop, stop:].T


THREADED_CHOLESKY_MAX = 15_000
"""Above this many items the Cholesky factorisation runs on one BLAS thread. The threaded
``dpotrf`` of the OpenBLAS that scipy 1.17 bundles (0.3.30) dies with a segmentation fault
on matrices of 15,501 rows and more (measured with 2, 8 and 16 threads, whatever the free
memory), which is how EASE died on a 24,915-item catalogue; one thread factorises them
(80 s at 24,915 items on this machine's two cores, about twice the threaded time)."""


def _cholesky(g: np.ndarray) -> tuple[np.ndarray, int]:
    """``dpotrf`` of the upper triangle of ``g``, in place (``g`` float64, Fortran order)."""
    if g.shape[0] <= THREADED_CHOLESKY_MAX:
        return scipy.linalg.lapack.dpotrf(g, lower=0, overwrite_a=1)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        return scipy.linalg.lapack.dpotrf(g, lower=0, overwrite_a=1)


def ease_weights(
    gram: np.ndarray, reg_weight: float | np.ndarray, overwrite: bool = False
) -> np.ndarray:
    """``B = I - P diag(1/diag(P))`` with ``P = (G + diag(reg))^-1``, i.e. ``B_ii = 0``;
    ``reg`` is one L2 weight for every item, or one per item (as EDLAE's).

    ``P`` comes from a Cholesky factorisation: a Gram matrix plus a positive L2 always has
    one, and a matrix with extra terms that is not positive definite raises
    :class:`NotPositiveDefiniteError` instead of giving meaningless weights.

    The factorisation, the inverse, its symmetrisation and the scaling all happen in one
    float64 array: with ``overwrite`` and a float64 ``gram`` in Fortran order (as
    :func:`dense_gram` builds it) that array is ``gram`` itself, which is then destroyed
    (the returned weights share its memory); otherwise it is one copy of ``gram``. The
    result is C-ordered (what a sparse row times it wants)."""
    if overwrite and gram.dtype == np.float64 and gram.flags.f_contiguous:
        g = gram
    else:
        g = np.array(gram, dtype=np.float64, order="F")
    g[np.diag_indices_from(g)] += reg_weight
    factor, info = _cholesky(g)
    if info == 0:
        p, info = scipy.linalg.lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise NotPositiveDefiniteError(
            f"EASE: the Gram matrix plus L2 {np.mean(reg_weight):g} is not positive definite"
        )
    del g, factor
    _fill_lower(p)
    # P is symmetric now, so its transpose is the same matrix in C order
    b = p.T
    np.divide(b, -np.diag(b), out=b)
    b[np.diag_indices_from(b)] = 0.0
    return b


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """A Gram matrix (with added terms) that the L2 does not make positive definite."""


def neighbour_graph(vectors: np.ndarray, k: int, block: int = 2048) -> sp.csr_matrix:
    """Symmetrised graph of each row's ``k`` most cosine-similar other rows, weighted by the
    (positive part of the) cosine; all-zero rows have no edges. Computed in row blocks."""
    n = len(vectors)
    k = min(k, n - 1)
    if k <= 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    unit = (vectors / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)
    if n > EXACT_NEIGHBOUR_ITEMS:
        rows, cols, vals = _approximate_neighbours(unit, k)
    else:
        rows, cols, vals = [], [], []
        for start in range(0, n, block):
            sims = unit[start : start + block] @ unit.T
            local = np.arange(len(sims))
            sims[local, start + local] = -np.inf  # no self-edges
            top = top_k_rows(sims, k)
            rows.append(np.repeat(start + local, k))
            cols.append(top.ravel())
            vals.append(np.maximum(np.take_along_axis(sims, top, axis=1), 0.0).ravel())
        rows, cols, vals = (np.concatenate(x) for x in (rows, cols, vals))
    graph = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    graph = ((graph + graph.T) / 2).tocsr()
    graph.eliminate_zeros()
    return graph


EXACT_NEIGHBOUR_ITEMS = 50_000
"""Above this many items, :func:`neighbour_graph` finds neighbours through a faiss HNSW
index instead of every pair's cosine (which grows with the square of the catalogue)."""


def _approximate_neighbours(unit: np.ndarray, k: int):
    """(row, column, cosine) of each unit row's ``k`` nearest other rows, from an HNSW
    inner-product index (negative cosines clipped to 0, as the exact path does)."""
    import faiss

    n, dim = unit.shape
    index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = max(64, 2 * (k + 1))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        index.add(unit)
        sims, ids = index.search(unit, k + 1)
    finally:
        faiss.omp_set_num_threads(threads)
    own = np.arange(n)[:, None]
    keep = (ids != own) & (ids >= 0)
    # each row keeps its first k hits that are not itself
    keep &= np.cumsum(keep, axis=1) <= k
    rows = np.broadcast_to(own, ids.shape)[keep]
    return rows, ids[keep], np.maximum(sims[keep], 0.0)


def scaled_neighbour_graph(
    vectors: np.ndarray, gram: np.ndarray | float, k: int
) -> sp.csr_matrix | None:
    """:func:`neighbour_graph` scaled to a Gram matrix (or to the mean of its diagonal): at
    strength 1 it adds to an item's row, on average, what the item's own interaction count
    is (None: no edges)."""
    return scaled_graph(neighbour_graph(vectors, k), gram)


def scaled_graph(graph: sp.spmatrix, gram: np.ndarray | float) -> sp.csr_matrix | None:
    """``graph`` scaled so that at strength 1 it adds to an item's row, on average, what the
    item's own interaction count is (the mean diagonal of the Gram matrix ``gram``, or
    ``gram`` itself when it is that mean); None without edges."""
    mass = float(graph.sum(axis=1).mean()) if graph.shape[0] else 0.0
    if mass <= 0:
        return None
    mean_count = float(np.mean(np.diag(gram))) if np.ndim(gram) == 2 else float(gram)
    return (graph * (mean_count / mass)).tocsr()


def top_k_rows(sims: np.ndarray, k: int) -> np.ndarray:
    """Columns of each row's ``k`` largest values (``0 < k <= columns``, in no order), of
    the values tied with the row's k-th largest the first columns: the same graph on every
    CPU (``argpartition`` alone breaks ties by its SIMD kernel, and knowledge-graph
    similarities tie often: items sharing only a genre have the same cosine)."""
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(sims, top, axis=1)
    kth = values.min(axis=1)
    taken = (values == kth[:, None]).sum(axis=1)
    tied = (sims == kth[:, None]).sum(axis=1)
    for r in np.flatnonzero(tied > taken):  # more ties than places: keep the first ones
        above = np.flatnonzero(sims[r] > kth[r])
        top[r] = np.concatenate([above, np.flatnonzero(sims[r] == kth[r])[: k - len(above)]])
    return top


def sparse_neighbour_graph(rows: sp.spmatrix, k: int, cells: int = 1 << 25) -> sp.csr_matrix:
    """:func:`neighbour_graph` of sparse, row-normalised vectors (e.g. items' IDF-weighted
    knowledge-graph entities, whose dot product is their shared-entity cosine): each row's
    ``k`` most similar other rows, weighted by the similarity, symmetrised; rows sharing
    nothing have no edges. Blocks of rows hold at most ``cells`` similarities at once."""
    rows = sp.csr_matrix(rows, dtype=np.float32)
    n = rows.shape[0]
    k = min(k, n - 1)
    if k <= 0 or rows.nnz == 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    transposed = rows.T.tocsc()
    block = max(1, cells // n)
    out_rows, out_cols, out_vals = [], [], []
    for start in range(0, n, block):
        sims = (rows[start : start + block] @ transposed).toarray()
        local = np.arange(len(sims))
        sims[local, start + local] = 0.0  # no self-edges
        top = top_k_rows(sims, k)
        values = np.take_along_axis(sims, top, axis=1)
        keep = values > 0
        out_rows.append(np.repeat(start + local, k)[keep.ravel()])
        out_cols.append(top[keep])
        out_vals.append(values[keep])
    graph = sp.csr_matrix(
        (np.concatenate(out_vals), (np.concatenate(out_rows), np.concatenate(out_cols))),
        shape=(n, n),
    )
    graph = ((graph + graph.T) / 2).tocsr()
    graph.eliminate_zeros()
    return graph


def collective_gram(
    gram: np.ndarray, graph: sp.spmatrix | None, strength: float, inplace: bool = False
) -> np.ndarray:
    """``gram + strength * graph`` as a new dense array in ``gram``'s memory order (``gram``
    itself at strength 0; with ``inplace``, ``gram`` itself, changed): the Gram matrix of a
    collective EASE, which regresses each item on its co-interactions and on its neighbours
    in ``graph`` (e.g. by text)."""
    if not strength or graph is None:
        return gram
    out = gram if inplace else gram.copy(order="K")
    coo = graph.tocoo()
    out[coo.row, coo.col] += strength * coo.data
    return out


def session_gram(
    interactions: Interactions, window: float, reach: float = 4.0, chunk: int = 4_000_000
) -> sp.csr_matrix:
    """Co-occurrences close in each user's time order, a symmetric sparse ``(n_items,
    n_items)`` matrix without diagonal: two of a user's events ``d`` positions apart (ordered
    by timestamp, then by row) add ``exp(-d / window)`` to their pair, up to
    ``d = reach * window``. Without timestamps the rows' order is the time order.

    Items rated in one sitting were usually shown together (a page, a shelf, a season): a
    tighter tie than sharing a history, as a context window is in item2vec."""
    n = interactions.n_items
    stamps = interactions.timestamps
    keys = (np.arange(len(interactions)),) if stamps is None else (stamps,)
    order = np.lexsort((*keys, interactions.users))
    users, items = interactions.users[order], interactions.items[order]
    total = sp.csr_matrix((n, n), dtype=np.float64)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def flush() -> sp.csr_matrix:
        rows, cols, vals = (np.concatenate(x) for x in zip(*parts, strict=True))
        parts.clear()
        return total + sp.csr_matrix((vals, (rows, cols)), shape=(n, n))

    for d in range(1, int(reach * window) + 1):
        same = np.flatnonzero(users[d:] == users[:-d])
        parts.append((items[same], items[same + d], np.full(len(same), np.exp(-d / window))))
        if sum(len(p[0]) for p in parts) >= chunk:
            total = flush()
    if parts:
        total = flush()
    total = (total + total.T).tocsr()
    total.setdiag(0.0)
    total.eliminate_zeros()
    return total


def mixed_gram(
    gram: np.ndarray, session: sp.spmatrix | None, share: float, inplace: bool = False
) -> np.ndarray:
    """``gram`` whose off-diagonal part is ``(1 - share) * gram + share * session`` (the
    diagonal, the items' counts, is kept): a Gram matrix that weighs co-occurrences close in
    time above co-occurrences anywhere in a history (``gram`` itself at share 0). A new
    array in ``gram``'s memory order, or with ``inplace`` ``gram`` itself, changed."""
    if not share or session is None:
        return gram
    diagonal = np.diag(gram).copy()
    if inplace:
        out = gram
        out *= 1.0 - share
    else:
        out = (1.0 - share) * gram
    coo = session.tocoo()
    out[coo.row, coo.col] += share * coo.data
    out[np.diag_indices_from(out)] = diagonal
    return out


@dataclass(frozen=True)
class RatingStrength:
    """An interaction's weight in a linear model's input rows from its explicit rating:
    linear from ``1 - spread`` at the lowest rating seen in training to ``1 + spread`` at the
    highest (clipped there), 1 without a rating.

    A five-star rating is stronger evidence of a taste than a one-star rating of a film the
    user watched anyway, as confidence weights are in implicit-feedback ALS; every rated item
    stays a positive (``spread < 1``)."""

    low: float
    high: float
    spread: float

    @classmethod
    def fit(cls, ratings: np.ndarray | None, spread: float) -> RatingStrength | None:
        """None when there is nothing to weigh: spread 0, no ratings or a single value."""
        if not 0.0 <= spread < 1.0:
            raise ValueError(f"rating spread must lie in [0, 1), got {spread}")
        if not spread or ratings is None:
            return None
        finite = ratings[np.isfinite(ratings)]
        if not len(finite) or finite.min() == finite.max():
            return None
        return cls(float(finite.min()), float(finite.max()), float(spread))

    def __call__(self, ratings: np.ndarray) -> np.ndarray:
        r = np.asarray(ratings, dtype=np.float64)
        unit = np.clip((r - self.low) / (self.high - self.low), 0.0, 1.0)
        return np.where(np.isfinite(r), 1.0 + self.spread * (2.0 * unit - 1.0), 1.0)

    def rows(self, interactions: Interactions) -> sp.csr_matrix:
        """The interactions' strengths as a float32 CSR matrix with the pattern (and entry
        order) and dtype of ``interactions.matrix()``; a pair seen twice keeps its strongest."""
        ratings = interactions.ratings
        strength = self(np.full(len(interactions), np.nan) if ratings is None else ratings)
        key = interactions.users * interactions.n_items + interactions.items
        order = np.lexsort((strength, key))  # by pair, strongest last
        last = np.r_[key[order][1:] != key[order][:-1], True]
        pick = order[last]
        rows = sp.csr_matrix(
            (
                strength[pick].astype(np.float32),
                (interactions.users[pick], interactions.items[pick]),
            ),
            shape=(interactions.n_users, interactions.n_items),
        )
        rows.sort_indices()
        return rows


class EASE(Recommender):
    """Scores are the user's binary train row times the learned item-item matrix ``B``."""

    name = "ease"
    Config = EASEConfig

    def __init__(self, config: EASEConfig | dict | None = None) -> None:
        super().__init__(config)
        self.weights: np.ndarray | None = None
        self.private_counts: np.ndarray | None = None  # with dp_epsilon: the noisy counts

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        start = time.perf_counter()
        n = self.seen.shape[1]
        # One float64 matrix is the Gram matrix, then (in place) its inverse and the
        # weights; the float32 weights kept for scoring are the only other copy.
        dense = (
            memory.Dense("the Gram matrix, inverted in place", (n, n), np.float64),
            memory.Dense("the weights kept", (n, n), np.float32),
        )
        solver = self.config.solver
        if solver == "auto":
            fits = n <= self.config.max_dense_items and memory.fits(*dense)
            solver = "dense" if fits else "sparse"
        self.fit_info["solver"] = solver
        self.weights = self._solve(self.seen, solver, progress)
        validate_one_pass(self, validator, start)

    @classmethod
    def from_gram(
        cls,
        gram: np.ndarray | sp.spmatrix,
        seen: sp.csr_matrix,
        user_map: IdMap,
        item_map: IdMap,
        config: EASEConfig | dict | None = None,
    ) -> EASE:
        """The model :meth:`fit` builds from the training rows ``seen`` (binary, users x
        items, indexed by ``user_map`` and ``item_map``), solved from ``gram`` = ``seen.T @
        seen`` computed elsewhere: e.g. summed over partitions of the interactions on a Ray
        cluster (:mod:`kinrec.distributed.partitions`), so that no process builds it from the
        events. The dense solver only (the sparse one reads the rows themselves); not with
        ``dp_epsilon`` (the private fit adds its noise to a Gram matrix it computes)."""
        model = cls(config)
        if model.config.dp_epsilon is not None:
            raise ValueError("ease: a private fit (dp_epsilon) computes its own Gram matrix")
        n = len(item_map)
        cls.check_gram_size(n, model.config)
        if seen.shape != (len(user_map), n) or gram.shape != (n, n):
            raise ValueError(
                f"ease: rows {seen.shape} and Gram matrix {gram.shape} do not match "
                f"{len(user_map)} users and {n} items"
            )
        start = time.perf_counter()
        model._prepare(None, None, user_map, item_map, seen)
        model.fit_info["solver"] = "dense"
        model.weights = model._solve(seen, "dense", gram=gram)
        validate_one_pass(model, None, start)
        return model

    @staticmethod
    def check_gram_size(n_items: int, config: EASEConfig) -> None:
        """Refuse a dense solve from a precomputed Gram matrix (:meth:`from_gram`) that the
        configuration would not make: ``solver`` 'sparse', or 'auto' above
        ``max_dense_items`` (the dense matrices grow with the square of the catalogue)."""
        if config.solver == "sparse":
            raise ValueError("ease: a precomputed Gram matrix is solved densely (solver 'dense')")
        if config.solver == "auto" and n_items > config.max_dense_items:
            gib = 8 * n_items**2 / 2**30
            raise ValueError(
                f"ease: {n_items:,} items is more than max_dense_items "
                f"({config.max_dense_items:,}); a dense solve from a summed Gram matrix needs "
                f"at least {gib:,.1f} GiB. Set solver = 'dense' and a larger max_dense_items if "
                "the machine holds it; the sparse solver reads the rows in one process"
            )

    def _solve(
        self,
        seen: sp.csr_matrix,
        solver: str,
        progress: ProgressCallback | None = None,
        gram: np.ndarray | sp.spmatrix | None = None,
    ) -> np.ndarray | sp.csr_matrix:
        """The weights of the training rows ``seen`` by ``solver`` (``dense`` or
        ``sparse``), refused before allocating what does not fit in the memory left;
        ``gram``: ``seen.T @ seen`` already computed (dense solver)."""
        if self.config.dp_epsilon is not None:  # user-level DP: noisy Gram (privacy/dp.py)
            from kinrec.privacy.dp import private_ease_weights

            weights, counts, self.fit_info["privacy"] = private_ease_weights(
                seen, self.config, solver
            )
            self.private_counts = counts
            return weights
        n = seen.shape[1]
        if solver == "dense":
            memory.require(
                f"ease (fit on {n:,} items)",
                memory.Dense("the Gram matrix, inverted in place", (n, n), np.float64),
                memory.Dense("the weights kept", (n, n), np.float32),
                hint=NO_DENSE_HINT,
            )
            if gram is None:
                gram = dense_gram(seen)
            elif sp.issparse(gram):
                gram = gram.toarray(order="F").astype(np.float64, order="F", copy=False)
            weights = ease_weights(gram, self.config.reg_weight, overwrite=True)
            del gram
            return weights.astype(np.float32)
        return sparse_weights(
            seen,
            self.config.reg_weight,
            self.config.neighbours,
            f"ease, sparse ({n:,} items)",
            progress,
        )

    # Erasure (Recommender.forget): the weights are re-solved from the training rows less
    # the forgotten users', by the solver of the fit and the same L2. That equals the fit
    # without them (the Gram matrix sums the same products; an emptied row adds none) for
    # both solvers, the sparse one's neighbour choice included, and it needs no state
    # beyond what the model directory holds: a Woodbury downdate of P = (G + L2 I)^-1 would
    # be faster (items^2 x the user's items instead of items^3) but would keep P, a float64
    # items^2 array, next to the weights (3.2 GB more at 20,000 items) and on disk, and
    # would not cover the sparse solver. Memory: what a fit holds, plus the served weights.
    parts = ("item-item weights",)
    forgets_exactly = ("item-item weights",)

    def _forget_update(self, seen: sp.csr_matrix, users: np.ndarray) -> Callable[[], None]:
        """The weights re-solved from ``seen``, installed by the returned callable."""
        solver = self.fit_info.get("solver") or ("sparse" if sp.issparse(self.weights) else "dense")
        weights = self._solve(seen, solver)

        def install() -> None:
            self.weights = weights

        return install

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        return item_item.scores(self.seen[np.asarray(users)], self.weights, items)

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Fold-in: scores for a user known only by the item indices they interacted with."""
        return item_item.history_row_scores(self.weights, items, weights)

    def similar_items(self, item_id: str, k: int = 10) -> list[Scored]:
        """Items whose consumption most increases ``item_id``'s score (largest ``B[j, i]``)."""
        self._require_fitted()
        iidx = self.item_map.index(item_id)
        sims = item_item.column(self.weights, iidx)
        sims[iidx] = -np.inf
        return self._top(sims, k)

    def item_counts(self) -> np.ndarray:
        """A private model's noisy counts (released, or its Gram matrix's diagonal)."""
        if self.private_counts is not None:
            return self.private_counts.astype(np.float64)
        return super().item_counts()

    def _state(self) -> dict[str, np.ndarray]:
        state = item_item.state(self.weights, "weights")
        if self.private_counts is not None:
            state["private_counts"] = self.private_counts.astype(np.float64)
        return state

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights = item_item.from_state(arrays, len(self.item_map), "weights")
        self.private_counts = arrays.get("private_counts")


def sparse_weights(
    rows: sp.spmatrix,
    l2: float | tuple[float, ...],
    neighbours: int,
    step: str,
    progress: ProgressCallback | None = None,
) -> sp.csr_matrix | list[sp.csr_matrix]:
    """Sparse EASE (:mod:`kinrec.models.sparse_linear`) of ``rows`` (one matrix per L2
    weight when several are given), reporting to ``progress`` under the phase ``step``;
    from the dense Gram matrix where it fits (faster), else from its parts.

    Refuses (:class:`memory.MemoryLimitError`) before allocating when the weights do not
    fit: ``items x neighbours`` entries per L2, plus the neighbour lists."""
    from kinrec.models.sparse_linear import GramParts, neighbourhood_weights

    n = rows.shape[1]
    k = max(1, min(neighbours, n - 1))
    count = 1 if np.isscalar(l2) else len(l2)
    memory.require(
        step,
        memory.Dense("the neighbour lists", (n, k), np.int64),
        memory.Dense("the sparse weights (values, columns)", (n, k), np.float64, copies=count),
        hint="lower the number of neighbours",
    )
    gram = dense_gram(rows) if dense_gram_fits(n) else GramParts(rows)
    report = None if progress is None else (lambda done, total: progress(step, done, total, {}))
    return neighbourhood_weights(gram, l2, k, progress=report, workers=memory.available_cpus())


DENSE_GRAM_ITEMS = 20_000
"""Up to this many items (where it fits in memory) the sparse solver reads its systems from
the dense Gram matrix (3.2 GB at 20,000 items), faster than computing them block by block."""


def dense_gram_fits(n: int) -> bool:
    return n <= DENSE_GRAM_ITEMS and memory.fits(memory.Dense("the Gram matrix", (n, n)))
