"""Baselines vs RecBole 1.2.1 on the fixed shared splits, built on `kinrec benchmark --json`.

Each model runs in its own `kinrec benchmark` process so that peak memory is per model.
Prints a table and writes benchmarks/results/baselines-<split>.{md,json}.

    python benchmarks/baselines.py                       # ml-100k, all six baselines
    python benchmarks/baselines.py --split ml-1m --seeds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("KINREC_SHARED", ROOT.parent / "shared"))

# RecBole 1.2.1 test metrics on exactly these split files (shared/benchmarks/REFERENCE.md).
# Keys: recall@10, ndcg@10, mrr@10, hit@10, recall@20, ndcg@20; "fit_s" = RecBole fit seconds.
RECBOLE = {
    "ml-100k": {
        "pop": (0.0947, 0.1138, 0.2161, 0.4942, 0.1784, 0.1339, 0.1),
        "itemknn": (0.2409, 0.2840, 0.4790, 0.7741, 0.3611, 0.3038, 0.9),
        "ease": (0.2762, 0.3268, 0.5311, 0.8240, 0.3935, 0.3440, 0.2),
        "bpr": (0.2445, 0.2881, 0.4708, 0.7837, 0.3688, 0.3105, 17.1),
        "lightgcn": (0.2489, 0.2942, 0.4835, 0.7784, 0.3704, 0.3152, 279.2),
        "multvae": (0.2666, 0.3065, 0.4946, 0.8038, 0.3877, 0.3292, 48.3),
    },
    "ml-1m": {
        "pop": (0.0740, 0.1272, 0.2505, 0.5012, 0.1203, 0.1285, 2.4),
        "itemknn": (0.1645, 0.2574, 0.4457, 0.7407, 0.2465, 0.2600, 10.3),
        "ease": (0.2043, 0.3009, 0.5048, 0.8060, 0.2976, 0.3067, 2.9),
        "bpr": (0.1643, 0.2561, 0.4453, 0.7462, 0.2517, 0.2622, 152.8),
        "lightgcn": (0.0843, 0.1442, 0.2761, 0.5387, 0.1324, 0.1447, 697.6),
        "multvae": (0.1858, 0.2559, 0.4372, 0.7874, 0.2793, 0.2712, 479.5),
    },
}
ITERATIVE = ("bpr", "lightgcn", "multvae")
KEYS = ("recall@10", "ndcg@10", "mrr@10", "hit@10", "recall@20", "ndcg@20")


def run_model(split_dir: Path, model: str, seeds: int) -> list[dict]:
    """One `kinrec benchmark --json` process for one model; returns its JSON records."""
    cmd = [
        sys.executable, "-m", "kinrec.cli", "benchmark", "--split-dir", str(split_dir),
        "--models", model, "--seeds", str(seeds), "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def summarise(records: list[dict]) -> dict:
    out = {}
    for key in (*KEYS, "train_seconds", "peak_rss_mb"):
        values = [r[key] for r in records]
        out[key] = statistics.mean(values)
        out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="ml-100k", choices=sorted(RECBOLE))
    parser.add_argument("--models", default="pop,itemknn,ease,bpr,lightgcn,multvae")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the iterative models")
    args = parser.parse_args()
    split_dir = SHARED / "benchmarks" / args.split
    console = Console(width=200)
    rows, raw = [], {}
    for model in args.models.split(","):
        seeds = args.seeds if model in ITERATIVE else 1
        console.print(f"[bold]{model}[/] on {split_dir} ({seeds} seed(s)) ...")
        records = run_model(split_dir, model, seeds)
        raw[model] = records
        rows.append((model, summarise(records), len(records)))

    table = Table(title=f"kinrec baselines vs RecBole 1.2.1 — {args.split} test (full ranking)")
    headers = ["model", "seeds", *KEYS, "RecBole ndcg@10", "ratio", "train s", "RecBole fit s",
               "peak MiB"]  # fmt: skip
    for h in headers:
        table.add_column(h, justify="left" if h == "model" else "right")
    md = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for model, s, n in rows:
        ref = RECBOLE[args.split].get(model)
        ndcg = s["ndcg@10"]
        cells = [
            model,
            str(n),
            *(f"{s[k]:.4f}" + (f" ±{s[k + '_sd']:.4f}" if s[k + "_sd"] else "") for k in KEYS),
            f"{ref[1]:.4f}" if ref else "-",
            f"{ndcg / ref[1]:.3f}" if ref else "-",
            f"{s['train_seconds']:.1f}",
            f"{ref[6]:.1f}" if ref else "-",
            f"{s['peak_rss_mb']:.0f}",
        ]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    from _plots import link, plot_baselines

    RESULTS.mkdir(parents=True, exist_ok=True)
    picture = RESULTS / f"baselines-{args.split}.png"
    md += ["", link("baselines", picture)]
    cmd = f"python benchmarks/baselines.py --split {args.split} --seeds {args.seeds}"
    note = (
        f"Command: `{cmd}`. Mean ± sd over seeds (BPR/LightGCN/MultVAE); ratio = kinrec "
        "NDCG@10 / RecBole NDCG@10. RecBole's Pop counts items per training batch (REFERENCE.md "
        "caveat); kinrec's pop is true popularity. Train seconds: kinrec's iterative models on "
        "1 torch thread (their default), validation included; RecBole: 1 thread, other "
        "core busy (compare ratios, not absolutes).\n"
    )
    (RESULTS / f"baselines-{args.split}.md").write_text(
        f"# Baselines on {args.split}\n\n{note}\n" + "\n".join(md) + "\n"
    )
    (RESULTS / f"baselines-{args.split}.json").write_text(json.dumps(raw, indent=1))
    plot_baselines(raw, picture, reference={m: v[1] for m, v in RECBOLE[args.split].items()})
    console.print(f"wrote {RESULTS}/baselines-{args.split}.md")


if __name__ == "__main__":
    main()
