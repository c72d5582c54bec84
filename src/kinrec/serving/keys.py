"""API keys with roles, stored hashed in the store's ``artifacts`` table.

A key reads ``kr_<id>_<secret>``: ``id`` (8 hex) names the key, ``secret`` (32 random bytes,
URL-safe base64) is shown once at creation; the store keeps only its SHA-256, which is enough
for a random secret of that length (no password stretching needed). Roles are ordered:
``read`` < ``write`` (also posts events) < ``admin`` (also items and erasure).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from typing import Literal

from kinrec.serving import persist
from kinrec.store import Store

Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = ("read", "write", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
PREFIX = "kr_"


@dataclass(frozen=True)
class KeyRecord:
    """A stored key (never its secret)."""

    id: str
    name: str
    role: Role
    created_at: float
    secret_sha256: str
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def public(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("secret_sha256")
        return out


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


def create_key(store: Store, name: str, role: Role) -> tuple[KeyRecord, str]:
    """Store a new key; returns its record and the full key (shown once)."""
    if role not in RANK:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if not name.strip():
        raise ValueError("a key needs a non-empty name")
    existing = persist.artifacts(store, persist.KEYS_NAMESPACE)
    key_id = secrets.token_hex(4)
    while key_id in existing:
        key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    record = KeyRecord(key_id, name.strip(), role, time.time(), _digest(secret))
    _save(store, record)
    return record, f"{PREFIX}{key_id}_{secret}"


def _save(store: Store, record: KeyRecord) -> None:
    data = json.dumps(asdict(record)).encode("utf-8")
    persist.put_artifact(store, persist.KEYS_NAMESPACE, record.id, data, "application/json")


def list_keys(store: Store) -> list[KeyRecord]:
    """All keys, revoked ones included, oldest first."""
    rows = persist.artifacts(store, persist.KEYS_NAMESPACE).values()
    records = [KeyRecord(**json.loads(r)) for r in rows]
    return sorted(records, key=lambda r: (r.created_at, r.id))


def revoke_key(store: Store, key_id: str) -> KeyRecord:
    """Mark a key revoked (it stays listed); ``KeyError`` when unknown."""
    if key_id.startswith(PREFIX):
        parsed = parse_key(key_id)
        key_id = parsed[0] if parsed else key_id
    for record in list_keys(store):
        if record.id == key_id:
            if record.active:
                record = KeyRecord(**{**asdict(record), "revoked_at": time.time()})
                _save(store, record)
            return record
    raise KeyError(f"no API key with id {key_id!r}")


class KeyRing:
    """The service's view of the keys: re-read from the store at most every ``refresh`` s
    (so a revocation takes effect within that), and at once for an unknown key id."""

    def __init__(self, store: Store, refresh: float = 2.0) -> None:
        self.store = store
        self.refresh = refresh
        self._keys: dict[str, KeyRecord] = {}
        self._loaded = -1e18
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        keys = {r.id: r for r in list_keys(self.store)}
        with self._lock:
            self._keys = keys
            self._loaded = time.monotonic()

    def role_of(self, token: str) -> Role | None:
        """The role of an active key, or None for an unknown, malformed or revoked one."""
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = time.monotonic()
        stale = now - self._loaded > self.refresh
        if stale or (key_id not in self._keys and now - self._loaded > 0.2):
            self.reload()
        record = self._keys.get(key_id)
        if record is None or not record.active:
            return None
        if not hmac.compare_digest(record.secret_sha256, _digest(secret)):
            return None
        return record.role


def allows(role: Role | None, needed: Role) -> bool:
    return role is not None and RANK[role] >= RANK[needed]
