"""The benchmarks' pictures (benchmarks/_plots.py, benchmarks/plot_results.py): each is drawn
from the committed JSON record as a valid PNG, every record has a picture or a reason, and the
committed results show the pictures they have."""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import re
import struct
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _benchmarks_on_path():
    """The scripts import their neighbours by bare name (``from _plots import ...``): the
    benchmarks folder on the path for these tests only, its modules forgotten after them."""
    saved = list(sys.path)
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path[:] = saved
    for name, module in list(sys.modules.items()):
        if Path(getattr(module, "__file__", None) or "/").parent == BENCHMARKS:
            del sys.modules[name]


def _load(name: str):
    """A module of benchmarks/, by path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plot_results():
    return _load("plot_results")


@pytest.fixture(scope="module")
def plots():
    return _load("_plots")


def check_png(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, after checking its signature, its IHDR chunk and the
    whole file with PIL."""
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, data[:16]
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    size = struct.unpack(">II", data[16:24])
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size == size
    return size


RECORDS = sorted(p.stem for p in RESULTS.glob("*.json"))


def _record(name: str):
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def _matches(pattern: str) -> list[str]:
    return [n for n in RECORDS if fnmatch.fnmatchcase(n, pattern)]


def test_every_record_has_a_picture_or_a_reason(plot_results) -> None:
    assert RECORDS, "no committed records found"
    for name in RECORDS:
        pictured = plot_results.picture_for(name) is not None
        reasons = [p for p in plot_results.NO_PICTURE if fnmatch.fnmatchcase(name, p)]
        assert pictured != bool(reasons), (
            f"{name}.json: {'both a picture and' if pictured else 'neither a picture nor'} a "
            "reason in benchmarks/plot_results.py"
        )


def test_what_plot_results_claims_exists(plot_results) -> None:
    """Every pattern of plot_results.py names committed records, and each picture's script
    calls its plot function and links the picture from its Markdown."""
    for picture in plot_results.PICTURES:
        assert _matches(picture.pattern), f"no record matches {picture.pattern}"
        script = (BENCHMARKS / picture.script).read_text(encoding="utf-8")
        if picture.kind == "scale":
            assert "plot(report" in script and ".png" in script
            continue
        draw = "plot_" + picture.kind.replace("-", "_")
        assert f"{draw}(" in script, f"{picture.script} does not call {draw}"
        assert f'link("{picture.kind}"' in script, f"{picture.script} does not link its picture"
    for pattern in plot_results.NO_PICTURE:
        assert _matches(pattern), f"no record matches {pattern}"


@pytest.mark.parametrize("name", RECORDS)
def test_the_picture_of_each_record_is_a_png(name, plot_results, tmp_path) -> None:
    picture = plot_results.picture_for(name)
    if picture is None:  # a record without a picture says why (plot_results.NO_PICTURE)
        assert plot_results.reason_for(name), f"{name}: no picture and no reason"
        return
    out = tmp_path / f"{name}.png"
    picture.draw(_record(name), out)
    width, height = check_png(out)
    assert width >= 600 and height >= 300, (width, height)


def test_plot_results_writes_and_links_every_picture(plot_results, tmp_path, capsys) -> None:
    """The script on a copy of a few records: pictures beside them, links added once."""
    names = ["serving", "kg", "evaluation"]
    for name in names:
        (tmp_path / f"{name}.json").write_text((RESULTS / f"{name}.json").read_text())
        (tmp_path / f"{name}.md").write_text("# a table\n\n| a |\n|---|\n| 1 |\n")
    assert plot_results.main(["--results-dir", str(tmp_path), "--link"]) == 0
    printed = capsys.readouterr().out
    assert "serving.png" in printed and "kg.png" in printed
    assert "evaluation.json: two timings" in printed
    for name in ("serving", "kg"):
        check_png(tmp_path / f"{name}.png")
        text = (tmp_path / f"{name}.md").read_text()
        assert text.startswith("# a table\n\n| a |\n|---|\n| 1 |\n\n![")
        assert text.count(f"]({name}.png)") == 1
    assert not (tmp_path / "evaluation.png").exists()
    assert plot_results.main(["--results-dir", str(tmp_path), "--link", "kg"]) == 0
    assert (tmp_path / "kg.md").read_text().count("](kg.png)") == 1


def test_the_committed_results_show_their_pictures(plot_results) -> None:
    for name in RECORDS:
        md = RESULTS / f"{name}.md"
        if plot_results.picture_for(name) is None or not md.exists():
            continue
        assert (RESULTS / f"{name}.png").exists(), f"{name}.png is not committed"
        assert re.search(rf"!\[[^\]]+\]\({re.escape(name)}\.png\)", md.read_text()), (
            f"{md.name} does not show {name}.png"
        )


# ------------------------------------------------------------------ records of other shapes
def test_transfer_draws_each_section_alone(plots, tmp_path) -> None:
    full = _record("transfer-warm-cold-ablate-ml-1m-amazon")
    cold = _record("transfer-cold")
    transfer = _load("transfer")
    for section in ("warm", "cold", "ablate", "ml-1m", "amazon"):
        report = {section: full[section]}
        if section == "cold":
            report = cold  # with the offset sweep, the slot budget and the merge frontier
        out = plots.plot_transfer(
            report,
            tmp_path / f"{section}.png",
            recbole=transfer.RECBOLE_NDCG10,
            lightfm=transfer.LIGHTFM_COLD,
            cold_target=transfer.COLD_TARGET,
        )
        check_png(out)
        assert plots.what("transfer", report) == plots.TRANSFER_SECTIONS[section]
    with pytest.raises(ValueError, match="nothing to draw"):
        plots.plot_transfer({}, tmp_path / "none.png")


def test_baselines_draws_training_curves_where_records_keep_them(plots, tmp_path) -> None:
    report = copy.deepcopy(_record("baselines-ml-100k"))
    for model, runs in report.items():
        if model in ("bpr", "multvae"):
            for r in runs:
                r["fit_info"]["history"] = [
                    {"epoch": e, "loss": 1.0 / e, "valid_ndcg@10": 0.2 + 0.01 * min(e, 5)}
                    for e in range(1, 9)
                ]
                r["fit_info"]["best_epoch"] = 5
    plain = check_png(plots.plot_baselines(_record("baselines-ml-100k"), tmp_path / "a.png"))
    curves = check_png(plots.plot_baselines(report, tmp_path / "b.png", reference={"ease": 0.3}))
    assert curves[1] > plain[1]  # a third panel


def test_serving_draws_a_second_client_and_ann_serving_a_failed_path(plots, tmp_path) -> None:
    serving = _record("serving")
    extra = [{**row, "client": "httpx"} for row in serving["load"][:3]]
    check_png(plots.plot_serving({**serving, "load": serving["load"] + extra}, tmp_path / "s.png"))
    ann = _record("ann_serving")
    failed = {**ann, "load": [*ann["load"][:1], {"path": "index", "error": "died"}]}
    check_png(plots.plot_ann_serving(failed, tmp_path / "a.png"))


def test_each_link_line_shows_its_picture(plots) -> None:
    for kind in plots.WHAT:
        line = plots.link(kind, Path("/x/name.png"))
        assert re.fullmatch(r"!\[[^\[\]]+\]\(name\.png\)", line), line
