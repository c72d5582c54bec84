"""kinformer's full propagation against its cached one, side by side on one split.

``propagation = "full"`` runs every item's views and LightGCN over the whole graph at every
training step (exact gradients); ``"cached"`` runs its batch's items only and takes the
graph layers from a propagation refreshed every ``cache_refresh_steps`` steps
(:mod:`kinrec.models.transfer.propagation`). ``auto`` switches from one to the other at
``full_propagation_items`` (50,000) items; this measures what the switch costs in accuracy
and saves in time where both run. Each mode is one ``kinrec benchmark`` run in a fresh
process (same seed, same split), by default with the linear head off (``--head`` keeps it),
so that the two towers are compared alone.

The split is ``--split-dir``, or a synthetic one of ``--items`` items (``kinrec data synth``,
30 interactions per item, 40 per user, seed 2026). Item texts are encoded once, before the
runs, into an embedding cache the runs share. Writes
``benchmarks/results/propagation.{md,json}``.

    python benchmarks/propagation.py [--items 30000 | --split-dir DIR] [--head]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import encode_split_texts, run_model, write_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODES = ("full", "cached")


def _synthetic(folder: Path, items: int) -> None:
    from kinrec.data.synth import generate

    generate(folder, users=items * 30 // 40, items=items, interactions=items * 30, seed=2026,
             name="synth")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split-dir", type=Path, default=None)
    parser.add_argument("--items", type=int, default=30_000, help="synthetic catalogue size")
    parser.add_argument("--head", action="store_true", help="keep the linear head")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", default="propagation")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="kinrec-propagation-") as tmp:
        split_dir = args.split_dir
        if split_dir is None:
            split_dir = Path(tmp) / "synth"
            _synthetic(split_dir, args.items)
        db = f"sqlite:///{Path(tmp) / 'embeddings.db'}"
        encode_split_texts(split_dir, db)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "KINREC_DB": db}
        for mode in MODES:
            config = Path(tmp) / f"{mode}.toml"
            head = "" if args.head else "linear_head = false\n"
            config.write_text(f'[models.kinformer]\npropagation = "{mode}"\n{head}')
            result = run_model(split_dir, "kinformer", env, args.timeout, config)
            info = result.pop("record", {}).get("fit_info", {})
            result.update(
                propagation=info.get("propagation", mode),
                epochs=info.get("epochs_run"),
                best_epoch=info.get("best_epoch"),
                valid=info.get("best_valid_ndcg@10"),
            )
            print(json.dumps(result), flush=True)
            results.append(result)

    command = "python benchmarks/propagation.py"
    command += f" --split-dir {args.split_dir}" if args.split_dir else f" --items {args.items}"
    command += " --head" if args.head else ""
    where = args.split_dir.name if args.split_dir else f"synthetic, {args.items:,} items"
    lines = [
        "| propagation | NDCG@10 | ratio to full | Recall@20 | best valid NDCG@10 | epochs "
        "(best) | fit s | peak RSS GiB |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    full = next((r.get("ndcg10") for r in results if r["propagation"] == "full"), None)
    for r in results:
        ndcg, recall, valid = r.get("ndcg10"), r.get("recall20"), r.get("valid")
        if ndcg is None:
            lines.append(f"| {r['propagation']} | {r.get('error', '-')} | | | | | | |")
            continue
        ratio = f"{ndcg / full:.4f}" if full else "-"
        lines.append(
            f"| {r['propagation']} | {ndcg:.4f} | {ratio} | {recall:.4f} | "
            f"{'-' if valid is None else f'{valid:.4f}'} | {r['epochs']} ({r['best_epoch']}) | "
            f"{r['fit_seconds']:.0f} | {r['peak_rss_gib']:.2f} |"
        )
    text = (
        "# kinformer: full against cached propagation\n\n"
        f"Command: `{command}`\n\n"
        f"Split: {where} (test, full ranking, train+valid masked); seed 2026; linear head "
        f"{'on' if args.head else 'off'}; machine: {os.cpu_count()} cores. Each row is one "
        "fresh process; text embeddings come from a cache filled before the runs.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    write_results(RESULTS / args.out, text, {"command": command, "results": results})


if __name__ == "__main__":
    main()
