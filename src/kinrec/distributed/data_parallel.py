"""Data-parallel gradient steps among the workers of one training job.

Every worker runs the same fit with the same seed, so each draws the same batches, negatives
and permutations. Within a step, a worker computes the loss of its share of the batch
(:meth:`Replicas.shard`: rows ``rank, rank + world, ...``) and the gradients are summed
across workers, each weighted by its share of the rows (:meth:`Replicas.reduce_gradients`),
before the optimiser steps: for a loss that is a mean over the batch's rows this is the
full batch's gradient, so the workers keep identical parameters and optimiser states and
the result is the single-process one up to the order of floating-point sums. A loss with
in-batch terms (kinformer's alignment and layer contrast, each anchor against the whole
batch) is computed by each worker as its share of the batch's loss and summed with weight 1.
Random draws (negatives, dropout masks, noise) are made for the whole batch on every worker
before its share is taken, so every worker sees the draws one process would.

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

SPARSE_MIN_ROWS = 1024
"""A 2-D parameter with at least this many rows (an embedding table) is summed across
workers from the rows that carry gradient (:meth:`Replicas.reduce_gradients`)."""

SPARSE_MAX_FILL = 0.5
"""The row path is taken while ``world x`` the largest worker's row count stays under this
fraction of the table's rows; beyond it the padded rows would move about as much as the
dense all-reduce of the table."""


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
        total``, the same on every worker (``local = total = 1`` when each worker's loss is
        already its share of the batch's). A parameter that got no gradient on any worker
        keeps none (the optimiser skips it, as in one process); one that got a gradient on
        some workers only counts zero for the others.

        Most parameters travel in one all-reduce of one flat buffer. An embedding table (a
        2-D parameter of at least :data:`SPARSE_MIN_ROWS`, 1024, rows) is only touched in a few
        rows per step, so summing it densely would move the whole table every step: instead
        each worker sends only its rows that carry gradient (their indices and values,
        gathered by every worker and added into a dense gradient), so a step's traffic
        follows the rows touched, not the table size. The workers first exchange how many
        rows each has; a table takes this path when every worker's rows, padded to the
        largest count (gloo gathers equal sizes), stay under :data:`SPARSE_MAX_FILL` of its
        rows (``world x max rows < 0.5 x rows``), else it joins the dense all-reduce. Both
        paths give the same sum up to float rounding; every worker adds the gathered rows in
        rank order, so all workers get identical gradients (and optimiser states)."""
        import torch.distributed as dist

        params = [p for p in parameters if p.requires_grad]
        scale = local / max(total, 1)
        sparse = self._sparse_tables(params) if self.world > 1 else {}
        grads = [
            p.grad if p.grad is not None else torch.zeros_like(p)
            for i, p in enumerate(params)
            if i not in sparse
        ]
        present = torch.tensor([float(p.grad is not None) for p in params])
        flat = torch.cat([*(g.reshape(-1) * scale for g in grads), present])
        dist.all_reduce(flat)
        had = flat[-len(params) :].tolist() if params else []
        offset = 0
        for i, p in enumerate(params):
            if i in sparse:
                continue
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone() if had[i] > 0 else None
            offset += n
        if sparse:
            summed = self._gather_rows(params, sparse, scale)
            for i, p in enumerate(params):
                if i in sparse:
                    p.grad = summed[i] if had[i] > 0 else None

    def _sparse_tables(
        self, params: list[torch.Tensor]
    ) -> dict[int, tuple[torch.Tensor, list[int]]]:
        """The tables (by position in ``params``) that take the row path: for each, this
        worker's nonzero rows and every worker's row count (one all-gather for all tables)."""
        import torch.distributed as dist

        tables = [
            i
            for i, p in enumerate(params)
            if p.dim() == 2 and p.shape[0] >= SPARSE_MIN_ROWS and p.shape[1] > 0
        ]
        if not tables:
            return {}
        rows = {}
        for i in tables:
            g = params[i].grad
            rows[i] = (
                g.abs().amax(dim=1).nonzero().squeeze(1)  # NaN rows count too
                if g is not None
                else torch.zeros(0, dtype=torch.int64, device=params[i].device)
            )
        counts = torch.tensor([len(rows[i]) for i in tables], dtype=torch.int64)
        gathered = [torch.empty_like(counts) for _ in range(self.world)]
        dist.all_gather(gathered, counts)
        every = torch.stack(gathered).T.tolist()  # per table, each worker's count
        return {
            i: (rows[i], every[k])
            for k, i in enumerate(tables)
            if self.world * max(every[k]) < SPARSE_MAX_FILL * params[i].shape[0]
        }

    def _gather_rows(
        self,
        params: list[torch.Tensor],
        sparse: dict[int, tuple[torch.Tensor, list[int]]],
        scale: float,
    ) -> dict[int, torch.Tensor]:
        """Each sparse table's gradient summed over workers from their rows: one all-gather
        of the row indices (all tables), one of the scaled rows per gradient dtype, each
        table's part padded to the largest worker's count."""

        order = sorted(sparse)
        index_parts, value_parts = [], {}
        for i in order:
            p, (rows, counts) = params[i], sparse[i]
            most, width = max(counts), p.shape[1]
            index = torch.zeros(most, dtype=torch.int64, device=p.device)
            index[: len(rows)] = rows
            index_parts.append(index)
            values = torch.zeros(most, width, dtype=p.dtype, device=p.device)
            if p.grad is not None and len(rows):
                values[: len(rows)] = p.grad[rows] * scale
            value_parts.setdefault(p.dtype, []).append(values.reshape(-1))
        indices = self._all_gather(torch.cat(index_parts))
        values_of = {
            dtype: self._all_gather(torch.cat(parts)) for dtype, parts in value_parts.items()
        }
        summed: dict[int, torch.Tensor] = {}
        index_at, value_at = 0, dict.fromkeys(value_parts, 0)
        for i in order:
            p, (_, counts) = params[i], sparse[i]
            most, width = max(counts), p.shape[1]
            out = torch.zeros_like(p)
            at = value_at[p.dtype]
            for r, n in enumerate(counts):  # rank order: the same sum on every worker
                if n:
                    rows = indices[r][index_at : index_at + n]
                    values = values_of[p.dtype][r][at : at + n * width].view(n, width)
                    out.index_add_(0, rows, values)
            index_at += most
            value_at[p.dtype] = at + most * width
            summed[i] = out
        return summed

    def _all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        import torch.distributed as dist

        out = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(out, tensor)
        return out

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
