"""User-level differential privacy (kinrec.privacy.dp): the calibration against the Gaussian
privacy profile, clipping and its sensitivity bounds, the noise actually added, private EASE
and popularity fits (saved, loaded, shown by /v1/info, refused by the CLI for other models),
and the membership-inference audit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient
from scipy.integrate import quad
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from test_serving_support import make_store, train
from typer.testing import CliRunner

from kinrec.cli import app as cli
from kinrec.data.dataset import IdMap, Interactions
from kinrec.models.base import Recommender
from kinrec.models.ease import EASE, dense_gram
from kinrec.models.popularity import Popularity
from kinrec.privacy import dp
from kinrec.serving.app import create_app
from kinrec.serving.config import ServingConfig
from kinrec.serving.engine import Engine


def hockey_stick(mu: float, epsilon: float) -> float:
    """δ(ε) of N(mu, 1) against N(0, 1), by numerical integration (independent of the
    closed form under test)."""

    def gap(x: float) -> float:
        return max(0.0, norm.pdf(x - mu) - math.exp(epsilon) * norm.pdf(x))

    return quad(gap, -40, 40 + mu, points=[epsilon / mu + mu / 2], limit=400)[0]


def random_rows(n_users: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # no empty row
    return sp.csr_matrix(dense.astype(np.float32))


def interactions(rows: sp.csr_matrix) -> Interactions:
    coo = rows.tocoo()
    users = IdMap([f"u{i}" for i in range(rows.shape[0])])
    items = IdMap([f"i{i}" for i in range(rows.shape[1])])
    return Interactions(coo.row.astype(np.int64), coo.col.astype(np.int64), users, items)


def upper(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices_from(matrix)]


# ------------------------------------------------------------------------------ accounting
@pytest.mark.parametrize(("epsilon", "delta"), [(0.5, 1e-5), (1.0, 1e-5), (4.0, 1e-6), (8.0, 1e-4)])
def test_mu_meets_the_gaussian_privacy_profile_exactly(epsilon: float, delta: float) -> None:
    mu = dp.gaussian_mu(epsilon, delta)
    assert hockey_stick(mu, epsilon) == pytest.approx(delta, rel=1e-4)
    assert hockey_stick(mu * 1.01, epsilon) > delta  # the largest mu that does
    assert dp.epsilon_of(mu, delta) == pytest.approx(epsilon, rel=1e-6)


def test_sigma_is_the_analytic_gaussian_mechanism() -> None:
    # Balle & Wang (2018): sigma 3.73 at (1, 1e-5) for sensitivity 1, where the classical
    # sqrt(2 ln(1.25 / delta)) / epsilon asks for 4.84.
    sigma = dp.gaussian_sigma(1.0, 1e-5, 1.0)
    assert sigma == pytest.approx(3.7306, abs=1e-3)
    for epsilon in (0.25, 0.5, 0.9):
        classical = math.sqrt(2 * math.log(1.25 / 1e-5)) / epsilon
        assert dp.gaussian_sigma(epsilon, 1e-5, 1.0) < classical
    assert dp.gaussian_sigma(1.0, 1e-5, 7.0) == pytest.approx(7 * sigma)
    assert dp.gaussian_mu(math.inf, 1e-5) == math.inf


def test_two_releases_compose_to_the_target() -> None:
    releases = dp.plan(2.0, 1e-5, {"gram": (10.0, "l2", 3.0), "counts": (2.0, "l2", 1.0)})
    mu = dp.gaussian_mu(2.0, 1e-5)
    assert dp.composed_mu(releases) == pytest.approx(mu)
    gram, counts = releases
    assert gram.mu**2 / counts.mu**2 == pytest.approx(3.0)  # the budget split by weight
    assert gram.sigma == pytest.approx(10.0 / (mu * math.sqrt(0.75)))
    info = dp.record(releases, 2.0, 1e-5, clip=5, seed=1)
    assert info["epsilon_spent"] == pytest.approx(2.0, rel=1e-5)
    assert info["composition"] == dp.COMPOSITION
    assert info["public_inputs"] == ["item text", "knowledge graph"]


# ------------------------------------------------------------------------------ clipping
def test_clipping_keeps_at_most_clip_items_of_each_user() -> None:
    rows = random_rows(60, 80, 0.3, seed=1)
    clipped = dp.clip_rows(rows, 10, seed=3)
    lengths = np.diff(rows.indptr)
    kept = np.diff(clipped.indptr)
    assert (kept == np.minimum(lengths, 10)).all()
    assert (clipped.data == 1).all()
    assert (clipped.multiply(rows) != clipped).nnz == 0  # a subset of each row
    assert (dp.clip_rows(rows, 10, seed=3) != clipped).nnz == 0  # the seed decides
    assert (dp.clip_rows(rows, 10, seed=4) != clipped).nnz > 0
    # What a user keeps does not depend on anyone else's row (emptied: as an erasure does).
    emptied = rows.tolil()
    emptied[5, :] = 0
    again = dp.clip_rows(sp.csr_matrix(emptied), 10, seed=3)
    others = np.r_[0:5, 6:60]
    assert (again[others] != clipped[others]).nnz == 0


def test_clipping_samples_uniformly_without_replacement() -> None:
    row = sp.csr_matrix(np.ones((1, 20), dtype=np.float32))
    kept = np.zeros(20)
    for seed in range(2000):
        kept += dp.clip_rows(row, 5, seed).toarray()[0]
    # every item is kept with probability 5 / 20: 500 of 2000 times, sd ~19
    assert np.abs(kept - 500).max() < 80


def test_one_users_contribution_is_within_the_sensitivity_bounds() -> None:
    rows = random_rows(40, 30, 0.4, seed=2)
    clip = 6
    clipped = dp.clip_rows(rows, clip, seed=0).toarray().astype(np.float64)
    full_gram, full_counts = clipped.T @ clipped, clipped.sum(axis=0)
    gram_norms, count_norms = [], []
    for u in range(len(clipped)):
        rest = np.delete(clipped, u, axis=0)
        gram_norms.append(np.linalg.norm(upper(full_gram - rest.T @ rest)))
        count_norms.append(np.linalg.norm(full_counts - rest.sum(axis=0)))
    assert max(gram_norms) <= dp.gram_sensitivity(clip) + 1e-9
    assert max(count_norms) <= dp.count_sensitivity(clip) + 1e-9
    # every row here has more than clip items: the bounds are met with equality
    assert min(gram_norms) == pytest.approx(dp.gram_sensitivity(clip))
    assert dp.gram_sensitivity(clip) == pytest.approx(math.sqrt((clip**2 + clip) / 2))
    # the whole matrix's Frobenius norm counts each off-diagonal pair twice: ||x||^2 = clip
    assert np.linalg.norm(np.outer(clipped[0], clipped[0])) == pytest.approx(clip)


# ------------------------------------------------------------------------------ noise
def test_the_gram_matrix_gets_symmetric_noise_of_the_predicted_spread() -> None:
    rows = random_rows(100, 300, 0.05, seed=5)
    truth = dense_gram(rows)
    deviations = {}
    for sigma in (2.0, 8.0):
        release = dp.Release("gram", 1.0, sigma, "l2")
        noisy = dp.noisy_gram(rows, release, np.random.default_rng(0))
        assert np.array_equal(noisy, noisy.T)
        deviation = upper(noisy - truth)  # 45,150 independent draws
        assert abs(deviation.mean()) < 4 * sigma / math.sqrt(len(deviation))
        assert deviation.std() == pytest.approx(sigma, rel=0.02)
        assert np.diag(noisy - truth).std() == pytest.approx(sigma, rel=0.15)
        deviations[sigma] = deviation
    # the same draws, scaled: noise is proportional to sigma
    np.testing.assert_allclose(deviations[8.0], 4 * deviations[2.0], rtol=1e-9, atol=1e-9)


def test_counts_get_noise_of_the_predicted_spread() -> None:
    rows = random_rows(50, 4000, 0.02, seed=6)
    release = dp.Release("counts", 1.0, 3.0, "l2")
    noisy = dp.noisy_counts(rows, release, np.random.default_rng(1))
    deviation = noisy - np.asarray(rows.sum(axis=0)).ravel()
    assert deviation.std() == pytest.approx(3.0, rel=0.05)


def test_negative_eigenvalues_are_raised() -> None:
    matrix = np.diag([3.0, -1.0, 2.0])
    fixed, raised = dp.positive_definite(matrix, 0.0)
    assert raised == 1
    np.testing.assert_allclose(np.linalg.eigvalsh(fixed), [0.0, 2.0, 3.0], atol=1e-12)


def test_the_items_chosen_are_the_most_counted_above_the_noise() -> None:
    counts = np.array([5.0, 100.0, 40.0, 60.0, 1.0, 30.0])
    # sorted: 100, 60, 40, 30, 5, 1 against 10 sqrt(m): 10, 14.1, 17.3, 20, 22.4, 24.5
    np.testing.assert_array_equal(dp.chosen_items(counts, 10.0, 1.0), [1, 2, 3, 5])
    # the largest m that qualifies, even past one that does not: 30 < 20 * 2 = 40
    np.testing.assert_array_equal(dp.chosen_items(counts, 20.0, 1.0), [1, 2, 3])
    np.testing.assert_array_equal(dp.chosen_items(counts, 10.0, 0.0), np.arange(6))
    assert len(dp.chosen_items(counts, 1000.0, 1.0)) == 0


def test_the_private_gram_solve_is_its_definition() -> None:
    """solve_private_gram equals its three steps done here by hand: noisy counts, the items
    they choose, the noisy Gram matrix of the re-clipped rows of those items projected onto
    the positive semi-definite matrices and solved; nothing outside the chosen items."""
    from kinrec.models.ease import ease_weights

    rows = random_rows(300, 40, 0.2, seed=9)
    rows[:, 30:] = rows[:, 30:].multiply(np.random.default_rng(0).random((300, 10)) < 0.05)
    releases = dp.gram_releases(2.0, 6, 0.05)
    assert [r.name for r in releases] == ["counts", "gram"]
    assert dp.composed_mu(releases) == pytest.approx(2.0)
    solved = dp.solve_private_gram(rows, releases, 6, 3, 10.0, 0.5, 0.05, "test")
    rng = dp.noise_rng(3)
    counts = dp.noisy_counts(dp.clip_rows(rows, 6, 3), releases[0], rng)
    items = dp.chosen_items(counts, releases[1].sigma, 0.05)
    assert 0 < len(items) < 40  # some rare items are left out
    np.testing.assert_array_equal(solved.items, items)
    np.testing.assert_allclose(solved.counts, np.maximum(counts, 0.0))
    gram = dp.noisy_gram(dp.clip_rows(sp.csr_matrix(rows)[:, items], 6, 3), releases[1], rng)
    fixed, raised = dp.positive_definite(gram, 0.0)
    l2 = 10.0 + dp.noise_l2(releases[1].sigma, len(items), 0.5)
    assert solved.l2 == pytest.approx(l2) and solved.raised == raised > 0
    expected = np.zeros((40, 40))
    expected[np.ix_(items, items)] = ease_weights(fixed, l2)
    np.testing.assert_allclose(solved.weights, expected, atol=1e-6)
    # every item (threshold 0): one release, the counts are the noisy Gram matrix's diagonal
    (release,) = dp.gram_releases(2.0, 6, 0.0)
    every = dp.solve_private_gram(rows, [release], 6, 3, 10.0, 0.5, 0.0, "test")
    gram = dp.noisy_gram(dp.clip_rows(rows, 6, 3), release, dp.noise_rng(3))
    np.testing.assert_allclose(every.counts, np.maximum(np.diag(gram), 0.0))
    fixed, _ = dp.positive_definite(gram, 0.0)
    l2 = 10.0 + dp.noise_l2(release.sigma, 40, 0.5)
    np.testing.assert_allclose(every.weights, ease_weights(fixed, l2), atol=1e-6)


def test_a_gram_matrix_positive_definite_by_a_hair_is_still_projected() -> None:
    """A noisy matrix whose smallest eigenvalue plus the L2 is barely above 0 solves without
    error, and its weights blow up along that direction; the projection keeps them sane."""
    from kinrec.models.ease import ease_weights

    rng = np.random.default_rng(4)
    basis, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    values = np.linspace(-9.99, 50.0, 20)  # with L2 10: smallest eigenvalue 0.01
    noisy = (basis * values) @ basis.T
    raw = ease_weights(noisy.copy(order="F"), 10.0)
    fixed, raised = dp.positive_definite(noisy, 0.0)
    assert raised > 0
    projected = ease_weights(fixed, 10.0)
    assert np.abs(raw).max() > 10 * np.abs(projected).max()


# ------------------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def data() -> Interactions:
    return interactions(random_rows(200, 60, 0.15, seed=7))


def test_no_epsilon_or_infinity_is_the_non_private_model_exactly(data: Interactions) -> None:
    plain = EASE().fit(data)
    for off in (EASE({"dp_epsilon": math.inf}), EASE({"dp_epsilon": None, "dp_clip": 3})):
        off.fit(data)
        assert off.config.dp_epsilon is None
        assert np.array_equal(off.weights, plain.weights)
        assert "privacy" not in off.fit_info
    assert np.array_equal(Popularity({"dp_epsilon": math.inf}).fit(data).counts,
                          Popularity().fit(data).counts)  # fmt: skip


def test_private_fits_are_noisy_seeded_and_accounted(data: Interactions) -> None:
    private = EASE({"dp_epsilon": 1.0, "dp_clip": 5}).fit(data)
    again = EASE({"dp_epsilon": 1.0, "dp_clip": 5}).fit(data)
    other = EASE({"dp_epsilon": 1.0, "dp_clip": 5, "seed": 1}).fit(data)
    assert np.array_equal(private.weights, again.weights)
    assert not np.array_equal(private.weights, other.weights)
    assert not np.allclose(private.weights, EASE().fit(data).weights, atol=1e-3)
    info = private.fit_info["privacy"]
    assert info["delta"] == pytest.approx(1 / 200)  # default: 1 / training users
    assert info["epsilon"] == 1.0 and info["epsilon_spent"] == pytest.approx(1.0, rel=1e-5)
    # the counts that choose the items get 10% of mu^2, the Gram matrix the rest
    mu = dp.gaussian_mu(1.0, 1 / 200)
    assert info["sigma"]["counts"] == pytest.approx(math.sqrt(5) / (mu * math.sqrt(0.1)))
    assert info["sigma"]["gram"] == pytest.approx(math.sqrt(15) / (mu * math.sqrt(0.9)))
    assert info["clip"]["items_per_user"] == 5
    assert info["hyperparameters"] == "fixed in advance"
    sensitivity = {m["name"]: m["sensitivity"] for m in info["mechanisms"]}
    assert sensitivity == pytest.approx({"counts": math.sqrt(5), "gram": math.sqrt(15)})
    assert 0 <= info["items_solved"] <= 60 and info["item_threshold"] == 0.1
    alone = EASE({"dp_epsilon": 1.0, "dp_clip": 5, "dp_item_threshold": 0}).fit(data)
    only = alone.fit_info["privacy"]  # every item: one release, the whole budget
    assert only["sigma"] == pytest.approx(dp.gaussian_sigma(1.0, 1 / 200, math.sqrt(15)))
    assert only["items_solved"] == 60 and only["epsilon_spent"] == pytest.approx(1.0, rel=1e-5)
    pop = Popularity({"dp_epsilon": 1.0, "dp_delta": 1e-6, "dp_clip": 4}).fit(data)
    assert pop.fit_info["privacy"]["delta"] == 1e-6
    assert pop.fit_info["privacy"]["mechanisms"][0]["sensitivity"] == pytest.approx(2.0)
    assert not np.array_equal(pop.counts, Popularity().fit(data).counts)


def test_private_ease_skips_choices_on_validation_saves_and_serves(tmp_path: Path) -> None:
    url = make_store(tmp_path)
    (tmp_path / "private").mkdir()
    (tmp_path / "plain").mkdir()
    private_dir = train(tmp_path / "private", url, "ease", {"dp_epsilon": 2.0, "dp_clip": 8})
    manifest = json.loads((private_dir / "manifest.json").read_text())
    info = manifest["fit_info"]["privacy"]
    n_users = manifest["n_users"]
    assert info["epsilon"] == 2.0 and info["delta"] == pytest.approx(1 / n_users)
    assert "history_prior" not in manifest["fit_info"]  # nothing chosen on private data
    loaded = Recommender.load(private_dir)
    assert loaded.fit_info["privacy"] == info
    assert loaded.history_prior_strength == 0.0
    plain_dir = train(tmp_path / "plain", url, "ease")
    assert "history_prior" in json.loads((plain_dir / "manifest.json").read_text())["fit_info"]

    exact = np.asarray(loaded.seen.sum(axis=0), dtype=np.float64).ravel()
    for model_dir, expected in ((private_dir, info), (plain_dir, None)):
        engine = Engine.open(ServingConfig(model_dir=model_dir, db=url), model_cls=Recommender)
        client = TestClient(create_app(engine=engine))
        response = client.get("/v1/info")
        assert response.status_code == 200, response.text
        assert response.json()["privacy"] == expected
        # the service's popular items read the counts the model releases: the noisy ones
        popularity = engine.scorer.popularity
        if expected is None:
            np.testing.assert_array_equal(popularity, exact.astype(np.float32))
        else:
            assert not np.allclose(popularity, exact, atol=0.5)
            np.testing.assert_allclose(popularity, loaded.item_counts(), rtol=1e-6)


def test_private_models_release_noisy_counts_only(data: Interactions, tmp_path: Path) -> None:
    """What new users' popularity and the service's popular items read (item_counts) is the
    private model's noisy counts, never below 0, kept across save and load: EASE's released
    counts, or its Gram matrix's diagonal when it covers every item."""
    exact = np.asarray(data.matrix().sum(axis=0), dtype=np.float64).ravel()
    for model in (
        EASE({"dp_epsilon": 1.0, "dp_clip": 5}).fit(data),
        EASE({"dp_epsilon": 1.0, "dp_clip": 5, "dp_item_threshold": 0}).fit(data),
        Popularity({"dp_epsilon": 1.0, "dp_clip": 5}).fit(data),
    ):
        counts = model.item_counts()
        assert counts.shape == exact.shape and (counts >= 0).all()
        assert not np.allclose(counts, exact, atol=0.5)
        reloaded = Recommender.load(model.save(tmp_path / model.name))
        np.testing.assert_array_equal(reloaded.item_counts(), counts)
    np.testing.assert_array_equal(EASE().fit(data).item_counts(), exact)


