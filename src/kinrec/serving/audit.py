"""The audit log: which administrative action was taken, when, by whom, on what.

Every administrative action is appended to the store's ``audit_log`` table
(:mod:`kinrec.store.schema`) by :func:`record`, the one function that writes it:

* ``key.create`` and ``key.revoke`` (:mod:`kinrec.serving.keys`; actor ``cli`` from the
  command line);
* ``item.create``, ``item.update`` and ``item.retire`` through the service;
* ``user.erase`` (``DELETE /v1/users/{user_id}``), whose detail says what was deleted from
  the store and what the served model did (``model``: the parts updated exactly, those
  pending until a retrain);
* ``model.retrain`` (``kinrec retrain``; target: the model directory written).

The actor of a service action is the id of the API key that asked (``insecure-no-auth`` when
the service runs without keys). kinrec never changes or deletes an entry; ``kinrec audit``
reads them (:func:`entries`).

No entry holds a secret: keys are named by their 8-hex id, and :func:`record` refuses a target
or detail that looks like a whole key. A user is not recorded by their id: the target of a
``user`` entry is ``user_target(user_id)``, by default :func:`user_digest`, the SHA-256 digest
the store already keeps for an erased user, so an auditor who knows an id can find its erasure
while the log does not keep the id the erasure removed. A pseudonymisation scheme passes its
own ``user_target`` (for example the pseudonym of the id).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import Connection, insert, select

from kinrec.serving import persist
from kinrec.store import Store
from kinrec.store import schema as s
from kinrec.store.engine import write_transaction

TargetKind = Literal["key", "item", "user", "model"]
TARGET_KINDS: tuple[TargetKind, ...] = ("key", "item", "user", "model")
UserTarget = Callable[[str], str]
"""How a user id is written as an audit target: the id in, what the log keeps out."""

CLI_ACTOR = "cli"
NO_AUTH_ACTOR = "insecure-no-auth"
_WHOLE_KEY = re.compile(r"kr_[0-9a-f]{8}_\S")


def user_digest(user_id: str) -> str:
    """``sha256:<hex>`` of the user id: what the audit log keeps for a user by default."""
    return f"sha256:{persist.user_hash(user_id)}"


@dataclass(frozen=True)
class AuditEntry:
    """One audit log row."""

    id: int
    at: float  # epoch seconds, UTC
    actor: str
    action: str
    target_kind: str
    target: str
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _check_no_secret(value: object, where: str) -> None:
    if isinstance(value, str) and _WHOLE_KEY.search(value):
        raise ValueError(f"refusing to write an API key into the audit log ({where})")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_no_secret(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_no_secret(v, f"{where}[{i}]")


def record(
    where: Store | Connection,
    actor: str,
    action: str,
    target_kind: TargetKind,
    target: str,
    detail: Mapping[str, Any] | None = None,
    *,
    user_target: UserTarget = user_digest,
    at: float | None = None,
) -> None:
    """Append one entry to the audit log.

    ``where``: a :class:`~kinrec.store.Store` (the entry is its own transaction) or a
    connection inside a caller's transaction (the entry commits with the action it records).
    ``actor``: an API key id, ``cli`` or ``insecure-no-auth``. ``action``: ``noun.verb``
    (``key.create``). ``target``: a key id, an item id, or a user id, which is written as
    ``user_target(target)`` (default :func:`user_digest`; a pseudonymisation scheme passes its
    own). ``detail``: a JSON object of further facts (never a secret). ``at``: epoch seconds
    (default: now).
    """
    if not actor or len(actor) > 64:
        raise ValueError(f"an audit actor is 1 to 64 characters, not {actor!r}")
    if not re.fullmatch(r"[a-z_]+\.[a-z_]+", action) or len(action) > 64:
        raise ValueError(f"an audit action reads noun.verb (like key.create), not {action!r}")
    if target_kind not in TARGET_KINDS:
        raise ValueError(f"unknown audit target kind {target_kind!r} (one of {TARGET_KINDS})")
    stored_target = user_target(target) if target_kind == "user" else target
    payload = dict(detail or {})
    _check_no_secret(stored_target, "target")
    _check_no_secret(payload, "detail")
    when = time.time() if at is None else float(at)
    if not math.isfinite(when):
        raise ValueError(f"an audit time must be finite, not {at!r}")
    row = {
        "at": when,
        "actor": actor,
        "action": action,
        "target_kind": target_kind,
        "target": stored_target,
        "detail": json.dumps(payload, sort_keys=True, default=str),
    }
    if isinstance(where, Store):
        with write_transaction(where.engine) as conn:
            conn.execute(insert(s.audit_log).values(**row))
    else:
        where.execute(insert(s.audit_log).values(**row))


def entries(
    store: Store, *, since: float | None = None, limit: int = 100, action: str | None = None
) -> list[AuditEntry]:
    """The newest ``limit`` entries at or after ``since`` (epoch seconds), of one ``action``
    when given, oldest first."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    t = s.audit_log
    query = select(t.c.id, t.c.at, t.c.actor, t.c.action, t.c.target_kind, t.c.target, t.c.detail)
    if since is not None:
        query = query.where(t.c.at >= since)
    if action is not None:
        query = query.where(t.c.action == action)
    query = query.order_by(t.c.at.desc(), t.c.id.desc()).limit(limit)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        AuditEntry(int(i), float(at), actor, act, kind, target, json.loads(detail))
        for i, at, actor, act, kind, target, detail in reversed(rows)
    ]
