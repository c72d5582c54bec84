"""Choose how strongly a model's fold-in scores lean on popularity for short histories.

A new user's first events say little, and on many sites they are popular items (sign-up
pages show them). :meth:`~kinrec.models.base.Recommender.blend_history_prior` mixes the
model's fold-in scores with item popularity, with weight ``c / (c + n)`` on popularity for
a history of ``n`` events. ``c`` is chosen here on validation by simulating new users from
validation users: each gets a history of their first ``n`` training events (by timestamp,
what a service sees of a new user; in a seeded random order when the data has none), is
scored through the model's fold-in, and is judged on all their other rows (the rest of
their training rows and their validation rows) with the history masked, as a new user's
future would be. The model has trained on those other training rows, which flatters its
fold-in, so the choice errs towards a weaker prior. The mean NDCG@10 over the history
lengths picks ``c``; ties go to the smaller ``c`` (0: no prior).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from kinrec.data.dataset import Interactions
from kinrec.evaluation.protocol import evaluate_scores
from kinrec.models.base import Recommender

HISTORIES = (1, 2, 3, 5, 10, 20)
STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def short_histories(
    train: Interactions, valid: Interactions, n: int, max_users: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_users`` validation users with more than ``n`` training rows (seeded draw),
    and the mask of the training rows that are each one's first ``n`` (by timestamp, else in
    a seeded random order)."""
    counts = np.bincount(train.users, minlength=train.n_users)
    has_valid = np.bincount(valid.users, minlength=train.n_users) > 0
    eligible = np.flatnonzero(has_valid & (counts > n))
    rng = np.random.default_rng(seed)
    if len(eligible) > max_users:
        eligible = np.sort(rng.choice(eligible, size=max_users, replace=False))
    key = train.timestamps if train.timestamps is not None else rng.random(len(train))
    order = np.lexsort((np.arange(len(train)), key, train.users))
    starts = np.searchsorted(train.users[order], eligible)
    history = np.zeros(len(train), dtype=bool)
    for s in starts:
        history[order[s : s + n]] = True
    return eligible, history


def choose_history_prior(
    model: Recommender,
    train: Interactions,
    valid: Interactions,
    histories: Sequence[int] = HISTORIES,
    strengths: Sequence[float] = STRENGTHS,
    max_users: int = 300,
) -> float:
    """Set ``model.history_prior_strength`` to the ``c`` with the best validation NDCG@10
    of simulated new users, record the search in ``model.fit_info`` and return ``c``."""
    if not model.supports_fold_in or not len(valid):
        return model.history_prior_strength
    start = time.perf_counter()
    seed = int(getattr(model.config, "seed", 0))
    totals = np.zeros(len(strengths))
    used = 0
    for n in histories:
        users, history = short_histories(train, valid, n, max_users, seed + n)
        if not len(users):
            continue
        used += 1
        row_of = np.full(train.n_users, -1)
        row_of[users] = np.arange(len(users))
        firsts = train.subset(history)
        rows = model.history_rows(firsts)
        raw = [
            np.asarray(model.score_history(row.indices, row.data), dtype=np.float64)
            for row in (rows[u] for u in users)
        ]
        rest = train.subset((row_of[train.users] >= 0) & ~history)
        chosen = valid.subset(row_of[valid.users] >= 0)
        truth = Interactions(
            np.concatenate([rest.users, chosen.users]),
            np.concatenate([rest.items, chosen.items]),
            train.user_map,
            train.item_map,
        )
        for j, c in enumerate(strengths):
            model.history_prior_strength = float(c)
            blended = np.vstack([model.blend_history_prior(s, n) for s in raw])

            def scorer(
                batch: np.ndarray, blended: np.ndarray = blended, row_of: np.ndarray = row_of
            ) -> np.ndarray:
                return blended[row_of[batch]]

            result = evaluate_scores(scorer, truth, [firsts], ks=(10,))
            totals[j] += result.metrics["ndcg@10"]
    if not used:
        model.history_prior_strength = 0.0
        return 0.0
    means = totals / used
    best = int(np.argmax(means))  # first maximum: the smallest c among ties
    model.history_prior_strength = float(strengths[best])
    model.fit_info["history_prior"] = {
        "strength": float(strengths[best]),
        "histories": [int(n) for n in histories],
        "search": {f"{c:g}": round(float(m), 6) for c, m in zip(strengths, means, strict=True)},
        "seconds": round(time.perf_counter() - start, 2),
    }
    return model.history_prior_strength
