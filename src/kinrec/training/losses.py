"""Losses shared by pairwise-ranking models."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean of ``-log sigmoid(pos - neg)``."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def l2_penalty(*tensors: torch.Tensor) -> torch.Tensor:
    """Half the summed squared L2 norm of ``tensors``, divided by the batch size (rows)."""
    total = sum(t.pow(2).sum() for t in tensors)
    return total / (2 * tensors[0].shape[0])
