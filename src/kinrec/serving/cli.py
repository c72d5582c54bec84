"""``kinrec serve``, ``kinrec keys create|list|revoke`` and ``kinrec audit`` (typer commands).

Registered on the main CLI by ``kinrec.cli``; also runnable as ``python -m kinrec.serving``.
Heavy imports (FastAPI, faiss, the model) happen inside the commands.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

DbOption = Annotated[
    str,
    typer.Option("--db", envvar="KINREC_DB", help="SQLAlchemy URL of the store (SQLite default)."),
]


def serve(
    model_dir: Annotated[
        Path, typer.Option(exists=True, file_okay=False, help="Model directory to serve.")
    ],
    db: DbOption = "sqlite:///kinrec.db",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    dataset: Annotated[
        str | None, typer.Option(help="Stored dataset (default: the model's split.json).")
    ] = None,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="Serve without API keys (local demos).")
    ] = False,
    hnsw_threshold: Annotated[
        int, typer.Option(min=1, help="Catalogue size above which the index is HNSW.")
    ] = 50_000,
    cache_users: Annotated[
        int, typer.Option(min=0, help="Users whose recommendation lists are cached.")
    ] = 50_000,
    new_item_slots: Annotated[
        int,
        typer.Option(
            min=0,
            max=200,
            help=(
                "Positions of each list reserved for the best new items (no training "
                "interactions); 0 ranks them with the rest. See benchmarks/transfer.py for "
                "what each slot costs warm items."
            ),
        ),
    ] = 0,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            min=1024,
            help=(
                "Largest request body accepted, in bytes; larger ones get 413 before they "
                "are read. The default (1 MiB) holds a batch of 1,000 events."
            ),
        ),
    ] = 1024 * 1024,
    access_log: Annotated[bool, typer.Option(help="One JSON log line per request.")] = True,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
    pseudonym_key_file: Annotated[
        Path | None,
        typer.Option(
            dir_okay=False,
            help="Over a pseudonymised store: the file holding its key (else "
            "KINREC_PSEUDONYM_KEY); incoming user ids are hashed with it.",
            show_default=False,
        ),
    ] = None,
    replication: Annotated[
        str,
        typer.Option(
            help="auto: apply what other replicas serving the same store commit (events, "
            "items, erasures, keys, reloads), notified on PostgreSQL (LISTEN/NOTIFY), polled "
            "every 0.25 s on SQLite; off: this process alone serves the store."
        ),
    ] = "auto",
    watch_model: Annotated[
        bool,
        typer.Option(
            "--watch-model",
            help="Reload the model without downtime when the files of --model-dir change "
            "(checked every --watch-seconds; loaded once they stop changing). POST "
            "/v1/admin/reload (admin key) does the same on demand, on every replica.",
        ),
    ] = False,
    watch_seconds: Annotated[
        float, typer.Option(min=0.1, help="How often --watch-model checks the model folder.")
    ] = 2.0,
) -> None:
    """Serve a trained model over HTTP: recommendations, live events, new items, console at /."""
    import uvicorn

    from kinrec.serving.app import configure_logging, create_app
    from kinrec.serving.config import ServingConfig

    configure_logging(getattr(logging, log_level.upper(), logging.INFO))
    if replication not in ("auto", "off"):
        typer.echo(f"error: --replication is auto or off, not {replication!r}", err=True)
        raise typer.Exit(2)
    config = ServingConfig(
        model_dir=model_dir,
        db=db,
        dataset=dataset,
        insecure_no_auth=insecure_no_auth,
        hnsw_threshold=hnsw_threshold,
        cache_users=cache_users,
        new_item_slots=new_item_slots,
        max_body_bytes=max_body_bytes,
        log_requests=access_log,
        pseudonym_key_file=pseudonym_key_file,
        replication=replication,
        watch_model=watch_model,
        watch_seconds=watch_seconds,
    )
    if insecure_no_auth:
        logging.getLogger("kinrec.serving").warning("serving WITHOUT authentication")
    try:
        app = create_app(config)
    except ValueError as exc:  # a missing or wrong pseudonym key names what is missing
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        loop="auto",
        http="auto",
    )


keys_app = typer.Typer(help="Manage API keys (stored hashed in the store).", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what the key is for.")],
    role: Annotated[str, typer.Option(help="read | write | admin")] = "read",
    rate: Annotated[
        str | None,
        typer.Option(
            help=(
                "Most requests the key may make: N/s, N/min or N/h (like 100/min), also the "
                "burst it may spend at once; past it the service answers 429 with "
                "Retry-After. Default: no limit."
            )
        ),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(
            help=(
                "When the key stops working: a duration from now (30d, 12h, 90m) or an ISO "
                "date or time (2026-12-31 is 00:00 UTC that day). Default: never."
            )
        ),
    ] = None,
    db: DbOption = "sqlite:///kinrec.db",
) -> None:
    """Create a key; the key itself is printed once, as the last line. Audited (actor cli)."""
    import time

    from kinrec.serving.keys import ROLES, Rate, create_key, iso, parse_when
    from kinrec.store import Store

    if role not in ROLES:
        typer.echo(f"error: unknown role {role!r} (one of {', '.join(ROLES)})", err=True)
        raise typer.Exit(2)
    now = time.time()
    try:
        limit = Rate.parse(rate) if rate is not None else None
        expires_at = parse_when(expires, now, ago=False) if expires is not None else None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if expires_at is not None and expires_at <= now:
        typer.echo(f"error: --expires {expires} is in the past ({iso(expires_at)})", err=True)
        raise typer.Exit(2)
    with Store(db) as store:
        record, key = create_key(store, name, role, rate=limit, expires_at=expires_at)  # type: ignore[arg-type]
    limits = [f"rate {record.rate}"] if record.rate else []
    limits += [f"expires {iso(record.expires_at)}"] if record.expires_at is not None else []
    extra = f", {', '.join(limits)}" if limits else ""
    typer.echo(
        f"created key {record.id} ({record.role}{extra}) for {record.name!r}; it is shown once:"
    )
    typer.echo(key)


@keys_app.command("list")
def keys_list(db: DbOption = "sqlite:///kinrec.db") -> None:
    """List keys: id, role, status (active, expired, revoked), when created, expiring, last
    used (to within a minute) and revoked (UTC), rate and name; secrets are never shown."""
    import time

    from kinrec.serving.keys import list_keys
    from kinrec.store import Store

    def when(t: float | None) -> str:
        return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))

    with Store(db) as store:
        records = list_keys(store)
    now = time.time()
    rows = [["id", "role", "status", "created", "expires", "last used", "revoked", "rate", "name"]]
    for r in records:
        rows.append(
            [
                r.id,
                r.role,
                r.status(now),
                when(r.created_at),
                when(r.expires_at),
                when(r.last_used_at),
                when(r.revoked_at),
                r.rate or "-",
                r.name,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, row[-1]]))
    typer.echo("(times in UTC)")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (or the whole key).")],
    db: DbOption = "sqlite:///kinrec.db",
) -> None:
    """Revoke a key; a running service refuses it within its refresh interval (2 s)."""
    from kinrec.serving.keys import revoke_key
    from kinrec.store import Store

    with Store(db) as store:
        try:
            record = revoke_key(store, key_id)
        except KeyError as exc:
            typer.echo(f"error: {exc.args[0]}", err=True)
            raise typer.Exit(2) from None
    typer.echo(f"revoked key {record.id} ({record.role}) for {record.name!r}")


def audit(
    since: Annotated[
        str | None,
        typer.Option(help="Entries since a duration ago (7d, 12h) or an ISO date or time (UTC)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many (the newest).")] = 50,
    action: Annotated[
        str | None,
        typer.Option(
            help="Only this action (key.create, key.revoke, item.create, "
            "item.update, item.retire, user.erase)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of a table.")
    ] = False,
    db: DbOption = "sqlite:///kinrec.db",
) -> None:
    """Show the audit log of administrative actions (keys, items, erasures), oldest first:
    time (UTC), actor (an API key id, or cli), action, target and details."""
    import json
    import time

    from kinrec.serving.audit import entries
    from kinrec.serving.keys import iso, parse_when
    from kinrec.store import Store

    try:
        start = parse_when(since, time.time(), ago=True) if since is not None else None
    except ValueError as exc:
        typer.echo(f"error: --since: {exc}", err=True)
        raise typer.Exit(2) from None
    with Store(db) as store:
        found = entries(store, since=start, limit=limit, action=action)
    for e in found:
        if as_json:
            typer.echo(json.dumps({**e.as_json(), "at": iso(e.at)}, sort_keys=True))
            continue
        detail = json.dumps(e.detail, sort_keys=True) if e.detail else ""
        typer.echo(
            f"{iso(e.at)}  {e.actor:<16} {e.action:<12} {e.target_kind}:{e.target}  {detail}"
        )
    if not found and not as_json:
        typer.echo("no audit entries" + (f" since {iso(start)}" if start is not None else ""))


app = typer.Typer(
    help="kinrec's recommendation service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve)
app.add_typer(keys_app, name="keys")
app.command("audit")(audit)
