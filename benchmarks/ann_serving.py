"""Index retrieval with exact re-scoring (``hnsw+rescore``) against exact scoring, for
kinformer with a linear head, on a synthetic catalogue of any size.

1. Synthetic interactions: ``--items`` items in taste groups with skewed popularity,
   ``--users`` users who each rate 15-50 items of two groups, in time order; stored in a
   temporary SQLite store.
2. kinformer is fitted on them (ID view only, ``--epochs``; the linear head is not fitted
   there: its search takes long at this size) and then given a head: ``--head sparse``
   (default) itemknn's weights, each item's ``--head-k`` most cosine-similar items (a CSR
   matrix: a stand-in for the sparse EASE head, with the same sparsity and ranking role),
   ``--head dense`` the same as a dense array (small catalogues only). The head's weight makes its
   scores spread like the tower's, so that neither part alone ranks; a popularity prior and
   a new users' history prior are set as validation would (fixed values here).
3. Overlap@10: the service's lists on the ``hnsw+rescore`` path (``--candidates``
   index candidates per request) against the exact path's, in process, for ``--sample``
   trained users, as many trained users with a few new events and as many new users.
   Per-request time of both paths in process (no HTTP, no cache).
4. Under load: the service (this file, ``--serve``: the pickled model behind the usual app,
   API keys on) on each path, driven by ``benchmarks/serving.py``'s open-loop client at
   ``--rate`` requests/s for ``--seconds`` (90% recommendation GETs for random trained
   users, 10% event POSTs); p50 / p99 latency and errors.

    python benchmarks/ann_serving.py [--items 1000000] [--users 100000] [--rate 200]
        [--seconds 20] [--candidates 200] [--head sparse|dense] [--work DIR]

Writes ``benchmarks/results/ann_serving.{md,json}`` (``--results DIR`` elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as load  # benchmarks/serving.py: the load client

from kinrec.models.itemknn import cosine_topk
from kinrec.models.transfer.model import TransferRecommender

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DATASET = "ann-synthetic"
PY = sys.executable
REPORTED = ("items", "users", "epochs", "dim", "head", "head_k", "candidates", "sample", "rate",
            "seconds")  # fmt: skip


# --------------------------------------------------------------------------- data, model
def make_dataset(n_items: int, n_users: int, seed: int = 3):
    from kinrec.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    n_groups = max(8, n_items // 2000)
    group = rng.integers(0, n_groups, n_items)
    popularity = rng.pareto(1.2, n_items) + 1.0
    members = [np.flatnonzero(group == g) for g in range(n_groups)]
    weights = [popularity[m] / popularity[m].sum() for m in members]
    users, items, ratings, stamps = [], [], [], []
    for u in range(n_users):
        picked = []
        for g in rng.choice(n_groups, 2, replace=False):
            size = min(int(rng.integers(8, 25)), len(members[g]))
            picked.append(rng.choice(members[g], size=size, replace=False, p=weights[g]))
        picked = np.concatenate(picked)
        users += [f"u{u}"] * len(picked)
        items += [f"i{i}" for i in picked]
        ratings += rng.integers(1, 6, len(picked)).astype(float).tolist()
        stamps += (1e3 + u * 100 + np.arange(len(picked))).tolist()
    inter = pd.DataFrame(
        {"user_id": users, "item_id": items, "rating": ratings, "timestamp": stamps}
    )
    table = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"Item {i}" for i in range(n_items)],
            "genre": [(f"g{g}",) for g in group],
        }
    )
    return Dataset(
        name=DATASET,
        interactions=inter.astype({"user_id": object, "item_id": object}),
        items=table.astype(object),
        text_fields=["title"],
        attribute_fields=["genre"],
    )


def build_model(args, work: Path) -> tuple[TransferRecommender, dict]:
    from kinrec.data.splits import random_split
    from kinrec.store import Store

    timings = {}
    t = time.perf_counter()
    dataset = make_dataset(args.items, args.users)
    db = f"sqlite:///{work / 'ann.db'}"
    with Store(db) as store:
        store.ingest(dataset)
    timings["data_s"] = time.perf_counter() - t
    t = time.perf_counter()
    split = random_split(dataset, seed=1)
    params = {
        "use_text": False,
        "use_kg": False,
        "linear_head": False,
        "max_epochs": args.epochs,
        "dim": args.dim,
        "batch_size": 4096,
        "cold_calibration": 0.0,
    }
    model = TransferRecommender(params).fit(split.train, side=dataset)
    timings["fit_s"] = time.perf_counter() - t
    t = time.perf_counter()
    head = cosine_topk(model.seen, args.head_k)  # itemknn's weights: W[j, i] = sim(j, i)
    model.linear = head if args.head == "sparse" else head.toarray()
    users = np.arange(0, len(model.user_map), max(1, len(model.user_map) // 500))
    tower = model.user_final[users] @ model.item_final.T / model._scale
    head_scores = (model.seen[users] @ head).toarray()
    model.linear_weight = float(tower.std() / max(head_scores.std(), 1e-9))
    model.prior_weight = 0.5
    model.history_prior_strength = 5.0
    timings["head_s"] = time.perf_counter() - t
    return model, {"db": db, **timings, "head_nnz": int(head.nnz)}


# --------------------------------------------------------------------------- in process
def engine(model, db: str, work: Path, exact: bool, candidates: int, dataset: str = DATASET):
    """The service's engine on one path: ``exact`` scores every item, else HNSW candidates
    (``hnsw_threshold`` 1) scored exactly."""
    from kinrec.serving.config import ServingConfig
    from kinrec.serving.engine import Engine
    from kinrec.store import Store

    config = ServingConfig(
        model_dir=work,
        db=db,
        hnsw_threshold=1,
        scoring="exact" if exact else "auto",
        rescore_candidates=candidates,
        log_requests=False,
    )
    return Engine(model, Store(db), dataset, config)


def compare(model, setup: dict, work: Path, args) -> dict:
    """Overlap@10 of the two paths' lists, and their per-request times, in process."""
    from kinrec.store import Event

    t = time.perf_counter()
    served = engine(model, setup["db"], work, False, args.candidates)
    build_s = time.perf_counter() - t
    exact = engine(model, setup["db"], work, True, args.candidates)
    rng = np.random.default_rng(7)
    ids = model.item_map.ids()
    trained = [
        model.user_map.ids([int(u)])[0] for u in rng.choice(len(model.user_map), args.sample)
    ]
    with_events = [
        model.user_map.ids([int(u)])[0] for u in rng.choice(len(model.user_map), args.sample)
    ]
    new = [f"new-{i}" for i in range(args.sample)]
    events = []
    for n, user in enumerate(with_events + new):
        for j, item in enumerate(rng.choice(len(ids), int(rng.integers(1, 8)), replace=False)):
            events.append(Event(10**7 + 100 * n + j, user, ids[item], "like", None, 0.0, 0.0))
    for e in (served, exact):
        e.apply_events(events)
    out = {"index": served.scoring, "index_build_s": round(build_s, 2)}
    for name, group in (("trained", trained), ("trained_with_events", with_events), ("new", new)):
        overlaps, times = [], {"exact": [], "index": []}
        for user in group:
            lists = {}
            for path, e in (("exact", exact), ("index", served)):
                t = time.perf_counter()
                lists[path] = [x["item_id"] for x in e._recommend(user, 10, True, None)["items"]]
                times[path].append(time.perf_counter() - t)
            overlaps.append(len(set(lists["exact"]) & set(lists["index"])) / 10)
        out[name] = {
            "users": len(group),
            "overlap_at_10": round(float(np.mean(overlaps)), 4),
            "min_overlap_at_10": float(np.min(overlaps)),
            "exact_p50_ms": load.pct(times["exact"], 50),
            "exact_p99_ms": load.pct(times["exact"], 99),
            "index_p50_ms": load.pct(times["index"], 50),
            "index_p99_ms": load.pct(times["index"], 99),
        }
        print(name, json.dumps(out[name]), flush=True)
    served.close()
    exact.close()
    return out


