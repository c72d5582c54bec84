"""Content recommenders on cold items (ml-100k-cold) and on rich item text (amazon-scientific).

Runs `kinrec benchmark --json` for pop, lm-knn (with and without a LoRA domain adapter trained
by `kinrec.knowledge.adapt` on the catalogue's own item texts) and kg-knn, and reports
Recall/NDCG@20 on the COLD and WARM segments of ml-100k-cold next to LightFM 1.17, then
Recall/NDCG@10 on amazon-scientific's leave-one-out test split.
Writes benchmarks/results/content.{md,json}.

    python benchmarks/content.py [--adapter-steps 150]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KINREC_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results"
LIGHTFM_CONTENT_COLD_R20 = 0.1154  # shared/benchmarks/REFERENCE.md, mask = train+valid
RANDOM_COLD_R20 = 0.0125  # a uniformly random ranking
COLD_REFERENCES = {
    "LightFM 1.17 content-only COLD R@20": LIGHTFM_CONTENT_COLD_R20,
    "random ranking COLD R@20": RANDOM_COLD_R20,
}


def bench(split_dir: Path, models: str, config: Path | None = None) -> list[dict]:
    cmd = [sys.executable, "-m", "kinrec.cli", "benchmark", "--split-dir", str(split_dir),
           "--models", models, "--json"]  # fmt: skip
    if config is not None:
        cmd += ["--config", str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def train_adapter(split_dir: Path, out: Path, steps: int) -> dict:
    """A LoRA adapter trained (SimCSE + KG-neighbour pairs) on the catalogue's item texts."""
    from kinrec.cli.knowledge import kg_positive_pairs
    from kinrec.knowledge.adapt import AdaptConfig, adapt
    from kinrec.knowledge.encoder import bundled_model_path
    from kinrec.knowledge.text import render_item_texts
    from kinrec.pipeline import load_split_folder

    dataset = load_split_folder(split_dir).dataset
    pairs_text = render_item_texts(dataset)
    pairs = kg_positive_pairs(dataset, [i for i, _ in pairs_text])
    info = adapt(
        bundled_model_path(),
        [t for _, t in pairs_text],
        AdaptConfig(max_steps=steps, progress=True),
        out,
        pairs=pairs,
    )
    return info.model_dump(mode="json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter-steps", type=int, default=150)
    args = parser.parse_args()
    console = Console(width=200)
    cold_dir = SHARED / "benchmarks" / "ml-100k-cold"
    amazon_dir = SHARED / "datasets" / "amazon-scientific"
    records: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        adapter = train_adapter(cold_dir, Path(tmp) / "adapter", args.adapter_steps)
        adapter["wall_seconds"] = time.perf_counter() - start
        cfg = Path(tmp) / "adapter.toml"
        cfg.write_text(f'[models.lm-knn]\nadapter_path = "{adapter["path"]}"\n')
        records["ml-100k-cold"] = bench(cold_dir, "pop,lm-knn,kg-knn")
        with_adapter = bench(cold_dir, "lm-knn", cfg)
        for r in with_adapter:
            r["model"] = "lm-knn + adapter"
        records["ml-100k-cold"] += with_adapter
        records["amazon-scientific"] = bench(amazon_dir, "pop,lm-knn,kg-knn")

    cold = Table(title="ml-100k-cold: test, full ranking over all 1,682 items, train+valid masked")
    cols = ["model", "COLD R@20", "COLD N@20", "WARM R@20", "WARM N@20", "ALL N@10",
            "prior weight", "fit s"]  # fmt: skip
    for c in cols:
        cold.add_column(c, justify="left" if c == "model" else "right")
    md = [
        "## ml-100k-cold (COLD = test rows of the 202 items without train rows)",
        "",
        f"LightFM 1.17 content-only reaches COLD R@20 {LIGHTFM_CONTENT_COLD_R20} on this split "
        f"(REFERENCE.md); a uniformly random ranking {RANDOM_COLD_R20}.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in records["ml-100k-cold"]:
        c, w = r["segments"]["cold"], r["segments"]["warm"]
        weight = str(r["fit_info"].get("prior_weight", "-"))
        row = [r["model"], f"{c['recall@20']:.4f}", f"{c['ndcg@20']:.4f}", f"{w['recall@20']:.4f}",
               f"{w['ndcg@20']:.4f}", f"{r['ndcg@10']:.4f}", weight,
               f"{r['train_seconds']:.1f}"]  # fmt: skip
        cold.add_row(*row)
        md.append("| " + " | ".join(row) + " |")
    amazon = Table(title="amazon-scientific: leave-one-out test, full ranking")
    cols2 = ["model", "R@10", "N@10", "R@20", "N@20", "fit s"]
    for c in cols2:
        amazon.add_column(c, justify="left" if c == "model" else "right")
    md += ["", "## amazon-scientific (leave-one-out, full ranking)", "",
           "| " + " | ".join(cols2) + " |", "|" + "---|" * len(cols2)]  # fmt: skip
    for r in records["amazon-scientific"]:
        row = [r["model"], f"{r['recall@10']:.4f}", f"{r['ndcg@10']:.4f}",
               f"{r['recall@20']:.4f}", f"{r['ndcg@20']:.4f}",
               f"{r['train_seconds']:.1f}"]  # fmt: skip
        amazon.add_row(*row)
        md.append("| " + " | ".join(row) + " |")
    md += ["", "## LoRA domain adapter (ml-100k item texts)", "",
           f"steps {adapter['steps']}, trainable (LoRA) params {adapter['trainable_params']:,} "
           f"of {adapter['base_params']:,} frozen, contrastive loss {adapter['initial_loss']:.4f}"
           f" -> {adapter['final_loss']:.4f}, {adapter['seconds']:.0f} s training, "
           f"{adapter['n_pairs']} KG-neighbour pairs."]  # fmt: skip
    console.print(cold)
    console.print(amazon)
    console.print(md[-1])
    RESULTS.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    header = (
        f"# Content recommenders\n\nCommand: `python benchmarks/content.py --adapter-steps "
        f"{args.adapter_steps}`. Load average at the end: {load[0]:.1f}.\n\n"
    )
    from _plots import link, plot_content

    md += ["", link("content", "content.png")]
    (RESULTS / "content.md").write_text(header + "\n".join(md) + "\n")
    (RESULTS / "content.json").write_text(json.dumps({"records": records, "adapter": adapter}))
    plot_content({"records": records, "adapter": adapter}, RESULTS / "content.png",
                 references=COLD_REFERENCES)  # fmt: skip


if __name__ == "__main__":
    main()
