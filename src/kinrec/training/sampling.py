"""Vectorised training samplers: positive pairs with uniformly drawn negatives, in batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from kinrec.data.dataset import Interactions


@dataclass(frozen=True)
class TripletBatch:
    """One training batch of (user, positive item, negative item) index tensors."""

    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor

    def __len__(self) -> int:
        return len(self.users)

    def select(self, index: torch.Tensor) -> TripletBatch:
        """The batch's rows at ``index``."""
        return TripletBatch(self.users[index], self.pos_items[index], self.neg_items[index])


class UniformNegativeSampler:
    """Every distinct training pair once per epoch, each with one uniformly drawn negative.

    Negatives are drawn uniformly from the whole catalogue (``0..n_items-1``) and redrawn, all
    at once, wherever they hit one of the user's training items, so a negative is never a
    positive of its user. Users who have interacted with every item are not allowed.
    """

    def __init__(self, train: Interactions, batch_size: int, seed: int = 0) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        matrix = train.matrix().tocoo()
        order = np.lexsort((matrix.col, matrix.row))
        self.users = matrix.row[order].astype(np.int64)
        self.items = matrix.col[order].astype(np.int64)
        self.n_users = train.n_users
        self.n_items = train.n_items
        self.batch_size = batch_size
        if len(self.users) == 0:
            raise ValueError("no training interactions to sample from")
        full = np.bincount(self.users, minlength=self.n_users) >= self.n_items
        if full.any():
            raise ValueError(f"{int(full.sum())} user(s) have interacted with every item")
        # Sorted keys of positive pairs, for vectorised membership tests.
        self._keys = self.users * self.n_items + self.items
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return -(-len(self.users) // self.batch_size)

    @property
    def n_pairs(self) -> int:
        return len(self.users)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Boolean mask: whether each (user, item) pair is a training interaction."""
        keys = users.astype(np.int64) * self.n_items + items.astype(np.int64)
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, len(self._keys) - 1)
        return self._keys[pos] == keys

    def sample_negatives(self, users: np.ndarray) -> np.ndarray:
        """One uniform negative item per user index (never one of the user's positives)."""
        negs = self.rng.integers(0, self.n_items, size=len(users), dtype=np.int64)
        bad = np.flatnonzero(self.is_positive(users, negs))
        while len(bad):
            negs[bad] = self.rng.integers(0, self.n_items, size=len(bad), dtype=np.int64)
            bad = bad[self.is_positive(users[bad], negs[bad])]
        return negs

    def epoch(self) -> Iterator[TripletBatch]:
        """Shuffled batches covering every training pair once."""
        perm = self.rng.permutation(len(self.users))
        users, items = self.users[perm], self.items[perm]
        negs = self.sample_negatives(users)
        users_t, items_t, negs_t = (torch.from_numpy(a) for a in (users, items, negs))
        for start in range(0, len(users), self.batch_size):
            end = start + self.batch_size
            yield TripletBatch(users_t[start:end], items_t[start:end], negs_t[start:end])
