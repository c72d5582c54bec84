"""Fit time and peak memory as the catalogue grows, model by model, on synthetic data.

For each catalogue size (``--sizes``, items) a split is generated once with
``kinrec.data.synth`` (seeded): ``--per-item`` interactions per item (30), and as many users
as give ``--per-user`` interactions each (40, so users = 0.75 x items at the defaults). Forty
events per user sits between sparse shop data (about 10) and MovieLens (100 to 165): every
user has a few valid and test events, and users grow with the catalogue, so that the costs
that grow with users (LightGCN's graph, Mult-VAE's batches, full-ranking evaluation) are
measured along with those that grow with items (EASE's Gram matrix). The data has Zipf
popularity, 60 latent topics, item titles and a knowledge graph (docs/data.md, "Synthetic data
for scale tests").

When a model in ``--models`` reads item text (kinformer, lm-knn), the item texts are encoded
once per size before the models run, in a process of their own, into an embedding cache
(``KINREC_DB`` of the model runs): fit times then hold cache look-ups, not first-time
encoding, and the encoding rate (texts/s) is reported on its own line.

Each model then runs in a fresh process, ``kinrec benchmark --split-dir DIR --models NAME
--json`` (``benchmarks/_runner.py``), which records its fit seconds, its peak resident
memory (``wait4``), NDCG@10, or its outcome: refused (its ``error:`` line), timed out
(``--timeout`` per run, and at most what is left of ``--budget``, seconds per model over all
sizes) or killed. A model that did not fit at a size is not run at larger ones. The data and
the cache are written to a temporary folder (``--keep DIR`` keeps them) and each size's
folder is removed once its models ran.

Writes ``benchmarks/results/scale.{md,json,png}``: a table, the growth exponents (slope of
log fit time and of log peak RSS against log items, over the sizes where the model fit) and a
log-log plot.

    python benchmarks/scale.py [--sizes 10000,30000,100000,300000,1000000]
        [--models ease,itemknn,bpr,lightgcn,multvae,kinformer] [--per-item 30] [--per-user 40]
        [--timeout 3600] [--budget 10800] [--memory-limit 6GiB] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from _runner import encode_split_texts, error_line, run_model, timed_run, total_memory_gib

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NAME = "synth"
DEFAULT_SIZES = "10000,30000,100000,300000,1000000"
DEFAULT_MODELS = "ease,itemknn,bpr,lightgcn,multvae,kinformer"
MEMORY_EXIT = 3  # kinrec's exit status for a step refused for memory


# ------------------------------------------------------------------------------ child steps
def _generate_child(folder: Path, users: int, items: int, interactions: int, seed: int) -> None:
    """Run in a process of its own: write the split, print its row counts as JSON."""
    from kinrec.data.synth import generate

    result = generate(
        folder, users=users, items=items, interactions=interactions, seed=seed, name=NAME
    )
    print(json.dumps({**result.rows, "seconds": round(result.seconds, 2)}))


def _encode_child(folder: Path, db: str) -> None:
    """Run in a process of its own: encode the split's item texts (print the figures)."""
    print(json.dumps(encode_split_texts(folder, db)))


def _check_child(args: argparse.Namespace) -> None:
    """Run in a process of its own (the harness stays small, see ``_runner``): check the
    model names and the sizes; print which models read item text as JSON."""
    from kinrec.data.synth import check_sizes
    from kinrec.models.registry import get_model_class

    reads_text, budgeted = {}, []
    try:
        for model in _models(args):
            cls = get_model_class(model)
            reads_text[model] = "text" in getattr(cls, "uses", ())
            if "max_train_seconds" in cls.Config.model_fields:
                budgeted.append(model)
        for items in _ints(args.sizes):
            users, interactions = _users_and_interactions(items, args)
            check_sizes(users, items, interactions)
    except (KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps({"reads_text": reads_text, "epoch_trained": budgeted}))


def _json_line(stdout: str) -> dict | None:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


# ------------------------------------------------------------------------------ the runs
def _models(args: argparse.Namespace) -> list[str]:
    return [m.strip() for m in args.models.split(",") if m.strip()]


