"""benchmarks/privacy_ceiling.py: its emulation of one times the users is the private EASE
fit itself, its oracle at full rank is EASE from the clipped Gram matrix, and the number of
users it reports for a share is read off the measured points."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kinrec.data.dataset import IdMap, Interactions, Split
from kinrec.models.ease import EASE, EASEConfig, dense_gram
from kinrec.privacy import dp

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def ceiling():
    spec = importlib.util.spec_from_file_location("bench_privacy_ceiling",
                                                  BENCHMARKS / "privacy_ceiling.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def split_of(n_users: int = 60, n_items: int = 40, seed: int = 3) -> Split:
    """Random binary rows, each pair put in train (70%), valid or test at random."""
    rng = np.random.default_rng(seed)
    taste = rng.random((n_users, 4)) @ rng.random((4, n_items))
    dense = rng.random((n_users, n_items)) < 0.5 * taste / taste.max()
    users, items = np.nonzero(dense)
    part = rng.choice(3, size=len(users), p=[0.7, 0.15, 0.15])
    umap = IdMap([f"u{i}" for i in range(n_users)])
    imap = IdMap([f"i{i}" for i in range(n_items)])
    parts = [Interactions(users[part == p], items[part == p], umap, imap) for p in range(3)]
    return Split(*parts)


def test_one_times_the_users_is_the_private_fit(ceiling) -> None:
    split = split_of()
    ndcg = ceiling.Scorer(split)
    config = EASEConfig(dp_clip=5, dp_item_threshold=0.05)
    runs = ceiling.emulate(ndcg.rows, ndcg, [2.0], [1, 4], [11], config)
    model = EASE({"dp_epsilon": 2.0, "dp_clip": 5, "dp_item_threshold": 0.05, "seed": 11})
    model.fit(split.train)
    first, four = (next(r for r in runs if r["users_times"] == k) for k in (1, 4))
    assert first["ndcg@10"] == pytest.approx(ndcg(model.weights), abs=1e-6)
    assert first["sigma"] == pytest.approx(model.fit_info["privacy"]["sigma"]["gram"], rel=1e-4)
    assert first["items_solved"] == model.fit_info["privacy"]["items_solved"]
    assert first["non_private"] == pytest.approx(ndcg(EASE().fit(split.train).weights), abs=1e-6)
    # four times the users: delta is four times smaller, so sigma is larger; the counts are
    # four times larger against it, so at least as many items are chosen
    assert four["users"] == 4 * first["users"] and four["sigma"] > first["sigma"]
    assert four["items_solved"] >= first["items_solved"]
    assert four["l2"] > 4 * 250.0  # the base L2 scales with the data


def test_the_oracle_at_full_rank_is_ease_of_the_clipped_gram(ceiling) -> None:
    split = split_of()
    ndcg = ceiling.Scorer(split)
    gram = dense_gram(dp.clip_rows(ndcg.rows, 5, 1))
    full, low = ceiling.ceiling(gram, ndcg, [gram.shape[0], 1])
    expected = max(ndcg(ceiling.solve(gram, l2)) for l2 in ceiling.ORACLE_L2)
    assert full["ndcg@10"] == pytest.approx(expected, abs=1e-5)
    top = np.linalg.eigh(gram)
    one = np.outer(top[1][:, -1], top[1][:, -1]) * top[0][-1]
    assert low["ndcg@10"] == pytest.approx(ndcg(ceiling.solve(one, low["l2"])), abs=1e-5)


def test_users_needed_reads_the_crossing_off_the_points(ceiling) -> None:
    rows = [
        {"epsilon": 8.0, "users": 1000, "kept": 0.5},
        {"epsilon": 8.0, "users": 4000, "kept": 0.8},
        {"epsilon": 8.0, "users": 16000, "kept": 1.0},
        {"epsilon": 1.0, "users": 1000, "kept": 0.2},
        {"epsilon": 1.0, "users": 4000, "kept": 0.4},
    ]
    # 0.9 is half way from 0.8 to 1.0: half way between 4,000 and 16,000 on a log scale
    assert ceiling.users_needed(rows, 8.0) == pytest.approx(8000.0)
    assert ceiling.users_needed(rows, 8.0, keep=0.6) == pytest.approx(1000 * 4 ** (1 / 3))
    assert ceiling.users_needed(rows, 8.0, keep=0.4) == 1000.0  # the first point keeps it
    assert ceiling.users_needed(rows, 1.0) is None


def test_a_noisy_gram_that_is_not_positive_definite_is_projected(ceiling) -> None:
    rows = sp.random(30, 12, density=0.3, random_state=0, format="csr")
    rows.data[:] = 1.0
    gram = dense_gram(rows)
    noisy = dp.add_symmetric_noise(gram.copy(order="F"), 50.0, np.random.default_rng(0))
    assert np.linalg.eigvalsh(noisy + np.eye(12)).min() < 0  # needs the projection
    weights = ceiling.solve(noisy, 1.0)
    fixed, raised = dp.positive_definite(noisy, 0.0)
    assert raised > 0
    from kinrec.models.ease import ease_weights

    np.testing.assert_allclose(weights, ease_weights(fixed.copy(order="F"), 1.0), atol=1e-8)
