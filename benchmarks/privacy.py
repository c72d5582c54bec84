"""User-level differential privacy on ml-1m: NDCG@10 against epsilon, and a membership audit.

For each model (kinformer, EASE, popularity), epsilon (0.5, 1, 2, 4, 8 and inf: not
private) and seed, trains on the shared split's train file as `kinrec benchmark` does
(``run_one``, with the new-user prior off: nothing is chosen on validation) and evaluates on
test (full ranking, train+valid masked). ``--reuse MODEL=PATH#KEY`` takes a model's
non-private test records from an earlier results file (kinformer's ml-1m fit takes ~20
minutes); its audit then runs for the ``--seeds`` given only.

The audit: half of the training users (seeded) are members, the other half outsiders; a
model of the same settings is trained on the members' rows only, and a score-threshold
attack (:func:`kinrec.privacy.dp.membership_auc`: how well the model reconstructs each
user's items from their history) tells members from outsiders; its AUC is reported
(0.5: a coin toss). delta = 1 / training users (1 / members in the audit).

Prints a table and writes benchmarks/results/privacy.{md,json,png}.

    python benchmarks/privacy.py                      # ml-1m, every model, 3 seeds
    python benchmarks/privacy.py --split ml-100k --seeds 1
    python benchmarks/privacy.py --models kinformer --epsilons inf --seeds 1 \
        --reuse "kinformer=benchmarks/results/kg-gain.json#ml-1m|full|kinformer"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import reused

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("KINREC_SHARED", ROOT.parent / "shared"))
EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
MODELS = ("kinformer", "ease", "pop")
TARGETS = (
    "at epsilon 8 kinformer keeps >= 90% of its non-private NDCG@10; at epsilon 1 it stays "
    "above pop; the membership AUC <= 0.55 at epsilon 1"
)
WHAT = (
    "NDCG@10 on test and the membership-inference AUC against epsilon (mean ± sd over "
    "seeds, each seed a dot; not private at the right)"
)


def link(kind: str, path: Path) -> str:
    """The Markdown line that shows this benchmark's picture (``kind``: ``privacy``)."""
    return f"![{WHAT}]({Path(path).name})"


def params(epsilon: float, delta: float | None = None) -> dict[str, Any]:
    """The model settings of one epsilon (inf: not private). The new-user prior is never
    chosen: it does not change a trained user's scores, which are what the test ranks."""
    if math.isinf(epsilon):
        return {"history_prior": False}
    return {"dp_epsilon": epsilon, "history_prior": False} | (
        {} if delta is None else {"dp_delta": delta}
    )


