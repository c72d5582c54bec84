"""Your own data from CSV, TSV or Parquet files: up to five tables named by one TOML mapping.

A mapping file (``kinrec ingest --format table --map data.toml``) names each table's file
(relative to the TOML file) and which of its columns hold what::

    name = "shop"                      # the dataset's name in the store (default: file stem)

    [interactions]                     # required: who did what (one file, or a list of shards)
    path = "interactions.csv"
    user = "user_id"
    item = "item_id"
    rating = "rating"                  # optional
    timestamp = "timestamp"            # optional: numbers, or dates (ISO 8601 / timestamp_format)

    [items]                            # optional: what each item is
    path = "items.csv"
    id = "item_id"
    text = ["title", "description"]    # free text, for the language model
    attributes = ["category", "tags"]  # categorical; "a|b" cells hold several tokens
    entity = "entity"                  # optional: the item's knowledge-graph entity
    text_template = "{title}. {description}[ Tags: {tags}.]"   # optional

    [users]                            # optional: user attributes
    path = "users.csv"
    id = "user_id"
    attributes = ["country"]

    [triples]                          # optional: the knowledge graph (head, relation, tail)
    path = "triples.csv"

    [links]                            # optional: item -> entity (or [items] entity)
    path = "links.csv"

Every table also takes ``separator`` (default ``,`` for ``.csv``, tab otherwise), ``encoding``
(default UTF-8) and ``columns`` (names for a file without a header row). Column options
default to the names above (``user_id``, ``item_id``, ``head``, ``relation``, ``tail``,
``entity_id``), so files that use them need only ``path``.

Every item named by any table is in the catalogue: an item known only from the items table or
from a link has no interactions yet and is ranked through its text and knowledge graph. It is
not declared new (``Dataset.new_items``, which gets kinformer's new-item offset): having no
interactions does not make an item new.

Bad input raises :class:`~kinrec.data.errors.DataError` with file, line and field (for
Parquet files the line is the 1-based row number). :func:`load_table` and
:class:`ColumnMapping` are the older single-file form (interactions, optionally with items and
users tables in one flat column mapping); both remain importable from
:mod:`kinrec.data.loaders`.
"""

from __future__ import annotations

import io
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from kinrec.data.dataset import LINK_COLUMNS, TRIPLE_COLUMNS, Dataset, empty_frame
from kinrec.data.errors import DataError
from kinrec.data.loaders import (
    PathLike,
    _as_str,
    _categories,
    _check_decoding,
    _check_unique,
    _concat,
    _interaction_frame,
    _parser_error_line,
    _read_bytes,
    _require,
    _text,
    _tokens,
    _with_attrs,
)

TABLE_KINDS = ("interactions", "items", "users", "triples", "links")


# --------------------------------------------------------------------------- reading a file


