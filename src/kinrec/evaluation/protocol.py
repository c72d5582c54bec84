"""Full-ranking evaluation protocol (RecBole's): rank all items, mask known items, batch top-K.

For validation the user's train items are masked; for test, train and valid items. Users with
no rows in the evaluated part are skipped. Segments re-use the same ranked lists with a
restricted relevant set: ``cold`` = test rows whose item has no train row, ``warm`` = the rest,
and ``users:<group>`` = the users of an activity group (by number of train interactions).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from kinrec.data.dataset import Interactions
from kinrec.evaluation.metrics import summarize
from kinrec.models import memory

log = logging.getLogger(__name__)
_WARNED: set[tuple[int, int]] = set()  # (catalogue size, batch) already reported

DEFAULT_KS = (5, 10, 20, 50)

SCORE_BATCH_CELLS = 1 << 23
"""At most this many (user, item) scores per batch: 32 MiB a float32 score array. Larger
arrays are mapped fresh from the system on every allocation (glibc serves them with
``mmap``), and the page faults of a fresh array cost more than the arithmetic on it: on a
100,000-item catalogue a grid of four score weights over 5,000 users ranked in 1.4x the
time in batches of 1,024 users as in batches of 64. ml-100k and ml-1m fit 1,024 users in
one batch."""

Scorer = Callable[[np.ndarray], np.ndarray]
"""Maps a batch of user indices to a dense ``batch x n_items`` score array."""


@dataclass
class EvaluationResult:
    """Metrics over all evaluated users, per segment, plus counts."""

    metrics: dict[str, float]
    segments: dict[str, dict[str, float]] = field(default_factory=dict)
    n_users: int = 0
    segment_users: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "metrics": self.metrics,
            "segments": self.segments,
            "n_users": self.n_users,
            "segment_users": self.segment_users,
        }


def _binary(inter: Interactions) -> sp.csr_matrix:
    return inter.matrix().astype(bool).tocsr()


def cold_item_mask(train: Interactions) -> np.ndarray:
    """Boolean over items: True where the item has no training interaction."""
    counts = np.bincount(train.items, minlength=train.n_items)
    return counts == 0


def activity_groups(train: Interactions, n_groups: int = 3) -> dict[str, np.ndarray]:
    """Users split into equal-sized groups by number of train interactions (low/mid/high)."""
    counts = np.bincount(train.users, minlength=train.n_users)
    order = np.argsort(counts, kind="stable")
    names = ["low", "mid", "high"] if n_groups == 3 else [f"q{i + 1}" for i in range(n_groups)]
    groups: dict[str, np.ndarray] = {}
    for name, chunk in zip(names, np.array_split(order, n_groups), strict=True):
        mask = np.zeros(train.n_users, dtype=bool)
        mask[chunk] = True
        groups[f"users:{name}"] = mask
    return groups


def evaluate_scores(
    scorer: Scorer,
    truth: Interactions,
    exclude: Sequence[Interactions] = (),
    ks: Sequence[int] = DEFAULT_KS,
    item_segments: dict[str, np.ndarray] | None = None,
    user_segments: dict[str, np.ndarray] | None = None,
    batch_size: int = 1024,
) -> EvaluationResult:
    """Evaluate a scorer on ``truth`` with full ranking over all items.

    ``exclude`` parts are masked from each user's ranking; ``item_segments`` maps a segment
    name to a boolean mask over items that restricts the relevant set; ``user_segments`` to a
    boolean mask over users that restricts the evaluated users.
    """
    return evaluate_scorers(
        {None: scorer}, truth, exclude, ks, item_segments, user_segments, batch_size
    )[None]


def evaluate_scorers(
    scorers: Mapping[Hashable, Scorer],
    truth: Interactions,
    exclude: Sequence[Interactions] = (),
    ks: Sequence[int] = DEFAULT_KS,
    item_segments: dict[str, np.ndarray] | None = None,
    user_segments: dict[str, np.ndarray] | None = None,
    batch_size: int = 1024,
) -> dict[Hashable, EvaluationResult]:
    """:func:`evaluate_scores` of several scorers in one pass over the users: each batch of
    users is scored by every scorer in turn, so that scorers which share work (variants of
    one model along a grid) can reuse it for the batch they were last called with."""

    def rank(batch: np.ndarray, masked, kmax: int) -> dict[Hashable, np.ndarray]:
        tops = {}
        for key, scorer in scorers.items():
            scores = _checked(scorer(batch), batch, truth.n_items).copy()
            if masked is not None:
                scores[masked.row, masked.col] = -np.inf
            tops[key] = _top(scores, kmax)
        return tops

    return _evaluate_rankings(
        list(scorers), rank, truth, exclude, ks, item_segments, user_segments, batch_size
    )


def evaluate_group_offsets(
    scorer: Scorer,
    group: np.ndarray,
    offsets: Sequence[float],
    truth: Interactions,
    exclude: Sequence[Interactions] = (),
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
) -> dict[float, EvaluationResult]:
    """:func:`evaluate_scores` of ``scorer + offset * group`` for each offset, ``group`` a
    boolean mask over items (new items and their boost, say): an offset does not reorder
    the items inside or outside the group, so each user's top k at any offset is the top k
    of the group's own top k (shifted) and the others' top k. One scoring and two top-k
    selections per batch serve every offset."""
    group = np.asarray(group, dtype=bool)
    last: dict = {}

    def full(batch: np.ndarray) -> np.ndarray:
        if last.get("batch") is not batch:
            last.update(batch=batch, scores=_checked(scorer(batch), batch, truth.n_items))
        return last["scores"]

    results = evaluate_group_variants(
        lambda b: full(b)[:, ~group],
        {None: lambda b: full(b)[:, group]},
        group,
        offsets,
        truth,
        exclude,
        ks,
        batch_size,
    )
    return {offset: results[(None, offset)] for offset in offsets}


def evaluate_group_variants(
    outside: Scorer,
    insides: Mapping[Hashable, Scorer],
    group: np.ndarray,
    offsets: Sequence[float],
    truth: Interactions,
    exclude: Sequence[Interactions] = (),
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
) -> dict[tuple[Hashable, float], EvaluationResult]:
    """:func:`evaluate_group_offsets` for several variants of the group's scores that share
    the other items' scores: ``outside(batch)`` scores the items outside ``group`` (its
    columns in item order), each ``insides[key](batch)`` the items inside it. Results are
    keyed ``(key, offset)``. The outside items are scored and cut to their top k once per
    batch for every variant and offset; a variant costs only the group's columns."""
    group = np.asarray(group, dtype=bool)
    if group.shape != (truth.n_items,):
        raise ValueError(f"group mask has shape {group.shape}, expected {(truth.n_items,)}")
    out_items, in_items = np.flatnonzero(~group), np.flatnonzero(group)
    position = np.empty(truth.n_items, dtype=np.int64)
    position[out_items] = np.arange(len(out_items))
    position[in_items] = np.arange(len(in_items))

    def cut(scores, batch, items, masked, inside: bool, kmax: int):
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (len(batch), len(items)):
            raise ValueError(
                f"scorer returned shape {scores.shape}, expected {(len(batch), len(items))}"
            )
        scores = scores.copy()
        if masked is not None:
            here = group[masked.col] == inside
            scores[masked.row[here], position[masked.col[here]]] = -np.inf
        top = torch.topk(torch.from_numpy(scores), min(kmax, len(items)), dim=1)
        return top.values, torch.from_numpy(items)[top.indices]

    def rank(batch: np.ndarray, masked, kmax: int) -> dict[tuple[Hashable, float], np.ndarray]:
        out_values, out_top = cut(outside(batch), batch, out_items, masked, False, kmax)
        tops = {}
        for key, inside in insides.items():
            in_values, in_top = cut(inside(batch), batch, in_items, masked, True, kmax)
            values = torch.cat([in_values, out_values], dim=1)
            indices = torch.cat([in_top, out_top], dim=1)
            k = min(kmax, values.shape[1])
            for offset in offsets:
                shifted = values.clone()
                shifted[:, : in_values.shape[1]] += offset  # float32, as the full sum would be
                best = torch.topk(shifted, k, dim=1).indices
                tops[(key, offset)] = _padded(torch.gather(indices, 1, best).numpy(), kmax)
        return tops

    keys = [(key, offset) for key in insides for offset in offsets]
    return _evaluate_rankings(keys, rank, truth, exclude, ks, None, None, batch_size)


