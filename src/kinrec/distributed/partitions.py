"""Interactions read in partitions by Ray Data on a cluster's workers, and what models need
from them (item-item statistics, the compact training rows) summed from the partitions, so
that the interaction table never passes whole through one process's memory.

A partition holds every row of its users: per-user quantities (a user's row of the matrix,
its contribution ``x_u^T x_u`` to the Gram matrix) are complete inside it.

* A kinrec store (SQLAlchemy URL): partition ``k`` of ``P`` is one query, run by a Ray task
  on a worker over its own connection, for the users whose index ``% P == k``. A user's
  index is its ``users.position``, an item's its ``items.position`` (the dense 0-based
  indices of the store); users and items named only by interactions (as RecBole allows)
  follow the stored ones, in the order of their first interaction (``seq``). The query
  computes those extra indices itself (one grouped pass over the dataset's interactions
  more; nothing when the user and item tables are complete).
* Parquet files (columns ``user_id``, ``item_id``, optional ``rating``; ids read as
  strings): Ray Data reads the files in the workers; the distinct ids come to the driver,
  sorted, and their index maps go to the workers through the object store (``ray.put``).
  That is the memory this costs outside the workers: the id maps (the distinct ids, twice:
  a list and a hash index per worker), never the events. Files are not laid out by user,
  so the rows are grouped by ``user % P`` on the cluster (a Ray Data shuffle between the
  workers' object stores, spilled to disk where it does not fit; never through the driver).

Rows of the dataset: ``user`` and ``item`` (int64 indices), ``weight`` (float64: 1.0, or
the rating with ``ratings=True``, 1.0 where a row has none) and ``user_rows`` (int64: how
many rows the user has in all). Within a partition the rows come ordered by user. The
matrix ``X`` they describe has one entry per (user, item) pair: a pair seen several times
counts once, with its largest weight (as :meth:`Interactions.matrix` and EASE's rating
strengths do).

:func:`item_statistics` and :func:`partition_rows` rely only on ``user_rows``, not on how
Ray cuts, orders or bundles blocks: a block that holds as many rows of a user as
``user_rows`` says holds that user whole, and the user's rows and ``x_u^T x_u`` are summed
on the worker; the rows of the users a block holds in part (where Ray cut a partition's
output: a user at each cut) go to the driver, which merges them by user.

Every function here works on the connected cluster (:mod:`kinrec.distributed.cluster`).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from kinrec.data.dataset import IdMap

if TYPE_CHECKING:
    import ray.data

    from kinrec.models.ease import EASE

STORE_PREFIXES = ("sqlite:", "postgresql:", "postgresql+")
FETCH_ROWS = 100_000
"""Rows a partition query fetches from the database at a time."""
COLUMNS = ("user", "item", "weight", "user_rows")


class PartitionSourceError(ValueError):
    """A source that cannot be read in partitions: an unknown dataset, a Parquet file
    without a needed column. The message names the source."""


@dataclass(frozen=True)
class Vocabulary:
    """The ids behind the indices of :func:`read_partitions`: the user and the item id maps
    (the models' own :class:`~kinrec.data.dataset.IdMap`)."""

    users: IdMap
    items: IdMap

    @classmethod
    def of(cls, user_ids: list[str], item_ids: list[str]) -> Vocabulary:
        return cls(IdMap(user_ids), IdMap(item_ids))

    @property
    def user_ids(self) -> list[str]:
        return self.users.ids()

    @property
    def item_ids(self) -> list[str]:
        return self.items.ids()

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)


