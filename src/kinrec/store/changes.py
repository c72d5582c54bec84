"""The replication log: what service replicas sharing one store must apply to their memory.

Every write a replica makes that others must see (an event batch, an item written or retired,
a user erased, a key created or revoked, a model reload) appends one row to ``changes`` *in
the same transaction* as the write itself (:func:`record`). On PostgreSQL the same
transaction also sends ``pg_notify('kinrec_changes', ...)``: PostgreSQL delivers a
notification only when the transaction commits, so a notification always names committed
data. The payload is the change row as JSON (or only its id when it would pass the 8,000
byte limit of a notification). On SQLite, which has no notifications, replicas poll the table
(:func:`since`: an index range scan past the last id they applied).

Rows hold no user id and no secret: an event batch is its event ids (an erasure deletes the
events, so an erased user's events cannot be read back through the log), an erasure the
user's digest, a key change nothing but its kind. :func:`prune` drops rows older than the
retention (an hour by default): a replica away for longer rebuilds its state from the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, text

from kinrec.store import schema as s

CHANNEL = "kinrec_changes"
MAX_PAYLOAD = 7900  # bytes; PostgreSQL's limit on a notification payload is 8000
RETENTION_SECONDS = 3600.0
KINDS = ("events", "item", "retire", "erase", "keys", "reload")


@dataclass(frozen=True)
class Change:
    """One row of the log."""

    id: int
    at: float
    dataset: str | None
    kind: str
    origin: str
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "dataset": self.dataset,
            "kind": self.kind,
            "origin": self.origin,
            "data": self.data,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Change:
        return cls(
            int(raw["id"]),
            float(raw["at"]),
            raw.get("dataset"),
            str(raw["kind"]),
            str(raw["origin"]),
            dict(raw.get("data") or {}),
        )


@dataclass(frozen=True)
class Pending:
    """A change to record with a write: passed to the store's write functions, which call
    :func:`record` inside their transaction."""

    dataset: str | None
    kind: str
    origin: str
    data: Mapping[str, Any]


def record(conn: Connection, change: Pending) -> int:
    """Append ``change`` inside the caller's transaction (and, on PostgreSQL, queue its
    notification, sent at commit). Returns its id."""
    if change.kind not in KINDS:
        raise ValueError(f"unknown change kind {change.kind!r} (one of {', '.join(KINDS)})")
    at = time.time()
    data = json.dumps(dict(change.data), separators=(",", ":"), ensure_ascii=False)
    stmt = insert(s.changes).returning(s.changes.c.id)
    values = dict(at=at, dataset=change.dataset, kind=change.kind, origin=change.origin, data=data)
    change_id = int(conn.execute(stmt, values).scalar_one())
    if conn.dialect.name == "postgresql":
        row = Change(change_id, at, change.dataset, change.kind, change.origin, {})
        payload = json.dumps({**row.as_json(), "data": None}, separators=(",", ":"))
        full = payload[: -len("null}")] + data + "}"
        if len(full.encode("utf-8")) <= MAX_PAYLOAD:
            payload = full
        else:  # the listener reads the row itself
            payload = json.dumps({"id": change_id, "fetch": True})
        conn.execute(text("SELECT pg_notify(:channel, :payload)"), {
            "channel": CHANNEL, "payload": payload
        })  # fmt: skip
    return change_id


def _row(row: Any) -> Change:
    data = json.loads(row.data)
    return Change(int(row.id), float(row.at), row.dataset, row.kind, row.origin, data)


def since(conn: Connection, after: int, dataset: str | None = None) -> list[Change]:
    """Changes with an id above ``after`` (for ``dataset``, and those for every dataset),
    oldest first."""
    c = s.changes
    query = select(c).where(c.c.id > after).order_by(c.c.id)
    if dataset is not None:
        query = query.where((c.c.dataset == dataset) | c.c.dataset.is_(None))
    return [_row(r) for r in conn.execute(query)]


def by_ids(conn: Connection, ids: list[int]) -> list[Change]:
    c = s.changes
    if not ids:
        return []
    return [_row(r) for r in conn.execute(select(c).where(c.c.id.in_(ids)).order_by(c.c.id))]


def latest(conn: Connection) -> int:
    """The highest id in the log (0 when empty)."""
    return int(conn.execute(select(func.max(s.changes.c.id))).scalar() or 0)


def oldest(conn: Connection) -> int:
    """The lowest id still in the log (0 when empty)."""
    return int(conn.execute(select(func.min(s.changes.c.id))).scalar() or 0)


def prune(engine: Engine, retention: float = RETENTION_SECONDS) -> int:
    """Drop rows older than ``retention`` seconds, always keeping the newest (SQLite would
    otherwise hand out its id again); how many went."""
    from kinrec.store.engine import write_transaction

    c = s.changes
    with write_transaction(engine) as conn:
        newest = latest(conn)
        result = conn.execute(delete(c).where(c.c.at < time.time() - retention, c.c.id < newest))
        return int(result.rowcount)
