"""Loaders: dataset files on disk -> :class:`~kinrec.data.dataset.Dataset` (or a fixed Split).

Formats:

* RecBole atomic files (``NAME.inter/.item/.user/.kg/.link``, typed headers) and RecBole
  benchmark split folders (``NAME.{train,valid,test}.inter``): :func:`load_recbole_atomic`,
  :func:`load_split_dir`.
* MovieLens originals: :func:`load_movielens_1m` (``*.dat``, ``::``-separated),
  :func:`load_movielens_100k` (``u.data``/``u.item``/``u.user``).
* UniSRec sequences (``NAME.text``, ``NAME.item2index``, ``NAME.{train,valid,test}.inter``):
  :func:`load_unisrec`, :func:`load_unisrec_split`.
* Your own CSV/TSV/Parquet tables (interactions, items, users, knowledge-graph triples,
  item -> entity links) named by a TOML mapping: :func:`load_tables` and the single-file
  :func:`load_table`, in :mod:`kinrec.data.table` (importable from here too).

Bad input raises :class:`~kinrec.data.errors.DataError` naming file, line and field. Every
loaded frame carries ``attrs["source"]`` (the file) and ``attrs["first_line"]`` (the line
number of its row 0), so later stages can point at a bad row.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import pandas as pd

from kinrec.data.dataset import INTERACTION_COLUMNS, LINK_COLUMNS, TRIPLE_COLUMNS, Dataset, Split
from kinrec.data.errors import DataError

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
# Item fields whose name contains one of these words are free text (token_seq fields only).
# fmt: off
TEXT_HINTS = frozenset({
    "title", "name", "text", "description", "desc", "review", "summary", "content", "abstract",
    "comment", "plot", "overview", "caption", "body",
})
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
# fmt: on

PathLike = str | Path

UNISREC_TEMPLATE = "{text}"
"""UniSRec item text, rendered as shipped (title, category path and brand in one field)."""


# --------------------------------------------------------------------------- low-level reading


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


# --------------------------------------------------------------------------- RecBole atomic files


def _parse_atomic_header(header: str, path: Path) -> dict[str, str]:
    """``name:type`` columns -> {name: type}; ``DataError`` on a bad or unknown type."""
    fields: dict[str, str] = {}
    for column in header.split("\t"):
        column = column.strip()
        name, colon, typ = column.rpartition(":")
        if not colon or not name:
            raise DataError(
                "header column without a type (expected name:type, e.g. item_id:token)",
                file=path,
                line=1,
                field=column,
            )
        if typ not in ATOMIC_TYPES:
            raise DataError(
                f"unknown header type {typ!r} (known: {', '.join(ATOMIC_TYPES)})",
                file=path,
                line=1,
                field=name,
            )
        if name in fields:
            raise DataError("duplicate header column", file=path, line=1, field=name)
        fields[name] = typ
    return fields


def read_atomic(
    path: PathLike, keep_text: Iterable[str] = ()
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read one RecBole atomic file: the frame and its ``{field: type}`` header.

    ``float`` fields are float64 (except those named in ``keep_text``), all others ``str``.
    """
    path = Path(path)
    raw = _read_bytes(path)
    header, body = _split_header(raw, path)
    fields = _parse_atomic_header(header, path)
    keep = set(keep_text)
    floats = [name for name, typ in fields.items() if typ == "float" and name not in keep]
    frame = _read_rows(body, path, list(fields), first_line=2, float_columns=floats)
    return frame, fields


def _atomic_interactions(
    path: Path,
    user: str = "user_id",
    item: str = "item_id",
    rating: str = "rating",
    timestamp: str = "timestamp",
) -> pd.DataFrame:
    frame, _ = read_atomic(path)
    _require(frame, path, (user, item))
    return _interaction_frame(frame, path, user, item, rating, timestamp)


def _is_text_name(name: str) -> bool:
    return any(part in TEXT_HINTS for part in re.split(r"[^a-z0-9]+", name.lower()))


