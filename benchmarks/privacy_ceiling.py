"""How far user-level differential privacy can go on a dataset of this size: a ceiling for any
model solved from a noisy Gram matrix, and how many users it would take to keep 90%.

A private EASE (and kinformer's private head) is solved from ``X^T X + N``: the Gram matrix of
the users' clipped binary rows plus symmetric Gaussian noise of sd ``sigma`` per entry
(:mod:`kinrec.privacy.dp`). Two measurements bound what such a model can reach:

1. **The ceiling.** A direction of ``X^T X`` can only be told from the noise when its
   eigenvalue exceeds ``sigma sqrt(items)`` (the BBP threshold of a symmetric Gaussian
   matrix; the noise's own eigenvalues reach ``2 sigma sqrt(items)``). Adding Gaussian noise
   to the Gram matrix is near-optimal among (epsilon, delta)-DP ways of finding its top
   eigenvectors (Dwork, Talwar, Thakurta & Zhang 2014, "Analyze Gauss"), so the number of
   eigenvalues above the threshold is about as many directions as any private release of
   these statistics can recover. The benchmark solves EASE from the *noise-free* clipped
   Gram matrix cut to its top ``r`` eigenpairs, for ``r`` from 1 to every item, with the best
   L2 of a grid chosen on test: an oracle no private model can beat at that rank, given more
   than it can have on purpose.
2. **More users.** The noise does not grow with the number of users while the statistics
   do, so ``k`` times as many users drawn like these are emulated by stacking the training
   rows ``k`` times (each copy is clipped by its own seeded sample) and fitting the private
   EASE on them as it is (:func:`kinrec.privacy.dp.private_ease_weights`: delta = 1 / (k
   users), the items chosen by the noisy counts, the noise's L2), with the base L2 scaled
   with the data (250 k: EASE of the stacked rows with L2 250 k is the non-private EASE of
   these users, the reference at every ``k``). Each ``k`` reports private EASE's share of
   that non-private NDCG@10. At ``k = 1`` this is the model's own fit, checked against
   ``run_one("ease", ...)``.

Prints a table and writes benchmarks/results/privacy-ceiling.{md,json,png}.

    python benchmarks/privacy_ceiling.py                 # ml-1m, epsilon 1 and 8, 3 seeds
    python benchmarks/privacy_ceiling.py --split ml-100k --seeds 1
"""

from __future__ import annotations

import argparse
import itertools
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
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("KINREC_SHARED", ROOT.parent / "shared"))
RANKS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
ORACLE_L2 = (250.0, 500.0, 1000.0, 2000.0, 4000.0)
USERS = (1, 2, 4, 8, 16, 32, 64)
CLIPS = (20, 50, 100, 200)
KEEP = 0.9
WHAT = (
    "left: NDCG@10 of EASE from the noise-free Gram matrix cut to its top r eigenpairs (an "
    "oracle), with the private models and the target; right: private EASE's share of its "
    "non-private NDCG@10 with k times as many users (emulated)"
)


def link(kind: str, path: Path) -> str:
    """The Markdown line that shows this benchmark's picture (``kind``: ``privacy-ceiling``)."""
    return f"![{WHAT}]({Path(path).name})"


def gram_sigma(epsilon: float, delta: float, clip: int) -> float:
    """The noise sd per Gram entry a private EASE uses at (epsilon, delta) (one release)."""
    from kinrec.privacy import dp

    sensitivity = dp.gram_sensitivity(clip)
    (release,) = dp.plan(epsilon, delta, {"gram": (sensitivity, dp.GRAM_NORM, 1.0)})
    return release.sigma


class Scorer:
    """NDCG@10 of item-item weights on the split's test part (full ranking, train+valid
    masked), each user scored by their own training row, as EASE scores."""

    def __init__(self, split: Any) -> None:
        self.split = split
        self.rows = split.train.matrix()  # binary float32, as EASE's fit takes it

    def __call__(self, weights: np.ndarray) -> float:
        from kinrec.evaluation.protocol import evaluate_scores

        s = self.split
        result = evaluate_scores(
            lambda u: np.asarray(self.rows[u] @ weights), s.test, [s.train, s.valid], ks=(10,)
        )
        return float(result.metrics["ndcg@10"])


