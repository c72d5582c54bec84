"""Mult-VAE (Liang et al., 2018): a variational autoencoder over each user's item row.

The encoder reads the user's L2-normalised interaction row (with input dropout) and gives
the mean and log-variance of a latent code; the decoder maps the code to logits over every
item, trained with the multinomial log-likelihood of the row plus an annealed KL term.

A user is a function of their row, not a learned vector, so a user's scores follow their
history at once: :meth:`MultVAE.score` reads the ``seen`` row and
:meth:`MultVAE.score_history` scores any history without retraining (new users included).
Scoring runs in numpy on exported weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kinrec.data.dataset import Interactions
from kinrec.models import memory
from kinrec.models.base import ProgressCallback, Recommender, Validator
from kinrec.training.loop import (
    IterativeConfig,
    optimize_epoch,
    seeded,
    torch_threads,
    train_module,
)

SCORE_CHUNK = 4096  # users scored per numpy pass


class MultVAEConfig(IterativeConfig):
    """Mult-VAE settings; the defaults are RecBole 1.2.1's except ``batch_size``.

    RecBole's ``latent_dimension`` (128) is the encoder's output, split into the mean and the
    log-variance halves, so the code has ``latent_size`` = 64 dimensions. Each epoch visits
    every user once in batches of ``batch_size`` users. RecBole batches 2,048 *interactions*
    (about 40 steps per epoch on ml-100k); 2,048 users would be one step per epoch there, and
    a patience of 10 such epochs stops one seed in three on an early plateau (test NDCG@10
    0.248 against 0.300), so the default is 256 users per step.
    """

    batch_size: int = Field(256, ge=1, description="users per gradient step")
    hidden_size: int = Field(600, ge=1, description="width of the encoder and decoder layer")
    latent_size: int = Field(64, ge=1, description="dimensions of the latent code")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="input dropout on the user row")
    anneal_cap: float = Field(0.2, ge=0.0, description="largest weight of the KL term")
    anneal_steps: int = Field(
        200_000, ge=0, description="steps over which the KL weight rises to the cap (0: at once)"
    )
    noise_scale: float = Field(
        0.01,
        ge=0.0,
        description="scale of the sampling noise on the code (RecBole: 0.01; the paper: 1.0)",
    )


class _VAE(nn.Module):
    def __init__(self, n_items: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(
            nn.Linear(n_items, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, n_items)
        )
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(
        self, rows: torch.Tensor, draws: _Draws | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, mean and log-variance for ``rows``; ``draws``: the step's input dropout
        and code noise (none: neither, as in scoring)."""
        h = F.normalize(rows)
        if draws is not None and draws.keep is not None:
            h = h * draws.keep / (1 - draws.dropout)
        h = self.encoder(h)
        mu, logvar = h[:, : self.latent], h[:, self.latent :]
        z = mu
        if draws is not None and draws.noise is not None:
            z = mu + draws.noise_scale * draws.noise * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


@dataclass
class _Draws:
    """A step's users and its random draws: the input dropout's keep mask and the code's
    noise, drawn for the whole batch, so that a data-parallel worker's share of the batch
    (:meth:`select`) sees the draws one process would."""

    users: np.ndarray
    keep: torch.Tensor | None
    noise: torch.Tensor | None
    dropout: float
    noise_scale: float

    @classmethod
    def of(cls, users: np.ndarray, n_items: int, latent: int, cfg: MultVAEConfig) -> _Draws:
        n = len(users)
        keep = torch.empty(n, n_items).bernoulli_(1 - cfg.dropout) if cfg.dropout > 0 else None
        noise = torch.randn(n, latent) if cfg.noise_scale > 0 else None
        return cls(users, keep, noise, cfg.dropout, cfg.noise_scale)

    def __len__(self) -> int:
        return len(self.users)

    def select(self, index: torch.Tensor) -> _Draws:
        return _Draws(
            self.users[index.numpy()],
            None if self.keep is None else self.keep[index],
            None if self.noise is None else self.noise[index],
            self.dropout,
            self.noise_scale,
        )


