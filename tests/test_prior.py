"""The content popularity prior's ridge regression: exact normal equations and LSQR agree."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import lsqr

from kinrec.models import prior as prior_module
from kinrec.models.prior import PopularityPrior


def _features(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 400
    text = rng.normal(size=(n, 12))
    entities = sp.random(n, 30, density=0.1, random_state=seed, format="csr")
    true = rng.normal(size=12)
    counts = np.maximum(0, np.round(np.exp(text @ true * 0.3 + rng.normal(0, 0.3, n)) - 1))
    counts[:25] = 0  # items nobody interacted with yet
    return sp.hstack([sp.csr_matrix(text), entities]).tocsr(), counts


def test_normal_equations_give_the_ridge_minimiser_lsqr_converges_to() -> None:
    design, counts = _features()
    target = np.log1p(counts)
    damps = (0.3, 3.0)
    for damp, coef in zip(damps, prior_module._normal_ridge(design, target, damps), strict=True):
        want = lsqr(design, target, damp=damp, atol=1e-12, btol=1e-12, iter_lim=10_000)[0]
        np.testing.assert_allclose(coef, want, rtol=1e-6, atol=1e-8)
        # the gradient of the ridge objective is zero at the solution
        grad = design.T @ (design @ coef - target) + damp**2 * coef
        assert np.abs(grad).max() < 1e-8 * max(1.0, np.abs(design.T @ target).max())


def test_prior_is_the_same_by_either_solver_and_tracks_popularity(monkeypatch) -> None:
    design, counts = _features(1)
    exact, priors = PopularityPrior.fit(design, counts)
    monkeypatch.setattr(PopularityPrior, "EXACT_FEATURES", 0)  # LSQR for every system
    _, by_lsqr = PopularityPrior.fit(design, counts)
    np.testing.assert_allclose(priors, by_lsqr, atol=1e-3)
    assert abs(priors.mean()) < 1e-5 and abs(priors.std() - 1) < 1e-4
    warm = counts > 0
    assert np.corrcoef(priors[warm], np.log1p(counts[warm]))[0, 1] > 0.5
    # items without interactions: the prediction from their features is their prior
    cold = np.flatnonzero(~warm)
    assert len(cold) > 0
    np.testing.assert_allclose(exact.predict(design[cold]), priors[cold], atol=1e-5)


def test_column_blocks_give_the_prior_of_the_joined_features() -> None:
    rng = np.random.default_rng(4)
    text = rng.normal(size=(300, 8)).astype(np.float32)
    entities = sp.random(300, 20, density=0.1, random_state=4, format="csr")
    counts = np.maximum(0, np.round(np.exp(text[:, 0] + rng.normal(0, 0.3, 300))))
    joined = sp.hstack([sp.csr_matrix(text), entities]).tocsr()
    model, priors = PopularityPrior.fit(joined, counts)
    by_blocks, from_blocks = PopularityPrior.fit((text, entities), counts)
    np.testing.assert_allclose(from_blocks, priors, atol=1e-5)
    np.testing.assert_allclose(
        by_blocks.predict((text[:7], entities[:7])), model.predict(joined[:7]), atol=1e-5
    )
    assert prior_module.feature_count((text, entities)) == 28
    assert prior_module.feature_count((text[:, :0], entities[:, :0])) == 0


def test_a_sample_of_the_items_fits_a_large_catalogue(monkeypatch) -> None:
    rng = np.random.default_rng(5)
    n = 3000
    text = rng.normal(size=(n, 6))
    true = rng.normal(size=6)
    counts = np.maximum(0, np.round(np.exp(text @ true * 0.4 + rng.normal(0, 0.2, n))))
    full, _ = PopularityPrior.fit(text, counts)
    monkeypatch.setattr(PopularityPrior, "FIT_ITEMS", 500)
    sampled, priors = PopularityPrior.fit(text, counts)
    # few coefficients: 500 items determine them about as well as 3,000
    np.testing.assert_allclose(sampled.coef, full.coef, atol=0.05)
    warm = np.flatnonzero(counts > 0)
    assert len(warm) > 500
    assert np.corrcoef(priors[warm], np.log1p(counts[warm]))[0, 1] > 0.8
    # the items outside the sample get the fitted prior's prediction; the sampled ones
    # their out-of-fold one, which differs from it
    predicted = sampled.predict(text)
    inside = np.abs(priors - predicted) > 1e-6
    assert 0 < inside.sum() <= 500
    np.testing.assert_allclose(priors[~inside], predicted[~inside], atol=1e-6)
