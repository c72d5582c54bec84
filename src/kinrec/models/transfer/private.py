"""kinformer with user-level differential privacy (``dp_epsilon``): :class:`PrivateTraining`.

The privacy unit is a user (:mod:`kinrec.privacy.dp`); item text and the knowledge graph are
public. Every user first keeps at most ``dp_clip`` training items (the same seeded sample for
every part, :func:`~kinrec.privacy.dp.clip_rows`). Then, each part private on its own and
all of them accounted together:

* **the tower** (the fusion network's ID, text and graph views): trained by DP-SGD with
  users as the unit (:mod:`kinrec.privacy.dpsgd`), for ``dp_epochs`` expected passes fixed
  in advance. A user's loss must read only that user's rows, so the private tower has no
  propagation over the user-item graph (LightGCN mixes every user's edges into every item's
  vector): a user is the normalised sum of their items' fused vectors (one layer, the same
  fold-in as a new user's), scored against their own items and uniform negatives from the
  whole catalogue. Every item has its ID view (which items have interactions is not
  public); the text adapter is the fixed PCA projection (no parameters to noise) and there
  is no user table. Each user's gradient (per-user gradients by :func:`torch.func.vmap`)
  is clipped to ``dp_grad_clip``, Gaussian noise is added to every coordinate.
* **the linear head**: EASE weights solved from the noisy Gram matrix of the clipped rows
  of the items the noisy counts choose (:func:`~kinrec.privacy.dp.solve_private_gram`),
  with the head's share of the budget; the noisy counts are what the model releases
  (:meth:`item_counts`). The head is
  left out (the tower takes the whole budget) with ``linear_head = false``,
  ``dp_tower_share = 1`` or a catalogue above ``dense_linear_items``.
* **what follows from releases** (post-processing, no further cost): the popularity prior,
  the standardised log of the noisy counts (items added later: predicted from their content
  by a regression fitted on them), and the weights of the head and the prior, set so that their
  scores spread ``dp_head_weight`` and ``dp_prior_weight`` times as wide as the tower's over
  synthetic histories drawn from the noisy counts.

Nothing is chosen on validation: no early stopping, no head search, no popularity weight,
no cold calibration or dormant offset. Trained users' vectors are folded in from their own
full histories (their own data, served to them only: outside the guarantee, as
:data:`~kinrec.privacy.dp.NOT_COVERED` says).
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from kinrec.models import item_item as heads
from kinrec.models.ease import EASEConfig
from kinrec.models.prior import PopularityPrior, feature_count
from kinrec.models.transfer.network import (
    FusionNetwork,
    SparseOperator,
    fuse,
    graph_projection,
)
from kinrec.privacy import dp, dpsgd
from kinrec.training.loop import seeded, torch_threads

CHUNK_USERS = 128
"""Users whose per-user gradients are held at once (memory: users x rows x dim)."""

SYNTHETIC_USERS = 256
"""Synthetic histories the head's weight is set on."""


