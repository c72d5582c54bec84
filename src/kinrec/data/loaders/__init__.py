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

One module per format: :mod:`~kinrec.data.loaders.atomic`,
:mod:`~kinrec.data.loaders.movielens`, :mod:`~kinrec.data.loaders.unisrec`; ``_common`` holds
the reading and checking helpers they share with :mod:`kinrec.data.table`. Every name is
importable from here.
"""

from __future__ import annotations

from typing import Any

# The shared helpers stay importable from here: kinrec.data.table reads with them.
from kinrec.data.loaders._common import (  # noqa: F401 - re-exported
    PathLike,
    _as_str,
    _categories,
    _check_decoding,
    _check_fields,
    _check_ids,
    _check_unique,
    _concat,
    _find_name,
    _interaction_frame,
    _parser_error_line,
    _read_bytes,
    _read_dat,
    _read_rows,
    _require,
    _split_header,
    _strings,
    _text,
    _to_float,
    _tokens,
    _trim,
    _with_attrs,
)
from kinrec.data.loaders.atomic import (  # noqa: F401 - re-exported
    ATOMIC_TYPES,
    TEXT_HINTS,
    AtomicOptions,
    load_recbole_atomic,
    load_split_dir,
    read_atomic,
)
from kinrec.data.loaders.movielens import (  # noqa: F401 - re-exported
    ML100K_GENRES,
    load_movielens_1m,
    load_movielens_100k,
)
from kinrec.data.loaders.unisrec import (  # noqa: F401 - re-exported
    UNISREC_TEMPLATE,
    load_unisrec,
    load_unisrec_split,
    parse_product_text,
)

# --------------------------------------------------------------------------- generic tables
# CSV/TSV/Parquet tables live in kinrec.data.table (which reads with the helpers of _common);
# their names stay importable from here.
_TABLE_NAMES = frozenset(
    {"ColumnMapping", "TableMapping", "is_table_mapping", "load_table", "load_tables"}
)


def __getattr__(name: str) -> Any:
    if name in _TABLE_NAMES:
        from kinrec.data import table

        return getattr(table, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [  # the table names come from kinrec.data.table on first use (see __getattr__)
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
