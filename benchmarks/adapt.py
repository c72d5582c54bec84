"""Supervised two-tower encoder adaptation on ml-100k-cold: LoRA adapter vs full fine-tuning.

Trains the bundled MiniLM on two-tower pairs from the TRAIN interactions only
(`kinrec.knowledge.adapt.interaction_pairs`: two items one user had; pure pair InfoNCE with
in-batch negatives, `simcse_weight=0`), (a) with a LoRA adapter and (b) by full fine-tuning,
under the same step budget, then evaluates LM-kNN (`kinrec.models.content.LMKNN`) with the base
encoder, the adapter and the fine-tuned encoder: COLD and WARM Recall/NDCG@20 on test (full
ranking over all items, train+valid masked). Validation only picks LM-kNN's popularity-prior
weight, as in `kinrec benchmark`; nothing is tuned on test.

The adapter and the model are kept under runs/adapt/ (gitignored) for other experiments:
`[models.kinformer] adapter_path = ".../lora-two-tower"` or `encoder_path = ".../full"`.
Every torch/BLAS computation runs on one thread (the machine is shared).
Writes benchmarks/results/adapt.{md,json}.

    python benchmarks/adapt.py [--steps 80] [--batch-size 64] [--reuse]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if os.environ.get("KINREC_SHARED"):
    SHARED = Path(os.environ["KINREC_SHARED"])
elif os.environ.get("KINREC_DATA_DIR"):
    SHARED = Path(os.environ["KINREC_DATA_DIR"]).resolve().parent
else:
    SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "adapt"


def one_thread() -> None:
    """torch on one thread, also inside the text encoder (whose default follows idle CPUs)."""
    import torch

    import kinrec.knowledge.encoder as encoder

    torch.set_num_threads(1)
    encoder.resolve_threads = lambda setting, n_texts=None: 1


def train(split: Any, method: str, args: argparse.Namespace, out: Path) -> dict:
    """Two-tower training on the train part's interaction pairs; the AdapterInfo as a dict."""
    from kinrec.knowledge.adapt import AdaptConfig, adapt, interaction_pairs, load_adapter_info
    from kinrec.knowledge.encoder import bundled_model_path
    from kinrec.knowledge.features import item_texts

    if args.reuse and out.exists():
        return load_adapter_info(out).model_dump(mode="json")
    texts = item_texts(split.dataset, split.train.item_map.ids())
    pairs = interaction_pairs(split.train, max_pairs=args.max_pairs, seed=0)
    config = AdaptConfig(
        method=method,
        simcse_weight=0.0,
        batch_size=args.batch_size,
        max_steps=args.steps,
        time_budget_s=args.time_budget,
        num_threads=1,
        progress=True,
    )
    return adapt(bundled_model_path(), texts, config, out, pairs=pairs).model_dump(mode="json")


