"""MovieLens originals: ML-1M (``*.dat``, ``::``-separated) and ML-100K (``u.data``,
``u.item``, ``u.user``), with the optional ``kg.txt`` / ``item_index2entity_id.txt``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from kinrec.data.dataset import INTERACTION_COLUMNS, LINK_COLUMNS, TRIPLE_COLUMNS, Dataset
from kinrec.data.loaders._common import (
    PathLike,
    _check_ids,
    _check_unique,
    _read_dat,
    _tokens,
    _with_attrs,
)

# fmt: off
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
# fmt: on


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
