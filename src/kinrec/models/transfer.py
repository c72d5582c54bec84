"""KinFormer-style transfer model: language-model, knowledge-graph and collaborative views fused
per item, users defined by the items they touched, trained with ranking + self-supervised losses.

Item representation (layer 0), for item ``i``::

    id_i   = E_id[i]                                  collaborative view (trained)
    text_i = MoE(t_i)                                 frozen LM embedding t_i -> d, through a
                                                      mixture of whitening-linear experts
    kg_i   = sum_e A[i, e] * E_ent[e]                 knowledge view: IDF-weighted entity
                                                      embeddings of the item's KG neighbours
    x_i    = sum_v softmax(gate([id_i, text_i, kg_i]))_v * view_v   (knowledge fusion)

Views an item lacks (no training interaction -> no ID view; no text; no entity) are masked out
of the gate. During training the ID view is dropped at random (``id_dropout``), so the content
views learn to stand in for it, which is what new items need.

Users have no free embedding: LightGCN-style propagation over the normalised user-item graph
``R~ = D_u^-1/2 R D_i^-1/2`` defines them from their items::

    u1 = R~ x,   i2 = R~^T u1,   u3 = R~ i2,   user = (u1 + u3) / 2,   item = (x + i2) / 2

so a new user (or a user with new events) is folded in exactly by the same sums over their
items, and a new item is scored through its content views alone. Scores are cosine / tau.

A content popularity prior (:mod:`kinrec.models.prior`) is added to the scores with a weight
chosen on validation: it is how items without interactions get a sense of how much they will
be watched. Losses: sampled softmax over uniformly drawn negatives of items with interactions
(keeps popularity information), plus
(a) an InfoNCE alignment between each item's ID view and its content view, and (b) an
XSimGCL-style contrast between noise-perturbed layers.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kinrec.data.dataset import Dataset, Interactions
from kinrec.knowledge.features import ItemContent, build_item_content, content_for_new_items
from kinrec.models.base import ProgressCallback, Recommender, Validator
from kinrec.models.prior import PopularityPrior, choose_prior_weight
from kinrec.training.loop import IterativeConfig, seeded, torch_threads, train_epochs

VIEWS = ("id", "text", "kg")


class TransferConfig(IterativeConfig):
    """Settings of the transfer model; every component can be switched off for ablations."""

    dim: int = Field(64, ge=4, description="embedding size of every view")
    use_id: bool = Field(True, description="collaborative ID view")
    use_text: bool = Field(True, description="language-model view")
    use_kg: bool = Field(True, description="knowledge-graph view")
    text_adapter: Literal["moe", "linear", "frozen"] = Field(
        "moe", description="trainable adapter on the frozen LM embedding; 'frozen' = fixed PCA"
    )
    n_experts: int = Field(4, ge=1)
    temperature: float = Field(0.2, gt=0)
    n_negatives: int = Field(1024, ge=1, description="uniform negatives shared by a batch")
    id_dropout: float = Field(0.1, ge=0, le=1, description="share of items trained content-only")
    align_weight: float = Field(0.05, ge=0, description="ID-content InfoNCE alignment")
    cl_weight: float = Field(0.0, ge=0, description="XSimGCL layer contrast (0: off)")
    cl_noise: float = Field(0.1, ge=0)
    cl_temperature: float = Field(0.2, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    n_layers: int = Field(2, ge=1, description="LightGCN propagation layers")
    user_embeddings: bool = Field(True, description="layer-0 user embeddings (else items only)")
    similarity: Literal["cosine", "dot"] = "cosine"
    batch_size: int = Field(4096, ge=1)
    learning_rate: float = Field(1e-2, gt=0)
    max_epochs: int = Field(100, ge=1)
    patience: int = Field(8, ge=1, description="validations (every eval_every epochs) w/o gain")
    eval_every: int = Field(2, ge=1)
    encoder_path: str | None = Field(None, description="local sentence-transformers folder")
    adapter_path: str | None = Field(
        None, description="LoRA adapter folder for the encoder (kinrec adapt); swap to compare"
    )
    popularity_prior: bool = Field(
        True, description="add a content-predicted popularity prior, weight chosen on valid"
    )
    cold_calibration: float = Field(
        0.15,
        ge=0,
        lt=1,
        description=(
            "share of warm items scored from content alone on validation to choose the score "
            "offset of items without interactions (0: no offset)"
        ),
    )


class _FusionNetwork(nn.Module):
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
        if cfg.use_text and self.text_dim:
            if cfg.text_adapter == "frozen":
                self.register_buffer("text_proj", _pca(text, d))
            else:
                k = cfg.n_experts if cfg.text_adapter == "moe" else 1
                self.expert_bias = nn.Parameter(torch.zeros(k, self.text_dim))
                self.experts = nn.Parameter(torch.randn(k, self.text_dim, d) * self.text_dim**-0.5)
                self.expert_gate = nn.Linear(self.text_dim, k, bias=False)
        # Views switched off keep a one-row table, so parameter counts reflect what trains.
        self.entity_emb = nn.Embedding(max(n_entities, 1) if cfg.use_kg else 1, d)
        nn.init.normal_(self.entity_emb.weight, std=0.1)
        self.gate = nn.Linear(3 * d, 3)
        self.user_emb = nn.Embedding(n_users, d) if cfg.user_embeddings and n_users else None
        if self.user_emb is not None:
            nn.init.normal_(self.user_emb.weight, std=0.1)

    def text_view(self, text: torch.Tensor) -> torch.Tensor:
        if self.cfg.text_adapter == "frozen":
            return text @ self.text_proj
        # (n, k, d): each expert whitens (subtract a learned mean) then projects.
        experts = torch.einsum("nkt,ktd->nkd", text[:, None, :] - self.expert_bias, self.experts)
        weights = torch.softmax(self.expert_gate(text), dim=-1)
        return (weights[..., None] * experts).sum(dim=1)

    def forward(
        self,
        text: torch.Tensor,
        entities: torch.Tensor,
        available: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fused layer-0 embeddings of all items and the individual views.

        ``available`` is an ``(n, 3)`` boolean mask of usable views per item.
        """
        return self.forward_rows(text, entities, available, self.id_emb.weight)

    def forward_rows(
        self,
        text: torch.Tensor,
        entities: torch.Tensor,
        available: torch.Tensor,
        ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fusion for any rows (``ids`` None: rows without an ID view, e.g. new items)."""
        n = available.shape[0]
        d = self.cfg.dim
        zeros = torch.zeros(n, d)
        views = {
            "id": ids if self.cfg.use_id and ids is not None else zeros,
            "text": self.text_view(text) if self.cfg.use_text and self.text_dim else zeros,
            "kg": torch.sparse.mm(entities, self.entity_emb.weight) if self.cfg.use_kg else zeros,
        }
        stacked = torch.stack([views[v] for v in VIEWS], dim=1)  # (n, 3, d)
        logits = self.gate(torch.cat([views[v] for v in VIEWS], dim=1))
        logits = logits.masked_fill(~available, -1e9)
        weights = torch.softmax(logits, dim=-1) * available.any(dim=1, keepdim=True)
        return (weights[..., None] * stacked).sum(dim=1), views


def _pca(text: torch.Tensor, d: int) -> torch.Tensor:
    """A fixed (untrained) projection of the LM space onto its top-``d`` principal axes."""
    centred = text - text.mean(dim=0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    k = min(d, v.shape[0])
    proj = torch.zeros(text.shape[1], d)
    proj[:, :k] = v[:k].T
    return proj


def _sparse(matrix: sp.spmatrix) -> torch.Tensor:
    coo = sp.coo_matrix(matrix, dtype=np.float32)
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data), coo.shape).coalesce()


def _info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a)))


class TransferRecommender(Recommender):
    """Language-model + knowledge-graph + collaborative transfer model (``kinformer``)."""

    name = "kinformer"
    Config = TransferConfig
    requires_side = True

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.content: ItemContent | None = None
        self.item_final: np.ndarray | None = None  # (n_items, d) item side of the score
        self.item_layers: np.ndarray | None = None  # (n_layers, n_items, d)
        self.user_final: np.ndarray | None = None
        self.item_degree: np.ndarray | None = None
        self.gate_weights: np.ndarray | None = None
        self.prior: np.ndarray | None = None
        self.prior_weight = 0.0
        self.cold_boost = 0.0
        self.item_content: np.ndarray | None = None  # content-only item vectors

    # ----------------------------------------------------------------- training
    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        cfg: TransferConfig = self.config
        self.content = build_item_content(self.side, self.item_map, self._embedder())
        with torch_threads(cfg.threads), seeded(cfg.seed) as rng:
            self._train(train, validator, progress, rng)
        counts = np.bincount(train.items, minlength=train.n_items).astype(np.float64)
        self.popularity, self.prior = PopularityPrior.fit(
            self._prior_features(self.content), counts
        )
        if cfg.popularity_prior:
            choose_prior_weight(self, validator)
        self.cold_boost = 0.0
        if cfg.cold_calibration > 0 and valid is not None and len(valid):
            self._calibrate_cold(train, valid)

    COLD_BOOSTS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)

    def _calibrate_cold(self, train: Interactions, valid: Interactions) -> None:
        """Choose the score offset of content-only items on validation.

        A seeded share of warm items is scored from its content view alone (as new items are)
        and the offset that maximises overall validation NDCG@10 is kept: too low and new
        items never surface, too high and they crowd out what the user would pick.
        """
        from kinrec.evaluation.protocol import evaluate_scores

        warm = np.flatnonzero(self.item_degree > 0)
        rng = np.random.default_rng(self.config.seed)
        size = max(1, int(self.config.cold_calibration * len(warm)))
        pseudo = np.zeros(len(self.item_final), dtype=bool)
        pseudo[rng.choice(warm, size=size, replace=False)] = True
        content = self.item_content[pseudo]
        offset = self.item_offset()  # the popularity prior (cold_boost is still 0 here)
        results = {}
        for boost in self.COLD_BOOSTS:

            def scorer(users: np.ndarray, boost: float = boost) -> np.ndarray:
                u = self.user_final[users]
                scores = u @ self.item_final.T / self._scale + offset
                scores[:, pseudo] = u @ content.T / self._scale + boost + offset[pseudo]
                return scores

            result = evaluate_scores(scorer, valid, [train], ks=(10,), batch_size=2048)
            results[boost] = result.metrics["ndcg@10"]
        self.cold_boost = max(results, key=results.get)
        self.fit_info["cold_boost_search"] = {str(k): round(v, 5) for k, v in results.items()}
        self.fit_info["cold_boost"] = self.cold_boost

    @staticmethod
    def _prior_features(content: ItemContent) -> sp.csr_matrix:
        return sp.hstack([sp.csr_matrix(content.text), content.entities]).tocsr()

    def _embedder(self):
        from kinrec.knowledge.features import default_text_embedder

        return default_text_embedder(self.config.encoder_path, self.config.adapter_path)

    def _train(self, train, validator, progress, rng: np.random.Generator) -> None:
        cfg: TransferConfig = self.config
        content = self.content
        n_users, n_items = train.n_users, train.n_items
        r = self.seen.astype(np.float32)
        du = np.asarray(r.sum(axis=1)).ravel()
        di = np.asarray(r.sum(axis=0)).ravel()
        self.item_degree = di
        norm = (
            sp.diags(1 / np.sqrt(np.maximum(du, 1))) @ r @ sp.diags(1 / np.sqrt(np.maximum(di, 1)))
        )
        adj, adj_t = _sparse(norm), _sparse(norm.T)
        text = torch.from_numpy(content.text)
        entities = _sparse(content.entities)
        has_entity = np.diff(content.entities.indptr) > 0
        base_available = np.stack([di > 0, content.has_text, has_entity], axis=1)
        base_available &= np.array([cfg.use_id, cfg.use_text, cfg.use_kg])[None, :]
        net = _FusionNetwork(cfg, n_items, content.text, content.entities.shape[1], n_users)
        self._net = net
        opt = torch.optim.AdamW(
            net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        coo = self.seen.tocoo()
        pairs_u, pairs_i = coo.row.astype(np.int64), coo.col.astype(np.int64)
        n_pairs = len(pairs_u)
        interacted = di > 0
        warm = np.flatnonzero(interacted)

        user_emb = net.user_emb

        def propagate(x: torch.Tensor, noise: bool):
            """LightGCN layers over the bipartite graph; returns users, items, item layers."""
            u = user_emb.weight if user_emb is not None else torch.zeros(n_users, cfg.dim)
            i = x
            users, items, item_layers = [u], [i], [i]
            for _ in range(cfg.n_layers):
                u, i = torch.sparse.mm(adj, i), torch.sparse.mm(adj_t, u)
                if noise:
                    u = u + cfg.cl_noise * F.normalize(torch.rand_like(u), dim=-1) * torch.sign(u)
                    i = i + cfg.cl_noise * F.normalize(torch.rand_like(i), dim=-1) * torch.sign(i)
                users.append(u)
                items.append(i)
                item_layers.append(i)
            return torch.stack(users).mean(0), torch.stack(items).mean(0), users[1], item_layers

        def run_epoch(epoch: int) -> float:
            net.train()
            perm = rng.permutation(n_pairs)
            total, steps = 0.0, 0
            for start in range(0, n_pairs, cfg.batch_size):
                idx = perm[start : start + cfg.batch_size]
                available = base_available.copy()
                content_only = ~interacted
                if cfg.id_dropout > 0 and cfg.use_id:
                    drop = rng.random(n_items) < cfg.id_dropout
                    # keep at least one other view for dropped items
                    drop &= available[:, 1:].any(axis=1)
                    available[drop, 0] = False
                    content_only = content_only | drop
                avail_t = torch.from_numpy(available)
                x, views = net(text, entities, avail_t)
                use_cl = cfg.cl_weight > 0
                users, items, u1, _ = propagate(x, noise=use_cl)
                # Items without their ID view this step (dropped, or never interacted with) are
                # represented by their content alone, exactly as a new item is at serving time.
                items = torch.where(torch.from_numpy(content_only)[:, None], x, items)
                bu = torch.from_numpy(pairs_u[idx])
                bi = torch.from_numpy(pairs_i[idx])
                # Negatives come from items that have interactions: an item nobody could have
                # interacted with yet (not in the training data) is not evidence of dislike.
                negs = torch.from_numpy(warm[rng.integers(0, len(warm), cfg.n_negatives)])
                cos = cfg.similarity == "cosine"
                u = F.normalize(users[bu], dim=-1) if cos else users[bu]
                pi = F.normalize(items[bi], dim=-1) if cos else items[bi]
                ni = F.normalize(items[negs], dim=-1) if cos else items[negs]
                pos = (u * pi).sum(-1, keepdim=True)
                logits = torch.cat([pos, u @ ni.T], dim=1) / (cfg.temperature if cos else 1.0)
                loss = F.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long))
                if cfg.align_weight > 0 and cfg.use_id and (cfg.use_text or cfg.use_kg):
                    batch_items = torch.from_numpy(np.unique(pairs_i[idx])[: min(1024, len(idx))])
                    content_view = (views["text"] + views["kg"])[batch_items]
                    loss = loss + cfg.align_weight * _info_nce(
                        views["id"][batch_items], content_view, cfg.temperature
                    )
                if use_cl:
                    ub = torch.unique(bu)
                    ib = torch.unique(bi)
                    loss = loss + cfg.cl_weight * (
                        _info_nce(users[ub], u1[ub], cfg.cl_temperature)
                        + _info_nce(items[ib], x[ib], cfg.cl_temperature)
                    )
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
                steps += 1
            self._refresh(text, entities, base_available, propagate)
            return total / max(steps, 1)

        def snapshot():
            return (
                {k: v.clone() for k, v in net.state_dict().items()},
                self._arrays(),
            )

        def restore(state) -> None:
            net.load_state_dict(state[0])
            self._set_arrays(state[1])

        result = train_epochs(
            run_epoch,
            cfg.max_epochs,
            validate=(lambda: validator(self)) if validator else None,
            snapshot=snapshot if validator else None,
            restore=restore if validator else None,
            patience=cfg.patience,
            eval_every=cfg.eval_every,
            progress=progress,
            phase=self.name,
        )
        self.fit_info.update(result.fit_info())
        self.fit_info["trainable_parameters"] = sum(p.numel() for p in net.parameters())
        self.fit_info["gate_mean"] = dict(
            zip(VIEWS, np.round(self.gate_weights.mean(axis=0), 4).tolist(), strict=True)
        )

    @torch.no_grad()
    def _refresh(self, text, entities, available, propagate) -> None:
        """Recompute the inference matrices from the current parameters (no noise, no dropout)."""
        net = self._net
        net.eval()
        avail_t = torch.from_numpy(available)
        x, views = net(text, entities, avail_t)
        users, items, _, item_layers = propagate(x, noise=False)
        items = torch.where(torch.from_numpy(self.item_degree == 0)[:, None], x, items)
        logits = net.gate(torch.cat([views[v] for v in VIEWS], dim=1)).masked_fill(~avail_t, -1e9)
        self.gate_weights = torch.softmax(logits, dim=-1).numpy()
        # Layers 0..L-1 of items are what a folded-in user's layers 1..L are summed from.
        self.item_layers = torch.stack(item_layers[: self.config.n_layers]).numpy().copy()
        self.item_final = self._finish(items.numpy())
        self.user_final = self._finish(users.numpy())
        content_only = avail_t.clone()
        content_only[:, 0] = False
        self.item_content = self._finish(net(text, entities, content_only)[0].numpy())

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        if self.config.similarity == "cosine":
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self.item_layers,
            self.item_final,
            self.user_final,
            self.gate_weights,
            self.item_content,
        )

    def _set_arrays(self, arrays) -> None:
        (
            self.item_layers,
            self.item_final,
            self.user_final,
            self.gate_weights,
            self.item_content,
        ) = arrays

    # ----------------------------------------------------------------- inference
    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        item_vectors = self.item_final if items is None else self.item_final[items]
        scores = (self.user_final[users] @ item_vectors.T) / self._scale
        offset = self.item_offset()
        return scores + (offset if items is None else offset[items])

    def item_offset(self) -> np.ndarray:
        """Per-item score offset: popularity prior, plus the calibrated boost of items
        without interactions."""
        offset = np.zeros(len(self.item_final), dtype=np.float32)
        if self.prior_weight and self.prior is not None:
            offset += self.prior_weight * self.prior
        return offset + self.cold_boost * (self.item_degree == 0)

    @property
    def _scale(self) -> float:
        return self.config.temperature if self.config.similarity == "cosine" else 1.0

    def item_vectors(self) -> np.ndarray | None:
        return self.item_final

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Fold-in: a new user's layers are the same degree-normalised sums over their items.

        The user's own layer-0 embedding is zero (they had none in training), as for any user
        the model meets for the first time.
        """
        items = np.asarray(items, dtype=np.int64)
        if len(items) == 0:
            return np.zeros(len(self.item_final), dtype=np.float32)
        w = np.ones(len(items)) if weights is None else np.asarray(weights, dtype=np.float64)
        scale = w / np.sqrt(len(items) * np.maximum(self.item_degree[items], 1))
        layers = [scale @ layer[items] for layer in self.item_layers]
        user = self._finish(np.sum(layers, axis=0)[None, :] / (len(layers) + 1))[0]
        return (self.item_final @ user) / self._scale + self.item_offset()

    def add_items(self, item_ids: list[str], side: Dataset) -> None:
        """Append new items scored from their text and knowledge-graph views alone."""
        self._require_fitted()
        new = [i for i in item_ids if i not in self.item_map]
        if not new:
            return
        c = self.content
        text, has_text, incidence = content_for_new_items(
            side, new, c.entity_ids, c.entity_idf, self._embedder()
        )
        available = np.stack([np.zeros(len(new), bool), has_text, incidence.getnnz(1) > 0], 1)
        available &= np.array([False, self.config.use_text, self.config.use_kg])[None, :]
        with torch.no_grad():
            x, _ = self._net.forward_rows(
                torch.from_numpy(text), _sparse(incidence), torch.from_numpy(available)
            )
        x_new = x.numpy()
        for item_id in new:
            self.item_map.add(item_id)
        # A new item has no interactions: its propagated layers are zero, and its final
        # representation is its content view, as for content-only items in training.
        pad = np.zeros((self.item_layers.shape[0], len(new), x_new.shape[1]), np.float32)
        pad[0] = x_new
        self.item_layers = np.concatenate([self.item_layers, pad], axis=1)
        self.item_final = np.vstack([self.item_final, self._finish(x_new)])
        self.item_content = np.vstack([self.item_content, self._finish(x_new)])
        self.item_degree = np.concatenate([self.item_degree, np.zeros(len(new))])
        new_content = ItemContent(text, has_text, incidence, c.entity_ids, c.entity_idf)
        self.prior = np.concatenate(
            [self.prior, self.popularity.predict(self._prior_features(new_content))]
        )
        self.content = ItemContent(
            np.vstack([c.text, text]),
            np.concatenate([c.has_text, has_text]),
            sp.vstack([c.entities, incidence]).tocsr(),
            c.entity_ids,
            c.entity_idf,
        )
        self._widen_seen()

    # ----------------------------------------------------------------- persistence
    def _state(self) -> dict[str, np.ndarray]:
        c = self.content
        state = {f"net.{k}": v.numpy() for k, v in self._net.state_dict().items()}
        state.update(
            item_layers=self.item_layers,
            item_final=self.item_final,
            user_final=self.user_final,
            item_degree=self.item_degree,
            gate_weights=self.gate_weights,
            content_text=c.text,
            content_has_text=c.has_text.astype(np.uint8),
            content_ent_indptr=c.entities.indptr.astype(np.int64),
            content_ent_indices=c.entities.indices.astype(np.int64),
            content_ent_data=c.entities.data.astype(np.float32),
            content_idf=c.entity_idf,
            entity_names=np.frombuffer(json.dumps(c.entity_ids).encode(), dtype=np.uint8),
            prior=self.prior,
            prior_weight=np.array([self.prior_weight]),
            cold_boost=np.array([self.cold_boost]),
            item_content=self.item_content,
            **self.popularity.state(),
        )
        return state

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_layers = arrays["item_layers"]
        self.item_final = arrays["item_final"]
        self.user_final = arrays["user_final"]
        self.item_degree = arrays["item_degree"]
        self.gate_weights = arrays["gate_weights"]
        self.prior = arrays["prior"]
        self.prior_weight = float(arrays["prior_weight"][0])
        self.cold_boost = float(arrays["cold_boost"][0])
        self.item_content = arrays["item_content"]
        self.popularity = PopularityPrior.from_state(arrays)
        n_items = self.item_final.shape[0]
        entities = sp.csr_matrix(
            (
                arrays["content_ent_data"],
                arrays["content_ent_indices"],
                arrays["content_ent_indptr"],
            ),
            shape=(n_items, len(arrays["content_idf"])),
        )
        self.content = ItemContent(
            arrays["content_text"],
            arrays["content_has_text"].astype(bool),
            entities,
            json.loads(bytes(arrays["entity_names"]).decode()),
            arrays["content_idf"],
        )
        net_state = {
            k[4:]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("net.")
        }
        n_users = net_state["user_emb.weight"].shape[0] if "user_emb.weight" in net_state else 0
        self._net = _FusionNetwork(
            self.config, n_items, self.content.text, entities.shape[1], n_users
        )
        self._net.load_state_dict(net_state)