def evaluate_lmknn(split: Any, params: dict[str, str]) -> dict:
    from kinrec.evaluation.benchmark import run_one

    return run_one("lm-knn", split, 2026, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-dir", type=Path, default=SHARED / "benchmarks" / "ml-100k-cold")
    parser.add_argument("--steps", type=int, default=80, help="Same step budget for both.")
    parser.add_argument("--batch-size", type=int, default=64, help="Pairs per step.")
    parser.add_argument("--time-budget", type=float, default=330.0, help="Safety cap (s).")
    parser.add_argument("--max-pairs", type=int, default=20000)
    parser.add_argument("--reuse", action="store_true", help="Keep trained folders in runs/.")
    args = parser.parse_args()
    if not args.split_dir.is_dir():
        raise SystemExit(f"{args.split_dir} not found (set KINREC_SHARED or KINREC_DATA_DIR)")
    one_thread()
    from kinrec.data.loaders import load_split_dir

    console = Console(width=200)
    split = load_split_dir(args.split_dir)
    folders = {"lora": RUNS / "lora-two-tower", "full": RUNS / "full"}
    trained: dict[str, dict] = {}
    for method, folder in folders.items():
        console.print(f"[bold]training {method}[/] -> {folder}")
        trained[method] = train(split, method, args, folder)
    variants = {
        "base encoder": ({}, None),
        "LoRA two-tower adapter": ({"adapter_path": str(folders["lora"])}, trained["lora"]),
        "full fine-tune": ({"encoder_path": str(folders["full"])}, trained["full"]),
    }
    records: dict[str, dict] = {}
    for name, (params, _) in variants.items():
        console.print(f"[bold]evaluating lm-knn[/]: {name}")
        start = time.perf_counter()
        records[name] = evaluate_lmknn(split, params)
        records[name]["wall_seconds"] = round(time.perf_counter() - start, 1)

    cols = ["encoder", "COLD R@20", "COLD N@20", "WARM R@20", "WARM N@20", "ALL N@10",
            "valid N@10 text only", "valid N@10 + prior (w)", "trainable params", "train steps",
            "train s", "pair loss before -> after"]  # fmt: skip
    table = Table(title="LM-kNN on ml-100k-cold: test, full ranking, train+valid masked")
    for c in cols:
        table.add_column(c, justify="left" if c == "encoder" else "right")
    md_rows = []
    for name, (_, info) in variants.items():
        r = records[name]
        c, w = r["segments"]["cold"], r["segments"]["warm"]
        losses = "-"
        if info is not None:
            before, after = info["eval_losses"]["before"], info["eval_losses"]["after"]
            losses = f"{before['pairs']:.3f} -> {after['pairs']:.3f}"
        search, weight = r["fit_info"]["prior_weight_search"], r["fit_info"]["prior_weight"]
        row = [name, f"{c['recall@20']:.4f}", f"{c['ndcg@20']:.4f}", f"{w['recall@20']:.4f}",
               f"{w['ndcg@20']:.4f}", f"{r['ndcg@10']:.4f}", f"{search['0.0']:.4f}",
               f"{search[str(float(weight))]:.4f} ({weight:g})",
               "0" if info is None else f"{info['trainable_params']:,}",
               "-" if info is None else str(info["steps"]),
               "-" if info is None else f"{info['seconds']:.0f}", losses]  # fmt: skip
        table.add_row(*row)
        md_rows.append("| " + " | ".join(row) + " |")
    console.print(table)
    for method, folder in folders.items():
        key = "adapter_path" if method == "lora" else "encoder_path"
        console.print(f'{method}: [models.kinformer] {key} = "{folder}"', markup=False)

    lora, full = trained["lora"], trained["full"]
    load = os.getloadavg()
    md = [
        "# Two-tower encoder adaptation: LoRA adapter vs full fine-tuning (ml-100k-cold)",
        "",
        f"Command: `python benchmarks/adapt.py --steps {args.steps} --batch-size "
        f"{args.batch_size}`. {platform.processor() or platform.machine()}, one torch thread, "
        f"2 cores shared with other jobs (load average at the end: {load[0]:.1f}).",
        "",
        f"Training: {lora['n_pairs']:,} two-tower pairs (two items one user had) sampled from "
        f"the TRAIN interactions only (`interaction_pairs`, max {args.max_pairs:,}, queries "
        "uniform over items, candidates weighted by popularity^-0.5), pure pair InfoNCE "
        f"(temperature {lora['config']['temperature']}, in-batch negatives with repeated items "
        f"masked, `simcse_weight=0`), {args.batch_size} pairs per step, the same "
        f"{args.steps}-step budget for both (time cap {args.time_budget:.0f} s), max 64 tokens. "
        f"LoRA: rank {lora['config']['rank']} on query/value, lr "
        f"{lora['config']['learning_rate']:g}, {lora['trainable_params']:,} trainable / "
        f"{lora['frozen_params']:,} frozen. Full: lr {full['config']['learning_rate']:g}, "
        f"{full['trainable_params']:,} trainable / {full['frozen_params']:,} frozen (the unused "
        "pooler). Pair loss: on 256 fixed training pairs, before -> after.",
        "",
        "Evaluation: LM-kNN (user = mean text embedding of their items, cosine, plus the "
        "content popularity prior whose weight is picked on validation NDCG@10), seed 2026, "
        "test rows, full ranking over all 1,682 items with train+valid masked; COLD = the 202 "
        "items without train rows, WARM = the others. The two validation columns are LM-kNN's "
        "own selection (validation, warm items only): NDCG@10 of the text cosine alone (prior "
        "weight 0) and at the picked prior weight w.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *md_rows,
        "",
        f"Training wall time: LoRA {lora['seconds']:.0f} s ({lora['steps']} steps, stopped by "
        f"{lora['stopped_by']}), full {full['seconds']:.0f} s ({full['steps']} steps, stopped by "
        f"{full['stopped_by']}), both including model loading and the before/after loss "
        "evaluation.",
        "",
        "Folders (gitignored): `runs/adapt/lora-two-tower` (LoRA adapter: `adapter_path`), "
        "`runs/adapt/full` (sentence-transformers model: `encoder_path`).",
    ]
    from _plots import link, plot_adapt

    md += ["", link("adapt", "adapt.png")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "adapt.md").write_text("\n".join(md) + "\n")
    payload = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "trained": trained,
        "records": records,
        "load_average": load[0],
    }
    (RESULTS / "adapt.json").write_text(json.dumps(payload, indent=1) + "\n")
    plot_adapt(payload, RESULTS / "adapt.png")


if __name__ == "__main__":
    main()
