"""Models on a catalogue of 24,915 items: each fits within the memory it may use, or stops
with a clear error before allocating.

Builds, seeded, an interactions-only split the size of the one that made EASE die with a
segfault (24,915 items, ~70,591 users, ~620,908 train rows, plus valid and test rows):
power-law item popularity, and users whose tastes mix a few of 60 latent topics, so that
co-occurrences carry signal (``kinrec.data.synth``, interactions only). It is written in
RecBole split layout (``large.{train,valid,test}.inter``, a per-user 80/10/10 split of each
user's events in time order) into a temporary folder, never into the repository. Each model
then runs in a fresh process (``kinrec benchmark --split-dir DIR --models NAME --json``),
which records its fit time, its peak resident memory (of that process, from ``wait4``),
NDCG@10, or the refusal it printed. Writes benchmarks/results/large-catalogue.{md,json}.

    python benchmarks/large_catalogue.py [--models pop,ease,kinformer]
        [--items 24915 --users 70591 --rows 620908] [--memory-limit 6GiB] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from _runner import run_model, total_memory_gib

from kinrec.data.synth import generate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NAME = "large"
TOPICS = 60


def build_split(
    folder: Path, n_items: int, n_users: int, train_rows: int, seed: int = 2026
) -> dict[str, int]:
    """Write ``large.{train,valid,test}.inter`` into ``folder``; returns the row counts.

    :func:`kinrec.data.synth.generate` aiming at ``train_rows`` train rows, interactions only
    (see there): item popularity follows a Zipf law (exponent 0.9) within each of ``TOPICS``
    topics of mixed sizes; a user draws 80% of their events from one to three favourite
    topics and the rest from the whole catalogue by popularity. Activity is log-normal (at
    least 5 events). Every item gets at least one train row, so the catalogue has exactly
    ``n_items`` items."""
    result = generate(
        folder,
        users=n_users,
        items=n_items,
        interactions=round(train_rows / 0.8),
        train_rows=train_rows,
        seed=seed,
        name=NAME,
        text=False,
        kg=False,
        topics=TOPICS,
    )
    return result.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="pop,ease,kinformer")
    parser.add_argument("--items", type=int, default=24_915)
    parser.add_argument("--users", type=int, default=70_591)
    parser.add_argument("--rows", type=int, default=620_908, help="train rows (about)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--memory-limit", default=None, help="KINREC_MEMORY_LIMIT of the runs")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per model")
    parser.add_argument("--keep", type=Path, default=None, help="write the split here, keep it")
    parser.add_argument("--out", default="large-catalogue", help="results file stem")
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.memory_limit:
        env["KINREC_MEMORY_LIMIT"] = args.memory_limit
    folder = args.keep or Path(tempfile.mkdtemp(prefix="kinrec-large-"))
    try:
        start = time.perf_counter()
        sizes = build_split(folder, args.items, args.users, args.rows, args.seed)
        print(f"split {folder}: {sizes} in {time.perf_counter() - start:.1f} s", flush=True)
        results = []
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            result = run_model(folder, model, env, args.timeout)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    command = "python benchmarks/large_catalogue.py --models " + args.models
    if (args.items, args.users, args.rows) != (24_915, 70_591, 620_908):
        command += f" --items {args.items} --users {args.users} --rows {args.rows}"
    if args.memory_limit:
        command += f" --memory-limit {args.memory_limit}"
    header = (
        "| model | outcome | fit s | wall s | peak RSS GiB | NDCG@10 | Recall@20 |\n"
        "|---|---|---:|---:|---:|---:|---:|"
    )
    lines = []
    for r in results:
        if "error" in r:
            outcome = f"stopped (exit {r['exit']}): {r['error']}"
        else:
            outcome = "fit"
            if r.get("linear_head"):
                outcome += f"; linear head {r['linear_head']}"
        fit = r.get("fit_seconds")
        ndcg, recall = r.get("ndcg10"), r.get("recall20")
        lines.append(
            f"| {r['model']} | {outcome} | {'-' if fit is None else f'{fit:.1f}'} "
            f"| {r['wall_seconds']:.1f} | {r['peak_rss_gib']:.2f} "
            f"| {'-' if ndcg is None else f'{ndcg:.4f}'} "
            f"| {'-' if recall is None else f'{recall:.4f}'} |"
        )
    table = header + "\n" + "\n".join(lines)
    memory = os.environ.get("KINREC_MEMORY_LIMIT") or args.memory_limit
    text = (
        "# Large catalogue\n\n"
        f"Command: `{command}`\n\n"
        f"Split: {sizes['items']:,} items, {sizes['users']:,} users, {sizes['train']:,} train / "
        f"{sizes['valid']:,} valid / {sizes['test']:,} test rows (interactions only, seed "
        f"{args.seed}); machine: {os.cpu_count()} cores, "
        f"{total_memory_gib():.1f} GiB; memory limit: {memory or 'none set'}.\n\n"
        f"{table}\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(text)
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps({"command": command, "split": sizes, "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
