"""Shared CLI pieces: consoles, common options, error handling, the progress bar."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

err = Console(stderr=True)
out = Console()

DbOption = Annotated[
    str,
    typer.Option("--db", envvar="KINREC_DB", help="SQLAlchemy URL of the store (SQLite default)."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", exists=True, dir_okay=False, help="Pipeline TOML file."),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@contextmanager
def errors_as_messages():
    """Turn expected user errors (bad data, unknown names, missing files) into clean exits."""
    from kinrec.data.errors import DataError

    try:
        yield
    except (DataError, KeyError, LookupError, FileNotFoundError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise fail(str(message)) from None


class EpochProgress:
    """A rich progress bar fed by models' ``progress(phase, step, total, values)`` callback."""

    def __init__(self, console: Console = err) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[values]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> EpochProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, phase: str, step: int, total: int, values: dict[str, float]) -> None:
        shown = "  ".join(f"{k}={v:.4f}" for k, v in values.items())
        if phase not in self._tasks:
            self._tasks[phase] = self._progress.add_task(phase, total=total, values=shown)
        self._progress.update(self._tasks[phase], completed=step, total=total, values=shown)