# ------------------------------------------------------------------------------ sources
def is_store(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a store URL (else Parquet files or a folder of them)."""
    return str(source).startswith(STORE_PREFIXES)


def _require_ray() -> Any:
    from kinrec.distributed.cluster import ray_module

    ray = ray_module()
    if not ray.is_initialized():
        raise RuntimeError("not connected to a Ray cluster (kinrec.distributed.cluster.connect)")
    return ray


def _shown(url: str) -> str:
    """A store URL for messages, password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ------------------------------------------------------------------------------ store
_INDEX_CTE = """
{kind}_index AS (
    SELECT {kind}_id AS id, position FROM {table} WHERE dataset_id = :dataset
    UNION ALL
    SELECT i.{kind}_id AS id,
           CAST(:{kind}_base AS BIGINT) - 1 + ROW_NUMBER() OVER (ORDER BY MIN(i.seq)) AS position
    FROM interactions i
    WHERE i.dataset_id = :dataset AND NOT EXISTS (
        SELECT 1 FROM {table} t WHERE t.dataset_id = :dataset AND t.{kind}_id = i.{kind}_id)
    GROUP BY i.{kind}_id
)"""
_WITH = (
    "WITH"
    + _INDEX_CTE.format(kind="user", table="users")
    + ","
    + _INDEX_CTE.format(kind="item", table="items")
)
PARTITION_SQL = (
    _WITH
    + """
SELECT u.position AS user_index, t.position AS item_index, i.rating AS rating
FROM interactions i
JOIN user_index u ON u.id = i.user_id
JOIN item_index t ON t.id = i.item_id
WHERE i.dataset_id = :dataset AND u.position % :partitions = :partition
ORDER BY u.position, i.seq
"""
)
"""One partition's rows: every interaction of the users whose index ``% partitions`` is
``partition``, ordered by user (then by ``seq``)."""
VOCABULARY_SQL = _WITH + "\nSELECT id FROM {kind}_index ORDER BY position"


def _read_engine(url: str) -> Any:
    """An engine that opens plain connections and keeps none (a worker's, or the driver's
    look-ups): reading needs none of the store's write settings."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(url, poolclass=NullPool)


@dataclass(frozen=True)
class StorePlan:
    """What a partition query needs: the store, the dataset's id and where the indices of
    users and items named only by interactions start. Small and picklable: each worker
    opens its own connection from the URL."""

    url: str
    dataset_id: int
    user_base: int
    item_base: int

    def params(self) -> dict[str, int]:
        return {
            "dataset": self.dataset_id,
            "user_base": self.user_base,
            "item_base": self.item_base,
        }


def store_plan(url: str, dataset: str | None) -> StorePlan:
    """Look ``dataset`` up in the store at ``url`` (a :class:`PartitionSourceError` naming
    the store when it is not there), without writing anything."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from kinrec.store import schema as s

    if not dataset:
        raise PartitionSourceError(f"{_shown(url)}: name the dataset to read (dataset=...)")
    engine = _read_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                select(s.datasets.c.id).where(s.datasets.c.name == dataset)
            ).scalar()
            if found is None:
                names = conn.execute(select(s.datasets.c.name).order_by(s.datasets.c.name))
                raise PartitionSourceError(
                    f"no dataset {dataset!r} in the store {_shown(url)} "
                    f"(stored: {list(names.scalars())})"
                )
            bases = [
                conn.execute(
                    select(func.coalesce(func.max(t.c.position) + 1, 0)).where(
                        t.c.dataset_id == int(found)
                    )
                ).scalar_one()
                for t in (s.users, s.items)
            ]
    except SQLAlchemyError as exc:
        raise PartitionSourceError(f"cannot read the store {_shown(url)}: {exc}") from None
    finally:
        engine.dispose()
    return StorePlan(url, int(found), int(bases[0]), int(bases[1]))


@dataclass(frozen=True)
class PartitionQuery:
    """Runs on a worker: the rows of the partitions named in a batch of partition numbers,
    over a connection of its own, fetched ``FETCH_ROWS`` at a time."""

    plan: StorePlan
    partitions: int
    ratings: bool

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from sqlalchemy import text

        users: list[np.ndarray] = []
        items: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        engine = _read_engine(self.plan.url)
        try:
            with engine.connect() as conn:
                for k in batch["id"]:
                    params = {
                        **self.plan.params(),
                        "partitions": self.partitions,
                        "partition": int(k),
                    }
                    result = conn.execute(text(PARTITION_SQL), params)
                    for rows in result.partitions(FETCH_ROWS):
                        u, i, r = zip(*rows, strict=True)
                        users.append(np.asarray(u, dtype=np.int64))
                        items.append(np.asarray(i, dtype=np.int64))
                        weights.append(self._weights(r))
        finally:
            engine.dispose()
        return _columns(users, items, weights)

    def _weights(self, ratings: tuple) -> np.ndarray:
        if not self.ratings:
            return np.ones(len(ratings), dtype=np.float64)
        r = np.array([np.nan if x is None else x for x in ratings], dtype=np.float64)
        return np.where(np.isfinite(r), r, 1.0)