def _atomic_items(
    path: Path,
    item: str,
    text_fields: Sequence[str] | None,
    attribute_fields: Sequence[str] | None,
    multi_token_fields: Sequence[str] | None,
) -> tuple[pd.DataFrame, list[str], list[str]]:
    frame, types = read_atomic(path, keep_text=[*(text_fields or ()), *(attribute_fields or ())])
    _require(frame, path, (item,))
    first_line = int(frame.attrs["first_line"])
    _check_ids(frame, item, path, first_line)
    _check_unique(frame, item, path, first_line)
    others = [f for f in types if f != item]
    for given in (text_fields, attribute_fields, multi_token_fields):
        for f in given or ():
            if f not in types:
                raise DataError(f"no such item field {f!r}", file=path, line=1, field=f)
    if text_fields is None:
        declared = set(attribute_fields or ())
        text = [
            f for f in others if types[f] == "token_seq" and _is_text_name(f) and f not in declared
        ]
    else:
        text = list(text_fields)
    if attribute_fields is None:
        attrs = [f for f in others if types[f] in ("token", "token_seq") and f not in text]
    else:
        attrs = [f for f in attribute_fields if f not in text]
    multi = (
        {f for f in attrs if types[f] == "token_seq"}
        if multi_token_fields is None
        else set(multi_token_fields)
    )
    out = pd.DataFrame({"item_id": frame[item].astype(object)})
    for f in others:
        if f in text:
            out[f] = _text(frame[f])
        elif f in attrs:
            # a declared attribute keeps the file's text, even for a float field ("1995")
            out[f] = _tokens(frame[f], None if f in multi else "")
        elif types[f] == "float":
            out[f] = frame[f].to_numpy()
        elif types[f] == "float_seq":
            out[f] = [tuple(float(x) for x in t) for t in _tokens(frame[f], None)]
    return _with_attrs(out, frame), text, attrs


