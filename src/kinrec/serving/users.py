"""Users: who the model was trained on (less the erased), their recent events since training,
their history as the scorer takes it, events in (validated, stored, applied) and erasure
(:class:`UsersAndEvents`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kinrec.models.base import ERASED_PREFIX, ForgetResult
from kinrec.serving import persist
from kinrec.serving.errors import InvalidError
from kinrec.serving.neighbours import NEIGHBOURS_NAMESPACE
from kinrec.store import Event

log = logging.getLogger("kinrec.serving")


@dataclass
class OnlineUser:
    """A user's events since training (the most recent ``maxlen``), newest last."""

    events: deque[tuple[int, int, str, float | None, float]]
    _arrays: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, event_id: int, item: int, kind: str, value: float | None, ts: float) -> None:
        self.events.append((event_id, item, kind, value, ts))
        self._arrays = None

    def arrays(self, weight_of) -> tuple[np.ndarray, np.ndarray]:
        """Event items (unique) and their weights (an item's largest)."""
        if self._arrays is None:
            best: dict[int, float] = {}
            for _, item, kind, value, _ in self.events:
                w = weight_of(kind, value)
                if w > best.get(item, -1.0):
                    best[item] = w
            items = np.fromiter(best.keys(), dtype=np.int64, count=len(best))
            weights = np.fromiter(best.values(), dtype=np.float32, count=len(best))
            self._arrays = (items, weights)
        return self._arrays