def test_cli_trains_privately_and_refuses_models_that_cannot(
    tmp_path: Path, toy_split_dir: Path
) -> None:
    root = toy_split_dir
    runner = CliRunner()
    refused = runner.invoke(
        cli, ["train", "--model", "itemknn", "--split-dir", str(root), "--dp-epsilon", "1",
              "--out", str(tmp_path / "knn")],
    )  # fmt: skip
    assert refused.exit_code != 0
    assert "itemknn cannot be trained with differential privacy" in refused.output
    assert "pop, ease" in refused.output
    out = tmp_path / "ease"
    res = runner.invoke(
        cli, ["train", "--model", "ease", "--split-dir", str(root), "--dp-epsilon", "4",
              "--dp-clip", "5", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    info = json.loads((out / "manifest.json").read_text())["fit_info"]["privacy"]
    assert info["epsilon"] == 4.0 and info["delta"] == pytest.approx(1 / 30)
    assert info["clip"]["items_per_user"] == 5
    assert "differential privacy (per user): epsilon 4" in res.output
    lonely = runner.invoke(cli, ["train", "--model", "ease", "--split-dir", str(root),
                                 "--dp-clip", "5", "--out", str(out)])  # fmt: skip
    assert lonely.exit_code != 0 and "need --dp-epsilon" in lonely.output


# ------------------------------------------------------------------------------ audit
def test_auc_is_the_rank_formula() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 50).round(1), rng.normal(0, 1, 70).round(1)  # with ties
    labels = np.r_[np.ones(50), np.zeros(70)]
    assert dp.auc(pos, neg) == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]))
    assert dp.auc(np.ones(3), np.ones(4)) == 0.5


def test_the_membership_attack_finds_an_overfit_models_training_users() -> None:
    rows = random_rows(160, 50, 0.2, seed=9)  # no structure: only memorisation helps
    members, outsiders = rows[:80], rows[80:]
    overfit = EASE({"reg_weight": 0.5}).fit(interactions(members))
    assert dp.membership_auc(overfit, members, outsiders) > 0.9
    private = EASE({"reg_weight": 0.5, "dp_epsilon": 0.5}).fit(interactions(members))
    assert dp.membership_auc(private, members, outsiders) < 0.7


def test_erasing_a_user_from_a_private_ease_equals_its_private_fit_without_them(
    data: Interactions,
) -> None:
    config = {"dp_epsilon": 1.0, "dp_clip": 5}
    model = EASE(config).fit(data)
    model.forget([3])
    without = EASE(config).fit(data.subset(data.users != 3))  # same users, row 3 empty
    np.testing.assert_allclose(model.weights, without.weights, rtol=0, atol=1e-6)
    assert model.fit_info["privacy"]["delta"] == without.fit_info["privacy"]["delta"]