def _users_and_interactions(items: int, args: argparse.Namespace) -> tuple[int, int]:
    interactions = items * args.per_item
    return max(1, round(interactions / args.per_user)), interactions


def _outcome(result: dict) -> str:
    if "error" not in result:
        return "fit"
    if result.get("timed_out"):
        return "timed out"
    if result["exit"] < 0:
        return "killed"
    if result["exit"] == MEMORY_EXIT or result["error"].startswith("error:"):
        return "refused"
    return "failed"


def _describe(result: dict) -> str:
    """The outcome in words, for the table."""
    outcome = result["outcome"]
    if outcome == "fit":
        text = "fit"
        if result.get("stopped_by_budget"):
            n = result["epochs_run"]
            text += f"; training budget reached after {n} epoch{'s' if n != 1 else ''}"
        if result.get("linear_head"):
            text += f"; linear head {result['linear_head']}"
        return text
    if outcome == "timed out":
        return f"timed out after {result['timeout_seconds']:,.0f} s"
    if outcome.startswith("not run"):
        return outcome
    return f"{outcome} (exit {result['exit']}): {result['error']}"


def run_size(
    items: int, args: argparse.Namespace, root: Path, env: dict[str, str], state: dict
) -> dict:
    """Generate the split of one size, warm the text cache, run every model."""
    users, interactions = _users_and_interactions(items, args)
    folder = root / f"items-{items}"
    size: dict = {"items": items, "users": users, "interactions_asked": interactions}
    command = [sys.executable, __file__, "--generate-child", str(folder)]
    command += ["--child-sizes", f"{users},{items},{interactions}", "--seed", str(args.seed)]
    run = timed_run(command, env, args.timeout)
    rows = _json_line(run["stdout"]) if run["exit"] == 0 else None
    size["generate"] = {"wall_seconds": run["wall_seconds"], "peak_rss_gib": run["peak_rss_gib"]}
    print(f"{items:,} items: generate {json.dumps(rows or error_line(run))}", flush=True)
    results = []
    if rows is None:
        size["generate"]["error"] = error_line(run)
        for model in state["models"]:
            results.append({"model": model, "outcome": "not run (generation failed)"})
        size["results"] = results
        return size
    size["rows"] = rows

    model_env = dict(env)
    text_models = [m for m in state["models"] if state["reads_text"][m]]
    if args.encode == "always" or (args.encode == "auto" and text_models):
        db = f"sqlite:///{folder / 'embeddings.db'}"
        run = timed_run(
            [sys.executable, __file__, "--encode-child", str(folder), "--child-db", db],
            env,
            args.timeout,
        )
        record = _json_line(run["stdout"]) if run["exit"] == 0 else None
        size["encode"] = {
            **(record or {"error": error_line(run)}),
            "wall_seconds": run["wall_seconds"],
            "peak_rss_gib": run["peak_rss_gib"],
        }
        print(f"{items:,} items: text encoding {json.dumps(size['encode'])}", flush=True)
        if record is not None:
            model_env["KINREC_DB"] = db
    for model in state["models"]:
        stopped = state["stopped"].get(model)
        left = state["budget_left"][model]
        if stopped:
            result = {"model": model, "outcome": f"not run ({stopped} at a smaller size)"}
        elif model in text_models and "error" in size.get("encode", {}):
            result = {"model": model, "outcome": "not run (text encoding failed)"}
        elif left <= 0:
            result = {"model": model, "outcome": "not run (budget spent)"}
        else:
            timeout = min(args.timeout, left)
            config = None
            if args.train_budget and model in state["epoch_trained"]:
                config = folder / f"{model}-budget.toml"
                config.write_text(f"[models.{model}]\nmax_train_seconds = {args.train_budget}\n")
            result = run_model(
                folder, model, model_env, timeout, config, eval_users=args.eval_users
            )
            result.pop("record", None)
            result["outcome"] = _outcome(result)
            result["timeout_seconds"] = timeout
            state["budget_left"][model] = left - result["wall_seconds"]
            if result["outcome"] != "fit":
                state["stopped"][model] = result["outcome"]
        print(json.dumps({"items": items, **result}), flush=True)
        results.append(result)
    size["results"] = results
    return size


