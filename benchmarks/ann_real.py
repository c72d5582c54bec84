"""Index retrieval with exact re-scoring (``hnsw+rescore``) against exact scoring, on a
trained model and its own split: the accuracy the service's lists reach on each path.

The service (the ``Engine`` of ``kinrec serve``) is opened twice on the model directory:
``scoring = "exact"`` (every item scored) and ``hnsw_threshold = 1`` (HNSW candidates of
the model's tower and head, scored exactly: the path a catalogue above the threshold takes).
For every test user, each path's list of the top items (train items excluded by the
service, validation items filtered out afterwards, as the offline evaluation masks both) is
scored against the test items: NDCG@10 and Recall@20 with the offline formulas, their
overlap@10, and the time per request (in process, no HTTP, no cache).

    python benchmarks/ann_real.py --model-dir runs/ml-1m-kinformer \\
        --split-dir ../shared/benchmarks/ml-1m [--candidates 200]

Writes ``benchmarks/results/ann-<split>.{md,json}``. Train the model first, e.g.
``kinrec train --model kinformer --split-dir ../shared/benchmarks/ml-1m --out DIR``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import write_results
from ann_serving import engine as open_engine

from kinrec.evaluation.metrics import summarize
from kinrec.pipeline import load_split_folder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KS = (10, 20)


def served_lists(engine, users: list[str], masked: dict[str, set], k: int):
    """Each user's top ``k`` on ``engine`` without the ``masked`` items, and the times."""
    lists, times = {}, []
    for user in users:
        extra = len(masked.get(user, ()))
        start = time.perf_counter()
        items = engine._recommend(user, k + extra, True, None)["items"]
        times.append(time.perf_counter() - start)
        ids = [x["item_id"] for x in items if x["item_id"] not in masked.get(user, ())]
        lists[user] = ids[:k]
    return lists, np.array(times)


def metrics(lists: dict[str, list[str]], truth: dict[str, set]) -> dict[str, float]:
    users = list(truth)
    hits = np.array([[i in truth[u] for i in (lists[u] + [None] * max(KS))[: max(KS)]]
                     for u in users])  # fmt: skip
    n_rel = np.array([len(truth[u]) for u in users])
    result = summarize(hits, n_rel, KS)
    return {"ndcg@10": result["ndcg@10"], "recall@20": result["recall@20"]}


def _command() -> str:
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return "python " + shlex.join([str(shown), *sys.argv[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--split-dir", type=Path, required=True)
    parser.add_argument("--candidates", type=int, default=200, help="rescore_candidates")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    from kinrec.models.base import Recommender

    split = load_split_folder(args.split_dir)
    model = Recommender.load(args.model_dir)
    if not model.supports_retrieval:
        raise SystemExit(f"{model.name} scores are one dot product: its index path is exact")
    users_ids, items_ids = split.test.user_map.ids(), split.test.item_map.ids()
    truth: dict[str, set] = {}
    for u, i in zip(split.test.users.tolist(), split.test.items.tolist(), strict=True):
        truth.setdefault(users_ids[u], set()).add(items_ids[i])
    masked: dict[str, set] = {}
    valid_users, valid_items = split.valid.user_map.ids(), split.valid.item_map.ids()
    for u, i in zip(split.valid.users.tolist(), split.valid.items.tolist(), strict=True):
        masked.setdefault(valid_users[u], set()).add(valid_items[i])
    users = sorted(truth)
    with tempfile.TemporaryDirectory(prefix="kinrec-ann-real-") as tmp:
        from kinrec.store import Store

        db = f"sqlite:///{Path(tmp) / 'serve.db'}"
        with Store(db) as store:  # the catalogue the service reads
            store.ingest(split.dataset)
        dataset = split.dataset.name
        start = time.perf_counter()
        index = open_engine(model, db, Path(tmp), False, args.candidates, dataset)
        build_s = time.perf_counter() - start
        exact = open_engine(model, db, Path(tmp), True, args.candidates, dataset)
        paths = {}
        for name, engine in (("exact", exact), ("index", index)):
            lists, times = served_lists(engine, users, masked, max(KS))
            paths[name] = {
                "scoring": engine.scoring,
                **{k: round(v, 6) for k, v in metrics(lists, truth).items()},
                "p50_ms": round(float(np.percentile(times, 50)) * 1000, 3),
                "p99_ms": round(float(np.percentile(times, 99)) * 1000, 3),
                "lists": lists,
            }
        index.close()
        exact.close()
    overlap = [
        len(set(paths["exact"]["lists"][u][:10]) & set(paths["index"]["lists"][u][:10])) / 10
        for u in users
    ]
    for path in paths.values():
        path.pop("lists")
    result = {
        "command": _command(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": model.name,
        "items": len(model.item_map),
        "test_users": len(users),
        "candidates": args.candidates,
        "index_build_s": round(build_s, 2),
        "overlap_at_10": round(float(np.mean(overlap)), 4),
        "min_overlap_at_10": float(np.min(overlap)),
        "paths": paths,
    }
    name = args.split_dir.resolve().name
    lines = [
        f"# Index retrieval against exact scoring on {name} ({model.name})",
        "",
        f"`{result['command']}` on {os.cpu_count()} cores, {result['date']}: "
        f"{result['items']:,} items, every test user ({len(users):,}); the index path takes "
        f"{args.candidates} HNSW candidates per request (plus the head's and the user's), "
        f"scored exactly (engine start with the index: {build_s:.1f} s).",
        "",
        "| path | scoring | NDCG@10 | Recall@20 | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, path in paths.items():
        lines.append(
            f"| {label} | `{path['scoring']}` | {path['ndcg@10']:.4f} | {path['recall@20']:.4f} "
            f"| {path['p50_ms']:.2f} | {path['p99_ms']:.2f} |"
        )
    lines += [
        "",
        f"Overlap@10 of the two paths' lists: {result['overlap_at_10']:.4f} (lowest for one "
        f"user: {result['min_overlap_at_10']:.1f}).",
        "",
    ]
    write_results(args.results / f"ann-{name}", "\n".join(lines), result)


if __name__ == "__main__":
    main()
