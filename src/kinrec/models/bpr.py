"""BPR-MF: matrix factorisation trained with the BPR pairwise loss and uniform negatives.

Also home of :class:`PairwiseEmbeddingRecommender`, the fit scaffolding shared by embedding
models trained on (user, positive, negative) triplets (BPR-MF, LightGCN): seeding, sampling,
Adam, the shared epoch loop with early stopping, and numpy scoring from exported embeddings.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from pydantic import Field
from torch import nn

from kinrec.data.dataset import Interactions
from kinrec.models.base import ProgressCallback, Recommender, Validator
from kinrec.training.loop import (
    IterativeConfig,
    optimize_epoch,
    seeded,
    torch_threads,
    train_module,
)
from kinrec.training.losses import bpr_loss
from kinrec.training.sampling import TripletBatch, UniformNegativeSampler


class PairwiseEmbeddingConfig(IterativeConfig):
    """Settings shared by pairwise embedding models."""

    embedding_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0.0, description="Adam weight decay")


class PairwiseEmbeddingRecommender(Recommender):
    """Base of models that learn user and item vectors from BPR triplets.

    Subclasses build a torch module (:meth:`_build_module`), give the loss of a batch
    (:meth:`_batch_loss`) and export the final user and item vectors (:meth:`_export`);
    scores are dot products of the exported vectors.
    """

    Config = PairwiseEmbeddingConfig
    parts = ("user and item vectors",)  # trained by gradient: stale until retrained

    def __init__(self, config: PairwiseEmbeddingConfig | dict | None = None) -> None:
        super().__init__(config)
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None

    @abstractmethod
    def _build_module(self, train: Interactions) -> nn.Module: ...

    @abstractmethod
    def _batch_loss(self, module: nn.Module, batch: TripletBatch) -> torch.Tensor: ...

    @abstractmethod
    def _export(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]: ...

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        cfg = self.config
        with torch_threads(cfg.threads), seeded(cfg.seed) as rng:
            sampler = UniformNegativeSampler(train, cfg.batch_size, seed=int(rng.integers(2**62)))
            module = self._build_module(train)
            optimizer = torch.optim.Adam(
                module.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
            )

            def run_epoch(epoch: int) -> float:
                module.train()
                return optimize_epoch(
                    sampler.epoch(), lambda b: self._batch_loss(module, b), optimizer
                )

            result = train_module(
                self, module, run_epoch, lambda: self._sync(module), validator, cfg, progress
            )
        self.fit_info.update(result.fit_info())

    def _sync(self, module: nn.Module) -> None:
        """Refresh the numpy vectors used for scoring from the module's current weights."""
        module.eval()
        with torch.no_grad():
            users, items = self._export(module)
        self.user_factors = users.detach().numpy().astype(np.float32, copy=True)
        self.item_factors = items.detach().numpy().astype(np.float32, copy=True)

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        v = self.item_factors if items is None else self.item_factors[np.asarray(items)]
        return self.user_factors[np.asarray(users)] @ v.T

    def item_vectors(self) -> np.ndarray | None:
        return self.item_factors

    def user_vectors(self) -> np.ndarray | None:
        """The exported user vectors: the scores are their dot products with the items'."""
        return self.user_factors

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors = arrays["user_factors"].astype(np.float32)
        self.item_factors = arrays["item_factors"].astype(np.float32)


class MatrixFactorization(nn.Module):
    """User and item embedding tables (Xavier-normal initialised, as in RecBole)."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        nn.init.xavier_normal_(self.users.weight)
        nn.init.xavier_normal_(self.items.weight)


class BPRConfig(PairwiseEmbeddingConfig):
    """BPR-MF settings: RecBole's defaults (64-d, batch 2048, learning rate 0.001, no decay).

    Larger batches and learning rates tried on ml-100k's validation split were no better.
    """


class BPRMF(PairwiseEmbeddingRecommender):
    """Dot-product matrix factorisation trained with BPR (Rendle et al., 2009)."""

    name = "bpr"
    Config = BPRConfig

    def _build_module(self, train: Interactions) -> nn.Module:
        return MatrixFactorization(train.n_users, train.n_items, self.config.embedding_size)

    def _batch_loss(self, module: nn.Module, batch: TripletBatch) -> torch.Tensor:
        u = module.users(batch.users)
        pos = (u * module.items(batch.pos_items)).sum(-1)
        neg = (u * module.items(batch.neg_items)).sum(-1)
        return bpr_loss(pos, neg)

    def _export(self, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return module.users.weight, module.items.weight
