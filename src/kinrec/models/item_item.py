"""An item-item weight matrix (EASE's weights, kinformer's linear head) as a value: a dense
``(n, n)`` float32 array (catalogues whose square fits) or a float32 CSR matrix (the sparse
EASE of :mod:`kinrec.models.sparse_linear`). Row ``i`` holds the weights from a history
item ``i`` to every item; a user's scores are ``row @ head``. Every operation here takes
either kind, so the models and the service never ask which one they hold."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

Head = np.ndarray | sp.csr_matrix


def scores(rows: sp.spmatrix | np.ndarray, head: Head, items: np.ndarray | None = None):
    """``rows @ head`` (columns ``items`` only, when given) as a dense float32 array."""
    if items is not None:
        head = head[:, np.asarray(items)]
    out = rows @ head
    if sp.issparse(out):
        return out.toarray().astype(np.float32, copy=False)
    return np.asarray(out, dtype=np.float32)


def history_scores(head: Head, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights @ head[items]``: a dense float32 vector over every item."""
    out = np.asarray(weights, dtype=np.float32) @ head[np.asarray(items)]
    return np.asarray(out, dtype=np.float32).ravel()


def history_row_scores(
    head: Head, items: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """The scores of a history as one interaction row (each item once, with its last
    weight; 1 without weights) times the head: read from the history's rows of the head
    only, not from the whole matrix."""
    items = np.asarray(items, dtype=np.int64)
    w = np.ones(len(items), np.float32) if weights is None else np.asarray(weights, np.float32)
    last = len(items) - 1 - np.unique(items[::-1], return_index=True)[1]
    return history_scores(head, items[last], w[last])


def borrowed_columns(head: Head, weights: sp.csr_matrix) -> Head:
    """``head @ weights.T``: the ``(n, rows)`` columns that items borrowing from their
    neighbours through ``weights`` get (sparse for a sparse head)."""
    if sp.issparse(head):
        return sp.csr_matrix(head @ weights.T.tocsr(), dtype=np.float32)
    return np.asarray(weights @ head.T).T


def masked_columns(columns: Head, keep: np.ndarray) -> Head:
    """``columns`` with the columns where ``keep`` is false set to zero."""
    if sp.issparse(columns):
        return sp.csr_matrix(columns @ sp.diags(keep.astype(np.float32)), dtype=np.float32)
    return np.where(keep[None, :], columns, 0.0).astype(np.float32)


def with_borrowed(head: Head, weights: sp.csr_matrix, target: np.ndarray) -> Head:
    """The head where each ``target`` item (row ``r`` of ``weights``) has the row and the
    column its neighbours give it: ``weights @ head`` and ``head @ weights.T``, both taken
    from the head with the targets' own rows and columns removed first (so it is
    idempotent), and no self-weight. A dense head is changed in place and returned."""
    target = np.asarray(target, dtype=np.int64)
    if not sp.issparse(head):
        head[:, target] = 0.0
        head[target] = 0.0
        columns = np.asarray(weights @ head.T).T
        rows = np.asarray(weights @ head)
        head[:, target] = columns
        head[target] = rows
        head[target, target] = 0.0
        return head
    n = head.shape[0]
    keep = np.ones(n, dtype=np.float32)
    keep[target] = 0.0
    cleared = sp.diags(keep) @ head @ sp.diags(keep)
    # the cleared head's target rows and columns are empty, so the borrowed rows and
    # columns never meet (their crossing, the targets among themselves, stays zero)
    placed = sp.csr_matrix(
        (np.ones(len(target), dtype=np.float32), (np.arange(len(target)), target)),
        shape=(len(target), n),
    )
    rows = sp.csr_matrix(weights @ cleared)
    columns = sp.csr_matrix(cleared @ weights.T.tocsr())
    out = sp.csr_matrix(cleared + placed.T @ rows + columns @ placed, dtype=np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def widened(head: Head, n: int) -> Head:
    """The head over ``n >= head.shape[0]`` items, the new ones without weights."""
    if sp.issparse(head):
        out = sp.csr_matrix(head, dtype=np.float32, copy=True)
        out.resize((n, n))
        return out
    out = np.zeros((n, n), dtype=np.float32)
    m = head.shape[0]
    out[:m, :m] = head
    return out


def state(head: Head, name: str = "linear") -> dict[str, np.ndarray]:
    """Arrays to save: ``name`` (dense) or ``name_data/_indices/_indptr`` (sparse)."""
    if sp.issparse(head):
        return {
            f"{name}_data": head.data.astype(np.float32),
            f"{name}_indices": head.indices.astype(np.int64),
            f"{name}_indptr": head.indptr.astype(np.int64),
        }
    return {name: head}


def from_state(arrays: dict[str, np.ndarray], n: int, name: str = "linear") -> Head | None:
    """The matrix saved by :func:`state` under ``name`` (None: none was saved)."""
    if name in arrays:
        return np.asarray(arrays[name], dtype=np.float32)
    if f"{name}_data" in arrays:
        return sp.csr_matrix(
            (arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]),
            shape=(n, n),
        )
    return None


def column(head: Head, item: int) -> np.ndarray:
    """Column ``item`` as a dense float64 vector (what each item contributes to it)."""
    col = head[:, item]
    return (col.toarray() if sp.issparse(col) else np.asarray(col)).ravel().astype(np.float64)


def describe(head: Head | None) -> str:
    if head is None:
        return "none"
    if sp.issparse(head):
        per_item = head.nnz / max(head.shape[0], 1)
        return f"sparse, {head.nnz:,} weights ({per_item:.0f} per item)"
    return f"dense, {head.shape[0]:,} x {head.shape[1]:,}"
