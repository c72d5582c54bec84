"""What one training step of kinformer sees: its batch's user and item representations.

Two ways to get them, chosen by ``propagation``:

- :class:`FullPropagation`: every step runs the fusion network over every item and LightGCN
  over the whole interaction graph, so gradients are exact; a step costs about the catalogue
  and the graph, whatever the batch.
- :class:`CachedPropagation`: a step runs the fusion network on its batch's items only. The
  graph terms (layers 1..L) come from a full propagation without gradients, refreshed every
  ``cache_refresh_steps`` steps: historical embeddings, as in GNNAutoScale (Fey et al., 2021).
  A step then costs about its batch, and the graph only costs a forward pass now and then.

Both give, for a batch, ``users[bu]``, ``items[rows]`` and the views of ``rows``, with
items that train without their ID view (never interacted with, or dropped this step)
represented by their content alone, as a new item is at serving time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from kinrec.models.transfer.config import TransferConfig
from kinrec.models.transfer.network import VIEWS, FusionNetwork, SparseOperator


@dataclass
class Batch:
    """Representations for one step: ``users`` row ``j`` is user ``bu[j]``, ``items`` row
    ``j`` is item ``rows[j]``; ``views`` and ``layer1`` (users' first propagation layer, for
    the layer contrast) are aligned the same way."""

    users: torch.Tensor
    rows: np.ndarray
    items: torch.Tensor
    x: torch.Tensor  # layer-0 (fused) vectors of ``rows``
    views: dict[str, torch.Tensor]
    layer1: torch.Tensor | None = None

    def positions(self, items: np.ndarray) -> torch.Tensor:
        """Row positions in :attr:`items` of the given item indices (all among ``rows``)."""
        return torch.from_numpy(np.searchsorted(self.rows, items))


class Graph:
    """LightGCN over the bipartite user-item graph (symmetric degree normalisation)."""

    def __init__(self, seen: sp.csr_matrix, n_layers: int) -> None:
        r = seen.astype(np.float32)
        du = np.asarray(r.sum(axis=1)).ravel()
        di = np.asarray(r.sum(axis=0)).ravel()
        norm = (
            sp.diags(1 / np.sqrt(np.maximum(du, 1))) @ r @ sp.diags(1 / np.sqrt(np.maximum(di, 1)))
        )
        self.adj = SparseOperator(norm)
        self.adj_t = self.adj.T
        self.item_degree = di
        self.n_users, self.n_items = r.shape
        self.n_layers = n_layers

    def propagate(self, x: torch.Tensor, u: torch.Tensor, noise: float = 0.0):
        """Mean over layers 0..L of users and items, users' layer 1, and items' layers."""
        i = x
        users, items = [u], [i]
        for _ in range(self.n_layers):
            u, i = self.adj @ i, self.adj_t @ u
            if noise > 0:
                u = u + noise * F.normalize(torch.rand_like(u), dim=-1) * torch.sign(u)
                i = i + noise * F.normalize(torch.rand_like(i), dim=-1) * torch.sign(i)
            users.append(u)
            items.append(i)
        return torch.stack(users).mean(0), torch.stack(items).mean(0), users[1], items


class Propagation:
    """Shared parts: the network, its inputs, and the users' layer-0 table."""

    def __init__(
        self,
        cfg: TransferConfig,
        net: FusionNetwork,
        graph: Graph,
        text: torch.Tensor,
        entities: sp.csr_matrix,
    ) -> None:
        self.cfg, self.net, self.graph = cfg, net, graph
        self.text = text
        self.entity_rows = sp.csr_matrix(entities, dtype=np.float32)
        self.entities = SparseOperator(self.entity_rows)

    def optimiser(self) -> torch.optim.Optimizer:
        """AdamW over every parameter, fused: one kernel for all of them (about 8x faster
        than the per-tensor loop on CPU, where the ID and user tables make it a large part
        of a cheap step)."""
        cfg = self.cfg
        return torch.optim.AdamW(
            self.net.parameters(),
            lr=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            fused=True,
        )

    def user_layer0(self) -> torch.Tensor:
        emb = self.net.user_emb
        return emb.weight if emb is not None else torch.zeros(self.graph.n_users, self.cfg.dim)

    @torch.no_grad()
    def full(self, available: np.ndarray):
        """Everything without gradients or noise: fused ``x``, its views, the propagated users
        and items, and the items' layers."""
        avail_t = torch.from_numpy(available)
        x, views = self.net(self.text, self.entities, avail_t)
        users, items, _, item_layers = self.graph.propagate(x, self.user_layer0())
        return x, views, users, items, item_layers

    def step(
        self, bu: np.ndarray, rows: np.ndarray, available: np.ndarray, content_only: np.ndarray
    ) -> Batch:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each optimiser step."""


class FullPropagation(Propagation):
    """Exact: every step propagates the whole graph."""

    name = "full"

    def step(self, bu, rows, available, content_only) -> Batch:
        noise = self.cfg.cl_noise if self.cfg.cl_weight > 0 else 0.0
        x, views = self.net(self.text, self.entities, torch.from_numpy(available))
        users, items, u1, _ = self.graph.propagate(x, self.user_layer0(), noise)
        items = torch.where(torch.from_numpy(content_only)[:, None], x, items)
        r = torch.from_numpy(rows)
        bu_t = torch.from_numpy(bu)
        return Batch(
            users=users[bu_t],
            rows=rows,
            items=items[r],
            x=x[r],
            views={v: views[v][r] for v in VIEWS},
            layer1=u1[bu_t],
        )


class CachedPropagation(Propagation):
    """Batch items and users are fresh at layer 0; layers 1..L come from a cache."""

    name = "cached"

    def __init__(self, cfg, net, graph, text, entities, base_available: np.ndarray) -> None:
        super().__init__(cfg, net, graph, text, entities)
        self.base_available = base_available
        self.every = cfg.cache_refresh_steps
        self.steps = 0
        self.refreshes = 0
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Propagate the current parameters over the whole graph (no gradients, no dropout)."""
        x, _, users, items, _ = self.full(self.base_available)
        share = 1.0 / (self.graph.n_layers + 1)
        # what layers 1..L add to the layer-mean: everything but the layer-0 share
        self.item_rest = items - share * x
        self.user_rest = users - share * self.user_layer0()
        self.refreshes += 1

    def user_rows(self, bu: torch.Tensor) -> torch.Tensor:
        emb = self.net.user_emb
        return emb(bu) if emb is not None else torch.zeros(len(bu), self.cfg.dim)

    def after_step(self) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            self.refresh()

    def step(self, bu, rows, available, content_only) -> Batch:
        share = 1.0 / (self.graph.n_layers + 1)
        r = torch.from_numpy(rows)
        ids = self.net.id_emb(r) if self.cfg.use_id else None
        x, views = self.net.forward_rows(
            self.text[r],
            SparseOperator(self.entity_rows[rows]),
            torch.from_numpy(available[rows]),
            ids,
        )
        items = self.item_rest[r] + share * x
        items = torch.where(torch.from_numpy(content_only[rows])[:, None], x, items)
        bu_t = torch.from_numpy(bu)
        users = self.user_rest[bu_t] + share * self.user_rows(bu_t)
        return Batch(users=users, rows=rows, items=items, x=x, views=views)


def make_propagation(
    cfg: TransferConfig,
    net: FusionNetwork,
    graph: Graph,
    text: torch.Tensor,
    entities: sp.csr_matrix,
    base_available: np.ndarray,
) -> Propagation:
    """The propagation ``cfg.propagation`` asks for (``auto``: by catalogue size)."""
    if propagation_mode(cfg, graph.n_items) == "cached":
        return CachedPropagation(cfg, net, graph, text, entities, base_available)
    return FullPropagation(cfg, net, graph, text, entities)


def propagation_mode(cfg: TransferConfig, n_items: int) -> str:
    """``full`` or ``cached``: what ``auto`` resolves to on ``n_items`` items."""
    if cfg.propagation != "auto":
        return cfg.propagation
    if cfg.cl_weight > 0:
        return "full"
    return "full" if n_items <= cfg.full_propagation_items else "cached"
