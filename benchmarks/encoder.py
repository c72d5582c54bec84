"""Text encoder: kinrec's TextEncoder vs plain sentence-transformers; cache; LoRA adaptation.

Throughput (``--part throughput``): 5,000 item texts, the 3,883 ML-1M movies rendered by the
MovieLens template ("Toy Story (1995). Genres: Animation, Children's, Comedy.") topped up with
Amazon Scientific item texts (title + categories + brand, longer). Each repetition times, in
turn, in the same process on the same texts:

* ``SentenceTransformer(path, device="cpu").encode(texts)``: the baseline (its defaults: batch
  32, torch's default thread count, character-length sorting);
* optionally (``--st-one-thread``) the same with one torch thread;
* kinrec float32 with 2 threads (the baseline's thread count: batching alone);
* kinrec float32 with its default load-aware thread choice;
* kinrec bfloat16 with the default thread choice;
* optionally kinrec float32 at other batch sizes (``--batch-sizes 16,64``);

then the warm-cache re-encode of all texts (memory cache and SQLite store cache) and the
re-encode after one text changed. Medians over repetitions; items/s and ratio to the baseline.
The 1-min load average is recorded before every run: the machine is shared.

Adaptation (``--part adapt``): LoRA SimCSE training time on the 1,682 ML-100K item texts with
the default AdaptConfig (``--adapt-pairs``: also SimCSE + pairs of items sharing a rare
knowledge-graph neighbour), and the encoding time with the adapter on and off.

Writes benchmarks/results/encoder.{md,json} (a part run updates its own section).

    python benchmarks/encoder.py                        # both parts, 3 repetitions
    python benchmarks/encoder.py --part throughput --reps 5 --st-one-thread
    python benchmarks/encoder.py --part adapt --adapt-pairs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from kinrec.data.loaders import load_movielens_1m, load_unisrec
from kinrec.knowledge.encoder import (
    EncoderConfig,
    MemoryEmbeddingCache,
    StoreEmbeddingCache,
    TextEncoder,
    bundled_model_path,
    idle_cpus,
    torch_threads,
)
from kinrec.knowledge.text import render_item_texts

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BASELINE = "sentence-transformers encode"
DATA = Path(os.environ.get("KINREC_DATA_DIR", ROOT.parent / "shared" / "datasets"))


def item_texts(n: int) -> tuple[list[str], dict[str, int]]:
    texts = [t for _, t in render_item_texts(load_movielens_1m(DATA / "ml-1m"))][:n]
    counts = {"ml-1m": len(texts)}
    if len(texts) < n:
        amazon = [t for _, t in render_item_texts(load_unisrec(DATA / "amazon-scientific"))]
        texts += amazon[: n - len(texts)]
        counts["amazon-scientific"] = len(texts) - counts["ml-1m"]
    return texts, counts


def load() -> dict[str, float | None]:
    idle = idle_cpus(0.2)
    return {
        "load1": round(os.getloadavg()[0], 2),
        "idle_cpus": None if idle is None else round(idle, 2),
    }


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray, dict]:
    before = load()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out, before


def throughput(args: argparse.Namespace) -> dict:
    """Timed encodes of the same texts by sentence-transformers and kinrec variants; caches."""
    texts, sources = item_texts(args.n)
    path = bundled_model_path()
    from sentence_transformers import SentenceTransformer

    plain = SentenceTransformer(str(path), device="cpu")
    encoders: dict[str, TextEncoder] = {
        "kinrec fp32, 2 threads": TextEncoder(EncoderConfig(num_threads=2)),
        "kinrec fp32, auto threads": TextEncoder(EncoderConfig()),
        "kinrec bf16, auto threads": TextEncoder(EncoderConfig(precision="bfloat16")),
    }
    for size in filter(None, args.batch_sizes.split(",")):
        encoders[f"kinrec fp32, auto threads, batch {int(size)}"] = TextEncoder(
            EncoderConfig(batch_size=int(size))
        )
    default = encoders["kinrec fp32, auto threads"]

    def st_one_thread() -> tuple[np.ndarray, int]:
        with torch_threads(1):
            return plain.encode(texts), 1

    # name -> run() returning (vectors, threads used); the baseline first.
    variants: dict[str, Callable[[], tuple[np.ndarray, int]]] = {
        BASELINE: lambda: (plain.encode(texts), torch.get_num_threads()),
    }
    if args.st_one_thread:
        variants["sentence-transformers encode, 1 thread"] = st_one_thread
    for name, enc in encoders.items():
        variants[name] = lambda enc=enc: (enc.encode_uncached(texts), enc.stats.threads)
    warm = texts[:64]
    plain.encode(warm)
    for enc in encoders.values():
        enc.encode_uncached(warm)
    lengths = default.token_lengths(texts)

    times: dict[str, list[float]] = {}
    loads: dict[str, list[dict]] = {}
    outputs: dict[str, np.ndarray] = {}
    threads_used: dict[str, list[int]] = {}
    for rep in range(args.reps):
        for name, run in variants.items():
            before = load()
            start = time.perf_counter()
            out, threads = run()
            times.setdefault(name, []).append(time.perf_counter() - start)
            loads.setdefault(name, []).append(before)
            outputs[name] = out
            threads_used.setdefault(name, []).append(threads)
        print(f"repetition {rep + 1}/{args.reps}: " + ", ".join(
            f"{k} {v[-1]:.1f}s" for k, v in times.items()
        ))  # fmt: skip

    base = statistics.median(times[BASELINE])
    reference = outputs[BASELINE]
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        out = outputs[name]
        cosine = np.sum(out * reference, axis=1) / (
            np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1)
        )
        rows.append(
            {
                "encoder": name,
                "median_s": round(med, 3),
                "items_per_s": round(len(texts) / med, 1),
                "ratio": round(base / med, 2),
                "runs_s": [round(t, 2) for t in ts],
                "threads": "/".join(map(str, threads_used[name])),
                "max_abs_diff": float(np.abs(out - reference).max()),
                "min_cosine": float(cosine.min()),
                "load_before": loads[name],
            }
        )

    # Warm cache: everything cached, then one text changed.
    cache_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        caches = {
            "memory cache": MemoryEmbeddingCache(),
            "SQLite store cache": StoreEmbeddingCache(f"sqlite:///{Path(tmp) / 'cache.db'}"),
        }
        for label, cache in caches.items():
            default.cache = cache
            t_fill, first, _ = timed(lambda: default.encode(texts))
            default.reset_stats()
            warm_times = []
            for _ in range(args.reps):
                t, again, _ = timed(lambda: default.encode(texts))
                warm_times.append(t)
            assert default.stats.encoded == 0 and np.array_equal(first, again)
            changed = [*texts]
            changed[17] = changed[17] + " Remastered."
            default.reset_stats()
            t_one, _, _ = timed(lambda changed=changed: default.encode(changed))
            cache_rows.append(
                {
                    "cache": label,
                    "first_encode_and_fill_s": round(t_fill, 3),
                    "warm_reencode_median_s": round(statistics.median(warm_times), 4),
                    "warm_texts_encoded": 0,
                    "one_changed_reencode_s": round(t_one, 4),
                    "one_changed_texts_encoded": default.stats.encoded,
                }
            )
            if isinstance(cache, StoreEmbeddingCache):
                cache.close()

    meta = {
        "command": " ".join(["python benchmarks/encoder.py", *sys.argv[1:]]),
        "texts": len(texts),
        "sources": sources,
        "tokens_mean": round(float(lengths.mean()), 1),
        "tokens_max": int(lengths.max()),
        "model": default.base_model_id,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "load_end": load(),
        "baseline_threads": threads_used[BASELINE][0],
    }
    result = {"meta": meta, "encoders": rows, "cache": cache_rows}
    print_throughput(result, args.reps)
    return result


def print_throughput(result: dict, reps: int) -> None:
    rows, cache_rows, meta = result["encoders"], result["cache"], result["meta"]
    table = Table(title=f"Encoding {meta['texts']:,} item texts ({reps} reps, median)")
    for col in ("encoder", "threads", "median s", "items/s", "ratio", "min cos vs ST", "load1"):
        table.add_column(col, justify="left" if col == "encoder" else "right")
    for r in rows:
        load1 = "/".join(f"{x['load1']:.1f}" for x in r["load_before"])
        table.add_row(
            r["encoder"], r["threads"], f"{r['median_s']:.2f}", f"{r['items_per_s']:.0f}",
            f"{r['ratio']:.2f}x", f"{r['min_cosine']:.5f}", load1,
        )  # fmt: skip
    console = Console(width=150)
    console.print(table)
    cache_table = Table(title="Cache (kinrec fp32, auto threads)")
    for col in (
        "cache",
        "first encode s",
        "warm re-encode s",
        "1 changed: s",
        "1 changed: encoded",
    ):
        cache_table.add_column(col, justify="left" if col == "cache" else "right")
    for c in cache_rows:
        cache_table.add_row(
            c["cache"], f"{c['first_encode_and_fill_s']:.2f}", f"{c['warm_reencode_median_s']:.3f}",
            f"{c['one_changed_reencode_s']:.3f}", str(c["one_changed_texts_encoded"]),
        )  # fmt: skip
    console.print(cache_table)
    console.print(f"load at the end: {meta['load_end']}")


def adaptation(args: argparse.Namespace) -> dict:
    """LoRA adaptation time on ML-100K item texts (SimCSE; SimCSE + KG pairs) and its cost."""
    from kinrec.cli.knowledge import kg_positive_pairs
    from kinrec.data.loaders import load_recbole_atomic
    from kinrec.knowledge.adapt import AdaptConfig, adapt

    dataset = load_recbole_atomic(DATA / "ml-100k")
    rendered = render_item_texts(dataset)
    texts = [t for _, t in rendered]
    runs = []
    # The pairs `kinrec adapt --kg-pairs` uses (neighbours shared by at most 30 items).
    pairs = kg_positive_pairs(dataset, [i for i, _ in rendered], max_items=30, max_pairs=5000)
    with tempfile.TemporaryDirectory() as tmp:
        for label, use_pairs in (("SimCSE", False), ("SimCSE + KG-neighbour pairs", True)):
            if use_pairs and not args.adapt_pairs:
                continue
            before = load()
            out = Path(tmp) / label.replace(" ", "_")
            info = adapt(
                bundled_model_path(), texts, AdaptConfig(), out, pairs if use_pairs else None
            )
            runs.append(
                {
                    "objective": label,
                    "texts": info.n_texts,
                    "pairs": info.n_pairs,
                    "steps": info.steps,
                    "epochs": info.epochs_run,
                    "seconds": round(info.seconds, 1),
                    "trainable_params": info.trainable_params,
                    "base_params": info.base_params,
                    "eval_loss_before": round(info.initial_loss or float("nan"), 5),
                    "eval_loss_after": round(info.final_loss or float("nan"), 5),
                    "eval_losses": info.eval_losses,
                    "load_before": before,
                    "config": info.config.model_dump(mode="json"),
                }
            )
            print(f"adapt {label}: {info.seconds:.1f}s, {info.steps} steps, loss "
                  f"{info.initial_loss:.4f} -> {info.final_loss:.4f}, load {before}")  # fmt: skip
        # What the adapter costs at encoding time (unmerged LoRA), same texts, same threads.
        enc = TextEncoder(EncoderConfig(adapter_path=Path(tmp) / "SimCSE"))
        enc.encode_uncached(texts[:64])
        on, _, _ = timed(lambda: enc.encode_uncached(texts))
        enc.adapter_enabled = False
        off, _, _ = timed(lambda: enc.encode_uncached(texts))
        enc.adapter_enabled = True
        on2, _, _ = timed(lambda: enc.encode_uncached(texts))
    return {
        "command": " ".join(["python benchmarks/encoder.py", *sys.argv[1:]]),
        "dataset": "ml-100k",
        "encode_texts": len(texts),
        "runs": runs,
        "encode_s_adapter_on": round(min(on, on2), 2),
        "encode_s_adapter_off": round(off, 2),
        "threads": enc.stats.threads,
        "load_end": load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("all", "throughput", "adapt"), default="all")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-sizes", default="", help="extra kinrec batch sizes, e.g. 16,64")
    parser.add_argument(
        "--st-one-thread", action="store_true", help="also time sentence-transformers, 1 thread"
    )
    parser.add_argument("--adapt-pairs", action="store_true", help="also time SimCSE + KG pairs")
    parser.add_argument("--out", default="encoder", help="results file stem")
    args = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / f"{args.out}.json"
    result = json.loads(json_path.read_text()) if json_path.exists() else {}
    if args.part in ("all", "throughput"):
        result.update(throughput(args))
    if args.part in ("all", "adapt"):
        result["adaptation"] = adaptation(args)
    from _plots import plot_encoder

    json_path.write_text(json.dumps(result, indent=1) + "\n")
    picture = f"{args.out}.png" if "encoders" in result else None
    (RESULTS / f"{args.out}.md").write_text(markdown(result, picture))
    if picture:
        plot_encoder(result, RESULTS / picture)


def _parts(losses: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in losses.items() if k != "total") or "-"


def md_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    align = ["---"] * left + ["---:"] * (len(header) - left)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def markdown(result: dict, picture: str | None = None) -> str:
    """The results as Markdown; ``picture``: the throughput picture's file, shown after the
    throughput tables."""
    from _plots import link

    body = ["# Text encoder: throughput, cache, LoRA adaptation", ""]
    if "encoders" in result:
        meta = result["meta"]
        sources = ", ".join(f"{v:,} {k}" for k, v in meta["sources"].items())
        intro = (
            f"`{meta['command']}`: {meta['texts']:,} item texts ({sources}; {meta['tokens_mean']} "
            f"tokens on average, at most {meta['tokens_max']}), model {meta['model']}, Python "
            f"{meta['python']}, torch {meta['torch']}, {meta['cpus']} CPUs shared with other jobs; "
            f"sentence-transformers ran with torch's default {meta['baseline_threads']} threads. "
            f"Load at the end: 1-min load average {meta['load_end']['load1']}, "
            f"{meta['load_end']['idle_cpus']} CPUs idle."
        )
        encoders = md_table(
            ["encoder", "threads", "median s", "items/s", "ratio", "min cosine vs ST",
             "max abs diff", "runs s", "1-min load before each run"],
            [
                [r["encoder"], r["threads"], f"{r['median_s']:.2f}", f"{r['items_per_s']:.0f}",
                 f"{r['ratio']:.2f}x", f"{r['min_cosine']:.5f}", f"{r['max_abs_diff']:.1e}",
                 " / ".join(f"{t:.1f}" for t in r["runs_s"]),
                 " / ".join(f"{x['load1']:.1f}" for x in r["load_before"])]
                for r in result["encoders"]
            ],
            left=2,
        )  # fmt: skip
        caches = md_table(
            ["cache", "first encode + fill s", "warm re-encode s (all hits)",
             "one text changed: s", "texts encoded"],
            [
                [c["cache"], f"{c['first_encode_and_fill_s']:.2f}",
                 f"{c['warm_reencode_median_s']:.3f}", f"{c['one_changed_reencode_s']:.3f}",
                 str(c["one_changed_texts_encoded"])]
                for c in result["cache"]
            ],
        )  # fmt: skip
        body += [intro, "", *encoders, "", *caches]
        if picture:
            body += ["", link("encoder", picture)]
    adapt_lines: list[str] = []
    if "adaptation" in result:
        a = result["adaptation"]
        adapt_lines = [
            "",
            "## LoRA domain adaptation, ML-100K item texts",
            "",
            f"`{a['command']}`: AdaptConfig defaults (rank {a['runs'][0]['config']['rank']}, "
            "query/value, "
            f"1 epoch, batch {a['runs'][0]['config']['batch_size']}, max_seq_length "
            f"{a['runs'][0]['config']['max_seq_length']}). Objective: the training loss (SimCSE, "
            "+ pair InfoNCE with pairs) on the first 256 texts and 256 seeded sample pairs, fixed "
            "batches and dropout seed, before and after training.",
            "",
            *md_table(
                ["objective", "texts", "pairs", "steps", "seconds", "trainable / base params",
                 "objective before", "objective after", "parts before", "parts after",
                 "1-min load before"],
                [
                    [r["objective"], str(r["texts"]), str(r["pairs"]), str(r["steps"]),
                     f"{r['seconds']:.1f}", f"{r['trainable_params']:,} / {r['base_params']:,}",
                     f"{r['eval_loss_before']:.4f}", f"{r['eval_loss_after']:.4f}",
                     _parts(r.get("eval_losses", {}).get("before", {})),
                     _parts(r.get("eval_losses", {}).get("after", {})),
                     f"{r['load_before']['load1']:.1f}"]
                    for r in a["runs"]
                ],
            ),
            "",
            f"Encoding the {a.get('encode_texts', a['runs'][0]['texts']):,} texts with the "
            "adapter on (unmerged LoRA): "
            f"{a['encode_s_adapter_on']:.2f} s, off: {a['encode_s_adapter_off']:.2f} s "
            f"({a['threads']} thread(s); load at the end {a['load_end']['load1']}).",
        ]  # fmt: skip
    notes = result.get("notes", [])
    return "\n".join([*body, *adapt_lines, *(["", *notes] if notes else [])]) + "\n"


if __name__ == "__main__":
    main()
