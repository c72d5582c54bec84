"""The popularity prior of short fold-in histories: the blend, its choice on validation, its use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kinrec.data.dataset import Split
from kinrec.evaluation.benchmark import fit_with_validation
from kinrec.evaluation.history_prior import choose_history_prior, short_histories
from kinrec.models.base import Recommender
from kinrec.models.registry import create_model
from kinrec.serving.foldin import ModelScorer

N_ITEMS = 40


def zipf_split(seed: int = 0, n_users: int = 150) -> Split:
    """Every event drawn from one Zipf popularity over 40 items, independent of the user's
    other events: a user's history says nothing, popularity says everything."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, N_ITEMS + 1)
    p /= p.sum()
    parts: list[list[tuple[str, str, float]]] = [[], [], []]
    for u in range(n_users):
        items = rng.choice(N_ITEMS, size=16, replace=False, p=p)
        for part, chunk in zip(parts, (items[:12], items[12:14], items[14:]), strict=True):
            part.extend((f"u{u}", f"i{i}", float(t)) for t, i in enumerate(chunk))
    frames = [pd.DataFrame(p, columns=["user_id", "item_id", "timestamp"]) for p in parts]
    return Split.from_frames(*frames, item_ids=[f"i{i}" for i in range(N_ITEMS)])


def cluster_split(seed: int = 0) -> Split:
    """Four clusters of ten items; 70 users in cluster 0 and 20 in each other one, every
    event in the user's own cluster: the history says everything, popularity misleads
    (it pushes cluster 0 to everyone)."""
    rng = np.random.default_rng(seed)
    parts: list[list[tuple[str, str, float]]] = [[], [], []]
    sizes = (70, 20, 20, 20)
    u = 0
    for c, size in enumerate(sizes):
        for _ in range(size):
            items = 10 * c + rng.permutation(10)[:9]
            for part, chunk in zip(parts, (items[:6], items[6:8], items[8:]), strict=True):
                part.extend((f"u{u}", f"i{i}", float(t)) for t, i in enumerate(chunk))
            u += 1
    frames = [pd.DataFrame(p, columns=["user_id", "item_id", "timestamp"]) for p in parts]
    return Split.from_frames(*frames, item_ids=[f"i{i}" for i in range(N_ITEMS)])


@pytest.fixture(scope="module")
def ease_on_zipf() -> tuple[Recommender, Split]:
    split = zipf_split()
    model = create_model("ease", {"reg_weight": 5.0, "history_prior": False})
    return fit_with_validation(model, split), split


def counts_of(split: Split) -> np.ndarray:
    return np.bincount(split.train.items, minlength=N_ITEMS)


def test_blend_is_the_identity_without_a_prior(ease_on_zipf) -> None:
    model, _ = ease_on_zipf
    assert model.history_prior_strength == 0.0  # history_prior=False: not chosen
    scores = model.score_history(np.array([3, 7]))
    assert model.blend_history_prior(scores, 2) is scores


def test_blend_mixes_standardised_scores_with_popularity(ease_on_zipf) -> None:
    model, split = ease_on_zipf
    model.history_prior_strength = 2.0
    try:
        scores = model.score_history(np.array([3, 7])).astype(np.float64)
        scores[[3, 7]] = -np.inf
        blended = model.blend_history_prior(scores, 2)
        finite = np.isfinite(scores)
        assert np.array_equal(np.isfinite(blended), finite)
        pop = np.log1p(counts_of(split).astype(np.float64))
        pop = (pop - pop.mean()) / pop.std()
        own = scores[finite]
        want = 0.5 * (own - own.mean()) / own.std() + 0.5 * pop[finite]
        np.testing.assert_allclose(blended[finite], want, rtol=1e-9, atol=1e-9)
        # one event and a strong prior: popularity order; many events: the model's order
        model.history_prior_strength = 1e6
        one = model.blend_history_prior(scores, 1)
        assert (np.diff(pop[finite][np.argsort(-one[finite])]) <= 1e-9).all()
        model.history_prior_strength = 1e-6
        many = model.blend_history_prior(scores, 1000)
        assert (np.diff(own[np.argsort(-many[finite])]) <= 1e-9).all()
    finally:
        model.history_prior_strength = 0.0


def test_blend_keeps_the_model_rank_of_items_without_train_interactions(ease_on_zipf) -> None:
    """A new item (no train count) is not pushed down by popularity: under any prior it keeps
    the rank the fold-in gives it among the items with counts."""
    import scipy.sparse as sp

    model, split = ease_on_zipf
    seen = model.seen
    model.seen = sp.hstack([seen, sp.csr_matrix((seen.shape[0], 2))]).tocsr()  # two new items
    model.history_prior_strength = 1e6
    try:
        scores = np.append(model.score_history(np.array([3, 7])).astype(np.float64), [0.0, 0.0])
        scores[[3, 7]] = -np.inf
        counted = np.isfinite(scores) & (np.arange(len(scores)) < N_ITEMS)
        scores[-2] = scores[counted].max() + 1.0  # the model's first choice
        scores[-1] = np.median(scores[counted])  # mid-list
        blended = model.blend_history_prior(scores, 1)
        order = np.argsort(-blended)
        assert order[0] == N_ITEMS
        rank_raw = int((scores[counted] > scores[-1]).sum())
        assert int((blended[counted] > blended[-1]).sum()) == rank_raw
        # the counted items themselves follow popularity, as without new items
        pop = np.log1p(counts_of(split).astype(np.float64))
        assert (np.diff(pop[counted[:N_ITEMS]][np.argsort(-blended[counted])]) <= 1e-9).all()
    finally:
        model.seen = seen
        model._popularity = None
        model.history_prior_strength = 0.0


