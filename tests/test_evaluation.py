"""Metric definitions pinned with hand-computed cases (RecBole 1.2.1 formulas)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kinrec.data.dataset import IdMap, Interactions, Split
from kinrec.evaluation.metrics import per_user_metrics, summarize
from kinrec.evaluation.protocol import activity_groups, cold_item_mask, evaluate_scores


def test_single_user_hand_computed() -> None:
    # Ranked list: rel at ranks 2 and 4 of 5; the user has 3 relevant items.
    hits = np.array([[False, True, False, True, False]])
    m = {k: float(v[0]) for k, v in per_user_metrics(hits, np.array([3]), 5).items()}
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 5)
    assert m["hit"] == 1.0
    assert m["mrr"] == pytest.approx(1 / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx(dcg / idcg)
    # MAP: (P@2 + P@4) / min(3, 5) = (1/2 + 2/4) / 3
    assert m["map"] == pytest.approx((0.5 + 0.5) / 3)


def test_idcg_uses_min_of_relevant_and_k() -> None:
    # 5 relevant items, K=2, both top items relevant: NDCG must be exactly 1 (not 2 of 5 ideal).
    hits = np.array([[True, True, False]])
    m = per_user_metrics(hits, np.array([5]), 2)
    assert m["ndcg"][0] == pytest.approx(1.0)
    assert m["recall"][0] == pytest.approx(2 / 5)
    assert m["map"][0] == pytest.approx(1.0)


def test_no_hit_gives_zeros_and_mean_over_users() -> None:
    hits = np.array([[False, False], [True, False]])
    out = summarize(hits, np.array([1, 1]), (1, 2))
    assert out["hit@1"] == pytest.approx(0.5)
    assert out["mrr@2"] == pytest.approx(0.5)
    assert out["ndcg@2"] == pytest.approx(0.5)
    assert out["recall@1"] == pytest.approx(0.5)


def _split() -> Split:
    # users u0, u1; items i0..i4 (i4 never in train -> cold).
    train = pd.DataFrame({"user_id": ["u0", "u0", "u1"], "item_id": ["i0", "i1", "i0"]})
    valid = pd.DataFrame({"user_id": ["u1"], "item_id": ["i2"]})
    test = pd.DataFrame({"user_id": ["u0", "u0", "u1"], "item_id": ["i2", "i4", "i3"]})
    return Split.from_frames(train, valid, test, item_ids=["i0", "i1", "i2", "i3", "i4"])


def test_masking_and_full_ranking() -> None:
    s = _split()
    # Fixed scores: i0 > i1 > i2 > i3 > i4 for every user.
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0], dtype=np.float32)
    res = evaluate_scores(
        lambda u: np.tile(scores, (len(u), 1)), s.test, [s.train, s.valid], (1, 2)
    )
    # u0: train i0,i1 masked -> ranking i2, i3, i4: hit at rank 1 (i2); relevant {i2, i4}.
    # u1: train i0 + valid i2 masked -> ranking i1, i3, i4: i3 at rank 2; relevant {i3}.
    assert res.n_users == 2
    assert res.metrics["recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert res.metrics["mrr@2"] == pytest.approx((1 + 1 / 2) / 2)
    assert res.metrics["hit@2"] == pytest.approx(1.0)
    ndcg_u1 = (1 / math.log2(3)) / 1.0
    ndcg_u0 = 1.0 / (1 + 1 / math.log2(3))
    assert res.metrics["ndcg@2"] == pytest.approx((ndcg_u0 + ndcg_u1) / 2)
    # Items in any top-1 list: i2 (u0) and i1 (u1) of 5 items.
    assert res.metrics["itemcoverage@1"] == pytest.approx(2 / 5)


def test_cold_and_warm_segments() -> None:
    s = _split()
    cold = cold_item_mask(s.train)
    assert cold.tolist() == [False, False, True, True, True]
    # i2 and i3 appear in valid/test but not train: cold by the protocol's definition.
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0], dtype=np.float32)  # i4 first
    res = evaluate_scores(
        lambda u: np.tile(scores, (len(u), 1)),
        s.test,
        [s.train, s.valid],
        (1,),
        item_segments={"cold": cold, "warm": ~cold},
    )
    # Both users' test items are all cold; u0 ranks i4 first (hit), u1 ranks i4 first (miss).
    assert res.segment_users == {"cold": 2, "warm": 0}
    assert res.segments["cold"]["hit@1"] == pytest.approx(0.5)


def test_activity_groups_partition_users() -> None:
    s = _split()
    groups = activity_groups(s.train)
    stacked = np.stack(list(groups.values()))
    assert stacked.sum(axis=0).tolist() == [1, 1]  # each user in exactly one group
    # u1 has the fewest train rows -> lowest group; u0 (more rows) is not in it.
    assert groups["users:low"][s.train.user_map.index("u1")]
    assert not groups["users:low"][s.train.user_map.index("u0")]


def test_scorer_shape_is_checked() -> None:
    s = _split()
    with pytest.raises(ValueError, match="shape"):
        evaluate_scores(lambda u: np.zeros((len(u), 3)), s.test, [s.train], (1,))


def test_scorers_in_one_pass_equal_each_scorer_alone() -> None:
    from kinrec.evaluation.protocol import evaluate_scorers

    rng = np.random.default_rng(3)
    n_users, n_items = 60, 40
    base = rng.normal(size=(n_users, n_items)).astype(np.float32)
    bias = rng.normal(size=n_items).astype(np.float32)
    users, items = rng.integers(0, n_users, 500), rng.integers(0, n_items, 500)
    umap, imap = IdMap([f"u{i}" for i in range(n_users)]), IdMap([f"i{i}" for i in range(n_items)])
    train = Interactions(users[:400], items[:400], umap, imap)
    truth = Interactions(users[400:], items[400:], umap, imap)
    calls: list[tuple[float, int]] = []

    def scorer(weight: float):
        def score(batch: np.ndarray) -> np.ndarray:
            calls.append((weight, int(batch[0])))
            return base[batch] + weight * bias

        return score

    weights = (0.0, 0.5, 4.0)
    together = evaluate_scorers({w: scorer(w) for w in weights}, truth, [train], batch_size=16)
    # batch by batch: every scorer on a batch before the next batch
    firsts = [c[1] for c in calls]
    assert firsts == sorted(firsts) and len(calls) == 3 * len(set(firsts)) > 3
    for w in weights:
        alone = evaluate_scores(scorer(w), truth, [train], batch_size=16)
        assert together[w].metrics == alone.metrics
    assert together[0.0].metrics != together[4.0].metrics  # the weights do change rankings


def test_group_offsets_rank_as_the_full_scores_with_the_offset_added() -> None:
    from kinrec.evaluation.protocol import evaluate_group_offsets

    rng = np.random.default_rng(8)
    n_users, n_items = 80, 60
    base = rng.normal(size=(n_users, n_items)).astype(np.float32)
    group = rng.random(n_items) < 0.2
    users, items = rng.integers(0, n_users, 900), rng.integers(0, n_items, 900)
    umap, imap = IdMap([f"u{i}" for i in range(n_users)]), IdMap([f"i{i}" for i in range(n_items)])
    train = Interactions(users[:600], items[:600], umap, imap)
    truth = Interactions(users[600:], items[600:], umap, imap)
    offsets = (-3.0, 0.0, 0.4, 1.5, 10.0)
    got = evaluate_group_offsets(
        lambda b: base[b], group, offsets, truth, [train], ks=(5, 10), batch_size=32
    )
    seen = set()
    for offset in offsets:
        full = evaluate_scores(
            lambda b, o=offset: base[b] + o * group.astype(np.float32),
            truth,
            [train],
            ks=(5, 10),
            batch_size=32,
        )
        assert got[offset].metrics == full.metrics
        seen.add(round(full.metrics["ndcg@10"], 9))
    assert len(seen) > 2  # the offsets do change the rankings


def test_group_variants_rank_as_full_scores_with_each_variant_and_offset() -> None:
    from kinrec.evaluation.protocol import evaluate_group_variants

    rng = np.random.default_rng(9)
    n_users, n_items = 70, 50
    base = rng.normal(size=(n_users, n_items)).astype(np.float32)
    group = rng.random(n_items) < 0.3
    variants = {t: rng.normal(size=(n_users, int(group.sum()))).astype(np.float32) for t in "ab"}
    users, items = rng.integers(0, n_users, 800), rng.integers(0, n_items, 800)
    umap, imap = IdMap([f"u{i}" for i in range(n_users)]), IdMap([f"i{i}" for i in range(n_items)])
    train = Interactions(users[:500], items[:500], umap, imap)
    truth = Interactions(users[500:], items[500:], umap, imap)
    offsets = (-2.0, 0.0, 0.7, 5.0)
    got = evaluate_group_variants(
        lambda b: base[b][:, ~group],
        {t: (lambda b, v=v: v[b]) for t, v in variants.items()},
        group,
        offsets,
        truth,
        [train],
        ks=(5, 10),
        batch_size=16,
    )
    assert set(got) == {(t, o) for t in variants for o in offsets}
    seen = set()
    for t, v in variants.items():
        full = base.copy()
        full[:, group] = v
        for offset in offsets:
            want = evaluate_scores(
                lambda b, o=offset, f=full: f[b] + o * group.astype(np.float32),
                truth,
                [train],
                ks=(5, 10),
                batch_size=16,
            )
            assert got[(t, offset)].metrics == want.metrics
            seen.add(round(want.metrics["ndcg@10"], 9))
    assert len(seen) > 4  # variants and offsets do change the rankings


def test_validation_scores_a_seeded_sample_of_users_on_large_catalogues() -> None:
    from kinrec.evaluation import protocol

    assert protocol.validation_users(3_706) == protocol.VALIDATION_USERS
    assert protocol.validation_users(100_000) == 5_000
    assert protocol.validation_users(1_000_000) == protocol.MIN_VALIDATION_USERS
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 50, 400), rng.integers(0, 30, 400)
    truth = Interactions(users, items, IdMap([f"u{i}" for i in range(50)]),
                         IdMap([f"i{i}" for i in range(30)]))  # fmt: skip
    sample = protocol.sample_users(truth, 10)
    kept = np.unique(sample.users)
    assert len(kept) == 10
    # every row of a kept user stays, and the same seed keeps the same users
    assert len(sample) == int(np.isin(truth.users, kept).sum())
    np.testing.assert_array_equal(np.unique(protocol.sample_users(truth, 10).users), kept)
    assert protocol.sample_users(truth, 50) is truth
    assert protocol.sample_users(truth, None) is truth


def test_benchmark_evaluates_a_sample_of_test_users_when_asked() -> None:
    from kinrec.data.dataset import Dataset
    from kinrec.data.splits import random_split
    from kinrec.evaluation.benchmark import run_one

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {"user_id": [f"u{u}" for u in rng.integers(0, 40, 800)],
         "item_id": [f"i{i}" for i in rng.integers(0, 25, 800)]}
    ).drop_duplicates().astype(object)  # fmt: skip
    split = random_split(Dataset("sample", frame))
    whole = run_one("pop", split, 2026)
    sample = run_one("pop", split, 2026, eval_users=7)
    assert whole["n_users"] > 7 and sample["n_users"] == 7
