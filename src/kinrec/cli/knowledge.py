"""Knowledge commands: ``kinrec encode``, ``kinrec adapt`` and ``kinrec kg ...``.

All of them read the dataset from the store (``kinrec ingest`` first) and write derived data
back into it (embedding cache, knowledge graph) or next to it (adapter, KG embeddings).
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from kinrec.cli.batch import WorkersOption
from kinrec.cli.common import DbOption, EpochProgress, RayOption, err, errors_as_messages, out

kg_app = typer.Typer(
    help="Knowledge graph: build it from item attributes + imported triples, query, embed.",
    no_args_is_help=True,
)

DatasetArg = Annotated[str, typer.Option("--dataset", "-d", help="Stored dataset name.")]


def _dataset(db: str, name: str):
    from kinrec.store import Store

    store = Store(db)
    if name not in store.dataset_names():
        raise LookupError(f"dataset {name!r} is not in {db}; run `kinrec ingest {name}` first")
    return store, store.load_dataset(name)


def _graph(db: str, name: str):
    from kinrec.knowledge.graph import KnowledgeGraph, graph_store_name
    from kinrec.store import Store

    store = Store(db)
    if graph_store_name(name) not in store.dataset_names():
        raise LookupError(f"no knowledge graph for {name!r} in {db}; run `kinrec kg build` first")
    return KnowledgeGraph.load_from_store(store, name)


def _stats_table(title: str, stats: dict) -> Table:
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    return table


# --------------------------------------------------------------------------- encode / adapt
def encode(
    dataset: DatasetArg = "ml-100k",
    db: DbOption = "sqlite:///kinrec.db",
    template: Annotated[
        str | None, typer.Option(help="Item text template, e.g. '{title} ({year}). {genres}'.")
    ] = None,
    adapter: Annotated[
        Path | None, typer.Option(exists=True, file_okay=False, help="LoRA adapter folder.")
    ] = None,
    model_path: Annotated[
        Path | None, typer.Option(exists=True, file_okay=False, help="Sentence-transformers dir.")
    ] = None,
    show: Annotated[int, typer.Option(help="Print this many rendered item texts.")] = 3,
    ray: RayOption = None,
    workers: WorkersOption = None,
) -> None:
    """Embed every item's text with the language model, cached in the store by text hash.

    Unchanged items cost nothing on a second run; a changed item is re-encoded alone.
    With --ray, the texts not in the cache are encoded by Ray Data actors (one per node, or
    per GPU), and this process writes their vectors into the cache.
    """
    from kinrec.distributed.cluster import connect, resolve_address
    from kinrec.knowledge.encoder import EncoderConfig, StoreEmbeddingCache, TextEncoder
    from kinrec.knowledge.text import render_item_texts

    address = resolve_address(ray)
    with errors_as_messages():
        _, ds = _dataset(db, dataset)
        pairs = render_item_texts(ds, template)
        options = {"progress": True}
        if model_path is not None:
            options["model_path"] = model_path
        if adapter is not None:
            options["adapter_path"] = adapter
        cache = StoreEmbeddingCache(db)
        if address is None:
            encoder = TextEncoder(EncoderConfig(**options), cache=cache)
        else:
            from kinrec.distributed.encode import RayTextEncoder

            encoder = RayTextEncoder(
                connect(address),
                EncoderConfig(**options),
                cache=cache,
                workers=workers,
                explicit_model=model_path is not None,
            )
        start = time.perf_counter()
        vectors = encoder.encode([t for _, t in pairs])
        seconds = time.perf_counter() - start
    for item_id, text in pairs[:show]:
        err.print(f"[dim]{item_id}[/]: {text}")
    s = encoder.stats
    out.print(
        _stats_table(
            f"encode {dataset}",
            {
                "items": len(pairs),
                "dimension": vectors.shape[1] if len(pairs) else 0,
                "encoded now": s.encoded,
                "cache hits": s.cache_hits,
                "seconds": round(seconds, 2),
                "items/s (encoded)": round(s.encoded / s.seconds, 1) if s.seconds else "-",
                "model": encoder.model_id,
                "adapter": encoder.adapter_id or "-",
                **(
                    {"ray workers (nodes used)": f"{encoder.plan.workers} ({len(encoder.nodes)})"}
                    if address is not None
                    else {}
                ),
            },
        )
    )


class PairSource(StrEnum):
    kg = "kg"
    interactions = "interactions"
    none = "none"


class Method(StrEnum):
    lora = "lora"
    full = "full"


def adapt(
    dataset: DatasetArg = "ml-100k",
    db: DbOption = "sqlite:///kinrec.db",
    split_dir: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Read items (and, for --pairs interactions, the TRAIN interactions) from a "
            "split folder (NAME.train.inter, NAME.item, ...) instead of the store. Valid and "
            "test rows are never read.",
        ),
    ] = None,
    pairs: Annotated[
        PairSource,
        typer.Option(
            help="Positive pairs next to SimCSE. kg: items sharing a rare knowledge-graph "
            "neighbour (director, brand, ...); interactions: supervised two-tower pairs, two "
            "items of one user in the train part of --split-dir (required); none: SimCSE only.",
        ),
    ] = PairSource.kg,
    kg_pairs: Annotated[
        bool, typer.Option(help="--no-kg-pairs: same as --pairs none (when --pairs is kg).")
    ] = True,
    method: Annotated[
        Method,
        typer.Option(
            help="lora: train a LoRA adapter, base frozen (use as adapter_path); full: train "
            "all encoder weights and write a whole model folder (use as encoder_path).",
        ),
    ] = Method.lora,
    simcse_weight: Annotated[
        float, typer.Option(min=0.0, help="Weight of SimCSE; 0 = pure pair (two-tower) loss.")
    ] = 1.0,
    max_pairs: Annotated[int, typer.Option(min=1, help="Most pairs sampled.")] = 20000,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output folder (default: runs/adapter for lora, runs/encoder-full for full).",
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    max_steps: Annotated[int | None, typer.Option(min=1)] = None,
    time_budget: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    batch_size: Annotated[int, typer.Option(min=2, help="Texts or pairs per step.")] = 32,
    learning_rate: Annotated[
        float | None, typer.Option(help="Default: 5e-4 for lora, 2e-5 for full.")
    ] = None,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 8,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch threads (default: the idle CPUs, at most 2).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of pair sampling, batches and dropout.")] = 0,
) -> None:
    """Adapt the text encoder to the catalogue: LoRA adapter (default) or full fine-tuning.

    Objective: SimCSE (two dropout views of each item text, weight --simcse-weight) plus
    positive pairs (--pairs): items sharing a specific knowledge-graph neighbour, or, with
    --pairs interactions --split-dir DIR, two items one user had in the split's train part
    (two-tower: query and candidate share the encoder; in-batch negatives, repeated items
    masked). Examples:

      kinrec adapt -d ml-100k                              # SimCSE + KG pairs, LoRA

      kinrec adapt --split-dir DIR --pairs interactions --simcse-weight 0 -o runs/two-tower

      kinrec adapt --split-dir DIR --pairs interactions --method full -o runs/encoder-full
    """
    from kinrec.knowledge.adapt import AdaptConfig, interaction_pairs
    from kinrec.knowledge.adapt import adapt as run_adapt
    from kinrec.knowledge.encoder import bundled_model_path
    from kinrec.knowledge.features import item_texts
    from kinrec.knowledge.text import render_item_texts

    source = pairs.value if (pairs != PairSource.kg or kg_pairs) else "none"
    if out_dir is None:
        out_dir = Path("runs/adapter" if method == Method.lora else "runs/encoder-full")
    with errors_as_messages():
        if source == "interactions" and split_dir is None:
            raise ValueError(
                "--pairs interactions needs --split-dir: pairs come from a split's train part "
                "only (the store's dataset has no split, so its test rows would leak in)"
            )
        if split_dir is not None:
            from kinrec.pipeline import load_split_folder

            split = load_split_folder(split_dir)
            if split.dataset is None:
                raise ValueError(f"{split_dir} has no item file, so no item texts")
            ds, item_ids = split.dataset, split.train.item_map.ids()
            texts = item_texts(ds, item_ids)
        else:
            _, ds = _dataset(db, dataset)
            rendered = render_item_texts(ds)
            item_ids, texts = [i for i, _ in rendered], [t for _, t in rendered]
        chosen = None
        if source == "kg":
            chosen = kg_positive_pairs(ds, item_ids, max_pairs=max_pairs, seed=seed)
        elif source == "interactions":
            chosen = interaction_pairs(split.train, max_pairs=max_pairs, seed=seed)
        options: dict[str, object] = {}
        if learning_rate is not None:
            options["learning_rate"] = learning_rate
        cfg = AdaptConfig(
            method=method.value,
            simcse_weight=simcse_weight,
            epochs=epochs,
            max_steps=max_steps,
            time_budget_s=time_budget,
            batch_size=batch_size,
            rank=rank,
            seed=seed,
            num_threads=threads if threads is not None else "auto",
            progress=True,
            **options,
        )
        info = run_adapt(bundled_model_path(), texts, cfg, out_dir, pairs=chosen)
    before, after = info.eval_losses["before"], info.eval_losses["after"]
    rows: dict[str, object] = {
        "method": info.method,
        "texts": info.n_texts,
        f"pairs ({source})": info.n_pairs,
        "steps": info.steps,
        "trainable params": info.trainable_params,
        "frozen params": info.frozen_params,
    }
    for part in ("simcse", "pairs", "total"):
        if part in before:
            rows[f"{part} loss before -> after"] = f"{before[part]:.4f} -> {after[part]:.4f}"
    rows["seconds"] = round(info.seconds, 1)
    key = "adapter_path" if info.method == "lora" else "encoder_path"
    out.print(_stats_table(f"{info.method} -> {info.path}", rows))
    err.print(f'use it: [models.lm-knn] {key} = "{info.path}"')


def kg_positive_pairs(
    ds, item_ids: list[str], max_items: int = 20, max_pairs: int = 20000, seed: int = 0
) -> list[tuple[int, int]]:
    """Index pairs of items sharing a specific KG neighbour (one touching <= max_items items)."""
    from kinrec.knowledge.graph import build_graph

    graph = build_graph(ds)
    incidence = graph.item_entity_matrix().tocsc()
    position = {i: k for k, i in enumerate(item_ids)}
    graph_items = graph.item_ids
    rng = np.random.default_rng(seed)
    pairs: set[tuple[int, int]] = set()
    for col in range(incidence.shape[1]):
        rows = incidence.indices[incidence.indptr[col] : incidence.indptr[col + 1]]
        if not 2 <= len(rows) <= max_items:
            continue
        members = [position[graph_items[r]] for r in rows if graph_items[r] in position]
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                pairs.add((members[a], members[b]))
    ordered = sorted(pairs)
    if len(ordered) > max_pairs:
        ordered = [ordered[k] for k in np.sort(rng.choice(len(ordered), max_pairs, replace=False))]
    return ordered


# --------------------------------------------------------------------------- kg
@kg_app.command("build")
def kg_build(dataset: DatasetArg = "ml-100k", db: DbOption = "sqlite:///kinrec.db") -> None:
    """Build the graph (item attributes + imported triples) and store it beside the dataset."""
    from kinrec.knowledge.graph import build_graph

    with errors_as_messages():
        store, ds = _dataset(db, dataset)
        start = time.perf_counter()
        graph = build_graph(ds)
        built = time.perf_counter() - start
        graph.save_to_store(store, dataset)
        stored = time.perf_counter() - start - built
    stats = graph.stats()
    stats = {k: v for k, v in stats.items() if not isinstance(v, dict) or k == "degree"}
    out.print(_stats_table(f"knowledge graph of {dataset}", stats))
    err.print(f"built in {built:.2f} s, stored in {stored:.2f} s")


@kg_app.command("stats")
def kg_stats(dataset: DatasetArg = "ml-100k", db: DbOption = "sqlite:///kinrec.db") -> None:
    """Counts, per-relation triples and degree statistics of the stored graph."""
    with errors_as_messages():
        graph = _graph(db, dataset)
    out.print(_stats_table(f"knowledge graph of {dataset}", graph.stats()))


@kg_app.command("neighbors")
def kg_neighbors(
    node: Annotated[str, typer.Argument(help="Entity id, or item:<item_id> for an item.")],
    dataset: DatasetArg = "ml-100k",
    db: DbOption = "sqlite:///kinrec.db",
    hops: Annotated[int, typer.Option(min=1, max=4)] = 1,
    relation: Annotated[
        list[str] | None, typer.Option("--relation", "-r", help="Follow only these relations.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1)] = 25,
) -> None:
    """Nodes within k hops of an item or entity, optionally along given relations only."""
    with errors_as_messages():
        graph = _graph(db, dataset)
        found = graph.neighbors(node, hops=hops, relations=relation or None, limit=limit)
    table = Table(title=f"neighbours of {node} ({hops} hop(s))")
    for col in ("node", "hop", "relation", "via"):
        table.add_column(col)
    for n in found:
        table.add_row(n.node, str(n.hop), n.relation, n.via)
    out.print(table)


@kg_app.command("path")
def kg_path(
    item_a: Annotated[str, typer.Argument(help="Item id.")],
    item_b: Annotated[str, typer.Argument(help="Item id.")],
    dataset: DatasetArg = "ml-100k",
    db: DbOption = "sqlite:///kinrec.db",
    max_len: Annotated[int, typer.Option(min=1, max=3)] = 3,
    limit: Annotated[int, typer.Option(min=1)] = 5,
) -> None:
    """Shortest relation paths between two items (what later explains a recommendation)."""
    with errors_as_messages():
        graph = _graph(db, dataset)
        paths = graph.paths(item_a, item_b, max_len=max_len, limit=limit)
    if not paths:
        out.print(f"no path of length <= {max_len} between {item_a} and {item_b}")
    for path in paths:
        out.print(escape("  ".join(f"{a} -[{r}]-> {b}" for a, r, b in path)))


@kg_app.command("embed")
def kg_embed(
    dataset: DatasetArg = "ml-100k",
    db: DbOption = "sqlite:///kinrec.db",
    model: Annotated[str, typer.Option(help="transe | rotate")] = "rotate",
    dim: Annotated[int, typer.Option(min=2)] = 64,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/kge"),
    max_eval: Annotated[int, typer.Option(help="Held-out triples evaluated (sample).")] = 2000,
) -> None:
    """Train TransE/RotatE on 95% of the triples; filtered MRR/Hits@10 on the held-out 5%."""

    from kinrec.knowledge.kge import KGEConfig, KGEmbedding, split_triples

    with errors_as_messages():
        graph = _graph(db, dataset)
        train, test = split_triples(graph.triples)
        kge = KGEmbedding(KGEConfig(model=model, dim=dim, epochs=epochs))
        start = time.perf_counter()
        with EpochProgress() as progress:
            kge.fit(graph, train, progress=progress)
        seconds = time.perf_counter() - start
        metrics = kge.evaluate(test, graph.triples, max_triples=max_eval)
        kge.save(out_dir)
    out.print(
        _stats_table(
            f"{model} on {dataset} ({len(train)} train / {len(test)} held-out triples)",
            {**{k: round(v, 4) for k, v in metrics.items()}, "train seconds": round(seconds, 1)},
        )
    )
