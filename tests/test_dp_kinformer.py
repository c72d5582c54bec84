"""kinformer with user-level differential privacy: DP-SGD with users as the unit (per-user
gradients, clipping, the accountant) and the private fit as a whole."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from fastapi.testclient import TestClient
from test_serving_support import make_store, train

from kinrec.data.dataset import IdMap, Interactions
from kinrec.models.base import Recommender
from kinrec.models.transfer import TransferRecommender
from kinrec.models.transfer.private import PrivateTower
from kinrec.privacy import dp, dpsgd
from kinrec.serving.app import create_app
from kinrec.serving.config import ServingConfig
from kinrec.serving.engine import Engine


# ------------------------------------------------------------------------------ accounting
def test_a_lone_gaussian_release_reads_the_same_in_both_accountants() -> None:
    """Opacus' PRV accountant on one Gaussian release (sample rate 1, one step) agrees with
    the exact analytic Gaussian privacy profile the linear models use."""
    delta = 1e-5
    for mu in (0.3, 1.0, 2.5):
        release = dp.Release("gram", 1.0, 1.0 / mu, "l2")
        assert dpsgd.epsilon_spent([release], None, delta) == pytest.approx(
            dp.epsilon_of(mu, delta), rel=0.02
        )


def test_calibration_spends_the_budget_and_no_more() -> None:
    epsilon, delta = 2.0, 1e-4
    gram = dp.Release("gram", 3.0, 3.0 / (dp.gaussian_mu(epsilon, delta) * math.sqrt(0.5)), "l2")
    plan = dpsgd.calibrate(epsilon, delta, [gram], sample_rate=0.05, steps=200, clip=1.0)
    spent = dpsgd.epsilon_spent([gram], plan, delta)
    assert 0.97 * epsilon <= spent <= epsilon
    quieter = dpsgd.SGDPlan(plan.noise_multiplier * 0.9, 0.05, 200, 1.0)
    assert dpsgd.epsilon_spent([gram], quieter, delta) > epsilon  # less noise: over budget
    alone = dpsgd.calibrate(epsilon, delta, [], sample_rate=0.05, steps=200, clip=1.0)
    assert alone.noise_multiplier < plan.noise_multiplier  # the release took a share
    assert dpsgd.epsilon_spent([gram], None, delta) < epsilon
    with pytest.raises(ValueError, match="no budget is left"):
        dpsgd.calibrate(0.1, delta, [dp.Release("g", 1.0, 0.1, "l2")], 0.05, 10, 1.0)


def test_poisson_sampling_and_clipping() -> None:
    rng = np.random.default_rng(0)
    sizes = [len(dpsgd.poisson_users(1000, 0.1, rng)) for _ in range(200)]
    assert abs(np.mean(sizes) - 100) < 3 and np.std(sizes) > 5  # binomial, not fixed
    grads = [torch.randn(6, 4, 3), torch.randn(6, 5)]
    grads[0][0] *= 1e-3
    grads[1][0] *= 1e-3
    factors = dpsgd.clip_factors(grads, 1.0)
    norms = torch.sqrt(sum(g.reshape(6, -1).pow(2).sum(1) for g in grads))
    assert factors[0] == 1.0  # a small gradient is left as it is
    np.testing.assert_allclose((factors * norms)[1:].numpy(), 1.0, rtol=1e-5)


# ------------------------------------------------------------------------------ the tower
def structured_rows(n_users: int = 240, n_items: int = 60, seed: int = 0) -> sp.csr_matrix:
    """Users who each like one of 4 item groups (mostly), so that a model can learn."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n_users):
        group = u % 4
        own = np.arange(n_items)[np.arange(n_items) % 4 == group]
        items = rng.choice(own, size=8, replace=False)
        items = np.union1d(items, rng.choice(n_items, size=2, replace=False))
        rows += [u] * len(items)
        cols += list(items)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))


def interactions(rows: sp.csr_matrix) -> Interactions:
    coo = rows.tocoo()
    users = IdMap([f"u{u}" for u in range(rows.shape[0])])
    items = IdMap([f"i{i}" for i in range(rows.shape[1])])
    return Interactions(coo.row.astype(np.int64), coo.col.astype(np.int64), users, items)


