"""Shared CLI pieces: consoles, common options, error handling, the progress bar."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

err = Console(stderr=True)
out = Console()

DbOption = Annotated[
    str,
    typer.Option("--db", envvar="KINREC_DB", help="SQLAlchemy URL of the store (SQLite default)."),
]
RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run on a Ray cluster: auto (the cluster this machine joined with `ray start`), "
        "HOST:PORT (its head), local (a one-node instance in this process). Default: "
        "$KINREC_RAY_ADDRESS, else no Ray. Needs pip install 'kinrec\\[ray]'.",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", exists=True, dir_okay=False, help="Pipeline TOML file."),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr as one line (never wrapped to the terminal)."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


MEMORY_EXIT = 3
"""Exit status of a step refused because it would need more memory than it may use."""


@contextmanager
def errors_as_messages():
    """Turn expected user errors (bad data, unknown names, missing files) and refusals for
    memory into clean exits: one ``error:`` line, no traceback."""
    from kinrec.data.errors import DataError
    from kinrec.models.memory import MemoryLimitError

    try:
        yield
    except MemoryLimitError as exc:
        raise fail(str(exc), MEMORY_EXIT) from None
    except (DataError, KeyError, LookupError, FileNotFoundError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise fail(str(message)) from None


@contextmanager
def memory_errors_as_messages():
    """Only refusals for memory as clean exits (around training, where any other error
    is a bug that keeps its traceback)."""
    from kinrec.models.memory import MemoryLimitError

    try:
        yield
    except MemoryLimitError as exc:
        raise fail(str(exc), MEMORY_EXIT) from None


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
