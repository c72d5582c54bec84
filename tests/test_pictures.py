"""Pictures: ``kinrec train`` writes training.png for models trained in epochs (and none for
one-pass models), ``kinrec evaluate --plot`` draws per-segment bars, the service serves the
training curve and an item's knowledge-graph neighbourhood."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_cli import _write_fixture
from test_serving_support import ToyContent, make_store, train, train_content
from typer.testing import CliRunner

from kinrec.cli import app
from kinrec.evaluation.protocol import EvaluationResult
from kinrec.models.base import Recommender
from kinrec.plots import (
    TRAINING_FILE,
    default_metrics,
    evaluation_bars_png,
    training_curve_png,
    training_history,
)
from kinrec.serving.app import create_app
from kinrec.serving.config import ServingConfig
from kinrec.serving.engine import Engine
from kinrec.training.loop import VALID_KEY, train_epochs

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature and IHDR chunk."""
    assert data[:8] == PNG_SIGNATURE, data[:16]
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width > 0 and height > 0
    return width, height


def check_png(path: Path) -> tuple[int, int]:
    from PIL import Image

    size = png_size(path.read_bytes())
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size == size
    return size


# ------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def trained_bpr(tmp_path_factory) -> dict:
    """BPR trained for 3 epochs by `kinrec train` on the CLI tests' toy split."""
    root = tmp_path_factory.mktemp("pictures")
    toy = _write_fixture(root / "toy")
    config = root / "bpr.toml"
    config.write_text('[model]\nname = "bpr"\n[model.params]\nmax_epochs = 3\nembedding_size = 8\n')
    out = root / "bpr-model"
    res = runner.invoke(
        app,
        ["train", "-m", "bpr", "--split-dir", str(toy), "-c", str(config), "-o", str(out)],
    )
    return {"root": root, "toy": toy, "out": out, "result": res}


