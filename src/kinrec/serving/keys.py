"""API keys with roles, rate limits and expiry, stored hashed in the store's ``artifacts`` table.

A key reads ``kr_<id>_<secret>``: ``id`` (8 hex) names the key, ``secret`` (32 random bytes,
URL-safe base64) is shown once at creation; the store keeps only its SHA-256, which is enough
for a random secret of that length (no password stretching needed). Roles are ordered:
``read`` < ``write`` (also posts events) < ``admin`` (also items and erasure).

A key may carry a :class:`Rate` (``100/min``: a token bucket per key in each service process
that holds up to 100 requests and refills at 100 a minute) and an expiry time. Records written
before either existed load with no limit and no expiry. When a key was last used is kept apart
from its record (namespace ``kinrec.serving/key-last-used``), so that the service's writes of
it (at most one per key per ``last_use_every`` seconds) never race a revocation.
Creating and revoking a key is written to the audit log (:mod:`kinrec.serving.audit`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import delete, insert, select

from kinrec.serving import audit, persist
from kinrec.store import Store, changes
from kinrec.store import schema as s
from kinrec.store.engine import write_transaction

Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = ("read", "write", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
PREFIX = "kr_"
LAST_USED_NAMESPACE = "kinrec.serving/key-last-used"

log = logging.getLogger("kinrec.serving")

# ------------------------------------------------------------------------------ rates, times
_RATE_UNITS = {
    "s": ("s", 1.0),
    "sec": ("s", 1.0),
    "second": ("s", 1.0),
    "m": ("min", 60.0),
    "min": ("min", 60.0),
    "minute": ("min", 60.0),
    "h": ("h", 3600.0),
    "hour": ("h", 3600.0),
}
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


@dataclass(frozen=True)
class Rate:
    """``requests`` per ``unit`` (``s``, ``min`` or ``h``): also the burst a key may spend at
    once, after which requests are let through as the bucket refills."""

    requests: int
    unit: str

    @property
    def seconds(self) -> float:
        """The length of the unit, in seconds."""
        return _RATE_UNITS[self.unit][1]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``100/min``, ``5/s``, ``1000/h`` (also ``/sec``, ``/second``, ``/m``, ``/minute``,
        ``/hour``); ``ValueError`` naming the accepted forms otherwise."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*([a-zA-Z]+)\s*", text)
        unit = _RATE_UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None or int(match.group(1)) < 1:
            raise ValueError(
                f"a rate reads N/s, N/min or N/h with N >= 1 (like 100/min), not {text!r}"
            )
        return cls(int(match.group(1)), unit[0])

    def __str__(self) -> str:
        return f"{self.requests}/{self.unit}"


@functools.lru_cache(maxsize=1024)
def _parse_rate(text: str) -> Rate:
    """:meth:`Rate.parse`, once per text (a stored rate is read on every request)."""
    return Rate.parse(text)


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``; ``ValueError`` otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise ValueError(
            f"a duration is a number and a unit s, m, h, d or w (like 30d or 12h), not {text!r}"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO date (``2026-12-31``: 00:00 UTC that day) or date and time
    (``2026-12-31T18:00``, UTC unless it names an offset); ``ValueError`` otherwise."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"a time is an ISO date or date and time (like 2026-12-31 or "
            f"2026-12-31T18:00:00+01:00), not {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_when(text: str, now: float, *, ago: bool) -> float:
    """A duration from ``now`` (later, or earlier when ``ago``), or an ISO date or time."""
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*[smhdw]\s*", text):
        seconds = parse_duration(text)
        return now - seconds if ago else now + seconds
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(
            f"expected a duration (like 30d, 12h, 90m) or an ISO date or time (like "
            f"2026-12-31 or 2026-12-31T18:00), not {text!r}"
        ) from None


def iso(t: float) -> str:
    """``2026-12-31T18:00:00Z``: an epoch time in UTC."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class KeyRecord:
    """A stored key (never its secret). ``rate`` is a :class:`Rate` as text (``100/min``) or
    None (no limit); ``expires_at`` epoch seconds or None (never); ``last_used_at`` when a
    service last let it through (written at most once a minute per key), None if never."""

    id: str
    name: str
    role: Role
    created_at: float
    secret_sha256: str
    revoked_at: float | None = None
    rate: str | None = None
    expires_at: float | None = None
    last_used_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def status(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if not self.active:
            return "revoked"
        return "expired" if self.expired(now) else "active"

    def limit(self) -> Rate | None:
        return _parse_rate(self.rate) if self.rate else None

    def public(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("secret_sha256")
        return out


_FIELDS = {f.name for f in fields(KeyRecord)}


def _load(data: bytes) -> KeyRecord:
    """A stored record; fields it lacks take their defaults (no limit, no expiry)."""
    raw = json.loads(data)
    return KeyRecord(**{k: v for k, v in raw.items() if k in _FIELDS})


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None."""
    if not token.startswith(PREFIX):
        return None
    key_id, sep, secret = token[len(PREFIX) :].partition("_")
    if not sep or len(key_id) != 8 or not secret:
        return None
    return key_id, secret


def create_key(
    store: Store,
    name: str,
    role: Role,
    *,
    rate: Rate | str | None = None,
    expires_at: float | None = None,
    actor: str = audit.CLI_ACTOR,
) -> tuple[KeyRecord, str]:
    """Store a new key and its ``key.create`` audit entry (by ``actor``) in one transaction;
    returns its record and the full key (shown once). ``rate``: a :class:`Rate` or its text
    (``100/min``); ``expires_at``: epoch seconds (a past time makes a key that is refused)."""
    if role not in RANK:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if not name.strip():
        raise ValueError("a key needs a non-empty name")
    limit = Rate.parse(rate) if isinstance(rate, str) else rate
    if expires_at is not None and not math.isfinite(expires_at):
        raise ValueError(f"expires_at must be a finite time, not {expires_at!r}")
    existing = persist.artifacts(store, persist.KEYS_NAMESPACE)
    key_id = secrets.token_hex(4)
    while key_id in existing:
        key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    record = KeyRecord(
        key_id,
        name.strip(),
        role,
        time.time(),
        _digest(secret),
        rate=str(limit) if limit else None,
        expires_at=None if expires_at is None else float(expires_at),
    )
    detail = {"name": record.name, "role": role, "rate": record.rate}
    detail["expires_at"] = None if expires_at is None else iso(expires_at)
    _save(store, record, actor, "key.create", detail)
    return record, f"{PREFIX}{key_id}_{secret}"


def _save(
    store: Store, record: KeyRecord, actor: str, action: str, detail: Mapping[str, object]
) -> None:
    stored = asdict(record)
    stored.pop("last_used_at")  # kept apart (LAST_USED_NAMESPACE)
    data = json.dumps(stored).encode("utf-8")
    t = s.artifacts
    with write_transaction(store.engine) as conn:
        where = (t.c.namespace == persist.KEYS_NAMESPACE, t.c.key == record.id)
        conn.execute(delete(t).where(*where))
        conn.execute(
            insert(t).values(
                namespace=persist.KEYS_NAMESPACE,
                key=record.id,
                data=data,
                media_type="application/json",
                updated_at=time.time(),
            )
        )
        audit.record(conn, actor, action, "key", record.id, detail)
        # every service replica re-reads its keys at once (kinrec.serving.replication)
        changes.record(conn, changes.Pending(None, "keys", actor, {"action": action}))


def last_uses(store: Store) -> dict[str, float]:
    """When each key was last used, as written by the services (key id -> epoch seconds)."""
    return {
        k: float(json.loads(v)["at"])
        for k, v in persist.artifacts(store, LAST_USED_NAMESPACE).items()
    }


def write_last_uses(store: Store, uses: Mapping[str, float]) -> None:
    """Record keys' last uses in one transaction; a stored later time is kept (several
    service processes may share the store)."""
    t = s.artifacts
    with write_transaction(store.engine) as conn:
        for key_id, at in uses.items():
            where = (t.c.namespace == LAST_USED_NAMESPACE, t.c.key == key_id)
            stored = conn.execute(select(t.c.data).where(*where)).scalar()
            if stored is not None and float(json.loads(bytes(stored))["at"]) >= at:
                continue
            conn.execute(delete(t).where(*where))
            conn.execute(
                insert(t).values(
                    namespace=LAST_USED_NAMESPACE,
                    key=key_id,
                    data=json.dumps({"at": at}).encode("utf-8"),
                    media_type="application/json",
                    updated_at=time.time(),
                )
            )


def list_keys(store: Store) -> list[KeyRecord]:
    """All keys, revoked and expired ones included, with their last use, oldest first."""
    rows = persist.artifacts(store, persist.KEYS_NAMESPACE).values()
    used = last_uses(store)
    records = [_load(r) for r in rows]
    records = [replace(r, last_used_at=used.get(r.id)) for r in records]
    return sorted(records, key=lambda r: (r.created_at, r.id))


def revoke_key(store: Store, key_id: str, *, actor: str = audit.CLI_ACTOR) -> KeyRecord:
    """Mark a key revoked (it stays listed) and audit it (``key.revoke`` by ``actor``);
    revoking a revoked key changes nothing. ``KeyError`` when unknown."""
    if key_id.startswith(PREFIX):
        parsed = parse_key(key_id)
        key_id = parsed[0] if parsed else key_id
    for record in list_keys(store):
        if record.id == key_id:
            if record.active:
                record = replace(record, revoked_at=time.time())
                detail = {"name": record.name, "role": record.role}
                _save(store, record, actor, "key.revoke", detail)
            return record
    raise KeyError(f"no API key with id {key_id!r}")


# ------------------------------------------------------------------------------ checking
class AccessError(Exception):
    """A request's key is refused; ``str()`` is the message for the caller."""


class UnknownKeyError(AccessError):
    """No such key, a wrong secret, a malformed key or a revoked one (HTTP 401)."""

    def __init__(self) -> None:
        super().__init__("unknown or revoked API key")


class KeyExpiredError(AccessError):
    """The key's expiry time has passed (HTTP 401)."""

    def __init__(self, key_id: str, expired_at: float) -> None:
        super().__init__(f"API key {key_id} expired at {iso(expired_at)}")
        self.key_id = key_id
        self.expired_at = expired_at


class RateLimitedError(AccessError):
    """The key is over its rate (HTTP 429); ``retry_after``: whole seconds, at least 1."""

    def __init__(self, key_id: str, rate: Rate, retry_after: int) -> None:
        super().__init__(f"API key {key_id} is over its rate of {rate}; retry in {retry_after} s")
        self.key_id = key_id
        self.rate = rate
        self.retry_after = retry_after


_EPSILON = 1e-9  # tokens and seconds: below float rounding of a refill, above nothing real


@dataclass
class _Bucket:
    """A token bucket: ``tokens`` at monotonic time ``at``, at most ``rate.requests``."""

    rate: Rate
    tokens: float
    at: float

    def take(self, now: float) -> float:
        """Spend one token: 0.0 when there was one, else the seconds until there is."""
        elapsed = max(0.0, now - self.at)
        self.tokens = min(float(self.rate.requests), self.tokens + elapsed * self.rate.per_second)
        self.at = max(self.at, now)
        if self.tokens >= 1.0 - _EPSILON:  # a client that waited Retry-After gets through
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate.per_second


class KeyRing:
    """The service's view of the keys: re-read from the store at most every ``refresh`` s
    (so a revocation takes effect within that), and at once for an unknown key id.

    :meth:`authenticate` also enforces expiry and the key's rate (a token bucket per key, in
    this process) and notes the use: written to the store at once for a key not written in
    the last ``last_use_every`` seconds, else kept in memory until then (or :meth:`flush`).
    ``clock`` (wall time: expiry, last use) and ``monotonic`` (refresh, buckets, write
    throttling) can be replaced, for tests.
    """

    def __init__(
        self,
        store: Store,
        refresh: float = 2.0,
        *,
        last_use_every: float = 60.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.refresh = refresh
        self.last_use_every = last_use_every
        self.clock = clock
        self.monotonic = monotonic
        self._keys: dict[str, KeyRecord] = {}
        self._loaded = -1e18
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._used: dict[str, float] = {}  # latest use seen here, wall time
        self._written: dict[str, tuple[float, float]] = {}  # id -> (monotonic, wall) written
        self.reload()

    def reload(self) -> None:
        keys = {r.id: r for r in list_keys(self.store)}
        with self._lock:
            self._keys = keys
            self._loaded = self.monotonic()

    def _verified(self, token: str) -> KeyRecord | None:
        """The record of a well-formed key whose secret matches, revoked or not."""
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = self.monotonic()
        stale = now - self._loaded >= self.refresh
        if stale or (key_id not in self._keys and now - self._loaded > 0.2):
            self.reload()
        record = self._keys.get(key_id)
        if record is None or not hmac.compare_digest(record.secret_sha256, _digest(secret)):
            return None
        return record

    def role_of(self, token: str) -> Role | None:
        """The role of an active, unexpired key, or None; spends no rate and notes no use."""
        record = self._verified(token)
        if record is None or not record.active or record.expired(self.clock()):
            return None
        return record.role

    def authenticate(self, token: str) -> KeyRecord:
        """The record of a key allowed to make a request now, its use noted. Raises
        :class:`UnknownKeyError`, :class:`KeyExpiredError` or :class:`RateLimitedError`."""
        record = self._verified(token)
        if record is None or not record.active:
            raise UnknownKeyError()
        now = self.clock()
        if record.expired(now):
            raise KeyExpiredError(record.id, record.expires_at)  # type: ignore[arg-type]
        rate = record.limit()
        mono = self.monotonic()
        due: dict[str, float] = {}
        with self._lock:
            if rate is not None:
                bucket = self._buckets.get(record.id)
                if bucket is None or bucket.rate != rate:
                    bucket = self._buckets[record.id] = _Bucket(rate, float(rate.requests), mono)
                wait = bucket.take(mono)
                if wait > 0:
                    raise RateLimitedError(record.id, rate, max(1, math.ceil(wait - _EPSILON)))
            self._used[record.id] = now
            written = self._written.get(record.id)
            if written is None or mono - written[0] >= self.last_use_every:
                self._written[record.id] = (mono, now)
                due[record.id] = now
        if due:
            self._write(due)
        return record

    def flush(self) -> None:
        """Write every use noted since the last write (at shutdown)."""
        with self._lock:
            mono = self.monotonic()
            due = {
                k: t
                for k, t in self._used.items()
                if k not in self._written or self._written[k][1] < t
            }
            for k, t in due.items():
                self._written[k] = (mono, t)
        if due:
            self._write(due)

    def _write(self, uses: Mapping[str, float]) -> None:
        try:
            write_last_uses(self.store, uses)
        except Exception:  # a failed bookkeeping write must not fail the request
            log.warning("could not record the last use of keys %s", sorted(uses), exc_info=True)


def allows(role: Role | None, needed: Role) -> bool:
    return role is not None and RANK[role] >= RANK[needed]