class PrivateTraining:
    """The private fit, mixed into :class:`~kinrec.models.transfer.model.TransferRecommender`.

    ``private_counts``: the noisy item counts the model releases (None: not private)."""

    private_counts: np.ndarray | None = None

    def _fit_private(self, train, progress) -> None:
        cfg = self.config.model_copy(update={"text_adapter": "frozen", "user_embeddings": False})
        self.config = cfg  # as trained: a saved model reloads the same network
        n_users, n_items = self.seen.shape
        epsilon, delta = dp.target(cfg, n_users)
        rows = dp.clip_rows(self.seen, cfg.dp_clip, cfg.seed)
        with_head = cfg.linear_head and cfg.dp_tower_share < 1
        why_no_head = None
        if with_head and n_items > cfg.dense_linear_items:
            with_head = False
            why_no_head = (
                f"{n_items:,} items > dense_linear_items ({cfg.dense_linear_items:,}): the "
                "noisy Gram matrix is solved densely only"
            )
        share = cfg.dp_tower_share if with_head else 1.0
        releases = []
        if with_head:
            mu = dp.gaussian_mu(epsilon, delta) * math.sqrt(1.0 - share)
            releases = dp.gram_releases(mu, cfg.dp_clip, cfg.dp_item_threshold)
        q = min(1.0, cfg.dp_users_per_step / n_users)
        sgd = dpsgd.calibrate(
            epsilon, delta, releases, q, max(1, math.ceil(cfg.dp_epochs / q)), cfg.dp_grad_clip
        )
        threads = cfg.fit_threads()
        self.fit_info["threads"] = threads
        with torch_threads(threads), seeded(cfg.seed) as rng:
            self._train_private(rows, sgd, rng, progress)
        self.is_new = np.zeros(n_items, dtype=bool)
        self.cold_boost = self.dormant_offset = self.prior_weight = 0.0
        self.rating_strength = self.head_rows = None
        self.linear, self.linear_weight = None, 0.0
        extra = {}
        if with_head:
            solved = dp.solve_private_gram(
                self.seen, releases, cfg.dp_clip, cfg.seed,
                cfg.linear_l2 or EASEConfig().reg_weight, cfg.dp_noise_l2,
                cfg.dp_item_threshold, "kinformer's head",
            )  # fmt: skip
            self.linear, counts = solved.weights, solved.counts
            extra = {"l2": solved.l2, **solved.describe(cfg.dp_item_threshold)}
        else:
            counts = np.zeros(n_items)  # nothing released: no popularity is known
        self.private_counts = counts
        if counts.any():
            self._fit_prior(counts)  # for items added later: predicted from their content
            logs = np.log1p(np.maximum(counts, 0.0))  # trained items: their own noisy counts
            self.prior = ((logs - logs.mean()) / (logs.std() + 1e-12)).astype(np.float32)
        else:  # nothing released: no popularity is known
            features = self._prior_features(self.content)
            self.popularity = PopularityPrior(np.zeros(feature_count(features) + 1))
            self.prior = np.zeros(n_items, dtype=np.float32)
        self._set_private_weights(counts, np.random.default_rng(cfg.seed))
        statistics = "DP-SGD gradients of the tower"
        if with_head:
            statistics += "; " + dp.gram_statistics(releases)
        self.fit_info["privacy"] = dp.record(
            releases,
            epsilon,
            delta,
            cfg.dp_clip,
            cfg.seed,
            hyperparameters="fixed in advance (dp_* settings); nothing chosen on validation",
            sgd=sgd,
            statistics=statistics,
            tower="no propagation over the user-item graph; a user is the sum of their items",
            tower_share=share,
            **({"head": f"left out: {why_no_head}"} if why_no_head else {}),
            **extra,
        )
        self.fit_info["linear_weight"] = self.linear_weight
        self.fit_info["prior_weight"] = self.prior_weight

    # ----------------------------------------------------------------- the tower
    def _train_private(self, rows: sp.csr_matrix, sgd, rng: np.random.Generator, progress):
        cfg, content = self.config, self.content
        n_users, n_items = rows.shape
        net = FusionNetwork(cfg, n_items, content.text, content.entities.shape[1], 0)
        self._net = net
        text = torch.from_numpy(np.ascontiguousarray(content.text, dtype=np.float32))
        entities = SparseOperator(content.entities)
        has_entity = np.diff(content.entities.indptr) > 0
        available = np.stack([np.ones(n_items, bool), content.has_text, has_entity], axis=1)
        available &= np.array([cfg.use_id, cfg.use_text, cfg.use_kg])[None, :]
        avail_t = torch.from_numpy(available)
        with torch.no_grad():  # the content views are fixed projections: computed once
            if net.kg_on:
                net.entity_emb.weight.copy_(graph_projection(content.entities, cfg.dim))
            _, views = net(text, entities, avail_t)
        net.entity_emb.weight.requires_grad_(False)
        tower = PrivateTower(cfg, net, views["text"], views["kg"], avail_t)
        opt = torch.optim.Adam(tower.trained, lr=cfg.dp_learning_rate)
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        expected = sgd.sample_rate * n_users
        n_neg = min(cfg.dp_negatives, n_items)
        start = time.perf_counter()
        for step in range(sgd.steps):
            users = dpsgd.poisson_users(n_users, sgd.sample_rate, rng)
            negs = torch.from_numpy(rng.choice(n_items, n_neg, replace=False))
            grads = tower.clipped_sum(rows, users, negs, sgd.clip)
            dpsgd.add_noise(grads, sgd.noise_std, generator)
            for p, g in zip(tower.trained, grads, strict=True):
                p.grad = g / expected
            opt.step()
            if progress is not None:
                progress(
                    f"{self.name} (DP-SGD)",
                    step + 1,
                    sgd.steps,
                    {"users": float(len(users)), "seconds": time.perf_counter() - start},
                )
        self.fit_info["dp_sgd_steps"] = sgd.steps
        self._set_private_arrays(text, available)

    @torch.no_grad()
    def _set_private_arrays(self, text: torch.Tensor, available: np.ndarray) -> None:
        """The inference arrays of the private tower: one layer, items' fused vectors, users
        folded in from their own histories as any new user is (degrees all 1: the true
        ones are not released)."""
        net = self._net
        net.eval()
        entities = SparseOperator(self.content.entities)
        x, views = net(text, entities, torch.from_numpy(available))
        x = x.numpy()
        n_items = x.shape[0]
        self.item_degree = np.ones(n_items)
        self.item_layers = x[None].copy()
        self.item_final = self._finish(x)
        self.user_final = self._fold_in_rows(sp.csr_matrix(self.seen, dtype=np.float64))
        self._set_view_arrays(views, available, text, entities)

    # ----------------------------------------------------------------- the head's weight
    def _set_private_weights(self, counts: np.ndarray, rng: np.random.Generator) -> None:
        """The head's and the popularity prior's weights, from score spreads (the median
        over synthetic users of each row's standard deviation; each synthetic history holds
        ``dp_clip`` items drawn without replacement by the released counts): the head spreads
        ``dp_head_weight`` times as wide as the tower, the prior (standardised)
        ``dp_prior_weight`` times."""
        cfg = self.config
        n = len(counts)
        p = np.maximum(counts, 0.0) + 1e-9 * max(float(counts.max(initial=0.0)), 1.0)
        p /= p.sum()
        size = max(1, min(cfg.dp_clip, n - 1))
        tower, head = [], []
        ones = np.ones(size)
        for _ in range(SYNTHETIC_USERS):
            items = rng.choice(n, size, replace=False, p=p)
            tower.append(self._tower(self._fold_in(items, ones), self.item_final).std())
            if self.linear is not None:
                head.append(heads.history_scores(self.linear, items, ones).std())
        spread = float(np.median(tower))
        if head and np.median(head) > 0:
            self.linear_weight = float(cfg.dp_head_weight * spread / np.median(head))
        prior_spread = float(self.prior.std())
        if prior_spread > 0:
            self.prior_weight = float(cfg.dp_prior_weight * spread / prior_spread)

    def item_counts(self) -> np.ndarray:
        """A private model's noisy counts (the head's released Gram diagonal; zeros when
        nothing was released), else the exact ones."""
        if self.private_counts is not None:
            return self.private_counts.astype(np.float64)
        return super().item_counts()