def _columns(users: list, items: list, weights: list) -> dict[str, np.ndarray]:
    def joined(parts: list, dtype: type) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty(0, dtype)

    user = joined(users, np.int64)
    return {
        "user": user,
        "item": joined(items, np.int64),
        "weight": joined(weights, np.float64),
        "user_rows": _user_rows(user),
    }


def _user_rows(users: np.ndarray) -> np.ndarray:
    """Each row's user's number of rows among ``users`` (all of the user's rows)."""
    _, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.int64)


def _store_vocabulary(plan: StorePlan) -> Vocabulary:
    from sqlalchemy import text

    engine = _read_engine(plan.url)
    try:
        with engine.connect() as conn:
            ids = [
                [
                    str(x)
                    for x in conn.execute(
                        text(VOCABULARY_SQL.format(kind=kind)), plan.params()
                    ).scalars()
                ]
                for kind in ("user", "item")
            ]
    finally:
        engine.dispose()
    return Vocabulary.of(ids[0], ids[1])


def _read_store(plan: StorePlan, partitions: int, ratings: bool) -> ray.data.Dataset:
    ray = _require_ray()
    numbers = ray.data.range(partitions, override_num_blocks=partitions)
    return numbers.map_batches(
        PartitionQuery(plan, partitions, ratings), batch_size=1, batch_format="numpy"
    )


# ------------------------------------------------------------------------------ parquet
def _parquet_columns(source: str | os.PathLike[str] | list, ratings: bool) -> list[str]:
    """The columns to read, or a :class:`PartitionSourceError` naming the source."""
    ray = _require_ray()
    try:
        names = set(ray.data.read_parquet(_paths(source)).schema().names)
    except Exception as exc:  # a missing file, not Parquet: Ray's own error, with the path
        raise PartitionSourceError(f"cannot read Parquet {_paths(source)}: {exc}") from None
    for needed in ("user_id", "item_id") + (("rating",) if ratings else ()):
        if needed not in names:
            raise PartitionSourceError(
                f"Parquet {_paths(source)} has no column {needed!r} (columns: {sorted(names)})"
            )
    return ["user_id", "item_id"] + (["rating"] if ratings else [])


def _paths(source: str | os.PathLike[str] | list) -> str | list[str]:
    return [str(p) for p in source] if isinstance(source, (list, tuple)) else str(source)


