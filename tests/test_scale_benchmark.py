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