@pytest.fixture(scope="module")
def data() -> Interactions:
    return interactions(structured_rows())


@pytest.fixture(scope="module")
def private(data: Interactions) -> TransferRecommender:
    return TransferRecommender(
        {"dp_epsilon": 4.0, "dp_clip": 10, "dp_users_per_step": 60, "dp_epochs": 4, "dim": 8}
    ).fit(data)


def tower_of(model: TransferRecommender) -> PrivateTower:
    n = len(model.item_final)
    d = model.config.dim
    views = torch.randn(n, d, generator=torch.Generator().manual_seed(1))
    available = torch.ones(n, 3, dtype=torch.bool)
    return PrivateTower(model.config, model._net, views, views.flip(1), available)


def test_per_user_gradients_are_each_users_own_gradient(private: TransferRecommender) -> None:
    """The vmapped gradients equal autograd's gradient of that user's loss alone, and a user's
    gradient does not change when another user's rows do."""
    tower = tower_of(private)
    rows = dp.clip_rows(private.seen, 10, 0)
    users = np.array([3, 17, 40])
    negs = torch.tensor([1, 5, 9, 22, 31])
    grads, _ = tower.user_gradients(rows, users, negs)
    ids, at, mask, neg_mask = tower.inputs(rows, users, negs)
    for j in range(len(users)):
        own_ids = ids[j].clone().requires_grad_(True)
        gate = {k: p.detach().clone().requires_grad_(True) for k, p in tower.gate.items()}
        tower.loss(gate, own_ids, at[j], mask[j], neg_mask[j]).backward()
        torch.testing.assert_close(grads[0][j], own_ids.grad)
        torch.testing.assert_close(grads[1][j], gate["weight"].grad)
        torch.testing.assert_close(grads[2][j], gate["bias"].grad)
    changed = rows.tolil()
    changed[17] = 0
    changed[17, [2, 6, 10]] = 1  # another user's rows change: user 3's gradient does not
    again, _ = tower.user_gradients(changed.tocsr(), users, negs)
    torch.testing.assert_close(again[0][0], grads[0][0])


def test_one_user_moves_a_steps_clipped_sum_by_at_most_the_clip(
    private: TransferRecommender,
) -> None:
    """The DP-SGD sensitivity: with or without any one user, the step's sum of clipped
    gradients differs by at most ``clip`` in L2 over all parameters, and the large gradients
    were clipped (the bound is reached, not loose)."""
    tower = tower_of(private)
    rows = dp.clip_rows(private.seen, 10, 0)
    users = np.arange(0, 200, 3)
    negs = torch.arange(0, 60, 4)
    clip = 0.05
    full = tower.clipped_sum(rows, users, negs, clip)
    gaps = []
    for drop in range(0, len(users), 7):
        without = tower.clipped_sum(rows, np.delete(users, drop), negs, clip)
        pairs = zip(full, without, strict=True)
        gaps.append(math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in pairs)))
    assert max(gaps) <= clip * (1 + 1e-4)
    assert max(gaps) >= clip * 0.99


# ------------------------------------------------------------------------------ the fit
def test_private_fit_is_accounted_and_chooses_nothing_on_validation(
    data: Interactions, private: TransferRecommender
) -> None:
    calls = []
    model = TransferRecommender(
        {"dp_epsilon": 4.0, "dp_clip": 10, "dp_users_per_step": 60, "dp_epochs": 4, "dim": 8}
    )
    model.fit(data, validator=lambda m: calls.append(1) or 0.0)
    assert calls == []  # no early stopping, no head search, no weight chosen
    info = model.fit_info["privacy"]
    assert info["epsilon"] == 4.0 and info["delta"] == pytest.approx(1 / 240)
    assert 0.97 * 4.0 <= info["epsilon_spent"] <= 4.0
    counts, gram, sgd = info["mechanisms"]  # the head: counts choose its items, their Gram
    assert [counts["name"], gram["name"]] == ["counts", "gram"]
    assert counts["mechanism"] == gram["mechanism"] == "gaussian"
    head = dp.gaussian_mu(4.0, 1 / 240) * math.sqrt(0.5)  # the head's half of mu^2
    assert math.hypot(counts["mu"], gram["mu"]) == pytest.approx(head)
    assert counts["mu"] ** 2 == pytest.approx(0.1 * head**2)
    assert 0 < info["items_solved"] <= 60
    assert sgd["steps"] == math.ceil(4 / (60 / 240)) and sgd["sample_rate"] == 0.25
    assert "PRV" in info["accountant"] and info["tower_share"] == 0.5
    assert "nothing chosen on validation" in info["hyperparameters"]
    np.testing.assert_array_equal(model.item_final, private.item_final)  # seeded
    exact = np.asarray(data.matrix().sum(axis=0), dtype=np.float64).ravel()
    counts = model.item_counts()
    assert (counts >= 0).all() and not np.allclose(counts, exact, atol=0.5)
    assert np.isfinite(model.score(np.arange(10))).all()
    assert model.config.text_adapter == "frozen" and model.fit_info["linear_weight"] > 0


