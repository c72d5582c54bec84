"""The store: round trips, idempotent and all-or-nothing ingestion, events, caches, SQLite setup."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from kinrec.data.dataset import Dataset
from kinrec.data.errors import DataError
from kinrec.data.loaders import load_recbole_atomic
from kinrec.store import Store, UnknownDatasetError, text_hash
from kinrec.store import schema as s
from kinrec.store.engine import insert_ignore

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("interactions", "items", "users", "triples", "links")


def _dtype(column: str) -> object:
    return {"title": "str", "rating": "float64", "timestamp": "float64"}.get(column, object)


def _frame(data: dict[str, list], source: str | None = None, first_line: int = 2) -> pd.DataFrame:
    """Columns typed as loaders type them: ids and categories object, text str, numbers float."""
    frame = pd.DataFrame({k: pd.Series(v, dtype=_dtype(k)) for k, v in data.items()})
    if source is not None:
        frame.attrs.update(source=source, first_line=first_line)
    return frame


def toy(name: str = "toy") -> Dataset:
    """Small but complete: missing ratings/timestamps/texts, multi-valued and empty attributes,
    an interaction item absent from the item table, a repeated (user, item) pair."""
    interactions = _frame(
        {
            "user_id": ["u1", "u1", "u2", "u3", "u3", "u1"],
            "item_id": ["i1", "i2", "i3", "i1", "i9", "i1"],
            "rating": [5.0, np.nan, 3.0, 4.0, 1.0, 2.0],
            "timestamp": [10.0, 11.0, np.nan, 12.0, 13.0, 14.0],
        },
        "toy/ratings.csv",
    )
    items = _frame(
        {
            "item_id": ["i3", "i1", "i2"],
            "title": ["Gamma", "Alpha", None],
            "genres": [("Drama",), ("Comedy", "Action", "Drama"), ()],
            "year": [("1999",), ("1995",), ("2001",)],
        },
        "toy/items.csv",
    )
    users = _frame(
        {"user_id": ["u2", "u1", "u3"], "gender": ["F", "M", None], "age": ["25", "35", "18"]},
        "toy/users.csv",
    )
    triples = _frame(
        {
            "head": ["e1", "e1", "e2"],
            "relation": ["directed_by", "genre", "directed_by"],
            "tail": ["p1", "g1", "p1"],
        },
        "toy/kg.tsv",
        first_line=1,
    )
    links = _frame({"item_id": ["i1", "i2"], "entity_id": ["e1", "e2"]}, "toy/links.tsv", 1)
    return Dataset(
        name=name,
        interactions=interactions,
        items=items,
        users=users,
        triples=triples,
        links=links,
        text_fields=["title"],
        attribute_fields=["genres", "year"],
        user_attribute_fields=["gender", "age"],
    )


def assert_same_dataset(got: Dataset, want: Dataset) -> None:
    assert got.name == want.name
    for table in TABLES:
        pd.testing.assert_frame_equal(
            getattr(got, table).reset_index(drop=True),
            getattr(want, table).reset_index(drop=True),
            obj=table,
        )
    assert got.text_fields == want.text_fields
    assert got.attribute_fields == want.attribute_fields
    assert got.user_attribute_fields == want.user_attribute_fields


def table_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in s.metadata.sorted_tables
        }


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path: Path) -> Store:
    """An empty store on each backend (PostgreSQL: the ``postgres_url`` server, wiped)."""
    url = f"sqlite:///{tmp_path / 'kinrec.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        engine = create_engine(url)
        s.metadata.drop_all(engine)
        engine.dispose()
    with Store(url) as st:
        yield st


def test_round_trip_keeps_tables_and_order(store: Store) -> None:
    ds = toy()
    report = store.ingest(ds)
    assert report.created
    assert report.tables["interactions"].added == 6
    assert report.tables["item_attributes"].added == 7  # 1 + 3 + 0 genres, 3 years
    assert report.tables["entities"].added == 4  # e1, e2, p1, g1 from links and triples
    back = store.load_dataset("toy")
    assert_same_dataset(back, ds)
    assert back.items["genres"].tolist() == [("Drama",), ("Comedy", "Action", "Drama"), ()]
    assert pd.isna(back.items["title"].iloc[2]) and pd.isna(back.interactions["rating"].iloc[1])
    assert back.all_item_ids() == ds.all_item_ids()  # the catalogue order survives
    pd.testing.assert_frame_equal(store.interactions_frame("toy"), back.interactions)
    stats = store.stats("toy")
    assert {k: stats[k] for k in ds.summary()} == ds.summary()
    assert (stats["entities"], stats["relations"], stats["events"]) == (4, 2, 0)
    assert store.dataset_names() == ["toy"]


def test_items_known_only_from_links_and_the_text_template_survive(store: Store) -> None:
    ds = toy()
    # i7 has no row in the item table and no interactions: a link makes it a catalogue item
    ds.links = _frame({"item_id": ["i1", "i7"], "entity_id": ["e1", "e2"]}, "toy/links.tsv", 1)
    ds.text_template = "{title}[ ({year})]"
    assert ds.all_item_ids() == ["i3", "i1", "i2", "i7", "i9"]
    report = store.ingest(ds)
    assert report.tables["items"].added == 4 and report.tables["settings"].added == 1
    back = store.load_dataset("toy")
    assert back.all_item_ids() == ds.all_item_ids()
    assert back.items["item_id"].tolist() == ["i3", "i1", "i2", "i7"]
    assert pd.isna(back.items["title"].iloc[3]) and back.items["genres"].iloc[3] == ()
    assert back.text_template == "{title}[ ({year})]"
    pd.testing.assert_frame_equal(back.links, ds.links.reset_index(drop=True))
    again = store.ingest(ds)
    assert again.added == 0
    before = table_counts(store)
    ds.text_template = "{title}"
    with pytest.raises(DataError, match="text_template") as info:
        store.ingest(ds)
    assert info.value.field == "text_template"
    assert table_counts(store) == before
    ds.text_template = None  # an input without a template keeps the stored one
    assert store.ingest(ds).added == 0
    assert store.load_dataset("toy").text_template == "{title}[ ({year})]"
    # an input that only links to an item described before does not contradict it
    ds.links = _frame({"item_id": ["i1", "i3"], "entity_id": ["e1", "e9"]}, "toy/links.tsv", 1)
    ds.items = ds.items[ds.items["item_id"] != "i3"].reset_index(drop=True)
    report = store.ingest(ds)
    assert report.tables["links"].added == 1 and report.tables["items"].added == 0
    assert store.load_dataset("toy").items["title"].iloc[0] == "Gamma"


def test_second_ingest_adds_nothing(store: Store) -> None:
    first = store.ingest(toy())
    before = table_counts(store)
    second = store.ingest(toy())
    assert not second.created
    assert second.added == 0
    assert second.present == first.added
    assert all(t.present == t.rows for t in second.tables.values())
    assert table_counts(store) == before


def test_appended_rows_are_added_alone(store: Store) -> None:
    store.ingest(toy())
    ds = toy()
    rating = {"user_id": ["u4"], "item_id": ["i4"], "rating": [2.0], "timestamp": [20.0]}
    item = {"item_id": ["i4"], "title": ["Delta"], "genres": [("Drama",)], "year": [("2005",)]}
    ds.interactions = pd.concat([ds.interactions, _frame(rating)], ignore_index=True)
    ds.items = pd.concat([ds.items, _frame(item)], ignore_index=True)
    report = store.ingest(ds)
    assert report.tables["interactions"].added == 1
    assert report.tables["items"].added == 1
    assert report.tables["item_texts"].added == 1
    assert report.tables["users"].added == 0
    assert_same_dataset(store.load_dataset("toy"), ds)


def test_progress_reports_every_table(store: Store) -> None:
    calls: list[tuple[str, int, int]] = []
    store.ingest(toy(), progress=lambda table, done, total: calls.append((table, done, total)))
    last = {table: (done, total) for table, done, total in calls}
    assert last["interactions"] == (6, 6)
    assert last["triples"] == (3, 3)


# ------------------------------------------------------------------------- bad inputs
def _dup_item(ds: Dataset) -> None:
    ds.items = _frame(
        {
            "item_id": ["i3", "i1", "i2", "i1"],
            "title": ["Gamma", "Alpha", None, "Alpha 2"],
            "genres": [(), (), (), ()],
            "year": [(), (), (), ()],
        },
        "toy/items.csv",
    )


def _dup_triple(ds: Dataset) -> None:
    ds.triples = pd.concat([ds.triples, ds.triples.iloc[[1]]], ignore_index=True)
    ds.triples.attrs.update(source="toy/kg.tsv", first_line=1)


def _dup_user(ds: Dataset) -> None:
    ds.users = _frame(
        {"user_id": ["u2", "u1", "u2"], "gender": ["F", "M", "F"], "age": ["1", "2", "1"]},
        "toy/users.csv",
    )


def _blank_link_entity(ds: Dataset) -> None:
    # a link to an item absent from the item table is fine (it joins the catalogue); a link
    # without an entity is not
    ds.links = _frame({"item_id": ["i1", "i9"], "entity_id": ["e1", " "]}, "toy/links.tsv", 1)


def _empty_relation(ds: Dataset) -> None:
    ds.triples = _frame(
        {"head": ["e1", "e2"], "relation": ["genre", " "], "tail": ["g1", "p1"]}, "toy/kg.tsv", 1
    )


def _null_user(ds: Dataset) -> None:
    ds.interactions.loc[3, "user_id"] = None


def _bad_rating(ds: Dataset) -> None:
    ds.interactions["rating"] = ds.interactions["rating"].astype(object)
    ds.interactions.loc[4, "rating"] = "five"


def _bad_tokens(ds: Dataset) -> None:
    ds.items["genres"] = ["Drama", ("Comedy",), ()]


def _undeclared_column(ds: Dataset) -> None:
    ds.items["plot"] = ["a", "b", "c"]


def _extra_interaction_column(ds: Dataset) -> None:
    ds.interactions["label"] = 1


BAD_INPUTS: dict[str, tuple[Callable[[Dataset], None], str, int | None, str]] = {
    # case: (mutation, file, line, field); data lines start at 2 (a header) unless said
    "duplicate item": (_dup_item, "toy/items.csv", 5, "item_id"),
    "duplicate triple": (_dup_triple, "toy/kg.tsv", 4, "head/relation/tail"),
    "duplicate user row": (_dup_user, "toy/users.csv", 4, "user_id"),
    "link without entity": (_blank_link_entity, "toy/links.tsv", 2, "entity_id"),
    "empty relation": (_empty_relation, "toy/kg.tsv", 2, "relation"),
    "null user id": (_null_user, "toy/ratings.csv", 5, "user_id"),
    "non-numeric rating": (_bad_rating, "toy/ratings.csv", 6, "rating"),
    "attribute not a tuple": (_bad_tokens, "toy/items.csv", 2, "genres"),
    "undeclared item column": (_undeclared_column, "toy/items.csv", None, "plot"),
    "unexpected interaction column": (_extra_interaction_column, "toy/ratings.csv", None, "label"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("name", ["toy", "other"])
def test_bad_input_changes_nothing_and_names_the_row(store: Store, case: str, name: str) -> None:
    store.ingest(toy())
    before = table_counts(store)
    mutate, file, line, field = BAD_INPUTS[case]
    ds = toy(name)
    mutate(ds)
    with pytest.raises(DataError) as info:
        store.ingest(ds)
    err = info.value
    assert (err.file, err.line, err.field) == (file, line, field)
    assert f"{file}:{line}" in str(err) if line is not None else file in str(err)
    assert table_counts(store) == before
    assert store.dataset_names() == ["toy"]
    assert_same_dataset(store.load_dataset("toy"), toy())


def test_content_differing_from_stored_is_rejected(store: Store) -> None:
    store.ingest(toy())
    before = table_counts(store)
    ds = toy()
    ds.items.loc[1, "title"] = "Alpha (director's cut)"
    ds.interactions.loc[5, "user_id"] = "u4"  # also new users/items would be written first
    ds.users.loc[3] = ["u9", "F", "40"]
    with pytest.raises(DataError) as info:
        store.ingest(ds)
    assert (info.value.file, info.value.line, info.value.field) == ("toy/items.csv", 3, "title")
    assert table_counts(store) == before

    ds = toy()
    ds.interactions.loc[2, "rating"] = 4.0
    with pytest.raises(DataError) as info:
        store.ingest(ds)
    assert (info.value.line, info.value.field) == (4, "rating")
    assert table_counts(store) == before


def test_field_declaration_must_match_the_stored_one(store: Store) -> None:
    store.ingest(toy())
    before = table_counts(store)
    ds = toy()
    ds.items["year"] = ["1999", "1995", "2001"]
    ds.attribute_fields, ds.text_fields = ["genres"], ["title", "year"]
    with pytest.raises(DataError) as info:
        store.ingest(ds)
    assert (info.value.file, info.value.field) == ("toy/items.csv", "text_fields/attribute_fields")
    assert table_counts(store) == before


def test_frames_without_source_report_table_and_row() -> None:
    ds = toy()
    ds.triples = pd.DataFrame({"head": ["e1", "e2"], "relation": ["r", ""], "tail": ["a", "b"]})
    with pytest.raises(DataError) as info:
        Store("sqlite://").ingest(ds)
    assert (info.value.file, info.value.line, info.value.field) == ("<triples>", 2, "relation")


def test_frames_read_from_several_files_report_the_right_file() -> None:
    ds = toy()
    ds.interactions.attrs = {"parts": [("train.inter", 2, 4), ("test.inter", 2, 2)]}
    ds.interactions.loc[5, "item_id"] = ""
    with pytest.raises(DataError) as info:
        Store("sqlite://").ingest(ds)
    assert (info.value.file, info.value.line, info.value.field) == ("test.inter", 3, "item_id")


def test_failure_after_partial_writes_rolls_back(store: Store, monkeypatch) -> None:
    # The last table fails after the dataset, users, items and graph were written in the same
    # transaction.
    from kinrec.store import ingest as ingest_module

    def fail(w, p) -> None:
        raise DataError("refused", file="toy/ratings.csv", line=2, field="rating")

    before = table_counts(store)
    monkeypatch.setattr(ingest_module, "_sync_interactions", fail)
    with pytest.raises(DataError, match="refused"):
        store.ingest(toy("fresh"))
    assert store.dataset_names() == []
    assert table_counts(store) == before


# ------------------------------------------------------------------- several datasets
def test_two_datasets_stay_separate(store: Store) -> None:
    a = toy("a")
    b = toy("b")  # same ids, other content
    b.items["title"] = ["x", "y", "z"]
    b.interactions["rating"] = 1.0
    b.interactions = b.interactions.iloc[:4].copy()
    store.ingest(a)
    report = store.ingest(b)
    assert report.created and report.tables["items"].added == 3
    assert store.dataset_names() == ["a", "b"]
    assert_same_dataset(store.load_dataset("a"), a)
    assert_same_dataset(store.load_dataset("b"), b)
    store.add_events("a", [{"user_id": "u1", "item_id": "i1", "type": "view"}])
    assert store.events_for_user("b", "u1") == []
    store.delete_dataset("a")
    assert store.dataset_names() == ["b"]
    assert_same_dataset(store.load_dataset("b"), b)
    with pytest.raises(UnknownDatasetError):
        store.load_dataset("a")


# ---------------------------------------------------------------------------- events
def test_events_add_read_delete(store: Store) -> None:
    store.ingest(toy())
    ids = store.add_events(
        "toy",
        [
            {"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": 100.0},
            {"user_id": "u1", "item_id": "i2", "type": "rating", "value": 4.5, "timestamp": 101},
            {"user_id": "u2", "item_id": "i2", "type": "purchase"},
        ],
    )
    assert len(ids) == 3 and ids == sorted(ids)
    # Committed: a second store on the same file sees them.
    with Store(str(store.engine.url)) as other:
        got = other.events_for_user("toy", "u1")
    assert [(e.id, e.item_id, e.type, e.value, e.timestamp) for e in got] == [
        (ids[0], "i1", "view", None, 100.0),
        (ids[1], "i2", "rating", 4.5, 101.0),
    ]
    assert [e.id for e in store.events_for_user("toy", "u1", limit=1)] == [ids[1]]
    assert [e.id for e in store.events_for_user("toy", "u1", since=101.0)] == [ids[1]]
    assert store.events_for_user("toy", "u2")[0].received_at > 0

    deleted = store.delete_user("toy", "u1")
    assert deleted == {"events": 2, "interactions": 3, "user_attributes": 2, "users": 1}
    assert store.events_for_user("toy", "u1") == []
    assert len(store.events_for_user("toy", "u2")) == 1
    back = store.load_dataset("toy")
    assert "u1" not in set(back.interactions["user_id"]) | set(back.users["user_id"])
    assert len(back.interactions) == 3


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"user_id": "u1", "item_id": "i1", "type": "poke"}, "type"),
        ({"user_id": "", "item_id": "i1", "type": "view"}, "user_id"),
        ({"user_id": "u1", "item_id": "i1", "type": "rating", "value": "high"}, "value"),
    ],
)
def test_bad_event_adds_nothing(store: Store, row: dict, field: str) -> None:
    store.ingest(toy())
    good = {"user_id": "u1", "item_id": "i1", "type": "click"}
    with pytest.raises(DataError) as info:
        store.add_events("toy", [good, row])
    assert (info.value.line, info.value.field) == (2, field)
    assert store.events_for_user("toy", "u1") == []


def test_events_need_a_stored_dataset(store: Store) -> None:
    with pytest.raises(UnknownDatasetError):
        store.add_events("nope", [{"user_id": "u", "item_id": "i", "type": "view"}])


# ----------------------------------------------------------------------------- caches
def test_embedding_cache_round_trip(store: Store) -> None:
    texts = ["a movie", "another movie"]
    hashes = [text_hash(t) for t in texts]
    vectors = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    assert store.put_embeddings("minilm", "", hashes, vectors) == 2
    assert store.put_embeddings("minilm", "", hashes, vectors) == 0
    got = store.get_embeddings("minilm", "", [*hashes, text_hash("unseen")])
    assert set(got) == set(hashes)
    np.testing.assert_array_equal(got[hashes[1]], vectors[1].astype(np.float32))
    assert got[hashes[0]].dtype == np.float32
    assert store.get_embeddings("minilm", "lora-1", hashes) == {}


def test_artifacts_put_replace_get(store: Store) -> None:
    assert store.get_artifact("models", "ease") is None
    store.put_artifact("models", "ease", b"one")
    store.put_artifact("models", "ease", b"two")
    assert store.get_artifact("models", "ease") == b"two"


# ---------------------------------------------------------------------- the database
def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'kinrec.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_in_memory_store_works() -> None:
    st = Store("sqlite://")
    st.ingest(toy())
    assert_same_dataset(st.load_dataset("toy"), toy())


def test_schema_compiles_for_postgresql() -> None:
    dialect = postgresql.dialect()
    ddl = "\n".join(str(CreateTable(t).compile(dialect=dialect)) for t in s.metadata.sorted_tables)
    ddl += "\n".join(
        str(CreateIndex(ix).compile(dialect=dialect))
        for t in s.metadata.sorted_tables
        for ix in t.indexes
    )
    assert "BIGSERIAL" in ddl  # events.id
    assert "DOUBLE PRECISION" in ddl and "BYTEA" in ddl
    stmt = insert_ignore(dialect, s.interactions)
    assert "ON CONFLICT DO NOTHING" in str(stmt.compile(dialect=dialect))


@pytest.mark.shared
def test_ml100k_round_trip_is_exact(tmp_path: Path) -> None:
    directory = Path(os.environ.get("KINREC_DATA_DIR", ROOT.parent / "shared" / "datasets"))
    if not (directory / "ml-100k" / "ml-100k.inter").exists():
        pytest.skip(f"ml-100k not found under {directory} (set KINREC_DATA_DIR)")
    ds = load_recbole_atomic(directory / "ml-100k")
    store = Store(f"sqlite:///{tmp_path / 'kinrec.db'}")
    first = store.ingest(ds)
    assert first.tables["interactions"].added == 100_000
    assert first.tables["triples"].added == len(ds.triples)
    assert store.ingest(ds).added == 0
    back = store.load_dataset(ds.name)
    for table in TABLES:  # values, order and dtypes as the loader gives them
        pd.testing.assert_frame_equal(getattr(back, table), getattr(ds, table), obj=table)
    assert back.attribute_fields == ds.attribute_fields
    assert back.user_attribute_fields == ds.user_attribute_fields


def test_writers_of_one_process_queue_for_the_sqlite_write_lock(tmp_path, monkeypatch) -> None:
    """A second writer waits on the in-process lock, never on SQLite's sleeping busy handler:
    with the busy timeout at 0 it would fail at once with "database is locked" otherwise."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from kinrec.store import engine as store_engine
    from kinrec.store.engine import write_transaction

    monkeypatch.setitem(store_engine.SQLITE_PRAGMAS, "busy_timeout", "0")
    store = Store(f"sqlite:///{tmp_path / 'kinrec.db'}")
    store.ingest(toy())
    inside, release, order = threading.Event(), threading.Event(), []

    def first() -> None:
        with write_transaction(store.engine):
            order.append("first in")
            inside.set()
            release.wait(5)
            order.append("first out")

    def second() -> None:
        with write_transaction(store.engine):
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    inside.wait(5)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.3)
    assert b.is_alive() and order == ["first in"]  # queued behind the open transaction
    release.set()
    a.join(5), b.join(5)
    assert order == ["first in", "first out", "second in"]

    def post(i: int) -> list[int]:
        return store.add_events("toy", [{"user_id": f"p{i}", "item_id": "i1", "type": "view"}])

    with ThreadPoolExecutor(8) as pool:
        ids = [i for got in pool.map(post, range(64)) for i in got]
    assert len(set(ids)) == 64
    assert all(len(store.events_for_user("toy", f"p{i}")) == 1 for i in range(64))
    store.close()


def test_background_checkpoints_replace_the_ones_on_commit(tmp_path) -> None:
    """With ``checkpoint_every`` no commit copies the log back itself (SQLite's threshold is
    off); a background thread does, and what was committed stays readable throughout."""
    import time

    url = f"sqlite:///{tmp_path / 'kinrec.db'}"
    store = Store(url, checkpoint_every=0.05)
    store.ingest(toy())
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    ids = store.add_events("toy", [{"user_id": "u9", "item_id": "i1", "type": "view"}] * 20)
    deadline = time.monotonic() + 5
    while store.checkpoints < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.checkpoints >= 2
    store.close()
    with Store(url) as plain:
        with plain.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
        assert [e.id for e in plain.events_for_user("toy", "u9")] == ids
