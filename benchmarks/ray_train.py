"""Training on a local Ray cluster against the single-process fit, on a shared split.

For each model, ``--seeds`` single-process fits (``kinrec benchmark --json``, seeds from
2026) give the seed-to-seed spread; one fit of the first seed on a real local Ray cluster
(a head without CPUs and ``--workers`` worker nodes of one CPU each, 127.0.0.1 only;
data-parallel Ray Train workers for models trained in epochs, the sparse solver's item
blocks as Ray tasks otherwise) is evaluated the same way (test, full ranking, train+valid
masked). Target: the Ray fit within one seed's spread of the single-process fits: within
one sd of their mean, and within their range.

``--reuse KEY=PATH`` takes a model's single-process records from an earlier results file
(a ``kinrec benchmark --json`` line per seed, or kg_gain.py's JSON with ``runs[KEY]``)
instead of fitting them again (kinformer on ml-1m: 12 minutes a fit here).

Prints a table and writes benchmarks/results/ray-train.{md,json} after each model
(``--merge`` keeps the earlier run's other models).

    python benchmarks/ray_train.py --split ml-1m --models bpr,multvae,kinformer --seeds 3 \\
        --reuse "kinformer=benchmarks/results/kg-gain.json#ml-1m|full|kinformer"
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import reused
from transfer import RESULTS, SHARED, bench, table

STEM = "ray-train"
FIRST_SEED = 2026


def ray_record(split_name: str, model: str, seed: int, workers: int) -> dict:
    """One fit on a local cluster of ``workers`` worker nodes, evaluated as run_one does."""
    from kinrec.distributed.cluster import local_cluster
    from kinrec.distributed.train import fit_distributed
    from kinrec.evaluation.protocol import evaluate
    from kinrec.models.registry import create_model
    from kinrec.pipeline import load_split_folder

    split = load_split_folder(SHARED / "benchmarks" / split_name)
    with local_cluster(workers=workers):
        start = time.perf_counter()
        fitted = fit_distributed(create_model(model, {"seed": seed}), split, workers=workers)
        wall = time.perf_counter() - start
    result = evaluate(fitted, split.test, exclude=[split.train, split.valid], ks=(10, 20))
    return {
        "model": model,
        "seed": seed,
        **{k: round(v, 6) for k, v in result.metrics.items()},
        "train_seconds": round(wall, 1),
        "fit_info": {k: v for k, v in fitted.fit_info.items() if k in ("ray", "epochs_run")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="ml-1m")
    parser.add_argument("--models", default="bpr,multvae,kinformer")
    parser.add_argument("--seeds", type=int, default=3, help="single-process seeds (spread)")
    parser.add_argument("--workers", type=int, default=2, help="Ray worker nodes and workers")
    parser.add_argument("--reuse", action="append", default=[], metavar="MODEL=PATH[#KEY]")
    parser.add_argument("--merge", action="store_true", help="keep the last run's other models")
    parser.add_argument("--no-run", action="store_true", help="write the table of the last run")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    console = Console(width=160)
    reuse = {spec.partition("=")[0]: spec for spec in args.reuse}
    out = args.results / f"{STEM}.json"
    earlier = json.loads(out.read_text()) if args.merge and out.exists() else {}
    if earlier and earlier["split"] != args.split:
        parser.error(f"--merge: {out} holds {earlier['split']}, not {args.split}")
    command = shlex.join(["python", "benchmarks/ray_train.py", *sys.argv[1:]])
    report: dict = {
        "split": args.split,
        "workers": args.workers,
        "models": earlier.get("models", {}),
        "commands": [*earlier.get("commands", []), command],
    }
    if args.no_run:
        write(json.loads(out.read_text()), args.results, console)
        return
    for model in [m for m in args.models.split(",") if m]:
        console.rule(f"{args.split} | {model}")
        on_ray = ray_record(args.split, model, FIRST_SEED, args.workers)
        # read after the Ray fit: a reused file may gain seeds meanwhile
        single = reused(reuse[model])[1] if model in reuse else bench(args.split, model, args.seeds)
        report["models"][model] = {"single": single, "ray": on_ray}
        write(report, args.results, console)


def write(report: dict, results: Path, console: Console) -> None:
    """The table of ``report`` to ``results``/ray-train.{md,json}."""
    rows = []
    for model, runs in report["models"].items():
        single, on_ray = runs["single"], runs["ray"]
        same = next((r for r in single if r["seed"] == on_ray["seed"]), None)
        for key in ("ndcg@10", "recall@20"):
            vals = [r[key] for r in single]
            mean = statistics.mean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            verdict = "met" if abs(on_ray[key] - mean) <= sd else "missed"
            ranged = "met" if min(vals) <= on_ray[key] <= max(vals) else "missed"
            if len(vals) < 2:
                verdict = ranged = "one seed: no spread"
            seed = f"{same[key]:.4f} ({on_ray[key] - same[key]:+.4f})" if same else "-"
            rows.append([model, key, f"{mean:.4f} ± {sd:.4f} ({len(vals)} seeds)", seed,
                         f"{on_ray[key]:.4f}", f"{on_ray[key] - mean:+.4f}", verdict, ranged,
                         f"{statistics.median(r['train_seconds'] for r in single):.0f}",
                         f"{on_ray['train_seconds']:.0f}"])  # fmt: skip
    commands = "; ".join(f"`{c}`" for c in report["commands"])
    workers = report["workers"]
    md = ["# Training on a Ray cluster", "", f"Command(s): {commands}.", "",
          f"Split `{report['split']}` (test, full ranking, train+valid masked). Single process: "
          "`kinrec benchmark` fits, mean ± sd over seeds from 2026. Ray: one fit of the first "
          f"seed on a local cluster (a head and {workers} worker nodes of one CPU each, "
          "127.0.0.1 only): data-parallel Ray Train workers for models trained in epochs. "
          "Target: within one seed's spread of the single-process model, read two ways: "
          "within one sd of the mean over seeds, and within the seeds' range (min to max). "
          "The single-process fit of the same seed, which the Ray fit reproduces up to "
          "floating-point order where the loss is a mean over the batch's rows, is shown "
          "beside it: where the Ray fit equals it, a distance from the mean is that seed's, "
          "not Ray's. Times: median "
          "single-process "
          "fit and the Ray fit's wall time (cluster start excluded), on the same 2-core "
          "machine, so the Ray workers share its cores.", ""]  # fmt: skip
    md += table(["model", "metric", "single process", "same seed, one process (Ray - it)",
                 "Ray", "Ray - mean", "within 1 sd of the mean",
                 "within the seeds' range", "single s", "Ray s"],
                rows)  # fmt: skip
    md += [""] + [f"- {note}" for note in report.get("notes", [])]
    text = "\n".join(md) + "\n"
    console.print(text)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{STEM}.md").write_text(text)
    (results / f"{STEM}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
