"""Record kinformer's hyper-parameter search: validation only, never test.

One coordinate at a time around the defaults on ml-100k-cold (its validation rows are warm
items, so every run is also scored on the pseudo-cold validation the new-item offset is
chosen on). For each setting the table gives

* ``two-tower valid N@10``: the best validation NDCG@10 of the trained network alone (the
  early-stopping criterion),
* ``valid N@10``: validation NDCG@10 of the finished model (linear head and popularity prior
  with their weights chosen on validation) before the new-item offset, which only moves items
  without interactions and so only lowers a validation that has none of them,
* ``pseudo-cold N@10``: NDCG@10 on the pseudo-cold validation at the chosen new-item offset,

and writes benchmarks/results/transfer-search.{md,json}. No test row is read.

    python benchmarks/tune_transfer.py [--split ml-100k-cold]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KINREC_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results"

SEARCH: dict[str, list] = {
    "dim": [128],
    "temperature": [0.1],
    "n_negatives": [256],
    "id_dropout": [0.0, 0.3],
    "align_weight": [0.5],
    "cl_weight": [0.1],
    "learning_rate": [3e-3],
    "n_layers": [1],
    "cold_neighbours": [5, 50],
}


def warm_validation(model, validator) -> float:
    boost, model.cold_boost = model.cold_boost, 0.0
    try:
        return validator(model)
    finally:
        model.cold_boost = boost


def run(split, params: dict) -> dict:
    from kinrec.evaluation.benchmark import fit_with_validation
    from kinrec.evaluation.protocol import ndcg_validator
    from kinrec.models.registry import create_model

    start = time.perf_counter()
    model = fit_with_validation(create_model("kinformer", {"seed": 2026, **params}), split)
    info = model.fit_info
    boosts = info.get("cold_search", {})
    return {
        "params": params,
        "two_tower_valid_ndcg@10": info.get("best_valid_ndcg@10"),
        "valid_ndcg@10": warm_validation(model, ndcg_validator(split.train, split.valid)),
        "pseudo_cold_ndcg@10": max(boosts.values()) if boosts else None,
        "best_epoch": info.get("best_epoch"),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="ml-100k-cold")
    args = parser.parse_args()
    # Item texts are encoded once and then read from an embedding cache.
    (ROOT / "runs").mkdir(exist_ok=True)
    os.environ.setdefault("KINREC_DB", f"sqlite:///{ROOT / 'runs' / 'tune-cache.db'}")
    from kinrec.data.loaders import load_split_dir

    split = load_split_dir(SHARED / "benchmarks" / args.split)
    console = Console(width=160)
    runs = [run(split, {})]
    console.print("defaults", runs[0])
    for key, values in SEARCH.items():
        for value in values:
            runs.append(run(split, {key: value}))
            console.print(runs[-1])

    def cell(x) -> str:
        return "-" if x is None else f"{x:.4f}"

    lines = [
        "# kinformer hyper-parameter search (validation only)",
        "",
        f"Command: `python benchmarks/tune_transfer.py --split {args.split}` (seed 2026, one "
        "setting changed per row from the defaults; no test row is read).",
        "",
        "| setting | two-tower valid N@10 | valid N@10 | pseudo-cold N@10 | best epoch | s |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        name = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "defaults"
        lines.append(
            f"| {name} | {cell(r['two_tower_valid_ndcg@10'])} | {cell(r['valid_ndcg@10'])} | "
            f"{cell(r['pseudo_cold_ndcg@10'])} | {r['best_epoch']} | {r['seconds']:.0f} |"
        )
    from _plots import link, plot_transfer_search

    lines += ["", link("transfer-search", "transfer-search.png")]
    text = "\n".join(lines) + "\n"
    console.print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transfer-search.md").write_text(text)
    (RESULTS / "transfer-search.json").write_text(json.dumps(runs, indent=1))
    plot_transfer_search(runs, RESULTS / "transfer-search.png")


if __name__ == "__main__":
    main()