def _checked(scores, batch: np.ndarray, n_items: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (len(batch), n_items):
        raise ValueError(f"scorer returned shape {scores.shape}, expected {(len(batch), n_items)}")
    return scores


def _padded(top: np.ndarray, kmax: int) -> np.ndarray:
    if top.shape[1] < kmax:  # tiny catalogues: pad with an impossible index
        top = np.pad(top, ((0, 0), (0, kmax - top.shape[1])), constant_values=-1)
    return top


def _top(scores: np.ndarray, kmax: int) -> np.ndarray:
    k = min(kmax, scores.shape[1])
    return _padded(torch.topk(torch.from_numpy(scores), k, dim=1).indices.numpy(), kmax)


def _evaluate_rankings(
    keys: list,
    rank: Callable,
    truth: Interactions,
    exclude: Sequence[Interactions],
    ks: Sequence[int],
    item_segments: dict[str, np.ndarray] | None,
    user_segments: dict[str, np.ndarray] | None,
    batch_size: int,
) -> dict[Hashable, EvaluationResult]:
    """Metrics of the rankings ``rank(batch, masked, kmax)`` gives (a top-``kmax`` item
    index array per key, ``masked`` the batch's excluded (row, item) pairs as COO)."""
    ks = tuple(sorted(set(int(k) for k in ks)))
    kmax = max(ks)
    n_items = truth.n_items
    truth_m = _binary(truth)
    mask_m = None
    for part in exclude:
        m = _binary(part)
        mask_m = m if mask_m is None else (mask_m + m).astype(bool).tocsr()
    users = np.flatnonzero(np.diff(truth_m.indptr) > 0)
    rel = {"all": truth_m}
    for name, item_mask in (item_segments or {}).items():
        rel[name] = (truth_m @ sp.diags(item_mask.astype(np.float32))).astype(bool).tocsr()
        rel[name].eliminate_zeros()
    hits = {key: {name: np.zeros((len(users), kmax), dtype=bool) for name in rel} for key in keys}
    tops = {key: np.zeros((len(users), kmax), dtype=np.int64) for key in keys}
    # A batch holds a few dense score rows per user (the scorer's, possibly float64 on the
    # way, a float32 copy, the masked copy, what a scorer keeps for the batch) and one
    # relevance row per segment: fewer users per batch where memory is short (each user's
    # ranking is the same either way).
    batch_size = max(1, min(batch_size, SCORE_BATCH_CELLS // max(n_items, 1)))
    row_bytes = n_items * (32 + len(rel))
    fitting = memory.rows_that_fit(row_bytes, batch_size)
    if fitting < batch_size:
        if (n_items, fitting) not in _WARNED:
            _WARNED.add((n_items, fitting))
            wanted = memory.Dense("score rows", (batch_size, row_bytes), np.uint8)
            log.warning(
                "evaluation: %d users per batch instead of %d (%s)",
                fitting,
                batch_size,
                memory.short_reason(wanted),
            )
        batch_size = fitting
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        here = slice(start, start + len(batch))
        masked = mask_m[batch].tocoo() if mask_m is not None else None
        relevant = {name: m[batch].toarray() for name, m in rel.items()}
        for key, top in rank(batch, masked, kmax).items():
            tops[key][here] = top
            safe = np.where(top >= 0, top, 0)
            for name, dense in relevant.items():
                hits[key][name][here] = np.take_along_axis(dense, safe, axis=1) & (top >= 0)
    return {
        key: _result(hits[key], tops[key], users, truth_m, rel, user_segments, ks, n_items)
        for key in keys
    }


def _result(hits, tops, users, truth_m, rel, user_segments, ks, n_items) -> EvaluationResult:
    result = EvaluationResult(metrics={}, n_users=len(users))
    n_rel_all = np.diff(truth_m.indptr)[users]
    result.metrics = summarize(hits["all"], n_rel_all, ks)
    for k in ks:
        covered = np.unique(tops[:, :k])
        result.metrics[f"itemcoverage@{k}"] = float((covered >= 0).sum() / max(n_items, 1))
    for name, m in rel.items():
        if name == "all":
            continue
        n_rel = np.diff(m.indptr)[users]
        keep = n_rel > 0
        result.segments[name] = summarize(hits[name][keep], n_rel[keep], ks)
        result.segment_users[name] = int(keep.sum())
    for name, user_mask in (user_segments or {}).items():
        keep = user_mask[users]
        result.segments[name] = summarize(hits["all"][keep], n_rel_all[keep], ks)
        result.segment_users[name] = int(keep.sum())
    return result


def evaluate(
    model,
    truth: Interactions,
    exclude: Sequence[Interactions] = (),
    ks: Sequence[int] = DEFAULT_KS,
    segments: bool = True,
    train: Interactions | None = None,
    batch_size: int = 1024,
) -> EvaluationResult:
    """Evaluate a fitted :class:`~kinrec.models.base.Recommender` with full ranking.

    With ``segments`` and ``train`` given, reports ``cold``/``warm`` item segments (when any
    test item is cold) and user activity groups.
    """
    item_segments = user_segments = None
    if segments and train is not None:
        cold = cold_item_mask(train)
        truth_items_cold = cold[truth.items]
        if truth_items_cold.any():
            item_segments = {"cold": cold, "warm": ~cold}
        user_segments = activity_groups(train)
    return evaluate_scores(
        lambda u: model.score(u),
        truth,
        exclude,
        ks,
        item_segments,
        user_segments,
        batch_size,
    )


VALIDATION_USERS = 20_000
VALIDATION_CELLS = 500_000_000
MIN_VALIDATION_USERS = 2_000


def validation_users(n_items: int) -> int:
    """How many users a validation pass scores at most: each early-stopping check and each
    choice on validation ranks the whole catalogue for its users, which on large data would
    cost more than the training itself. At most ``VALIDATION_USERS``, and fewer on large
    catalogues so that a pass scores about ``VALIDATION_CELLS`` (user, item) pairs, but
    never under ``MIN_VALIDATION_USERS``: 20,000 users up to 25,000 items, 5,000 at 100,000
    items, 2,000 from 250,000 items on. (ml-100k and ml-1m have fewer users: all of them.)"""
    by_cells = VALIDATION_CELLS // max(int(n_items), 1)
    return int(min(VALIDATION_USERS, max(MIN_VALIDATION_USERS, by_cells)))


def sample_users(truth: Interactions, users: int | None, seed: int = 2026) -> Interactions:
    """``truth`` restricted to a seeded sample of ``users`` of its users (all of them when
    it has no more, or ``users`` is None)."""
    present = np.unique(truth.users)
    if users is None or len(present) <= users:
        return truth
    keep = np.zeros(truth.n_users, dtype=bool)
    keep[np.random.default_rng(seed).choice(present, size=users, replace=False)] = True
    return truth.subset(keep[truth.users])


class NdcgValidator:
    """NDCG@k on a validation part with the train items masked: ``validator(model)`` scores
    the model as it is; :meth:`grid` scores it at each value of one attribute, in one pass
    over the users (:func:`evaluate_scorers`), inside the model's ``reusing_score_parts``
    context where it has one, so that what the values do not change is computed once per
    batch of users."""

    def __init__(self, train: Interactions, valid: Interactions, k: int = 10) -> None:
        self.train, self.valid, self.k = train, valid, k

    def __call__(self, model) -> float:
        res = evaluate(model, self.valid, exclude=[self.train], ks=(self.k,), segments=False)
        return res.metrics[f"ndcg@{self.k}"]

    def grid(self, model, attribute: str, values: Sequence[float]) -> dict[float, float]:
        def scorer(value: float) -> Scorer:
            def score(users: np.ndarray) -> np.ndarray:
                setattr(model, attribute, value)
                return model.score(users)

            return score

        reuse = getattr(model, "reusing_score_parts", contextlib.nullcontext)
        with reuse():
            results = evaluate_scorers(
                {v: scorer(v) for v in values}, self.valid, [self.train], ks=(self.k,)
            )
        return {v: r.metrics[f"ndcg@{self.k}"] for v, r in results.items()}


def ndcg_validator(
    train: Interactions, valid: Interactions, k: int = 10, users: int | None = -1
) -> NdcgValidator:
    """A validator for early stopping: model -> NDCG@k on ``valid`` with train items masked,
    over at most ``users`` validation users (a seeded sample; -1: :func:`validation_users`
    of the catalogue; None: all)."""
    if users == -1:
        users = validation_users(valid.n_items)
    return NdcgValidator(train, sample_users(valid, users), k)