def solve(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE weights from a (copied) Gram matrix. The matrices solved here are noise-free (a
    Gram matrix, or its top eigenpairs) and positive definite with ``l2``; should rounding
    make one not, its negative eigenvalues are set to 0 and it is solved again."""
    from kinrec.models.ease import NotPositiveDefiniteError, ease_weights
    from kinrec.privacy.dp import positive_definite

    try:
        return ease_weights(np.asfortranarray(gram, dtype=np.float64).copy(order="F"), l2, True)
    except NotPositiveDefiniteError:
        fixed, _ = positive_definite(np.asfortranarray(gram, dtype=np.float64), 0.0)
        return ease_weights(fixed, l2, True)


def ceiling(gram: np.ndarray, ndcg: Scorer, ranks: list[int]) -> list[dict[str, Any]]:
    """The oracle: EASE from ``gram``'s top ``r`` eigenpairs, best L2 of ORACLE_L2 on test."""
    values, vectors = np.linalg.eigh(gram)
    rows = []
    for r in ranks:
        top = vectors[:, -r:] * values[-r:] @ vectors[:, -r:].T
        scores = {l2: ndcg(solve(top, l2)) for l2 in ORACLE_L2}
        best = max(scores, key=scores.get)
        rows.append({"rank": r, "ndcg@10": round(scores[best], 6), "l2": best})
        print(f"oracle rank {r:5}: ndcg@10 {scores[best]:.4f} (L2 {best:g})", file=sys.stderr)
    return rows


def emulate(
    rows: sp.csr_matrix,
    ndcg: Scorer,
    epsilons: list[float],
    users: list[int],
    seeds: list[int],
    config: Any,
) -> list[dict[str, Any]]:
    """Private EASE (``config``, an EASE config) fitted on the training ``rows`` stacked ``k``
    times, base L2 ``k reg_weight``, against the non-private EASE of ``rows``, for each
    epsilon, ``k`` and seed."""
    from kinrec.models.ease import dense_gram
    from kinrec.privacy.dp import private_ease_weights

    reference = ndcg(solve(dense_gram(rows), config.reg_weight))
    out = []
    for k in users:
        stacked = sp.vstack([rows] * k, format="csr")
        for epsilon in epsilons:
            for seed in seeds:
                cfg = config.model_copy(
                    update={
                        "dp_epsilon": epsilon,
                        "seed": seed,
                        "reg_weight": k * config.reg_weight,
                    }
                )
                weights, _, info = private_ease_weights(stacked, cfg, "dense")
                value = ndcg(weights)
                sigma = info["sigma"]
                out.append(
                    {
                        "epsilon": epsilon,
                        "users_times": k,
                        "users": k * rows.shape[0],
                        "seed": seed,
                        "sigma": round(sigma["gram"] if isinstance(sigma, dict) else sigma, 4),
                        "items_solved": info["items_solved"],
                        "l2": round(info["l2"]["total"], 2),
                        "ndcg@10": round(value, 6),
                        "non_private": round(reference, 6),
                    }
                )
                print(
                    f"eps {epsilon:g} users x{k:<3} seed {seed}: ndcg@10 {value:.4f} "
                    f"of {reference:.4f} ({info['items_solved']} items)",
                    file=sys.stderr,
                    flush=True,
                )
    return out


def model_check(split: Any, epsilon: float, seed: int) -> float:
    """NDCG@10 of the private EASE fitted on the split as the privacy benchmark fits it: what
    the emulation at k = 1 must equal."""
    from kinrec.evaluation.benchmark import run_one

    params = {"dp_epsilon": epsilon, "history_prior": False}
    return float(run_one("ease", split, seed, params, ks=(10,))["ndcg@10"])


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[float, int], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["epsilon"], r["users_times"]), []).append(r)
    rows = []
    for (epsilon, k), group in sorted(groups.items()):
        values = [r["ndcg@10"] for r in group]
        mean = statistics.mean(values)
        rows.append(
            {
                "epsilon": epsilon,
                "users_times": k,
                "users": group[0]["users"],
                "sigma": group[0]["sigma"],
                "items_solved": round(statistics.mean(r["items_solved"] for r in group)),
                "ndcg@10": mean,
                "ndcg@10_sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "non_private": group[0]["non_private"],
                "kept": mean / group[0]["non_private"],
            }
        )
    return rows


