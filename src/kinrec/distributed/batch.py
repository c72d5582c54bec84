"""Batch recommendations: the top ``k`` items of every trained user, into Parquet or the store.

``kinrec recommend --all-users --out PATH`` (and :func:`recommend_all`) ranks every user the
model was trained on, exactly as ``kinrec recommend --user`` (:meth:`Recommender.recommend`)
ranks one: the model's scores, the user's training items left out unless told otherwise,
the same top-``k`` selection (:func:`recommend_block`). Users go in blocks of
``batch_users``; each block is written as soon as it is computed, so memory stays bounded by
a block whatever the number of users:

* ``PATH.parquet``: columns ``user``, ``rank`` (1 = best), ``item``, ``score``; one row group
  per block, written to a temporary file renamed into place at the end.
* a store URL (``sqlite:///...``, ``postgresql+psycopg://...``): table
  ``batch_recommendations`` (``model``, ``user``, ``rank``, ``item``, ``score``,
  ``created``). The rows of the model (the model folder's name) are replaced at the end in
  one transaction; until then readers see the previous run's rows.

Without Ray the blocks are computed in this process. With ``ray_address`` (see
:mod:`kinrec.distributed.cluster`) they are computed by Ray Data actors (one per node by
default, each with the node's CPUs), each of which loads the model once, from the model
folder's bytes shipped through the object store (the folder need not be on shared storage);
the driver writes the blocks, in user order, as they arrive.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kinrec.models.base import ERASED_PREFIX, Recommender
from kinrec.store import schema

TABLE = schema.batch_recommendations.name
COLUMNS = ("user", "rank", "item", "score")
DEFAULT_BATCH_USERS = 4096
"""Most ``users x items`` scores held at once inside a block (128 MiB of float64)."""
STORE_PREFIXES = ("sqlite://", "postgresql://", "postgresql+")
_PENDING = "\x1fpending:"  # a control character no folder name holds (not NUL: PostgreSQL)
ACTOR_START_S = 600
"""Seconds Ray Data waits for all its actors to start (the model loaded in each)."""


# ------------------------------------------------------------------------------ ranking
def recommend_block(
    model: Recommender, users: np.ndarray, k: int, exclude_seen: bool = True
) -> dict[str, np.ndarray]:
    """:meth:`Recommender.recommend_many` for a block of user indices, as columns ``user``
    (ids), ``rank`` (1 = best), ``item`` (ids), ``score``: the users in the order given,
    each with its items best first."""
    ids = model.user_map.ids()
    user_col: list[str] = []
    rank_col: list[int] = []
    item_col: list[str] = []
    score_col: list[float] = []
    for uidx, top in model.recommend_many(users, k, exclude_seen):
        user_col.extend([ids[uidx]] * len(top))
        rank_col.extend(range(1, len(top) + 1))
        item_col.extend(s.item_id for s in top)
        score_col.extend(s.score for s in top)
    return {
        "user": np.array(user_col, dtype=object),
        "rank": np.array(rank_col, dtype=np.int32),
        "item": np.array(item_col, dtype=object),
        "score": np.array(score_col, dtype=np.float64),
    }


def ranked_users(model: Recommender) -> np.ndarray:
    """Indices of the users to rank: every trained user but the forgotten (erased) ones."""
    ids = model.user_map.ids()
    return np.array([i for i, u in enumerate(ids) if not u.startswith(ERASED_PREFIX)], np.int64)


def user_blocks(n_users: int, batch_users: int) -> list[tuple[int, int]]:
    """``[start, stop)`` positions of the blocks of ``batch_users`` users."""
    return [(s, min(s + batch_users, n_users)) for s in range(0, n_users, batch_users)]


# ------------------------------------------------------------------------------ outputs
def output_kind(out: str | os.PathLike[str]) -> str:
    """``"parquet"`` or ``"store"`` for ``out``, or a ``ValueError`` naming it."""
    text = str(out)
    if text.startswith(STORE_PREFIXES):
        return "store"
    if text.lower().endswith(".parquet"):
        return "parquet"
    raise ValueError(
        f"--out {text!r}: not a .parquet file nor a store URL; give PATH.parquet or "
        "sqlite:///PATH.db or postgresql+psycopg://..."
    )


def _arrow(block: dict[str, np.ndarray]) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "user": pa.array(block["user"], pa.string()),
            "rank": pa.array(block["rank"], pa.int32()),
            "item": pa.array(block["item"], pa.string()),
            "score": pa.array(block["score"], pa.float64()),
        }
    )


class ParquetSink:
    """Blocks into one Parquet file, a row group each, renamed into place on success."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.writer = pq.ParquetWriter(str(self.tmp), _arrow(_empty()).schema)

    def write(self, block: dict[str, np.ndarray]) -> None:
        if len(block["user"]):
            self.writer.write_table(_arrow(block))

    def commit(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


class StoreSink:
    """Blocks into the ``batch_recommendations`` table, staged under a pending key, one
    short transaction per block; :meth:`commit` swaps them in for ``model`` at once."""

    def __init__(self, url: str, model: str) -> None:
        from sqlalchemy import delete

        from kinrec.store import Store
        from kinrec.store.engine import write_transaction

        self.store = Store(url)
        self.model = model
        self.pending = _PENDING + model
        self.table = schema.batch_recommendations
        self.created = time.time()
        with write_transaction(self.store.engine) as conn:
            self.table.create(conn, checkfirst=True)
            conn.execute(delete(self.table).where(self.table.c.model == self.pending))

    def write(self, block: dict[str, np.ndarray]) -> None:
        from sqlalchemy import insert

        from kinrec.store.engine import execute_many, write_transaction

        names = ("model", "user", "rank", "item", "score", "created")
        rows = [
            (self.pending, u, int(r), i, float(s), self.created)
            for u, r, i, s in zip(
                block["user"], block["rank"], block["item"], block["score"], strict=True
            )
        ]
        with write_transaction(self.store.engine) as conn:
            execute_many(conn, insert(self.table), names, rows)

    def commit(self) -> None:
        from sqlalchemy import delete, update

        from kinrec.store.engine import write_transaction

        table = self.table
        with write_transaction(self.store.engine) as conn:
            conn.execute(delete(table).where(table.c.model == self.model))
            conn.execute(
                update(table).where(table.c.model == self.pending).values(model=self.model)
            )
        self.store.close()

    def abort(self) -> None:
        from sqlalchemy import delete

        from kinrec.store.engine import write_transaction

        try:
            with write_transaction(self.store.engine) as conn:
                conn.execute(delete(self.table).where(self.table.c.model == self.pending))
        finally:
            self.store.close()


def _empty() -> dict[str, np.ndarray]:
    return {
        "user": np.zeros(0, dtype=object),
        "rank": np.zeros(0, dtype=np.int32),
        "item": np.zeros(0, dtype=object),
        "score": np.zeros(0, dtype=np.float64),
    }


def open_sink(out: str | os.PathLike[str], model_name: str) -> ParquetSink | StoreSink:
    return ParquetSink(out) if output_kind(out) == "parquet" else StoreSink(str(out), model_name)


# ------------------------------------------------------------------------------ running
@dataclass
class BatchResult:
    """What :func:`recommend_all` wrote."""

    out: str
    model: str
    users: int
    rows: int
    blocks: int
    seconds: float
    workers: int = 0
    """Ray actors that computed blocks (0: this process)."""
    nodes: list[str] = field(default_factory=list)
    """Ids of the Ray nodes whose actors computed blocks (empty without Ray)."""


@dataclass(frozen=True)
class WorkerPlan:
    """How many Ray actors to run and what each reserves."""

    workers: int
    cpus: float
    gpus: float


def worker_plan(ray: Any, workers: int | None = None, use_gpus: bool = False) -> WorkerPlan:
    """One actor per alive node with CPUs, each with the fewest CPUs such a node has (with
    ``use_gpus`` and GPUs in the cluster: one actor per GPU, 1 GPU and 1 CPU each);
    ``workers`` overrides the number of actors."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = sum(float(n.get("Resources", {}).get("GPU", 0)) for n in nodes)
    if use_gpus and gpus >= 1:
        return WorkerPlan(workers or int(gpus), 1.0, 1.0)
    cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
    cpus = [c for c in cpus if c >= 1]
    if not cpus:
        from kinrec.distributed.cluster import ClusterUnavailable

        raise ClusterUnavailable("the Ray cluster has no alive node with a CPU to run on")
    return WorkerPlan(workers or len(cpus), float(int(min(cpus))), 0.0)


def quiet_data_context(ray: Any, preserve_order: bool = True) -> None:
    """Ray Data without its own progress bars and start-up banner (kinrec draws one bar on
    stderr), keeping the input order when asked."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = preserve_order
    # every actor up before the first task (a cluster short of resources fails here, with
    # Ray's "Timed out while starting actors", instead of waiting for ever)
    ctx.wait_for_min_actors_s = ACTOR_START_S
    import logging

    logging.getLogger("ray.data").setLevel(logging.ERROR)


def _model_files(model_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(model_dir)): p.read_bytes()
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    }


