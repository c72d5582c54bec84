"""The one error type for bad input data: it names the file, line and field."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data. ``str()`` reads ``FILE:LINE: field 'F': message``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.message = message
        where = self.file or "<data>"
        if line is not None:
            where += f":{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")