def _as_strings(batch: Any) -> Any:
    """Ids as strings (kinrec's ids), whatever their Parquet type."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in ("user_id", "item_id"):
        if name in batch.column_names:
            column = batch[name]
            if not pa.types.is_string(column.type):
                column = pc.cast(column, pa.string())
            batch = batch.set_column(batch.column_names.index(name), name, column)
    return batch


def _parquet_vocabulary(source: str | os.PathLike[str] | list) -> Vocabulary:
    """The distinct user and item ids, sorted (computed by Ray Data; only they reach the
    driver)."""
    ray = _require_ray()
    _parquet_columns(source, ratings=False)
    ids = (
        ray.data.read_parquet(_paths(source))
        .select_columns(["user_id", "item_id"])
        .map_batches(_as_strings, batch_format="pyarrow")
    )
    users = sorted(str(u) for u in ids.unique("user_id"))
    items = sorted(str(i) for i in ids.unique("item_id"))
    return Vocabulary.of(users, items)


@dataclass(frozen=True)
class IdMapRefs:
    """The id maps in the object store; each worker process builds its hash index once."""

    users: Any
    items: Any


_INDEXES: dict[str, Any] = {}


def _index(ref: Any) -> Any:
    """The ``pandas.Index`` of the ids behind ``ref``, cached in this worker process."""
    import pandas as pd
    import ray

    key = ref.hex()
    if key not in _INDEXES:
        _INDEXES.clear()  # one source at a time: the maps of an earlier read are dropped
        _INDEXES[key] = pd.Index(ray.get(ref))
    return _INDEXES[key]


def _indexed(batch: Any, refs: IdMapRefs, partitions: int, ratings: bool) -> dict[str, np.ndarray]:
    """Ids to indices (every id is in the maps: they were built from these files)."""
    batch = _as_strings(batch)
    users = _index(refs.users).get_indexer(batch["user_id"].to_numpy(zero_copy_only=False))
    items = _index(refs.items).get_indexer(batch["item_id"].to_numpy(zero_copy_only=False))
    if ratings:
        r = batch["rating"].to_numpy(zero_copy_only=False).astype(np.float64)
        weights = np.where(np.isfinite(r), r, 1.0)
    else:
        weights = np.ones(len(users), dtype=np.float64)
    return {
        "user": users.astype(np.int64),
        "item": items.astype(np.int64),
        "weight": weights,
        "partition": users.astype(np.int64) % partitions,
    }


def _by_user(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One partition's rows (all of its users' rows), ordered by user (a stable sort: each
    user's rows stay in their input order), with each user's count of rows."""
    order = np.argsort(group["user"], kind="stable")
    out = {name: group[name][order] for name in ("user", "item", "weight")}
    out["user_rows"] = _user_rows(out["user"])
    return out


def _read_parquet(
    source: str | os.PathLike[str] | list, vocabulary: Vocabulary, partitions: int, ratings: bool
) -> ray.data.Dataset:
    ray = _require_ray()
    columns = _parquet_columns(source, ratings)
    refs = IdMapRefs(
        ray.put(np.array(vocabulary.user_ids, dtype=object)),
        ray.put(np.array(vocabulary.item_ids, dtype=object)),
    )
    rows = (
        ray.data.read_parquet(_paths(source))
        .select_columns(columns)
        .map_batches(
            _indexed,
            batch_format="pyarrow",
            fn_kwargs={"refs": refs, "partitions": partitions, "ratings": ratings},
        )
    )
    return rows.groupby("partition").map_groups(_by_user, batch_format="numpy")


# ------------------------------------------------------------------------------ reading
def read_vocabulary(
    source: str | os.PathLike[str] | list, *, dataset: str | None = None
) -> Vocabulary:
    """The user and item ids behind :func:`read_partitions`' indices, in index order: the
    store's ``position`` order (then the ids named only by interactions, by first
    interaction), or the sorted distinct ids of Parquet files. Ids only, on the driver."""
    if is_store(source):
        return _store_vocabulary(store_plan(str(source), dataset))
    return _parquet_vocabulary(source)


def read_partitions(
    source: str | os.PathLike[str] | list,
    *,
    dataset: str | None = None,
    partitions: int,
    ratings: bool = False,
    vocabulary: Vocabulary | None = None,
) -> ray.data.Dataset:
    """The interactions of ``source`` (a store URL and its ``dataset``, or Parquet files) as
    a Ray Data dataset of ``partitions`` partitions by user, read on the workers: columns
    ``user``, ``item`` (int64 indices), ``weight`` (1.0, or the rating with ``ratings``),
    ``user_rows`` (the user's number of rows).
    Lazy: nothing is read until the dataset is consumed. ``vocabulary`` (Parquet only):
    the id maps already read by :func:`read_vocabulary`, so that the ids are not collected
    twice. See the module's docstring for what runs where."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    _require_ray()
    if is_store(source):
        return _read_store(store_plan(str(source), dataset), partitions, ratings)
    if vocabulary is None:
        vocabulary = _parquet_vocabulary(source)
    return _read_parquet(source, vocabulary, partitions, ratings)


# ------------------------------------------------------------------------------ blocks
def _pairs(
    users: np.ndarray, items: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (user, item) pair once with its largest weight, ordered by user then item."""
    order = np.lexsort((weights, items, users))
    users, items, weights = users[order], items[order], weights[order]
    last = np.ones(len(users), dtype=bool)
    last[:-1] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    return users[last], items[last], weights[last]


