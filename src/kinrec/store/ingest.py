"""Validation and idempotent, all-or-nothing writing of a :class:`Dataset`.

:func:`prepare` checks the dataset in memory and turns it into rows per table; it raises
:class:`DataError` naming the file, line and field of the first bad row. :func:`write` then
writes those rows inside the caller's transaction: rows whose key is already stored are
compared with what is stored (a difference is a :class:`DataError` too) and skipped, new rows
are inserted in chunks. The caller rolls back on any error, so a bad input changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Table, insert, select, update

from kinrec.data.dataset import INTERACTION_COLUMNS, LINK_COLUMNS, TRIPLE_COLUMNS, Dataset
from kinrec.data.errors import DataError
from kinrec.store import read
from kinrec.store import schema as s
from kinrec.store.engine import execute_many, insert_ignore

IngestProgress = Callable[[str, int, int], None]
"""``(table, rows_done, rows_total)``: called after each chunk a table writes."""

CHUNK_ROWS = 50_000


# ---------------------------------------------------------------------------------- reports
@dataclass(frozen=True)
class TableReport:
    """What ingestion did to one table."""

    rows: int  # rows the input holds for this table
    added: int  # rows written
    seconds: float

    @property
    def present(self) -> int:
        """Input rows that were already stored (and equal), so not written again."""
        return self.rows - self.added


@dataclass(frozen=True)
class IngestReport:
    """Rows added / already present per table, and where the time went."""

    dataset: str
    created: bool  # the dataset was new to this database
    tables: dict[str, TableReport]
    validate_seconds: float
    write_seconds: float

    @property
    def added(self) -> int:
        return sum(t.added for t in self.tables.values())

    @property
    def present(self) -> int:
        return sum(t.present for t in self.tables.values())

    @property
    def seconds(self) -> float:
        return self.validate_seconds + self.write_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "created": self.created,
            "validate_seconds": self.validate_seconds,
            "write_seconds": self.write_seconds,
            "tables": {
                name: {"rows": t.rows, "added": t.added, "present": t.present, "seconds": t.seconds}
                for name, t in self.tables.items()
            },
        }


# ---------------------------------------------------------------------------- locations
class _Where:
    """Turns a row position of an input frame into ``file:line`` for error messages.

    Frames from loaders carry ``attrs["source"]`` and ``attrs["first_line"]`` (line of row 0),
    or ``attrs["parts"]`` = [(source, first_line, rows), ...] when read from several files;
    without them the table name and the 1-based row number are reported.
    """

    def __init__(self, frame: pd.DataFrame, table: str) -> None:
        self.table = table
        attrs = frame.attrs
        parts = attrs.get("parts")
        if parts is None and attrs.get("source") is not None:
            first = attrs.get("first_line")
            parts = [(attrs["source"], None if first is None else int(first), len(frame))]
        self.parts: list[tuple[str, int | None, int]] = [
            (str(src), None if first is None else int(first), int(rows))
            for src, first, rows in (parts or [])
        ]

    def locate(self, pos: int | None) -> tuple[str, int | None]:
        if not self.parts:
            return f"<{self.table}>", None if pos is None else int(pos) + 1
        if pos is None:
            return self.parts[0][0], None
        offset = int(pos)
        for i, (source, first, rows) in enumerate(self.parts):
            if offset < rows or i == len(self.parts) - 1:
                return source, (offset + 1 if first is None else first + offset)
            offset -= rows
        raise AssertionError("unreachable")

    def error(self, message: str, pos: int | None = None, column: str | None = None) -> DataError:
        file, line = self.locate(pos)
        return DataError(message, file=file, line=line, field=column)


def _is_null(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _strings(frame: pd.DataFrame, column: str, where: _Where, what: str) -> np.ndarray:
    """Column ``column`` as an object array of non-empty strings; DataError at the first bad."""
    if column not in frame.columns:
        raise where.error(f"the {where.table} table has no '{column}' column", None, column)
    series = frame[column]
    values = series.to_numpy(dtype=object)
    null = series.isna().to_numpy()
    if null.any():
        raise where.error(f"missing {what}", int(np.argmax(null)), column)
    if not isinstance(series.dtype, pd.StringDtype):
        is_str = np.fromiter((isinstance(v, str) for v in values), bool, len(values))
        if not is_str.all():
            pos = int(np.argmin(is_str))
            bad = values[pos]
            raise where.error(
                f"{what} must be a string, got {type(bad).__name__} {bad!r}", pos, column
            )
    blank = (series.astype("str").str.strip() == "").to_numpy()
    if blank.any():
        raise where.error(f"empty {what}", int(np.argmax(blank)), column)
    return values


def _no_duplicates(frame: pd.DataFrame, columns: list[str], where: _Where, what: str) -> None:
    dup = frame.duplicated(subset=columns, keep="first").to_numpy()
    if dup.any():
        pos = int(np.argmax(dup))
        key = tuple(frame[c].iloc[pos] for c in columns)
        key_text = repr(key[0]) if len(key) == 1 else repr(key)
        mask = np.ones(len(frame), dtype=bool)
        for c, v in zip(columns, key, strict=True):
            mask &= (frame[c] == v).to_numpy()
        first_file, first_line = where.locate(int(np.argmax(mask)))
        raise where.error(
            f"duplicate {what} {key_text} (first at {first_file}:{first_line})",
            pos,
            "/".join(columns),
        )


def _only_columns(frame: pd.DataFrame, allowed: tuple[str, ...], where: _Where) -> None:
    """A column the store has no place for would be lost silently: refuse it."""
    extra = [c for c in frame.columns if c not in allowed]
    if extra:
        raise where.error(
            f"unexpected column (the {where.table} table holds {', '.join(allowed)})",
            None,
            str(extra[0]),
        )


def _floats(frame: pd.DataFrame, column: str, where: _Where) -> np.ndarray:
    """A numeric column as float64 (NaN where absent); DataError at a non-number."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    series = frame[column]
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & ~series.isna().to_numpy()
    if bad.any():
        pos = int(np.argmax(bad))
        raise where.error(f"not a number: {series.iloc[pos]!r}", pos, column)
    if np.isinf(values).any():
        raise where.error("not a finite number", int(np.argmax(np.isinf(values))), column)
    return values


