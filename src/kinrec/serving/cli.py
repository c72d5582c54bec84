"""``kinrec serve`` and ``kinrec keys create|list|revoke`` (typer commands).

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
) -> None:
    """Serve a trained model over HTTP: recommendations, live events, new items, console at /."""
    import uvicorn

    from kinrec.serving.app import configure_logging, create_app
    from kinrec.serving.config import ServingConfig

    configure_logging(getattr(logging, log_level.upper(), logging.INFO))
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
    )
    if insecure_no_auth:
        logging.getLogger("kinrec.serving").warning("serving WITHOUT authentication")
    app = create_app(config)
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
    db: DbOption = "sqlite:///kinrec.db",
) -> None:
    """Create a key; the key itself is printed once, as the last line."""
    from kinrec.serving.keys import ROLES, create_key
    from kinrec.store import Store

    if role not in ROLES:
        typer.echo(f"error: unknown role {role!r} (one of {', '.join(ROLES)})", err=True)
        raise typer.Exit(2)
    with Store(db) as store:
        record, key = create_key(store, name, role)  # type: ignore[arg-type]
    typer.echo(f"created key {record.id} ({record.role}) for {record.name!r}; it is shown once:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(db: DbOption = "sqlite:///kinrec.db") -> None:
    """List keys (id, name, role, created, revoked); secrets are never shown."""
    import time

    from kinrec.serving.keys import list_keys
    from kinrec.store import Store

    def when(t: float | None) -> str:
        return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    with Store(db) as store:
        records = list_keys(store)
    typer.echo(f"{'id':<9} {'role':<6} {'created':<20} {'revoked':<20} name")
    for r in records:
        typer.echo(
            f"{r.id:<9} {r.role:<6} {when(r.created_at):<20} {when(r.revoked_at):<20} {r.name}"
        )


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


app = typer.Typer(
    help="kinrec's recommendation service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve)
app.add_typer(keys_app, name="keys")