def _rows(users: np.ndarray, items: np.ndarray, weights: np.ndarray, n_items: int):
    """The distinct users of ``_pairs`` output and their rows, as a CSR matrix of one row
    each (in user order)."""
    ids, lengths = np.unique(users, return_counts=True)
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    matrix = sp.csr_matrix((weights, items, indptr), shape=(len(ids), n_items))
    return ids, matrix


def _split_block(batch: dict[str, np.ndarray]) -> tuple[tuple, tuple]:
    """A block's pairs of the users it holds whole, and the rows of the users it holds in
    part (who continue in other blocks), by each row's ``user_rows``."""
    users = np.asarray(batch["user"], dtype=np.int64)
    items = np.asarray(batch["item"], dtype=np.int64)
    weights = np.asarray(batch["weight"], dtype=np.float64)
    inner = _user_rows(users) == np.asarray(batch["user_rows"], dtype=np.int64)
    edge = ~inner
    return (
        _pairs(users[inner], items[inner], weights[inner]),
        _pairs(users[edge], items[edge], weights[edge]),
    )


def _payload(obj: object) -> dict[str, np.ndarray]:
    return {"payload": np.array([pickle.dumps(obj, protocol=5)], dtype=object)}


def _block_statistics(
    batch: dict[str, np.ndarray], n_items: int, with_rows: bool
) -> dict[str, np.ndarray]:
    """On a worker: a block's interior users' ``X^T X`` and item counts (and, with
    ``with_rows``, their CSR rows), plus its edge rows."""
    inner, edge = _split_block(batch)
    ids, x = _rows(*inner, n_items)
    gram = (x.T @ x).tocsr() if x.nnz else None
    counts = np.bincount(inner[1], minlength=n_items).astype(np.int64)
    rows = (ids, x.astype(np.float32)) if with_rows else None
    return _payload((gram, counts, rows, edge))


def _partials(ds: ray.data.Dataset, n_items: int, with_rows: bool) -> Iterator[tuple]:
    parts = ds.map_batches(
        _block_statistics,
        batch_size=None,
        batch_format="numpy",
        fn_kwargs={"n_items": n_items, "with_rows": with_rows},
    )
    for batch in parts.iter_batches(batch_size=None, batch_format="numpy"):
        for blob in batch["payload"]:
            yield pickle.loads(blob)


def _statistics(
    ds: ray.data.Dataset, n_items: int, n_users: int | None
) -> tuple[sp.csr_matrix, np.ndarray, sp.csr_matrix | None]:
    """The Gram matrix and counts, and with ``n_users`` the rows, in one pass over ``ds``."""
    gram = sp.csr_matrix((n_items, n_items), dtype=np.float64)
    counts = np.zeros(n_items, dtype=np.int64)
    pieces: list[tuple[np.ndarray, sp.csr_matrix]] = []
    edges: list[tuple] = []
    for part_gram, part_counts, rows, edge in _partials(ds, n_items, n_users is not None):
        if part_gram is not None:
            gram = gram + part_gram
        counts += part_counts
        if rows is not None and len(rows[0]):
            pieces.append(rows)
        edges.append(edge)
    users, items, weights = (
        (np.concatenate(c) for c in zip(*edges, strict=True))
        if edges
        else (
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, np.float64),
        )
    )
    ids, x = _rows(*_pairs(users, items, weights), n_items)
    if x.nnz:
        gram = gram + (x.T @ x).tocsr()
        counts += np.diff(x.tocsc().indptr).astype(np.int64)
    gram.sort_indices()
    if n_users is None:
        return gram, counts, None
    pieces.append((ids, x.astype(np.float32)))
    return gram, counts, _assemble(pieces, n_users, n_items)