def test_short_histories_are_each_users_first_events_by_time() -> None:
    split = zipf_split()
    users, history = short_histories(split.train, split.valid, 3, max_users=20, seed=0)
    assert len(users) == 20 and len(np.unique(users)) == 20
    assert set(split.train.users[history]) == set(users) and history.sum() == 3 * 20
    for u in users:
        own = split.train.users == u
        want = split.train.items[own][np.argsort(split.train.timestamps[own], kind="stable")[:3]]
        assert set(split.train.items[own & history]) == set(want)


def test_prior_is_chosen_when_histories_say_little_and_refused_when_they_say_all() -> None:
    weak = create_model("ease", {"reg_weight": 5.0})
    fit_with_validation(weak, zipf_split())
    search = weak.fit_info["history_prior"]["search"]
    assert weak.history_prior_strength > 0
    assert search[f"{weak.history_prior_strength:g}"] > search["0"]

    strong = create_model("ease", {"reg_weight": 5.0})
    fit_with_validation(strong, cluster_split())
    search = strong.fit_info["history_prior"]["search"]
    assert search["0"] > search["64"]  # popularity pushes the wrong cluster
    assert strong.history_prior_strength < weak.history_prior_strength


def test_choice_skips_models_that_cannot_fold_in() -> None:
    split = cluster_split()
    model = create_model("bpr", {"embedding_size": 4, "max_epochs": 2, "history_prior": False})
    model.fit(split.train, split.valid)
    assert not model.supports_fold_in
    assert choose_history_prior(model, split.train, split.valid) == 0.0
    assert "history_prior" not in model.fit_info


def test_strength_survives_save_and_load(ease_on_zipf, tmp_path: Path) -> None:
    model, _ = ease_on_zipf
    model.history_prior_strength = 4.0
    try:
        loaded = Recommender.load(model.save(tmp_path / "ease"))
    finally:
        model.history_prior_strength = 0.0
    assert loaded.history_prior_strength == 4.0


def test_service_fold_in_applies_the_models_prior(ease_on_zipf) -> None:
    model, _ = ease_on_zipf
    scorer = ModelScorer(model)
    history, none = np.array([5]), np.array([], dtype=np.int64)
    raw = scorer.history_scores(None, history, none, none.astype(np.float32))
    model.history_prior_strength = 8.0
    try:
        got = scorer.history_scores(None, history, none, none.astype(np.float32))
        np.testing.assert_allclose(got, model.blend_history_prior(raw, 1), rtol=1e-5, atol=1e-5)
        assert not np.array_equal(np.argsort(-got), np.argsort(-raw))
        # a trained user's fold-in keeps the model's own scores, in line with their trained ones
        train = model.seen[0].indices
        known = scorer.history_scores(0, train, history, np.ones(1, np.float32))
        model.history_prior_strength = 0.0
        plain = scorer.history_scores(0, train, history, np.ones(1, np.float32))
        assert np.array_equal(known, plain)
    finally:
        model.history_prior_strength = 0.0


@pytest.mark.parametrize("make_split", [zipf_split, cluster_split])
def test_candidate_path_equals_whole_catalogue_when_every_item_is_a_candidate(make_split) -> None:
    split = make_split()
    model = fit_with_validation(create_model("ease", {"reg_weight": 5.0}), split)
    whole = create_model("ease", {"reg_weight": 5.0, "history_prior": False})
    fit_with_validation(whole, split)
    choose_history_prior(whole, split.train, split.valid)
    assert whole.fit_info["history_prior"]["ranked"] == "catalogue"
    every = dict(exact_items=0, candidates=N_ITEMS, reference_size=N_ITEMS)
    choose_history_prior(model, split.train, split.valid, **every)
    assert model.fit_info["history_prior"]["ranked"].startswith("candidates")
    want, got = whole.fit_info["history_prior"]["search"], model.fit_info["history_prior"]["search"]
    assert got.keys() == want.keys()
    np.testing.assert_allclose(list(got.values()), list(want.values()), atol=1e-6)
    assert model.history_prior_strength == whole.history_prior_strength


def test_candidate_path_on_a_sample_keeps_the_choice() -> None:
    # a quarter of the catalogue as reference, a fifth as candidates: the blend's mean and
    # spread are estimated, and the choice between a prior and none stays the same
    for make_split in (zipf_split, cluster_split):
        split = make_split()
        whole = fit_with_validation(create_model("ease", {"reg_weight": 5.0}), split)
        sampled = create_model("ease", {"reg_weight": 5.0, "history_prior": False})
        fit_with_validation(sampled, split)
        choose_history_prior(
            sampled, split.train, split.valid, exact_items=0, candidates=8, reference_size=10
        )
        assert (sampled.history_prior_strength > 0) == (whole.history_prior_strength > 0)