def users_needed(rows: list[dict[str, Any]], epsilon: float, keep: float = KEEP) -> float | None:
    """The emulated number of users at which private EASE first keeps ``keep`` of its
    non-private NDCG@10 at ``epsilon`` (log-linear between the measured points); None when
    no point reaches it."""
    points = [(r["users"], r["kept"]) for r in rows if r["epsilon"] == epsilon]
    for (u0, k0), (u1, k1) in itertools.pairwise(points):
        if k0 < keep <= k1:
            t = (keep - k0) / (k1 - k0)
            return math.exp(math.log(u0) + t * (math.log(u1) - math.log(u0)))
    if points and points[0][1] >= keep:
        return float(points[0][0])
    return None


def plot_privacy_ceiling(report: dict, path: Path) -> Path:
    from kinrec.plots import BAR_COLORS, render_png, write_png

    def draw(fig: Any) -> None:
        left, right = fig.subplots(1, 2)
        oracle = report["ceiling"]
        left.plot([r["rank"] for r in oracle], [r["ndcg@10"] for r in oracle], marker="o",
                  color="black", label="noise-free Gram, top r eigenpairs")  # fmt: skip
        for i, (epsilon, spikes) in enumerate(report["detectable"].items()):
            color = BAR_COLORS[i % len(BAR_COLORS)]
            left.axvline(max(spikes, 1), color=color, linestyle=":",
                         label=f"directions above the noise, epsilon {epsilon}")  # fmt: skip
        for i, (name, value) in enumerate(report["references"].items()):
            left.axhline(value, color=BAR_COLORS[(i + 2) % len(BAR_COLORS)], linestyle="--",
                         linewidth=1, label=name)  # fmt: skip
        left.set_xscale("log")
        left.set_xlabel("rank r (eigenpairs kept)")
        left.set_ylabel("NDCG@10 (test)")
        left.legend(fontsize=7)
        for i, epsilon in enumerate(sorted({r["epsilon"] for r in report["summary"]})):
            rows = [r for r in report["summary"] if r["epsilon"] == epsilon]
            color = BAR_COLORS[i % len(BAR_COLORS)]
            right.plot([r["users"] for r in rows], [r["kept"] for r in rows], marker="o",
                       color=color, label=f"epsilon {epsilon:g}")  # fmt: skip
        right.axhline(KEEP, color="grey", linestyle="--", linewidth=1)
        right.axvline(report["n_users"], color="grey", linestyle=":", linewidth=1)
        right.set_xscale("log")
        right.set_xlabel("training users (emulated beyond the dotted line)")
        right.set_ylabel("private / non-private NDCG@10 (EASE)")
        right.legend(fontsize=7)

    return write_png(path, render_png(draw, (11.0, 4.2)))


