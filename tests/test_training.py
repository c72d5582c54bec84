"""The shared training utilities: negative sampler, seeding, epoch loop with early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kinrec.data.dataset import IdMap, Interactions
from kinrec.training.loop import (
    EarlyStopping,
    IterativeConfig,
    module_snapshot,
    optimize_epoch,
    seeded,
    torch_threads,
    train_epochs,
)
from kinrec.training.losses import bpr_loss, l2_penalty
from kinrec.training.sampling import UniformNegativeSampler


def make_interactions(pairs: list[tuple[int, int]], n_users: int, n_items: int) -> Interactions:
    users = np.array([u for u, _ in pairs], dtype=np.int64)
    items = np.array([i for _, i in pairs], dtype=np.int64)
    user_map = IdMap(f"u{u}" for u in range(n_users))
    item_map = IdMap(f"i{i}" for i in range(n_items))
    return Interactions(users, items, user_map, item_map)


@pytest.fixture
def train() -> Interactions:
    rng = np.random.default_rng(0)
    pairs = {(u, int(i)) for u in range(30) for i in rng.choice(20, size=rng.integers(3, 15))}
    pairs.add((0, 3))  # a duplicate row below must count once
    return make_interactions([*sorted(pairs), (0, 3)], 30, 20)


# ---------------------------------------------------------------------------- sampler
def test_sampler_covers_each_distinct_pair_once_per_epoch(train: Interactions) -> None:
    sampler = UniformNegativeSampler(train, batch_size=17, seed=1)
    batches = list(sampler.epoch())
    assert len(batches) == len(sampler)
    assert all(len(b) <= 17 for b in batches)
    users = torch.cat([b.users for b in batches]).numpy()
    pos = torch.cat([b.pos_items for b in batches]).numpy()
    got = sorted(zip(users.tolist(), pos.tolist(), strict=True))
    expected = sorted(set(zip(train.users.tolist(), train.items.tolist(), strict=True)))
    assert got == expected


def test_negatives_are_never_positives_and_cover_the_catalogue(train: Interactions) -> None:
    sampler = UniformNegativeSampler(train, batch_size=64, seed=2)
    positives = set(zip(train.users.tolist(), train.items.tolist(), strict=True))
    seen_negatives: set[int] = set()
    for _ in range(20):
        for b in sampler.epoch():
            negs = zip(b.users.tolist(), b.neg_items.tolist(), strict=True)
            assert not positives & set(negs)
            seen_negatives.update(b.neg_items.tolist())
    # every item is some user's non-positive, so uniform sampling reaches all of them
    assert seen_negatives == set(range(train.n_items))


def test_sampler_is_deterministic_per_seed(train: Interactions) -> None:
    def draw(seed: int) -> list[np.ndarray]:
        sampler = UniformNegativeSampler(train, batch_size=50, seed=seed)
        return [torch.cat([b.users, b.pos_items, b.neg_items]).numpy() for b in sampler.epoch()]

    a, b, c = draw(5), draw(5), draw(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_sampler_rejects_users_with_every_item() -> None:
    full = make_interactions([(0, 0), (0, 1), (1, 0)], 2, 2)
    with pytest.raises(ValueError, match="every item"):
        UniformNegativeSampler(full, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        UniformNegativeSampler(make_interactions([(0, 0)], 1, 3), batch_size=0)


def test_is_positive(train: Interactions) -> None:
    sampler = UniformNegativeSampler(train, batch_size=8)
    m = train.matrix().toarray() > 0
    uu, ii = np.meshgrid(np.arange(30), np.arange(20), indexing="ij")
    assert np.array_equal(sampler.is_positive(uu.ravel(), ii.ravel()).reshape(30, 20), m)


# ---------------------------------------------------------------------------- seeding
def test_seeded_repeats_and_restores_the_global_generator() -> None:
    torch.manual_seed(123)
    expected_outside = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7) as rng:
        a, na = torch.rand(4), rng.random(4)
    after = torch.rand(3)
    with seeded(7) as rng:
        b, nb = torch.rand(4), rng.random(4)
    assert torch.equal(a, b) and np.array_equal(na, nb)
    assert torch.equal(after, expected_outside)  # the caller's stream was not disturbed


def test_torch_threads_restores_the_setting() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------- loop
def scripted(scores: list[float]):
    """A validate() returning ``scores`` in order, and the list of calls made."""
    calls: list[float] = []

    def validate() -> float:
        calls.append(scores[len(calls)])
        return calls[-1]

    return validate, calls


def test_early_stopping_stops_after_patience_and_restores_best() -> None:
    state = {"epoch": 0}
    validate, calls = scripted([0.1, 0.3, 0.2, 0.25, 0.3, 0.1, 0.9])
    events: list[tuple] = []
    result = train_epochs(
        lambda e: state.update(epoch=e) or 1.0 / e,
        max_epochs=50,
        validate=validate,
        snapshot=lambda: dict(state),
        restore=lambda s: state.update(s),
        patience=3,
        progress=lambda *a: events.append(a),
        phase="demo",
    )
    # best 0.3 at epoch 2; 0.2, 0.25, 0.3 (not better) -> stop after epoch 5
    assert result.epochs_run == 5 and result.stopped_early
    assert result.best_epoch == 2 and result.best_score == pytest.approx(0.3)
    assert state["epoch"] == 2  # best state restored
    assert len(calls) == 5
    assert [e[:3] for e in events] == [("demo", e, 50) for e in range(1, 6)]
    assert events[0][3] == {"loss": 1.0, "valid_ndcg@10": 0.1}
    info = result.fit_info()
    assert info["epochs_run"] == 5 and info["best_epoch"] == 2
    assert info["best_valid_ndcg@10"] == pytest.approx(0.3) and info["evaluations"] == 5


def test_eval_every_validates_on_schedule_and_at_the_last_epoch() -> None:
    validate, calls = scripted([0.1, 0.2, 0.3, 0.4])
    events: list[dict] = []
    result = train_epochs(
        lambda e: 0.5,
        max_epochs=7,
        validate=validate,
        eval_every=3,
        patience=2,
        progress=lambda p, e, n, v: events.append(v),
    )
    assert len(calls) == 3  # epochs 3, 6 and the final 7
    assert [("valid_ndcg@10" in v) for v in events] == [False, False, True] * 2 + [True]
    assert result.epochs_run == 7 and not result.stopped_early and result.best_epoch == 7


def test_without_validation_all_epochs_run_and_final_state_is_kept() -> None:
    seen: list[int] = []
    result = train_epochs(lambda e: seen.append(e) or 0.1, max_epochs=4)
    assert seen == [1, 2, 3, 4] and result.best_epoch is None and not result.stopped_early


def test_non_finite_loss_is_an_error() -> None:
    with pytest.raises(FloatingPointError, match="epoch 2"):
        train_epochs(lambda e: float("nan") if e == 2 else 1.0, max_epochs=5)


def test_snapshot_and_restore_come_together() -> None:
    with pytest.raises(ValueError, match="both"):
        train_epochs(lambda e: 1.0, 2, snapshot=lambda: None)


def test_early_stopping_min_delta() -> None:
    stop = EarlyStopping(patience=2, min_delta=0.05)
    assert stop.update(0.5, 1)
    assert not stop.update(0.52, 2)  # not better by min_delta
    assert not stop.should_stop
    assert not stop.update(0.54, 3)
    assert stop.should_stop and stop.best_epoch == 1


def test_optimize_epoch_learns_and_module_snapshot_is_a_copy() -> None:
    torch.manual_seed(0)
    w = torch.nn.Linear(3, 1)
    target = torch.tensor([[1.0], [2.0], [3.0]])
    x = torch.eye(3)
    snap = module_snapshot(w)
    opt = torch.optim.SGD(w.parameters(), lr=0.3)
    losses = [
        optimize_epoch([x] * 5, lambda b: ((w(b) - target) ** 2).mean(), opt) for _ in range(5)
    ]
    assert losses[-1] < losses[0] / 10
    assert not torch.equal(snap["weight"], w.weight.detach())
    w.load_state_dict(snap)
    assert torch.equal(snap["weight"], w.weight.detach())


def test_losses() -> None:
    pos, neg = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0])
    expected = -(torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(torch.tensor(0.5))) / 2
    assert bpr_loss(pos, neg).item() == pytest.approx(expected.item())
    a = torch.ones(4, 2)
    assert l2_penalty(a, 2 * a).item() == pytest.approx((8 + 32) / (2 * 4))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        IterativeConfig(patience=0)
    with pytest.raises(ValueError):
        IterativeConfig(unknown=1)


def test_time_budget_stops_before_an_epoch_that_would_overrun_and_keeps_the_best(
    monkeypatch,
) -> None:
    import kinrec.training.loop as loop

    now = {"t": 0.0}  # a clock that runs 10 s per epoch and 1 s per validation
    monkeypatch.setattr(loop.time, "perf_counter", lambda: now["t"])
    state = {"epoch": 0}
    scores = iter([0.1, 0.5, 0.2])

    def validate() -> float:
        now["t"] += 1.0
        return next(scores)

    def epoch(e: int) -> float:
        now["t"] += 10.0
        state.update(epoch=e)
        return 1.0

    result = loop.train_epochs(
        epoch,
        max_epochs=50,
        validate=validate,
        snapshot=lambda: dict(state),
        restore=lambda s: state.update(s),
        patience=10,
        eval_every=2,
        max_seconds=45.0,
    )
    # after epoch 3 (31 s) a 4th would end near 41 s: it runs; after epoch 4 (42 s) a 5th
    # would end past 45 s: epoch 4 is the last, and it was validated on schedule
    assert result.stopped_by_budget and not result.stopped_early and result.epochs_run == 4
    assert [h.get("valid_ndcg@10") for h in result.history] == [None, 0.1, None, 0.5]
    assert result.best_epoch == 4 and state["epoch"] == 4
    # an epoch off the schedule is validated when the budget ends training after it
    now["t"], scores = 0.0, iter([0.3, 0.2])
    result = loop.train_epochs(
        epoch,
        max_epochs=50,
        validate=validate,
        snapshot=lambda: dict(state),
        restore=lambda s: state.update(s),
        eval_every=2,
        max_seconds=30.0,
    )
    assert result.epochs_run == 3 and result.history[-1]["valid_ndcg@10"] == 0.2
    assert result.best_epoch == 2 and state["epoch"] == 2  # the best validated state back
    assert result.fit_info()["stopped_by_budget"]
    unlimited = loop.train_epochs(lambda e: 1.0, max_epochs=6)
    assert unlimited.epochs_run == 6 and not unlimited.stopped_by_budget
