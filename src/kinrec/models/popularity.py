"""Most-popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

import time

import numpy as np

from kinrec.data.dataset import Interactions
from kinrec.models.base import ModelConfig, ProgressCallback, Recommender, Validator
from kinrec.training.loop import validate_one_pass


class PopularityConfig(ModelConfig):
    """No parameters beyond the seed (kept for a uniform interface)."""


class Popularity(Recommender):
    """Scores each item by its number of training interactions (true popularity)."""

    name = "pop"
    Config = PopularityConfig

    def __init__(self, config: PopularityConfig | dict | None = None) -> None:
        super().__init__(config)
        self.counts: np.ndarray | None = None

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        start = time.perf_counter()
        self.counts = np.bincount(train.items, minlength=train.n_items).astype(np.float32)
        validate_one_pass(self, validator, start)

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        counts = self.counts if items is None else self.counts[np.asarray(items)]
        return np.broadcast_to(counts, (len(users), len(counts))).copy()

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Popularity ignores the history: the same scores for everyone."""
        return self.counts.copy()

    def _state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts = arrays["counts"].astype(np.float32)
