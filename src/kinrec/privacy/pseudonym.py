"""Keyed pseudonyms for user ids: the one definition of the hash, where its key comes from, and
what the store records about it.

A user id becomes ``p_`` + the first 26 characters of the lower-case base32 encoding of
HMAC-SHA256(key, ``"user\\x00" + id``): 130 bits. Among n users the chance that two ids share a
pseudonym is about n² / 2^131, so 3.7e-20 for ten billion users: negligible. Pseudonyms are
stable (the same key and id give the same pseudonym in every process) and URL-safe (letters,
digits 2-7 and one underscore).

The key is a secret the operator keeps: ``KINREC_PSEUDONYM_KEY`` (environment) or a key file
(``--pseudonym-key-file``, ``[privacy] key_file``; the file wins over the environment). It is
never written to the store or a model directory. The store records only *that* it is
pseudonymised (``kinrec_meta`` ``pseudonym_scheme``) and a key check,
HMAC-SHA256(key, a constant), from which the key cannot be recovered but which tells a wrong
key apart at once (ingest and ``kinrec serve`` refuse it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sqlalchemy import Connection, insert, select

from kinrec.data.dataset import Dataset
from kinrec.store import schema as s

if TYPE_CHECKING:
    from kinrec.store import Store

KEY_ENV = "KINREC_PSEUDONYM_KEY"
"""The environment variable that holds the key when no key file is given."""
PREFIX = "p_"
LENGTH = 26  # base32 characters after the prefix: 130 bits
SCHEME = "hmac-sha256/base32-130/v1"
MIN_KEY_CHARS = 32
MIN_KEY_BITS = 128.0
META_SCHEME = "pseudonym_scheme"
META_CHECK = "pseudonym_key_check"
_CHECK_MESSAGE = b"kinrec pseudonym key check v1"
_USER_DOMAIN = b"user\x00"
HOW_TO_MAKE_A_KEY = "make one with `openssl rand -hex 32`"


class PseudonymError(ValueError):
    """A missing, weak or wrong key, or a store that would mix raw and pseudonymous ids."""


def _estimated_bits(secret: str) -> float:
    """Length times the character-frequency (Shannon) entropy: an upper estimate that catches
    short or repetitive secrets, not weak ones that look random."""
    counts = Counter(secret)
    n = len(secret)
    per_char = -sum(c / n * math.log2(c / n) for c in counts.values())
    return n * per_char


def check_secret(secret: str, source: str) -> None:
    """Refuse a secret too short or too repetitive to key the hash; the message names
    ``source`` (the file or the variable) and never the secret."""
    if len(secret) < MIN_KEY_CHARS:
        raise PseudonymError(
            f"{source}: the pseudonym key has {len(secret)} characters, at least "
            f"{MIN_KEY_CHARS} are needed ({HOW_TO_MAKE_A_KEY})"
        )
    bits = _estimated_bits(secret)
    if bits < MIN_KEY_BITS:
        raise PseudonymError(
            f"{source}: the pseudonym key is too repetitive (about {bits:.0f} bits, at least "
            f"{MIN_KEY_BITS:.0f} are needed; {HOW_TO_MAKE_A_KEY})"
        )


class Pseudonymiser:
    """``pseudonymiser(user_id)`` -> the user's pseudonym under one key.

    ``source`` says where the key came from (for messages); the key itself is never shown.
    """

    def __init__(self, key: bytes, source: str = "the pseudonym key") -> None:
        check_secret(key.decode("utf-8", errors="replace"), source)
        self._key = bytes(key)
        self.source = source
        self.fingerprint = hmac.new(self._key, _CHECK_MESSAGE, hashlib.sha256).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"Pseudonymiser(source={self.source!r}, check={self.fingerprint[:8]}...)"

    def __call__(self, user_id: str) -> str:
        digest = hmac.new(self._key, _USER_DOMAIN + user_id.encode("utf-8"), hashlib.sha256)
        return PREFIX + base64.b32encode(digest.digest()).decode("ascii")[:LENGTH].lower()

    def column(self, values: pd.Series) -> pd.Series:
        """A column of ids with every string replaced by its pseudonym (each distinct id hashed
        once); missing and non-string values stay as they are, for validation to report."""
        array = values.to_numpy(dtype=object)
        distinct = {v for v in pd.unique(array) if isinstance(v, str) and v.strip()}
        mapping = {v: self(v) for v in distinct}
        out = np.array([mapping.get(v, v) if isinstance(v, str) else v for v in array], object)
        return pd.Series(out, index=values.index, dtype=object, name=values.name)


def read_key(
    key_file: Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[bytes, str]:
    """The key's bytes and where they came from: ``key_file`` when given (surrounding
    whitespace, such as a final newline, is not part of the key), else the environment.
    """
    env = os.environ if env is None else env
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PseudonymError(f"{path}: no such pseudonym key file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PseudonymError(f"{path}: cannot read the pseudonym key file: {exc}") from None
        return text.strip().encode("utf-8"), str(path)
    value = env.get(KEY_ENV)
    if value is None or not value.strip():
        raise PseudonymError(
            f"pseudonymisation needs a key: set {KEY_ENV} or give a key file "
            f"(--pseudonym-key-file, or [privacy] key_file); {HOW_TO_MAKE_A_KEY}"
        )
    return value.strip().encode("utf-8"), KEY_ENV


def load_pseudonymiser(
    key_file: Path | None = None, env: Mapping[str, str] | None = None
) -> Pseudonymiser:
    """A :class:`Pseudonymiser` keyed from ``key_file`` or the environment (checked)."""
    key, source = read_key(key_file, env)
    return Pseudonymiser(key, source)


def pseudonymise_dataset(dataset: Dataset, pseudonymiser: Pseudonymiser) -> Dataset:
    """A copy of ``dataset`` whose user ids (interactions and user table) are pseudonyms.

    The frames keep their ``attrs`` (source file and line), so validation still names the file
    and line of a bad row."""

    def mapped(frame: pd.DataFrame) -> pd.DataFrame:
        if "user_id" not in frame.columns:
            return frame
        out = frame.copy()
        out["user_id"] = pseudonymiser.column(frame["user_id"])
        out.attrs = dict(frame.attrs)
        return out

    return replace(dataset, interactions=mapped(dataset.interactions), users=mapped(dataset.users))


# ------------------------------------------------------------------------------- the store
def _meta(conn: Connection) -> dict[str, str]:
    rows = conn.execute(
        select(s.meta.c.key, s.meta.c.value).where(s.meta.c.key.in_([META_SCHEME, META_CHECK]))
    )
    return {str(k): str(v) for k, v in rows}


def store_is_pseudonymised(store: Store) -> bool:
    """Whether the store's user ids were pseudonymised at ingest."""
    with store.engine.connect() as conn:
        return META_SCHEME in _meta(conn)


