"""Item-based nearest neighbours: cosine item-item similarity with shrinkage, top-k per item."""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from kinrec.data.dataset import Interactions
from kinrec.models import memory
from kinrec.models.base import ModelConfig, ProgressCallback, Recommender, Scored, Validator
from kinrec.models.item_item import history_row_scores
from kinrec.models.sparse_linear import top_per_group
from kinrec.training.loop import validate_one_pass

log = logging.getLogger(__name__)


class ItemKNNConfig(ModelConfig):
    """RecBole's defaults: 100 neighbours, no shrinkage."""

    k: int = Field(100, ge=1, description="neighbours kept per item")
    shrink: float = Field(0.0, ge=0.0, description="added to the cosine denominator")
    block_size: int = Field(512, ge=1, description="items per similarity block (memory bound)")


def cosine_topk(
    matrix: sp.csr_matrix, k: int, shrink: float = 0.0, block_size: int = 512
) -> sp.csr_matrix:
    """Sparse ``n_items x n_items`` weights ``W`` with ``W[j, i] = sim(j, i)`` for the ``k`` items
    ``j != i`` most similar to item ``i`` (RecBole's ``ComputeSimilarity``).

    ``sim(j, i) = co(j, i) / (|x_j| |x_i| + shrink + 1e-6)`` over the binary user-item matrix.
    Similarities are computed one block of items at a time and stay sparse: a block costs its
    co-occurrences, not ``n_items x block`` cells, and only its top ``k`` per item are kept.
    Items that co-occur with fewer than ``k`` others keep only those (a zero similarity is
    never a neighbour); ties at the cut go to the lower item index.
    """
    x = sp.csc_matrix(matrix, dtype=np.float64)
    n_items = x.shape[1]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
    xt = x.T.tocsr()
    k = min(k, max(n_items - 1, 1))
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block_size):
        stop = min(start + block_size, n_items)
        co = (xt @ x[:, start:stop]).tocoo()  # n_items x block, only co-occurring pairs
        item, column = co.row, co.col + start
        sims = co.data / (norms[item] * norms[column] + shrink + 1e-6)
        keep = (item != column) & (sims > 0)
        item, column, sims = item[keep], column[keep], sims[keep]
        top, _ = top_per_group(column, item, sims, k)  # ties: lower item index
        rows.append(item[top].astype(np.int64))
        cols.append(column[top].astype(np.int64))
        vals.append(sims[top])
    w = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
        dtype=np.float32,
    )
    w.sort_indices()
    return w


class ItemKNN(Recommender):
    """Scores item ``i`` for a user by summing ``i``'s similarity to the user's train items."""

    name = "itemknn"
    Config = ItemKNNConfig

    def __init__(self, config: ItemKNNConfig | dict | None = None) -> None:
        super().__init__(config)
        self.weights: sp.csr_matrix | None = None

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        start = time.perf_counter()
        cfg = self.config
        self.weights = cosine_topk(self.seen, cfg.k, cfg.shrink, self._block_size())
        validate_one_pass(self, validator, start)

    def _block_size(self) -> int:
        """Items per similarity block: the configured size, or fewer where a block's worst
        case (every pair co-occurs: ``n_items x block`` triplets of value and indices, a few
        copies while sorting) does not fit in memory; the weights are the same for any block
        size."""
        n, wanted = self.seen.shape[1], self.config.block_size
        column = memory.Dense("similarity block columns", (n,), np.float64, copies=4)
        block = memory.rows_that_fit(column.nbytes, wanted)
        if block < wanted:
            reason = memory.short_reason(
                memory.Dense("", (n, wanted), np.float64, copies=column.copies)
            )
            self.fit_info["block_size"] = f"{block} instead of {wanted}: {reason}"
            log.warning(
                "itemknn: %d items per similarity block instead of %d (%s)", block, wanted, reason
            )
        memory.require(
            f"itemknn (fit on {n:,} items)",
            memory.Dense("one similarity block", (n, block), np.float64, copies=column.copies),
        )
        return block

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        w = self.weights if items is None else self.weights[:, np.asarray(items)]
        return np.asarray((self.seen[np.asarray(users)] @ w).toarray(), dtype=np.float32)

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Fold-in: scores for a user known only by the item indices they interacted with."""
        return history_row_scores(self.weights, items, weights)

    def similar_items(self, item_id: str, k: int = 10) -> list[Scored]:
        """Items by cosine similarity (with the model's shrinkage) to ``item_id``."""
        self._require_fitted()
        iidx = self.item_map.index(item_id)
        x = self.seen.tocsc()
        co = np.asarray((x.T @ x[:, iidx]).toarray()).ravel().astype(np.float64)
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        sims = co / (norms * norms[iidx] + self.config.shrink + 1e-6)
        sims[iidx] = -np.inf
        return self._top(sims, k)

    def _state(self) -> dict[str, np.ndarray]:
        w = self.weights
        return {
            "weights.data": w.data.astype(np.float32),
            "weights.indices": w.indices.astype(np.int64),
            "weights.indptr": w.indptr.astype(np.int64),
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(self.item_map)
        self.weights = sp.csr_matrix(
            (arrays["weights.data"], arrays["weights.indices"], arrays["weights.indptr"]),
            shape=(n, n),
        )
