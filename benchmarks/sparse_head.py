"""The sparse linear head against the dense one, side by side on one split.

EASE and kinformer's linear head are solved either densely (EASE's closed form over the
whole catalogue, items^2 memory) or sparsely (each item regressed on its k most similar
items, items x k memory; :mod:`kinrec.models.sparse_linear`). On a catalogue where both
run, this measures what the sparse solver costs in accuracy: each (model, solver) pair is
one ``kinrec benchmark`` run in a fresh process (same seed, same split), recording NDCG@10,
Recall@20, fit seconds and peak RSS. Writes benchmarks/results/sparse-head.{md,json}.

    python benchmarks/sparse_head.py [--split-dir ../shared/benchmarks/ml-1m]
        [--models ease,kinformer] [--neighbours 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import run_model, write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SOLVER_FIELD = {"ease": "solver", "kinformer": "linear_solver"}
NEIGHBOURS_FIELD = {"ease": "neighbours", "kinformer": "linear_neighbours"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split-dir", type=Path, default=ROOT.parent / "shared/benchmarks/ml-1m")
    parser.add_argument("--models", default="ease,kinformer")
    parser.add_argument("--neighbours", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=3 * 3600)
    parser.add_argument("--out", default="sparse-head")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    results = []
    with tempfile.TemporaryDirectory(prefix="kinrec-sparse-head-") as tmp:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            for solver in ("dense", "sparse"):
                config = Path(tmp) / f"{model}-{solver}.toml"
                config.write_text(
                    f"[models.{model}]\n{SOLVER_FIELD[model]} = {json.dumps(solver)}\n"
                    f"{NEIGHBOURS_FIELD[model]} = {args.neighbours}\n"
                )
                result = run_model(args.split_dir, model, env, args.timeout, config)
                record = result.pop("record", {})
                info = record.get("fit_info", {})
                result.update(
                    solver=solver,
                    head={
                        key: info.get(key)
                        for key in (
                            "linear_l2",
                            "linear_rating_spread",
                            "linear_session_share",
                            "linear_text_strength",
                            "linear_kg_strength",
                            "linear_weight",
                        )
                        if key in info
                    },
                )
                print(json.dumps(result), flush=True)
                results.append(result)

    command = "python benchmarks/sparse_head.py"
    default_split = ROOT.parent / "shared/benchmarks/ml-1m"
    if args.split_dir.resolve() != default_split.resolve():
        command += f" --split-dir {args.split_dir}"
    if args.models != "ease,kinformer":
        command += f" --models {args.models}"
    if args.neighbours != 200:
        command += f" --neighbours {args.neighbours}"
    lines = [
        "| model | solver | NDCG@10 | ratio to dense | Recall@20 | fit s | peak RSS GiB | head "
        "(L2/spread/session/text/weight) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    dense = {r["model"]: r.get("ndcg10") for r in results if r["solver"] == "dense"}
    for r in results:
        ndcg = r.get("ndcg10")
        base = dense.get(r["model"])
        ratio = f"{ndcg / base:.4f}" if ndcg and base else "-"
        head = "/".join(f"{v:g}" for v in r["head"].values()) if r["head"] else ""
        outcome = r.get("error")
        recall, fit = r.get("recall20"), r.get("fit_seconds")
        lines.append(
            f"| {r['model']} | {r['solver']} | "
            f"{'-' if ndcg is None else f'{ndcg:.4f}'} | {ratio} | "
            f"{'-' if recall is None else f'{recall:.4f}'} | "
            f"{'-' if fit is None else f'{fit:.0f}'} | "
            f"{r['peak_rss_gib']:.2f} | {outcome or head} |"
        )
    text = (
        "# Sparse linear head against the dense one\n\n"
        f"Command: `{command}`\n\n"
        f"Split: `{args.split_dir.name}` (test, full ranking, train+valid masked), seed 2026, "
        f"{args.neighbours} neighbours per item for the sparse solver; machine: "
        f"{os.cpu_count()} cores. Each row is one fresh process.\n\n" + "\n".join(lines) + "\n"
    )
    write_results(RESULTS / args.out, text, {"command": command, "results": results})


if __name__ == "__main__":
    main()
