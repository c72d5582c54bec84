"""End-to-end CLI runs on a small RecBole-format fixture: ingest, train, evaluate, recommend,
benchmark --json, and clean errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kinrec.cli import app

runner = CliRunner()


def _write_fixture(root: Path, name: str = "toy") -> Path:
    """Two taste clusters of users over 40 items, as RecBole atomic + benchmark split files."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    parts = {"inter": [], "train": [], "valid": [], "test": []}
    for u in range(1, 31):
        pool = range(1, 21) if u % 2 else range(21, 41)
        items = rng.permutation(list(pool))[:12]
        for pos, i in enumerate(items):
            row = f"{u}\t{i}\t{1 + pos % 5}\t{1000 + u * 100 + pos}\n"
            parts["inter"].append(row)
            part = "train" if pos < 9 else ("valid" if pos == 9 else "test")
            parts[part].append(row)
    (root / f"{name}.inter").write_text(header + "".join(parts["inter"]))
    for part in ("train", "valid", "test"):
        (root / f"{name}.{part}.inter").write_text(header + "".join(parts[part]))
    genres = ["Comedy", "Drama"]
    lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"]
    for i in range(1, 41):
        lines.append(f"{i}\tMovie {i}\t{1990 + i % 10}\t{genres[i > 20]}\n")
    (root / f"{name}.item").write_text("".join(lines))
    return root


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    return _write_fixture(tmp_path / "toy")


def test_help_teaches() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for command in ("ingest", "train", "evaluate", "recommend", "benchmark", "data", "demo"):
        assert command in res.output


def test_ingest_train_evaluate_recommend(toy: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    res = runner.invoke(
        app, ["ingest", str(toy), "--format", "recbole", "--name", "toy", "--db", db]
    )
    assert res.exit_code == 0, res.output
    again = runner.invoke(
        app, ["ingest", str(toy), "--format", "recbole", "--name", "toy", "--db", db]
    )
    assert again.exit_code == 0, again.output
    out_dir = tmp_path / "model"
    res = runner.invoke(
        app,
        ["train", "--model", "itemknn", "--dataset", "toy", "--db", db, "--out", str(out_dir)],
    )
    assert res.exit_code == 0, res.output
    assert (out_dir / "manifest.json").exists()
    prior = json.loads((out_dir / "manifest.json").read_text())["fit_info"]["history_prior"]
    assert f"c = {prior['strength']:g}" in res.output  # item kNN folds in: a prior was chosen
    assert set(prior["search"]) == {"0", "0.5", "1", "2", "4", "8", "16", "32", "64"}
    res = runner.invoke(app, ["evaluate", "--model-dir", str(out_dir), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)["metrics"]
    assert 0.0 <= metrics["ndcg@10"] <= 1.0
    # A clustered dataset is easy: item kNN must do far better than chance.
    assert metrics["hit@10"] > 0.5
    res = runner.invoke(app, ["recommend", "--model-dir", str(out_dir), "--user", "1", "-k", "5"])
    assert res.exit_code == 0, res.output


def test_benchmark_json_lines_only(toy: Path) -> None:
    res = runner.invoke(
        app, ["benchmark", "--split-dir", str(toy), "--models", "pop,ease", "--json"]
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["model"] for r in lines] == ["pop", "ease"]
    for r in lines:
        assert {"seed", "ndcg@10", "recall@20", "segments", "train_seconds"} <= r.keys()
    assert lines[1]["ndcg@10"] > lines[0]["ndcg@10"]  # EASE learns the clusters, pop cannot


def test_benchmark_reads_the_text_template_from_the_config(toy: Path, tmp_path: Path) -> None:
    """``[data] text_template`` makes a title-only catalogue a configuration: here the genre,
    which splits the toy's two taste clusters, leaves lm-knn's item text."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scores = {}
    for name, template in (("default", None), ("title", "{title}")):
        config = tmp_path / f"{name}.toml"
        config.write_text(f'[data]\ntext_template = "{template}"\n' if template else "")
        res = runner.invoke(
            app,
            ["benchmark", "--split-dir", str(toy), "--models", "lm-knn", "--json",
             "--config", str(config)],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        scores[name] = json.loads(res.stdout.strip().splitlines()[0])["ndcg@10"]
    assert scores["title"] < scores["default"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\ntext_template = "{plot}"\n')
    res = runner.invoke(
        app, ["benchmark", "--split-dir", str(toy), "--models", "pop", "--config", str(bad)]
    )
    assert res.exit_code != 0
    assert "text_template" in res.output and "Traceback" not in res.output


def test_unknown_model_is_a_clean_error(toy: Path) -> None:
    res = runner.invoke(app, ["benchmark", "--split-dir", str(toy), "--models", "nope"])
    assert res.exit_code == 2
    assert "unknown model 'nope'" in res.output
    assert "Traceback" not in res.output


def test_bad_file_is_reported_with_line(tmp_path: Path) -> None:
    root = _write_fixture(tmp_path / "bad")
    inter = root / "toy.inter"
    lines = inter.read_text().splitlines()
    lines[3] = "1\t2\tnot-a-number\t5"
    inter.write_text("\n".join(lines) + "\n")
    db = f"sqlite:///{tmp_path / 'k.db'}"
    res = runner.invoke(app, ["ingest", str(root), "--name", "toy", "--db", db])
    assert res.exit_code == 2
    assert "toy.inter:4" in res.output
