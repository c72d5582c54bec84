"""Reading and checking helpers shared by the loaders of every format (and kinrec.data.table).

Bytes in, frames out: whole-file reading, header split, field-count and decoding checks naming
the first bad line, header-less rows parsed into a frame, id checks, token and text cells, the
standard interaction frame, and the lookup of a folder's single ``NAME<suffix>`` file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kinrec.data.errors import DataError

PathLike = str | Path


def _read_bytes(path: Path) -> bytes:
    """The whole file; ``DataError`` if missing or empty."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", file=path) from None
    except IsADirectoryError:
        raise DataError("is a directory, expected a file", file=path) from None
    if not raw.strip():
        raise DataError("empty file", file=path, line=1)
    return raw


def _split_header(raw: bytes, path: Path, encoding: str = "utf-8") -> tuple[str, bytes]:
    """The decoded first line (without line end or BOM) and the bytes after it."""
    end = raw.find(b"\n")
    head, body = (raw, b"") if end < 0 else (raw[:end], raw[end + 1 :])
    try:
        text = head.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"cannot decode header byte 0x{head[exc.start]:02x} as {encoding}", file=path, line=1
        ) from None
    return text.lstrip("\ufeff").rstrip("\r"), body


def _trim(body: bytes) -> bytes:
    """Drop trailing blank lines; the result is empty or ends with exactly one newline."""
    stripped = body.rstrip(b"\r\n")
    return stripped + b"\n" if stripped else b""


def _check_fields(
    body: bytes, path: Path, columns: Sequence[str], sep: bytes, first_line: int
) -> None:
    """Every line has ``len(columns)`` fields and none is blank; else name the first bad line."""
    expected = len(columns) - 1
    if expected:
        # Equal totals: no line is short (a long one is reported by the parser).
        if body.count(sep) == body.count(b"\n") * expected:
            return
    elif not (body.startswith((b"\n", b"\r\n")) or b"\n\n" in body or b"\n\r\n" in body):
        return
    arr = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    seps = np.flatnonzero(arr == sep[0])
    counts = np.searchsorted(seps, ends) - np.searchsorted(seps, starts)
    lengths = ends - starts
    has_cr = arr[np.maximum(ends - 1, 0)] == 13
    blank = (lengths == 0) | ((lengths == 1) & has_cr)
    bad = np.flatnonzero((counts != expected) | blank)
    if not bad.size:
        return
    i = int(bad[0])
    line = first_line + i
    if blank[i]:
        raise DataError("blank line inside the data", file=path, line=line)
    found = int(counts[i]) + 1
    field = columns[found] if found < len(columns) else None
    raise DataError(
        f"expected {len(columns)} fields ({', '.join(columns)}), found {found}",
        file=path,
        line=line,
        field=field,
    )


def _check_decoding(
    body: bytes,
    path: Path,
    encoding: str,
    first_line: int,
    columns: Sequence[str] = (),
    sep: bytes | None = None,
) -> None:
    """``DataError`` with line (and field) of the first byte that does not decode."""
    try:
        body.decode(encoding)
    except UnicodeDecodeError as exc:
        line_start = body.rfind(b"\n", 0, exc.start) + 1
        line = first_line + body.count(b"\n", 0, exc.start)
        field = None
        if sep is not None and columns:
            col = body.count(sep, line_start, exc.start)
            field = columns[col] if col < len(columns) else None
        raise DataError(
            f"cannot decode byte 0x{body[exc.start]:02x} as {encoding} "
            "(wrong encoding? give the file's encoding)",
            file=path,
            line=line,
            field=field,
        ) from None


def _parser_error_line(exc: Exception) -> int | None:
    match = re.search(r"line (\d+)", str(exc))
    return int(match.group(1)) if match else None


def _to_float(frame: pd.DataFrame, column: str, path: Path | None, first_line: int) -> pd.Series:
    """``frame[column]`` as float64 (empty -> NaN); ``DataError`` at the first non-number."""
    values = frame[column]
    if pd.api.types.is_float_dtype(values) or pd.api.types.is_integer_dtype(values):
        return values.astype("float64")
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    numbers = pd.to_numeric(text.where(text != "", None), errors="coerce")
    bad = numbers.isna() & (text != "")
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"not a number: {values.iloc[pos]!r}", file=path, line=first_line + pos, field=column
        )
    return numbers.astype("float64")


def _read_rows(
    body: bytes,
    path: Path,
    columns: Sequence[str],
    *,
    first_line: int,
    sep: bytes = b"\t",
    encoding: str = "utf-8",
    float_columns: Iterable[str] = (),
) -> pd.DataFrame:
    """Parse header-less, unquoted ``sep``-separated rows into a frame.

    Text columns are ``object`` (empty field -> ``""``), ``float_columns`` float64 (empty ->
    NaN). Row ``i`` is at line ``first_line + i`` of ``path``.
    """
    floats = [c for c in columns if c in set(float_columns)]
    body = _trim(body)
    if not body:
        frame = pd.DataFrame(
            {c: pd.Series(dtype="float64" if c in floats else "object") for c in columns}
        )
    else:
        _check_fields(body, path, columns, sep, first_line)
        _check_decoding(body, path, encoding, first_line, columns, sep)
        kwargs: dict[str, Any] = {
            "sep": sep.decode(),
            "header": None,
            "names": list(columns),
            "engine": "c",
            "quoting": csv.QUOTE_NONE,
            "keep_default_na": False,
            "na_values": {c: [""] for c in floats},
            "skip_blank_lines": False,
            "encoding": encoding,
        }
        dtypes = {c: ("float64" if c in floats else object) for c in columns}
        try:
            frame = pd.read_csv(io.BytesIO(body), dtype=dtypes, **kwargs)
        except pd.errors.ParserError as exc:
            line = _parser_error_line(exc)
            raise DataError(
                f"cannot parse row: {str(exc).strip()}",
                file=path,
                line=None if line is None else first_line + line - 1,
            ) from None
        except ValueError:
            # A float column holds a non-number: re-read as text to find where.
            frame = pd.read_csv(io.BytesIO(body), dtype=object, **kwargs)
            for c in floats:
                frame[c] = _to_float(frame, c, path, first_line)
    frame.attrs.update(source=str(path), first_line=first_line)
    return frame


