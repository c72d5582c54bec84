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

    @staticmethod
    def _design(features: np.ndarray | sp.spmatrix):
        ones = np.ones((features.shape[0], 1))
        if sp.issparse(features):
            return sp.hstack([features, ones]).tocsr()
        return np.hstack([np.asarray(features), ones])

    # Up to this many features the ridge systems are solved exactly from the normal
    # equations (one eigendecomposition per fold serves every damping: the features' Gram
    # matrix is at most 8 * 4096^2 bytes = 128 MiB); above, by sparse LSQR.
    EXACT_FEATURES = 4096

    @classmethod
    def fit(
        cls, features, counts: np.ndarray, folds: int = 5, seed: int = 0
    ) -> tuple[PopularityPrior, np.ndarray]:
        """The fitted prior and the prior of every item (out-of-fold for items with counts)."""
        design = cls._design(features)
        warm = np.flatnonzero(counts > 0)
        target = np.log1p(counts[warm])
        fold = np.random.default_rng(seed).permutation(len(warm)) % folds
        solve = _normal_ridge if design.shape[1] <= cls.EXACT_FEATURES else _lsqr_ridge
        oofs = {damp: np.zeros(len(warm)) for damp in cls.DAMPS}
        for k in range(folds):
            out = fold == k
            for damp, coef in zip(
                cls.DAMPS, solve(design[warm[~out]], target[~out], cls.DAMPS), strict=True
            ):
                oofs[damp][out] = np.asarray(design[warm[out]] @ coef).ravel()
        errors = {damp: float(np.mean((oof - target) ** 2)) for damp, oof in oofs.items()}
        damp = min(cls.DAMPS, key=errors.get)  # the first of equal errors
        coef = solve(design[warm], target, (damp,))[0]
        raw = np.asarray(design @ coef).ravel()
        raw[warm] = oofs[damp]
        prior = cls(coef, float(raw.mean()), float(raw.std() + 1e-12))
        return prior, ((raw - prior.mean) / prior.std).astype(np.float32)

    def predict(self, features) -> np.ndarray:
        """Standardised prior of new items."""
        raw = np.asarray(self._design(features) @ self.coef).ravel()
        return ((raw - self.mean) / self.std).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"prior_coef": self.coef, "prior_stats": np.array([self.mean, self.std])}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray]) -> PopularityPrior:
        return cls(arrays["prior_coef"], *map(float, arrays["prior_stats"]))


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
