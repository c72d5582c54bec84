"""Data-parallel gradient steps among the workers of one training job.

Every worker runs the same fit with the same seed, so each draws the same batches, negatives
and permutations. Within a step, a worker computes the loss of its share of the batch
(:meth:`Replicas.shard`: rows ``rank, rank + world, ...``) and the gradients are summed
across workers, each weighted by its share of the rows (:meth:`Replicas.reduce_gradients`),
before the optimiser steps: for a loss that is a mean over the batch's rows this is the
full batch's gradient, so the workers keep identical parameters and optimiser states and
the result is the single-process one up to the order of floating-point sums.

Validation runs on the leader (rank 0) only and its score is broadcast
(:meth:`Replicas.agree`), so early stopping takes the same decision everywhere. After the
epochs the other workers stop (:class:`FollowerDone`): the leader finishes the fit (the
one-pass parts, the choices made on validation) and saves the model.

Outside a training job (:func:`current` is None) the models run as before; the hooks are
called from :mod:`kinrec.training.loop` and kinformer's epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class FollowerDone(Exception):
    """Raised on a worker other than the leader when the gradient-trained epochs are over."""


@dataclass
class Replicas:
    """This worker's place in a ``world``-worker data-parallel job (a ``torch.distributed``
    process group is initialised by the caller, e.g. Ray Train)."""

    rank: int
    world: int

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Any) -> Any:
        """This worker's rows of ``batch`` (a numpy array, a tensor or an object with
        ``select(index)``)."""
        n = len(batch)
        index = np.arange(self.rank, n, self.world)
        if isinstance(batch, np.ndarray):
            return batch[index]
        if isinstance(batch, torch.Tensor):
            return batch[torch.from_numpy(index)]
        return batch.select(torch.from_numpy(index))

    def share(self, n: int) -> int:
        """How many of ``n`` rows :meth:`shard` gives this worker."""
        return len(range(self.rank, n, self.world))

    def reduce_gradients(self, parameters: Iterable[torch.Tensor], local: int, total: int) -> None:
        """Replace each parameter's gradient by the sum over workers of ``gradient x local /
        total`` (one all-reduce of one flat buffer). A parameter that got no gradient on any
        worker keeps none (the optimiser skips it, as in one process); one that got a
        gradient on some workers only counts zero for the others."""
        import torch.distributed as dist

        params = [p for p in parameters if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        present = torch.tensor([float(p.grad is not None) for p in params])
        scale = local / max(total, 1)
        flat = torch.cat([*(g.reshape(-1) * scale for g in grads), present])
        dist.all_reduce(flat)
        offset = 0
        for p, had in zip(params, flat[-len(params) :].tolist(), strict=True):
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone() if had > 0 else None
            offset += n

    def sum(self, *values: float) -> list[float]:
        """``values`` summed over workers."""
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def agree(self, value: float) -> float:
        """The leader's ``value``, on every worker."""
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.broadcast(t, src=0)
        return float(t.item())

    def finish_epochs(self) -> None:
        """End of the gradient-trained part: a follower stops here."""
        if not self.leader:
            raise FollowerDone


_current: Replicas | None = None


def current() -> Replicas | None:
    """The running data-parallel job's view for this worker, or None (one process)."""
    return _current


@contextmanager
def replicas(rank: int, world: int) -> Iterator[Replicas]:
    """Run the block as worker ``rank`` of ``world``."""
    global _current
    before, _current = _current, Replicas(rank, world)
    try:
        yield _current
    finally:
        _current = before
