"""Splits: RecBole's counts, seeded per-user random, cold items, time-based; and the exact
reproduction of the shared benchmark split files (when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kinrec.data.dataset import Dataset, Interactions
from kinrec.data.errors import DataError
from kinrec.data.loaders import load_movielens_1m, load_recbole_atomic, load_split_dir
from kinrec.data.splits import (
    calcu_split_ids,
    cold_item_split,
    leave_one_out,
    random_split,
    temporal_split,
)
from kinrec.evaluation.protocol import cold_item_mask

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def rows(part: Interactions) -> list[tuple[str, str, float]]:
    users = part.user_map.ids(part.users)
    items = part.item_map.ids(part.items)
    stamps = part.timestamps if part.timestamps is not None else [np.nan] * len(part)
    return list(zip(users, items, [float(t) for t in stamps], strict=True))


def frame(triples: list[tuple[str, str, float]]) -> pd.DataFrame:
    out = pd.DataFrame(triples, columns=["user_id", "item_id", "timestamp"])
    out.insert(2, "rating", np.nan)
    return out


def toy() -> pd.DataFrame:
    """User "10" (12 rows), user "9" (5 rows), user "2" (1 row), interleaved in the file."""
    triples = []
    for k in range(12):
        triples.append(("10", f"i{k}", float(100 + k)))
        if k < 5:
            triples.append(("9", f"i{k + 3}", float(200 - k)))
    triples.append(("2", "i0", 7.0))
    return frame(triples)


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (10, [8, 9]),
        (20, [16, 18]),
        (5, [3, 4]),
        (2, [1, 1]),
        (1, [1, 1]),
        (0, [0, 0]),
        (19, [17, 18]),
    ],
)
def test_calcu_split_ids_as_recbole(total: int, expected: list[int]) -> None:
    assert calcu_split_ids(total, [0.8, 0.1, 0.1]) == expected
    assert calcu_split_ids(total, [8, 1, 1]) == expected  # ratios are normalised


def test_random_split_is_recbole_per_user_with_one_generator() -> None:
    data = toy()
    split = random_split(data, seed=7)
    # Expected by hand: users in numeric order 2, 9, 10; one generator for all of them.
    rng = np.random.default_rng(7)
    expected: dict[str, list] = {"train": [], "valid": [], "test": []}
    for user in ("2", "9", "10"):
        user_rows = [
            r for r in zip(data.user_id, data.item_id, data.timestamp, strict=True) if r[0] == user
        ]
        permuted = [user_rows[i] for i in rng.permutation(len(user_rows))]
        a, b = calcu_split_ids(len(permuted), [0.8, 0.1, 0.1])
        expected["train"] += permuted[:a]
        expected["valid"] += permuted[a:b]
        expected["test"] += permuted[b:]
    assert rows(split.train) == expected["train"]
    assert rows(split.valid) == expected["valid"]
    assert rows(split.test) == expected["test"]
    assert (len(split.train), len(split.valid), len(split.test)) == (1 + 3 + 10, 1 + 1, 1 + 1)


def test_random_split_seed_and_coverage() -> None:
    data = toy()
    a, b, c = random_split(data), random_split(data), random_split(data, seed=1)
    assert rows(a.train) == rows(b.train) and rows(a.test) == rows(b.test)
    assert rows(a.train) != rows(c.train)
    everything = rows(a.train) + rows(a.valid) + rows(a.test)
    assert sorted(everything) == sorted(
        zip(data.user_id, data.item_id, data.timestamp, strict=True)
    )
    assert a.n_users == 3 and a.dataset is None


def test_random_split_of_a_dataset_keeps_the_catalogue() -> None:
    data = toy()
    items = pd.DataFrame({"item_id": ["never", *[f"i{k}" for k in range(15)]]})
    ds = Dataset(name="toy", interactions=data, items=items)
    split = random_split(ds)
    assert split.dataset is ds and split.n_items == 16
    assert split.train.item_map.ids()[0] == "never"
    assert random_split(data, item_ids=["z"]).train.item_map.ids()[0] == "z"


def test_temporal_split_is_global_by_time() -> None:
    data = toy()
    split = temporal_split(data)
    stamps = [t for _, _, t in rows(split.train)], [t for _, _, t in rows(split.valid)]
    test = [t for _, _, t in rows(split.test)]
    assert max(stamps[0]) <= min(stamps[1]) and max(stamps[1]) <= min(test)
    assert (len(split.train), len(split.valid), len(split.test)) == (16, 1, 1)
    data.loc[3, "timestamp"] = np.nan
    with pytest.raises(DataError, match="missing timestamp") as info:
        temporal_split(data)
    assert info.value.field == "timestamp"


def test_leave_one_out_takes_the_latest_rows() -> None:
    split = leave_one_out(toy())
    test = {u: (i, t) for u, i, t in rows(split.test)}
    valid = {u: (i, t) for u, i, t in rows(split.valid)}
    assert test == {"9": ("i3", 200.0), "10": ("i11", 111.0)}  # user "2" has one row: train only
    assert valid == {"9": ("i4", 199.0), "10": ("i10", 110.0)}
    assert len(split.train) == 18 - 4
    two = leave_one_out(frame([("u", "a", 2.0), ("u", "b", 1.0)]))
    assert rows(two.train) == [("u", "b", 1.0)] and rows(two.test) == [("u", "a", 2.0)]
    assert len(two.valid) == 0
    no_time = leave_one_out(frame([("u", "a", np.nan), ("u", "b", np.nan), ("u", "c", np.nan)]))
    assert [r[1] for r in rows(no_time.valid) + rows(no_time.test)] == ["b", "c"]


def test_cold_item_split_holds_items_out() -> None:
    rng = np.random.default_rng(0)
    triples = [
        (str(u), f"{i}", float(u * 100 + i))
        for u in range(30)
        for i in rng.choice(40, 12, replace=False)
    ]
    data = frame(triples)
    split = cold_item_split(data, fraction=0.25, min_count=5, seed=3)
    counts = data.item_id.value_counts()
    eligible = sorted((i for i, c in counts.items() if c >= 5), key=int)
    expected = set(
        np.random.default_rng(3).choice(
            np.array(eligible, dtype=object), round(0.25 * len(eligible)), replace=False
        )
    )
    train_items = {i for _, i, _ in rows(split.train)} | {i for _, i, _ in rows(split.valid)}
    assert not train_items & expected
    cold_rows = [r for r in rows(split.test) if r[1] in expected]
    assert len(cold_rows) == int(counts[list(expected)].sum())
    assert rows(split.test)[-len(cold_rows) :] == cold_rows  # warm test rows first
    assert len(split.train) + len(split.valid) + len(split.test) == len(data)
    assert rows(cold_item_split(data, 0.25, 5, 3).test) == rows(split.test)


# --------------------------------------------------------------------------- shared benchmarks


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


def _same_parts(ours, theirs) -> None:
    """Same vocabularies and, part by part, the same rows in the same order."""
    assert ours.train.user_map.ids() == theirs.train.user_map.ids()
    assert ours.train.item_map.ids() == theirs.train.item_map.ids()
    for part in ("train", "valid", "test"):
        a, b = getattr(ours, part), getattr(theirs, part)
        for field in ("users", "items", "ratings", "timestamps"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (part, field)


@pytest.mark.shared
def test_reproduces_shared_ml100k_split() -> None:
    ds = load_recbole_atomic(_need(SHARED / "datasets" / "ml-100k"))
    ours = random_split(ds, seed=2026)
    _same_parts(ours, load_split_dir(_need(SHARED / "benchmarks" / "ml-100k")))
    assert ours.n_items == 1682


@pytest.mark.shared
def test_reproduces_shared_ml100k_cold_split() -> None:
    ds = load_recbole_atomic(_need(SHARED / "datasets" / "ml-100k"))
    ours = cold_item_split(ds, fraction=0.15, min_count=5, seed=2026)
    bench = _need(SHARED / "benchmarks" / "ml-100k-cold")
    loaded = load_split_dir(bench)
    _same_parts(ours, loaded)
    listed = (bench / "ml-100k.cold_items.txt").read_text().split()
    assert len(listed) == 202
    assert sorted(ours.dataset.new_items, key=int) == listed == loaded.dataset.new_items
    # the test part ends with all 14,832 rows of the cold items, which have no train row
    assert sorted({i for _, i, _ in rows(ours.test)[-14_832:]}, key=int) == listed
    no_train_row = set(ours.train.item_map.ids(np.flatnonzero(cold_item_mask(ours.train))))
    assert set(listed) <= no_train_row
    assert not set(listed) & {i for _, i, _ in rows(ours.valid)}


@pytest.mark.shared
def test_reproduces_shared_ml1m_split() -> None:
    ds = load_movielens_1m(_need(SHARED / "datasets" / "ml-1m"))
    _same_parts(random_split(ds, seed=2026), load_split_dir(_need(SHARED / "benchmarks" / "ml-1m")))
