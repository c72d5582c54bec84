"""UniSRec sequences: ``NAME.text``, ``NAME.item2index`` (``NAME.user2index``) and the
leave-one-out rows ``NAME.{train,valid,test}.inter``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kinrec.data.dataset import Dataset, Split
from kinrec.data.errors import DataError
from kinrec.data.loaders._common import (
    PathLike,
    _check_ids,
    _check_unique,
    _find_name,
    _read_dat,
    _require,
    _with_attrs,
)
from kinrec.data.loaders.atomic import read_atomic

UNISREC_TEMPLATE = "{text}"
"""UniSRec item text, rendered as shipped (title, category path and brand in one field)."""


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