def references(report_path: Path) -> dict[str, float]:
    """The privacy benchmark's figures the picture and the text compare with (if written)."""
    if not report_path.exists():
        return {}
    rows = json.loads(report_path.read_text()).get("summary", [])
    at = {(r["model"], str(r["epsilon"])): r["ndcg@10"] for r in rows}
    out = {}
    if ("kinformer", "inf") in at:
        out[f"target: {KEEP:.0%} of non-private kinformer"] = KEEP * at[("kinformer", "inf")]
    for model, epsilon in (("ease", "inf"), ("ease", "8.0"), ("kinformer", "8.0")):
        if (model, epsilon) in at:
            label = "non-private" if epsilon == "inf" else f"private, epsilon {float(epsilon):g}"
            out[f"{model}, {label}"] = at[(model, epsilon)]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="ml-1m")
    parser.add_argument("--epsilons", default="1,8")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=2026)
    parser.add_argument("--users", default=",".join(map(str, USERS)),
                        help="emulated multiples of the training users")  # fmt: skip
    parser.add_argument("--name", default="privacy-ceiling", help="results file name")
    parser.add_argument(
        "--render",
        action="store_true",
        help="no run: write the table and the picture again from the results file, with the "
        "privacy benchmark's current figures to compare with",
    )
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads((RESULTS / f"{args.name}.json").read_text())
        if report["split"] == "ml-1m":
            report["references"] = references(RESULTS / "privacy.json")
        write(report, args.name)
        return
    from kinrec.models.ease import EASEConfig, dense_gram
    from kinrec.pipeline import load_split_folder
    from kinrec.privacy import dp

    start = time.perf_counter()
    config = EASEConfig()
    clip, seeds = config.dp_clip, [args.first_seed + i for i in range(args.seeds)]
    epsilons = [float(e) for e in args.epsilons.split(",")]
    split = load_split_folder(SHARED / "benchmarks" / args.split)
    ndcg = Scorer(split)
    n_users, n_items = int((np.diff(ndcg.rows.indptr) > 0).sum()), ndcg.rows.shape[1]
    if n_users != ndcg.rows.shape[0]:
        raise SystemExit(f"{args.split}: users without training rows; the emulation needs none")
    gram = dense_gram(dp.clip_rows(ndcg.rows, clip, seeds[0]))
    eigenvalues = np.linalg.eigvalsh(gram)
    detectable = {}
    for epsilon in epsilons:
        threshold = gram_sigma(epsilon, 1.0 / n_users, clip) * math.sqrt(n_items)
        detectable[f"{epsilon:g}"] = int((eigenvalues > threshold).sum())
    by_clip = {}  # would another clip leave more directions above the noise?
    for c in sorted({*CLIPS, clip}):
        values = eigenvalues if c == clip else np.linalg.eigvalsh(
            dense_gram(dp.clip_rows(ndcg.rows, c, seeds[0])))  # fmt: skip
        by_clip[str(c)] = {
            f"{e:g}": int((values > gram_sigma(e, 1.0 / n_users, c) * math.sqrt(n_items)).sum())
            for e in epsilons
        }
    ranks = sorted({*RANKS, *detectable.values(), n_items} - {0})
    ranks = [r for r in ranks if r <= n_items]
    oracle = ceiling(gram, ndcg, ranks)
    del gram
    multiples = [int(k) for k in args.users.split(",")]
    runs = emulate(ndcg.rows, ndcg, epsilons, multiples, seeds, config)
    checks = {f"{e:g}": model_check(split, e, seeds[0]) for e in epsilons}
    rows = summary(runs)
    given = argv if argv is not None else sys.argv[1:]
    report = {
        "split": args.split,
        "command": "python benchmarks/privacy_ceiling.py " + shlex.join(given),
        "n_users": n_users,
        "n_items": n_items,
        "clip": clip,
        "seeds": seeds,
        "detectable": detectable,
        "detectable_by_clip": by_clip,
        "ceiling": oracle,
        "runs": runs,
        "summary": rows,
        "model_check": checks,
        "references": references(RESULTS / "privacy.json") if args.split == "ml-1m" else {},
        "seconds": round(time.perf_counter() - start, 1),
    }
    report["users_needed"] = {f"{e:g}": users_needed(rows, e) for e in epsilons}
    write(report, args.name)