def _with_attrs(frame: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    frame.attrs.update(like.attrs)
    return frame


def _require(frame: pd.DataFrame, path: Path, required: Iterable[str], line: int = 1) -> None:
    for column in required:
        if column not in frame.columns:
            raise DataError(
                f"missing required column {column!r} "
                f"(columns: {', '.join(map(str, frame.columns))})",
                file=path,
                line=line,
                field=column,
            )


def _check_ids(frame: pd.DataFrame, column: str, path: Path | None, first_line: int) -> None:
    """Ids must be present (not NaN, not empty)."""
    values = frame[column]
    bad = values.isna() | (values == "")
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError("missing id", file=path, line=first_line + pos, field=column)


def _check_unique(frame: pd.DataFrame, column: str, path: Path | None, first_line: int) -> None:
    dup = frame[column].duplicated()
    if dup.any():
        pos = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(
            f"duplicate id {frame[column].iloc[pos]!r}",
            file=path,
            line=first_line + pos,
            field=column,
        )


def _as_str(values: pd.Series) -> pd.Series:
    """Ids as Python ``str`` in an ``object`` column (text columns already are)."""
    if pd.api.types.is_object_dtype(values):
        return values
    return values.astype(str).astype(object)


def _tokens(values: Iterable[Any], separator: str | None) -> list[tuple[str, ...]]:
    """Cells -> tuples of tokens (``separator=None``: whitespace; ``""``: one token)."""
    out: list[tuple[str, ...]] = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(())
            continue
        text = str(v).strip()
        if not text:
            out.append(())
        elif separator == "":
            out.append((text,))
        else:
            out.append(tuple(t.strip() for t in text.split(separator) if t.strip()))
    return out


def _strings(values: Iterable[Any]) -> list[str]:
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


def _text(values: pd.Series) -> pd.Series:
    """Free text: pandas' ``str`` dtype, ``""`` where the file has nothing."""
    return pd.Series(_strings(values), dtype="str", index=values.index)


def _categories(values: pd.Series) -> pd.Series:
    """Categorical values (user attributes): Python strings in an ``object`` column."""
    return pd.Series(_strings(values), dtype=object, index=values.index)


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Rows of several files; ``attrs["parts"]`` lists (source, first_line, rows) per file."""
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {"parts": [(f.attrs["source"], f.attrs["first_line"], len(f)) for f in frames]}
    return out


def _interaction_frame(
    frame: pd.DataFrame,
    path: Path | None,
    user: str,
    item: str,
    rating: str | None,
    timestamp: str | None,
) -> pd.DataFrame:
    """Standard ``user_id, item_id, rating, timestamp`` frame (ids str, the rest float)."""
    first_line = int(frame.attrs.get("first_line", 1))
    _check_ids(frame, user, path, first_line)
    _check_ids(frame, item, path, first_line)
    n = len(frame)
    out = pd.DataFrame(
        {
            "user_id": _as_str(frame[user]),
            "item_id": _as_str(frame[item]),
            "rating": (
                _to_float(frame, rating, path, first_line)
                if rating and rating in frame
                else np.full(n, np.nan)
            ),
            "timestamp": (
                _to_float(frame, timestamp, path, first_line)
                if timestamp and timestamp in frame
                else np.full(n, np.nan)
            ),
        }
    ).reset_index(drop=True)
    return _with_attrs(out, frame)


def _read_dat(
    path: Path,
    columns: Sequence[str],
    *,
    sep: bytes = b"::",
    encoding: str = "latin-1",
    float_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """A header-less ``sep``-separated file (multi-byte separators are rewritten first)."""
    raw = _read_bytes(path)
    if len(sep) > 1:
        placeholder = next((b for b in (b"\t", b"\x1f", b"\x1e") if b not in raw), None)
        if placeholder is None:
            raise DataError("tab and control bytes inside the data", file=path)
        raw = raw.replace(sep, placeholder)
        sep = placeholder
    return _read_rows(
        raw, path, columns, first_line=1, sep=sep, encoding=encoding, float_columns=float_columns
    )


def _find_name(directory: Path, suffix: str) -> str:
    """The NAME of the single ``NAME<suffix>`` file in ``directory``."""
    if not directory.is_dir():
        raise DataError("not a directory", file=directory)
    names = sorted(p.name[: -len(suffix)] for p in directory.glob(f"*{suffix}"))
    if suffix == ".inter":
        names = [n for n in names if not n.endswith((".train", ".valid", ".test"))]
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise DataError(f"expected one *{suffix} file, found: {found}; pass name=", file=directory)
    return names[0]
