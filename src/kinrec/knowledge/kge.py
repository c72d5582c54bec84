"""Knowledge-graph embeddings: compact PyTorch TransE and RotatE, link-prediction evaluation.

Why not PyKEEN: it would pull a large dependency tree (class-resolver, docdata, pystow, ...)
and a pipeline framework into the library, for two scoring functions we need. Ours is a few
hundred lines of vectorised PyTorch, seeded and deterministic on CPU, and saves as safetensors
+ JSON like every other kinrec artifact.

* TransE (Bordes et al. 2013): ``d(h, r, t) = ||h + r - t||_1``.
* RotatE (Sun et al. 2019): entities in ``C^dim``, relations unit rotations,
  ``d = sum_k |h_k r_k - t_k|``.

Training corrupts the head or the tail (half of the triples each) with uniformly drawn
entities, and minimises either RotatE's self-adversarial negative-sampling loss
``-log s(g - d+) - sum_i p_i log s(d_i - g)`` (``p`` = softmax of ``alpha (g - d_i)``, not
back-propagated) or the margin ranking loss ``max(0, m + d+ - d-)``, with Adam.

Evaluation is filtered link prediction: each held-out ``(h, r, t)`` ranks ``t`` among all
entities as tail of ``(h, r, ?)`` and ``h`` among all as head of ``(?, r, t)``, other known
true triples removed from the candidates; ties count half (the "realistic" rank). The random
baseline is the exact expectation of a uniformly random ranking over the same candidates.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from safetensors.numpy import load_file, save_file

from kinrec.data.dataset import IdMap
from kinrec.knowledge.graph import KnowledgeGraph

ProgressCallback = Callable[[str, int, int, dict[str, float]], None]
"""``(phase, step, total, values)``, called after each epoch."""

WEIGHTS = "kge.safetensors"
META = "kge.json"


class KGEConfig(BaseModel):
    """Model, size and training settings of a knowledge-graph embedding.

    ``gamma`` and ``lr`` come from a short sweep on ml-100k's graph at ``dim=64`` (8 epochs:
    gamma 6 beat 12 for both models, lr 1e-2 beat 3e-3); ``dim`` is complex for RotatE.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["transe", "rotate"] = "rotate"
    dim: PositiveInt = 64
    gamma: PositiveFloat = 6.0
    loss: Literal["self_adversarial", "margin"] = "self_adversarial"
    adversarial_temperature: NonNegativeFloat = 1.0
    margin: PositiveFloat = 1.0
    negatives: PositiveInt = 64
    negative_chunk: PositiveInt = 64
    batch_size: PositiveInt = 1024
    epochs: NonNegativeInt = 10
    lr: PositiveFloat = 1e-2
    seed: int = 2026