def _read_file(
    path: Path, separator: str | None, encoding: str, columns: Sequence[str] | None
) -> pd.DataFrame:
    """A CSV/TSV/Parquet table with string cells (Parquet keeps its types)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        if not path.exists():
            raise DataError("file not found", file=path)
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise DataError(f"cannot read Parquet: {exc}", file=path) from None
        if frame.empty and not len(frame.columns):
            raise DataError("empty file", file=path, line=1)
        frame.attrs.update(source=str(path), first_line=1)
        return frame
    raw = _read_bytes(path)
    sep = separator or ("," if path.suffix.lower() == ".csv" else "\t")
    _check_decoding(raw, path, encoding, 1)
    header = columns is None
    try:
        frame = pd.read_csv(
            io.BytesIO(raw),
            sep=sep,
            header=0 if header else None,
            names=None if header else list(columns or ()),
            dtype=object,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            encoding=encoding,
            engine="c" if len(sep) == 1 else "python",
        )
    except pd.errors.ParserError as exc:
        raise DataError(
            f"cannot parse row: {str(exc).strip()}", file=path, line=_parser_error_line(exc)
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError("empty file", file=path, line=1) from None
    first_line = 2 if header else 1
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.any():
        last = len(blank) - int(np.argmin(blank[::-1])) if not blank.all() else 0
        interior = np.flatnonzero(blank[:last])
        if interior.size:
            raise DataError(
                "blank line inside the data", file=path, line=first_line + int(interior[0])
            )
        frame = frame.iloc[:last]
    frame.attrs.update(source=str(path), first_line=first_line)
    return frame


def _timestamps(frame: pd.DataFrame, column: str, path: Path, fmt: str | None) -> pd.Series:
    """Numbers as they are; date strings (ISO 8601 or ``fmt``) as seconds since the epoch."""
    first_line = int(frame.attrs.get("first_line", 1))
    values = frame[column]
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        numbers = pd.to_numeric(values, errors="coerce") if fmt is None else None
        if numbers is not None and not (numbers.isna() & values.notna()).any():
            return numbers.astype("float64")
        parsed = pd.to_datetime(values, format=fmt or "ISO8601", utc=True, errors="coerce")
        bad = parsed.isna() & values.notna()
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"not a number or date: {values.iloc[pos]!r}",
                file=path,
                line=first_line + pos,
                field=column,
            )
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return seconds.astype("float64")


def _blank(values: pd.Series) -> np.ndarray:
    """Missing, empty or whitespace-only cells."""
    text = values.astype(object).where(values.notna(), "").astype(str).str.strip()
    return (values.isna() | (text == "")).to_numpy(bool)


def _check_present(frame: pd.DataFrame, column: str, path: Path, what: str) -> None:
    """Every cell of ``column`` holds a value; else name the first blank one."""
    bad = _blank(frame[column])
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        line = int(frame.attrs.get("first_line", 1)) + pos
        raise DataError(f"missing {what}", file=path, line=line, field=column)


def _cell_tokens(values: Iterable[Any], separator: str) -> list[tuple[str, ...]]:
    """Attribute cells -> token tuples: text split on ``separator`` (``""``: one token), list
    cells (Parquet) token by token, numbers as written (``1995.0`` -> ``"1995"``)."""

    def one(value: Any) -> str:
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        return str(value).strip()

    out: list[tuple[str, ...]] = []
    for v in values:
        if isinstance(v, (list, tuple, np.ndarray)):
            out.append(tuple(t for t in (one(x) for x in v if not _is_missing(x)) if t))
        elif _is_missing(v):
            out.append(())
        elif isinstance(v, str):
            out.append(_tokens([v], separator)[0])
        else:
            out.append((one(v),))
    return out


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


# --------------------------------------------------------------------------- five-table mapping


_PATH = "CSV, TSV or Parquet file, relative to the mapping file"


class _FileTable(BaseModel):
    """How a table's file is written (each table adds ``path`` and its columns)."""

    model_config = ConfigDict(extra="forbid")

    separator: str | None = Field(None, description="default: ',' for .csv, tab otherwise")
    encoding: str = "utf-8"
    columns: list[str] | None = Field(None, description="names for a file without header row")


class InteractionsTable(_FileTable):
    path: str | list[str] = Field(description=_PATH + " (or a list, read one after another)")
    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = None
    timestamp: str | None = None
    timestamp_format: str | None = Field(
        None, description="strptime format of date strings; default: numbers or ISO 8601"
    )


class ItemsTable(_FileTable):
    path: str = Field(description=_PATH)
    id: str = "item_id"
    text: list[str] = Field(default_factory=list, description="free-text columns")
    attributes: list[str] = Field(default_factory=list, description="categorical columns")
    attribute_separator: str = Field("|", description="splits multi-valued attribute cells")
    entity: str | None = Field(None, description="column of each item's knowledge-graph entity")
    text_template: str | None = Field(
        None, description="how the fields become the item's text, e.g. '{title}. {description}'"
    )


class UsersTable(_FileTable):
    path: str = Field(description=_PATH)
    id: str = "user_id"
    attributes: list[str] = Field(default_factory=list)


class TriplesTable(_FileTable):
    path: str = Field(description=_PATH)
    head: str = "head"
    relation: str = "relation"
    tail: str = "tail"


class LinksTable(_FileTable):
    path: str = Field(description=_PATH)
    item: str = "item_id"
    entity: str = "entity_id"


class TableMapping(BaseModel):
    """Five tables of a dataset and their columns (see the module docstring for the TOML)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="dataset name (default: the mapping file's stem)")
    interactions: InteractionsTable
    items: ItemsTable | None = None
    users: UsersTable | None = None
    triples: TriplesTable | None = None
    links: LinksTable | None = None
    _base: Path = PrivateAttr(default_factory=Path)
    _source: Path | None = PrivateAttr(default=None)

    @classmethod
    def from_toml(cls, path: PathLike) -> TableMapping:
        """Read a mapping file; table paths are relative to its folder."""
        path = Path(path)
        data = _read_toml(path)
        mapping = _validate(cls, data, path, "table mapping")
        mapping._base = path.parent
        mapping._source = path
        if mapping.name is None:
            mapping.name = path.stem
        return mapping

    def resolve(self, path: str) -> Path:
        """A table path as given in the mapping, relative to the mapping file's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self._base / p

    @property
    def source(self) -> Path | None:
        """The mapping file (None when built in code)."""
        return self._source


