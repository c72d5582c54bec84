"""New users: how well each model ranks for a user it never trained on, from n of their events.

A seeded share of the split's users is held out: none of their rows is trained on (train or
validation). Each model is fitted on the other users (early stopping on their validation
rows), then every held-out user is scored through the model's fold-in (``score_history``,
what the service does for a new user) from n of their interactions; the targets are all
their other interactions, with the n history items masked. The n events are taken in two
orders: ``time`` (their first n by timestamp, what a service sees of a new user; file order
when the split has no timestamps) and ``random`` (n drawn at random, seeded). Popularity is
the floor every recommender falls back to without history. A model whose fit chose a
popularity prior for short histories on validation (``history_prior``, chosen on the kept
users only) is shown twice: raw fold-in, and ``+ prior (c=...)``, what the service serves;
a model whose fit also chose to lift the history's items' knowledge-graph neighbours
(``profile_graph_lift`` > 0) a third time, ``+ graph (b=...)``, then what the service
serves.
The same held-out users, histories and targets for every model, in one run. Prints a table
and writes benchmarks/results/new-users-<split>.{md,json}.

    python benchmarks/new_users.py [--split ml-100k] [--models pop,ease,multvae,kinformer]
        [--histories 1,3,5,10,20] [--held-out 0.2] [--seed 2026]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KINREC_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "benchmarks" / "results"


def hold_out(split, share: float, seed: int, min_rows: int):
    """(held-out user indices, the split's parts without their rows, all their rows)."""
    from kinrec.data.dataset import Interactions, Split

    train, valid, test = split.train, split.valid, split.test
    counts = np.bincount(train.users, minlength=train.n_users)
    eligible = np.flatnonzero(counts >= min_rows)
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(eligible, size=round(share * len(eligible)), replace=False))
    is_held = np.zeros(train.n_users, dtype=bool)
    is_held[held] = True
    kept = Split(
        train.subset(~is_held[train.users]),
        valid.subset(~is_held[valid.users]),
        test.subset(~is_held[test.users]),
        split.dataset,
    )
    parts = [p.subset(is_held[p.users]) for p in (train, valid, test)]
    stamps = [p.timestamps if p.timestamps is not None else np.zeros(len(p)) for p in parts]
    ratings = [p.ratings if p.ratings is not None else np.full(len(p), np.nan) for p in parts]
    rows = Interactions(
        np.concatenate([p.users for p in parts]),
        np.concatenate([p.items for p in parts]),
        train.user_map,
        train.item_map,
        np.concatenate(ratings),
        np.concatenate(stamps),
    )
    return held, kept, rows


def first_events(rows, held: np.ndarray, n: int, key: np.ndarray) -> np.ndarray:
    """Mask of each held-out user's first ``n`` rows by ``key`` (ties: row order)."""
    order = np.lexsort((np.arange(len(rows)), key, rows.users))
    users = rows.users[order]
    starts = np.searchsorted(users, held)
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.append(starts, len(order))))
    first = np.zeros(len(rows), dtype=bool)
    first[order[rank < n]] = True
    return first