def write(report: dict, name: str) -> None:
    """The table (printed and written), the picture and the record."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    picture = plot_privacy_ceiling(report, RESULTS / f"{name}.png")
    text = render(report, picture)
    print(text)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))


def render(report: dict, picture: Path) -> str:
    first = {f"{r['epsilon']:g}": r for r in report["summary"] if r["users_times"] == 1}
    lines = [
        f"# How far user-level differential privacy can go on {report['split']}",
        "",
        f"Command (with `KINREC_SHARED=/work/shared`): `{report['command'].strip()}`; "
        f"{report['seconds'] / 60:.0f} min on 2 CPU cores. {report['n_users']:,} training "
        f"users, {report['n_items']:,} items, each user's rows clipped to {report['clip']} "
        "items as the private models do; test part of the shared split, full ranking, "
        "train+valid masked.",
        "",
        "## The ceiling of a model solved from the noisy Gram matrix",
        "",
        "EASE solved from the noise-free clipped Gram matrix cut to its top r eigenpairs, "
        "with the best L2 of " + ", ".join(f"{v:g}" for v in ORACLE_L2) + " chosen on test "
        "(an oracle). Directions above the noise: eigenvalues of the clipped Gram matrix "
        "above sigma sqrt(items), the most any release of it with that noise can tell "
        "apart: " + "; ".join(f"{n} at epsilon {e}" for e, n in report["detectable"].items()) + ".",
        "",
        "Directions above the noise with other clips (items kept per user; the noise grows "
        "with the clip as the signal does):",
        "",
        "| clip | " + " | ".join(f"epsilon {e}" for e in report["detectable"]) + " |",
        "|---|" + "---|" * len(report["detectable"]),
        *[
            f"| {c} | " + " | ".join(str(v) for v in counts.values()) + " |"
            for c, counts in report["detectable_by_clip"].items()
        ],
        "",
        "| rank r | NDCG@10 | L2 |",
        "|---|---|---|",
        *[f"| {r['rank']:,} | {r['ndcg@10']:.4f} | {r['l2']:g} |" for r in report["ceiling"]],
        "",
    ]
    if report["references"]:
        lines += ["For comparison (benchmarks/results/privacy.md, mean of 3 seeds):", ""]
        lines += [f"- {name}: {value:.4f}" for name, value in report["references"].items()]
        lines += [""]
    lines += [
        "## More users",
        "",
        "Private EASE (the model's own sigma, L2 and noise) with k times the training users, "
        "emulated by stacking the training rows k times (base L2 250 k), against "
        "non-private EASE (L2 250); items: how many the noisy counts chose. Mean "
        f"± sd over seeds {', '.join(map(str, report['seeds']))}.",
        "",
        "| epsilon | users | sigma | items | private NDCG@10 | non-private | kept |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['epsilon']:g} | {r['users']:,} (x{r['users_times']}) | {r['sigma']:.4g} "
            f"| {r['items_solved']:,} "
            f"| {r['ndcg@10']:.4f} ± {r['ndcg@10_sd']:.4f} | {r['non_private']:.4f} "
            f"| {100 * r['kept']:.1f}% |"
            for r in report["summary"]
        ],
        "",
        "Copies of these users are not new users: the emulation keeps their tastes and only "
        "shrinks the noise against them. A share above 100% means the L2 the noise asks for "
        "regularises better than EASE's default 250, which is not re-tuned here.",
        "",
        "At k = 1 the emulation is the model's fit: `run_one('ease', ...)` "
        f"with seed {report['seeds'][0]} scores "
        + "; ".join(
            f"{v:.4f} at epsilon {e} (emulation, same seed: "
            f"{_seed_value(report, float(e), 1, report['seeds'][0]):.4f})"
            for e, v in report["model_check"].items()
            if e in first
        )
        + ".",
        "",
    ]
    for e, users in report["users_needed"].items():
        lines.append(
            f"- epsilon {e}: private EASE keeps {KEEP:.0%} of its non-private NDCG@10 from "
            + (
                f"about {users:,.0f} users ({users / report['n_users']:.0f} x these)."
                if users
                else "none of the emulated sizes."
            )
        )
    lines += ["", link("privacy-ceiling", picture), ""]
    return "\n".join(lines)


def _seed_value(report: dict, epsilon: float, k: int, seed: int) -> float:
    return next(
        r["ndcg@10"]
        for r in report["runs"]
        if r["epsilon"] == epsilon and r["users_times"] == k and r["seed"] == seed
    )


if __name__ == "__main__":
    main()
