"""Knowledge graph: build time, stats, query latencies and TransE/RotatE link prediction.

Builds the graph of ml-100k (RecBole atomic .item/.kg/.link) and ml-1m (movies.dat genres +
kg.txt + item_index2entity_id.txt) with the kinrec loaders, times neighbour and path queries on
random items, and trains TransE and RotatE on a 95/5 split of the triples (filtered MRR and
Hits@10 against the exact expectation of a random ranking). Prints tables and writes
benchmarks/results/kg.{md,json}.

    python benchmarks/kg.py                          # both graphs, KGE on ml-100k
    python benchmarks/kg.py --kge ml-100k,ml-1m --epochs 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from kinrec.data.dataset import Dataset
from kinrec.data.loaders import load_movielens_1m, load_recbole_atomic
from kinrec.knowledge.graph import KnowledgeGraph, build_graph
from kinrec.knowledge.kge import KGEConfig, KGEmbedding, split_triples
from kinrec.store import Store

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("KINREC_DATA_DIR", ROOT.parent / "shared" / "datasets"))
LOADERS: dict[str, Callable[[], Dataset]] = {
    "ml-100k": lambda: load_recbole_atomic(DATA / "ml-100k"),
    "ml-1m": lambda: load_movielens_1m(DATA / "ml-1m"),
}
# (item a, item b) pairs whose explanation paths are printed: sequels in both datasets.
EXAMPLES = {"ml-100k": [("172", "181"), ("1", "71")], "ml-1m": [("1", "3114"), ("260", "1196")]}


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """Result of the last call and the median wall time over ``repeat`` calls."""
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def latency_ms(calls: list[Callable[[], Any]]) -> dict[str, float]:
    """Median and 95th percentile (ms) over the calls, and the mean result size."""
    times, sizes = [], []
    for call in calls:
        start = time.perf_counter()
        out = call()
        times.append((time.perf_counter() - start) * 1000)
        sizes.append(len(out))
    return {
        "median_ms": round(float(np.median(times)), 3),
        "p95_ms": round(float(np.percentile(times, 95)), 3),
        "mean_results": round(float(np.mean(sizes)), 1),
    }


def graph_report(name: str, n_queries: int, seed: int) -> tuple[KnowledgeGraph, dict[str, Any]]:
    dataset, load_s = timed(LOADERS[name])
    graph, build_s = timed(lambda: build_graph(dataset), repeat=3)
    rng = np.random.default_rng(seed)
    items = graph.item_ids
    picks = [items[i] for i in rng.integers(0, len(items), n_queries)]
    pairs = [tuple(items[i] for i in rng.choice(len(items), 2, replace=False)) for _ in picks]
    nodes = [graph.item_node(i) for i in picks]
    queries = {
        "neighbors hops=1": latency_ms([lambda n=n: graph.neighbors(n) for n in nodes]),
        "neighbors hops=2": latency_ms([lambda n=n: graph.neighbors(n, hops=2) for n in nodes]),
        "neighbors hops=2 limit=50": latency_ms(
            [lambda n=n: graph.neighbors(n, hops=2, limit=50) for n in nodes]
        ),
        "paths max_len=3 limit=10": latency_ms(
            [lambda a=a, b=b: graph.paths(a, b, max_len=3, limit=10) for a, b in pairs]
        ),
    }
    relations = [r for r in graph.relations.ids() if "actor" in r or "star" in r]
    if relations:
        queries[f"paths via {relations[0]} (random pairs: mostly none)"] = latency_ms(
            [lambda a=a, b=b: graph.paths(a, b, relations=relations[:1]) for a, b in pairs]
        )
    sim, sim_s = timed(graph.item_similarity_shared_neighbors)
    with tempfile.TemporaryDirectory() as tmp, Store(f"sqlite:///{tmp}/kg.db") as store:
        _, save_s = timed(lambda: graph.save_to_store(store, name))
        loaded, load_store_s = timed(lambda: KnowledgeGraph.load_from_store(store, name))
        assert loaded.stats() == graph.stats()
    examples = {
        f"{a}->{b}": [" ".join(f"-{r}-> {y}" for _, r, y in p) for p in graph.paths(a, b, limit=3)]
        for a, b in EXAMPLES.get(name, [])
        if graph.item_node(a) in graph.entities and graph.item_node(b) in graph.entities
    }
    return graph, {
        "dataset": name,
        "load_s": round(load_s, 3),
        "build_s": round(build_s, 3),
        "stats": graph.stats(),
        "queries": queries,
        "similarity_s": round(sim_s, 3),
        "similarity_nnz": int(sim.nnz),
        "store_save_s": round(save_s, 3),
        "store_load_s": round(load_store_s, 3),
        "example_paths": examples,
    }


def kge_report(
    graph: KnowledgeGraph, model: str, epochs: int, max_eval: int, console: Console
) -> dict[str, Any]:
    train, test = split_triples(graph.triples, fraction=0.05, seed=2026)
    config = KGEConfig(model=model, epochs=epochs)
    start = time.perf_counter()

    def progress(phase: str, step: int, total: int, values: dict[str, float]) -> None:
        elapsed = time.perf_counter() - start
        console.print(f"  {model} epoch {step}/{total} loss {values['loss']:.4f} ({elapsed:.0f}s)")

    kge = KGEmbedding(config).fit(graph, train, progress=progress)
    result, eval_s = timed(lambda: kge.evaluate(test, graph.triples, max_triples=max_eval))
    return {
        "dataset": graph.name,
        "model": model,
        "config": config.model_dump(),
        "train_triples": len(train),
        "test_triples": len(test),
        "evaluated_triples": min(len(test), max_eval),
        "train_s": round(kge.fit_info["train_seconds"], 1),
        "eval_s": round(eval_s, 1),
        "losses": [round(x, 4) for x in kge.fit_info["losses"]],
        **{k: round(v, 5) if isinstance(v, float) else v for k, v in result.items()},
    }


def emit(
    console: Console, title: str, headers: list[str], rows: list[list[str]], left: int = 1
) -> list[str]:
    """Print a rich table; return the same rows as Markdown lines (first ``left`` columns
    left-aligned)."""
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i < left else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml-100k,ml-1m")
    parser.add_argument("--kge", default="ml-100k", help="datasets to train TransE/RotatE on")
    parser.add_argument("--models", default="transe,rotate")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-eval", type=int, default=1000, help="test triples evaluated")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=160)
    graphs, reports, kge = {}, [], []
    for name in args.datasets.split(","):
        console.print(f"[bold]{name}[/]: load, build, query ...")
        graphs[name], report = graph_report(name, args.queries, args.seed)
        reports.append(report)
    for name in [n for n in args.kge.split(",") if n]:
        graph = graphs.get(name) or build_graph(LOADERS[name]())
        for model in args.models.split(","):
            console.print(f"[bold]{name}[/]: {model}, {args.epochs} epochs ...")
            kge.append(kge_report(graph, model, args.epochs, args.max_eval, console))

    md = [
        "# Knowledge graph",
        "",
        f"Command: `python benchmarks/kg.py --datasets {args.datasets} --kge {args.kge} "
        f"--epochs {args.epochs} --max-eval {args.max_eval} --threads {args.threads}`. "
        f"Machine: {os.cpu_count()} cores shared with other jobs (load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}), torch {torch.__version__} on "
        f"{args.threads} thread(s), Python {platform.python_version()}. Build time: median of "
        "3 builds, loading excluded. Query latencies over random items / item pairs.",
        "",
    ]
    graph_rows = [
        [
            r["dataset"],
            f"{r['stats']['entities']:,}",
            f"{r['stats']['items']:,} ({r['stats']['items_linked']:,})",
            str(r["stats"]["relations"]),
            f"{r['stats']['triples']:,}",
            f"{r['stats']['degree']['mean']:.2f}",
            f"{r['stats']['degree']['max']:,}",
            f"{r['load_s']:.2f}",
            f"{r['build_s']:.3f}",
            f"{r['similarity_s']:.3f}",
            f"{r['store_save_s']:.2f}",
            f"{r['store_load_s']:.2f}",
        ]
        for r in reports
    ]
    md += emit(
        console,
        "Knowledge graphs",
        ["dataset", "entities", "items (linked)", "relations", "triples", "mean degree",
         "max degree", "load s", "build s", "similarity s", "store save s", "store load s"],
        graph_rows,
    )  # fmt: skip
    query_rows = [
        [r["dataset"], q, f"{v['median_ms']:.3f}", f"{v['p95_ms']:.3f}", f"{v['mean_results']:.1f}"]
        for r in reports
        for q, v in r["queries"].items()
    ]
    md += ["", "## Query latency", ""]
    md += emit(
        console,
        "Query latency (ms)",
        ["dataset", "query", "median ms", "p95 ms", "mean results"],
        query_rows,
        left=2,
    )
    if kge:
        md += ["", "## TransE / RotatE link prediction", "",
               "Filtered ranking of the true tail and head among all entities (ties count half); "
               "random = exact expectation of a uniformly random ranking over the same "
               "candidates. Train triples exclude the mirror (t, *, h) of every test triple.",
               ""]  # fmt: skip
        kge_rows = [
            [
                k["dataset"],
                k["model"],
                str(k["config"]["epochs"]),
                f"{k['train_s']:.0f}",
                f"{k['mrr']:.4f}",
                f"{k['hits@10']:.4f}",
                f"{k['hits@1']:.4f}",
                f"{k['random_mrr']:.5f}",
                f"{k['random_hits@10']:.5f}",
                str(k["queries"]),
            ]
            for k in kge
        ]
        md += emit(
            console,
            "Link prediction on held-out 5% of triples (filtered, both sides)",
            ["dataset", "model", "epochs", "train s", "MRR", "Hits@10", "Hits@1", "random MRR",
             "random Hits@10", "queries"],
            kge_rows,
            left=2,
        )  # fmt: skip
    md += ["", "## Example explanation paths", ""]
    for r in reports:
        for pair, paths in r["example_paths"].items():
            md.append(f"* {r['dataset']} item {pair}: " + "; ".join(f"`{p}`" for p in paths))
    from _plots import link, plot_kg

    md += ["", link("kg", "kg.png")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kg.md").write_text("\n".join(md) + "\n")
    (RESULTS / "kg.json").write_text(json.dumps({"graphs": reports, "kge": kge}, indent=1))
    plot_kg({"graphs": reports, "kge": kge}, RESULTS / "kg.png")
    console.print(f"wrote {RESULTS}/kg.md and kg.json")


if __name__ == "__main__":
    main()
