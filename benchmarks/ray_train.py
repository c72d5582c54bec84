"""Training on a local Ray cluster against the single-process fit, on a shared split.

For each model, ``--seeds`` single-process fits (``kinrec benchmark --json``, seeds from
2026) give the seed-to-seed spread; fits of the ``--ray-seeds`` on a real local Ray cluster
(a head without CPUs and ``--workers`` worker nodes of one CPU each, 127.0.0.1 only;
data-parallel Ray Train workers for models trained in epochs, the sparse solver's item
blocks as Ray tasks otherwise) are evaluated the same way (test, full ranking, train+valid
masked). Target: the Ray model within one seed's spread of the single-process model: the
mean over the Ray fits within one sd of the single-process mean, and within the
single-process seeds' range. Beside it, each Ray fit against the single-process fit of the
same seed (the data-parallel step reproduces it up to floating-point order).

``--merge`` keeps the earlier run's other models and, for a model run again, its earlier
Ray fits of other seeds and its single-process fits (not fitted again), so the Ray seeds
can run in several invocations.

``--reuse KEY=PATH`` takes a model's single-process records from an earlier results file
(a ``kinrec benchmark --json`` line per seed, or kg_gain.py's JSON with ``runs[KEY]``)
instead of fitting them again (kinformer on ml-1m: 12 minutes a fit here).

Prints a table and writes benchmarks/results/ray-train.{md,json} after each model
(``--merge``: see above).

    python benchmarks/ray_train.py --split ml-1m --models bpr,multvae,kinformer --seeds 3 \\
        --ray-seeds 2026,2027,2028 \\
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
    parser.add_argument(
        "--ray-seeds", default=str(FIRST_SEED), help="comma-separated seeds of the Ray fits"
    )
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
    ray_seeds = [int(x) for x in args.ray_seeds.split(",") if x]
    for model in [m for m in args.models.split(",") if m]:
        console.rule(f"{args.split} | {model}")
        before = report["models"].get(model, {})
        on_ray = {r["seed"]: r for r in _ray_runs(before)}
        for seed in ray_seeds:
            on_ray[seed] = ray_record(args.split, model, seed, args.workers)
            # read after the Ray fit: a reused file may gain seeds meanwhile
            if model in reuse:
                single = reused(reuse[model])[1]
            elif before.get("single"):
                single = before["single"]
            else:
                single = bench(args.split, model, args.seeds)
            before = report["models"][model] = {
                "single": single,
                "ray": [on_ray[k] for k in sorted(on_ray)],
            }
            write(report, args.results, console)


def _ray_runs(runs: dict) -> list[dict]:
    """A model's Ray records (one record in results written before several seeds)."""
    ray = runs.get("ray", [])
    return [ray] if isinstance(ray, dict) else list(ray)


def write(report: dict, results: Path, console: Console) -> None:
    """The table of ``report`` to ``results``/ray-train.{md,json}."""
    rows = []
    for model, runs in report["models"].items():
        single, on_ray = runs["single"], _ray_runs(runs)
        same = {r["seed"]: r for r in single}
        paired = [r for r in on_ray if r["seed"] in same]
        for key in ("ndcg@10", "recall@20"):
            vals = [r[key] for r in single]
            mean = statistics.mean(vals)
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            ray_mean = statistics.mean(r[key] for r in on_ray)
            ray_sd = statistics.stdev(r[key] for r in on_ray) if len(on_ray) > 1 else 0.0
            verdict = "met" if abs(ray_mean - mean) <= sd else "missed"
            ranged = "met" if min(vals) <= ray_mean <= max(vals) else "missed"
            if len(vals) < 2:
                verdict = ranged = "one seed: no spread"
            diffs = [r[key] - same[r["seed"]][key] for r in paired]
            seed = (
                f"{statistics.mean(diffs):+.4f} ({len(diffs)}: "
                + ", ".join(f"{d:+.4f}" for d in diffs)
                + ")"
                if diffs
                else "-"
            )
            ray_cell = f"{ray_mean:.4f}" + (
                f" ± {ray_sd:.4f} ({len(on_ray)} seeds)" if len(on_ray) > 1 else " (1 seed)"
            )
            rows.append([model, key, f"{mean:.4f} ± {sd:.4f} ({len(vals)} seeds)", ray_cell,
                         seed, f"{ray_mean - mean:+.4f}", verdict, ranged,
                         f"{statistics.median(r['train_seconds'] for r in single):.0f}",
                         f"{statistics.median(r['train_seconds'] for r in on_ray):.0f}"])  # fmt: skip  # noqa: E501
    commands = "; ".join(f"`{c}`" for c in report["commands"])
    workers = report["workers"]
    md = ["# Training on a Ray cluster", "", f"Command(s): {commands}.", "",
          f"Split `{report['split']}` (test, full ranking, train+valid masked). Single process: "
          "`kinrec benchmark` fits, mean ± sd over seeds from 2026. Ray: fits of the seeds "
          f"shown on a local cluster (a head and {workers} worker nodes of one CPU each, "
          "127.0.0.1 only): data-parallel Ray Train workers for models trained in epochs. "
          "Target: the Ray model within one seed's spread of the single-process model, read "
          "two ways: the mean over the Ray fits within one sd of the single-process mean, and "
          "within the single-process seeds' range (min to max). 'Ray - same seed': each Ray "
          "fit minus the single-process fit of its seed, which the data-parallel step "
          "reproduces up to floating-point order. Times: median single-process fit and median "
          "Ray fit wall time (cluster start excluded), on the same 2-core machine, so the Ray "
          "workers share its cores.", ""]  # fmt: skip
    md += table(["model", "metric", "single process", "Ray", "Ray - same seed (mean: each)",
                 "Ray - single mean", "within 1 sd of the mean",
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
