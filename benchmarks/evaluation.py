"""Speed of full-ranking evaluation on ml-1m (6,040 users x 3,883 catalogue items), target < 5 s.

Times `evaluate` on the test part (train+valid masked, K in 5/10/20/50, cold/warm and user
activity segments) with (a) a precomputed score matrix (evaluation cost alone) and (b) EASE
scoring on the fly. Median of 5 runs. Writes benchmarks/results/evaluation.{md,json}.

    python benchmarks/evaluation.py
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from kinrec.data.loaders import load_split_dir
from kinrec.evaluation.protocol import evaluate, evaluate_scores
from kinrec.models.registry import create_model

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KINREC_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results"


def median_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    split = load_split_dir(SHARED / "benchmarks" / "ml-1m")
    model = create_model("ease").fit(split.train)
    scores = model.score(np.arange(split.n_users)).astype(np.float32)
    exclude = [split.train, split.valid]
    precomputed = median_time(lambda: evaluate_scores(lambda u: scores[u], split.test, exclude))
    with_model = median_time(lambda: evaluate(model, split.test, exclude, train=split.train))
    rows = {
        "users x items": f"{split.test.n_users} x {split.n_items}",
        "test rows": len(split.test),
        "precomputed scores, median s": round(precomputed, 3),
        "EASE scoring + evaluation + segments, median s": round(with_model, 3),
        "target s": 5.0,
    }
    table = Table(title="Full-ranking evaluation speed, ml-1m test (5 runs, median)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in rows.items():
        table.add_row(k, str(v))
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    md = ["| measure | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows.items())]
    (RESULTS / "evaluation.md").write_text(
        "# Evaluation speed\n\nCommand: `python benchmarks/evaluation.py`\n\n"
        + "\n".join(md)
        + "\n"
    )
    (RESULTS / "evaluation.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
