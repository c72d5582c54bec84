"""Item blocks as Ray tasks: the sparse linear solver's passes (each item's neighbours, then
each block of items' ``k x k`` systems; :mod:`kinrec.models.sparse_linear`) spread over a
Ray cluster.

Inside :func:`on_ray`, the solver's blocks are submitted as tasks of one CPU each; what
every block reads (the interaction rows of the Gram matrix, the neighbour lists) is put in
Ray's object store once, and each task returns its block's results, which this process
writes in place, in order. At most ``in_flight`` tasks (default: twice the cluster's CPUs)
are outstanding, so the results held at once stay a few blocks. Outside it, the blocks run
in this process's threads as before; the weights are the same either way (tested).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

_active = False


def active() -> bool:
    """Whether item blocks go to the connected Ray cluster."""
    return _active


@contextmanager
def on_ray() -> Iterator[None]:
    """Send item blocks to the connected Ray cluster inside the block
    (:func:`kinrec.distributed.cluster.connect` first)."""
    from kinrec.distributed.cluster import ray_module

    global _active
    if not ray_module().is_initialized():
        raise RuntimeError("not connected to a Ray cluster (kinrec.distributed.cluster.connect)")
    before, _active = _active, True
    try:
        yield
    finally:
        _active = before


def _run(block: Callable, shared: tuple, start: int) -> Any:
    return block(*shared, start)


def map_blocks(
    block: Callable, shared: tuple, starts: Sequence[int], in_flight: int | None = None
) -> Iterator[Any]:
    """``block(*shared, start)`` for every start as Ray tasks; yields the results in order."""
    import ray

    run = ray.remote(num_cpus=1)(_run)
    ref = ray.put(shared)
    if in_flight is None:
        in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: deque = deque()
    todo = iter(starts)
    for start in todo:
        pending.append(run.remote(block, ref, start))
        if len(pending) >= in_flight:
            break
    while pending:
        result = ray.get(pending.popleft())
        for start in todo:
            pending.append(run.remote(block, ref, start))
            break
        yield result
