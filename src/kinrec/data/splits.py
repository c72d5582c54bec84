"""Splitting interactions into train / valid / test :class:`~kinrec.data.dataset.Split` s.

* :func:`random_split`: per user, a seeded random 80/10/10 (RecBole's counts), exactly as the
  shared ``benchmarks/ml-100k`` split was made.
* :func:`cold_item_split`: a share of the items held out entirely into test, the rest split
  like :func:`random_split` (``benchmarks/ml-100k-cold``).
* :func:`temporal_split`: global cut by timestamp.
* :func:`leave_one_out`: per user, last interaction -> test, second-last -> valid.

Each accepts a :class:`~kinrec.data.dataset.Dataset` (its item table fixes the catalogue and
the Split keeps the dataset) or a bare interactions frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from kinrec.data.dataset import Dataset, Split
from kinrec.data.errors import DataError

Ratios = Sequence[float]


def calcu_split_ids(total: int, ratios: Ratios) -> list[int]:
    """Cut points of ``total`` rows by ``ratios``, exactly as RecBole 1.2.1's
    ``Dataset._calcu_split_ids`` (after its normalisation in ``split_by_ratio``): every part
    but the first is rounded down, a part that would get under one row gets one while the
    first part keeps more than one."""
    norm = sum(ratios)
    ratios = [r / norm for r in ratios]
    cnt = [int(r * total) for r in ratios]
    cnt[0] = total - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return [int(x) for x in np.cumsum(cnt)[:-1]]


def _unpack(
    data: Dataset | pd.DataFrame, item_ids: Sequence[str] | None
) -> tuple[pd.DataFrame, Sequence[str], Dataset | None]:
    if isinstance(data, Dataset):
        catalogue = data.all_item_ids() if item_ids is None else item_ids
        return data.interactions, catalogue, data
    for column in ("user_id", "item_id"):
        if column not in data.columns:
            raise DataError(
                "missing required column", file=data.attrs.get("source"), line=1, field=column
            )
    return data, (() if item_ids is None else item_ids), None


def _id_order(ids: np.ndarray) -> np.ndarray:
    """Sort order of distinct ids: numerically when all are integers, else as text."""
    numbers = pd.to_numeric(pd.Series(ids, dtype=object), errors="coerce").to_numpy()
    if len(ids) and not np.isnan(numbers).any() and (numbers == np.round(numbers)).all():
        return np.argsort(numbers, kind="stable")
    return np.argsort(np.asarray(ids, dtype=str), kind="stable")


def _rows_by_user(frame: pd.DataFrame) -> list[np.ndarray]:
    """Row positions per user, users in ascending (numeric) id order, rows in file order."""
    codes, uniques = pd.factorize(frame["user_id"])
    order = _id_order(np.asarray(uniques, dtype=object))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    rows = np.argsort(rank[codes], kind="stable")
    counts = np.bincount(rank[codes], minlength=len(order))
    return np.split(rows, np.cumsum(counts)[:-1])


def _per_user_random(
    frame: pd.DataFrame, ratios: Ratios, rng: np.random.Generator
) -> list[np.ndarray]:
    """Row positions of each part: every user's rows permuted by ``rng``, then cut."""
    parts: list[list[np.ndarray]] = [[] for _ in ratios]
    for rows in _rows_by_user(frame):
        rows = rows[rng.permutation(len(rows))]
        for part, chunk in zip(
            parts, np.split(rows, calcu_split_ids(len(rows), ratios)), strict=True
        ):
            part.append(chunk)
    return [np.concatenate(p) if p else np.empty(0, np.int64) for p in parts]


