"""Engine creation and the few dialect-specific pieces (SQLite pragmas, INSERT ... ON CONFLICT)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert

SQLITE_PRAGMAS = {
    "journal_mode": "WAL",
    "synchronous": "NORMAL",  # durable at checkpoints; safe with WAL
    "foreign_keys": "ON",
    "busy_timeout": "30000",  # ms to wait for a writer instead of failing at once
    "cache_size": "-65536",  # 64 MiB page cache
    "temp_store": "MEMORY",
}

_BEGIN_OPTION = "kinrec_begin"
# One writer at a time per SQLite engine, queued in-process: SQLite's own busy handler makes a
# waiting writer poll with sleeps of up to 100 ms, which under concurrent event posts turns
# into long, unfair waits (and a full thread pool).
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


def make_engine(url: str, autocheckpoint: bool = True) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and real transactions.

    ``autocheckpoint=False``: SQLite commits never copy the WAL back into the database file
    themselves (a ~30 ms pause every few hundred commits); the owner calls
    :func:`checkpoint` instead.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:  # one shared connection, or every connection would see its own database
        kwargs["poolclass"] = StaticPool
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    _WRITE_LOCKS[engine] = threading.RLock()
    pragmas = {k: v for k, v in SQLITE_PRAGMAS.items() if not (in_memory and k == "journal_mode")}
    if not autocheckpoint:
        pragmas["wal_autocheckpoint"] = "0"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (sqlite3's legacy mode skips it before SELECTs).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for name, value in pragmas.items():
            cursor.execute(f"PRAGMA {name}={value}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection inside one transaction that is committed on success, rolled back on error.

    On SQLite, writers of this process queue on an in-process lock, then start with
    ``BEGIN IMMEDIATE``: the database's write lock is taken up front, so a transaction that
    reads before it writes cannot fail half-way on a lock upgrade.
    """
    lock = _WRITE_LOCKS.get(engine)
    with lock if lock is not None else nullcontext(), engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn = conn.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        with conn.begin():
            yield conn


def checkpoint(engine: Engine) -> None:
    """Copy committed WAL pages into a SQLite database file without blocking writers or
    readers (``PRAGMA wal_checkpoint(PASSIVE)``); nothing to do on other databases."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def insert_ignore(dialect: Dialect, table: Table) -> Insert:
    """``INSERT`` that skips rows whose key is already stored (where the dialect can say so)."""
    name = dialect.name
    if name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return insert(table)


def execute_many(
    conn: Connection, stmt: Insert, names: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Run a Core ``INSERT`` for many rows, given as tuples in ``names`` order.

    The statement is compiled once for the connection's dialect and the rows go straight to
    the driver's ``executemany``: SQLAlchemy's per-row parameter processing would otherwise
    cost more than the database itself (about 10 s per million rows). Only for columns whose
    types need no bind processing (strings, integers, floats).
    """
    if not rows:
        return
    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(names))
    if compiled.positional:
        order = [list(names).index(k) for k in compiled.positiontup or ()]
        params: Sequence[Any] = (
            rows if order == list(range(len(names))) else [tuple(r[i] for i in order) for r in rows]
        )
    else:
        params = [dict(zip(names, r, strict=True)) for r in rows]
    conn.exec_driver_sql(str(compiled), params)  # type: ignore[arg-type]
