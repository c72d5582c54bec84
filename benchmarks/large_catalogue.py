"""Models on a catalogue of 24,915 items: each fits within the memory it may use, or stops
with a clear error before allocating.

Builds, seeded, an interactions-only split the size of the one that made EASE die with a
segfault (24,915 items, ~70,591 users, ~620,908 train rows, plus valid and test rows):
power-law item popularity, and users whose tastes mix a few of 60 latent topics, so that
co-occurrences carry signal. It is written in RecBole split layout
(``large.{train,valid,test}.inter``, a per-user 80/10/10 split of each user's events in time
order) into a temporary folder, never into the repository. Each model then runs in a fresh
process (``kinrec benchmark --split-dir DIR --models NAME --json``), which records its fit
time, its peak resident memory (of that process, from ``wait4``), NDCG@10, or the refusal
it printed. Writes benchmarks/results/large-catalogue.{md,json}.

    python benchmarks/large_catalogue.py [--models pop,ease,kinformer]
        [--items 24915 --users 70591 --rows 620908] [--memory-limit 6GiB] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NAME = "large"
TOPICS = 60


def build_split(
    folder: Path, n_items: int, n_users: int, train_rows: int, seed: int = 2026
) -> dict[str, int]:
    """Write ``large.{train,valid,test}.inter`` into ``folder``; returns the row counts.

    Item popularity follows a Zipf law (exponent 0.9) within each of ``TOPICS`` topics of
    mixed sizes; a user draws 80% of their events from one to three favourite topics and the
    rest from the whole catalogue by popularity. Activity is log-normal (at least 5 events).
    Every item gets at least one train row, so the catalogue has exactly ``n_items`` items."""
    rng = np.random.default_rng(seed)
    total = int(train_rows / 0.8)
    topic = rng.choice(TOPICS, size=n_items, p=rng.dirichlet(np.full(TOPICS, 2.0)))
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity = popularity[rng.permutation(n_items)]
    by_topic = [np.flatnonzero(topic == t) for t in range(TOPICS)]
    cum_topic = [np.cumsum(popularity[ids]) / popularity[ids].sum() for ids in by_topic]
    cum_all = np.cumsum(popularity) / popularity.sum()

    activity = rng.lognormal(0.0, 0.9, size=n_users)

    def events(total: float) -> np.ndarray:
        counts = np.maximum(5, np.round(activity / activity.sum() * total)).astype(np.int64)
        return np.minimum(counts, n_items // 4)

    def train_part(counts: np.ndarray) -> int:
        held = 2 * np.floor(counts * 0.1 + 0.5).astype(np.int64).clip(1)
        return int((counts - held).sum())

    counts = events(total)
    for _ in range(3):  # short histories hold out more than 20%: aim the train part
        total *= train_rows / train_part(counts)
        counts = events(total)
    n_fav = rng.integers(1, 4, size=n_users)
    favourites = rng.integers(0, TOPICS, size=(n_users, 3))
    draws = (counts * 2 + 5).astype(np.int64)  # more than needed: duplicates are dropped
    users = np.repeat(np.arange(n_users), draws)
    from_topic = rng.random(len(users)) < 0.8
    slot = (rng.random(len(users)) * n_fav[users]).astype(np.int64)
    chosen_topic = favourites[users, slot]
    items = np.empty(len(users), dtype=np.int64)
    u = rng.random(len(users))
    for t in range(TOPICS):
        pick = from_topic & (chosen_topic == t)
        items[pick] = by_topic[t][
            np.searchsorted(cum_topic[t], u[pick]).clip(0, len(by_topic[t]) - 1)
        ]
    rest = ~from_topic
    items[rest] = np.searchsorted(cum_all, u[rest]).clip(0, n_items - 1)
    # first occurrence of each (user, item) pair, in draw order (the draw order is time)
    key = users * n_items + items
    _, first = np.unique(key, return_index=True)
    first.sort()
    users, items = users[first], items[first]
    position = np.arange(len(users)) - np.searchsorted(users, users)
    keep = position < counts[users]
    users, items, position = users[keep], items[keep], position[keep]
    size = np.bincount(users, minlength=n_users)[users]
    # per-user 80/10/10 in time order (RecBole's RO split): the last 10% test, 10% before valid
    n_test = np.floor(size * 0.1 + 0.5).astype(np.int64).clip(1)
    n_valid = np.floor(size * 0.1 + 0.5).astype(np.int64).clip(1)
    part = np.where(
        position >= size - n_test, 2, np.where(position >= size - n_test - n_valid, 1, 0)
    )
    # items nobody trained on get one train row from a user of their topic
    missing = np.setdiff1d(np.arange(n_items), items[part == 0])
    if len(missing):
        extra_users = rng.integers(0, n_users, size=len(missing))
        users = np.concatenate([users, extra_users])
        items = np.concatenate([items, missing])
        position = np.concatenate([position, np.full(len(missing), -1)])
        part = np.concatenate([part, np.zeros(len(missing), dtype=part.dtype)])
        pairs = users * n_items + items
        _, unique = np.unique(pairs, return_index=True)
        unique.sort()
        users, items, position, part = users[unique], items[unique], position[unique], part[unique]
    stamps = 1_000_000 + users.astype(np.int64) * 10_000 + position + 1
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    for index, name in enumerate(("train", "valid", "test")):
        pick = part == index
        order = np.lexsort((stamps[pick], users[pick]))
        lines = [
            f"u{a}\ti{b}\t{c}"
            for a, b, c in zip(
                users[pick][order], items[pick][order], stamps[pick][order], strict=True
            )
        ]
        text = "user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(lines) + "\n"
        (folder / f"{NAME}.{name}.inter").write_text(text)
        rows[name] = int(pick.sum())
    rows["users"] = len(np.unique(users))
    rows["items"] = len(np.unique(items))
    return rows


def run_model(split_dir: Path, model: str, env: dict[str, str], timeout: float) -> dict:
    """One ``kinrec benchmark`` run in a fresh process: its record, or its error line, with
    its wall time and peak resident memory (``wait4``'s maximum RSS of that process)."""
    command = [
        sys.executable,
        "-m",
        "kinrec.cli",
        "benchmark",
        "--split-dir",
        str(split_dir),
        "--models",
        model,
        "--json",
    ]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        deadline = start + timeout
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result = {
        "model": model,
        "exit": proc.returncode,
        "wall_seconds": round(wall, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 1024**2, 2),  # KiB on Linux
    }
    records = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and records:
        record = records[0]
        result.update(
            ndcg10=record.get("ndcg@10"),
            recall20=record.get("recall@20"),
            fit_seconds=record.get("train_seconds"),
            eval_seconds=record.get("eval_seconds"),
            linear_head=record.get("fit_info", {}).get("linear_head"),
        )
    else:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        if proc.returncode < 0:
            result["error"] = f"killed by signal {-proc.returncode}" + (
                f"; last output: {lines[-1]}" if lines else ""
            )
        else:
            result["error"] = (errors or lines or ["(no output)"])[-1]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="pop,ease,kinformer")
    parser.add_argument("--items", type=int, default=24_915)
    parser.add_argument("--users", type=int, default=70_591)
    parser.add_argument("--rows", type=int, default=620_908, help="train rows (about)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--memory-limit", default=None, help="KINREC_MEMORY_LIMIT of the runs")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per model")
    parser.add_argument("--keep", type=Path, default=None, help="write the split here, keep it")
    parser.add_argument("--out", default="large-catalogue", help="results file stem")
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.memory_limit:
        env["KINREC_MEMORY_LIMIT"] = args.memory_limit
    folder = args.keep or Path(tempfile.mkdtemp(prefix="kinrec-large-"))
    try:
        start = time.perf_counter()
        sizes = build_split(folder, args.items, args.users, args.rows, args.seed)
        print(f"split {folder}: {sizes} in {time.perf_counter() - start:.1f} s", flush=True)
        results = []
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            result = run_model(folder, model, env, args.timeout)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    command = "python benchmarks/large_catalogue.py --models " + args.models
    if (args.items, args.users, args.rows) != (24_915, 70_591, 620_908):
        command += f" --items {args.items} --users {args.users} --rows {args.rows}"
    if args.memory_limit:
        command += f" --memory-limit {args.memory_limit}"
    header = (
        "| model | outcome | fit s | wall s | peak RSS GiB | NDCG@10 | Recall@20 |\n"
        "|---|---|---:|---:|---:|---:|---:|"
    )
    lines = []
    for r in results:
        if "error" in r:
            outcome = f"stopped (exit {r['exit']}): {r['error']}"
        else:
            outcome = "fit"
            if r.get("linear_head"):
                outcome += f"; linear head {r['linear_head']}"
        fit = r.get("fit_seconds")
        ndcg, recall = r.get("ndcg10"), r.get("recall20")
        lines.append(
            f"| {r['model']} | {outcome} | {'-' if fit is None else f'{fit:.1f}'} "
            f"| {r['wall_seconds']:.1f} | {r['peak_rss_gib']:.2f} "
            f"| {'-' if ndcg is None else f'{ndcg:.4f}'} "
            f"| {'-' if recall is None else f'{recall:.4f}'} |"
        )
    table = header + "\n" + "\n".join(lines)
    memory = os.environ.get("KINREC_MEMORY_LIMIT") or args.memory_limit
    text = (
        "# Large catalogue\n\n"
        f"Command: `{command}`\n\n"
        f"Split: {sizes['items']:,} items, {sizes['users']:,} users, {sizes['train']:,} train / "
        f"{sizes['valid']:,} valid / {sizes['test']:,} test rows (interactions only, seed "
        f"{args.seed}); machine: {os.cpu_count()} cores, "
        f"{_total_memory_gib():.1f} GiB; memory limit: {memory or 'none set'}.\n\n"
        f"{table}\n"
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(text)
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps({"command": command, "split": sizes, "results": results}, indent=1)
    )


def _total_memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        return float("nan")


if __name__ == "__main__":
    main()
