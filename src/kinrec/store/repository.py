"""The :class:`Store`: datasets, events and caches on one database (SQLite file by default)."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, delete, func, insert, select

from kinrec.data.dataset import Dataset
from kinrec.data.errors import DataError
from kinrec.store import read
from kinrec.store import schema as s
from kinrec.store.engine import checkpoint, insert_ignore, make_engine, write_transaction
from kinrec.store.ingest import IngestProgress, IngestReport, prepare, write

if TYPE_CHECKING:
    from kinrec.privacy.pseudonym import Pseudonymiser

DEFAULT_URL = "sqlite:///kinrec.db"
_IN_CHUNK = 500  # ids per IN (...) list


class UnknownDatasetError(KeyError):
    """The store holds no dataset of that name."""


@dataclass(frozen=True)
class Event:
    """One real-time user event."""

    id: int
    user_id: str
    item_id: str
    type: str
    value: float | None
    timestamp: float  # when it happened, epoch seconds
    received_at: float  # when the store got it, epoch seconds


def text_hash(text: str) -> str:
    """The key of a text in the embedding cache: sha256 hex of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Store:
    """Datasets, events and caches on the database at ``url`` (SQLAlchemy URL).

    ``sqlite:///path.db`` (the default, WAL mode) or ``postgresql+psycopg://...``; the schema
    is created on first use. ``checkpoint_every`` (seconds): a background thread moves the
    SQLite write-ahead log into the database file that often, instead of the commit that
    crosses SQLite's threshold (what a service wants: no write pauses on the request path).
    """

    def __init__(self, url: str = DEFAULT_URL, *, checkpoint_every: float | None = None) -> None:
        self.engine = make_engine(url, autocheckpoint=checkpoint_every is None)
        self.checkpoints = 0
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if checkpoint_every is not None and self.engine.dialect.name == "sqlite":
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(checkpoint_every,), daemon=True
            )
        with write_transaction(self.engine) as conn:
            s.metadata.create_all(conn)
            version = conn.execute(
                select(s.meta.c.value).where(s.meta.c.key == "schema_version")
            ).scalar()
            if version is None:
                conn.execute(
                    insert_ignore(conn.dialect, s.meta).values(
                        key="schema_version", value=str(s.SCHEMA_VERSION)
                    )
                )
            elif int(version) != s.SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.engine.url!r} has store schema version {version}, this kinrec "
                    f"reads version {s.SCHEMA_VERSION}"
                )
        if self._checkpointer is not None:
            self._checkpointer.start()

    def __repr__(self) -> str:
        return f"Store({self.engine.url!r})"  # URL repr hides any password

    def _checkpoint_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            checkpoint(self.engine)
            self.checkpoints += 1

    def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
            checkpoint(self.engine)
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- datasets
    def ingest(
        self,
        dataset: Dataset,
        *,
        progress: IngestProgress | None = None,
        pseudonymiser: Pseudonymiser | None = None,
    ) -> IngestReport:
        """Store ``dataset`` in one transaction: idempotent, all or nothing.

        Rows already stored (same key, same content) are skipped. A bad row, or a row that
        contradicts what is stored, raises :class:`DataError` (file, line, field) and leaves
        the database as it was. With ``pseudonymiser``, user ids are replaced by their
        pseudonyms before anything is written (:mod:`kinrec.privacy.pseudonym`); a store never
        mixes raw and pseudonymous ids, nor two keys (:class:`PseudonymError`).
        """
        from kinrec.privacy.pseudonym import check_ingest, pseudonymise_dataset

        t0 = time.perf_counter()
        if pseudonymiser is not None:
            dataset = pseudonymise_dataset(dataset, pseudonymiser)
        prepared = prepare(dataset)
        t1 = time.perf_counter()
        with write_transaction(self.engine) as conn:
            check_ingest(conn, pseudonymiser, f"the store {self.engine.url!r}")
            _, created, tables = write(conn, prepared, progress)
        return IngestReport(dataset.name, created, tables, t1 - t0, time.perf_counter() - t1)

    def dataset_names(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(select(s.datasets.c.name).order_by(s.datasets.c.name)).scalars()
            )

    def load_dataset(self, name: str) -> Dataset:
        """The stored dataset, tables in the order they were ingested."""
        with self.engine.connect() as conn:
            did = self._dataset_id(conn, name)
            decl = read.read_fields(conn, did)
            return Dataset(
                name=name,
                interactions=read.read_interactions(conn, did),
                items=read.read_items(conn, did, decl),
                users=read.read_users(conn, did, decl),
                triples=read.read_triples(conn, did),
                links=read.read_links(conn, did),
                text_fields=decl.text_fields,
                attribute_fields=decl.attribute_fields,
                user_attribute_fields=decl.user_attribute_fields,
                text_template=decl.text_template,
            )

    def interactions_frame(self, name: str) -> pd.DataFrame:
        """``user_id``, ``item_id``, ``rating``, ``timestamp`` of a dataset, in stored order."""
        with self.engine.connect() as conn:
            return read.read_interactions(conn, self._dataset_id(conn, name))

    def stats(self, name: str) -> dict[str, int]:
        """Row counts: the keys of :meth:`Dataset.summary` plus entities, relations, events."""
        with self.engine.connect() as conn:
            did = self._dataset_id(conn, name)
            inter = s.interactions
            n_users = conn.execute(
                select(func.count(func.distinct(inter.c.user_id))).where(inter.c.dataset_id == did)
            ).scalar_one()
            return {
                "interactions": read.count_rows(conn, inter, did),
                "users": int(n_users),
                "items": read.count_rows(conn, s.items, did),
                "user_rows": read.count_rows(conn, s.users, did),
                "triples": read.count_rows(conn, s.triples, did),
                "links": read.count_rows(conn, s.links, did),
                "entities": read.count_rows(conn, s.entities, did),
                "relations": read.count_rows(conn, s.relations, did),
                "events": read.count_rows(conn, s.events, did),
            }

    def delete_dataset(self, name: str) -> None:
        """Remove a dataset and everything keyed by it (its events included)."""
        with write_transaction(self.engine) as conn:
            did = self._dataset_id(conn, name)
            for table in reversed(s.DATASET_TABLES):
                conn.execute(delete(table).where(table.c.dataset_id == did))
            conn.execute(delete(s.datasets).where(s.datasets.c.id == did))

    # ------------------------------------------------------------------------- events
    def add_events(
        self, dataset: str, rows: Iterable[Mapping[str, Any]], *, origin: str | None = None
    ) -> list[int]:
        """Append events; returns their ids, in order. Committed before returning.

        Each row: ``user_id``, ``item_id``, ``type`` (one of :data:`schema.EVENT_TYPES`),
        optional ``value`` (float) and ``timestamp`` (epoch seconds; default: now).
        ``origin`` (a service replica): the batch also goes to the replication log
        (:mod:`kinrec.store.changes`) in the same transaction.
        """
        now = time.time()
        records = [_event_record(i, row, now) for i, row in enumerate(rows)]
        if not records:
            return []
        with write_transaction(self.engine) as conn:
            did = self._dataset_id(conn, dataset)
            for r in records:
                r["dataset_id"] = did
            stmt = insert(s.events).returning(s.events.c.id, sort_by_parameter_order=True)
            ids = [int(i) for i in conn.execute(stmt, records).scalars()]
            if origin is not None:
                from kinrec.store import changes

                changes.record(conn, changes.Pending(dataset, "events", origin, {"ids": ids}))
            return ids

    def events_for_user(
        self,
        dataset: str,
        user_id: str,
        *,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """The user's events, oldest first; ``since``: timestamp lower bound (inclusive);
        ``limit``: only the most recent ``limit``."""
        e = s.events
        with self.engine.connect() as conn:
            did = self._dataset_id(conn, dataset)
            columns = ("id", "user_id", "item_id", "type", "value", "timestamp", "received_at")
            stmt = select(*(e.c[c] for c in columns)).where(
                e.c.dataset_id == did, e.c.user_id == user_id
            )
            if since is not None:
                stmt = stmt.where(e.c.timestamp >= since)
            stmt = stmt.order_by(e.c.id.desc())
            if limit is not None:
                stmt = stmt.limit(limit)
            rows = conn.execute(stmt).all()
        return [Event(*row) for row in reversed(rows)]

    def delete_user(self, dataset: str, user_id: str) -> dict[str, int]:
        """Erase a user: events, interactions, attributes and user row. Rows deleted per table."""
        deleted: dict[str, int] = {}
        with write_transaction(self.engine) as conn:
            did = self._dataset_id(conn, dataset)
            for table in (s.events, s.interactions, s.user_attributes, s.users):
                result = conn.execute(
                    delete(table).where(table.c.dataset_id == did, table.c.user_id == user_id)
                )
                deleted[table.name] = int(result.rowcount)
        return deleted

    # ------------------------------------------------------------------ caches, blobs
    def put_embeddings(
        self, model: str, adapter: str, hashes: Sequence[str], vectors: np.ndarray
    ) -> int:
        """Cache one float32 vector per text hash (``adapter=""``: the bare model).

        Keys already cached are left as they are; returns the number of rows added.
        """
        matrix = np.ascontiguousarray(vectors, dtype="<f4")
        if matrix.ndim != 2 or len(matrix) != len(hashes):
            raise ValueError(f"need one row per hash: {len(hashes)} hashes, shape {matrix.shape}")
        now = time.time()
        rows = [
            {
                "model": model,
                "adapter": adapter,
                "text_hash": h,
                "dim": matrix.shape[1],
                "vector": matrix[i].tobytes(),
                "created_at": now,
            }
            for i, h in enumerate(hashes)
        ]
        with write_transaction(self.engine) as conn:
            before = self._count_embeddings(conn, model, adapter)
            for start in range(0, len(rows), 10_000):
                conn.execute(
                    insert_ignore(conn.dialect, s.embeddings), rows[start : start + 10_000]
                )
            return self._count_embeddings(conn, model, adapter) - before

    def get_embeddings(
        self, model: str, adapter: str, hashes: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Cached vectors of those hashes that are cached (float32, one row each)."""
        t = s.embeddings
        out: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        with self.engine.connect() as conn:
            for start in range(0, len(unique), _IN_CHUNK):
                part = unique[start : start + _IN_CHUNK]
                rows = conn.execute(
                    select(t.c.text_hash, t.c.vector).where(
                        t.c.model == model, t.c.adapter == adapter, t.c.text_hash.in_(part)
                    )
                )
                for h, blob in rows:
                    out[h] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return out

    def put_artifact(
        self,
        namespace: str,
        key: str,
        data: bytes,
        media_type: str = "application/octet-stream",
    ) -> None:
        """Store (or replace) a blob under (namespace, key)."""
        t = s.artifacts
        with write_transaction(self.engine) as conn:
            conn.execute(delete(t).where(t.c.namespace == namespace, t.c.key == key))
            conn.execute(
                insert(t).values(
                    namespace=namespace,
                    key=key,
                    data=bytes(data),
                    media_type=media_type,
                    updated_at=time.time(),
                )
            )

    def get_artifact(self, namespace: str, key: str) -> bytes | None:
        t = s.artifacts
        with self.engine.connect() as conn:
            return conn.execute(
                select(t.c.data).where(t.c.namespace == namespace, t.c.key == key)
            ).scalar()

    # ------------------------------------------------------------------------ helpers
    def _dataset_id(self, conn: Connection, name: str) -> int:
        found = conn.execute(select(s.datasets.c.id).where(s.datasets.c.name == name)).scalar()
        if found is None:
            known = conn.execute(select(s.datasets.c.name).order_by(s.datasets.c.name)).scalars()
            raise UnknownDatasetError(f"no dataset {name!r} in the store (stored: {list(known)})")
        return int(found)

    @staticmethod
    def _count_embeddings(conn: Connection, model: str, adapter: str) -> int:
        t = s.embeddings
        stmt = select(func.count()).where(t.c.model == model, t.c.adapter == adapter)
        return int(conn.execute(stmt).scalar_one())


def _event_record(i: int, row: Mapping[str, Any], now: float) -> dict[str, Any]:
    """One validated events row; DataError names the row (1-based) and the field."""

    def bad(message: str, name: str) -> DataError:
        return DataError(message, file="<events>", line=i + 1, field=name)

    out: dict[str, Any] = {}
    for name in ("user_id", "item_id"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise bad(f"expected a non-empty string id, got {value!r}", name)
        out[name] = value
    kind = row.get("type")
    if kind not in s.EVENT_TYPES:
        raise bad(f"unknown event type {kind!r} (one of {', '.join(s.EVENT_TYPES)})", "type")
    out["type"] = kind
    for name, default in (("value", None), ("timestamp", now)):
        value = row.get(name)
        if value is None:
            out[name] = default
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad(f"not a number: {value!r}", name) from None
        if not math.isfinite(number):
            raise bad(f"not a finite number: {value!r}", name)
        out[name] = number
    unknown = set(row) - {"user_id", "item_id", "type", "value", "timestamp"}
    if unknown:
        raise bad(f"unknown keys {sorted(unknown)}", sorted(unknown)[0])
    out["received_at"] = now
    return out