def test_train_writes_the_training_curve(trained_bpr: dict) -> None:
    res, out = trained_bpr["result"], trained_bpr["out"]
    assert res.exit_code == 0, res.output
    assert str(out / TRAINING_FILE) in res.output.replace("\n", "")
    width, height = check_png(out / TRAINING_FILE)
    assert width > 300 and height > 200
    info = json.loads((out / "manifest.json").read_text())["fit_info"]
    history = info["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(row["loss"] > 0 for row in history)
    best = next(row for row in history if row["epoch"] == info["best_epoch"])
    assert best[VALID_KEY] == pytest.approx(info["best_valid_ndcg@10"])


def test_one_pass_models_draw_no_curve(trained_bpr: dict) -> None:
    out = trained_bpr["root"] / "pop-model"
    res = runner.invoke(
        app, ["train", "-m", "pop", "--split-dir", str(trained_bpr["toy"]), "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert (out / "manifest.json").exists()
    assert not (out / TRAINING_FILE).exists()
    assert "training curve" not in res.output


def test_evaluate_plot_writes_segment_bars(trained_bpr: dict) -> None:
    assert trained_bpr["result"].exit_code == 0
    target = trained_bpr["root"] / "pictures" / "segments.png"  # the folder is created
    res = runner.invoke(
        app,
        ["evaluate", "--model-dir", str(trained_bpr["out"]), "--json", "--plot", str(target)],
    )
    assert res.exit_code == 0, res.output
    assert "ndcg@10" in json.loads(res.stdout)["metrics"]  # stdout stays pure JSON
    width, _ = check_png(target)
    assert width > 500


def test_help_says_where_pictures_go() -> None:
    train_help = runner.invoke(app, ["train", "--help"]).output
    assert "training.png" in train_help
    evaluate_help = " ".join(runner.invoke(app, ["evaluate", "--help"]).output.split())
    assert "--plot" in evaluate_help and "PNG" in evaluate_help


# ------------------------------------------------------------------------ the drawings
def test_training_history_comes_from_the_epoch_loop() -> None:
    losses = iter([3.0, 2.0, 1.5, 1.4])
    scores = iter([0.1, 0.3, 0.2, 0.25])
    result = train_epochs(lambda e: next(losses), 4, validate=lambda: next(scores), patience=5)
    info = result.fit_info()
    assert [r["epoch"] for r in info["history"]] == [1, 2, 3, 4]
    assert info["history"][1] == {"epoch": 2, "loss": 2.0, VALID_KEY: 0.3}
    json.dumps(info)  # stored in the manifest as is
    assert training_history(info) == info["history"]
    png_size(training_curve_png(info, "toy"))


def test_curve_without_validation_and_none_without_epochs() -> None:
    result = train_epochs(lambda e: 1.0 / e, 3)
    png_size(training_curve_png(result.fit_info(), "toy"))
    assert training_curve_png({"train_seconds": 1.0}, "ease") is None
    assert training_history({}) == []


def test_segment_bars_pick_the_reported_metrics() -> None:
    assert default_metrics(["ndcg@10", "recall@20", "hit@10"]) == ["ndcg@10", "recall@20"]
    assert default_metrics(["ndcg@5", "recall@50", "recall@10"]) == ["ndcg@5", "recall@10"]
    metrics = {"ndcg@10": 0.4, "recall@20": 0.5}
    result = EvaluationResult(
        metrics, {"cold": metrics, "users:low": {"ndcg@10": 0.1}}, 10, {"cold": 4, "users:low": 3}
    )
    png_size(evaluation_bars_png(result))


# ------------------------------------------------------------------------ the service
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("picture-service")
    url = make_store(root)
    bpr = train(root, url, "bpr", {"max_epochs": 3, "embedding_size": 8})
    return {"url": url, "content": train_content(root, url), "bpr": bpr}


def service(world: dict, kind: str) -> TestClient:
    """An app without auth over the ``kind`` model of ``world``."""
    config = ServingConfig(model_dir=world[kind], db=world["url"], log_requests=False)
    model_cls = ToyContent if kind == "content" else Recommender
    return TestClient(create_app(engine=Engine.open(config, model_cls=model_cls)))


def test_training_curve_route(world: dict) -> None:
    r = service(world, "content").get("/v1/model/training.png")
    assert r.status_code == 404 and "not trained in epochs" in r.json()["error"]

    # trained in epochs by the pipeline (no training.png): drawn from fit_info's history
    assert not (world["bpr"] / TRAINING_FILE).exists()
    r = service(world, "bpr").get("/v1/model/training.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    png_size(r.content)

    # the model directory's training.png is served as it is
    (world["content"] / TRAINING_FILE).write_bytes(r.content)
    try:
        served = service(world, "content").get("/v1/model/training.png")
        assert served.status_code == 200 and served.content == r.content
    finally:
        (world["content"] / TRAINING_FILE).unlink()


def test_item_graph_route(world: dict) -> None:
    svc = service(world, "content")
    g = svc.get("/v1/items/7/graph").json()
    assert g["graph"] and g["title"] == "The wedding story 7"
    edges = {(e["relation"], e["entity"]): e for e in g["edges"]}
    assert g["n_edges"] == len(g["edges"]) == 4
    genre = edges["has_genre", "genre:Comedy"]
    assert genre["direction"] == "out" and genre["n_items"] == 19 and len(genre["items"]) == 3
    director = edges["directed_by", "d.1"]  # items 1, 7, 13, 19, 25, 31, 37
    assert director["n_items"] == 6
    assert {x["item_id"] for x in director["items"]} <= {"1", "13", "19", "25", "31", "37"}
    assert all(x["title"] for x in director["items"])
    assert ("released_in", "year:1990") in edges
    assert len(svc.get("/v1/items/7/graph?limit=2").json()["edges"]) == 2
    assert svc.get("/v1/items/nope/graph").status_code == 404
