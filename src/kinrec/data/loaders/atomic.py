"""RecBole atomic files (``NAME.inter/.item/.user/.kg/.link``, typed ``name:type`` headers)
and RecBole benchmark split folders (``NAME.{train,valid,test}.inter``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

import pandas as pd

from kinrec.data.dataset import LINK_COLUMNS, TRIPLE_COLUMNS, Dataset, Split
from kinrec.data.errors import DataError
from kinrec.data.loaders._common import (
    PathLike,
    _as_str,
    _check_ids,
    _check_unique,
    _concat,
    _find_name,
    _interaction_frame,
    _read_bytes,
    _read_rows,
    _require,
    _split_header,
    _text,
    _tokens,
    _with_attrs,
)

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
# Item fields whose name contains one of these words are free text (token_seq fields only).
# fmt: off
TEXT_HINTS = frozenset({
    "title", "name", "text", "description", "desc", "review", "summary", "content", "abstract",
    "comment", "plot", "overview", "caption", "body",
})
# fmt: on


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