def _atomic_users(
    path: Path, user: str, user_attribute_fields: Sequence[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    frame, types = read_atomic(path, keep_text=user_attribute_fields or ())
    _require(frame, path, (user,))
    first_line = int(frame.attrs["first_line"])
    _check_ids(frame, user, path, first_line)
    _check_unique(frame, user, path, first_line)
    others = [f for f in types if f != user]
    for f in user_attribute_fields or ():
        if f not in types:
            raise DataError(f"no such user field {f!r}", file=path, line=1, field=f)
    if user_attribute_fields is None:
        attrs = [f for f in others if types[f] in ("token", "token_seq")]
    else:
        attrs = list(user_attribute_fields)
    out = pd.DataFrame({"user_id": frame[user].astype(object)})
    for f in others:
        if f in attrs:
            out[f] = frame[f].astype(object)
        elif types[f] == "float":
            out[f] = frame[f].to_numpy()
    return _with_attrs(out, frame), attrs


def _entity_table(
    path: Path, names: Sequence[Sequence[str]], out_columns: Sequence[str]
) -> pd.DataFrame:
    """A .kg/.link file: columns found by name (any alias), else by position."""
    frame, types = read_atomic(path, keep_text=[n for aliases in names for n in aliases])
    found = [next((a for a in aliases if a in types), None) for aliases in names]
    if None in found and len(types) == len(names):
        found = list(types)  # unnamed columns: take them in order
    for aliases, hit in zip(names, found, strict=True):
        if hit is None:
            _require(frame, path, aliases[:1])
    out = pd.DataFrame({o: _as_str(frame[c]) for o, c in zip(out_columns, found, strict=True)})
    for c in found:
        _check_ids(frame, c, path, int(frame.attrs["first_line"]))
    return _with_attrs(out, frame)


def _atomic_triples(path: Path) -> pd.DataFrame:
    names = (
        ("head_id", "head", "head_entity"),
        ("relation_id", "relation"),
        ("tail_id", "tail", "tail_entity"),
    )
    return _entity_table(path, names, TRIPLE_COLUMNS)


def _atomic_links(path: Path, item: str = "item_id") -> pd.DataFrame:
    return _entity_table(path, ((item, "item_id"), ("entity_id", "entity")), LINK_COLUMNS)


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


class AtomicOptions(TypedDict, total=False):
    """Field options of the RecBole atomic loaders (see :func:`load_recbole_atomic`)."""

    text_fields: Sequence[str] | None
    attribute_fields: Sequence[str] | None
    multi_token_fields: Sequence[str] | None
    user_attribute_fields: Sequence[str] | None
    user_field: str
    item_field: str
    rating_field: str
    timestamp_field: str


def _atomic_dataset(
    directory: Path, name: str, inter_files: Sequence[str], options: AtomicOptions
) -> tuple[Dataset, list[pd.DataFrame]]:
    """Dataset of ``inter_files`` (concatenated) plus the optional NAME.item/.user/.kg/.link;
    also the interaction frame of each file."""
    unknown = set(options) - set(AtomicOptions.__annotations__)
    if unknown:
        raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
    user, item = options.get("user_field", "user_id"), options.get("item_field", "item_id")
    rating = options.get("rating_field", "rating")
    timestamp = options.get("timestamp_field", "timestamp")
    frames = [
        _atomic_interactions(directory / f, user, item, rating, timestamp) for f in inter_files
    ]
    side: dict[str, Any] = {}
    item_path, user_path = directory / f"{name}.item", directory / f"{name}.user"
    kg_path, link_path = directory / f"{name}.kg", directory / f"{name}.link"
    if item_path.exists():
        items, text, attrs = _atomic_items(
            item_path,
            item,
            options.get("text_fields"),
            options.get("attribute_fields"),
            options.get("multi_token_fields"),
        )
        side.update(items=items, text_fields=text, attribute_fields=attrs)
    if user_path.exists():
        users, uattrs = _atomic_users(user_path, user, options.get("user_attribute_fields"))
        side.update(users=users, user_attribute_fields=uattrs)
    if kg_path.exists():
        side["triples"] = _atomic_triples(kg_path)
    if link_path.exists():
        side["links"] = _atomic_links(link_path, item)
    inter = frames[0] if len(frames) == 1 else _concat(frames)
    return Dataset(name=name, interactions=inter, **side), frames


def load_recbole_atomic(
    directory: PathLike, name: str | None = None, **options: Unpack[AtomicOptions]
) -> Dataset:
    """Load RecBole atomic files ``NAME.inter`` (required) and ``.item/.user/.kg/.link``.

    Item fields: ``token_seq`` fields whose name suggests text (title, name, text, description,
    review, ...) are text fields; other ``token``/``token_seq`` fields are attributes
    (``token_seq`` split on spaces, ``token`` one token); ``float`` fields stay numeric
    columns. Options: ``text_fields``/``attribute_fields`` replace the guess;
    ``multi_token_fields`` names the attributes split on spaces (default: the ``token_seq``
    ones); ``user_attribute_fields`` likewise for the user file (default: its token fields);
    ``user_field``/``item_field``/``rating_field``/``timestamp_field`` name the interaction
    columns. ``name`` defaults to the only ``*.inter`` file's stem.
    """
    directory = Path(directory)
    name = name or _find_name(directory, ".inter")
    return _atomic_dataset(directory, name, [f"{name}.inter"], options)[0]


def load_split_dir(
    directory: PathLike,
    name: str | None = None,
    *,
    parts: Sequence[str] = ("train", "valid", "test"),
    **options: Unpack[AtomicOptions],
) -> Split:
    """A fixed split in RecBole benchmark layout: ``NAME.{train,valid,test}.inter``.

    ``NAME.item/.user/.kg/.link`` in the same folder fill ``Split.dataset``; the item
    catalogue is the item file's ids first (full ranking covers all of them), then any item
    seen only in the interaction files. ``NAME.cold_items.txt`` (one item id per line), when
    present, lists the items published after training (``Dataset.new_items``). Options are
    those of :func:`load_recbole_atomic`.
    """
    directory = Path(directory)
    name = name or _find_name(directory, f".{parts[0]}.inter")
    files = [f"{name}.{part}.inter" for part in parts]
    dataset, frames = _atomic_dataset(directory, name, files, options)
    catalogue = dataset.all_item_ids()
    new_items = directory / f"{name}.cold_items.txt"
    if new_items.exists():
        dataset.new_items = _read_item_list(new_items, set(catalogue))
    return Split.from_frames(*frames, item_ids=catalogue, dataset=dataset)


def _read_item_list(path: Path, known: set[str]) -> list[str]:
    """Item ids, one per line (blank lines skipped); each must be in the catalogue."""
    ids = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        item = line.strip()
        if not item:
            continue
        if item not in known:
            raise DataError(f"unknown item {item!r}", file=str(path), line=number, field="item_id")
        ids.append(item)
    return ids


# --------------------------------------------------------------------------- MovieLens originals


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


def _split_titles(titles: pd.Series) -> tuple[list[str], list[tuple[str, ...]]]:
    """ "Toy Story (1995)" -> ("Toy Story", ("1995",)); no year -> (title, ())."""
    names: list[str] = []
    years: list[tuple[str, ...]] = []
    for t in titles:
        match = _TITLE_YEAR.match(t)
        if match:
            names.append(match.group("title"))
            years.append((match.group("year"),))
        else:
            names.append(t.strip())
            years.append(())
    return names, years


def _kg_txt(directory: Path) -> dict[str, pd.DataFrame]:
    """Optional ``kg.txt`` (head, relation, tail) and ``item_index2entity_id.txt``."""
    out: dict[str, pd.DataFrame] = {}
    kg, link = directory / "kg.txt", directory / "item_index2entity_id.txt"
    if kg.exists():
        out["triples"] = _read_dat(kg, TRIPLE_COLUMNS, sep=b"\t", encoding="utf-8")
    if link.exists():
        out["links"] = _read_dat(link, LINK_COLUMNS, sep=b"\t", encoding="utf-8")
    for key, frame in out.items():
        for column in frame.columns:
            _check_ids(frame, column, Path(frame.attrs["source"]), 1)
            frame[column] = frame[column].str.strip()
        out[key] = frame
    return out


def _ml_ratings(path: Path, sep: bytes) -> pd.DataFrame:
    ratings = _read_dat(path, INTERACTION_COLUMNS, sep=sep, float_columns=("rating", "timestamp"))
    for column in ("user_id", "item_id"):
        _check_ids(ratings, column, path, 1)
    return ratings


def _ml_table(path: Path, columns: Sequence[str], sep: bytes) -> pd.DataFrame:
    """A MovieLens movie or user table; its first column is a unique id."""
    frame = _read_dat(path, columns, sep=sep)
    _check_ids(frame, columns[0], path, 1)
    _check_unique(frame, columns[0], path, 1)
    return frame


def _ml_items(
    movies: pd.DataFrame, genres: list[tuple[str, ...]], dates: Sequence[str] | None = None
) -> dict[str, Any]:
    """Dataset arguments for items: text ``title``, attributes ``year`` and ``genres``.

    The year comes from the title ("Toy Story (1995)"), else from the end of ``dates``.
    """
    titles, years = _split_titles(movies["raw_title"])
    if dates is not None:
        years = [
            y or ((d[-4:],) if d[-4:].isdigit() else ()) for y, d in zip(years, dates, strict=True)
        ]
    items = pd.DataFrame(
        {"item_id": movies["item_id"], "title": titles, "year": years, "genres": genres}
    )
    return {
        "items": _with_attrs(items, movies),
        "text_fields": ["title"],
        "attribute_fields": ["year", "genres"],
    }


def load_movielens_1m(directory: PathLike) -> Dataset:
    """The original ML-1M files: ``ratings.dat``, ``movies.dat``, ``users.dat`` (``::``).

    Items get the text field ``title`` (without the year) and attributes ``year`` and
    ``genres``; users the attributes ``gender``, ``age``, ``occupation``, ``zip_code`` (codes as
    in the README). Optional ``kg.txt`` / ``item_index2entity_id.txt`` (tab-separated) fill
    ``triples`` / ``links``.
    """
    directory = Path(directory)
    ratings = _ml_ratings(directory / "ratings.dat", b"::")
    side: dict[str, Any] = {}
    if (movies_path := directory / "movies.dat").exists():
        movies = _ml_table(movies_path, ("item_id", "raw_title", "genres"), b"::")
        side.update(_ml_items(movies, _tokens(movies["genres"], "|")))
    if (users_path := directory / "users.dat").exists():
        user_columns = ("user_id", "gender", "age", "occupation", "zip_code")
        users = _ml_table(users_path, user_columns, b"::")
        side.update(users=users, user_attribute_fields=list(user_columns[1:]))
    side.update(_kg_txt(directory))
    return Dataset(name="ml-1m", interactions=ratings, **side)


def load_movielens_100k(directory: PathLike) -> Dataset:
    """The original ML-100K files: ``u.data`` (tab), ``u.item`` and ``u.user`` (``|``, latin-1).

    Same fields as :func:`load_movielens_1m`: text ``title``; attributes ``year`` (from the
    title, else the release date) and ``genres`` (from the 19 genre flags, names from
    ``u.genre`` when present); users ``age``, ``gender``, ``occupation``, ``zip_code``.
    """
    directory = Path(directory)
    ratings = _ml_ratings(directory / "u.data", b"\t")
    side: dict[str, Any] = {}
    genres = list(ML100K_GENRES)
    if (genre_path := directory / "u.genre").exists():
        table = _read_dat(genre_path, ("genre", "index"), sep=b"|")
        genres = [
            g for _, g in sorted(zip(table["index"].astype(int), table["genre"], strict=True))
        ]
    if (item_path := directory / "u.item").exists():
        flag_columns = [f"g{i}" for i in range(len(genres))]
        base = ["item_id", "raw_title", "release_date", "video_release_date", "url"]
        movies = _ml_table(item_path, base + flag_columns, b"|")
        flags = movies[flag_columns].to_numpy() == "1"
        item_genres = [tuple(g for g, f in zip(genres, row, strict=True) if f) for row in flags]
        side.update(_ml_items(movies, item_genres, movies["release_date"].str.strip().tolist()))
    if (user_path := directory / "u.user").exists():
        user_columns = ("user_id", "age", "gender", "occupation", "zip_code")
        users = _ml_table(user_path, user_columns, b"|")
        side.update(users=users, user_attribute_fields=list(user_columns[1:]))
    side.update(_kg_txt(directory))
    return Dataset(name="ml-100k", interactions=ratings, **side)


# --------------------------------------------------------------------------- UniSRec sequences


def _unisrec_sequences(
    directory: Path, name: str, known_items: set[str]
) -> dict[str, tuple[list[str], int | None, int | None]]:
    """Per user: the full item sequence, and the positions of the valid and test targets.

    UniSRec keeps one row per prefix (history -> target), histories cut to the last 50 items,
    so the sequence is chained from the shortest train history through every target; each
    row's history must continue the chain.
    """
    rows: dict[str, list[tuple[list[str], str, Path, int, str]]] = {}
    for part in ("train", "valid", "test"):
        path = directory / f"{name}.{part}.inter"
        if not path.exists():
            if part == "train":
                continue
            raise DataError("file not found", file=path)
        frame, _ = read_atomic(path)
        _require(frame, path, ("user_id", "item_id_list", "item_id"))
        _check_ids(frame, "user_id", path, 2)
        _check_ids(frame, "item_id", path, 2)
        for pos, (user, history, target) in enumerate(
            zip(frame["user_id"], frame["item_id_list"], frame["item_id"], strict=True)
        ):
            rows.setdefault(user, []).append((history.split(), target, path, 2 + pos, part))
    out: dict[str, tuple[list[str], int | None, int | None]] = {}
    for user, user_rows in rows.items():
        train = [r for r in reversed(user_rows) if r[4] == "train"]
        train.sort(key=lambda r: len(r[0]))
        ordered = (
            train
            + [r for r in user_rows if r[4] == "valid"]
            + [r for r in user_rows if r[4] == "test"]
        )
        seq = list(ordered[0][0])
        valid_pos = test_pos = None
        for k, (history, target, path, line, part) in enumerate(ordered):
            # Every item enters the sequence as the first history or as a target.
            for it, field in [
                *((h, "item_id_list") for h in history if not k),
                (target, "item_id"),
            ]:
                if it not in known_items:
                    raise DataError(
                        f"item {it!r} is not in {name}.item2index",
                        file=path,
                        line=line,
                        field=field,
                    )
            if k and history and seq[-len(history) :] != history:
                raise DataError(
                    f"history of user {user!r} does not continue the earlier rows",
                    file=path,
                    line=line,
                    field="item_id_list",
                )
            if part == "valid":
                valid_pos = len(seq)
            elif part == "test":
                test_pos = len(seq)
            seq.append(target)
        out[user] = (seq, valid_pos, test_pos)
    return out


def _unisrec_index(path: Path) -> pd.DataFrame:
    frame = _read_dat(path, ("key", "index"), sep=b"\t", encoding="utf-8")
    _check_ids(frame, "key", path, 1)
    _check_ids(frame, "index", path, 1)
    _check_unique(frame, "key", path, 1)
    _check_unique(frame, "index", path, 1)
    return frame


def _load_unisrec(directory: PathLike, name: str) -> tuple[Dataset, dict]:
    directory = Path(directory)
    item_index = _unisrec_index(directory / f"{name}.item2index")
    item_ids = list(item_index["index"])
    asin_to_index = dict(zip(item_index["key"], item_index["index"], strict=True))
    texts: dict[str, str] = {}
    text_path = directory / f"{name}.text"
    if text_path.exists():
        text_frame, _ = read_atomic(text_path)
        _require(text_frame, text_path, ("item_id", "text"))
        texts = dict(zip(text_frame["item_id"], text_frame["text"], strict=True))
    index_to_text = {idx: texts.get(asin, "").strip() for asin, idx in asin_to_index.items()}
    parsed = [parse_product_text(index_to_text[i]) for i in item_ids]
    items = pd.DataFrame(
        {
            "item_id": pd.Series(item_ids, dtype=object),
            "text": pd.Series([index_to_text[i] for i in item_ids], dtype="str"),
            "category": pd.Series([p[0] for p in parsed], dtype=object),
            "brand": pd.Series([p[1] for p in parsed], dtype=object),
        }
    )
    items = _with_attrs(items, item_index)
    sequences = _unisrec_sequences(directory, name, set(item_ids))
    users_path = directory / f"{name}.user2index"
    if users_path.exists():
        user_ids = list(_unisrec_index(users_path)["index"])
        listed = set(user_ids)
        user_ids += [u for u in sequences if u not in listed]
    else:
        user_ids = list(sequences)
    users_seen = [u for u in user_ids if u in sequences]
    user_col, item_col, stamp_col = [], [], []
    for u in users_seen:
        seq = sequences[u][0]
        user_col.extend([u] * len(seq))
        item_col.extend(seq)
        stamp_col.extend(range(len(seq)))
    inter = pd.DataFrame(
        {
            "user_id": pd.Series(user_col, dtype=object),
            "item_id": pd.Series(item_col, dtype=object),
            "rating": np.full(len(user_col), np.nan),
            "timestamp": np.asarray(stamp_col, dtype=np.float64),
        }
    )
    users = pd.DataFrame({"user_id": pd.Series(user_ids, dtype=object)})
    dataset = Dataset(
        name=name,
        interactions=inter,
        items=items,
        users=users,
        text_fields=["text"],
        attribute_fields=["category", "brand"],
        # the shipped text already holds title, category path and brand
        text_template=UNISREC_TEMPLATE,
    )
    return dataset, sequences


def parse_product_text(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(category, brand)`` attributes from a UniSRec product text.

    The text is ``"<title>. <category path>. <brand>. "``; the category path starts with the
    top-level department (``Industrial & Scientific``) and its levels are joined by spaces, so
    the whole path is one category entity. Either is empty when the text lacks it.
    """
    parts = [p.strip() for p in text.split(". ") if p.strip()]
    if len(parts) < 3:
        return (), ()
    brand = parts[-1].rstrip(".").strip()
    category = parts[-2].strip()
    return ((category,) if category else ()), ((brand,) if brand else ())


def load_unisrec(directory: PathLike, name: str | None = None) -> Dataset:
    """UniSRec files -> Dataset with item ids = the indices used in the ``.inter`` files.

    Items carry the text field ``text`` (rendered as it is: it already holds the title,
    category path and brand, which are also the attributes ``category`` and ``brand``); each
    user's full sequence (rebuilt from the train, valid and test rows) becomes interactions
    with ``timestamp`` = position in the sequence. ``name`` defaults to the stem of the only
    ``*.item2index`` file.
    """
    directory = Path(directory)
    return _load_unisrec(directory, name or _find_name(directory, ".item2index"))[0]


def load_unisrec_split(directory: PathLike, name: str | None = None) -> Split:
    """UniSRec's leave-one-out split: train = items before the valid target, valid = the valid
    target, test = the test target; the catalogue is every item of ``NAME.item2index``.
    ``name`` defaults to the stem of the only ``*.item2index`` file."""
    directory = Path(directory)
    dataset, sequences = _load_unisrec(directory, name or _find_name(directory, ".item2index"))
    parts: dict[str, list[tuple[str, str, float]]] = {"train": [], "valid": [], "test": []}
    for user in pd.unique(dataset.interactions["user_id"]):
        seq, valid_pos, test_pos = sequences[user]
        end = (
            valid_pos if valid_pos is not None else (test_pos if test_pos is not None else len(seq))
        )
        parts["train"].extend((user, it, float(t)) for t, it in enumerate(seq[:end]))
        if valid_pos is not None:
            parts["valid"].append((user, seq[valid_pos], float(valid_pos)))
        if test_pos is not None:
            parts["test"].append((user, seq[test_pos], float(test_pos)))
    frames = []
    for rows in parts.values():
        frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).astype(
            {"user_id": object, "item_id": object, "timestamp": "float64"}
        )
        frame.insert(2, "rating", np.nan)
        frames.append(frame)
    return Split.from_frames(*frames, item_ids=list(dataset.items["item_id"]), dataset=dataset)


# --------------------------------------------------------------------------- generic tables
# CSV/TSV/Parquet tables live in kinrec.data.table (which reads with the helpers above); their
# names stay importable from here.
_TABLE_NAMES = frozenset(
    {"ColumnMapping", "TableMapping", "is_table_mapping", "load_table", "load_tables"}
)


def __getattr__(name: str) -> Any:
    if name in _TABLE_NAMES:
        from kinrec.data import table

        return getattr(table, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [  # noqa: F822 - the table names come from kinrec.data.table on first use
    "AtomicOptions",
    "ColumnMapping",
    "TableMapping",
    "load_movielens_1m",
    "load_movielens_100k",
    "load_recbole_atomic",
    "load_split_dir",
    "load_table",
    "load_tables",
    "load_unisrec",
    "load_unisrec_split",
    "read_atomic",
]
