"""Top-K metrics with RecBole 1.2.1's definitions, computed from a hit matrix.

Notation, for one user: ``r_i`` is 1 if the item at rank ``i`` (1-based) of the top-K list is
relevant, ``P`` the number of relevant (test) items of that user, ``K`` the cut-off.

* ``recall@K    = sum_{i<=K} r_i / P``
* ``precision@K = sum_{i<=K} r_i / K``
* ``hit@K       = 1 if sum_{i<=K} r_i > 0 else 0``
* ``mrr@K       = 1 / (rank of the first relevant item), 0 if none in the top K``
* ``ndcg@K      = DCG@K / IDCG@K`` with ``DCG@K = sum_{i<=K} r_i / log2(i + 1)`` and
  ``IDCG@K = sum_{i<=min(P, K)} 1 / log2(i + 1)`` (binary gains)
* ``map@K       = sum_{i<=K} r_i * precision@i / min(P, K)``

Each metric is averaged over users with ``P > 0``. ``itemcoverage@K`` is the share of the
catalogue that appears in at least one user's top-K list.
"""

from __future__ import annotations

import numpy as np

METRICS = ("recall", "ndcg", "mrr", "hit", "precision", "map")


def per_user_metrics(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user metric values at cut-off ``k``.

    ``hits`` is a boolean ``n_users x >=k`` matrix (row = a user's ranked list, True where
    relevant); ``n_relevant`` the number of relevant items per user (must be > 0).
    """
    h = hits[:, :k].astype(np.float64)
    p = n_relevant.astype(np.float64)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    n_hits = h.sum(axis=1)
    discounts = 1.0 / np.log2(ranks + 1.0)
    dcg = h @ discounts
    ideal_len = np.minimum(p, k).astype(np.int64)
    idcg = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_len]
    first = np.where(h.any(axis=1), h.argmax(axis=1) + 1, 0)
    mrr = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    precision_at_i = np.cumsum(h, axis=1) / ranks
    ap = (h * precision_at_i).sum(axis=1) / np.minimum(p, k)
    return {
        "recall": n_hits / p,
        "ndcg": dcg / idcg,
        "mrr": mrr,
        "hit": (n_hits > 0).astype(np.float64),
        "precision": n_hits / k,
        "map": ap,
    }


def summarize(hits: np.ndarray, n_relevant: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Mean of every metric at every ``k`` over the users (rows) given, as ``"name@k"``."""
    out: dict[str, float] = {}
    for k in ks:
        for name, values in per_user_metrics(hits, n_relevant, k).items():
            out[f"{name}@{k}"] = float(values.mean()) if len(values) else 0.0
    return out