# ------------------------------------------------------------------------------ reporting
def growth_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x (None under two points)."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def exponents(sizes: list[dict], models: list[str]) -> dict[str, dict]:
    out = {}
    for model in models:
        fits = [
            (s["items"], r)
            for s in sizes
            for r in s["results"]
            if r["model"] == model and r["outcome"] == "fit"
        ]
        xs = [float(n) for n, _ in fits]
        fit = growth_exponent(xs, [float(r.get("fit_seconds") or 0) for _, r in fits])
        rss = growth_exponent(xs, [float(r["peak_rss_gib"]) for _, r in fits])
        out[model] = {"sizes_fit": len(fits), "fit_time": fit, "peak_rss": rss}
    return out


def _number(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [
        "# Scale: fit time and peak memory as the catalogue grows",
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    earlier = _earlier_runs(report)
    if earlier:
        lines += [
            "Rows marked (†n) are kept from earlier runs on the same data (same seed and "
            "sizes), for the models or sizes this run did not run: "
            + "; ".join(f"†{n} `{run}`" for run, n in earlier.items())
            + ".",
            "",
        ]
    lines += [
        f"Data: `kinrec data synth` (seed {report['seed']}), {report['per_item']} interactions "
        f"per item and {report['per_user']} per user (users = items x {report['per_item']} / "
        f"{report['per_user']}), Zipf popularity, latent topics, item titles and a knowledge "
        f"graph; per-user 80/10/10 split in time order. Machine: {report['cores']} cores, "
        f"{report['memory_gib']:.1f} GiB; memory limit: {report['memory_limit'] or 'none set'}; "
        f"timeout {report['timeout']:,.0f} s per run, budget {report['budget']:,.0f} s per model"
        + (
            f"; training time budget (`max_train_seconds`) of the epoch-trained models: "
            f"{report['train_budget']:g} s."
            if report.get("train_budget")
            else "."
        ),
        "",
        "| items | users | train / valid / test rows | generate s | generate peak RSS GiB |",
        "|---:|---:|---|---:|---:|",
    ]
    for s in report["sizes"]:
        rows = s.get("rows")
        parts = f"{rows['train']:,} / {rows['valid']:,} / {rows['test']:,}" if rows else "-"
        g = s["generate"]
        lines.append(
            f"| {s['items']:,} | {s['users']:,} | {parts} | {g['wall_seconds']:.1f} "
            f"| {g['peak_rss_gib']:.2f} |"
        )
    encodes = [s for s in report["sizes"] if "encode" in s]
    if encodes:
        lines += ["", "Text encoding, once per size before the models run (embedding cache):", ""]
        for s in encodes:
            e = s["encode"]
            if "error" in e:
                lines.append(f"- {s['items']:,} items: failed: {e['error']}")
            elif not e["encoded"]:
                lines.append(
                    f"- {s['items']:,} items: all {e['texts']:,} texts from the embedding cache "
                    "(encoded before this run; no rate measured here)"
                )
            else:
                lines.append(
                    f"- {s['items']:,} items: {e['texts']:,} texts in {e['seconds']:.1f} s = "
                    f"**{e['texts_per_second']:,.0f} texts/s** ({e['encoded']:,} encoded, "
                    f"{e['cache_hits']:,} cached; model load {e['load_seconds']:.1f} s, peak RSS "
                    f"{e['peak_rss_gib']:.2f} GiB)"
                )
    lines += [
        "",
        "| items | model | outcome | fit s | wall s | peak RSS GiB | NDCG@10 |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for s in report["sizes"]:
        for r in s["results"]:
            wall, rss = r.get("wall_seconds"), r.get("peak_rss_gib")
            mark = f" (†{earlier[r['run']]})" if r.get("run") else ""
            lines.append(
                f"| {s['items']:,} | {r['model']} | {_describe(r)}{mark} | "
                f"{_number(r.get('fit_seconds'), 1)} | {_number(wall, 1)} | {_number(rss, 2)} | "
                f"{_number(r.get('ndcg10'), 4)} |"
            )
    lines += [
        "",
        "Growth exponents: slope of log(fit s) and of log(peak RSS) against log(items), "
        "least squares over the sizes where the model fit (1 = linear, 2 = quadratic):",
        "",
        "| model | sizes fit | fit-time exponent | peak-RSS exponent |",
        "|---|---:|---:|---:|",
    ]
    budgeted = {
        r["model"] for s in report["sizes"] for r in s["results"] if r.get("stopped_by_budget")
    }
    for model, e in report["exponents"].items():
        note = (
            " (training stopped by its time budget: not a growth rate)" if model in budgeted else ""
        )
        lines.append(
            f"| {model} | {e['sizes_fit']} | {_number(e['fit_time'], 2)}{note} "
            f"| {_number(e['peak_rss'], 2)} |"
        )
    lines += [
        "",
        f"![fit time and peak RSS against items]({report['plot']})",
        "",
        "fit s: the model's own training time (`train_seconds`: fit with early stopping on "
        "validation, and the training time budget where one is set; text embeddings come "
        "from the warm cache). wall s: the whole `kinrec "
        "benchmark` process (loading the split, fit, full-ranking evaluation of every test "
        "user over all items). Peak RSS: that process's maximum resident memory (`wait4`).",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"timed out": "x", "refused": "s", "killed": "v", "failed": "D"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for index, model in enumerate(report["models"]):
        color = f"C{index % 10}"
        runs = [
            (s["items"], r) for s in report["sizes"] for r in s["results"] if r["model"] == model
        ]
        fits = [(n, r) for n, r in runs if r["outcome"] == "fit"]
        exp = report["exponents"][model]
        for ax, key, slope in (
            (axes[0], "fit_seconds", exp["fit_time"]),
            (axes[1], "peak_rss_gib", exp["peak_rss"]),
        ):
            label = model + (f" (n^{slope:.2f})" if slope is not None else "")
            xs = [n for n, r in fits if r.get(key)]
            ys = [r[key] for _, r in fits if r.get(key)]
            ax.plot(xs, ys, "o-", color=color, label=label)
            for n, r in runs:
                if r["outcome"] in markers:
                    y = r.get("wall_seconds") if key == "fit_seconds" else r.get("peak_rss_gib")
                    if y:
                        ax.plot([n], [y], markers[r["outcome"]], color=color, markersize=9)
    for ax, title, unit in (
        (axes[0], "fit time", "seconds"),
        (axes[1], "peak resident memory", "GiB"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.text(
        0.5,
        0.005,
        "markers without a line: x timed out, square refused, triangle killed, diamond failed "
        "(at the wall time and memory when it stopped)",
        ha="center",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _earlier_runs(report: dict) -> dict[str, int]:
    """The commands of the rows kept from earlier runs, numbered in order of appearance."""
    runs: dict[str, int] = {}
    for size in report["sizes"]:
        for result in size["results"]:
            if result.get("run") and result["run"] not in runs:
                runs[result["run"]] = len(runs) + 1
    return runs


def merge_previous(reports: list[dict], models: list[str], path: Path):
    """Add to ``reports`` the earlier run's results (``path``) that this run did not
    replace, each marked with that run's command: at the sizes both runs have, the models
    this run did not run; the sizes this run did not have, whole. Returns the models in the
    earlier run's order and that command (None: nothing to merge)."""
    if not path.exists():
        return models, None
    old = json.loads(path.read_text())
    command = old.get("command")
    ran = {size["items"]: size for size in reports}
    kept = [m for m in old.get("models", []) if m not in models]
    for earlier in old.get("sizes", []):
        marked = [{**r, "run": r.get("run") or command} for r in earlier.get("results", [])]
        size = ran.get(earlier["items"])
        if size is None:
            reports.append({**earlier, "results": marked})
        else:
            size["results"].extend(r for r in marked if r["model"] in kept)
    reports.sort(key=lambda size: size["items"])
    order = list(old.get("models", []))
    return order + [m for m in models if m not in order], command


def _command() -> str:
    args = list(sys.argv)
    script = Path(args[0]).resolve()
    args[0] = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else args[0]
    return "python " + shlex.join(args)


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="catalogue sizes (items)")
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--per-item", type=int, default=30, help="interactions per item")
    parser.add_argument("--per-user", type=int, default=40, help="interactions per user")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument(
        "--budget", type=float, default=3 * 3600, help="seconds per model, over all sizes"
    )
    parser.add_argument("--memory-limit", default=None, help="KINREC_MEMORY_LIMIT of the runs")
    parser.add_argument(
        "--train-budget",
        type=float,
        default=None,
        help="max_train_seconds of the epoch-trained models (bpr, lightgcn, mult-vae, "
        "kinformer): their training epochs stop within it, the best validated state kept",
    )
    parser.add_argument(
        "--eval-users",
        type=int,
        default=10_000,
        help="test users evaluated per run (a seeded sample; full ranking of every item)",
    )
    parser.add_argument(
        "--encode",
        choices=("auto", "always", "never"),
        default="auto",
        help="encode item texts first: auto = when a model reads text",
    )
    parser.add_argument("--keep", type=Path, default=None, help="write the data here, keep it")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the earlier results of models not in --models and of sizes not in "
        "--sizes (marked with their command)",
    )
    parser.add_argument("--out", default="scale", help="results file stem")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--generate-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--encode-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-sizes", help=argparse.SUPPRESS)
    parser.add_argument("--child-db", help=argparse.SUPPRESS)
    parser.add_argument("--check-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.check_child:
        _check_child(args)
        return
    if args.generate_child:
        users, items, interactions = _ints(args.child_sizes)
        _generate_child(args.generate_child, users, items, interactions, args.seed)
        return
    if args.encode_child:
        _encode_child(args.encode_child, args.child_db)
        return

    # this process only starts others and keeps small: a child's peak RSS counts its own
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.memory_limit:
        env["KINREC_MEMORY_LIMIT"] = args.memory_limit
    sizes = sorted(set(_ints(args.sizes)))
    models = _models(args)
    check = [sys.executable, __file__, "--check-child", "--models", args.models]
    check += ["--sizes", args.sizes, "--per-item", str(args.per_item)]
    check += ["--per-user", str(args.per_user)]
    run = timed_run(check, env, 600)
    if run["exit"] != 0:
        raise SystemExit(error_line(run))
    root = args.keep or Path(tempfile.mkdtemp(prefix="kinrec-scale-"))
    state = {
        "models": models,
        **_json_line(run["stdout"]),
        "stopped": {},
        "budget_left": dict.fromkeys(models, args.budget),
    }
    reports = []
    try:
        for items in sizes:
            reports.append(run_size(items, args, root, env, state))
            if args.keep is None:
                shutil.rmtree(root / f"items-{items}", ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    args.results_dir.mkdir(parents=True, exist_ok=True)
    merged_from = None
    if args.merge:
        models, merged_from = merge_previous(reports, models, args.results_dir / f"{args.out}.json")
    report = {
        "command": _command(),
        "seed": args.seed,
        "per_item": args.per_item,
        "per_user": args.per_user,
        "timeout": args.timeout,
        "budget": args.budget,
        "train_budget": args.train_budget,
        "memory_limit": os.environ.get("KINREC_MEMORY_LIMIT") or args.memory_limit,
        "cores": os.cpu_count(),
        "memory_gib": total_memory_gib(),
        "models": models,
        "sizes": reports,
        "exponents": exponents(reports, models),
        "plot": f"{args.out}.png",
        "merged_from": merged_from,
    }
    plot(report, args.results_dir / f"{args.out}.png")
    text = markdown(report)
    print(text)
    (args.results_dir / f"{args.out}.md").write_text(text)
    (args.results_dir / f"{args.out}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
