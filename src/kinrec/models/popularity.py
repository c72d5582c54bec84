"""Most-popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

import time

import numpy as np
from pydantic import Field

from kinrec.data.dataset import Interactions
from kinrec.models.base import ProgressCallback, Recommender, Validator
from kinrec.privacy.dp import DPConfig, private_counts
from kinrec.training.loop import validate_one_pass


class PopularityConfig(DPConfig):
    """No parameters beyond the seed (kept for a uniform interface) and the user-level
    differential privacy settings (:mod:`kinrec.privacy.dp`: noisy counts). Popularity is the
    floor the others are measured against, so its new users get no knowledge-graph lift."""

    kg_profile_neighbours: int = Field(0, ge=0, description="0: popularity reads no graph")
    dp_clip: int = Field(
        100,
        ge=1,
        description="with dp_epsilon: each user contributes at most this many training "
        "items, sampled without replacement with the seed (more than a Gram matrix's: a "
        "count's noise grows with the square root of the clip, not with the clip)",
    )


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
        if self.config.dp_epsilon is not None:  # user-level DP: noisy counts (privacy/dp.py)
            counts, self.fit_info["privacy"] = private_counts(self.seen, self.config)
            self.counts = counts.astype(np.float32)
        else:
            self.counts = np.bincount(train.items, minlength=train.n_items).astype(np.float32)
        validate_one_pass(self, validator, start)

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        counts = self.counts if items is None else self.counts[np.asarray(items)]
        return np.broadcast_to(counts, (len(users), len(counts))).copy()

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Popularity ignores the history: the same scores for everyone."""
        return self.counts.copy()

    def item_counts(self) -> np.ndarray:
        """The noisy counts when private (never below 0), else the exact ones."""
        if self.config.dp_epsilon is not None:
            return np.maximum(self.counts.astype(np.float64), 0.0)
        return super().item_counts()

    def _state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts = arrays["counts"].astype(np.float32)