def split_triples(
    triples: np.ndarray, fraction: float = 0.05, seed: int = 2026, drop_reverse: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the triples for link prediction: ``(train, test)``.

    Test triples whose head, tail or relation would not occur in train go back to train.
    ``drop_reverse`` also removes from train every triple ``(t, *, h)`` that mirrors a test
    triple ``(h, r, t)`` (graphs such as Freebase store both directions), so the held-out fact
    cannot be read off its twin.
    """
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(triples))
    n_test = round(fraction * len(triples))
    test, train = triples[order[:n_test]], triples[order[n_test:]]
    n_ent = int(triples[:, [0, 2]].max()) + 1 if len(triples) else 0
    ent = np.bincount(train[:, [0, 2]].ravel(), minlength=n_ent)
    rel = np.bincount(train[:, 1], minlength=int(triples[:, 1].max(initial=-1)) + 1)
    ok = (ent[test[:, 0]] > 0) & (ent[test[:, 2]] > 0) & (rel[test[:, 1]] > 0)
    train, test = np.concatenate([train, test[~ok]]), test[ok]
    if drop_reverse and len(test):
        pair = train[:, 0] * n_ent + train[:, 2]
        mirrored = np.isin(pair, test[:, 2] * n_ent + test[:, 0])
        train = train[~mirrored]
    return train, test


class KGEmbedding:
    """TransE or RotatE embeddings of a :class:`KnowledgeGraph`'s entities and relations."""

    def __init__(self, config: KGEConfig | dict[str, Any] | None = None) -> None:
        if config is None:
            config = KGEConfig()
        elif isinstance(config, dict):
            config = KGEConfig.model_validate(config)
        self.config = config
        self.entities: IdMap | None = None
        self.relations: IdMap | None = None
        self.n_items = 0
        self.entity: torch.Tensor | None = None
        self.relation: torch.Tensor | None = None
        self.trained: np.ndarray | None = None  # entities that occur in the training triples
        self.fit_info: dict[str, Any] = {}

    @property
    def _range(self) -> float:
        """Uniform init range, also RotatE's phase scale (as in the RotatE reference code)."""
        return (self.config.gamma + 2.0) / self.config.dim

    # ------------------------------------------------------------------ scoring
    # Entity vectors are stored as ``(parts, n_entities, dim)``: one part (TransE) or the real
    # and imaginary parts (RotatE). Every query/candidate tensor carries that leading axis.
    @property
    def _parts(self) -> int:
        return 1 if self.config.model == "transe" else 2

    def _query(self, anchor: torch.Tensor, r: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """Where the missing entity should sit: ``h + r`` / ``h o r`` for tails (``tail``
        True), ``t - r`` / ``t o conj(r)`` for heads; ``anchor`` is ``(parts, batch, dim)``."""
        sign = torch.where(tail, 1.0, -1.0).unsqueeze(-1)
        if self.config.model == "transe":
            return anchor + sign * r
        phase = r / (self._range / math.pi)
        re_r, im_r = torch.cos(phase), sign * torch.sin(phase)
        re_a, im_a = anchor[0], anchor[1]
        return torch.stack([re_a * re_r - im_a * im_r, re_a * im_r + im_a * re_r])

    def _distance(self, query: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Distance between queries and candidates ``(parts, ..., dim)`` (broadcast)."""
        if self.config.model == "transe":
            return (query[0] - cand[0]).abs().sum(-1)
        return torch.hypot(query[0] - cand[0], query[1] - cand[1]).sum(-1)

    def _negative_distances(self, query: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``(batch, negatives)`` distances to uniformly drawn entities.

        Consecutive groups of ``negative_chunk`` queries share their negatives (DGL-KE's
        chunked sampling): a broadcast instead of a gather per query, several times faster.
        """
        k, size = self.config.negatives, self.config.negative_chunk
        parts, n, dim = query.shape
        full = n // size * size
        out = []
        for part, group in ((query[:, :full], size), (query[:, full:], n - full)):
            if not part.shape[1]:
                continue
            groups = part.shape[1] // group
            negatives = torch.randint(len(self.entities), (groups, 1, k), generator=gen)
            dist = self._distance(
                part.reshape(parts, groups, group, 1, dim), self.entity[:, negatives]
            )
            out.append(dist.reshape(-1, k))
        return torch.cat(out)

    def _loss(self, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg = self.config
        h, r, t = batch.unbind(1)
        n = len(batch)
        tail = torch.rand(n, generator=gen) < 0.5
        anchor = torch.where(tail, h, t)
        target = torch.where(tail, t, h)
        query = self._query(self.entity[:, anchor], self.relation[r], tail)
        pos = self._distance(query, self.entity[:, target])
        neg = self._negative_distances(query, gen)
        if cfg.loss == "margin":
            return torch.relu(cfg.margin + pos.unsqueeze(1) - neg).mean()
        weights = torch.softmax(cfg.adversarial_temperature * (cfg.gamma - neg), dim=1).detach()
        pos_loss = -torch.nn.functional.logsigmoid(cfg.gamma - pos).mean()
        neg_loss = -(weights * torch.nn.functional.logsigmoid(neg - cfg.gamma)).sum(1).mean()
        return (pos_loss + neg_loss) / 2

    # ------------------------------------------------------------------ training
    def fit(
        self,
        graph: KnowledgeGraph,
        triples: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
    ) -> Self:
        """Train on ``triples`` (default: all of ``graph.triples``), indices into ``graph``."""
        cfg = self.config
        self.entities, self.relations = graph.entities.copy(), graph.relations.copy()
        self.n_items = graph.n_items
        data = torch.as_tensor(graph.triples if triples is None else triples, dtype=torch.long)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.entity = torch.empty(self._parts, len(self.entities), cfg.dim)
        self.relation = torch.empty(len(self.relations), cfg.dim)
        for weight in (self.entity, self.relation):
            weight.uniform_(-self._range, self._range, generator=gen)
            weight.requires_grad_(True)
        optimizer = torch.optim.Adam([self.entity, self.relation], lr=cfg.lr)
        losses: list[float] = []
        start = time.perf_counter()
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(data), generator=gen)
            total = 0.0
            for lo in range(0, len(data), cfg.batch_size):
                batch = data[order[lo : lo + cfg.batch_size]]
                loss = self._loss(batch, gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            losses.append(total / max(len(data), 1))
            if progress is not None:
                progress("kge", epoch + 1, cfg.epochs, {"loss": losses[-1]})
        self.entity.requires_grad_(False)
        self.relation.requires_grad_(False)
        self.trained = np.zeros(len(self.entities), dtype=bool)
        self.trained[data[:, [0, 2]].numpy().ravel()] = True
        self.fit_info = {
            "train_seconds": time.perf_counter() - start,
            "losses": losses,
            "triples": len(data),
        }
        return self

    # ------------------------------------------------------------------ inference
    def _require_fitted(self) -> None:
        if self.entity is None or self.entities is None:
            raise RuntimeError("KGEmbedding: call fit() or load() first")

    def score(self, heads: np.ndarray, relations: np.ndarray, tails: np.ndarray) -> np.ndarray:
        """Plausibility ``gamma - d(h, r, t)`` of index triples (higher is more plausible)."""
        self._require_fitted()
        h, r, t = (
            torch.as_tensor(np.asarray(x), dtype=torch.long) for x in (heads, relations, tails)
        )
        with torch.no_grad():
            query = self._query(self.entity[:, h], self.relation[r], torch.ones_like(h, dtype=bool))
            return (self.config.gamma - self._distance(query, self.entity[:, t])).numpy()

    def _all_distances(self, query: torch.Tensor) -> torch.Tensor:
        """``(batch, n_entities)`` distances; RotatE in cache-sized candidate chunks."""
        if self.config.model == "transe":
            return torch.cdist(query[0], self.entity[0], p=1)
        n_ent, size = self.entity.shape[1], query.shape[1] * query.shape[2]
        chunk = max(64, 2**19 // size)
        query = query.unsqueeze(2)
        parts = [
            self._distance(query, self.entity[:, lo : lo + chunk].unsqueeze(1))
            for lo in range(0, n_ent, chunk)
        ]
        return torch.cat(parts, dim=1)

    def evaluate(
        self,
        test: np.ndarray,
        known: np.ndarray,
        batch_size: int = 64,
        max_triples: int | None = None,
        seed: int = 0,
    ) -> dict[str, float]:
        """Filtered link prediction on ``test`` (tails and heads), filtering ``known`` triples.

        Returns ``mrr``, ``hits@1``, ``hits@3``, ``hits@10``, ``mean_rank`` and the random
        ranking's expected ``random_mrr`` and ``random_hits@10``, over ``queries`` (2 per
        triple). ``max_triples`` evaluates a seeded sample of the test triples.
        """
        self._require_fitted()
        test = np.asarray(test, dtype=np.int64).reshape(-1, 3)
        if not len(test):
            raise ValueError("no test triples to evaluate")
        if max_triples is not None and len(test) > max_triples:
            pick = np.random.default_rng(seed).choice(len(test), max_triples, replace=False)
            test = test[np.sort(pick)]
        known = np.asarray(known, dtype=np.int64).reshape(-1, 3)
        n_ent, n_rel = len(self.entities), len(self.relations)
        ranks, candidates = [], []
        for tail in (True, False):
            anchor_col, target_col = (0, 2) if tail else (2, 0)
            keys = known[:, anchor_col] * n_rel + known[:, 1]
            truth = sp.csr_matrix(
                (np.ones(len(known), dtype=bool), (keys, known[:, target_col])),
                shape=(n_ent * n_rel, n_ent),
            )
            for lo in range(0, len(test), batch_size):
                part = test[lo : lo + batch_size]
                anchor = torch.as_tensor(part[:, anchor_col])
                target = torch.as_tensor(part[:, target_col])
                flags = torch.full((len(part),), tail)
                with torch.no_grad():
                    query = self._query(
                        self.entity[:, anchor], self.relation[torch.as_tensor(part[:, 1])], flags
                    )
                    dist = self._all_distances(query)
                rows = np.arange(len(part))
                mask = truth[part[:, anchor_col] * n_rel + part[:, 1]].toarray()
                mask[rows, part[:, target_col]] = False
                dist[torch.as_tensor(mask)] = math.inf
                own = dist[torch.arange(len(part)), target].unsqueeze(1)
                better = (dist < own).sum(1)
                ties = (dist == own).sum(1) - 1
                ranks.append((1 + better + ties / 2).double().numpy())
                candidates.append(n_ent - mask.sum(1))
        rank = np.concatenate(ranks)
        cand = np.concatenate(candidates)
        harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n_ent + 1))])[cand]
        return {
            "mrr": float(np.mean(1.0 / rank)),
            "hits@1": float(np.mean(rank <= 1)),
            "hits@3": float(np.mean(rank <= 3)),
            "hits@10": float(np.mean(rank <= 10)),
            "mean_rank": float(np.mean(rank)),
            "random_mrr": float(np.mean(harmonic / cand)),
            "random_hits@10": float(np.mean(np.minimum(10, cand) / cand)),
            "queries": len(rank),
        }

    def entity_embeddings(self) -> np.ndarray:
        """All entity vectors, ``(n_entities, dim)`` (RotatE: real parts, then imaginary)."""
        self._require_fitted()
        parts, n, dim = self.entity.shape
        return self.entity.permute(1, 0, 2).reshape(n, parts * dim).numpy().copy()

    def item_embeddings(self, zero_untrained: bool = True) -> np.ndarray:
        """Item vectors in the graph's item order (items are its first ``n_items`` nodes).

        Items absent from the training triples only have their random initial vectors; with
        ``zero_untrained`` their rows are zero instead, so they look similar to nothing.
        """
        vectors = self.entity_embeddings()[: self.n_items]
        if zero_untrained:
            vectors[~self.trained[: self.n_items]] = 0.0
        return vectors

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``kge.safetensors`` (arrays), ``kge.json`` (config, vocabularies) in ``path``."""
        self._require_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "entity": self.entity.numpy(),
                "relation": self.relation.numpy(),
                "trained": self.trained.astype(np.uint8),
            },
            str(path / WEIGHTS),
        )
        meta = {
            "config": self.config.model_dump(mode="json"),
            "n_items": self.n_items,
            "entities": self.entities.ids(),
            "relations": self.relations.ids(),
            "fit_info": self.fit_info,
        }
        (path / META).write_text(json.dumps(meta))
        return path

    @classmethod
    def load(cls, path: str | Path) -> KGEmbedding:
        """Load what :meth:`save` wrote."""
        path = Path(path)
        meta = json.loads((path / META).read_text())
        model = cls(KGEConfig.model_validate(meta["config"]))
        arrays = load_file(str(path / WEIGHTS))
        model.entity = torch.from_numpy(arrays["entity"])
        model.relation = torch.from_numpy(arrays["relation"])
        model.trained = arrays["trained"].astype(bool)
        model.entities, model.relations = IdMap(meta["entities"]), IdMap(meta["relations"])
        model.n_items = int(meta["n_items"])
        model.fit_info = meta.get("fit_info", {})
        return model
