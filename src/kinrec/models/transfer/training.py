"""kinformer's training: the fusion network and LightGCN propagation trained with sampled
softmax (plus the alignment and layer-contrast losses), early-stopped on validation, and
the inference arrays computed from the trained parameters (:class:`TransferTraining`).
The losses and the item representation are described in :mod:`kinrec.models.transfer`;
what a step sees is :mod:`kinrec.models.transfer.propagation`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kinrec.distributed import data_parallel
from kinrec.models.transfer.config import TransferConfig
from kinrec.models.transfer.network import VIEWS, FusionNetwork, info_nce
from kinrec.models.transfer.propagation import (
    CachedPropagation,
    Graph,
    Propagation,
    make_propagation,
)
from kinrec.training.loop import train_epochs


class TransferTraining:
    """Training, mixed into :class:`~kinrec.models.transfer.model.TransferRecommender`.

    ``_net``: the fusion network; ``item_degree``: the items' training interaction counts;
    ``item_final`` / ``user_final``: the item and user sides of the tower's score;
    ``item_layers``: the items' propagated layers (what a folded-in user is summed from);
    ``item_content``: the items' content-only vectors; ``gate_weights``: the fusion gate's
    weights per item and view (:meth:`_refresh` sets them all).
    """

    _net: FusionNetwork
    item_degree: np.ndarray | None
    item_final: np.ndarray | None
    user_final: np.ndarray | None
    item_layers: np.ndarray | None
    item_content: np.ndarray | None
    gate_weights: np.ndarray | None

    def _train(self, train, validator, progress, rng: np.random.Generator) -> None:
        cfg: TransferConfig = self.config
        content = self.content
        n_users, n_items = train.n_users, train.n_items
        graph = Graph(self.seen, cfg.n_layers)
        di = graph.item_degree
        self.item_degree = di
        text = torch.from_numpy(content.text)
        has_entity = np.diff(content.entities.indptr) > 0
        base_available = np.stack([di > 0, content.has_text, has_entity], axis=1)
        base_available &= np.array([cfg.use_id, cfg.use_text, cfg.use_kg])[None, :]
        net = FusionNetwork(cfg, n_items, content.text, content.entities.shape[1], n_users)
        self._net = net
        coo = self.seen.tocoo()
        pairs_u, pairs_i = coo.row.astype(np.int64), coo.col.astype(np.int64)
        n_pairs = len(pairs_u)
        interacted = di > 0
        warm = np.flatnonzero(interacted)
        prop = make_propagation(cfg, net, graph, text, content.entities, base_available)
        batch_size = cfg.batch_size
        if cfg.max_steps_per_epoch:
            batch_size = max(batch_size, -(-n_pairs // cfg.max_steps_per_epoch))
        self.fit_info["batch_size"] = batch_size
        opt = prop.optimiser()
        self.fit_info["propagation"] = prop.name
        use_align = cfg.align_weight > 0 and cfg.use_id and (cfg.use_text or cfg.use_kg)

        dp = data_parallel.current()
        params = [p for group in opt.param_groups for p in group["params"]]

        def step_loss(idx, negs, available, content_only, whole=None) -> torch.Tensor:
            """The loss of the pairs ``idx`` against the shared negatives ``negs``, plus the
            in-batch terms (alignment, layer contrast) over the batch's items and users.

            In a data-parallel job ``whole`` is the batch and ``idx`` this worker's share of
            it; the result is then this worker's share of the batch's loss: its rows' terms
            summed and divided by the batch size, and the in-batch terms of its share of
            the anchors, each against all of the batch's. The workers' shares add up to the
            one-process loss of the batch, in-batch terms included."""
            batch_rows = idx if whole is None else whole
            bu, bi = pairs_u[idx], pairs_i[idx]
            align_at = (
                np.unique(pairs_i[batch_rows])[: min(1024, len(batch_rows))] if use_align else None
            )
            cl = cfg.cl_weight > 0
            cl_users = np.unique(pairs_u[batch_rows]) if cl else None
            cl_items = np.unique(pairs_i[batch_rows]) if cl else None
            rows = np.union1d(bi, negs)
            if whole is not None and use_align:  # the batch's anchors, not only this worker's
                rows = np.union1d(rows, align_at)
            if whole is not None and cl:
                rows = np.union1d(rows, cl_items)
            step_users = bu if whole is None or not cl else np.concatenate([bu, cl_users])
            batch = prop.step(step_users, rows, available, content_only)

            def anchors(n: int) -> np.ndarray | None:
                return None if whole is None else dp.shard(np.arange(n))

            cos = cfg.similarity == "cosine"
            # 1/temperature is folded into the user side, so the (batch x negatives)
            # logits are never rescaled; the loss is softmax cross-entropy with the
            # positive in front, written without materialising the concatenation.
            users = batch.users[: len(bu)]
            pi = batch.items[batch.positions(bi)]
            ni = batch.items[batch.positions(negs)]
            u = F.normalize(users, dim=-1) / cfg.temperature if cos else users
            pi = F.normalize(pi, dim=-1) if cos else pi
            ni = F.normalize(ni, dim=-1) if cos else ni
            pos = (u * pi).sum(-1)
            negative = torch.logsumexp(u @ ni.T, dim=1)
            terms = torch.logaddexp(pos, negative) - pos
            loss = terms.mean() if whole is None else terms.sum() / len(whole)
            if use_align:
                at = batch.positions(align_at)
                content_view = batch.views["text"][at] + batch.views["kg"][at]
                loss = loss + cfg.align_weight * info_nce(
                    batch.views["id"][at], content_view, cfg.temperature, anchors(len(at))
                )
            if cl:
                if whole is None:
                    ub = np.unique(bu, return_index=True)[1]
                else:
                    ub = len(bu) + np.arange(len(cl_users))
                ib = batch.positions(cl_items)
                loss = loss + cfg.cl_weight * (
                    info_nce(
                        batch.users[ub], batch.layer1[ub], cfg.cl_temperature, anchors(len(ub))
                    )
                    + info_nce(batch.items[ib], batch.x[ib], cfg.cl_temperature, anchors(len(ib)))
                )
            return loss

        def run_epoch(epoch: int) -> float:
            net.train()
            perm = rng.permutation(n_pairs)
            total, steps = 0.0, 0
            for start in range(0, n_pairs, batch_size):
                idx = perm[start : start + batch_size]
                available = base_available.copy()
                content_only = ~interacted
                if cfg.id_dropout > 0 and cfg.use_id:
                    drop = rng.random(n_items) < cfg.id_dropout
                    # keep at least one other view for dropped items
                    drop &= available[:, 1:].any(axis=1)
                    available[drop, 0] = False
                    content_only = content_only | drop
                # Negatives come from items that have interactions: an item nobody could have
                # interacted with yet (not in the training data) is not evidence of dislike.
                negs = warm[rng.integers(0, len(warm), cfg.n_negatives)]
                whole = None
                if dp is not None:  # this worker's share of the batch (same negatives)
                    whole, idx = idx, dp.shard(idx)
                opt.zero_grad()
                if len(idx):  # a worker's share of a last, tiny batch can be empty
                    loss = step_loss(idx, negs, available, content_only, whole)
                    loss.backward()
                    total += loss.item()
                    steps += 1 if dp is None or dp.leader else 0
                if dp is not None:  # each worker's loss is its share of the batch's: sum
                    dp.reduce_gradients(params, 1, 1)
                opt.step()
                prop.after_step()
            if dp is not None:
                total, steps = dp.sum(total, steps)  # the batches' losses, the batches
            self._refresh(prop, base_available)
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
            max_seconds=cfg.max_train_seconds,
            eval_every=cfg.eval_every,
            progress=progress,
            phase=self.name,
        )
        self.fit_info.update(result.fit_info())
        if isinstance(prop, CachedPropagation):
            self.fit_info["cache_refreshes"] = prop.refreshes
        self.fit_info["trainable_parameters"] = sum(p.numel() for p in net.parameters())
        self.fit_info["gate_mean"] = dict(
            zip(VIEWS, np.round(self.gate_weights.mean(axis=0), 4).tolist(), strict=True)
        )

    @torch.no_grad()
    def _refresh(self, prop: Propagation, available: np.ndarray) -> None:
        """Recompute the inference matrices from the current parameters (no noise, no dropout)."""
        self._net.eval()
        x, views, users, items, item_layers = prop.full(available)
        items = torch.where(torch.from_numpy(self.is_untrained)[:, None], x, items)
        # Layers 0..L-1 of items are what a folded-in user's layers 1..L are summed from.
        self.item_layers = torch.stack(item_layers[: self.config.n_layers]).numpy().copy()
        self.item_final = self._finish(items.numpy())
        self.user_final = self._finish(users.numpy())
        self._set_view_arrays(views, available, prop.text, prop.entities)

    @torch.no_grad()
    def _set_view_arrays(self, views, available: np.ndarray, text, entities) -> None:
        """The fusion gate's weights per item and view, and the content-only item vectors,
        from the network's current parameters (``views``: its views of every item)."""
        net = self._net
        avail_t = torch.from_numpy(available)
        logits = net.gate(torch.cat([views[v] for v in VIEWS], dim=1)).masked_fill(~avail_t, -1e9)
        # items without any usable view have no gate (their weights are 0, not uniform)
        has_view = avail_t.any(dim=1, keepdim=True)
        self.gate_weights = (torch.softmax(logits, dim=-1) * has_view).numpy()
        content_only = avail_t.clone()
        content_only[:, 0] = False
        self.item_content = self._finish(net(text, entities, content_only)[0].numpy())

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        if self.config.similarity == "cosine":
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)