class UsersAndEvents:
    """Users, events and erasure, mixed into :class:`~kinrec.serving.engine.Engine`.

    ``users``: the online state of every user with events since training; ``erased``: the
    hashes of erased users (:func:`kinrec.serving.persist.user_hash`).
    """

    users: dict[str, OnlineUser]
    erased: set[str]
    origin: str  # this engine's name in the replication log

    # ------------------------------------------------------------------ lookups
    def _trained_user(self, user_id: str) -> int | None:
        """The model's index of a user it was trained on (None: new, or erased since)."""
        user_map = self.model.user_map
        if user_id not in user_map:
            return None
        if self.erased and persist.user_hash(user_id) in self.erased:
            return None
        if user_id.startswith(ERASED_PREFIX):  # forgotten by the model (a tombstone)
            return None
        return user_map.index(user_id)

    def _train_items(self, user: int | None) -> np.ndarray:
        if user is None:
            return np.zeros(0, dtype=np.int64)
        seen = self.model.seen
        return seen.indices[seen.indptr[user] : seen.indptr[user + 1]].astype(np.int64)

    def weight_of(self, kind: str, value: float | None) -> float:
        weight = self.config.event_weights.get(kind, 1.0)
        if kind == "rating" and value is not None:
            learned = self.model.rating_weight(value)
            if learned is None:
                learned = min(max(value / self.config.rating_scale, 0.05), 1.0)
            weight *= learned
        return float(weight)

    def _history(self, user_id: str) -> tuple[int | None, np.ndarray, np.ndarray, np.ndarray]:
        user = self._trained_user(user_id)
        online = self.users.get(user_id)
        if online is None:
            empty = np.zeros(0, dtype=np.int64)
            return user, self._train_items(user), empty, np.zeros(0, dtype=np.float32)
        items, weights = online.arrays(self.weight_of)
        return user, self._train_items(user), items, weights

    # ------------------------------------------------------------------ users
    def user_history(self, user_id: str, limit: int = 50) -> dict[str, Any]:
        with self.lock:
            user = self._trained_user(user_id)
            online = self.users.get(user_id)
            trained = self._train_items(user)
            events = list(reversed(online.events))[:limit] if online else []
            return {
                "user_id": user_id,
                "known": user is not None or online is not None,
                "trained_items": [
                    {
                        "item_id": self.catalog.ids[i],
                        "title": self.catalog.title(self.catalog.ids[i]),
                    }
                    for i in trained[:limit]
                ],
                "n_trained_items": len(trained),
                "events": [
                    {
                        "id": eid,
                        "item_id": self.catalog.ids[item],
                        "title": self.catalog.title(self.catalog.ids[item]),
                        "type": kind,
                        "value": value,
                        "timestamp": ts,
                    }
                    for eid, item, kind, value, ts in events
                ],
            }

    def list_users(self, prefix: str = "", limit: int = 50) -> list[str]:
        with self.lock:
            out: list[str] = []
            for user in self.users:
                if user.startswith(prefix):
                    out.append(user)
                    if len(out) >= limit:
                        return out
            for user in self.model.user_map.ids():
                if user.startswith(prefix) and user not in self.users:
                    if self._trained_user(user) is None:
                        continue
                    out.append(user)
                    if len(out) >= limit:
                        break
            return out

    # ------------------------------------------------------------------ events
    def validate_events(self, rows: Sequence[Mapping[str, Any]], batch: bool) -> None:
        """Every event must name an item the model scores."""
        for i, row in enumerate(rows):
            if self._item_index(str(row["item_id"])) is None:
                where = f"events[{i}].item_id" if batch else "item_id"
                raise InvalidError(f"unknown item {row['item_id']!r}", where)

    def store_events(self, rows: Sequence[Mapping[str, Any]]) -> list[Event]:
        """Commit events to the store (blocking); returns them as stored."""
        ids = self.store.add_events(self.dataset, rows, origin=self.origin)
        now = time.time()
        return [
            Event(
                i,
                r["user_id"],
                r["item_id"],
                r["type"],
                None if r.get("value") is None else float(r["value"]),
                now if r.get("timestamp") is None else float(r["timestamp"]),
                now,
            )
            for i, r in zip(ids, rows, strict=True)
        ]

    def apply_events(self, events: Iterable[Event], count: bool = True) -> None:
        """Fold stored events into the online state; the next recommendation reflects them."""
        maxlen = self.config.recent_events
        with self.lock:
            for ev in events:
                idx = self._item_index(ev.item_id)
                if idx is None:
                    continue
                online = self.users.get(ev.user_id)
                if online is None:
                    online = self.users[ev.user_id] = OnlineUser(deque(maxlen=maxlen))
                online.add(ev.id, idx, ev.type, ev.value, ev.timestamp)
                self.cache.drop_user(ev.user_id)
                if count:
                    self.metrics.events.labels(ev.type).inc()
            self.metrics.online_users.set(len(self.users))

    # ------------------------------------------------------------------ erasure
    def store_erasure(self, user_id: str) -> dict[str, int]:
        return persist.erase_user(self.store, self.dataset, user_id, self.origin)

    def apply_erasure(self, user_id: str) -> None:
        with self.lock:
            self.users.pop(user_id, None)
            self.erased.add(persist.user_hash(user_id))
            self.cache.drop_user(user_id)
            self.metrics.online_users.set(len(self.users))

    # ------------------------------------------------------------------ erasure: the model
    # ``erasure_pending``: digests of erased users the model still depends on, in the parts
    # it cannot update exactly (until retrained); ``erasure_applied``: users forgotten
    # exactly by this process; ``_erasure_lock``: one model erasure at a time.
    erasure_pending: set[str]
    erasure_applied: int
    _erasure_lock: threading.Lock

    def _reapply_erasures(self) -> None:
        """At start-up: the model's trained users erased since it was trained (the store's
        durable erasure records, by digest) are forgotten again where the model can do it
        exactly, and listed as pending for its other parts."""
        self.erasure_pending, self.erasure_applied = set(), 0
        self._erasure_lock = threading.Lock()
        if not self.erased:
            return
        ids = self.model.user_map.ids()
        hit = [
            u
            for u, uid in enumerate(ids)
            if not uid.startswith(ERASED_PREFIX) and persist.user_hash(uid) in self.erased
        ]
        if hit:
            digests = [persist.user_hash(ids[u]) for u in hit]
            result = self._forget_trained(np.array(hit, dtype=np.int64), digests, False)
            log.info(
                "erasure: %d erased users forgotten by the model at start-up (exact: %s; "
                "stale until retrained: %s) in %.2fs",
                len(hit),
                ", ".join(result.exact) or "-",
                ", ".join(result.stale) or "-",
                result.seconds,
            )

    def _forget_trained(
        self, users: np.ndarray, digests: list[str], running: bool = True
    ) -> ForgetResult:
        """Forget trained ``users`` (indices, with their ``digests``): the slow part off the
        engine's lock, the swap (and what reads the training rows: popularity, neighbour
        lists, cached lists) under it. ``running``: the engine serves already."""
        plan = self.model.prepare_forget(users)
        stale_key = None
        with self.lock:
            result = plan.apply()
            if result.exact:
                self.scorer.refresh()
                self._seen_csc = None
                self.cache.clear()
                if running and self.cos_index is None:  # lists from the training rows
                    stale_key = self._neighbour_cache_key(self.config.neighbours)
                    self._build_neighbours()
            self.erasure_applied += result.users if result.exact else 0
            if result.stale:
                self.erasure_pending.update(digests)
        if stale_key and stale_key != self._neighbour_cache_key(self.config.neighbours):
            # the lists cached before (from the rows that held the user) go too
            persist.delete_artifact(self.store, NEIGHBOURS_NAMESPACE, stale_key)
        return result

    def forget_in_model(self, user_id: str) -> dict[str, Any]:
        """Remove an erased user from the served model (blocking: run it in a worker
        thread): the parts it can update exactly are, now; the others are listed as pending
        until the model is retrained without them (``kinrec retrain``). What was done, for
        the response and the audit log."""
        with self._erasure_lock:
            user_map = self.model.user_map
            if user_id not in user_map:
                return {"trained": False, "exact": [], "pending": [], "seconds": 0.0}
            idx = np.array([user_map.index(user_id)], dtype=np.int64)
            try:
                result = self._forget_trained(idx, [persist.user_hash(user_id)])
            except Exception as exc:  # e.g. no memory for the re-solve: retrain instead
                log.exception("erasure: the model could not forget the user")
                with self.lock:
                    self.erasure_pending.add(persist.user_hash(user_id))
                return {
                    "trained": True,
                    "exact": [],
                    "pending": list(self.model.parts),
                    "seconds": 0.0,
                    "error": f"{type(exc).__name__}: {exc}",
                }
        return {
            "trained": True,
            "exact": list(result.exact),
            "pending": list(result.stale),
            "seconds": round(result.seconds, 3),
        }

    def erasure_info(self, limit: int = 1000) -> dict[str, Any]:
        """What ``/v1/info`` says about erasure: users forgotten exactly (and in which
        parts), and erasures pending for the parts that wait for a retrain (digests)."""
        model = self.model
        with self.lock:
            pending = sorted(self.erasure_pending)
        stale = [p for p in model.parts if p not in model.forgets_exactly]
        return {
            "exact_parts": list(model.forgets_exactly),
            "stale_parts": stale if pending else [],
            "n_forgotten": len(model.forgotten),
            "n_pending": len(pending),
            "pending": [f"sha256:{d}" for d in pending[:limit]],
        }