# --------------------------------------------------------------------------- under load
def serve(model_path: str, db: str, port: int, exact: bool, candidates: int) -> None:
    """Sub-command: serve the pickled model on one path."""
    import uvicorn

    from kinrec.serving.app import configure_logging, create_app
    from kinrec.serving.config import ServingConfig
    from kinrec.serving.engine import Engine
    from kinrec.store import Store

    configure_logging()
    with open(model_path, "rb") as f:
        model = pickle.load(f)
    config = ServingConfig(
        model_dir=Path(model_path).parent,
        db=db,
        hnsw_threshold=1,
        scoring="exact" if exact else "auto",
        rescore_candidates=candidates,
        log_requests=False,
    )
    app = create_app(config, engine_factory=lambda: Engine(model, Store(db), DATASET, config))
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def under_load(model, setup: dict, work: Path, args) -> list[dict]:
    from kinrec.serving.keys import create_key
    from kinrec.store import Store

    model_path = work / "model.pickle"
    with open(model_path, "wb") as f:
        pickle.dump(model, f)
    with Store(setup["db"]) as store:
        key = create_key(store, f"bench-{os.getpid()}", "admin")[1]
    users = model.user_map.ids()
    items = model.item_map.ids()
    out = []
    for path in args.load_paths.split(","):
        port = load.free_port()
        cmd = [PY, __file__, "--serve", "--model-path", str(model_path), "--db", setup["db"],
               "--port", str(port), "--candidates", str(args.candidates)]  # fmt: skip
        if path == "exact":
            cmd.append("--exact")
        try:
            proc, ready_s = load.start(cmd, port, work / f"server-{path}.log", timeout=1800)
        except RuntimeError as exc:
            out.append({"path": path, "error": str(exc)})
            continue
        try:
            level = asyncio.run(
                load.load_level(port, key, users, items, args.rate, args.seconds, seed=1)
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        level.update(path=path, ready_s=round(ready_s, 1))
        print(json.dumps(level), flush=True)
        out.append(level)
    return out


def earlier_levels(args) -> list[dict]:
    """The last run's rows under load of the paths not run now, where it had the same sizes
    and load (each marked with that run's date)."""
    path = args.results / "ann_serving.json"
    if not path.exists():
        return []
    last = json.loads(path.read_text())
    same = all(last.get("args", {}).get(k) == getattr(args, k) for k in REPORTED)
    run = set(args.load_paths.split(","))
    if not same:
        return []
    return [
        {**level, "earlier_run": level.get("earlier_run") or last.get("date")}
        for level in last.get("load", [])
        if level.get("path") not in run
    ]


# --------------------------------------------------------------------------- report
def write_report(result: dict, results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "ann_serving.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    a, c = result["args"], result["compare"]
    lines = [
        f"# Index retrieval with exact re-scoring ({a['items']:,} items, {a['head']} head)",
        "",
        f"`python benchmarks/ann_serving.py --items {a['items']} --users {a['users']} "
        f"--rate {a['rate']:g} --seconds {a['seconds']:g}` on {result['machine']['cpus']} cores, "
        f"{result['date']}: kinformer on {a['users']:,} synthetic users, a {a['head']} "
        f"head of itemknn's cosine weights ({result['setup']['head_nnz']:,} entries, top "
        f"{a['head_k']} per item); `{c['index']}` with {a['candidates']} index candidates "
        "per request "
        f"(index built in {c['index_build_s']} s).",
        "",
        "## Lists and per-request time (in process, no HTTP, no cache)",
        "",
        "| users | n | overlap@10 | min | exact p50 ms | exact p99 ms | index p50 ms | "
        "index p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("trained", "trained_with_events", "new"):
        r = c[name]
        lines.append(
            f"| {name.replace('_', ' ')} | {r['users']} | {r['overlap_at_10']:.3f} | "
            f"{r['min_overlap_at_10']:.1f} | {r['exact_p50_ms']:.2f} | {r['exact_p99_ms']:.2f} | "
            f"{r['index_p50_ms']:.2f} | {r['index_p99_ms']:.2f} |"
        )
    lines += [
        "",
        f"## Under load ({a['rate']:g} requests/s for {a['seconds']:g} s, 90% GET, 10% POST)",
        "",
        "| path | achieved req/s | errors | p50 ms | p99 ms | GET p99 ms | p99 from schedule |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["load"]:
        if "error" in r:
            lines.append(f"| {r['path']} | {r['error']} | | | | | |")
            continue
        earlier = f" (run of {r['earlier_run']})" if r.get("earlier_run") else ""
        lines.append(
            f"| {r['path']}{earlier} | {r['achieved_rps']} | {r['errors']} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['get_p99_ms']:.2f} | {r['p99_from_schedule_ms']:.2f} |"
        )
    from _plots import link, plot_ann_serving

    lines += ["", link("ann-serving", "ann_serving.png"), ""]
    (results / "ann_serving.md").write_text("\n".join(lines))
    print("\n".join(lines))
    plot_ann_serving(result, results / "ann_serving.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--head", choices=("sparse", "dense"), default="sparse")
    parser.add_argument("--head-k", type=int, default=100, help="head entries per item")
    parser.add_argument("--candidates", type=int, default=200, help="rescore_candidates")
    parser.add_argument("--sample", type=int, default=200, help="users per group compared")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s under load")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--load-paths",
        default="exact,index",
        help="paths driven under load; a path left out keeps its row from the last run "
        "with the same sizes, marked with its date (the exact path at a million items "
        "cannot keep up with 200 req/s and takes minutes to drain)",
    )
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--exact", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.model_path, args.db, args.port, args.exact, args.candidates)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="kinrec-ann-"))
    work.mkdir(parents=True, exist_ok=True)
    model, setup = build_model(args, work)
    print("setup", json.dumps(setup), flush=True)
    compared = compare(model, setup, work, args)
    levels = under_load(model, setup, work, args) + earlier_levels(args)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "args": {k: v for k, v in vars(args).items() if k in REPORTED},
        "setup": {k: v for k, v in setup.items() if k != "db"},
        "compare": compared,
        "load": levels,
    }
    write_report(result, args.results)


if __name__ == "__main__":
    main()
