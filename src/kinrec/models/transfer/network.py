"""The trainable part of the transfer model: per-item view fusion, and the sparse graph
operators and contrastive loss its training uses."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg  # noqa: F401  (sp.linalg.svds)
import torch
import torch.nn.functional as F
from torch import nn

from kinrec.models.transfer.config import TransferConfig

VIEWS = ("id", "text", "kg")


class FusionNetwork(nn.Module):
    """Layer-0 item embeddings from the three views and a learned per-item gate."""

    def __init__(
        self, cfg: TransferConfig, n_items: int, text: np.ndarray, n_entities: int, n_users: int
    ):
        super().__init__()
        text = torch.from_numpy(np.asarray(text, dtype=np.float32))
        self.cfg = cfg
        d = cfg.dim
        self.id_emb = nn.Embedding(n_items if cfg.use_id else 1, d)
        nn.init.normal_(self.id_emb.weight, std=0.1)
        self.text_dim = text.shape[1]
        # a view is on where it is asked for and has something to read
        self.text_on = bool(cfg.use_text) and self.text_dim > 0
        self.kg_on = bool(cfg.use_kg) and n_entities > 0
        if self.text_on:
            if cfg.text_adapter == "frozen":
                self.register_buffer("text_proj", pca_projection(text, d))
            else:
                k = cfg.n_experts if cfg.text_adapter == "moe" else 1
                self.expert_bias = nn.Parameter(torch.zeros(k, self.text_dim))
                self.experts = nn.Parameter(torch.randn(k, self.text_dim, d) * self.text_dim**-0.5)
                self.expert_gate = nn.Linear(self.text_dim, k, bias=False)
        # Views switched off keep a one-row table, so parameter counts reflect what trains.
        self.entity_emb = nn.Embedding(n_entities if self.kg_on else 1, d)
        nn.init.normal_(self.entity_emb.weight, std=0.1)
        self.gate = nn.Linear(3 * d, 3)
        self.user_emb = nn.Embedding(n_users, d) if cfg.user_embeddings and n_users else None
        if self.user_emb is not None:
            nn.init.normal_(self.user_emb.weight, std=0.1)

    def text_view(self, text: torch.Tensor) -> torch.Tensor:
        if self.cfg.text_adapter == "frozen":
            return text @ self.text_proj
        # (n, k, d): each expert whitens (subtract a learned mean) then projects, computed as
        # t W_k - b_k W_k so that no (n, k, text_dim) tensor is formed.
        shift = torch.einsum("kt,ktd->kd", self.expert_bias, self.experts)
        experts = torch.einsum("nt,ktd->nkd", text, self.experts) - shift
        weights = torch.softmax(self.expert_gate(text), dim=-1)
        return (weights[..., None] * experts).sum(dim=1)

    def forward(
        self,
        text: torch.Tensor,
        entities: SparseOperator,
        available: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fused layer-0 embeddings of all items and the individual views.

        ``available`` is an ``(n, 3)`` boolean mask of usable views per item.
        """
        return self.forward_rows(text, entities, available, self.id_emb.weight)

    def forward_rows(
        self,
        text: torch.Tensor,
        entities: SparseOperator,
        available: torch.Tensor,
        ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fusion for any rows (``ids`` None: rows without an ID view, e.g. new items)."""
        n = available.shape[0]
        d = self.cfg.dim
        zeros = torch.zeros(n, d)
        views = {
            "id": ids if self.cfg.use_id and ids is not None else zeros,
            "text": self.text_view(text) if self.text_on else zeros,
            "kg": entities @ self.entity_emb.weight if self.kg_on else zeros,
        }
        return fuse(self.gate, views, available), views


def fuse(
    gate: Callable[[torch.Tensor], torch.Tensor],
    views: dict[str, torch.Tensor],
    available: torch.Tensor,
) -> torch.Tensor:
    """The gated sum of an item's views: ``gate`` maps the concatenated views ``(n, 3 d)``
    to a logit per view; views not ``available`` get none; rows with no view are zero."""
    stacked = torch.stack([views[v] for v in VIEWS], dim=1)  # (n, 3, d)
    logits = gate(torch.cat([views[v] for v in VIEWS], dim=1))
    logits = logits.masked_fill(~available, -1e9)
    weights = torch.softmax(logits, dim=-1) * available.any(dim=1, keepdim=True)
    return (weights[..., None] * stacked).sum(dim=1)


def pca_projection(text: torch.Tensor, d: int) -> torch.Tensor:
    """A fixed (untrained) projection of the LM space onto its top-``d`` principal axes."""
    centred = text - text.mean(dim=0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    k = min(d, v.shape[0])
    proj = torch.zeros(text.shape[1], d)
    proj[:, :k] = v[:k].T
    return proj


def graph_projection(entities: sp.spmatrix, d: int) -> torch.Tensor:
    """A fixed (untrained) ``(n_entities, d)`` entity table: the top-``d`` right singular
    vectors of the items' entity rows, so that ``entities @ table`` projects each item's row
    onto the graph's principal axes (the graph's :func:`pca_projection`, uncentred to keep
    the matrix sparse)."""
    m = sp.csr_matrix(entities, dtype=np.float64)
    k = min(d, min(m.shape) - 1)
    table = np.zeros((m.shape[1], d), dtype=np.float32)
    if k >= 1 and m.nnz:
        if min(m.shape) <= 2 * d:
            _, _, vt = np.linalg.svd(m.toarray(), full_matrices=False)
            k = min(d, vt.shape[0])
        else:
            _, _, vt = sp.linalg.svds(m, k=k, random_state=0)
        table[:, :k] = vt[:k].T
    return torch.from_numpy(table)


def _csr(matrix: sp.spmatrix) -> torch.Tensor:
    m = sp.csr_matrix(matrix, dtype=np.float32)
    m.sort_indices()
    with warnings.catch_warnings():  # torch flags sparse CSR as beta; products are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data),
            size=m.shape,
            check_invariants=False,
        )


class _SparseMatmul(torch.autograd.Function):
    """``A @ x`` for a constant sparse ``A``; the backward pass is ``A^T @ grad``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.a_t @ grad, None, None


class SparseOperator:
    """A constant sparse matrix kept in CSR both ways, so products and their gradients are
    row-parallel CSR kernels (an order of magnitude faster on CPU than COO ``sparse.mm``)."""

    def __init__(self, matrix: sp.spmatrix) -> None:
        self.shape = matrix.shape
        self.a, self.a_t = _csr(matrix), _csr(matrix.T)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return _SparseMatmul.apply(x, self.a, self.a_t)

    @property
    def T(self) -> SparseOperator:
        op = SparseOperator.__new__(SparseOperator)
        op.shape, op.a, op.a_t = self.shape[::-1], self.a_t, self.a
        return op


def info_nce(
    a: torch.Tensor, b: torch.Tensor, temperature: float, rows: np.ndarray | None = None
) -> torch.Tensor:
    """InfoNCE of row ``i`` of ``a`` against row ``i`` of ``b``, the other rows as negatives:
    the mean over rows. With ``rows``, only those rows' terms, summed and divided by
    ``len(a)``: one worker's share of the mean, which the workers' shares add up to."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    if rows is None:
        return F.cross_entropy(a @ b.T / temperature, torch.arange(len(a)))
    r = torch.from_numpy(rows)
    return F.cross_entropy(a[r] @ b.T / temperature, r, reduction="sum") / len(a)
