"""Interactions read in partitions by Ray Data on a real two-worker-node Ray cluster bound to
127.0.0.1, from a kinrec store (SQLite, and PostgreSQL where the fixture has one) and from
Parquet files: every event once, by user, at the store's indices; the Gram matrix and counts
summed from the partitions equal the whole matrix's; EASE from them equals EASE's own fit;
clear errors naming the source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from kinrec.data.dataset import Dataset, IdMap, Interactions
from kinrec.models.ease import EASE
from kinrec.store import Store

pytest.importorskip("ray")

from kinrec.distributed.partitions import (
    PartitionSourceError,
    fit_ease_partitioned,
    item_statistics,
    partition_rows,
    read_partitions,
    read_vocabulary,
)

NAME = "toy"
PARTITIONS = 3
L2 = 20.0


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cluster() -> str:
    from kinrec.distributed.cluster import local_cluster

    with local_cluster(2) as address:
        yield address


def make_dataset() -> Dataset:
    """30 users over 25 items, integer ratings (some missing), a pair seen twice; the user
    and item tables list only some of them (the rest are named only by interactions), in an
    order unlike the interactions'."""
    rng = np.random.default_rng(3)
    rows = []
    for u in rng.permutation(30):
        for i in rng.choice(25, size=int(rng.integers(1, 9)), replace=False):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), float(len(rows))))
    rows.append((rows[0][0], rows[0][1], 5.0, float(len(rows))))  # a repeated pair
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    frame.loc[::7, "rating"] = np.nan
    for c in ("user_id", "item_id"):
        frame[c] = frame[c].astype(object)
    users = pd.DataFrame({"user_id": pd.Series([f"u{u}" for u in (29, 3, 17, 8)], dtype=object)})
    items = pd.DataFrame({"item_id": pd.Series([f"i{i}" for i in range(24, 4, -1)], dtype=object)})
    return Dataset(name=NAME, interactions=frame, items=items, users=users)


def store_url(url: str) -> str:
    with Store(url) as store:
        store.ingest(make_dataset())
    return url


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return store_url(f"sqlite:///{tmp_path_factory.mktemp('store') / 'k.db'}")


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interactions in three Parquet files, rows shuffled (users spread over files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("parquet") / "events"
    root.mkdir()
    frame = make_dataset().interactions.sample(frac=1.0, random_state=0)
    for n, rows in enumerate(np.array_split(np.arange(len(frame)), 3)):
        part = pa.Table.from_pandas(frame.iloc[rows], preserve_index=False)
        pq.write_table(part, root / f"p{n}.parquet")
    return root


def reference(frame: pd.DataFrame, users: list[str], items: list[str]) -> Interactions:
    """The whole table indexed in one process: the stored order first, then first appearance."""
    return Interactions.from_frame(frame, IdMap(users), IdMap(items))


def store_reference(url: str) -> Interactions:
    with Store(url) as store:
        data = store.load_dataset(NAME)
    return reference(data.interactions, list(data.users["user_id"]), list(data.items["item_id"]))


def parquet_reference(root: Path) -> Interactions:
    frame = pd.read_parquet(root)
    return reference(frame, sorted(set(frame["user_id"])), sorted(set(frame["item_id"])))


def weighted(ref: Interactions, ratings: bool) -> sp.csr_matrix:
    """X of the whole table: a pair once, with its largest weight (rating; 1 without)."""
    w = np.ones(len(ref)) if not ratings else np.where(np.isnan(ref.ratings), 1.0, ref.ratings)
    order = np.lexsort((w, ref.items, ref.users))
    u, i, w = ref.users[order], ref.items[order], w[order]
    last = np.r_[(u[1:] != u[:-1]) | (i[1:] != i[:-1]), True]
    return sp.csr_matrix((w[last], (u[last], i[last])), shape=(ref.n_users, ref.n_items))


def blocks(ds) -> list[dict[str, np.ndarray]]:
    return list(ds.iter_batches(batch_size=None, batch_format="numpy"))


# ------------------------------------------------------------------------------ checks
def check_source(source, ref: Interactions, *, store: bool, dataset: str | None = None) -> None:
    vocab = read_vocabulary(source, dataset=dataset)
    assert vocab.user_ids == ref.user_map.ids() and vocab.item_ids == ref.item_map.ids()
    ds = read_partitions(source, dataset=dataset, partitions=PARTITIONS, vocabulary=vocab)
    parts = [b for b in blocks(ds) if len(b["user"])]
    if store:
        assert len(parts) == PARTITIONS
    # (a) every event once, at the reference's indices; each user's rows one run of one block
    got = np.concatenate([np.stack([b["user"], b["item"]]) for b in parts], axis=1)
    want = np.stack([ref.users, ref.items])
    assert sorted(map(tuple, got.T.tolist())) == sorted(map(tuple, want.T.tolist()))
    # the contract the statistics rely on: each row carries its user's number of rows
    totals = np.bincount(ref.users, minlength=ref.n_users)
    for b in parts:
        np.testing.assert_array_equal(b["user_rows"], totals[b["user"]])
        if store:  # one query per partition: one block each, one residue each
            assert len(set((b["user"] % PARTITIONS).tolist())) == 1
        assert (b["weight"] == 1.0).all()
    # (b) Gram matrix and counts, binary and with ratings; the rows themselves
    for ratings in (False, True):
        x = weighted(ref, ratings)
        rows = read_partitions(
            source, dataset=dataset, partitions=PARTITIONS, ratings=ratings, vocabulary=vocab
        )
        gram, counts = item_statistics(rows, vocab.n_items)
        want_gram = (x.T @ x).tocsr()
        assert gram.dtype == np.float64 and gram.shape == want_gram.shape
        assert (gram != want_gram).nnz == 0
        assert np.array_equal(counts, np.diff(x.tocsc().indptr))
        if not ratings:  # users cut across small blocks, and blocks in any order: the same
            for cut in (
                rows.repartition(target_num_rows_per_block=5),
                rows.random_shuffle(seed=0).repartition(7),  # every user spread out
            ):
                sliced = item_statistics(cut, vocab.n_items)
                assert (sliced[0] != want_gram).nnz == 0 and np.array_equal(sliced[1], counts)
                cut_rows = partition_rows(cut, vocab.n_users, vocab.n_items)
                assert (cut_rows != x.astype(np.float32)).nnz == 0
        seen = partition_rows(rows, vocab.n_users, vocab.n_items)
        assert seen.dtype == np.float32 and (seen != x.astype(np.float32)).nnz == 0
        assert seen.has_sorted_indices
    # (c) EASE from the partitions equals EASE's own fit
    model = fit_ease_partitioned(source, dataset=dataset, partitions=PARTITIONS, l2=L2)
    single = EASE({"reg_weight": L2}).fit(ref)
    assert model.user_map.ids() == single.user_map.ids()
    assert (model.seen != single.seen).nnz == 0
    np.testing.assert_allclose(model.weights, single.weights, atol=1e-6)
    users = np.arange(ref.n_users)
    np.testing.assert_allclose(model.score(users), single.score(users), atol=1e-5)
    assert model.fit_info["solver"] == "dense"


def test_store_partitions_on_sqlite(cluster, sqlite_url) -> None:
    check_source(sqlite_url, store_reference(sqlite_url), store=True, dataset=NAME)


def test_store_partitions_on_postgresql(cluster, postgres_url) -> None:
    with Store(postgres_url) as store:
        if NAME in store.dataset_names():
            store.delete_dataset(NAME)
    url = store_url(postgres_url)
    try:
        check_source(url, store_reference(url), store=True, dataset=NAME)
    finally:
        with Store(url) as store:
            store.delete_dataset(NAME)


def test_parquet_partitions(cluster, parquet_dir) -> None:
    check_source(parquet_dir, parquet_reference(parquet_dir), store=False)


def test_stored_positions_come_first(cluster, sqlite_url) -> None:
    vocab = read_vocabulary(sqlite_url, dataset=NAME)
    assert vocab.user_ids[:4] == ["u29", "u3", "u17", "u8"]
    assert vocab.item_ids[:20] == [f"i{i}" for i in range(24, 4, -1)]
    assert len(set(vocab.user_ids)) == vocab.n_users == 30


def test_unknown_dataset_is_a_clear_error(cluster, sqlite_url) -> None:
    with pytest.raises(PartitionSourceError, match=r"no dataset 'nope' in the store sqlite:///"):
        read_partitions(sqlite_url, dataset="nope", partitions=2)
    with pytest.raises(PartitionSourceError, match="stored: \\['toy'\\]"):
        fit_ease_partitioned(sqlite_url, dataset="nope", partitions=2)


def test_parquet_without_item_id_is_a_clear_error(cluster, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"user_id": ["a", "b"], "product": ["x", "y"]}), path)
    with pytest.raises(PartitionSourceError, match=r"bad\.parquet.*no column 'item_id'"):
        read_partitions(path, partitions=2)


