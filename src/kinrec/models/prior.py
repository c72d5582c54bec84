"""Content popularity prior: how popular an item should be, predicted from what it is.

Collaborative models know each item's popularity from its interactions; new items have none.
The prior regresses popularity on content features so every item gets one on the same scale,
and models add it to their scores with a weight chosen on validation.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kinrec.models.base import Recommender, Validator
from kinrec.training.loop import choose_on_validation

PRIOR_GRID = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class PopularityPrior:
    """Popularity predicted from content alone, standardised over the catalogue.

    A ridge regression of ``log(1 + train count)`` on item features (plus an intercept),
    fitted on the items that have interactions. The ridge strength is chosen by 5-fold
    cross-validation on those items, and their own prior is the out-of-fold prediction, so
    items with and without interactions get priors of the same kind: predicted from what they
    are (year, genre, text...), never read back from their own counts.
    """

    DAMPS = (0.3, 1.0, 3.0, 10.0, 30.0)

    def __init__(self, coef: np.ndarray, mean: float = 0.0, std: float = 1.0) -> None:
        self.coef, self.mean, self.std = coef, mean, std

    # Up to this many features the ridge systems are solved exactly from the normal
    # equations (one eigendecomposition per fold serves every damping: the features' Gram
    # matrix is at most 8 * 4096^2 bytes = 128 MiB); above, by sparse LSQR.
    EXACT_FEATURES = 4096

    FIT_ITEMS = 50_000
    """At most this many items with interactions fit the regression (a seeded sample of them
    above): a few thousand coefficients are well determined by 50,000 items, and the fit
    costs its rows (at a million items the whole design alone is 384 million text entries).
    The items left out of the sample are predicted by the fitted prior, which never saw
    them: out of sample, as the others' out-of-fold priors are."""

    @classmethod
    def fit(
        cls, features: Features, counts: np.ndarray, folds: int = 5, seed: int = 0
    ) -> tuple[PopularityPrior, np.ndarray]:
        """The fitted prior and the prior of every item (out-of-fold for items with counts).
        ``features``: one item-feature matrix (dense or sparse) or a tuple of column blocks
        of one (text vectors, entity incidence...), which are never joined for the whole
        catalogue."""
        blocks = _blocks(features)
        warm = np.flatnonzero(counts > 0)
        if len(warm) > cls.FIT_ITEMS:
            sample = np.random.default_rng(seed + 1).choice(warm, cls.FIT_ITEMS, replace=False)
            warm = np.sort(sample)
        design = _design(blocks, warm)
        target = np.log1p(counts[warm])
        fold = np.random.default_rng(seed).permutation(len(warm)) % folds
        solve = _normal_ridge if design.shape[1] <= cls.EXACT_FEATURES else _lsqr_ridge
        oofs = {damp: np.zeros(len(warm)) for damp in cls.DAMPS}
        for k in range(folds):
            out = fold == k
            for damp, coef in zip(
                cls.DAMPS, solve(design[np.flatnonzero(~out)], target[~out], cls.DAMPS), strict=True
            ):
                oofs[damp][out] = np.asarray(design[np.flatnonzero(out)] @ coef).ravel()
        errors = {damp: float(np.mean((oof - target) ** 2)) for damp, oof in oofs.items()}
        damp = min(cls.DAMPS, key=errors.get)  # the first of equal errors
        coef = solve(design, target, (damp,))[0]
        raw = _apply(features, coef)
        raw[warm] = oofs[damp]
        prior = cls(coef, float(raw.mean()), float(raw.std() + 1e-12))
        return prior, ((raw - prior.mean) / prior.std).astype(np.float32)

    def predict(self, features: Features) -> np.ndarray:
        """Standardised prior of new items."""
        raw = _apply(features, self.coef)
        return ((raw - self.mean) / self.std).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"prior_coef": self.coef, "prior_stats": np.array([self.mean, self.std])}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray]) -> PopularityPrior:
        return cls(arrays["prior_coef"], *map(float, arrays["prior_stats"]))