def _read_toml(path: Path) -> Any:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise DataError("file not found", file=path) from None
    except IsADirectoryError:
        raise DataError("is a directory, expected a TOML file", file=path) from None
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"at line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise DataError(f"invalid TOML: {exc}", file=path, line=line) from None


def _validate(cls: type[BaseModel], data: Any, path: Path, what: str) -> Any:
    """``cls.model_validate(data)``; a DataError naming the file and the first bad key."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise DataError(f"invalid {what}: {message}", file=path, field=where) from None


def is_table_mapping(path: PathLike) -> bool:
    """Whether a TOML file is a five-table mapping (it has an ``[interactions]`` table) rather
    than the flat :class:`ColumnMapping`."""
    return isinstance(_read_toml(Path(path)).get("interactions"), dict)


def _interactions(mapping: TableMapping) -> pd.DataFrame:
    spec = mapping.interactions
    paths = [spec.path] if isinstance(spec.path, str) else list(spec.path)
    if not paths:
        raise DataError("no interaction file", file=mapping.source, field="interactions.path")
    frames = []
    for p in map(mapping.resolve, paths):
        raw = _read_file(p, spec.separator, spec.encoding, spec.columns)
        _require(raw, p, [c for c in (spec.user, spec.item, spec.rating, spec.timestamp) if c])
        for column, what in ((spec.user, "user id"), (spec.item, "item id")):
            _check_present(raw, column, p, what)
        frame = _interaction_frame(raw, p, spec.user, spec.item, spec.rating, None)
        if spec.timestamp:
            frame["timestamp"] = _timestamps(
                raw, spec.timestamp, p, spec.timestamp_format
            ).to_numpy()
        frames.append(frame)
    return frames[0] if len(frames) == 1 else _concat(frames)


def _keyed(
    mapping: TableMapping, spec: ItemsTable | UsersTable, key: str, fields: Sequence[str], what: str
) -> tuple[pd.DataFrame, Path]:
    """An items or users file: required columns present, ids present and unique."""
    path = mapping.resolve(spec.path)
    raw = _read_file(path, spec.separator, spec.encoding, spec.columns)
    _require(raw, path, [key, *fields])
    first_line = int(raw.attrs["first_line"])
    _check_present(raw, key, path, what)
    raw[key] = _as_str(raw[key])
    _check_unique(raw, key, path, first_line)
    return raw, path


def _items(mapping: TableMapping) -> tuple[dict[str, Any], list[_Link]]:
    spec = mapping.items
    assert spec is not None
    both = set(spec.text) & set(spec.attributes)
    if both:
        raise DataError(
            "a column cannot be both text and attribute", file=mapping.source, field=both.pop()
        )
    extra = [spec.entity] if spec.entity else []
    raw, path = _keyed(mapping, spec, spec.id, [*spec.text, *spec.attributes, *extra], "item id")
    items = pd.DataFrame({"item_id": raw[spec.id]})
    for c in spec.text:
        items[c] = _text(raw[c])
    for c in spec.attributes:
        items[c] = _cell_tokens(raw[c], spec.attribute_separator)
    links: list[_Link] = []
    if spec.entity:
        first_line = int(raw.attrs["first_line"])
        present = ~_blank(raw[spec.entity])
        for pos in np.flatnonzero(present):
            entity = str(raw[spec.entity].iloc[pos]).strip()
            links.append(
                _Link(raw[spec.id].iloc[pos], entity, path, first_line + int(pos), spec.entity)
            )
    side = {
        "items": _with_attrs(items, raw),
        "text_fields": list(spec.text),
        "attribute_fields": list(spec.attributes),
    }
    return side, links


def _users(mapping: TableMapping) -> dict[str, Any]:
    spec = mapping.users
    assert spec is not None
    raw, _ = _keyed(mapping, spec, spec.id, spec.attributes, "user id")
    users = pd.DataFrame({"user_id": raw[spec.id]})
    for c in spec.attributes:
        users[c] = _categories(raw[c])
    return {"users": _with_attrs(users, raw), "user_attribute_fields": list(spec.attributes)}


def _triples(mapping: TableMapping) -> pd.DataFrame:
    spec = mapping.triples
    assert spec is not None
    path = mapping.resolve(spec.path)
    raw = _read_file(path, spec.separator, spec.encoding, spec.columns)
    columns = (spec.head, spec.relation, spec.tail)
    _require(raw, path, columns)
    for column, what in zip(columns, ("head entity", "relation", "tail entity"), strict=True):
        _check_present(raw, column, path, what)
    out = pd.DataFrame(
        {name: _as_str(raw[c]).str.strip() for name, c in zip(TRIPLE_COLUMNS, columns, strict=True)}
    )
    return _with_attrs(out, raw)


class _Link:
    """One item -> entity link and where it was read (links file or items entity column)."""

    __slots__ = ("entity", "field", "item", "line", "path")

    def __init__(self, item: str, entity: str, path: Path, line: int, field: str) -> None:
        self.item, self.entity, self.path, self.line, self.field = item, entity, path, line, field


def _links(mapping: TableMapping) -> list[_Link]:
    spec = mapping.links
    assert spec is not None
    path = mapping.resolve(spec.path)
    raw = _read_file(path, spec.separator, spec.encoding, spec.columns)
    _require(raw, path, (spec.item, spec.entity))
    _check_present(raw, spec.item, path, "item id")
    _check_present(raw, spec.entity, path, "entity id")
    first_line = int(raw.attrs["first_line"])
    items, entities = _as_str(raw[spec.item]), _as_str(raw[spec.entity])
    return [
        _Link(item, str(entity).strip(), path, first_line + pos, spec.entity)
        for pos, (item, entity) in enumerate(zip(items, entities, strict=True))
    ]


def _link_frame(links: list[_Link]) -> pd.DataFrame:
    """Links as a frame; a repeated link or an entity tied to two items is a DataError."""
    seen: dict[tuple[str, str], _Link] = {}
    owner: dict[str, _Link] = {}
    for link in links:
        first = seen.get((link.item, link.entity))
        if first is not None:
            raise DataError(
                f"duplicate link {link.item!r} -> {link.entity!r} "
                f"(first at {first.path}:{first.line})",
                file=link.path,
                line=link.line,
                field=link.field,
            )
        seen[(link.item, link.entity)] = link
        other = owner.setdefault(link.entity, link)
        if other.item != link.item:
            raise DataError(
                f"entity {link.entity!r} is already linked to item {other.item!r} "
                f"(at {other.path}:{other.line}); an entity stands for one item",
                file=link.path,
                line=link.line,
                field=link.field,
            )
    if not links:
        return empty_frame(LINK_COLUMNS)
    frame = pd.DataFrame(
        {
            "item_id": pd.Series([x.item for x in links], dtype=object),
            "entity_id": pd.Series([x.entity for x in links], dtype=object),
        }
    )
    sources = {(str(x.path)) for x in links}
    lines = [x.line for x in links]
    if len(sources) == 1 and lines == list(range(lines[0], lines[0] + len(lines))):
        frame.attrs.update(source=str(links[0].path), first_line=lines[0])
    return frame


def load_tables(mapping: TableMapping | PathLike, *, name: str | None = None) -> Dataset:
    """A dataset from the tables of a :class:`TableMapping` (or the path of its TOML file).

    Nothing is half-read: the first bad row raises :class:`DataError` (file, line, field)
    before anything is returned.
    """
    if not isinstance(mapping, TableMapping):
        mapping = TableMapping.from_toml(mapping)
    side: dict[str, Any] = {}
    links: list[_Link] = []
    inter = _interactions(mapping)
    if mapping.items is not None:
        item_side, links = _items(mapping)
        side.update(item_side)
    if mapping.users is not None:
        side.update(_users(mapping))
    if mapping.triples is not None:
        side["triples"] = _triples(mapping)
    if mapping.links is not None:
        links = _links(mapping) + links
    if links:
        side["links"] = _link_frame(links)
    template = mapping.items.text_template if mapping.items is not None else None
    if template is not None:
        from kinrec.knowledge.text import check_template

        fields = [*side.get("text_fields", ()), *side.get("attribute_fields", ())]
        try:
            check_template(template, fields)
        except ValueError as exc:
            raise DataError(str(exc), file=mapping.source, field="items.text_template") from None
        side["text_template"] = template
    dataset_name = name or mapping.name
    if not dataset_name:
        first = mapping.interactions.path
        dataset_name = Path(first if isinstance(first, str) else first[0]).stem
    return Dataset(name=dataset_name, interactions=inter, **side)


# --------------------------------------------------------------------------- flat mapping


class ColumnMapping(BaseModel):
    """Which columns of a CSV/TSV/Parquet table hold what (from CLI options or a TOML file).

    The single-file form: an interactions file, optionally with items and users tables that
    share these options. :class:`TableMapping` names all five tables with their own files.
    """

    model_config = ConfigDict(extra="forbid")

    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = None
    timestamp: str | None = None
    timestamp_format: str | None = Field(
        None, description="strptime format of date strings; default: numbers or ISO 8601"
    )
    separator: str | None = Field(None, description="default: ',' for .csv, tab otherwise")
    encoding: str = "utf-8"
    columns: list[str] | None = Field(None, description="names for a file without header row")
    item_id: str | None = Field(None, description="id column of the items table (default: item)")
    item_text: list[str] = Field(default_factory=list)
    item_attributes: list[str] = Field(default_factory=list)
    attribute_separator: str = Field("|", description="splits multi-valued attribute cells")
    user_id: str | None = Field(None, description="id column of the users table (default: user)")
    user_attributes: list[str] = Field(default_factory=list)

    @classmethod
    def from_toml(cls, path: PathLike, table: str | None = None) -> ColumnMapping:
        """Read the mapping from a TOML file (top level, or the dotted ``table``)."""
        path = Path(path)
        data = _read_toml(path)
        for key in table.split(".") if table else ():
            if not isinstance(data, dict) or key not in data:
                raise DataError(f"no table {table!r}", file=path, field=key)
            data = data[key]
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise DataError(f"invalid column mapping: {exc}", file=path) from None

    def tables(
        self,
        interactions: Sequence[PathLike],
        items: PathLike | None = None,
        users: PathLike | None = None,
    ) -> TableMapping:
        """The same files as a :class:`TableMapping` (each table with these shared options)."""
        common = {"separator": self.separator, "encoding": self.encoding, "columns": self.columns}
        return TableMapping(
            interactions=InteractionsTable(
                path=[str(p) for p in interactions],
                user=self.user,
                item=self.item,
                rating=self.rating,
                timestamp=self.timestamp,
                timestamp_format=self.timestamp_format,
                **common,
            ),
            items=None
            if items is None
            else ItemsTable(
                path=str(items),
                id=self.item_id or self.item,
                text=self.item_text,
                attributes=self.item_attributes,
                attribute_separator=self.attribute_separator,
                **common,
            ),
            users=None
            if users is None
            else UsersTable(
                path=str(users),
                id=self.user_id or self.user,
                attributes=self.user_attributes,
                **common,
            ),
        )


def load_table(
    path_or_paths: PathLike | Sequence[PathLike] | Mapping[str, Any],
    mapping: ColumnMapping | None = None,
) -> Dataset:
    """Interactions (and optional items/users tables) from CSV, TSV or Parquet files: the
    single-file form of :func:`load_tables`, which reads them.

    ``path_or_paths``: one interactions file, a list of them (concatenated), or a mapping with
    keys ``interactions`` (path or list), ``items`` and ``users``.
    """
    mapping = mapping or ColumnMapping()
    if isinstance(path_or_paths, Mapping):
        unknown = set(path_or_paths) - {"interactions", "items", "users"}
        if unknown:
            raise ValueError(f"unknown table kinds: {', '.join(sorted(unknown))}")
        inter_paths = path_or_paths["interactions"]
        items_path, users_path = path_or_paths.get("items"), path_or_paths.get("users")
    else:
        inter_paths, items_path, users_path = path_or_paths, None, None
    if isinstance(inter_paths, (str, Path)):
        inter_paths = [inter_paths]
    return load_tables(mapping.tables(inter_paths, items_path, users_path))


__all__ = [
    "TABLE_KINDS",
    "ColumnMapping",
    "InteractionsTable",
    "ItemsTable",
    "LinksTable",
    "TableMapping",
    "TriplesTable",
    "UsersTable",
    "is_table_mapping",
    "load_table",
    "load_tables",
]
