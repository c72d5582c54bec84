"""benchmarks/scale.py end to end on a tiny catalogue: a training time budget reaches the
epoch-trained models only, and the report says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_scale_benchmark_passes_its_training_budget_to_epoch_trained_models(tmp_path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--sizes", "400"]
    command += ["--models", "itemknn,bpr", "--train-budget", "0.001", "--timeout", "300"]
    command += ["--eval-users", "100", "--results-dir", str(tmp_path), "--out", "tiny"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "tiny.json").read_text())
    results = {r["model"]: r for r in report["sizes"][0]["results"]}
    assert results["itemknn"]["outcome"] == "fit" and not results["itemknn"].get("epochs_run")
    bpr = results["bpr"]
    # a budget far below one epoch: the first epoch runs, and is the last
    assert bpr["outcome"] == "fit" and bpr["stopped_by_budget"] and bpr["epochs_run"] == 1
    table = (tmp_path / "tiny.md").read_text()
    assert "training budget reached after 1 epoch" in table and "1 epochs" not in table
    assert "`max_train_seconds`) of the epoch-trained models: 0.001 s" in table


def test_merge_keeps_what_this_run_did_not_replace(tmp_path, monkeypatch) -> None:
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("scale_bench", ROOT / "benchmarks" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    earlier = {
        "command": "python benchmarks/scale.py --earlier",
        "models": ["ease", "itemknn"],
        "sizes": [
            {"items": 10, "results": [{"model": "ease", "x": 1}, {"model": "itemknn", "x": 2}]},
            {"items": 30, "results": [{"model": "ease", "x": 3}, {"model": "itemknn", "x": 4}]},
        ],
    }
    path = tmp_path / "scale.json"
    path.write_text(json.dumps(earlier))
    reports = [{"items": 100, "results": [{"model": "itemknn", "x": 5}]},
               {"items": 30, "results": [{"model": "itemknn", "x": 6}]}]  # fmt: skip
    models, command = scale.merge_previous(reports, ["itemknn"], path)
    assert command == "python benchmarks/scale.py --earlier" and models == ["ease", "itemknn"]
    assert [s["items"] for s in reports] == [10, 30, 100]
    by = {(s["items"], r["model"]): r for s in reports for r in s["results"]}
    assert by[(30, "itemknn")] == {"model": "itemknn", "x": 6}  # this run's, unmarked
    assert by[(30, "ease")]["run"] == command and by[(10, "itemknn")]["run"] == command
    assert (100, "ease") not in by and len(by) == 5
