"""DP-SGD with users as the privacy unit, and its accounting with the Gaussian releases.

A model trained by gradient with ``dp_epsilon`` set (kinformer's tower) takes steps of
DP-SGD (Abadi et al. 2016) where the unit of a per-example gradient is a **user**: each step

1. samples users independently with probability ``q`` (Poisson sampling,
   :func:`poisson_users`), so that the subsampled Gaussian's accounting applies;
2. computes each sampled user's gradient of *their own* loss (a loss that reads no other
   user's rows: the model must be built so; kinformer's private tower has no propagation over
   the user-item graph), and scales it to L2 norm at most ``clip`` (:func:`clip_factors`);
3. sums the clipped gradients, adds Gaussian noise of standard deviation
   ``noise_multiplier * clip`` to every coordinate of every parameter (:func:`add_noise`),
   and divides by the expected number of users in a step, ``q * n_users``.

Adding or removing one user changes the sum of one step by at most ``clip``, whatever the
others' data: each step is a subsampled Gaussian mechanism with noise multiplier ``z``.

Accounting (:func:`epsilon_spent`, :func:`calibrate`): the PRV accountant of Opacus
(Gopi, Lee & Wutschitz 2021) composes the model's other releases (Gaussian mechanisms, each
entered as one step at sample rate 1 with noise multiplier ``1 / mu``) with the ``steps``
DP-SGD steps, and gives the ε reached at δ. :func:`calibrate` finds the smallest noise
multiplier that keeps the whole model within its (ε, δ): the Gaussian releases are planned
first (their share of the budget, :func:`kinrec.privacy.dp.plan`), the DP-SGD steps take
what is left. The number of steps, ``q`` and ``clip`` are fixed before training (from the
configuration and the number of training users), never from the data's content.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq

from kinrec.privacy.dp import Release

ACCOUNTANT = (
    "Opacus PRV accountant (Gopi, Lee & Wutschitz 2021): the Gaussian releases as one step "
    "each at sample rate 1, composed with the DP-SGD steps (Poisson-subsampled Gaussian)"
)


@dataclass(frozen=True)
class SGDPlan:
    """The DP-SGD mechanism: per step, users sampled with probability ``sample_rate``, each
    user's gradient clipped to L2 norm ``clip``, noise ``noise_multiplier * clip`` added."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    clip: float

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.clip

    def describe(self) -> dict[str, Any]:
        return {
            "mechanism": "DP-SGD (Poisson-subsampled Gaussian), users as the unit",
            **asdict(self),
            "sensitivity": self.clip,
            "norm": "L2 norm of one user's gradient of their own loss, clipped to clip",
        }


def _history(releases: Sequence[Release], sgd: SGDPlan | None) -> list[tuple[float, float, int]]:
    history = [(1.0 / r.mu, 1.0, 1) for r in releases]
    if sgd is not None and sgd.steps > 0:
        history.append((sgd.noise_multiplier, sgd.sample_rate, sgd.steps))
    return history


def epsilon_spent(releases: Sequence[Release], sgd: SGDPlan | None, delta: float) -> float:
    """The ε at ``delta`` of the Gaussian ``releases`` composed with the DP-SGD steps."""
    from opacus.accountants import PRVAccountant

    history = _history(releases, sgd)
    if not history:
        return 0.0
    accountant = PRVAccountant()
    accountant.history = history
    with warnings.catch_warnings():
        # sample rate 1: log(1 - q) = -inf inside, harmless; the RDP bound PRV uses only to
        # size its grid may ask for larger orders ("Optimal order is the largest alpha")
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(accountant.get_epsilon(delta=delta))


def calibrate(
    epsilon: float,
    delta: float,
    releases: Sequence[Release],
    sample_rate: float,
    steps: int,
    clip: float,
) -> SGDPlan:
    """The DP-SGD plan with the smallest noise multiplier (to 0.1%) whose steps, composed
    with ``releases``, stay within (``epsilon``, ``delta``)."""
    if not 0 < sample_rate <= 1 or steps < 1:
        raise ValueError(f"need 0 < sample_rate <= 1 and steps >= 1, got {sample_rate}, {steps}")
    if epsilon_spent(releases, None, delta) >= epsilon:
        raise ValueError(
            f"the Gaussian releases alone spend epsilon >= {epsilon}: no budget is left for "
            "DP-SGD (raise the tower's share of the budget)"
        )

    def excess(log_z: float) -> float:
        plan = SGDPlan(math.exp(log_z), sample_rate, steps, clip)
        return epsilon_spent(releases, plan, delta) - epsilon

    low, high = math.log(0.3), math.log(2.0)
    while excess(low) < 0 and low > math.log(1e-3):
        low -= 1.0
    while excess(high) > 0:
        high += 1.0
        if high > math.log(1e4):
            raise ValueError("no noise multiplier below 1e4 reaches the budget")
    log_z = brentq(excess, low, high, xtol=1e-3)
    z = math.exp(log_z) * 1.001  # brentq's end is within xtol on either side: stay inside
    return SGDPlan(z, sample_rate, steps, clip)


def poisson_users(n_users: int, sample_rate: float, rng: np.random.Generator) -> np.ndarray:
    """One step's users: each included independently with probability ``sample_rate``."""
    return np.flatnonzero(rng.random(n_users) < sample_rate)


def clip_factors(grads: Sequence[torch.Tensor], clip: float) -> torch.Tensor:
    """Per-user scale factors ``min(1, clip / ||g_u||)`` of per-user gradients (each tensor's
    first dimension is the user; the norm is over all of one user's tensors together)."""
    squared = sum(g.reshape(len(g), -1).pow(2).sum(dim=1) for g in grads)
    return torch.clamp(clip / (squared.sqrt() + 1e-12), max=1.0)


def add_noise(tensors: Sequence[torch.Tensor], std: float, generator: torch.Generator) -> None:
    """Add ``N(0, std^2)`` to every coordinate of every tensor, in place."""
    for t in tensors:
        t.add_(torch.randn(t.shape, generator=generator, dtype=t.dtype) * std)
