"""Shared fixtures.

``postgres_url``: a PostgreSQL server, ``KINREC_TEST_POSTGRES_URL`` when set, otherwise a
throw-away cluster started from the local PostgreSQL binaries (``initdb``/``pg_ctl`` on the
PATH or under /usr/lib/postgresql), listening on a Unix socket only
(:mod:`kinrec.store.pgtemp`); skipped with the reason when neither exists or when the
psycopg driver is missing."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


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
