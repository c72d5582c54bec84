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

    @classmethod
    def fit(
        cls, features, counts: np.ndarray, folds: int = 5, seed: int = 0
    ) -> tuple[PopularityPrior, np.ndarray]:
        """The fitted prior and the prior of every item (out-of-fold for items with counts)."""
        from scipy.sparse.linalg import lsqr

        design = cls._design(features)
        warm = np.flatnonzero(counts > 0)
        target = np.log1p(counts[warm])
        fold = np.random.default_rng(seed).permutation(len(warm)) % folds
        best = None
        for damp in cls.DAMPS:
            oof = np.zeros(len(warm))
            for k in range(folds):
                fit_rows = warm[fold != k]
                coef = lsqr(design[fit_rows], target[fold != k], damp=damp)[0]
                oof[fold == k] = np.asarray(design[warm[fold == k]] @ coef).ravel()
            error = float(np.mean((oof - target) ** 2))
            if best is None or error < best[0]:
                best = (error, damp, oof)
        _, damp, oof = best
        coef = lsqr(design[warm], target, damp=damp)[0]
        raw = np.asarray(design @ coef).ravel()
        raw[warm] = oof
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


def choose_prior_weight(model: Recommender, validator: Validator | None) -> None:
    """Pick the prior's weight on validation NDCG@10 (0 when there is no validation data)."""
    choose_on_validation(model, "prior_weight", PRIOR_GRID, validator)
