"""A throw-away PostgreSQL server for tests and benchmarks: a fresh cluster from the local
PostgreSQL binaries (``initdb``/``pg_ctl`` on the PATH or under /usr/lib/postgresql),
listening on a Unix socket in its own temporary folder only (no TCP), removed when done.

    with throwaway_postgres() as url:   # postgresql+psycopg://kinrec@/postgres?host=...
        ...

:class:`PostgresUnavailable` says why no server could be started (no binaries, root without
a ``postgres`` account, ``initdb`` or ``pg_ctl`` failing).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUPERUSER = "kinrec"


class PostgresUnavailable(RuntimeError):
    """No throw-away server could be started; the message says why."""


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (the newest installed version), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(versions[0]).parent if versions else None


def as_server_user() -> list[str]:
    """PostgreSQL refuses to run as root: run it as the ``postgres`` account then."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root without runuser: cannot start PostgreSQL")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no 'postgres' account to start a server"
        ) from None
    return [runuser, "-u", "postgres", "--"]


@contextmanager
def throwaway_postgres(port: int = 54329, options: str = "") -> Iterator[str]:
    """Start a cluster on a Unix socket (``port`` names the socket file), yield its
    SQLAlchemy URL, stop and delete it afterwards. ``options``: more server settings
    (``-c max_connections=200``)."""
    bin_dir = binaries()
    if bin_dir is None:
        raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) installed")
    prefix = as_server_user()
    root = Path(tempfile.mkdtemp(prefix="kinrec-pg-"))
    root.chmod(0o777)
    data = root / "data"

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", SUPERUSER)
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
            f"-k {root} -p {port} -c listen_addresses='' {options}", "start")  # fmt: skip
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        error = exc.stderr.decode(errors="replace")[-300:]
        raise PostgresUnavailable(f"could not start PostgreSQL: {error}") from None
    try:
        yield f"postgresql+psycopg://{SUPERUSER}@/postgres?host={root}&port={port}"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
