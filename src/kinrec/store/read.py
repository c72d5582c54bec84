"""Dataset tables read back from the database as the frames :class:`Dataset` holds."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Table, func, select

from kinrec.data.dataset import INTERACTION_COLUMNS, LINK_COLUMNS, TRIPLE_COLUMNS, empty_frame
from kinrec.store import schema as s


@dataclass(frozen=True)
class FieldDeclaration:
    """The declared item and user fields of a dataset: (name, kind) pairs in column order."""

    item: tuple[tuple[str, str], ...] = ()
    user: tuple[tuple[str, str], ...] = ()
    text_template: str | None = None  # how item fields become text (None: the default)

    def of(self, entity: str) -> tuple[tuple[str, str], ...]:
        return self.item if entity == "item" else self.user

    @property
    def text_fields(self) -> list[str]:
        return [n for n, k in self.item if k == "text"]

    @property
    def attribute_fields(self) -> list[str]:
        return [n for n, k in self.item if k == "attribute"]

    @property
    def user_attribute_fields(self) -> list[str]:
        return [n for n, _ in self.user]


def read_fields(conn: Connection, dataset_id: int) -> FieldDeclaration:
    rows = conn.execute(
        select(s.fields.c.entity, s.fields.c.name, s.fields.c.kind)
        .where(s.fields.c.dataset_id == dataset_id)
        .order_by(s.fields.c.entity, s.fields.c.position)
    ).all()
    return FieldDeclaration(
        item=tuple((r.name, r.kind) for r in rows if r.entity == "item"),
        user=tuple((r.name, r.kind) for r in rows if r.entity == "user"),
        text_template=read_settings(conn, dataset_id).get("text_template"),
    )


def read_settings(conn: Connection, dataset_id: int) -> dict[str, str]:
    """The dataset's stored options (``text_template``, ...), key -> value."""
    t = s.dataset_settings
    rows = conn.execute(select(t.c.key, t.c.value).where(t.c.dataset_id == dataset_id)).all()
    return {r.key: r.value for r in rows}


def count_rows(conn: Connection, table: Table, dataset_id: int) -> int:
    stmt = select(func.count()).select_from(table).where(table.c.dataset_id == dataset_id)
    return int(conn.execute(stmt).scalar_one())


def max_position(conn: Connection, table: Table, dataset_id: int) -> int:
    """One past the largest stored ``position`` (0 when the table holds nothing)."""
    stmt = select(func.max(table.c.position)).where(table.c.dataset_id == dataset_id)
    top = conn.execute(stmt).scalar_one()
    return 0 if top is None else int(top) + 1


def _string_column(values: list[str | None]) -> pd.Series:
    """Ids and categorical values: Python strings in an ``object`` column, as loaders give."""
    return pd.Series(values, dtype=object)


def _text_column(values: list[str | None]) -> pd.Series:
    """Free text: pandas' string dtype (missing -> NaN), as loaders give."""
    return pd.Series(values, dtype="str")


def _read_entity_table(
    conn: Connection,
    key_table: Table,
    key: str,
    dataset_id: int,
    value_tables: list[tuple[Table, list[str], str]],
) -> pd.DataFrame:
    """Rows of ``key_table`` in stored order, one column per field of ``value_tables``.

    ``value_tables``: (table, field names, kind) where kind is ``text`` (one free-text value),
    ``value`` (one categorical value) or ``tokens`` (ordered token rows, returned as a tuple).
    """
    keys = (
        conn.execute(
            select(key_table.c[key])
            .where(key_table.c.dataset_id == dataset_id)
            .order_by(key_table.c.position, key_table.c[key])
        )
        .scalars()
        .all()
    )
    columns: dict[str, pd.Series] = {key: _string_column(keys)}
    for table, names, kind in value_tables:
        if not names:
            continue
        order = [table.c[key], table.c.field] + ([table.c.idx] if kind == "tokens" else [])
        rows = conn.execute(
            select(table.c[key], table.c.field, table.c.value)
            .where(table.c.dataset_id == dataset_id)
            .order_by(*order)
        ).all()
        if kind != "tokens":
            values: dict[str, dict[str, str]] = defaultdict(dict)
            for k, f, v in rows:
                values[f][k] = v
            column = _text_column if kind == "text" else _string_column
            for name in names:
                got = values.get(name, {})
                columns[name] = column([got.get(k) for k in keys])
        else:
            tokens: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
            for k, f, v in rows:
                tokens[f][k].append(v)
            for name in names:
                got = tokens.get(name, {})
                columns[name] = pd.Series([tuple(got.get(k, ())) for k in keys], dtype=object)
    return pd.DataFrame(columns)