# ------------------------------------------------------------------------------ prepare
@dataclass
class Prepared:
    """A validated dataset as rows per table (``pos`` = row position in the input frame)."""

    name: str
    fields: dict[str, list[tuple[str, str]]]  # entity -> [(name, kind)] in column order
    users: pd.DataFrame  # user_id, pos
    user_attributes: pd.DataFrame  # user_id, field, value
    items: pd.DataFrame  # item_id, pos
    item_texts: pd.DataFrame  # item_id, field, value
    item_attributes: pd.DataFrame  # item_id, field, idx, value
    interactions: dict[str, np.ndarray]  # user_id, item_id, rating, timestamp
    triples: pd.DataFrame  # head, relation, tail, pos
    links: pd.DataFrame  # item_id, entity_id, pos
    entities: list[str]
    relations: list[str]
    where: dict[str, _Where]  # table -> locator of its input rows
    source: Dataset
    item_frame: pd.DataFrame  # the item table plus a row per item known only from links
    settings: dict[str, str]  # dataset-level options (the text template)


def _declared_fields(
    frame: pd.DataFrame, key: str, declared: dict[str, str], where: _Where
) -> list[tuple[str, str]]:
    """(name, kind) of each non-key column, in column order; every column must be declared."""
    out = []
    for column in frame.columns:
        if column == key:
            continue
        if column not in declared:
            lists = "text_fields/attribute_fields" if key == "item_id" else "user_attribute_fields"
            raise where.error(f"column is not declared in the dataset's {lists}", None, column)
        out.append((str(column), declared[column]))
    missing = [name for name in declared if name not in frame.columns]
    if missing:
        raise where.error("declared field is missing from the table", None, missing[0])
    return out


