"""Shared fixtures.

``postgres_url``: a PostgreSQL server, ``KINREC_TEST_POSTGRES_URL`` when set, otherwise a
throw-away cluster started from the local PostgreSQL binaries (``initdb``/``pg_ctl`` on the
PATH or under /usr/lib/postgresql), listening on a Unix socket only
(:mod:`kinrec.store.pgtemp`); skipped with the reason when neither exists or when the
psycopg driver is missing.

``toy_split_dir``: a predefined split folder (``toy.{train,valid,test}.inter``) of 30
users with 12 of 40 items each, 9 / 2 / 1 per user: small enough for any model's CLI run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def toy_split_dir(tmp_path: Path) -> Path:
    root = tmp_path / "split"
    root.mkdir()
    header = "user_id:token\titem_id:token\n"
    rng = np.random.default_rng(0)
    parts: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for u in range(30):
        for pos, i in enumerate(rng.permutation(40)[:12]):
            part = "train" if pos < 9 else ("valid" if pos < 11 else "test")
            parts[part].append(f"u{u}\ti{i}\n")
    for part, lines in parts.items():
        (root / f"toy.{part}.inter").write_text(header + "".join(lines))
    return root


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed")
    if url := os.environ.get("KINREC_TEST_POSTGRES_URL"):
        yield url
        return
    from kinrec.store.pgtemp import PostgresUnavailable, throwaway_postgres

    server = throwaway_postgres()
    try:
        url = server.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)