def _take(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    out = frame.iloc[rows].reset_index(drop=True)
    out.attrs = {}
    return out


def _make_split(
    frame: pd.DataFrame,
    parts: Sequence[np.ndarray],
    catalogue: Sequence[str],
    dataset: Dataset | None,
) -> Split:
    train, valid, test = (_take(frame, p) for p in parts)
    return Split.from_frames(train, valid, test, item_ids=catalogue, dataset=dataset)


def _check_ratios(ratios: Ratios) -> None:
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three non-negative numbers, got {tuple(ratios)}")


def random_split(
    dataset_or_frame: Dataset | pd.DataFrame,
    ratios: Ratios = (0.8, 0.1, 0.1),
    seed: int = 2026,
    item_ids: Sequence[str] | None = None,
) -> Split:
    """Per-user random split.

    Users in ascending numeric id order share one ``numpy.random.default_rng(seed)``; each
    user's rows (in file order) are reordered by ``rng.permutation(n_u)`` and cut with
    RecBole's counts (:func:`calcu_split_ids`). The parts list users in that order and each
    user's rows in permuted order. ``item_ids`` fixes the catalogue (default: the dataset's
    item table, then items seen only in interactions).
    """
    _check_ratios(ratios)
    frame, catalogue, dataset = _unpack(dataset_or_frame, item_ids)
    parts = _per_user_random(frame, ratios, np.random.default_rng(seed))
    return _make_split(frame, parts, catalogue, dataset)


def cold_item_split(
    dataset_or_frame: Dataset | pd.DataFrame,
    fraction: float = 0.15,
    min_count: int = 5,
    seed: int = 2026,
    ratios: Ratios = (0.8, 0.1, 0.1),
    item_ids: Sequence[str] | None = None,
) -> Split:
    """Hold out ``fraction`` of the items with ``>= min_count`` rows entirely into test.

    Cold items: ``default_rng(seed).choice(eligible ids in ascending numeric order,
    size=round(fraction * n_eligible), replace=False)``. The other rows are split like
    :func:`random_split` with a fresh ``default_rng(seed)``; test = the warm test rows followed
    by all cold-item rows (file order). Cold items are those with no train row
    (``kinrec.evaluation.protocol.cold_item_mask``).
    """
    _check_ratios(ratios)
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    frame, catalogue, dataset = _unpack(dataset_or_frame, item_ids)
    codes, uniques = pd.factorize(frame["item_id"])
    counts = np.bincount(codes, minlength=len(uniques))
    eligible = np.asarray(uniques, dtype=object)[counts >= min_count]
    eligible = eligible[_id_order(eligible)]
    n_cold = round(fraction * len(eligible))
    cold = np.random.default_rng(seed).choice(eligible, size=n_cold, replace=False)
    is_cold = frame["item_id"].isin(set(cold)).to_numpy()
    warm_rows = np.flatnonzero(~is_cold)
    warm = frame.iloc[warm_rows].reset_index(drop=True)
    train, valid, test = _per_user_random(warm, ratios, np.random.default_rng(seed))
    parts = [
        warm_rows[train],
        warm_rows[valid],
        np.concatenate([warm_rows[test], np.flatnonzero(is_cold)]),
    ]
    if dataset is not None:  # the held-out items are the catalogue's new items
        dataset = dataclasses.replace(dataset, new_items=[str(i) for i in sorted(cold)])
    return _make_split(frame, parts, catalogue, dataset)


def _timestamps(frame: pd.DataFrame) -> np.ndarray:
    if "timestamp" not in frame.columns:
        raise DataError(
            "missing required column", file=frame.attrs.get("source"), field="timestamp"
        )
    stamps = frame["timestamp"].to_numpy(np.float64)
    missing = np.isnan(stamps)
    if missing.any():
        pos = int(np.flatnonzero(missing)[0])
        first = frame.attrs.get("first_line")
        raise DataError(
            "missing timestamp",
            file=frame.attrs.get("source"),
            line=None if first is None else int(first) + pos,
            field="timestamp",
        )
    return stamps


def temporal_split(
    dataset_or_frame: Dataset | pd.DataFrame,
    ratios: Ratios = (0.8, 0.1, 0.1),
    item_ids: Sequence[str] | None = None,
) -> Split:
    """Global split by time: all rows sorted by timestamp (ties in file order), the earliest
    share -> train, then valid, the latest -> test (RecBole's counts). Deterministic."""
    _check_ratios(ratios)
    frame, catalogue, dataset = _unpack(dataset_or_frame, item_ids)
    order = np.argsort(_timestamps(frame), kind="stable")
    parts = np.split(order, calcu_split_ids(len(order), ratios))
    return _make_split(frame, parts, catalogue, dataset)


def leave_one_out(
    dataset_or_frame: Dataset | pd.DataFrame,
    item_ids: Sequence[str] | None = None,
) -> Split:
    """Per user by timestamp (ties in file order): last row -> test, second-last -> valid.

    As RecBole's ``leave_one_out``: a user with two rows gets train + test, one row train only.
    Without any timestamps (all NaN) the file order is the time order. Deterministic.
    """
    frame, catalogue, dataset = _unpack(dataset_or_frame, item_ids)
    if "timestamp" in frame.columns and frame["timestamp"].isna().all():
        stamps = np.arange(len(frame), dtype=np.float64)
    else:
        stamps = _timestamps(frame)
    train, valid, test = [], [], []
    for rows in _rows_by_user(frame):
        rows = rows[np.argsort(stamps[rows], kind="stable")]
        held = min(2, len(rows) - 1)
        cut = len(rows) - held
        train.append(rows[:cut])
        if held == 2:
            valid.append(rows[cut : cut + 1])
        if held >= 1:
            test.append(rows[-1:])
    parts = [np.concatenate(p) if p else np.empty(0, np.int64) for p in (train, valid, test)]
    return _make_split(frame, parts, catalogue, dataset)


__all__ = ["calcu_split_ids", "cold_item_split", "leave_one_out", "random_split", "temporal_split"]