class PrivateTower:
    """One DP-SGD step's gradients of the private tower: each user's gradient of their own
    loss (:meth:`loss`, per user by :func:`torch.func.vmap`), clipped, summed.

    ``trained``: the parameters DP-SGD updates, in the order :meth:`clipped_sum` returns
    their gradients: the ID table (where ``use_id``) and the fusion gate. The text and graph
    views are fixed projections (``text_view``, ``kg_view``: every item's)."""

    def __init__(self, cfg, net: FusionNetwork, text_view, kg_view, available) -> None:
        self.cfg, self.net = cfg, net
        self.text_view, self.kg_view, self.available = text_view, kg_view, available
        self.gate = {"weight": net.gate.weight, "bias": net.gate.bias}
        self.trained = ([net.id_emb.weight] if cfg.use_id else []) + list(self.gate.values())
        self._per_user = vmap(grad(self.loss, argnums=(0, 1)), in_dims=(None, 0, 0, 0, 0))

    def loss(self, gate, ids, rows, hist_mask, neg_mask) -> torch.Tensor:
        """One user's loss: sampled softmax of each of their items (``rows`` where
        ``hist_mask``) against the step's negatives (the other ``rows``, where ``neg_mask``),
        the user being the normalised sum of their items' fused vectors; ``ids``: the rows'
        ID vectors, ``gate``: the gate's weight and bias."""
        cfg = self.cfg
        x = fuse(
            lambda z: F.linear(z, gate["weight"], gate["bias"]),
            {"id": ids, "text": self.text_view[rows], "kg": self.kg_view[rows]},
            self.available[rows],
        )
        length = hist_mask.shape[0]
        m = hist_mask.to(x.dtype)
        own, negatives = x[:length], x[length:]
        user = (m[:, None] * own).sum(0) / m.sum().clamp(min=1.0).sqrt()
        if cfg.similarity == "cosine":
            user = F.normalize(user, dim=-1) / cfg.temperature
            own, negatives = F.normalize(own, dim=-1), F.normalize(negatives, dim=-1)
        pos = own @ user
        neg = torch.logsumexp((negatives @ user).masked_fill(~neg_mask, -1e9), dim=0)
        return ((torch.logaddexp(pos, neg) - pos) * m).sum() / m.sum().clamp(min=1.0)

    def inputs(self, rows: sp.csr_matrix, users: np.ndarray, negs: torch.Tensor):
        """The :meth:`loss` inputs of ``users`` (batched along the first dimension)."""
        hist, mask = _padded_histories(rows, users)
        at = torch.cat([hist, negs.expand(len(users), -1)], dim=1)
        # a negative the user has is no negative of theirs (its gradient row: 0)
        neg_mask = ~((negs[None, :, None] == hist[:, None, :]) & mask[:, None, :]).any(-1)
        if self.cfg.use_id:
            ids = self.net.id_emb.weight.detach()[at]
        else:
            ids = torch.zeros(*at.shape, self.cfg.dim)
        return ids, at, mask, neg_mask

    def user_gradients(self, rows, users, negs) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-user gradients, each tensor's first dimension the user: the ID rows' (of the
        rows :meth:`inputs` gives; zeros where ``use_id`` is off) and then the gate's."""
        ids, at, mask, neg_mask = self.inputs(rows, users, negs)
        params = {k: p.detach() for k, p in self.gate.items()}
        g_gate, g_ids = self._per_user(params, ids, at, mask, neg_mask)
        return [g_ids, *g_gate.values()], at

    def clipped_sum(self, rows, users, negs, clip: float) -> list[torch.Tensor]:
        """The sum over ``users`` of their gradients, each clipped to L2 norm ``clip``: one
        tensor per :attr:`trained` parameter."""
        out = [torch.zeros_like(p) for p in self.trained]
        for start in range(0, len(users), CHUNK_USERS):
            grads, at = self.user_gradients(rows, users[start : start + CHUNK_USERS], negs)
            if not self.cfg.use_id:
                grads = grads[1:]  # the ID view is off: its rows carry no gradient
            factors = dpsgd.clip_factors(grads, clip)
            if self.cfg.use_id:
                scaled = (grads[0] * factors[:, None, None]).reshape(-1, self.cfg.dim)
                out[0].index_add_(0, at.reshape(-1), scaled)
            for total, g in zip(out[-2:], grads[-2:], strict=True):
                total += torch.tensordot(factors, g, dims=1)
        return out


def _padded_histories(rows: sp.csr_matrix, users: np.ndarray) -> tuple[torch.Tensor, ...]:
    """The users' items as ``(users, longest)`` indices (padding: item 0) and a mask."""
    lengths = np.diff(rows.indptr)[users]
    width = max(int(lengths.max(initial=0)), 1)
    hist = np.zeros((len(users), width), dtype=np.int64)
    mask = np.zeros((len(users), width), dtype=bool)
    for j, u in enumerate(users):
        items = rows.indices[rows.indptr[u] : rows.indptr[u + 1]]
        hist[j, : len(items)] = items
        mask[j, : len(items)] = True
    return torch.from_numpy(hist), torch.from_numpy(mask)
