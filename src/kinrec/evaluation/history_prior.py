"""Choose how strongly a model's fold-in scores lean on popularity, and on the knowledge
graph, for short histories.

A new user's first events say little, and on many sites they are popular items (sign-up
pages show them). :meth:`~kinrec.models.base.Recommender.blend_history_prior` mixes the
model's fold-in scores with item popularity, with weight ``c / (c + n)`` on popularity for
a history of ``n`` events. ``c`` is chosen here on validation by simulating new users from
validation users: each gets a history of their first ``n`` training events (by timestamp,
what a service sees of a new user; in a seeded random order when the data has none), is
scored through the model's fold-in, and is judged on all their other rows (the rest of
their training rows and their validation rows) with the history masked, as a new user's
future would be. The mean NDCG@10 over the history lengths picks ``c``; ties go to the
smaller ``c`` (0: no prior).

Where the model reads a knowledge graph, the lift a new user's history gives its items'
graph neighbours (:meth:`~kinrec.models.base.Recommender.graph_lift`) is chosen next, at
that ``c``, on the same simulated users, judged on their validation rows only, with all
their training rows masked. The model was fitted on those training rows: it has learned
this very user's co-occurrences, which flatters its fold-in against any smoothing (on a
synthetic catalogue whose graph knows the taste groups exactly, the lift lost on all the
rows and won on the validation rows). For the prior, the larger target set chose better on
users held out of training (ml-100k: kinformer's NDCG@10 from one event 0.554 with ``c``
chosen on all rows, 0.502 on validation rows only). The data decides whether the graph
knows more than the co-occurrences: data whose graph only repeats them gets no lift.

Up to :data:`EXACT_ITEMS` items every simulated user's whole catalogue is blended and ranked
for every ``c``. Above, each user's top 10 is taken from candidates (the user's
:data:`CANDIDATES` best items by fold-in score, the as many most popular items and the
catalogue's reference sample), and the blend is standardised on the reference sample
(:data:`~kinrec.models.base.REFERENCE_ITEMS`), as the service's index path blends it
(:meth:`~kinrec.models.base.Recommender.blend_history_prior_subset`). An item outside the
candidates is below all of them by fold-in score and by popularity, so it would need a blend
between the two to enter a top 10; given every item as candidate and reference, the two paths
give the same figures (tested).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from kinrec.data.dataset import Interactions
from kinrec.evaluation.metrics import per_user_metrics
from kinrec.evaluation.protocol import evaluate_scores
from kinrec.models.base import REFERENCE_ITEMS, Recommender, neighbour_shares, reference_items

HISTORIES = (1, 2, 3, 5, 10, 20)
STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
EXACT_ITEMS = 50_000
"""Catalogues up to this size are blended and ranked whole for every simulated user and
``c`` (a user x catalogue pass per ``c`` and history length); larger ones from candidates."""
EXPANSIONS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Lifts ``b`` of a new user's history's knowledge-graph neighbours, in units of the spread of
fold-in scores, tried besides 0 (:meth:`~kinrec.models.base.Recommender.graph_lift`)."""
CANDIDATES = 1_000
"""Per simulated user: the best items by fold-in score, and the most popular items, that a
large catalogue's top 10 is taken from (with the reference sample)."""


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
    exact_items: int = EXACT_ITEMS,
    candidates: int = CANDIDATES,
    reference_size: int = REFERENCE_ITEMS,
    expansions: Sequence[float] = EXPANSIONS,
) -> float:
    """Set ``model.history_prior_strength`` to the ``c`` with the best validation NDCG@10
    of simulated new users, record the search in ``model.fit_info`` and return ``c``.

    Where the model reads a knowledge graph (:func:`profile_graph`), the lift a new user's
    history gives its items' graph neighbours (:meth:`~kinrec.models.base.Recommender.
    graph_lift`) is chosen next (the module's docstring): every ``b`` of ``expansions``, in
    units of the spread of the simulated users' fold-in scores (their median over the
    first history length); ties go to the smaller ``b`` (0: none). The graph and the lift
    are set on the model (``profile_graph``, ``profile_graph_lift``).

    Catalogues above ``exact_items`` rank each user's ``candidates`` best and most popular
    items and ``reference_size`` reference items (the module's docstring)."""
    if not model.supports_fold_in or not len(valid):
        return model.history_prior_strength
    start = time.perf_counter()
    seed = int(getattr(model.config, "seed", 0))
    whole = train.n_items <= exact_items
    graph, graph_info = profile_graph(model, train.n_items, exact_items)
    grid = [0.0, *(float(b) for b in expansions if b > 0)] if graph is not None else [0.0]
    prior_totals = np.zeros(len(strengths))
    lift_totals = np.zeros((len(grid), len(strengths)))
    spread: float | None = None
    used = 0
    keep = model.history_prior_strength
    try:
        for n in histories:
            users, history = short_histories(train, valid, n, max_users, seed + n)
            if not len(users):
                continue
            used += 1
            row_of = np.full(train.n_users, -1)
            row_of[users] = np.arange(len(users))
            firsts = train.subset(history)
            rows = model.history_rows(firsts)
            rest = train.subset((row_of[train.users] >= 0) & ~history)
            chosen = valid.subset(row_of[valid.users] >= 0)
            truth = Interactions(
                np.concatenate([rest.users, chosen.users]),
                np.concatenate([rest.items, chosen.items]),
                train.user_map,
                train.item_map,
            )
            known = train.subset(row_of[train.users] >= 0)  # the history and the rest
            raw = (
                np.asarray(model.score_history(h.indices, h.data), dtype=np.float64).ravel()
                for h in (rows[u] for u in users)
            )
            pick = (candidates, reference_size)

            def ndcg(scores, truth, masked, n=n, row_of=row_of, users=users, pick=pick):
                if whole:
                    return _whole_ndcg(model, list(scores), n, row_of, truth, masked, strengths)
                return _candidate_ndcg(model, scores, n, users, truth, masked, strengths, pick)

            if len(grid) == 1:
                prior_totals += ndcg(raw, truth, firsts)
                continue
            raw = list(raw)
            prior_totals += ndcg(raw, truth, firsts)
            if spread is None:  # the lift of each b, in units of the fold-in scores' spread
                spread = float(np.median([np.std(r[np.isfinite(r)]) for r in raw]))
            graph_lifts = _lifts(graph, rows, users)
            for g, b in enumerate(grid):
                lift_totals[g] += ndcg(_lifted(raw, graph_lifts, b * spread), chosen, known)
    finally:
        model.history_prior_strength = keep
    if not used:
        model.history_prior_strength = 0.0
        model.profile_graph, model.profile_graph_lift = None, 0.0
        return 0.0
    means = prior_totals / used
    best = int(np.argmax(means))  # first maximum: the smallest c among ties
    model.history_prior_strength = float(strengths[best])
    model.fit_info["history_prior"] = {
        "strength": float(strengths[best]),
        "histories": [int(n) for n in histories],
        "search": {f"{c:g}": round(float(m), 6) for c, m in zip(strengths, means, strict=True)},
        "ranked": "catalogue" if whole else f"candidates ({candidates} + {reference_size})",
        "seconds": round(time.perf_counter() - start, 2),
    }
    lift_means = lift_totals[:, best] / used
    g = int(np.argmax(lift_means))  # first maximum: the smallest b among ties
    b = grid[g]
    model.profile_graph = graph if b > 0 else None
    model.profile_graph_lift = b * spread if b > 0 and spread else 0.0
    if graph_info:
        graph_info["strength"] = b
        graph_info["lift"] = model.profile_graph_lift
        graph_info["search"] = {
            f"{x:g}": round(float(m), 6) for x, m in zip(grid, lift_means, strict=True)
        }
        model.fit_info["profile_graph"] = graph_info
    return model.history_prior_strength