def read_items(conn: Connection, dataset_id: int, decl: FieldDeclaration) -> pd.DataFrame:
    frame = _read_entity_table(
        conn,
        s.items,
        "item_id",
        dataset_id,
        [
            (s.item_texts, list(decl.text_fields), "text"),
            (s.item_attributes, list(decl.attribute_fields), "tokens"),
        ],
    )
    columns = ["item_id", *(n for n, _ in decl.item)]
    return frame[columns] if len(frame) else empty_frame(columns)


def read_users(conn: Connection, dataset_id: int, decl: FieldDeclaration) -> pd.DataFrame:
    frame = _read_entity_table(
        conn,
        s.users,
        "user_id",
        dataset_id,
        [(s.user_attributes, list(decl.user_attribute_fields), "value")],
    )
    columns = ["user_id", *decl.user_attribute_fields]
    return frame[columns] if len(frame) else empty_frame(columns)


def read_interactions(conn: Connection, dataset_id: int, *, with_seq: bool = False) -> pd.DataFrame:
    t = s.interactions
    cols = [t.c.user_id, t.c.item_id, t.c.rating, t.c.timestamp]
    if with_seq:
        cols.insert(0, t.c.seq)
    rows = conn.execute(select(*cols).where(t.c.dataset_id == dataset_id).order_by(t.c.seq)).all()
    names = (["seq"] if with_seq else []) + list(INTERACTION_COLUMNS)
    if not rows:
        frame = empty_frame(INTERACTION_COLUMNS)
        if with_seq:
            frame.insert(0, "seq", pd.Series(dtype="int64"))
        return frame
    data = list(zip(*rows, strict=True))
    out: dict[str, pd.Series] = {}
    for name, values in zip(names, data, strict=True):
        if name == "seq":
            out[name] = pd.Series(np.asarray(values, dtype=np.int64))
        elif name in ("rating", "timestamp"):
            out[name] = pd.Series(np.asarray(values, dtype=np.float64))  # None -> NaN
        else:
            out[name] = _string_column(list(values))
    return pd.DataFrame(out)


def read_columns(
    conn: Connection,
    table: Table,
    columns: tuple[str, ...] | list[str],
    dataset_id: int,
    *,
    ordered: bool = False,
) -> pd.DataFrame:
    """String columns of ``table`` for one dataset (in ``position`` order if ``ordered``)."""
    stmt = select(*(table.c[c] for c in columns)).where(table.c.dataset_id == dataset_id)
    rows = conn.execute(stmt.order_by(table.c.position) if ordered else stmt).all()
    if not rows:
        return empty_frame(columns)
    data = list(zip(*rows, strict=True))
    return pd.DataFrame({c: _string_column(list(v)) for c, v in zip(columns, data, strict=True)})


def read_triples(conn: Connection, dataset_id: int) -> pd.DataFrame:
    return read_columns(conn, s.triples, TRIPLE_COLUMNS, dataset_id, ordered=True)


def read_links(conn: Connection, dataset_id: int) -> pd.DataFrame:
    return read_columns(conn, s.links, LINK_COLUMNS, dataset_id, ordered=True)