class _RecommendActor:
    """A Ray Data actor: the model loaded once from its shipped bytes, then blocks."""

    def __init__(self, files_ref: list[Any], k: int, exclude_seen: bool) -> None:
        import shutil

        import ray

        self.folder = Path(tempfile.mkdtemp(prefix="kinrec-model-"))
        try:
            for name, data in ray.get(files_ref[0]).items():
                target = self.folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            self.model = Recommender.load(self.folder)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.users = ranked_users(self.model)
        self.k, self.exclude_seen = k, exclude_seen
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = [
            recommend_block(self.model, self.users[int(a) : int(b)], self.k, self.exclude_seen)
            for a, b in zip(batch["start"], batch["stop"], strict=True)
        ]
        block = {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}
        sizes = [len(p["user"]) for p in parts]
        block["block"] = np.repeat(np.asarray(batch["block"], dtype=np.int64), sizes)
        block["node"] = np.full(len(block["user"]), self.node, dtype=object)
        return block


def _local_blocks(
    model: Recommender, users: np.ndarray, blocks: list[tuple[int, int]], k: int, exclude: bool
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    for a, b in blocks:
        yield b - a, recommend_block(model, users[a:b], k, exclude)


def _ray_blocks(
    ray: Any,
    model_dir: Path,
    blocks: list[tuple[int, int]],
    k: int,
    exclude: bool,
    plan: WorkerPlan,
    nodes: set[str],
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    quiet_data_context(ray)
    files_ref = ray.put(_model_files(model_dir))
    ds = ray.data.from_items(
        [{"block": n, "start": a, "stop": b} for n, (a, b) in enumerate(blocks)],
        override_num_blocks=len(blocks),
    ).map_batches(
        _RecommendActor,
        fn_constructor_kwargs={"files_ref": [files_ref], "k": k, "exclude_seen": exclude},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.workers),
        num_cpus=plan.cpus,
        zero_copy_batch=False,
    )
    arrived: set[int] = set()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        nodes.update(str(n) for n in np.unique(batch["node"]))
        new = set(np.unique(batch["block"]).tolist()) - arrived
        arrived |= new
        yield sum(blocks[b][1] - blocks[b][0] for b in new), {c: batch[c] for c in COLUMNS}


def recommend_all(
    model_dir: str | os.PathLike[str],
    k: int,
    out: str | os.PathLike[str],
    ray_address: str | None = None,
    batch_users: int = DEFAULT_BATCH_USERS,
    exclude_seen: bool = True,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchResult:
    """The top ``k`` items of every trained user of the model in ``model_dir``, written to
    ``out`` (``.parquet`` or a store URL, see the module's docstring), ``batch_users`` users
    per block. ``ray_address`` (or ``KINREC_RAY_ADDRESS``): blocks computed on that Ray
    cluster, ``workers`` actors (default: one per node). ``progress(done, total)`` is called
    after each block with the users written so far."""
    from kinrec.distributed.cluster import connect, resolve_address

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if batch_users < 1:
        raise ValueError(f"--batch-users must be at least 1, got {batch_users}")
    output_kind(out)
    model_dir = Path(model_dir)
    start = time.perf_counter()
    model = Recommender.load(model_dir)
    users = ranked_users(model)
    blocks = user_blocks(len(users), batch_users)
    address = resolve_address(ray_address)
    nodes: set[str] = set()
    plan = None
    if address is not None:
        ray = connect(address)
        plan = worker_plan(ray, workers)
        source = _ray_blocks(ray, model_dir, blocks, k, exclude_seen, plan, nodes)
    else:
        source = _local_blocks(model, users, blocks, k, exclude_seen)
    del model  # the workers hold their own copy; locally the generator keeps it
    name = model_dir.resolve().name
    sink = open_sink(out, name)
    done = rows = 0
    try:
        for n_users, block in source:
            sink.write(block)
            done += n_users
            rows += len(block["user"])
            if progress is not None:
                progress(done, len(users))
    except BaseException:
        sink.abort()
        raise
    sink.commit()
    if progress is not None and done < len(users):  # trailing users with no item left
        progress(len(users), len(users))
    return BatchResult(
        out=str(out),
        model=name,
        users=len(users),
        rows=rows,
        blocks=len(blocks),
        seconds=time.perf_counter() - start,
        workers=plan.workers if plan else 0,
        nodes=sorted(nodes),
    )
