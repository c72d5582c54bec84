"""Sparse EASE: each item regressed on its ``k`` most similar items only.

EASE's weights of item ``j`` are the ridge regression of ``j``'s column on every other
column: ``(G[-j, -j] + l2 I) w = G[-j, j]`` (Steck, 2019; the zero-diagonal constraint is
exactly the exclusion of ``j``). Restricting the regressors to ``j``'s ``k`` most
cosine-similar items (its neighbourhood ``N_j``) gives

    (G[N_j, N_j] + l2 I) w_j = G[N_j, j]

one ``k x k`` system per item: the weights are a sparse matrix of ``n k`` entries and the
work is ``n k^3 / 3`` (the dense closed form holds ``n^2`` floats and does ``n^3 / 3``
work). With ``k >= n - 1`` on a Gram matrix without zeros it is EASE exactly. This is the
neighbourhood restriction of feature-selected SLIM (Ning & Karypis, 2012) applied to
EASE's closed form.

The Gram matrix comes either dense (catalogues where it fits) or as :class:`GramParts`,
the input rows and sparse extra terms, from which the exact Gram entries are computed one
block of items at a time: the neighbourhoods from column blocks of ``rows.T @ rows``, and
each batch's systems from the dense Gram matrix of the batch's items and their neighbours.
No approximation of the Gram matrix is made (a pruned one is not positive definite in
general, and its systems then give meaningless weights).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

Progress = Callable[[int, int], None]


@dataclass
class GramParts:
    """A Gram matrix kept as what it is made of: ``rows.T @ rows`` whose off-diagonal part
    is mixed with ``session`` (``(1 - share) G + share S``, the diagonal kept) and to which
    ``strength * graph`` is added: the variants of :mod:`kinrec.models.ease`
    (:func:`~kinrec.models.ease.mixed_gram`, :func:`~kinrec.models.ease.collective_gram`)
    without the dense matrix."""

    rows: sp.spmatrix
    session: sp.spmatrix | None = None
    share: float = 0.0
    graph: sp.spmatrix | None = None
    strength: float = 0.0

    def __post_init__(self) -> None:
        self.rows = sp.csc_matrix(self.rows, dtype=np.float64)
        self._rows_t = self.rows.T.tocsr()
        if not self.share:
            self.session = None
        if not self.strength:
            self.graph = None
        self.session = None if self.session is None else sp.csr_matrix(self.session)
        self.graph = None if self.graph is None else sp.csr_matrix(self.graph)

    @property
    def n_items(self) -> int:
        return self.rows.shape[1]

    def diagonal(self) -> np.ndarray:
        diag = np.asarray(self.rows.multiply(self.rows).sum(axis=0)).ravel()
        if self.graph is not None:
            diag = diag + self.strength * self.graph.diagonal()
        return diag

    def columns(self, start: int, stop: int) -> sp.csr_matrix:
        """Columns ``start:stop`` of the Gram matrix, transposed: a sparse ``(stop - start,
        n_items)`` matrix (row ``i`` is item ``start + i``'s entries)."""
        part = (self._rows_t @ self.rows[:, start:stop]).T.tocsr()
        if self.session is not None:
            diag = part.diagonal(k=start)
            part = (1.0 - self.share) * part + self.share * self.session[start:stop]
            part = part.tolil()
            part.setdiag(diag, k=start)
            part = part.tocsr()
        if self.graph is not None:
            part = part + self.strength * self.graph[start:stop]
        part = sp.csr_matrix(part)
        part.sort_indices()
        return part

    def systems(self, items: np.ndarray, nb: np.ndarray) -> np.ndarray:
        """The Gram matrix of each item of ``items`` with its neighbours ``nb`` (``-1``:
        padding): a ``(B, k + 1, k + 1)`` array, the neighbours first and the item last;
        padding has zero rows and columns.

        Only these blocks are computed: the input rows are laid out block-diagonally (item
        ``b``'s columns read the users of its own neighbourhood only), so one sparse product
        gives every block and no entry between two items' neighbourhoods. The work is the
        sum, over items and users, of the square of how many of the item's neighbours the
        user has (the Gram block of the batch's items all together costs that of every
        pair of them), and does not grow with the number of users."""
        n_batch, size = len(items), nb.shape[1] + 1
        columns = np.concatenate([nb, np.asarray(items)[:, None]], axis=1)
        valid = (columns >= 0).ravel()
        flat = np.where(valid, columns.ravel(), 0)
        rows = self.rows
        starts = rows.indptr[flat]
        lengths = (rows.indptr[flat + 1] - starts) * valid
        ends = np.cumsum(lengths)
        at = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(
            starts - ends + lengths, lengths
        )
        users = rows.indices[at]
        # Each block's users get the positions of their entries as ids (one position per
        # user: the last of theirs), so the blocks' ids never meet and no user is counted
        # twice in a block; the laid-out matrix has one column per entry, not per user
        # (a column per (block, user) over every user made each batch cost the number of
        # users, and the pass quadratic in the catalogue).
        ids = _scratch(rows.shape[0])
        laid_columns = np.empty(len(users), dtype=np.int64)
        edges = np.concatenate([[0], ends[size - 1 :: size]])
        for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
            ids[users[lo:hi]] = np.arange(lo, hi)
            laid_columns[lo:hi] = ids[users[lo:hi]]
        indptr = np.concatenate([[0], ends])
        laid = sp.csr_matrix(
            (rows.data[at], laid_columns, indptr), shape=(len(flat), max(len(users), 1))
        )
        out = np.zeros((n_batch, size, size))
        _add_blocks(out, laid @ laid.T, size)
        if self.session is not None:
            diag = np.einsum("bii->bi", out).copy()
            out *= 1.0 - self.share
            _add_blocks(out, self.share * _within(self.session, flat, valid), size)
            np.einsum("bii->bi", out)[:] = diag
        if self.graph is not None:
            _add_blocks(out, self.strength * _within(self.graph, flat, valid), size)
        return out


_SCRATCH = threading.local()


def _scratch(size: int) -> np.ndarray:
    """An int64 array of at least ``size`` entries, kept per thread (contents undefined)."""
    buffer = getattr(_SCRATCH, "ids", None)
    if buffer is None or len(buffer) < size:
        buffer = _SCRATCH.ids = np.empty(size, dtype=np.int64)
    return buffer


def _within(matrix: sp.csr_matrix, flat: np.ndarray, valid: np.ndarray) -> sp.coo_matrix:
    """``matrix[flat][:, flat]`` with the rows and columns of padding (not ``valid``) zero."""
    keep = sp.diags(valid.astype(np.float64))
    return (keep @ matrix[flat][:, flat] @ keep).tocoo()


def _add_blocks(out: np.ndarray, product: sp.spmatrix, size: int) -> None:
    """Add the entries of ``product`` (rows and columns of ``out``'s blocks laid end to
    end) that fall inside a diagonal block to ``out`` ``(B, size, size)``; a sparse
    product's entries are distinct, so a plain indexed sum adds each once."""
    product = sp.coo_matrix(product)
    product.sum_duplicates()
    block = product.row // size
    inside = block == product.col // size
    out[block[inside], product.row[inside] % size, product.col[inside] % size] += product.data[
        inside
    ]


Gram = np.ndarray | GramParts


def _inverse_root(counts: np.ndarray) -> np.ndarray:
    """``1 / sqrt(counts)``, 0 where a count is not positive."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1e-300)), 0.0)


def top_per_group(
    group: np.ndarray, other: np.ndarray, value: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Of entries ``(group, other, value)``, each group's ``k`` largest values (ties: lower
    ``other`` first): their positions, grouped in ascending group order and best first,
    and their rank within the group."""
    order = np.lexsort((other, -value, group))
    grouped = group[order]
    rank = np.arange(len(order)) - np.searchsorted(grouped, grouped)
    top = rank < k
    return order[top], rank[top]


def _rank_top(row: np.ndarray, col: np.ndarray, cosine: np.ndarray, k: int):
    """Of (row, column, cosine) entries, each row's ``k`` largest (ties: lower column
    first): (row, column, rank) triples."""
    at, rank = top_per_group(row, col, cosine, k)
    return row[at], col[at], rank


def _top_sparse_rows(part: sp.csr_matrix, start: int, scale: np.ndarray, k: int):
    """Per row of ``part`` (item ``start + row``), its ``k`` positive off-diagonal entries
    with the largest cosine: (row, column, rank) triples."""
    lengths = np.diff(part.indptr)
    row = np.repeat(np.arange(part.shape[0]), lengths)
    keep = (part.indices != row + start) & (part.data > 0)
    row, col = row[keep], part.indices[keep]
    return _rank_top(row, col, part.data[keep] * scale[col], k)


def _in_threads(work: Callable[[int], int], starts: Sequence[int], workers: int) -> Iterator[int]:
    """``work(start)`` for every start, in up to ``workers`` threads (the sparse products and
    the batched solves release the GIL; each start writes its own rows): yields what each
    returns, in order.

    With several threads, BLAS and LAPACK run on one thread each: the solves are many small
    systems, and a multi-threaded BLAS under each of several threads oversubscribes the
    cores (100,000 items on 2 cores: the head's pass took 2.6 times as long)."""
    if workers <= 1 or len(starts) <= 1:
        yield from map(work, starts)
        return
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(work, starts)


def _blocks(block: Callable, shared: tuple, starts: Sequence[int], workers: int) -> Iterator:
    """``block(*shared, start)`` for every start, in order: as tasks on the connected Ray
    cluster inside :func:`kinrec.distributed.blocks.on_ray`, else in up to ``workers``
    threads. ``block`` is a module-level function (it travels to Ray workers by name)."""
    from kinrec.distributed import blocks

    if blocks.active() and len(starts) > 1:
        yield from blocks.map_blocks(block, shared, starts)
        return
    yield from _in_threads(lambda start: block(*shared, start), starts, workers)


def _top_block(gram: GramParts, scale: np.ndarray, k: int, size: int, start: int):
    """Items ``start : start + size``'s ``k`` nearest: (row, column, rank) triples."""
    stop = min(start + size, gram.n_items)
    return _top_sparse_rows(gram.columns(start, stop), start, scale, k)


def _solve_block(gram: Gram, nb: np.ndarray, l2s: list[float], size: int, start: int):
    """Items ``start : start + size``'s weights on their neighbours, one float32 ``(size,
    k)`` array per L2 weight (a padded neighbour: the L2 on its diagonal, 0 on its
    right-hand side)."""
    stop = min(start + size, nb.shape[0])
    a, b = _systems(gram, np.arange(start, stop), nb[start:stop])
    eye = np.eye(nb.shape[1])
    return [
        np.linalg.solve(a + reg * eye, b[:, :, None])[:, :, 0].astype(np.float32) for reg in l2s
    ]


def top_neighbours(gram: Gram, k: int, block: int = 4096, workers: int = 1) -> np.ndarray:
    """Each item's ``k`` most cosine-similar items by the Gram matrix (``G_ij / sqrt(G_ii
    G_jj)``, positive entries only): an ``(n, k)`` index array, ``-1`` where an item has
    fewer.

    Cosine rather than the raw count: a raw count ranks the most popular items first in
    every neighbourhood, while the regression gains most from the items an item is
    specifically bought with (ml-100k, k = 100: NDCG@10 0.324 against 0.311)."""
    n = gram.n_items if isinstance(gram, GramParts) else gram.shape[0]
    k = max(0, min(k, n - 1))
    idx = np.full((n, k), -1, dtype=np.int64)
    if k == 0:
        return idx
    if isinstance(gram, GramParts):
        scale = _inverse_root(gram.diagonal())
        starts = range(0, n, block)
        for start, (r, c, rank) in zip(
            starts, _blocks(_top_block, (gram, scale, k, block), starts, workers), strict=True
        ):
            idx[start + r, rank] = c
        return idx
    scale = _inverse_root(np.diag(gram))
    for start in range(0, n, 2048):
        rows = np.array(gram[start : start + 2048], dtype=np.float64)
        local = np.arange(len(rows))
        cosine = rows * scale[None, :]
        cosine[rows <= 0] = -np.inf
        cosine[local, start + local] = -np.inf
        # every entry at least the k-th largest (ties at the boundary decided by column)
        kth = -np.partition(-cosine, k - 1, axis=1)[:, k - 1 : k]
        r, c = np.nonzero((cosine >= kth) & np.isfinite(cosine))
        r, c, rank = _rank_top(r, c, cosine[r, c], k)
        idx[start + r, rank] = c
    return idx


def _systems(gram: Gram, items: np.ndarray, nb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each item of the batch, ``G[N, N]`` ``(B, k, k)`` and ``G[N, j]`` ``(B, k)``;
    padded neighbours (``-1``) have zero rows, columns and right-hand side."""
    valid = nb >= 0
    if isinstance(gram, GramParts):
        blocks = gram.systems(items, nb)
        return blocks[:, :-1, :-1], blocks[:, :-1, -1]
    local = np.where(valid, nb, 0)
    a = np.asarray(gram[local[:, :, None], local[:, None, :]], dtype=np.float64)
    a *= valid[:, :, None] & valid[:, None, :]
    b = np.asarray(gram[local, items[:, None]], dtype=np.float64) * valid
    return a, b


def neighbourhood_weights(
    gram: Gram,
    l2: float | Sequence[float],
    k: int,
    batch: int | None = None,
    progress: Progress | None = None,
    workers: int = 1,
) -> sp.csr_matrix | list[sp.csr_matrix]:
    """Sparse EASE weights (module docstring): a float32 ``(n, n)`` CSR matrix ``B`` with
    ``B[N_j, j] = w_j``, so that a user's scores are ``row @ B``. With several L2 weights,
    one matrix per weight from one pass (the systems are gathered once, which is most of
    the work).

    ``batch`` items are solved at a time (default: about 2,000 distinct items in a batch's
    Gram block, and at most ~64 MB of systems), in up to ``workers`` threads (the weights
    do not depend on how many)."""
    l2s = [float(l2)] if np.isscalar(l2) else [float(x) for x in l2]
    nb = top_neighbours(gram, k, workers=workers)
    n, k = nb.shape
    valid = nb >= 0
    if batch is None:
        batch = max(1, (64 << 20) // (8 * max(k, 1) ** 2))
        if isinstance(gram, GramParts):
            batch = min(batch, max(1, 2000 // (k + 1)))
    weights = [np.zeros((n, k), dtype=np.float32) for _ in l2s]
    starts = range(0, n, batch) if k else range(0)
    done = 0
    for start, solved in zip(
        starts, _blocks(_solve_block, (gram, nb, l2s, batch), starts, workers), strict=True
    ):
        stop = min(start + batch, n)
        for out, part in zip(weights, solved, strict=True):
            out[start:stop] = part
        if progress is not None and (stop == n or stop * 100 // n > done * 100 // n):
            progress(stop, n)  # about once per percent
        done = stop
    cols = np.repeat(np.arange(n), valid.sum(axis=1))
    heads = []
    for out in weights:
        head = sp.csr_matrix((out[valid], (nb[valid], cols)), shape=(n, n), dtype=np.float32)
        head.sort_indices()
        heads.append(head)
    return heads[0] if np.isscalar(l2) else heads