def _field_rows(
    frame: pd.DataFrame, key: str, ids: np.ndarray, columns: list[tuple[str, str]], where: _Where
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Text rows (key, field, value) and token rows (key, field, idx, value) of a table."""
    text: dict[str, list[Any]] = {key: [], "field": [], "value": []}
    tokens: dict[str, list[Any]] = {key: [], "field": [], "idx": [], "value": []}
    for name, kind in columns:
        for pos, (ident, value) in enumerate(zip(ids, frame[name].to_numpy(object), strict=True)):
            if kind == "text":
                if _is_null(value):
                    continue
                if not isinstance(value, str):
                    raise where.error(
                        f"expected a string, got {type(value).__name__} {value!r}", pos, name
                    )
                text[key].append(ident)
                text["field"].append(name)
                text["value"].append(value)
                continue
            if not isinstance(value, (tuple, list, np.ndarray)):
                raise where.error(
                    f"expected a tuple of tokens, got {type(value).__name__} {value!r}", pos, name
                )
            for idx, token in enumerate(value):
                if not isinstance(token, str) or not token:
                    message = f"bad token {token!r} (tokens are non-empty strings)"
                    raise where.error(message, pos, name)
                tokens[key].append(ident)
                tokens["field"].append(name)
                tokens["idx"].append(idx)
                tokens["value"].append(token)
    return pd.DataFrame(text, dtype=object), pd.DataFrame(tokens, dtype=object)


def _entity_table(
    frame: pd.DataFrame, key: str, declared: dict[str, str], table: str, what: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[tuple[str, str]], _Where]:
    where = _Where(frame, table)
    ids = _strings(frame, key, where, what) if len(frame) else np.array([], dtype=object)
    columns = _declared_fields(frame, key, declared, where)
    keys = pd.DataFrame({key: pd.Series(ids, dtype=object), "pos": np.arange(len(ids))})
    _no_duplicates(keys, [key], where, what)
    text, tokens = _field_rows(frame, key, ids, columns, where)
    return keys, text, tokens, columns, where


def _with_link_items(dataset: Dataset, link_ids: np.ndarray) -> pd.DataFrame:
    """The item table plus one row (no field values) per item known only from ``links``:
    such items belong to the catalogue, and the stored links must point at stored items."""
    items = dataset.items
    listed = set(items["item_id"]) if "item_id" in items.columns else set()
    extra = [i for i in pd.unique(link_ids) if i not in listed]
    if not extra:
        return items
    attributes = set(dataset.attribute_fields)
    rows = pd.DataFrame(
        {
            c: pd.Series(
                extra if c == "item_id" else [() if c in attributes else None] * len(extra),
                dtype=items[c].dtype if c == "item_id" or c not in attributes else object,
            )
            for c in items.columns
        }
    )
    frame = pd.concat([items, rows], ignore_index=True) if len(items) else rows
    parts = _Where(items, "items").parts or [("<items>", None, len(items))]
    frame.attrs = {"parts": [*parts, ("<links>", None, len(rows))]}
    return frame


def _settings(dataset: Dataset) -> dict[str, str]:
    """Dataset-level options the store keeps: the text template, when the dataset has one."""
    template = dataset.text_template
    if template is None:
        return {}
    if not isinstance(template, str) or not template.strip():
        raise DataError(f"bad text template {template!r}", field="text_template")
    return {"text_template": template}


def prepare(dataset: Dataset) -> Prepared:
    """Validate ``dataset`` and split it into rows per table; DataError at the first bad row."""
    if not isinstance(dataset.name, str) or not dataset.name.strip():
        raise DataError(f"bad dataset name {dataset.name!r}", field="name")
    item_decl = {f: "text" for f in dataset.text_fields}
    for f in dataset.attribute_fields:
        if f in item_decl:
            raise DataError("field is both a text and an attribute field", field=f)
        item_decl[f] = "attribute"
    settings = _settings(dataset)

    w_links = _Where(dataset.links, "links")
    _only_columns(dataset.links, LINK_COLUMNS, w_links)
    links = pd.DataFrame(
        {
            "item_id": _strings(dataset.links, "item_id", w_links, "item id"),
            "entity_id": _strings(dataset.links, "entity_id", w_links, "entity id"),
            "pos": np.arange(len(dataset.links)),
        }
    )
    _no_duplicates(links, ["item_id", "entity_id"], w_links, "link")

    item_frame = _with_link_items(dataset, links["item_id"].to_numpy(object))
    items, item_texts, item_attrs, item_cols, w_items = _entity_table(
        item_frame, "item_id", item_decl, "items", "item id"
    )
    user_decl = dict.fromkeys(dataset.user_attribute_fields, "text")
    users, user_attrs, _, user_cols, w_users = _entity_table(
        dataset.users, "user_id", user_decl, "users", "user id"
    )
    user_cols = [(name, "attribute") for name, _ in user_cols]

    inter = dataset.interactions
    w_inter = _Where(inter, "interactions")
    _only_columns(inter, INTERACTION_COLUMNS, w_inter)
    interactions = {
        "user_id": _strings(inter, "user_id", w_inter, "user id"),
        "item_id": _strings(inter, "item_id", w_inter, "item id"),
        "rating": _floats(inter, "rating", w_inter),
        "timestamp": _floats(inter, "timestamp", w_inter),
    }

    w_triples = _Where(dataset.triples, "triples")
    _only_columns(dataset.triples, TRIPLE_COLUMNS, w_triples)
    triples = pd.DataFrame(
        {
            "head": _strings(dataset.triples, "head", w_triples, "head entity"),
            "relation": _strings(dataset.triples, "relation", w_triples, "relation name"),
            "tail": _strings(dataset.triples, "tail", w_triples, "tail entity"),
            "pos": np.arange(len(dataset.triples)),
        }
    )
    _no_duplicates(triples, ["head", "relation", "tail"], w_triples, "triple")

    entity_ids = np.concatenate(
        [links["entity_id"].to_numpy(object), triples[["head", "tail"]].to_numpy(object).ravel()]
    )
    return Prepared(
        name=dataset.name,
        fields={"item": item_cols, "user": user_cols},
        users=users,
        user_attributes=user_attrs,
        items=items,
        item_texts=item_texts,
        item_attributes=item_attrs,
        interactions=interactions,
        triples=triples,
        links=links,
        entities=list(pd.unique(entity_ids)),
        relations=list(pd.unique(triples["relation"].to_numpy(object))),
        where={
            "items": w_items,
            "users": w_users,
            "interactions": w_inter,
            "triples": w_triples,
            "links": w_links,
        },
        source=dataset,
        item_frame=item_frame,
        settings=settings,
    )


# -------------------------------------------------------------------------------- write
class _Writer:
    def __init__(self, conn: Connection, dataset_id: int, progress: IngestProgress | None) -> None:
        self.conn = conn
        self.dataset_id = dataset_id
        self.progress = progress
        self.tables: dict[str, TableReport] = {}

    def insert(self, table: Table, columns: dict[str, Any]) -> None:
        """Insert rows given column-wise (``dataset_id`` is added) in chunks."""
        names = ["dataset_id", *columns]
        stmt = insert_ignore(self.conn.dialect, table)
        lists = [v.tolist() if hasattr(v, "tolist") else list(v) for v in columns.values()]
        total = len(lists[0]) if lists else 0
        dataset_ids = [self.dataset_id] * min(total, CHUNK_ROWS)
        for start in range(0, total, CHUNK_ROWS):
            chunk = [v[start : start + CHUNK_ROWS] for v in lists]
            rows = list(zip(dataset_ids, *chunk, strict=False))
            execute_many(self.conn, stmt, names, rows)
            if self.progress is not None:
                self.progress(table.name, start + len(rows), total)
        if self.progress is not None and total == 0:
            self.progress(table.name, 0, 0)

    def record(self, name: str, rows: int, added: int, started: float) -> None:
        self.tables[name] = TableReport(rows, added, time.perf_counter() - started)


def _dataset_id(conn: Connection, name: str) -> tuple[int, bool]:
    found = conn.execute(select(s.datasets.c.id).where(s.datasets.c.name == name)).scalar()
    if found is not None:
        return int(found), False
    now = time.time()
    result = conn.execute(insert(s.datasets).values(name=name, created_at=now, updated_at=now))
    return int(result.inserted_primary_key[0]), True


def _sync_fields(w: _Writer, p: Prepared, decl: read.FieldDeclaration) -> None:
    """Record the item and user field declarations, or check them against the stored ones."""
    t0 = time.perf_counter()
    added = 0
    for entity, table, frame in (("item", s.items, p.source.items), ("user", s.users, p.users)):
        given = p.fields[entity]
        stored = list(decl.of(entity))
        if given == stored or (not given and not len(frame)):
            continue  # same declaration, or an input without this table
        if stored or read.count_rows(w.conn, table, w.dataset_id):
            item = entity == "item"
            raise p.where["items" if item else "users"].error(
                f"the stored {entity} fields are {stored}, this input declares {given}",
                None,
                "text_fields/attribute_fields" if item else "user_attribute_fields",
            )
        w.insert(
            s.fields,
            {
                "entity": [entity] * len(given),
                "name": [n for n, _ in given],
                "kind": [k for _, k in given],
                "position": list(range(len(given))),
            },
        )
        added += len(given)
    w.record("fields", sum(len(v) for v in p.fields.values()), added, t0)


def _sync_settings(w: _Writer, p: Prepared) -> None:
    """Record the dataset's options (its text template), or check them against the stored ones.

    An input without an option keeps the stored one; a different value is a DataError.
    """
    t0 = time.perf_counter()
    stored = read.read_settings(w.conn, w.dataset_id)
    new = {}
    for key, value in p.settings.items():
        if key not in stored:
            new[key] = value
        elif stored[key] != value:
            raise DataError(
                f"the stored dataset has {key} {stored[key]!r}, this input has {value!r} "
                "(delete the stored dataset, or set it at training time: [data] "
                f"{key} in the pipeline configuration)",
                field=key,
            )
    w.insert(s.dataset_settings, {"key": list(new), "value": list(new.values())})
    w.record("settings", len(p.settings), len(new), t0)


def _same(a: object, b: object) -> bool:
    if _is_null(a) and _is_null(b):
        return True
    if isinstance(a, (list, np.ndarray)):
        a = tuple(a)
    return a == b


def _sync_entity(
    w: _Writer,
    p: Prepared,
    entity: str,
    decl: read.FieldDeclaration,
) -> None:
    """Users or items: compare rows already stored, insert the new ones and their fields."""
    t0 = time.perf_counter()
    key, table, name = (
        ("item_id", s.items, "items") if entity == "item" else ("user_id", s.users, "users")
    )
    keys: pd.DataFrame = p.items if entity == "item" else p.users
    where = p.where[name]
    base = read.max_position(w.conn, table, w.dataset_id)
    new_mask = np.ones(len(keys), dtype=bool)
    if base and len(keys):
        stored = (
            read.read_items(w.conn, w.dataset_id, decl)
            if entity == "item"
            else read.read_users(w.conn, w.dataset_id, decl)
        )
        given = p.item_frame if entity == "item" else p.source.users
        stored_at = dict(zip(stored[key].to_numpy(object), range(len(stored)), strict=True))
        columns = [
            (c, stored[c].to_numpy(object), given[c].to_numpy(object)) for c in stored.columns[1:]
        ]
        described = len(p.source.items) if entity == "item" else len(keys)
        for pos, ident in enumerate(keys[key].to_numpy(object)):
            at = stored_at.get(ident)
            if at is None:
                continue
            new_mask[pos] = False
            if pos >= described:
                continue  # known only from a link: this input says nothing else about it
            for column, old_values, new_values in columns:
                old, new = old_values[at], new_values[pos]
                if not _same(new, old):
                    raise where.error(
                        f"{entity} {ident!r} is already stored with {old!r}, this input has "
                        f"{new!r} (delete the stored dataset or use another name)",
                        pos,
                        column,
                    )
    new = keys[new_mask]
    new_ids = set(new[key])
    w.insert(table, {key: new[key], "position": range(base, base + len(new))})
    w.record(name, len(keys), len(new), t0)

    children = [("user_attributes", s.user_attributes, p.user_attributes)]
    if entity == "item":
        children = [
            ("item_texts", s.item_texts, p.item_texts),
            ("item_attributes", s.item_attributes, p.item_attributes),
        ]
    for child_name, child_table, rows in children:
        t1 = time.perf_counter()
        fresh = rows[rows[key].isin(new_ids)] if len(rows) else rows
        w.insert(child_table, {c: fresh[c] for c in rows.columns})
        w.record(child_name, len(rows), len(fresh), t1)


def _sync_set(
    w: _Writer, name: str, table: Table, frame: pd.DataFrame, key: list[str], positioned: bool
) -> None:
    """Rows identified by their key columns only: insert those not stored yet."""
    t0 = time.perf_counter()
    stored = read.read_columns(w.conn, table, key, w.dataset_id)
    new = frame
    if len(stored) and len(frame):
        seen = pd.MultiIndex.from_frame(stored[key])
        new = frame[~pd.MultiIndex.from_frame(frame[key].astype(object)).isin(seen)]
    columns: dict[str, Any] = {c: new[c].to_numpy(object) for c in key}
    if positioned:
        base = read.max_position(w.conn, table, w.dataset_id)
        columns["position"] = range(base, base + len(new))
    w.insert(table, columns)
    w.record(name, len(frame), len(new), t0)


def _check_links(w: _Writer, p: Prepared) -> None:
    if not len(p.links):
        return
    known = set(p.items["item_id"]) | set(
        read.read_columns(w.conn, s.items, ["item_id"], w.dataset_id)["item_id"]
    )
    ok = p.links["item_id"].isin(known).to_numpy()
    if not ok.all():
        pos = int(np.argmin(ok))
        raise p.where["links"].error(
            f"link to item {p.links['item_id'].iloc[pos]!r}, which is not in the item table",
            pos,
            "item_id",
        )


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _nan_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _sync_interactions(w: _Writer, p: Prepared) -> None:
    t0 = time.perf_counter()
    data = p.interactions
    n = len(data["user_id"])
    new = np.ones(n, dtype=bool)
    if n and read.count_rows(w.conn, s.interactions, w.dataset_id):
        stored = read.read_interactions(w.conn, w.dataset_id, with_seq=True)
        seq = stored["seq"].to_numpy()
        inside = seq < n
        seq, stored = seq[inside], stored[inside]
        new[seq] = False
        for column in ("user_id", "item_id", "rating", "timestamp"):
            given = data[column][seq]
            old = stored[column].to_numpy(
                dtype=np.float64 if column in ("rating", "timestamp") else object
            )
            same = _nan_equal(given, old) if given.dtype.kind == "f" else given == old
            if not same.all():
                i = int(np.argmin(same))
                was, now = _plain(old[i]), _plain(given[i])
                raise p.where["interactions"].error(
                    f"row {int(seq[i])} is already stored with {was!r}, this input has "
                    f"{now!r} (delete the stored dataset or use another name)",
                    int(seq[i]),
                    column,
                )
    idx = np.flatnonzero(new)

    def _nullable(values: np.ndarray) -> list[float | None]:
        out = values[idx].astype(object)
        out[np.isnan(values[idx])] = None
        return list(out)

    columns: dict[str, Any] = {
        "seq": idx.tolist(),
        "user_id": list(data["user_id"][idx]),
        "item_id": list(data["item_id"][idx]),
        "rating": _nullable(data["rating"]),
        "timestamp": _nullable(data["timestamp"]),
    }
    w.insert(s.interactions, columns)
    w.record("interactions", n, len(idx), t0)


def write(
    conn: Connection, p: Prepared, progress: IngestProgress | None = None
) -> tuple[int, bool, dict[str, TableReport]]:
    """Write ``p`` in ``conn``'s transaction; returns (dataset id, created, report per table)."""
    dataset_id, created = _dataset_id(conn, p.name)
    w = _Writer(conn, dataset_id, progress)
    decl = read.read_fields(conn, dataset_id)
    _sync_fields(w, p, decl)
    _sync_settings(w, p)
    decl = read.read_fields(conn, dataset_id)
    _sync_entity(w, p, "user", decl)
    _sync_entity(w, p, "item", decl)
    _check_links(w, p)
    entities = pd.DataFrame({"entity_id": pd.Series(p.entities, dtype=object)})
    relations = pd.DataFrame({"relation_id": pd.Series(p.relations, dtype=object)})
    _sync_set(w, "relations", s.relations, relations, ["relation_id"], positioned=False)
    _sync_set(w, "entities", s.entities, entities, ["entity_id"], positioned=False)
    _sync_set(w, "triples", s.triples, p.triples, ["head", "relation", "tail"], positioned=True)
    _sync_set(w, "links", s.links, p.links, ["item_id", "entity_id"], positioned=True)
    _sync_interactions(w, p)
    if not created and any(t.added for t in w.tables.values()):
        stmt = update(s.datasets).where(s.datasets.c.id == dataset_id)
        conn.execute(stmt.values(updated_at=time.time()))
    return dataset_id, created, w.tables