Features = np.ndarray | sp.spmatrix | tuple
"""Item features: one matrix, or a tuple of column blocks (dense or sparse) of one."""


def _blocks(features: Features) -> list:
    """The column blocks of ``features`` that have columns."""
    blocks = list(features) if isinstance(features, tuple) else [features]
    return [b if sp.issparse(b) else np.asarray(b) for b in blocks if b.shape[1]]


def _n_rows(features: Features) -> int:
    return (features[0] if isinstance(features, tuple) else features).shape[0]


def feature_count(features: Features) -> int:
    """How many feature columns ``features`` has (its blocks together)."""
    return sum(b.shape[1] for b in _blocks(features))


def _design(blocks: list, rows: np.ndarray):
    """The design matrix of ``rows``: their features side by side and an intercept column
    (CSR where any block is sparse)."""
    ones = np.ones((len(rows), 1))
    parts = [b[rows] for b in blocks]
    if any(sp.issparse(b) for b in parts):
        return sp.hstack([sp.csr_matrix(b) for b in parts] + [ones]).tocsr()
    return np.hstack([*parts, ones])


def _apply(features: Features, coef: np.ndarray) -> np.ndarray:
    """``design @ coef`` over every row, block by block (no joined design matrix)."""
    raw = np.full(_n_rows(features), float(coef[-1]))
    start = 0
    for block in _blocks(features):
        stop = start + block.shape[1]
        raw += np.asarray(block @ np.asarray(coef[start:stop], dtype=np.float64)).ravel()
        start = stop
    return raw


def _normal_ridge(design, target: np.ndarray, damps) -> list[np.ndarray]:
    """``argmin ||design x - target||^2 + damp^2 ||x||^2`` for each damping, exactly: the
    normal equations through one eigendecomposition of ``design^T design``."""
    gram = design.T @ design
    gram = gram.toarray() if sp.issparse(gram) else np.asarray(gram)
    values, vectors = np.linalg.eigh(gram.astype(np.float64))
    projected = vectors.T @ np.asarray(design.T @ target, dtype=np.float64).ravel()
    return [vectors @ (projected / (values + damp**2)) for damp in damps]


def _lsqr_ridge(design, target: np.ndarray, damps) -> list[np.ndarray]:
    """The same minimisers by LSQR (many features: no dense Gram matrix). Columns that are
    mostly non-zero (text embeddings, the intercept) are multiplied as one dense block, the
    rest as a sparse matrix (a dense block stored as CSR is several times slower to apply).
    No warm start: LSQR damps the step from ``x0``, not the solution."""
    from scipy.sparse.linalg import LinearOperator, lsqr

    design = sp.csc_matrix(design)
    n_rows, n_cols = design.shape
    filled = np.diff(design.indptr) > n_rows // 2
    dense_cols, sparse_cols = np.flatnonzero(filled), np.flatnonzero(~filled)
    block = design[:, dense_cols].toarray()
    rest = design[:, sparse_cols].tocsr()
    rest_t = rest.T.tocsr()

    def matvec(x: np.ndarray) -> np.ndarray:
        x = np.ravel(x)
        return block @ x[dense_cols] + rest @ x[sparse_cols]

    def rmatvec(y: np.ndarray) -> np.ndarray:
        y = np.ravel(y)
        out = np.empty(n_cols)
        out[dense_cols] = block.T @ y
        out[sparse_cols] = rest_t @ y
        return out

    operator = LinearOperator(design.shape, matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    return [lsqr(operator, target, damp=damp)[0] for damp in damps]


def choose_prior_weight(model: Recommender, validator: Validator | None) -> None:
    """Pick the prior's weight on validation NDCG@10 (0 when there is no validation data)."""
    choose_on_validation(model, "prior_weight", PRIOR_GRID, validator)