def _assemble(pieces: list[tuple[np.ndarray, sp.csr_matrix]], n_users: int, n_items: int):
    """One ``n_users x n_items`` CSR matrix from row pieces of disjoint users, each row
    copied once into the final arrays."""
    lengths = np.zeros(n_users, dtype=np.int64)
    for ids, x in pieces:
        if len(ids) and (ids[0] < 0 or ids[-1] >= n_users):
            raise ValueError(f"user indices out of range 0..{n_users - 1}")
        lengths[ids] = np.diff(x.indptr)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32 if n_items < 2**31 else np.int64)
    data = np.empty(indptr[-1], dtype=np.float32)
    for ids, x in pieces:
        shift = np.repeat(indptr[ids] - x.indptr[:-1], np.diff(x.indptr))
        at = shift + np.arange(x.nnz)
        indices[at] = x.indices
        data[at] = x.data
    return sp.csr_matrix((data, indices, indptr), shape=(n_users, n_items))


def item_statistics(ds: ray.data.Dataset, n_items: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """``X^T X`` (``n_items x n_items``, float64, sparse) and each item's count of users,
    summed from the blocks of ``ds`` (:func:`read_partitions`' rows): each block's users'
    ``X_p^T X_p`` is computed on its worker; the driver receives and sums those partials
    (items x items, never events) and the few edge users' rows. Equal to ``X.T @ X`` of the
    whole matrix (the same sums of the same products; exactly, for binary weights or
    integer ratings)."""
    gram, counts, _ = _statistics(ds, n_items, None)
    return gram, counts


def partition_rows(ds: ray.data.Dataset, n_users: int, n_items: int) -> sp.csr_matrix:
    """``X`` itself (``n_users x n_items``, float32 weights, int32 item indices): the
    compact rows the models keep as ``seen``. Each block is turned into CSR rows on its
    worker; the driver copies them into one matrix. Unlike :func:`item_statistics`, this
    holds every event on the driver, compactly: 8 bytes an event (12 above 2^31 items),
    twice that while the pieces are copied in."""
    return _statistics(ds, n_items, n_users)[2]


# ------------------------------------------------------------------------------ models
def fit_ease_partitioned(
    source: str | os.PathLike[str] | list,
    *,
    dataset: str | None = None,
    partitions: int,
    l2: float | None = None,
    config: Any = None,
    address: str | None = None,
) -> EASE:
    """EASE fitted from interactions read in partitions: the model that ``EASE(config)
    .fit(interactions)`` builds from the same interactions indexed by
    :func:`read_vocabulary`'s ids (the same weights), its Gram matrix summed on the cluster
    (:func:`item_statistics`) and its rows assembled from the partitions
    (:func:`partition_rows`), in one pass over the source. ``config``: an ``EASEConfig`` or
    its dict (``l2``: its ``reg_weight``, for short). ``address``: connect first
    (:func:`kinrec.distributed.cluster.connect`); else the connected cluster.

    Memory on the driver: the id maps, the rows (8 bytes an event) and the dense items x
    items solve, as for a single-process EASE; never the interaction table. A catalogue
    larger than the configuration's ``max_dense_items`` is refused before anything is read
    (:meth:`EASE.from_gram`)."""
    from kinrec.models.ease import EASE, EASEConfig

    settings = EASEConfig.model_validate(config or {})
    if l2 is not None:
        settings = settings.model_copy(update={"reg_weight": l2})
    if address is not None:
        from kinrec.distributed.cluster import connect

        connect(address)
    vocabulary = read_vocabulary(source, dataset=dataset)
    EASE.check_gram_size(vocabulary.n_items, settings)
    ds = read_partitions(source, dataset=dataset, partitions=partitions, vocabulary=vocabulary)
    gram, _, seen = _statistics(ds, vocabulary.n_items, vocabulary.n_users)
    seen.data[:] = 1.0  # binary rows, as EASE's fit takes them
    model = EASE.from_gram(gram, seen, vocabulary.users, vocabulary.items, settings)
    model.fit_info["ray"] = {
        "partitions": partitions,
        "source": "store" if is_store(source) else "parquet",
    }
    return model