def main() -> None:
    from kinrec.evaluation.benchmark import fit_with_validation
    from kinrec.evaluation.protocol import evaluate_scores
    from kinrec.models.registry import create_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="ml-100k")
    parser.add_argument("--models", default="pop,ease,multvae,kinformer")
    parser.add_argument("--histories", default="1,3,5,10,20")
    parser.add_argument("--held-out", type=float, default=0.2, help="share of users held out")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the tables go")
    parser.add_argument("--stem", default=None, help="file name (default new-users-SPLIT)")
    args = parser.parse_args()
    from kinrec.data.loaders import load_split_dir

    histories = [int(n) for n in args.histories.split(",")]
    split = load_split_dir(SHARED / "benchmarks" / args.split)
    held, kept, rows = hold_out(split, args.held_out, args.seed, min_rows=max(histories) + 5)
    console = Console(width=160)
    console.print(
        f"{args.split}: {len(held)} of {split.train.n_users} users held out "
        f"({len(rows)} rows); models train on the other {len(kept.train)} train rows"
    )
    keys = {"time": rows.timestamps, "random": np.random.default_rng(args.seed).random(len(rows))}
    firsts = {(o, n): first_events(rows, held, n, k) for o, k in keys.items() for n in histories}
    results: dict[str, dict] = {}
    for name in args.models.split(","):
        model = create_model(name, {"seed": args.seed})
        start = time.perf_counter()
        fit_with_validation(model, kept)  # chooses the history prior on kept users' valid rows
        fit_s = time.perf_counter() - start
        strength, lift = model.history_prior_strength, model.profile_graph_lift
        expansion = model.fit_info.get("profile_graph", {}).get("strength", 0.0)
        variants = {name: (0.0, 0.0)}
        if strength > 0:
            variants[f"{name} + prior (c={strength:g})"] = (strength, 0.0)
        if lift > 0:
            variants[f"{name} + prior (c={strength:g}) + graph (b={expansion:g})"] = (
                strength,
                lift,
            )
        for label, (c, b) in variants.items():
            model.history_prior_strength, model.profile_graph_lift = c, b
            results[label] = {
                "fit_seconds": round(fit_s, 1),
                "strength": c,
                "graph_strength": b,
                "search": model.fit_info.get("history_prior"),
                "graph_search": model.fit_info.get("profile_graph"),
                "histories": {},
            }
            for (order, n), first in firsts.items():
                history, targets = rows.subset(first), rows.subset(~first)
                seen = model.history_rows(history)  # with the weights the model gives them

                def scorer(users: np.ndarray, seen=seen, model=model) -> np.ndarray:
                    own = (seen[u] for u in users)  # what the service does
                    return np.vstack([model.score_new_user(h.indices, h.data) for h in own])

                r = evaluate_scores(scorer, targets, [history], ks=(10, 20)).metrics
                metrics = {k: round(r[k], 4) for k in ("ndcg@10", "recall@20")}
                results[label]["histories"][f"{order} n={n}"] = metrics
            console.print(f"{label}: fitted in {fit_s:.1f} s; {results[label]['histories']}")

    headers = ["model", "history", *(f"n={n} NDCG@10 / R@20" for n in histories), "fit s"]
    table = Table(title=f"New users on {args.split}: n events -> the rest (full ranking)")
    for h in headers:
        table.add_column(h, justify="left" if h == "model" else "right")
    md = [
        f"# New users on {args.split}",
        "",
        f"Command: `python benchmarks/new_users.py --split {args.split} --models {args.models} "
        f"--histories {args.histories} --held-out {args.held_out} --seed {args.seed}`. "
        f"{len(held)} users held out of training ({len(rows)} rows); each is scored through "
        "the model's fold-in from n of their interactions (`time`: their first n by "
        "timestamp; `random`: n drawn at random), against all their other interactions "
        "(history masked, full ranking over all items). `+ prior (c)`: the same fold-in "
        "shrunk towards popularity with weight c / (c + n), c chosen on the kept users' "
        "validation rows (what `kinrec serve` does); `+ graph (b)`: the history's items' "
        "knowledge-graph neighbours (items sharing the most specific entities) are also "
        "lifted, the closest by b standard deviations of the fold-in scores, b chosen with "
        "c (shown where above 0). Seed "
        f"{args.seed} for the held-out draw, the random order and every model.",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for order in keys:
        for name, res in results.items():
            cells = [name, order]
            for n in histories:
                m = res["histories"][f"{order} n={n}"]
                cells.append(f"{m['ndcg@10']:.4f} / {m['recall@20']:.4f}")
            cells.append(f"{res['fit_seconds']:.1f}")
            table.add_row(*cells)
            md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    from _plots import link, plot_new_users

    results_dir = args.results
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.stem or f"new-users-{args.split}"
    md += ["", link("new-users", f"{stem}.png")]
    (results_dir / f"{stem}.md").write_text("\n".join(md) + "\n")
    (results_dir / f"{stem}.json").write_text(json.dumps(results, indent=1))
    plot_new_users(results, results_dir / f"{stem}.png")
    console.print(f"wrote {results_dir / stem}.md")


if __name__ == "__main__":
    main()