def test_private_model_learns_what_users_share(data: Interactions) -> None:
    """At a loose budget the private model ranks a user's own group far above chance: each
    user's held-out group items come before the other groups' items."""
    model = TransferRecommender(
        {"dp_epsilon": 50.0, "dp_clip": 10, "dp_users_per_step": 60, "dp_epochs": 20, "dim": 8}
    ).fit(data)
    scores = model.score(np.arange(240))
    groups = np.arange(60) % 4
    seen = data.matrix().toarray() > 0
    hits = []
    for u in range(240):
        unseen = ~seen[u]
        own = scores[u][unseen & (groups == u % 4)].mean()
        other = scores[u][unseen & (groups != u % 4)].mean()
        hits.append(own > other)
    assert np.mean(hits) > 0.9


def test_tower_alone_takes_the_whole_budget(data: Interactions) -> None:
    model = TransferRecommender(
        {"dp_epsilon": 1.0, "dp_clip": 10, "dp_users_per_step": 60, "dp_epochs": 2, "dim": 8,
         "linear_head": False},
    ).fit(data)  # fmt: skip
    info = model.fit_info["privacy"]
    assert [m["mechanism"].split(" ")[0] for m in info["mechanisms"]] == ["DP-SGD"]
    assert model.linear is None and info["tower_share"] == 1.0
    assert 0.97 <= info["epsilon_spent"] <= 1.0
    assert (model.item_counts() == 0).all()  # nothing released about counts


def test_private_kinformer_saves_and_serves_its_record(tmp_path: Path) -> None:
    url = make_store(tmp_path)
    model_dir = train(
        tmp_path, url, "kinformer",
        {"dp_epsilon": 2.0, "dp_clip": 8, "dp_epochs": 2, "dim": 8, "use_text": False},
    )  # fmt: skip
    manifest = json.loads((model_dir / "manifest.json").read_text())
    info = manifest["fit_info"]["privacy"]
    assert info["epsilon"] == 2.0
    loaded = Recommender.load(model_dir)
    assert loaded.fit_info["privacy"] == info
    users = np.arange(min(5, manifest["n_users"]))
    original = TransferRecommender.load(model_dir)
    np.testing.assert_array_equal(loaded.score(users), original.score(users))
    np.testing.assert_array_equal(loaded.item_counts(), original.item_counts())
    engine = Engine.open(ServingConfig(model_dir=model_dir, db=url), model_cls=Recommender)
    client = TestClient(create_app(engine=engine))
    response = client.get("/v1/info")
    assert response.status_code == 200, response.text
    assert response.json()["privacy"] == info
    np.testing.assert_allclose(engine.scorer.popularity, loaded.item_counts(), rtol=1e-6)


def test_cli_trains_kinformer_privately(tmp_path: Path, toy_split_dir: Path) -> None:
    from typer.testing import CliRunner

    from kinrec.cli import app as cli

    root = toy_split_dir
    out = tmp_path / "kinformer"
    res = CliRunner().invoke(
        cli, ["train", "--model", "kinformer", "--split-dir", str(root), "--dp-epsilon", "4",
              "--dp-clip", "5", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    info = json.loads((out / "manifest.json").read_text())["fit_info"]["privacy"]
    assert info["epsilon"] == 4.0 and info["clip"]["items_per_user"] == 5
    assert info["mechanisms"][-1]["steps"] == 30  # every user in every step: q = 1
    assert "DP-SGD noise multiplier" in res.output
