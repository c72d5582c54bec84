"""``kinrec recommend --all-users --out PATH``: batch recommendations for every trained user
(:mod:`kinrec.distributed.batch`), in this process or on a Ray cluster (``--ray``).

The options are declared here and used in ``kinrec recommend``'s signature, which hands
over to :func:`recommend_all_users` when ``--all-users`` is given."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kinrec.cli.common import err, errors_as_messages, fail, out

AllUsersOption = Annotated[
    bool,
    typer.Option(
        "--all-users",
        help="Recommend for every user the model was trained on, into --out (instead of --user).",
    ),
]
OutOption = Annotated[
    str | None,
    typer.Option(
        "--out",
        "-o",
        metavar="PATH",
        help="With --all-users: a .parquet file (columns user, rank, item, score) or a store "
        "URL (sqlite:///PATH.db, postgresql+psycopg://...): table batch_recommendations, the "
        "model's rows replaced.",
        show_default=False,
    ),
]
BatchUsersOption = Annotated[
    int,
    typer.Option(
        "--batch-users", min=1, help="With --all-users: users per block (a Parquet row group)."
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="With --ray: Ray actors (default: one per node, or per GPU where it helps).",
        show_default=False,
    ),
]


def recommend_all_users(
    *,
    user: str | None,
    out_path: str | None,
    k: int,
    model_dir: Path,
    include_seen: bool,
    batch_users: int,
    ray: str | None,
    workers: int | None = None,
) -> None:
    """The ``--all-users`` branch of ``kinrec recommend``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from kinrec.distributed.batch import output_kind, recommend_all

    if user is not None:
        raise fail("give either --user or --all-users, not both")
    if out_path is None:
        raise fail("--all-users needs --out PATH (a .parquet file or a store URL)")
    with errors_as_messages():
        output_kind(out_path)
    bar = Progress(
        TextColumn("[bold]recommending"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("users"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("users", total=None)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with errors_as_messages(), bar:
        result = recommend_all(
            model_dir,
            k,
            out_path,
            ray_address=ray,
            batch_users=batch_users,
            exclude_seen=not include_seen,
            workers=workers,
            progress=advance,
        )
    where = (
        f"on {result.workers} Ray workers ({len(result.nodes)} nodes)"
        if result.workers
        else "in this process"
    )
    err.print(
        f"{result.users:,} users, {result.rows:,} rows in {result.blocks} blocks, "
        f"{where}, {result.seconds:.1f} s ({result.users / max(result.seconds, 1e-9):,.0f} "
        "users/s)",
        soft_wrap=True,
    )
    kind = output_kind(out_path)
    target = f"table batch_recommendations (model {result.model!r})" if kind == "store" else ""
    out.print(f"wrote {out_path}" + (f": {target}" if target else ""), soft_wrap=True)