def profile_graph(
    model: Recommender, n_items: int, max_items: int = EXACT_ITEMS
) -> tuple[sp.csr_matrix | None, dict]:
    """The knowledge-graph neighbour graph that may expand the model's new users' histories
    (:func:`~kinrec.knowledge.features.item_neighbour_graph`, ``kg_profile_neighbours`` per
    item), and what was found, for ``fit_info``. None (and why, where there is a graph to
    speak of) for a model configured without it (``kg_profile_neighbours = 0``, or
    ``use_kg = false``), data without graph or item attributes (their values are entities
    too) or where no two items share an entity, and catalogues above ``max_items``, where
    the neighbour search (a block of entity cosines per item) is not run."""
    from kinrec.knowledge.features import item_neighbour_graph

    k = int(getattr(model.config, "kg_profile_neighbours", 0))
    side = model.side
    if not k or getattr(model.config, "use_kg", True) is False or side is None:
        return None, {}
    if n_items > max_items:
        return None, {"skipped": f"catalogue of {n_items} items, above {max_items}"}
    start = time.perf_counter()
    graph = item_neighbour_graph(side, model.item_map.ids()[:n_items], k)
    info = {"neighbours": k, "seconds": round(time.perf_counter() - start, 2)}
    if graph is None:  # no graph, no attributes, or no entity shared
        return None, {}
    info["items_with_neighbours"] = int(np.count_nonzero(np.diff(graph.indptr)))
    return graph, info