class MultVAE(Recommender):
    """Variational autoencoder with a multinomial likelihood over each user's items."""

    name = "multvae"
    Config = MultVAEConfig

    def __init__(self, config: MultVAEConfig | dict | None = None) -> None:
        super().__init__(config)
        self.weights: dict[str, np.ndarray] = {}

    def _fit(
        self,
        train: Interactions,
        valid: Interactions | None,
        validator: Validator | None,
        progress: ProgressCallback | None,
    ) -> None:
        cfg = self.config
        n = train.n_items
        # dense in the number of items: the first and last layers (with their gradients,
        # Adam's two moments, the best state kept and the exported arrays) and a step's rows
        # (input, normalised, dropped out, logits, log-softmax, and their gradients)
        memory.require(
            f"multvae (fit on {n:,} items)",
            memory.Dense("the item layers", (n, cfg.hidden_size), np.float32, copies=12),
            memory.Dense("a step's user rows", (cfg.batch_size, n), np.float32, copies=10),
            hint="lower batch_size or hidden_size",
        )
        rows = self.seen.astype(np.float32).tocsr()
        active = np.flatnonzero(np.diff(rows.indptr) > 0)
        with torch_threads(cfg.threads), seeded(cfg.seed) as rng:
            module = _VAE(train.n_items, cfg.hidden_size, cfg.latent_size)
            optimizer = torch.optim.Adam(module.parameters(), lr=cfg.learning_rate)
            step = [0]

            def batch_loss(draws: _Draws) -> torch.Tensor:
                x = torch.from_numpy(rows[draws.users].toarray())
                logits, mu, logvar = module(x, draws)
                step[0] += 1
                anneal = cfg.anneal_cap
                if cfg.anneal_steps > 0:
                    anneal = min(cfg.anneal_cap, step[0] / cfg.anneal_steps)
                nll = -(F.log_softmax(logits, dim=1) * x).sum(1).mean()
                kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()
                return nll + anneal * kl

            def run_epoch(epoch: int) -> float:
                module.train()
                order = rng.permutation(active)
                batches = (
                    _Draws.of(order[i : i + cfg.batch_size], n, cfg.latent_size, cfg)
                    for i in range(0, len(order), cfg.batch_size)
                )
                return optimize_epoch(batches, batch_loss, optimizer)

            result = train_module(
                self, module, run_epoch, lambda: self._sync(module), validator, cfg, progress
            )
        self.fit_info.update(result.fit_info())
        self.fit_info["trainable_parameters"] = sum(p.numel() for p in module.parameters())

    def _sync(self, module: _VAE) -> None:
        """Export the module's current weights as numpy arrays for scoring."""
        enc, dec = module.encoder, module.decoder
        layers = {"enc1": enc[0], "enc2": enc[2], "dec1": dec[0], "dec2": dec[2]}
        with torch.no_grad():
            self.weights = {}
            for name, layer in layers.items():
                self.weights[f"{name}.w"] = layer.weight.detach().numpy().T.copy()
                self.weights[f"{name}.b"] = layer.bias.detach().numpy().copy()

    def _decode(self, rows: sp.spmatrix | np.ndarray, items: np.ndarray | None) -> np.ndarray:
        w = self.weights
        x = sp.csr_matrix(rows, dtype=np.float32)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).astype(np.float32)
        x = sp.diags(1.0 / np.maximum(norms.ravel(), 1e-12)) @ x
        h = np.tanh(x @ w["enc1.w"] + w["enc1.b"])
        latent = w["dec1.w"].shape[0]
        mu = h @ w["enc2.w"][:, :latent] + w["enc2.b"][:latent]
        h = np.tanh(mu @ w["dec1.w"] + w["dec1.b"])
        out_w, out_b = w["dec2.w"], w["dec2.b"]
        if items is not None:
            out_w, out_b = out_w[:, items], out_b[items]
        return (h @ out_w + out_b).astype(np.float32)

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        users = np.asarray(users)
        items = None if items is None else np.asarray(items)
        width = self.seen.shape[1] if items is None else len(items)
        # users per pass: each holds a few rows as wide as the scored items (fewer where
        # memory is short; the scores are the same)
        chunk = memory.rows_that_fit(4 * 3 * width, SCORE_CHUNK)
        parts = [
            self._decode(self.seen[users[i : i + chunk]], items)
            for i in range(0, len(users), chunk)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)

    def score_history(self, items: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Scores over all items for a user known only by the items they interacted with."""
        items = np.asarray(items, dtype=np.int64)
        data = np.ones(len(items), np.float32) if weights is None else np.asarray(weights)
        row = sp.csr_matrix(
            (data.astype(np.float32), items, [0, len(items)]), shape=(1, self.seen.shape[1])
        )
        return self._decode(row, None)[0]

    def item_vectors(self) -> np.ndarray | None:
        """The decoder's output weights: one vector per item."""
        return self.weights["dec2.w"].T

    def _state(self) -> dict[str, np.ndarray]:
        return dict(self.weights)

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights = {k: v.astype(np.float32) for k, v in arrays.items()}
