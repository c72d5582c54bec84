"""How the service cuts a list from scores: plain top-k, or top-k with reserved new-item slots.

Reserved slots are the serving form of the cold/warm trade-off. One ranking puts a new item
(no training interactions) above a warm one only when its content-based score beats the warm
item's collaborative score, and one score offset moves every user's lists together.
Reserving ``slots`` positions of each list for the best new items instead fixes the exposure
that new items get, whatever the scores' scales, and leaves the rest of the list to the best
warm items. ``benchmarks/transfer.py`` measures what each number of slots costs the warm
items and gives the new ones.
"""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest scores, largest first (ties in position order)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < len(scores):
        # the k-th largest score, and of the scores tied with it the first ones: the same
        # list from every candidate set that holds them (the index path's and the exact one)
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        at_least = np.flatnonzero(scores >= kth)  # one pass over the scores, in position order
        tied = scores[at_least] == kth
        above = at_least[~tied]
        top = np.concatenate([above, at_least[tied][: k - len(above)]])
    else:
        top = np.arange(len(scores))
    return top[np.argsort(-scores[top], kind="stable")]


def top_with_reserved(scores: np.ndarray, new: np.ndarray, k: int, slots: int) -> np.ndarray:
    """Positions of a top-``k`` list holding the ``min(slots, k)`` best-scored ``new`` entries
    and the best other entries for the rest, ordered by score (descending, stable).

    ``scores`` and ``new`` (bool) are aligned 1-d arrays; entries with a score of ``-inf``
    are never picked. When either group runs short, the other fills the list, so the list
    is as long as plain top-``k`` would be.
    """
    scores = np.asarray(scores, dtype=np.float64)
    new = np.asarray(new, dtype=bool)
    if scores.shape != new.shape or scores.ndim != 1:
        raise ValueError("scores and new must be 1-d arrays of the same length")
    usable = np.isfinite(scores)
    k = min(k, int(usable.sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)

    def best(mask: np.ndarray, n: int) -> np.ndarray:
        idx = np.flatnonzero(mask & usable)
        return idx[top_k(scores[idx], n)]

    fresh = best(new, min(slots, k))
    rest = best(~new, k - len(fresh))
    if len(fresh) + len(rest) < k:  # too few warm entries: more new ones fill the list
        fresh = best(new, k - len(rest))
    picked = np.concatenate([fresh, rest])
    return picked[np.argsort(-scores[picked], kind="stable")]