def audit(model_name: str, split: Any, epsilon: float, seed: int) -> dict[str, Any]:
    """Train on a seeded half of the training users, attack: the AUC and the user counts."""
    from kinrec.models.registry import create_model
    from kinrec.privacy.dp import membership_auc

    train = split.train
    rows = train.matrix()
    users = np.flatnonzero(np.diff(rows.indptr) > 0)
    rng = np.random.default_rng(seed)
    members = np.sort(rng.choice(users, size=len(users) // 2, replace=False))
    outsiders = np.setdiff1d(users, members)
    inside = np.isin(train.users, members)
    model = create_model(model_name, {**params(epsilon, 1.0 / len(members)), "seed": seed})
    model.fit(train.subset(inside))
    return {
        "auc": round(membership_auc(model, rows[members], rows[outsiders]), 4),
        "members": len(members),
        "outsiders": len(outsiders),
    }


def run(
    split_dir: Path,
    models: list[str],
    epsilons: list[float],
    seeds: list[int],
    reuse: dict[str, list[dict]] | None = None,
    part: Path | None = None,
    command: str | None = None,
) -> dict:
    """Every (model, epsilon, seed): test metrics, the privacy record and the audit; a
    model in ``reuse`` takes its non-private test records from there (audited for
    ``seeds`` only). ``part``: the record so far is written there after every run (a run
    stopped midway keeps what finished)."""
    from kinrec.evaluation.benchmark import run_one
    from kinrec.pipeline import load_split_folder

    split = load_split_folder(split_dir)
    out: dict[str, Any] = {"split": split_dir.name, "seeds": seeds, "runs": []}
    if command:
        out["commands"] = [command]
    for model in models:
        for epsilon in epsilons:
            reused_records = (reuse or {}).get(model) if math.isinf(epsilon) else None
            records = reused_records or [None] * len(seeds)
            run_seeds = [r["seed"] for r in reused_records] if reused_records else seeds
            for seed, record in zip(run_seeds, records, strict=True):
                start = time.perf_counter()
                if record is None:
                    record = run_one(model, split, seed, params(epsilon), ks=(10, 20))
                attack = audit(model, split, epsilon, seed) if seed in seeds else None
                privacy = record.get("fit_info", {}).get("privacy") or {}
                out["runs"].append(
                    {
                        "model": model,
                        "epsilon": "inf" if math.isinf(epsilon) else epsilon,
                        "seed": seed,
                        "ndcg@10": record["ndcg@10"],
                        "recall@20": record["recall@20"],
                        "train_seconds": record["train_seconds"],
                        "delta": privacy.get("delta"),
                        "sigma": privacy.get("sigma"),
                        "clip": (privacy.get("clip") or {}).get("items_per_user"),
                        "l2": privacy.get("l2"),
                        "eigenvalues_raised": privacy.get("eigenvalues_raised"),
                        "items_solved": privacy.get("items_solved"),
                        "epsilon_spent": privacy.get("epsilon_spent"),
                        "noise_multiplier": noise_multiplier(privacy),
                        "membership_auc": attack and attack["auc"],
                        "audit_users": attack and [attack["members"], attack["outsiders"]],
                        "reused": reused_records is not None,
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )
                r = out["runs"][-1]
                if part is not None:
                    out["seconds"] = round(sum(x["seconds"] for x in out["runs"]), 1)
                    part.write_text(json.dumps(out, indent=1, default=str))
                auc = "-" if r["membership_auc"] is None else f"{r['membership_auc']:.4f}"
                print(
                    f"{model:9} eps={r['epsilon']!s:4} seed={seed} ndcg@10={r['ndcg@10']:.4f} "
                    f"auc={auc} ({r['seconds']} s)",
                    file=sys.stderr,
                    flush=True,
                )
    return out


def noise_multiplier(privacy: dict[str, Any]) -> float | None:
    """The DP-SGD noise multiplier of a privacy record (None: no DP-SGD)."""
    for mechanism in privacy.get("mechanisms", []):
        if "noise_multiplier" in mechanism:
            return mechanism["noise_multiplier"]
    return None


def commands_of(part: dict) -> list[str]:
    """The commands that made a ``--part`` record (records written before they were kept:
    one process per seed of EASE and pop)."""
    if "commands" in part:
        return part["commands"]
    seeds = ", ".join(map(str, part["seeds"]))
    return [f"python benchmarks/privacy.py --seeds 1 --first-seed S --part S.json (S in {seeds})"]


def _key(epsilon: Any) -> float:
    return math.inf if epsilon == "inf" else float(epsilon)


def summary(report: dict) -> list[dict[str, Any]]:
    """One row per (model, epsilon): mean and sd over seeds."""
    groups: dict[tuple[str, Any], list[dict]] = {}
    for r in report["runs"]:
        groups.setdefault((r["model"], r["epsilon"]), []).append(r)
    rows = []
    for (model, epsilon), runs in groups.items():
        row: dict[str, Any] = {"model": model, "epsilon": epsilon, "seeds": len(runs)}
        for key in ("ndcg@10", "recall@20", "membership_auc"):
            values = [r[key] for r in runs if r.get(key) is not None]
            row[key] = statistics.mean(values) if values else None
            row[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row[f"{key}_n"] = len(values)
        row["sigma"] = runs[0]["sigma"]
        solved = [r["items_solved"] for r in runs if r.get("items_solved") is not None]
        row["items_solved"] = round(statistics.mean(solved)) if solved else None
        row["noise_multiplier"] = runs[0].get("noise_multiplier")
        row["delta"] = runs[0]["delta"]
        rows.append(row)
    rows.sort(key=lambda r: (r["model"], _key(r["epsilon"])))
    base = {r["model"]: r["ndcg@10"] for r in rows if r["epsilon"] == "inf"}
    for r in rows:
        r["kept"] = r["ndcg@10"] / base[r["model"]] if base.get(r["model"]) else None
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    headers = ["model", "epsilon", "delta", "sigma", "items", "NDCG@10", "of non-private",
               "Recall@20", "membership AUC"]  # fmt: skip
    md = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        delta = "-" if r["delta"] is None else f"{r['delta']:.2g}"
        sigma = _sigma(r["sigma"])
        if r["model"] == "kinformer" and r.get("noise_multiplier"):
            sigma += f"; DP-SGD z {r['noise_multiplier']:.3g}"
        cells = [
            r["model"],
            "inf (not private)" if r["epsilon"] == "inf" else f"{r['epsilon']:g}",
            delta,
            sigma,
            "-" if r.get("items_solved") is None else f"{r['items_solved']:,}",
            f"{r['ndcg@10']:.4f} ± {r['ndcg@10_sd']:.4f}",
            "-" if r["kept"] is None else f"{100 * r['kept']:.1f}%",
            f"{r['recall@20']:.4f} ± {r['recall@20_sd']:.4f}",
            _auc(r),
        ]
        md.append("| " + " | ".join(cells) + " |")
    return md


def _auc(row: dict[str, Any]) -> str:
    if row["membership_auc"] is None:
        return "-"
    text = f"{row['membership_auc']:.4f} ± {row['membership_auc_sd']:.4f}"
    if row["membership_auc_n"] < row["seeds"]:
        text += f" ({row['membership_auc_n']} seed)"
    return text


def _sigma(value: Any) -> str:
    """One noise sd, or kinformer's several releases' (name: sd)."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:.4g}" for k, v in value.items())
    return f"{value:.4g}"


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, met or missed, from the summary rows."""
    at = {(r["model"], r["epsilon"]): r for r in rows}
    out = []
    k8, kinf = at.get(("kinformer", 8.0)), at.get(("kinformer", "inf"))
    if k8 and kinf:
        kept = k8["ndcg@10"] / kinf["ndcg@10"]
        out.append(
            f"- kinformer at epsilon 8 keeps {100 * kept:.1f}% of its non-private NDCG@10 "
            f"({k8['ndcg@10']:.4f} vs {kinf['ndcg@10']:.4f}): target >= 90%, "
            f"{'met' if kept >= 0.9 else 'missed'}."
        )
    k1, p1 = at.get(("kinformer", 1.0)), at.get(("pop", 1.0))
    if k1 and p1:
        above = k1["ndcg@10"] > p1["ndcg@10"]
        out.append(
            f"- kinformer at epsilon 1: NDCG@10 {k1['ndcg@10']:.4f} vs pop's "
            f"{p1['ndcg@10']:.4f} at epsilon 1: target above pop, "
            f"{'met' if above else 'missed'}."
        )
    for model in ("kinformer", "ease", "pop"):
        r = at.get((model, 1.0))
        if r and r["membership_auc"] is not None:
            ok = r["membership_auc"] <= 0.55
            out.append(
                f"- {model}: membership AUC at epsilon 1 {r['membership_auc']:.4f}: target "
                f"<= 0.55, {'met' if ok else 'missed'}."
            )
    return out


def plot_privacy(report: dict, path: Path) -> Path:
    """NDCG@10 (left) and the membership AUC (right) against epsilon, one line per model;
    'inf' (not private) at the right end of a log axis."""
    from kinrec.plots import BAR_COLORS, render_png, write_png

    finite = sorted({_key(r["epsilon"]) for r in report["runs"]} - {math.inf})
    top = (max(finite) if finite else 1.0) * 2.5

    def x(epsilon: Any) -> float:
        return top if epsilon == "inf" else float(epsilon)

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, 2)
        for ax, key, label in ((axes[0], "ndcg@10", "NDCG@10 (test)"),
                               (axes[1], "membership_auc", "membership AUC")):  # fmt: skip
            for i, model in enumerate(sorted({r["model"] for r in report["runs"]})):
                runs = [r for r in report["runs"] if r["model"] == model]
                color = BAR_COLORS[i % len(BAR_COLORS)]
                runs = [r for r in runs if r.get(key) is not None]
                ax.scatter([x(r["epsilon"]) for r in runs], [r[key] for r in runs],
                           s=10, color=color, alpha=0.5)  # fmt: skip
                rows = [r for r in summary(report)
                        if r["model"] == model and r[key] is not None]  # fmt: skip
                ax.errorbar([x(r["epsilon"]) for r in rows], [r[key] for r in rows],
                            yerr=[r[f"{key}_sd"] for r in rows], color=color, marker="o",
                            capsize=3, label=model)  # fmt: skip
            ax.set_xscale("log")
            ticks = [*finite, top]
            ax.set_xticks(ticks, [f"{t:g}" for t in finite] + ["inf"])
            ax.minorticks_off()
            ax.set_xlabel("epsilon (user-level)")
            ax.set_ylabel(label)
            ax.legend()
        axes[1].axhline(0.5, color="grey", linestyle=":", linewidth=1)
        axes[1].axhline(0.55, color="grey", linestyle="--", linewidth=1)

    return write_png(path, render_png(draw, (10.0, 4.0)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="ml-1m")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epsilons", default="0.5,1,2,4,8,inf")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=2026)
    parser.add_argument("--name", default="privacy", help="results file name")
    parser.add_argument("--note", default="", help="a line written under the targets")
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="MODEL=PATH#KEY",
        help="the model's non-private test records from an earlier results file",
    )
    parser.add_argument(
        "--part",
        type=Path,
        default=None,
        help="write this run's record to this JSON file only (runs of other seeds in "
        "other processes, then --merge)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="write the results from these --part records instead of running",
    )
    args = parser.parse_args(argv)
    split_dir = SHARED / "benchmarks" / args.split
    epsilons = [float(e) for e in args.epsilons.split(",")]
    seeds = [args.first_seed + i for i in range(args.seeds)]
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        report = {
            "split": parts[0]["split"],
            "seeds": sorted({s for p in parts for s in p["seeds"]}),
            "runs": [r for p in parts for r in p["runs"]],
            "seconds": sum(p["seconds"] for p in parts),
            "processes": len(parts),
            "commands": list(dict.fromkeys(c for p in parts for c in commands_of(p))),
        }
        seeds = report["seeds"]
    else:
        start = time.perf_counter()
        reuse = dict(reused(spec) for spec in args.reuse)
        given = argv if argv is not None else sys.argv[1:]
        command = "python benchmarks/privacy.py " + shlex.join(given)
        report = run(split_dir, args.models.split(","), epsilons, seeds, reuse, args.part, command)
        report["seconds"] = round(time.perf_counter() - start, 1)
        if args.part is not None:
            args.part.write_text(json.dumps(report, indent=1, default=str))
            return
    rows = summary(report)
    report["summary"] = rows
    picture = RESULTS / f"{args.name}.png"
    plot_privacy(report, picture)
    merged = ["python benchmarks/privacy.py --merge PARTS.json"] if args.merge else []
    text = "\n".join(
        [
            f"# User-level differential privacy on {args.split}",
            "",
            "Commands (with `KINREC_SHARED=/work/shared`; runs of other seeds or models in "
            "other processes as `--part`, then merged):",
            "",
            *[f"- `{c}`" for c in [*report["commands"], *merged]],
            "",
            f"{report['seconds'] / 60:.0f} min of process time in all on 2 shared CPU cores. "
            "Mean ± sd over seeds "
            f"{', '.join(map(str, seeds))}; test part of the shared split, full ranking, "
            "train+valid items masked. delta = 1 / training users; each user contributes "
            "at most `dp_clip` items (kinformer and EASE 50, pop 100: defaults fixed in "
            "advance); EASE's noisy counts (10% of the budget) choose the items its Gram "
            "matrix covers (`dp_item_threshold` 0.1; items: how many, mean over seeds), and "
            "its L2 is 250 + "
            "0.5 x 2 sigma sqrt(items) (fixed in advance; 250 at inf). Nothing is chosen on "
            "validation in any private row: the new-user prior, which does not change a "
            "trained user's test scores, is off. sigma: the noise sd per entry of the counts "
            "and of the Gram matrix (EASE) or of the counts (pop); for kinformer those of its "
            "linear head (half the budget, same rules) and the DP-SGD "
            "noise multiplier of its tower (sd / clip; `dp_*` defaults of "
            "`kinrec.models.transfer.config`, chosen on ml-100k before any ml-1m run: docs/"
            "privacy.md). kinformer's non-private row is the default model (text, graph, "
            "propagation, every choice on validation); rows marked `reused` in the JSON come "
            "from the results file named in its command.",
            "",
            "Membership AUC: a score-threshold attack (`kinrec.privacy.dp.membership_auc`) "
            "against a model of the same settings trained on a seeded half of the training "
            "users (delta = 1 / members), telling them from the other half: each user's "
            "statistic is how high the model ranks their own items when it folds their "
            "history in. 0.5 is a coin toss.",
            "",
            f"Targets: {TARGETS}.",
            "",
            *verdicts(rows),
            *([args.note, ""] if args.note else [""]),
            *table(rows),
            "",
            link("privacy", picture),
            "",
        ]
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text(text)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