def _check_key(meta: Mapping[str, str], pseudonymiser: Pseudonymiser, where: str) -> None:
    if meta[META_SCHEME] != SCHEME:
        raise PseudonymError(
            f"{where} was pseudonymised with scheme {meta[META_SCHEME]!r}; this kinrec makes "
            f"{SCHEME!r}"
        )
    if not hmac.compare_digest(meta.get(META_CHECK, ""), pseudonymiser.fingerprint):
        raise PseudonymError(
            f"{where} was pseudonymised with another key (its key check starts "
            f"{meta.get(META_CHECK, '')[:8]}, the key from {pseudonymiser.source} gives "
            f"{pseudonymiser.fingerprint[:8]}): use the key it was ingested with"
        )


def check_ingest(conn: Connection, pseudonymiser: Pseudonymiser | None, where: str) -> None:
    """Inside the ingest transaction, before anything is written: refuse to mix raw and
    pseudonymous user ids in one store, or two keys; record the scheme and key check on the
    first pseudonymised ingest. ``where`` names the store in messages."""
    meta = _meta(conn)
    if pseudonymiser is None:
        if META_SCHEME in meta:
            raise PseudonymError(
                f"{where} holds pseudonymised user ids: ingest with --pseudonymise (or "
                "[privacy] pseudonymise = true) and the same key; raw user ids would be mixed in"
            )
        return
    if META_SCHEME in meta:
        _check_key(meta, pseudonymiser, where)
        return
    names = list(conn.execute(select(s.datasets.c.name).order_by(s.datasets.c.name)).scalars())
    if names:
        raise PseudonymError(
            f"{where} already holds datasets ingested without pseudonymisation "
            f"({', '.join(names)}): pseudonymise into a new store"
        )
    conn.execute(
        insert(s.meta),
        [
            {"key": META_SCHEME, "value": SCHEME},
            {"key": META_CHECK, "value": pseudonymiser.fingerprint},
        ],
    )


def serving_pseudonymiser(
    store: Store,
    key_file: Path | None = None,
    given: Pseudonymiser | None = None,
    env: Mapping[str, str] | None = None,
) -> Pseudonymiser | None:
    """The pseudonymiser a service over ``store`` must apply to incoming user ids: None for
    a store of raw ids, else ``given`` or the key from ``key_file`` / the environment, checked
    against the store's key check (a missing or wrong key is a :class:`PseudonymError`)."""
    with store.engine.connect() as conn:
        meta = _meta(conn)
    if META_SCHEME not in meta:
        return None
    where = f"the store {store.engine.url!r}"
    if given is None:
        try:
            given = load_pseudonymiser(key_file, env)
        except PseudonymError as exc:
            raise PseudonymError(f"{where} is pseudonymised: {exc}") from None
    _check_key(meta, given, where)
    return given


__all__ = [
    "KEY_ENV",
    "SCHEME",
    "PseudonymError",
    "Pseudonymiser",
    "check_ingest",
    "check_secret",
    "load_pseudonymiser",
    "pseudonymise_dataset",
    "read_key",
    "serving_pseudonymiser",
    "store_is_pseudonymised",
]