def _lifts(graph: sp.csr_matrix, rows: sp.csr_matrix, users: np.ndarray) -> list:
    """Each simulated user's graph lift at lift 1 (:meth:`Recommender.graph_lift`)."""
    return [neighbour_shares(graph, rows[u].indices, rows[u].data) for u in users]


def _lifted(
    raw: list[np.ndarray], lifts: list[tuple[np.ndarray, np.ndarray]], lift: float
) -> list[np.ndarray]:
    """``raw`` fold-in scores with each user's graph lift at ``lift`` added (as
    :meth:`Recommender.score_new_user` adds it)."""
    if lift <= 0:
        return raw
    out = []
    for scores, (items, values) in zip(raw, lifts, strict=True):
        scores = scores.copy()
        scores[items] += lift * values
        out.append(scores)
    return out


def _whole_ndcg(
    model: Recommender,
    raw: list[np.ndarray],
    n: int,
    row_of: np.ndarray,
    truth: Interactions,
    masked: Interactions,
    strengths: Sequence[float],
) -> np.ndarray:
    """NDCG@10 of every strength, each simulated user's whole catalogue ranked."""
    out = np.zeros(len(strengths))
    for j, c in enumerate(strengths):
        model.history_prior_strength = float(c)
        blended = np.vstack([model.blend_history_prior(s, n) for s in raw])

        def scorer(batch: np.ndarray, blended: np.ndarray = blended) -> np.ndarray:
            return blended[row_of[batch]]

        out[j] = evaluate_scores(scorer, truth, [masked], ks=(10,)).metrics["ndcg@10"]
    return out


def _candidate_ndcg(
    model: Recommender,
    raw: Iterator[np.ndarray],
    n: int,
    users: np.ndarray,
    truth: Interactions,
    masked: Interactions,
    strengths: Sequence[float],
    pick: tuple[int, int],
) -> np.ndarray:
    """NDCG@10 of every strength, each simulated user's top 10 taken from candidates."""
    n_items = truth.n_items
    k = 10
    count, reference_size = pick
    popularity = np.bincount(model.seen.indices, minlength=n_items)[:n_items]
    popular = np.argpartition(-popularity, min(count, n_items) - 1)[:count]
    reference = reference_items(n_items, reference_size)
    relevant = _rows(truth, users)
    masked_rows = _rows(masked, users)
    hits = np.zeros((len(strengths), len(users), k), dtype=bool)
    for i, scores in enumerate(raw):
        seen = masked_rows[i]
        ranked = scores.copy()
        ranked[seen] = -np.inf
        best = np.argpartition(-ranked, min(count, n_items) - 1)[:count]
        items, first = np.unique(np.concatenate([reference, best, popular]), return_index=True)
        is_reference = first < len(reference)
        out = np.isin(items, seen)
        wanted = np.isin(items, relevant[i])
        for j, c in enumerate(strengths):
            model.history_prior_strength = float(c)
            blended = model.blend_history_prior_subset(scores[items], items, n, is_reference)
            blended[out] = -np.inf
            top = np.argsort(-blended, kind="stable")[:k]
            top = top[np.isfinite(blended[top])]
            hits[j, i, : len(top)] = wanted[top]
    n_relevant = np.array([len(r) for r in relevant])
    evaluated = n_relevant > 0
    return np.array(
        [
            per_user_metrics(h[evaluated], n_relevant[evaluated], k)["ndcg"].mean()
            if evaluated.any()
            else 0.0
            for h in hits
        ]
    )


def _rows(part: Interactions, users: np.ndarray) -> list[np.ndarray]:
    """The distinct items of each of ``users`` in ``part``."""
    order = np.lexsort((part.items, part.users))
    u, items = part.users[order], part.items[order]
    starts, ends = np.searchsorted(u, users, "left"), np.searchsorted(u, users, "right")
    return [np.unique(items[s:e]) for s, e in zip(starts, ends, strict=True)]
