"""Several service replicas on one store: what one replica commits, the others apply.

Each write a replica must share (event batches, item writes and retirements, erasures, key
changes, model reloads) appends a row to the store's replication log in the same transaction
as the write (:mod:`kinrec.store.changes`). A :class:`Replicator` per service process applies
the rows written by *other* replicas to its engine's memory (online user state, cached
lists, catalogue and indexes, erased users, the model's exact erasure) and to its key ring:

* on PostgreSQL, a listener thread holds a connection that ``LISTEN``\\ s on
  ``kinrec_changes``; PostgreSQL sends a notification at commit, so the change is applied
  within milliseconds. When that connection drops, the thread reconnects (every
  ``reconnect_seconds``) and first reads every change it may have missed from the log;
* on SQLite (one machine), a thread polls the log every ``poll_seconds`` (an index range
  scan past the last id it applied; SQLite writers commit one at a time, in id order).

Applying is idempotent and each replica remembers the ids it applied in a window of the
latest ``window`` ids (PostgreSQL hands out ids at insert, so a transaction may commit after
one with a higher id: the window catches it on a re-read). A replica cut off for longer than
the log's retention (an hour) cannot know what it missed and rebuilds its engine from the
store instead (:mod:`kinrec.serving.reload`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url

from kinrec.serving import persist
from kinrec.store import Event, Store, changes
from kinrec.store import schema as s

log = logging.getLogger("kinrec.serving.replication")

WINDOW = 1000


@dataclass
class Cursor:
    """What one engine has applied: the highest change id seen and the ids applied among the
    latest ``window``."""

    last: int = 0
    applied: set[int] = field(default_factory=set)

    def mark(self, change_id: int, window: int) -> bool:
        """Note ``change_id``; False when it was applied already."""
        if change_id in self.applied or change_id <= self.last - window:
            return False
        self.applied.add(change_id)
        if change_id > self.last:
            self.last = change_id
            if len(self.applied) > 2 * window:
                low = self.last - window
                self.applied = {i for i in self.applied if i > low}
        return True


def snapshot(store: Store, window: int = WINDOW) -> Cursor:
    """The log as it stands: take it *before* reading the state an engine starts from, so
    that whatever commits meanwhile is applied afterwards (applying twice is harmless)."""
    c = s.changes
    with store.engine.connect() as conn:
        last = changes.latest(conn)
        ids = conn.execute(select(c.c.id).where(c.c.id > last - window)).scalars()
        return Cursor(last, {int(i) for i in ids})


def events_by_ids(store: Store, ids: list[int]) -> list[Event]:
    """Stored events among ``ids``, oldest first (an erased user's are gone)."""
    e = s.events
    cols = ("id", "user_id", "item_id", "type", "value", "timestamp", "received_at")
    out: list[Event] = []
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            query = select(*(e.c[c] for c in cols)).where(e.c.id.in_(part)).order_by(e.c.id)
            out.extend(Event(*row) for row in conn.execute(query))
    return out


def _conninfo(url: str) -> str:
    """A libpq URI for psycopg from the store's SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Replicator:
    """Applies other replicas' changes to this process's engine (see the module).

    ``on_keys``: called when keys changed (the app re-reads its key ring); ``on_reload``:
    called when another replica asks every replica to reload the model, or when this one
    was away too long to catch up (the app rebuilds its engine from the store).
    """

    def __init__(
        self,
        url: str,
        *,
        poll_seconds: float = 0.25,
        reconnect_seconds: float = 1.0,
        window: int = WINDOW,
        on_keys: Callable[[], None] | None = None,
        on_reload: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.store = Store(url)
        self.notify = self.store.engine.dialect.name == "postgresql"
        self.poll_seconds = poll_seconds
        self.reconnect_seconds = reconnect_seconds
        # SQLite commits one writer at a time, so its ids commit in order: no window needed
        self.window = window if self.notify else 0
        self.on_keys = on_keys
        self.on_reload = on_reload
        self.engine: Any = None
        self.lock = threading.RLock()  # applying vs swapping engines
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._forget = ThreadPoolExecutor(1, thread_name_prefix="kinrec-replica-erase")
        self._conn: Any = None
        self.connected = threading.Event()
        self.connections = 0
        self.applied = 0
        self.resyncs = 0
        self.last_contact = time.monotonic()
        self.last_error: str | None = None
        self._pruned_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    @property
    def mode(self) -> str:
        return "notify" if self.notify else "poll"

    def snapshot(self) -> Cursor:
        return snapshot(self.store, self.window)

    def attach(self, engine: Any, cursor: Cursor) -> None:
        """Apply changes to ``engine`` from ``cursor`` on (catching up at once)."""
        with self.lock:
            engine.replica_cursor = cursor
            self.engine = engine
            self.resync()

    def start(self) -> None:
        if self._thread is None:
            target = self._listen if self.notify else self._poll
            self._thread = threading.Thread(target=target, name="kinrec-replica", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # already gone
                conn.cancel()
        if self._thread is not None:
            self._thread.join(5)
        self._forget.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def swap(self, app: Any, new: Any, cursor: Cursor) -> Any:
        """Serve ``new`` (an engine loaded from the store after ``cursor`` was taken): it
        catches up with every change since, then becomes ``app.state.engine`` under the
        lock that applying takes, so no change falls between the two engines. Returns the
        engine it replaces."""
        new.replica_cursor = cursor
        self._catch_up(new)  # the long part, outside the lock
        with self.lock:
            self._catch_up(new)
            old, app.state.engine, self.engine = app.state.engine, new, new
        return old

    def status(self) -> dict[str, Any]:
        cursor = getattr(self.engine, "replica_cursor", None)
        return {
            "mode": self.mode,
            "connected": self.connected.is_set() if self.notify else self._thread is not None,
            "connections": self.connections,
            "resyncs": self.resyncs,
            "applied": self.applied,
            "last_change_id": cursor.last if cursor else None,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ the threads
    def _listen(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(_conninfo(self.url), autocommit=True) as conn:
                    self._conn = conn
                    conn.execute(f"LISTEN {changes.CHANNEL}")
                    self.connections += 1
                    self.connected.set()
                    if self.connections > 1:
                        log.info("replication: listening again; reading what was missed")
                    self.resync()  # anything committed while not listening
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0, stop_after=64):
                            self._on_payload(note.payload)
                        self.last_contact = time.monotonic()
                        self._maintain()
            except Exception as exc:
                self.connected.clear()
                self._conn = None
                if self._stop.is_set():
                    return
                self.last_error = f"{type(exc).__name__}: {exc}".strip()
                log.warning(
                    "replication: listener connection lost (%s); reconnecting in %.1fs",
                    self.last_error,
                    self.reconnect_seconds,
                )
                self._stop.wait(self.reconnect_seconds)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.resync(count=False)
                self._maintain()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}".strip()
                log.warning("replication: could not read the change log: %s", self.last_error)

    def _maintain(self) -> None:
        now = time.monotonic()
        if now - self._pruned_at > 60.0:
            self._pruned_at = now
            try:
                changes.prune(self.store.engine)
            except Exception:
                log.warning("replication: could not prune the change log", exc_info=True)

    # ------------------------------------------------------------------ applying
    def _on_payload(self, payload: str) -> None:
        raw = json.loads(payload)
        if raw.get("fetch"):
            with self.store.engine.connect() as conn:
                found = changes.by_ids(conn, [int(raw["id"])])
        else:
            found = [changes.Change.from_json(raw)]
        with self.lock:
            for change in found:
                self._apply(self.engine, change)

    def resync(self, count: bool = True) -> int:
        """Apply every change this engine has not (a reconnect, a poll, a start); when it
        was away longer than the log keeps changes, rebuild from the store instead."""
        with self.lock:
            engine = self.engine
            if engine is None:
                return 0
            stale = time.monotonic() - self.last_contact > 0.9 * changes.RETENTION_SECONDS
            self.last_contact = time.monotonic()
            if stale and self.on_reload is not None:
                log.warning("replication: away longer than the change log keeps; rebuilding")
                self.on_reload("resync")
                return 0
            n = self._catch_up(engine)
            if count:
                self.resyncs += 1
            return n

    def _catch_up(self, engine: Any) -> int:
        cursor: Cursor = engine.replica_cursor
        with self.store.engine.connect() as conn:
            found = changes.since(conn, cursor.last - self.window, engine.dataset)
        n = 0
        for change in found:
            n += self._apply(engine, change)
        return n

    def _apply(self, engine: Any, change: changes.Change) -> int:
        if engine is None or not engine.replica_cursor.mark(change.id, self.window):
            return 0
        if change.dataset not in (None, engine.dataset):
            return 0
        if change.origin == engine.origin:  # applied by this engine when it wrote it
            return 0
        try:
            getattr(self, f"_apply_{change.kind}")(engine, change.data)
        except Exception:
            log.exception("replication: could not apply change %d (%s)", change.id, change.kind)
            return 0
        self.applied += 1
        return 1

    def _apply_events(self, engine: Any, data: dict) -> None:
        events = events_by_ids(self.store, [int(i) for i in data["ids"]])
        with engine.lock:
            fresh = []
            for ev in events:
                online = engine.users.get(ev.user_id)
                if online is None or all(e[0] != ev.id for e in online.events):
                    fresh.append(ev)
            engine.apply_events(fresh, count=False)

    def _apply_item(self, engine: Any, data: dict) -> None:
        engine.apply_item(
            data["item_id"],
            data.get("texts") or {},
            data.get("attributes") or {},
            data.get("entity_id"),
            [tuple(link) for link in data.get("links") or ()],
            bool(data.get("create")),
        )

    def _apply_retire(self, engine: Any, data: dict) -> None:
        engine.apply_retire(data["item_id"])

    def _apply_erase(self, engine: Any, data: dict) -> None:
        digest = data["digest"]
        with engine.lock:
            found = [u for u in engine.users if persist.user_hash(u) == digest]
            trained = [u for u in engine.model.user_map.ids() if persist.user_hash(u) == digest]
            for user in {*found, *trained}:
                engine.apply_erasure(user)  # cold at once: online state, cache, erased set
            engine.erased.add(digest)
        for user in trained:  # the model's exact update takes a while: off this thread
            self._forget.submit(engine.forget_in_model, user)

    def _apply_keys(self, engine: Any, data: dict) -> None:
        if self.on_keys is not None:
            self.on_keys()

    def _apply_reload(self, engine: Any, data: dict) -> None:
        if self.on_reload is not None:
            self.on_reload("replica")
