"""Summing gradients across data-parallel workers: embedding tables travel as the rows that
carry gradient, the other parameters in one dense all-reduce; both give the dense sum.

A real gloo process group of 2 or 3 processes on 127.0.0.1 (no Ray): each process builds
every rank's gradients from per-rank seeds, so it can check its result against the weighted
sum of all of them; the results come back to this process as files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from kinrec.distributed import data_parallel

# name: (rows, columns, rows touched per rank or None for a dense gradient)
SHAPES = {
    "items": (5000, 8, 40),  # overlapping and disjoint rows, the row path
    "users": (2048, 4, 30),  # no gradient on rank 1
    "unused": (1500, 3, 0),  # no gradient anywhere: stays None
    "crowded": (1200, 4, 500),  # most rows touched: the dense path
    "weight": (7, 5, None),
    "bias": (5, None, None),  # no gradient on rank 0
}


def _locals(world: int) -> list[int]:
    return [3, 2, 2][:world]


def _grads(rank: int, step: int) -> dict[str, torch.Tensor | None]:
    """Rank ``rank``'s gradients at ``step`` (deterministic)."""
    rng = np.random.default_rng(1000 * step + rank)
    out: dict[str, torch.Tensor | None] = {}
    for name, (rows, cols, touched) in SHAPES.items():
        if (name == "users" and rank == 1) or (name == "bias" and rank == 0) or touched == 0:
            out[name] = None
            continue
        shape = (rows,) if cols is None else (rows, cols)
        values = rng.standard_normal(shape).astype(np.float32)
        if touched is not None:
            shared = np.arange(10)  # touched on every rank
            own = 100 + 50 * rank + np.arange(10)  # this rank only
            drawn = rng.choice(rows, touched - 20, replace=False)
            keep = np.zeros(rows, dtype=bool)
            keep[np.concatenate([shared, own, drawn])] = True
            values[~keep] = 0.0
            values[shared[0], 0] = 0.0  # a touched row with a zero entry
        out[name] = torch.from_numpy(values)
    return out


def _expected(world: int, step: int) -> dict[str, np.ndarray | None]:
    locals_ = _locals(world)
    total = sum(locals_)
    every = [_grads(r, step) for r in range(world)]
    out: dict[str, np.ndarray | None] = {}
    for name in SHAPES:
        got = [(g[name], n) for g, n in zip(every, locals_, strict=True) if g[name] is not None]
        out[name] = (
            sum(g.double().numpy() * (n / total) for g, n in got) if got else None  # type: ignore[misc]
        )
    return out


def _params() -> dict[str, torch.nn.Parameter]:
    torch.manual_seed(0)
    out = {}
    for name, (rows, cols, _) in SHAPES.items():
        shape = (rows,) if cols is None else (rows, cols)
        out[name] = torch.nn.Parameter(torch.randn(shape))
    return out


def _reduce(rep: data_parallel.Replicas, params: dict, step: int) -> list[str]:
    """Set this rank's gradients, reduce them; the tables that took the row path."""
    for name, g in _grads(rep.rank, step).items():
        params[name].grad = None if g is None else g.clone()
    taken: list[str] = []
    choose = rep._sparse_tables

    def spy(ps):
        chosen = choose(ps)
        taken.extend(name for i, name in enumerate(params) if i in chosen)
        return chosen

    rep._sparse_tables = spy  # type: ignore[method-assign]
    frozen = torch.zeros(3, requires_grad=False)  # not trained: left out
    rep.reduce_gradients(
        [*params.values(), frozen], _locals(rep.world)[rep.rank], sum(_locals(rep.world))
    )
    del rep._sparse_tables
    return taken


def _grads_of(params: dict) -> dict[str, torch.Tensor | None]:
    return {k: None if p.grad is None else p.grad.clone() for k, p in params.items()}


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        rep = data_parallel.Replicas(rank, world)
        result: dict = {}
        params = _params()
        result["paths"] = _reduce(rep, params, step=0)
        result["sparse"] = _grads_of(params)
        before = data_parallel.SPARSE_MIN_ROWS
        data_parallel.SPARSE_MIN_ROWS = 10**9  # every table through the dense all-reduce
        try:
            result["dense_paths"] = _reduce(rep, params, step=0)
            result["dense"] = _grads_of(params)
        finally:
            data_parallel.SPARSE_MIN_ROWS = before
        # a few Adam steps: identical gradients keep identical parameters and states
        params = _params()
        opt = torch.optim.Adam(params.values(), lr=0.01)
        for step in range(1, 4):
            opt.zero_grad(set_to_none=True)
            _reduce(rep, params, step)
            result[f"grads{step}"] = _grads_of(params)
            opt.step()
        result["params"] = {k: p.detach().clone() for k, p in params.items()}
        result["adam"] = {
            k: {s: v.clone() for s, v in opt.state[p].items()} for k, p in params.items()
        }
        torch.save(result, Path(folder) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(got: torch.Tensor | None, want: np.ndarray | None, what: str) -> None:
    if want is None:
        assert got is None, what
        return
    assert got is not None, what
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-6, atol=1e-7, err_msg=what)


@pytest.mark.parametrize("world", [2, 3])
def test_row_path_gives_the_dense_sum_on_every_worker(world: int, tmp_path: Path) -> None:
    torch.multiprocessing.spawn(
        _worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True
    )
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    want = _expected(world, step=0)
    for r, res in enumerate(results):
        # the large, little-touched tables take the row path; a crowded one stays dense
        assert res["paths"] == ["items", "users", "unused"], r
        assert res["dense_paths"] == [], r
        for name in SHAPES:
            _close(res["sparse"][name], want[name], f"row path {name} rank {r}")
            _close(res["dense"][name], want[name], f"dense path {name} rank {r}")
        for step in range(1, 4):
            step_want = _expected(world, step)
            for name in SHAPES:
                _close(res[f"grads{step}"][name], step_want[name], f"step {step} {name}")
    first = results[0]
    for res in results[1:]:  # bit-identical across workers: gradients, parameters, Adam
        for key in ["sparse", "dense", "grads1", "grads2", "grads3", "params"]:
            for name in SHAPES:
                a, b = first[key][name], res[key][name]
                assert (a is None) == (b is None), (key, name)
                if a is not None:
                    assert torch.equal(a, b), (key, name)
        for name in SHAPES:
            assert first["adam"][name].keys() == res["adam"][name].keys()
            for state, value in first["adam"][name].items():
                assert torch.equal(value, res["adam"][name][state]), (name, state)
    # parameters with no gradient anywhere were skipped by Adam
    assert first["adam"]["unused"] == {}
    assert torch.equal(first["params"]["unused"], _params()["unused"])