def test_reading_needs_a_connected_cluster(sqlite_url, monkeypatch) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match="not connected"):
        read_partitions(sqlite_url, dataset=NAME, partitions=2)


# ------------------------------------------------------------------------------ the CLI
def test_cli_fits_ease_from_partitions(cluster, sqlite_url, parquet_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from kinrec.cli import app
    from kinrec.models.base import Recommender

    runner = CliRunner()
    common = ["train", "-m", "ease", "--ray", cluster, "--partitions", "3"]
    for source, ref, extra in (
        ("store", store_reference(sqlite_url), ["--db", sqlite_url, "--dataset", NAME]),
        ("parquet", parquet_reference(parquet_dir), ["--parquet", str(parquet_dir)]),
    ):
        out = tmp_path / source
        result = runner.invoke(app, [*common, *extra, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "no split, no evaluation" in result.output
        model = Recommender.load(out)
        single = EASE().fit(ref)  # the configuration's defaults, as the CLI's
        assert model.item_map.ids() == single.item_map.ids()
        np.testing.assert_allclose(model.weights, single.weights, atol=1e-6)
        assert model.fit_info["ray"] == {"partitions": 3, "source": source}
        record = (out / "split.json").read_text()
        assert (f'"dataset": "{NAME}"' in record) == (source == "store")
    # refusals: a model that is not a sum over users, no cluster, --parquet alone
    for args, message in (
        (["train", "-m", "bpr", "--ray", cluster, "--partitions", "3", "--db", sqlite_url],
         "fits ease"),
        (["train", "-m", "ease", "--partitions", "3", "--db", sqlite_url], "give --ray"),
        (["train", "-m", "ease", "--parquet", str(parquet_dir)], "with --partitions"),
        (["retrain", "--model-dir", str(tmp_path / "store")], "train --partitions"),
    ):  # fmt: skip
        result = runner.invoke(app, args, env={"KINREC_RAY_ADDRESS": ""})
        assert result.exit_code != 0 and message in result.output, result.output


def test_a_catalogue_too_large_for_the_dense_solve_is_refused_first(cluster, sqlite_url) -> None:
    with pytest.raises(ValueError, match=r"25 items is more than max_dense_items \(10\)"):
        fit_ease_partitioned(sqlite_url, dataset=NAME, partitions=2, config={"max_dense_items": 10})
