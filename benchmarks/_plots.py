"""The benchmarks' pictures, in the style of :mod:`kinrec.plots`.

One function per benchmark, ``plot_<kind>(report, path)``: it draws from the record the
benchmark writes as JSON what the benchmark's Markdown table shows, and writes it as PNG to
``path``. Each script calls its function where it writes its ``.md`` and ``.json`` (so a run
writes ``<name>.png`` beside ``<name>.md``) and links the picture from the Markdown with
:func:`link`; ``benchmarks/plot_results.py`` redraws every picture from the committed records.

Differences that matter are often a few thousandths of NDCG: comparisons of close scores are
drawn as dots (mean, ± sd over seeds, each seed) on an axis that does not start at zero;
bars (from zero) where the scores differ by multiples.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kinrec.plots import BAR_COLORS, COLORS, VALID_KEY, render_png, training_history, write_png

MUTED = COLORS["muted"]
KEPT = COLORS["kept"]
PURPLE = BAR_COLORS[3]

WHAT = {
    "serving": "latency (p50, p95, p99; from schedule; the service's own p99 bound) against "
    "the request rate, each window and the median of each level",
    "baselines": "NDCG@10 and Recall@20 per model (mean ± sd over seeds, each seed a dot, "
    "RecBole's NDCG@10 marked), NDCG@10 per user-activity segment, and the training curves "
    "where the records keep them",
    "transfer": "the tables as pictures: one panel per section",
    "transfer-search": "each setting's three validation scores against the defaults'",
    "new-users": "NDCG@10 and Recall@20 of each model against the number of a new user's "
    "events, in time order and at random",
    "linear-ceiling": "validation and test NDCG@10 of each closed-form model at its chosen "
    "setting, EASE marked",
    "kg": "TransE/RotatE training loss per epoch, link prediction against random, query "
    "latency (median and p95)",
    "encoder": "items/s of each encoder (median run as a bar, each run a dot) and the ratio "
    "to sentence-transformers",
    "adapt": "COLD and WARM Recall/NDCG@20 and ALL NDCG@10 of LM-kNN per encoder",
    "content": "COLD and WARM Recall/NDCG@20 and ALL NDCG@10 per model on ml-100k-cold "
    "(LightFM and random marked), and Recall/NDCG on amazon-scientific",
    "kg-gain": "ALL NDCG@10 and COLD Recall@20 of kinformer with and without its graph, "
    "lm-knn, kg-knn and pop, per split and item text (mean ± sd over seeds)",
    "ann-serving": "per-request latency of exact scoring and the index path, per kind of user "
    "and under load (log scale)",
    "replicas": "throughput, request latency and event-to-effect delay across replicas "
    "against the number of replicas",
}
"""What each kind of picture shows (the text of its Markdown link)."""

TRANSFER_SECTIONS = {
    "warm": "ml-100k warm NDCG@10 per model and seed",
    "cold": "ml-100k-cold WARM against COLD Recall@20 per model, new-item offset and slot "
    "budget, and the offset sweep",
    "ablate": "ALL NDCG@10, COLD and WARM Recall@20 of each ablation variant (mean ± sd)",
    "ml-1m": "ml-1m NDCG@10 and Recall@20",
    "amazon": "amazon-scientific NDCG@10 and Recall@20 per model",
}


def what(kind: str, report: Any = None) -> str:
    """The text of a picture's Markdown link (for ``transfer``: the sections it has)."""
    if kind == "transfer" and isinstance(report, Mapping):
        parts = [text for section, text in TRANSFER_SECTIONS.items() if section in report]
        return "; ".join(parts) or WHAT[kind]
    return WHAT[kind]


def link(kind: str, path: str | Path, report: Any = None) -> str:
    """The Markdown line that shows the picture at ``path`` (beside the ``.md``)."""
    return f"![{what(kind, report)}]({Path(path).name})"


# ------------------------------------------------------------------------ helpers
def _save(path: str | Path, size: tuple[float, float], draw: Callable[[Any], None]) -> Path:
    return write_png(path, render_png(draw, size))


def _stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = [float(v) for v in values]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _wrap(text: str, width: int = 34) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _dots(
    ax: Any,
    names: Sequence[str],
    series: Sequence[tuple[str, str, Mapping[str, Sequence[float]]]],
    reference: Sequence[str] = (),
    width: int = 34,
    decimals: int = 4,
) -> None:
    """One row per name, the first on top. Per series (label, colour, values per name): a
    dot at the mean of the name's values, a bar of ± one sd and a tick at each value when it
    has several, the mean (± sd) written beside it. Names in ``reference`` are drawn as open
    dots (numbers reported elsewhere, not measured in this run)."""
    n = len(series)
    step = 0.32 if n > 1 else 0.0
    ends: list[float] = []
    starts: list[float] = []
    for j, (label, color, values) in enumerate(series):
        labelled = False
        for i, name in enumerate(names):
            vals = _finite(values.get(name) or [])
            if not vals:
                continue
            mean, sd = _stats(vals)
            y = i + (j - (n - 1) / 2) * step
            if len(vals) > 1:
                ax.errorbar(mean, y, xerr=sd, fmt="none", ecolor=color, elinewidth=1.3, capsize=3)
                ax.plot(vals, [y] * len(vals), "|", color=color, ms=8, alpha=0.75)
            hollow = name in reference
            ax.plot(
                [mean],
                [y],
                "o",
                ms=6.5,
                mfc="white" if hollow else color,
                mec=color,
                mew=1.6,
                zorder=3,
                ls="",
                label=None if labelled else label,
            )
            labelled = True
            end = max(*vals, mean + sd)
            ends.append(end)
            starts.append(min(*vals, mean - sd))
            ax.annotate(
                f"{mean:.{decimals}f}" + (f" ± {sd:.{decimals}f}" if sd else ""),
                (end, y),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=7.5,
                color=color,
            )
    if ends and ax.get_xscale() == "log":
        ax.set_xlim(min(starts) / 1.6, max(ends) * 6)
    elif ends:
        lo, hi = min(starts), max(ends)
        span = (hi - lo) or abs(hi) or 1.0
        ax.set_xlim(lo - 0.06 * span, hi + 0.3 * span)
    ax.set_yticks(range(len(names)), [_wrap(x, width) for x in names], fontsize=8.5)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)


def _grouped_bars(
    ax: Any,
    groups: Sequence[str],
    metrics: Sequence[str],
    values: Mapping[str, Mapping[str, Sequence[float]]],
    labels: Mapping[str, str] | None = None,
    decimals: int = 4,
    written: bool = True,
    log: bool = False,
) -> None:
    """Bars: one group per ``groups`` entry, one bar per metric; each bar the mean of
    ``values[group][metric]``, ± one sd over them as an error bar (several values) and each
    value a dot; the mean written on the bar."""
    labels = labels or {}
    width = 0.8 / len(metrics)
    if log:
        ax.set_yscale("log")
    for j, metric in enumerate(metrics):
        color = BAR_COLORS[j % len(BAR_COLORS)]
        xs, means, sds, each = [], [], [], []
        for i, group in enumerate(groups):
            vals = _finite(values.get(group, {}).get(metric) or [])
            if not vals:
                continue
            mean, sd = _stats(vals)
            xs.append(i + (j - (len(metrics) - 1) / 2) * width)
            means.append(mean)
            sds.append(sd)
            each.append(vals)
        if not xs:
            continue
        ax.bar(xs, means, width * 0.92, color=color, label=labels.get(metric, metric))
        for x, mean, sd, vals in zip(xs, means, sds, each, strict=True):
            if len(vals) > 1:
                ax.errorbar(x, mean, yerr=sd, fmt="none", ecolor="#1d2330", elinewidth=1, capsize=2)
                ax.plot([x] * len(vals), vals, ".", color="#1d2330", ms=3.5, alpha=0.7)
        if written:
            tops = [m + s for m, s in zip(means, sds, strict=True)]
            for x, top, mean in zip(xs, tops, means, strict=True):
                ax.annotate(
                    f"{mean:.{decimals}f}",
                    (x, top),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=6.5,
                    rotation=90 if len(metrics) > 2 else 0,
                )
    ax.set_xticks(range(len(groups)), [_wrap(g, 18) for g in groups])
    ax.grid(axis="x", visible=False)
    bottom, top = ax.get_ylim()
    if log:
        ax.set_ylim(bottom, top * 4)
    else:
        ax.set_ylim(0, top * (1.35 if len(metrics) > 2 else 1.12))


def _legend_below(fig: Any, ax: Any, ncols: int = 3) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8)


def _dataset(path: str | Path, prefix: str) -> str:
    stem = Path(path).stem
    return stem.removeprefix(prefix) or stem


# ------------------------------------------------------------------------ serving
def plot_serving(report: Mapping[str, Any], path: str | Path) -> Path:
    """benchmarks/serving.py: latency against the open-loop request rate (log-log). For each
    percentile a dot per window and a line through the median of each level; the client's
    p99 from schedule and the service's own p99 bucket bound (``/metrics``) beside them;
    the closed-loop saturation throughput as a vertical line."""
    rows = list(report["load"])
    series = [
        ("p50_ms", "p50", BAR_COLORS[0], "-"),
        ("p95_ms", "p95", BAR_COLORS[1], "-"),
        ("p99_ms", "p99", BAR_COLORS[2], "-"),
        ("p99_from_schedule_ms", "p99 from schedule (client queueing included)", PURPLE, "--"),
        ("server_p99_le_ms", "service's own p99 <= (bucket bound, /metrics)", MUTED, ":"),
    ]
    clients = list(dict.fromkeys(r["client"] for r in rows))
    model = report.get("service", {}).get("model", "")

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        for c, client in enumerate(clients):
            mine = [r for r in rows if r["client"] == client]
            rates = sorted({float(r["target_rps"]) for r in mine})
            for key, label, color, style in series:
                points = [(float(r["target_rps"]), r.get(key)) for r in mine]
                points = [(x, float(y)) for x, y in points if y is not None and math.isfinite(y)]
                if not points:
                    continue
                marker = "o" if c == 0 else "s"
                ax.plot(*zip(*points, strict=True), marker, color=color, ms=3.5, alpha=0.45)
                medians = [
                    (rate, statistics.median(y for x, y in points if x == rate))
                    for rate in rates
                    if any(x == rate for x, _ in points)
                ]
                name = label if len(clients) == 1 else f"{client}: {label}"
                ax.plot(
                    *zip(*medians, strict=True),
                    marker=marker,
                    ls=style if c == 0 else "-.",
                    color=color,
                    lw=1.8,
                    ms=5,
                    label=name,
                )
        saturation = report.get("saturation", {}).get("throughput_rps")
        if saturation:
            ax.axvline(saturation, color=COLORS["metric"], lw=1, ls=(0, (4, 3)))
            ax.annotate(
                f"closed-loop saturation\n{saturation:,.0f} req/s",
                (saturation, 1),
                xycoords=("data", "axes fraction"),
                xytext=(-4, -4),
                textcoords="offset points",
                ha="right",
                va="top",
                fontsize=8,
                color=COLORS["metric"],
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        rates = sorted({float(r["target_rps"]) for r in rows})
        ax.set_xticks(rates, [f"{x:g}" for x in rates])
        ax.minorticks_off()
        ax.set_xlabel("target request rate (req/s, open loop; 90% GET recommendations, 10% POST)")
        ax.set_ylabel("latency (ms, log scale)")
        ax.set_title(f"Serving latency under load ({model})".replace(" ()", ""))
        _legend_below(fig, ax, ncols=3)

    return _save(path, (9, 5.6), draw)


# ------------------------------------------------------------------------ baselines
def plot_baselines(
    report: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    reference: Mapping[str, float] | None = None,
) -> Path:
    """benchmarks/baselines.py: NDCG@10 and Recall@20 per model (bars: mean over seeds, ± sd,
    each seed a dot), ``reference`` (RecBole 1.2.1's NDCG@10 per model) marked on the NDCG
    bars; below, NDCG@10 per user-activity segment of the records (mean ± sd over seeds), and
    the training curves (validation NDCG@10 per epoch, the first seed) of the models trained in
    epochs, where the records keep their history (``fit_info["history"]``: records written
    since ``kinrec benchmark`` keeps it)."""
    models = list(report)
    values = {m: {k: [r[k] for r in report[m]] for k in ("ndcg@10", "recall@20")} for m in models}
    seeds = {m: len(report[m]) for m in models}
    segments = [s for s in ("users:low", "users:mid", "users:high") if _has_segment(report, s)]
    users = next(iter(report.values()))[0].get("segment_users", {}) if models else {}
    split = _dataset(path, "baselines-")
    curves = {m: report[m][0].get("fit_info", {}) for m in models if report[m]}
    curves = {m: info for m, info in curves.items() if training_history(info)}
    rows = 1 + bool(segments) + bool(curves)

    def draw(fig: Any) -> None:
        axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
        ax = axes[0]
        _grouped_bars(
            ax,
            [f"{m}\n({seeds[m]} seed{'s' * (seeds[m] > 1)})" for m in models],
            ["ndcg@10", "recall@20"],
            {f"{m}\n({seeds[m]} seed{'s' * (seeds[m] > 1)})": values[m] for m in models},
            {"ndcg@10": "NDCG@10", "recall@20": "Recall@20"},
        )
        if reference:
            xs = [i - 0.2 for i, m in enumerate(models) if m in reference]
            ys = [reference[m] for m in models if m in reference]
            ax.plot(xs, ys, "_", color="#1d2330", ms=22, mew=2.2, label="RecBole 1.2.1 NDCG@10")
        ax.set_ylabel("test score (full ranking)")
        ax.set_title(f"Baselines on {split}: test NDCG@10 and Recall@20")
        ax.legend(loc="upper left", ncols=3, fontsize=8)
        if segments:
            seg_values = {
                m: {s: [r["segments"][s]["ndcg@10"] for r in report[m]] for s in segments}
                for m in models
            }
            labels = {
                s: f"{s.partition(':')[2]}-activity users"
                + (f" ({users[s]:,})" if s in users else "")
                for s in segments
            }
            _grouped_bars(axes[1], models, segments, seg_values, labels, decimals=3)
            axes[1].set_ylabel("test NDCG@10")
            axes[1].set_title("NDCG@10 per user-activity segment (the records' segments)")
            axes[1].legend(loc="upper left", ncols=3, fontsize=8)
        if curves:
            _training_curves(axes[-1], curves, [BAR_COLORS[models.index(m) % 5] for m in curves])

    return _save(path, (max(8.0, 1.3 * len(models) + 2), 4.1 * rows), draw)


def _training_curves(
    ax: Any, fit_infos: Mapping[str, Mapping[str, Any]], colors: Sequence[str]
) -> None:
    """Validation NDCG@10 against the epoch for each model's ``fit_info`` history (the loss
    has a different scale per model); a star at the epoch whose state was kept."""
    for (name, info), color in zip(fit_infos.items(), colors, strict=True):
        rows = [r for r in training_history(info) if VALID_KEY in r]
        if not rows:
            continue
        epochs = [int(r["epoch"]) for r in rows]
        scores = [float(r[VALID_KEY]) for r in rows]
        ax.plot(epochs, scores, "-", marker="o" if len(rows) <= 40 else None, ms=3, lw=1.6,
                color=color, label=name)  # fmt: skip
        best = info.get("best_epoch")
        if best in epochs:
            ax.plot([best], [scores[epochs.index(best)]], "*", ms=13, color=color, mec="white")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title("Training curves (first seed; star: the epoch whose state was kept)")
    ax.legend(loc="lower right", fontsize=8)


def _has_segment(report: Mapping[str, Sequence[Mapping[str, Any]]], segment: str) -> bool:
    return all(segment in r.get("segments", {}) for runs in report.values() for r in runs)


# ------------------------------------------------------------------------ transfer
def _metric(records: Sequence[Mapping[str, Any]], key: str, segment: str | None = None):
    return [(r["segments"][segment] if segment else r)[key] for r in records]


def plot_transfer(
    report: Mapping[str, Any],
    path: str | Path,
    recbole: Mapping[str, Mapping[str, float]] | None = None,
    lightfm: Mapping[str, float] | None = None,
    cold_target: float | None = None,
) -> Path:
    """benchmarks/transfer.py: one panel (or a pair) per section the record has.

    * warm: NDCG@10 per model (mean ± sd, each seed), RecBole's numbers (``recbole``
      ``["ml-100k"]``) as open dots, the target (RecBole EASE + 5%) as a line;
    * cold: WARM against COLD Recall@20 per model (± sd), LightFM (``lightfm``), one
      kinformer's new-item offsets, the two slot budgets and the best merges, with the two
      cold conditions (COLD >= ``cold_target``, WARM >= LightGCN's); beside it the offset
      sweep's four metrics against the offset;
    * ablate: ALL NDCG@10 and WARM Recall@20 against COLD Recall@20 per variant (± sd);
    * ml-1m, amazon: NDCG@10 and Recall@20 per model.
    """
    recbole = recbole or {}
    panels: list[tuple[float, Callable[[Any], None]]] = []
    if "warm" in report:
        warm_runs = report["warm"]
        warm_refs = {f"RecBole {k}": [v] for k, v in recbole.get("ml-100k", {}).items()}
        warm_names = [*warm_runs, *warm_refs]

        def warm(sub: Any) -> None:
            ax = sub.subplots()
            values = {n: _metric(r, "ndcg@10") for n, r in warm_runs.items()} | warm_refs
            series = [("NDCG@10", BAR_COLORS[0], values)]
            _dots(ax, warm_names, series, reference=list(warm_refs), width=44)
            ease = recbole.get("ml-100k", {}).get("EASE")
            if ease:
                ax.axvline(ease * 1.05, color=KEPT, ls="--", lw=1.2)
                ax.annotate(
                    f"target {ease * 1.05:.3f}\n(RecBole EASE + 5%)",
                    (ease * 1.05, 0),
                    xycoords=("data", "axes fraction"),
                    xytext=(4, 4),
                    textcoords="offset points",
                    va="bottom",
                    fontsize=8,
                    color=KEPT,
                )
            ax.set_xlabel("test NDCG@10 (dot: mean over seeds, bar: ± sd, ticks: each seed)")
            sub.suptitle(
                "ml-100k warm split: NDCG@10 (open dots: RecBole 1.2.1's reported numbers)",
                fontweight="bold",
            )

        panels.append((0.36 * len(warm_names) + 1.4, warm))
    if "cold" in report:
        legend = 3 + len(report.get("merge_frontier") or {})
        panels.append(
            (5.4 + 0.17 * legend, lambda sub: _transfer_cold(sub, report, lightfm, cold_target))
        )
    if "ablate" in report:
        panels.append(
            (
                0.42 * len(report["ablate"]) + 1.6,
                lambda sub: _transfer_ablate(sub, report["ablate"]),
            )
        )
    if "ml-1m" in report:
        ml1m_runs = {
            "kinformer": report["ml-1m"]["kinformer"],
            "ease (kinrec)": report["ml-1m"]["ease"],
        }
        ease_1m = recbole.get("ml-1m", {}).get("EASE")
        ml1m_refs = {"RecBole EASE": [ease_1m]} if ease_1m else {}

        def ml1m(sub: Any) -> None:
            ax = sub.subplots()
            ndcg = {n: _metric(r, "ndcg@10") for n, r in ml1m_runs.items()} | ml1m_refs
            recall = {n: _metric(r, "recall@20") for n, r in ml1m_runs.items()}
            series = [("NDCG@10", BAR_COLORS[0], ndcg), ("Recall@20", BAR_COLORS[1], recall)]
            _dots(ax, [*ml1m_runs, *ml1m_refs], series, reference=list(ml1m_refs))
            if ml1m_refs:
                target = ml1m_refs["RecBole EASE"][0] * 1.05
                ax.axvline(target, color=KEPT, ls="--", lw=1.2, label=f"target {target:.3f}")
            seeds = len(ml1m_runs["kinformer"])
            ax.set_xlabel(f"test score (kinformer: {seeds} seed(s), mean ± sd and each seed)")
            ax.legend(loc="lower right", fontsize=8)
            sub.suptitle(
                "ml-1m: NDCG@10 and Recall@20 (target: RecBole EASE NDCG@10 + 5%)",
                fontweight="bold",
            )

        panels.append((0.5 * (2 + len(ml1m_refs)) + 1.8, ml1m))
    if "amazon" in report:
        runs_a = report["amazon"]

        def amazon(sub: Any) -> None:
            ax = sub.subplots()
            ndcg = {n: _metric(r, "ndcg@10") for n, r in runs_a.items()}
            recall = {n: _metric(r, "recall@20") for n, r in runs_a.items()}
            series = [("NDCG@10", BAR_COLORS[0], ndcg), ("Recall@20", BAR_COLORS[1], recall)]
            _dots(ax, list(runs_a), series, width=44)
            ax.set_xlim(left=0)
            ax.set_xlabel("test score (chronological leave-one-out, full ranking)")
            ax.legend(loc="lower right", fontsize=8)
            sub.suptitle("amazon-scientific: NDCG@10 and Recall@20", fontweight="bold")

        panels.append((0.5 * len(runs_a) + 1.4, amazon))
    if not panels:
        raise ValueError("nothing to draw: no section of benchmarks/transfer.py in the record")
    heights = [h for h, _ in panels]

    def draw(fig: Any) -> None:
        subs = fig.subfigures(len(panels), 1, height_ratios=heights, squeeze=False)[:, 0]
        for sub, (_, panel) in zip(subs, panels, strict=True):
            panel(sub)

    return _save(path, (12, sum(heights)), draw)


def _transfer_cold(
    sub: Any,
    report: Mapping[str, Any],
    lightfm: Mapping[str, float] | None,
    cold_target: float | None,
) -> None:
    runs = report["cold"]
    left, right = sub.subplots(1, 2, width_ratios=[1.35, 1])
    warm_bar = None
    if "lightgcn" in runs:
        warm_bar = statistics.mean(_metric(runs["lightgcn"], "recall@20", "warm"))
    placed: list[tuple[float, float]] = []
    for i, (name, records) in enumerate(runs.items()):
        cold, cold_sd = _stats(_metric(records, "recall@20", "cold"))
        warm_, warm_sd = _stats(_metric(records, "recall@20", "warm"))
        color = BAR_COLORS[i % len(BAR_COLORS)]
        left.errorbar(
            cold,
            warm_,
            xerr=cold_sd or None,
            yerr=warm_sd or None,
            fmt="o",
            ms=8,
            color=color,
            capsize=3,
            zorder=4,
        )
        near = sum(abs(cold - x) < 0.03 and abs(warm_ - y) < 0.03 for x, y in placed)
        placed.append((cold, warm_))
        seeds = f" ({len(records)} seeds)" if len(records) > 1 else ""
        left.annotate(
            name + seeds,
            (cold, warm_),
            xytext=(9, -12 * near - 14 if near else 6),
            textcoords="offset points",
            fontsize=8.5,
            fontweight="bold",
            color=color,
            zorder=5,
        )
    if lightfm:
        left.plot([lightfm["cold_r20"]], [lightfm["warm_r20"]], "s", mfc="white", mec=MUTED, ms=8)
        left.annotate(
            "LightFM 1.17\ncontent-only",
            (lightfm["cold_r20"], lightfm["warm_r20"]),
            xytext=(7, -4),
            textcoords="offset points",
            fontsize=8,
            color=MUTED,
            va="top",
        )
    sweep = report.get("offset_sweep")
    if sweep:
        rows = sweep["rows"]
        left.plot(
            [r[2] for r in rows],
            [r[4] for r in rows],
            "-",
            marker=".",
            color=COLORS["metric"],
            lw=1.2,
            label="kinformer (seed 2026) at each new-item offset (numbers)",
        )
        last = None
        for offset, _, c, _, w in rows:
            chosen = offset == sweep["chosen"]
            if not chosen and last and math.hypot(c - last[0], w - last[1]) < 0.03:
                continue
            last = (c, w)
            left.annotate(
                f"{offset:g}" + (" (chosen)" if chosen else ""),
                (c, w),
                xytext=(-5, -5),
                textcoords="offset points",
                fontsize=7,
                ha="right",
                va="top",
                color=COLORS["metric"],
            )
    budget = report.get("slot_budget")
    if budget:
        left.plot(
            [b[1] for b in budget],
            [b[2] for b in budget],
            "--",
            marker="^",
            ms=4,
            color=BAR_COLORS[4],
            lw=1.1,
            label=f"EASE + kinformer, k new-item slots (k = {budget[0][0]} to {budget[-1][0]})",
        )
        left.plot(
            [b[3] for b in budget],
            [b[4] for b in budget],
            "--",
            marker="v",
            ms=4,
            color=PURPLE,
            lw=1.1,
            label="kinformer alone, k reserved slots",
        )
    frontier = report.get("merge_frontier") or {}
    for j, (name, found) in enumerate(frontier.items()):
        if found.get("best"):
            c, w = found["best"]
            left.plot(
                [c],
                [w],
                marker="XPD*h"[j % 5],
                ms=7,
                ls="",
                color="#1d2330",
                alpha=0.8,
                label=f"best merge with COLD >= target: {name}",
            )
    if cold_target is not None:
        left.axvline(cold_target, color=KEPT, ls="--", lw=1.1)
    if warm_bar is not None:
        left.axhline(warm_bar, color=KEPT, ls="--", lw=1.1)
    left.set_xlim(-0.02, None)
    left.set_ylim(-0.02, left.get_ylim()[1] + 0.03)
    if cold_target is not None and warm_bar is not None:
        from matplotlib.patches import Rectangle

        left.add_patch(Rectangle((cold_target, warm_bar), 1, 1, color=KEPT, alpha=0.1, lw=0))
        left.annotate(
            f"shaded: both cold conditions\n(COLD >= {cold_target:g}, WARM >= LightGCN's "
            f"{warm_bar:.4f})",
            (0.99, 0.99),
            xycoords="axes fraction",
            ha="right",
            va="top",
            fontsize=7.5,
            color=KEPT,
        )
    left.set_xlabel("COLD Recall@20 (new items: no training rows)")
    left.set_ylabel("WARM Recall@20")
    left.set_title("WARM against COLD Recall@20 (models: mean ± sd over seeds)")
    if left.get_legend_handles_labels()[0]:
        left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=7.5)
    if sweep:
        rows = sweep["rows"]
        offsets = [r[0] for r in rows]
        for k, (label, color) in enumerate(
            [
                ("ALL NDCG@10", BAR_COLORS[0]),
                ("COLD Recall@20", COLORS["metric"]),
                ("COLD NDCG@20", BAR_COLORS[4]),
                ("WARM Recall@20", PURPLE),
            ],
            start=1,
        ):
            right.plot(
                offsets, [r[k] for r in rows], "-o", ms=3.5, lw=1.5, color=color, label=label
            )
        right.axvline(sweep["chosen"], color=KEPT, ls="--", lw=1.1)
        right.annotate(
            f"chosen on validation: {sweep['chosen']:g}",
            (sweep["chosen"], 1),
            xycoords=("data", "axes fraction"),
            xytext=(-4, -2),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize=8,
            color=KEPT,
        )
        right.set_xlabel("new-item offset (one trained kinformer, seed 2026)")
        right.set_ylabel("test score")
        right.set_title("The offset sweep on test (diagnostic)")
        right.legend(loc="center right", fontsize=8)
    else:
        right.set_visible(False)
    sub.suptitle("ml-100k-cold: new items against known ones", fontweight="bold")


def _transfer_ablate(sub: Any, ablate: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Three panels of rows (ALL NDCG@10, COLD and WARM Recall@20), one row per variant, the
    full kinformer's mean as a line."""
    names = list(ablate)
    metrics = [
        ("ALL NDCG@10", None, "ndcg@10", BAR_COLORS[0]),
        ("COLD Recall@20", "cold", "recall@20", COLORS["metric"]),
        ("WARM Recall@20", "warm", "recall@20", PURPLE),
    ]
    axes = sub.subplots(1, len(metrics), sharey=True)
    seeds = max(len(r) for r in ablate.values())
    for j, (ax, (label, segment, key, color)) in enumerate(zip(axes, metrics, strict=True)):
        values = {n: _metric(r, key, segment) for n, r in ablate.items()}
        _dots(ax, names, [(label, color, values)], width=44)
        full = statistics.mean(values[names[0]])
        ax.axvline(full, color=KEPT, ls="--", lw=1.1)
        ax.set_xlim(left=min(0.0, ax.get_xlim()[0]))
        ax.set_xlabel(label)
        if j:
            ax.tick_params(labelleft=False)
    spread = f"mean ± sd over {seeds} seeds, ticks: each seed" if seeds > 1 else "one seed"
    sub.suptitle(
        f"Ablations on ml-100k-cold ({spread}); dashed: the full kinformer ({names[0]})",
        fontweight="bold",
    )


def plot_transfer_search(report: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """benchmarks/tune_transfer.py: each setting's two-tower validation, validation and
    pseudo-cold NDCG@10 (one panel each), the defaults' as a line."""
    names = [", ".join(f"{k}={v}" for k, v in r["params"].items()) or "defaults" for r in report]
    metrics = [
        ("two_tower_valid_ndcg@10", "two-tower valid NDCG@10"),
        ("valid_ndcg@10", "valid NDCG@10"),
        ("pseudo_cold_ndcg@10", "pseudo-cold NDCG@10"),
    ]
    default = next((r for r in report if not r["params"]), None)

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, len(metrics), sharey=True)
        for j, (ax, (key, label)) in enumerate(zip(axes, metrics, strict=True)):
            values = {n: [r[key]] for n, r in zip(names, report, strict=True) if r[key] is not None}
            _dots(ax, names, [(label, BAR_COLORS[j], values)], width=30)
            if default and default[key] is not None:
                ax.axvline(default[key], color=KEPT, ls="--", lw=1.1)
            ax.set_xlabel(label)
            if j:
                ax.tick_params(labelleft=False)
        fig.suptitle(
            "kinformer hyper-parameter search: one setting changed per row (validation only; "
            "dashed: the defaults)",
            fontweight="bold",
        )

    return _save(path, (13, 0.38 * len(names) + 1.6), draw)


# ------------------------------------------------------------------------ new users
METRIC_ROWS = (("ndcg@10", "NDCG@10"), ("recall@20", "Recall@20"))


def plot_new_users(report: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """benchmarks/new_users.py: NDCG@10 (top) and Recall@20 (bottom) against n, the number of
    a held-out user's events the model folds in, taken in time order (left) and at random
    (right); one colour per model, its ``+ prior`` variant dashed, ``+ graph`` dotted."""
    labels = list(report)
    keys = list(next(iter(report.values()))["histories"]) if labels else []
    orders = list(dict.fromkeys(k.split(" n=")[0] for k in keys))
    ns = sorted({int(k.split(" n=")[1]) for k in keys})
    bases = list(dict.fromkeys(label.split(" + prior")[0] for label in labels))
    split = _dataset(path, "new-users-")

    def draw(fig: Any) -> None:
        axes = fig.subplots(2, len(orders), sharex=True, sharey="row", squeeze=False)
        for col, order in enumerate(orders):
            for row, (metric, name) in enumerate(METRIC_ROWS):
                ax = axes[row, col]
                for label in labels:
                    base = label.split(" + prior")[0]
                    color = BAR_COLORS[bases.index(base) % len(BAR_COLORS)]
                    prior = label != base
                    ys = [report[label]["histories"][f"{order} n={n}"][metric] for n in ns]
                    style = (":" if " + graph" in label else "--") if prior else "-"
                    fill = "white" if prior else color
                    ax.plot(
                        ns, ys, style, marker="o", ms=4, color=color, mfc=fill, lw=1.6, label=label
                    )
                ax.set_xscale("log")
                ax.set_xticks(ns, [str(n) for n in ns])
                ax.minorticks_off()
                if row == 0:
                    title = "first n events in time order" if order == "time" else ""
                    ax.set_title(title or f"n events in {order} order")
                else:
                    ax.set_xlabel("n: the new user's events folded in")
                if col == 0:
                    ax.set_ylabel(f"{name} on the rest")
        fig.suptitle(
            f"New users on {split}: users held out of training, scored from n of their events",
            fontweight="bold",
        )
        _legend_below(fig, axes[0, 0], ncols=4)

    return _save(path, (5.2 * max(len(orders), 1) + 1, 7.4), draw)


# ------------------------------------------------------------------------ linear ceiling
def plot_linear_ceiling(report: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """benchmarks/linear_ceiling.py: validation and test NDCG@10 of each closed-form model at
    the setting chosen on validation; EASE's test NDCG@10 as a line."""
    names = list(report)
    split = _dataset(path, "linear-ceiling-")

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        valid = {n: [report[n]["valid"]] for n in names}
        test = {n: [report[n]["test"]] for n in names}
        series = [
            ("valid NDCG@10 (chooses the setting)", MUTED, valid),
            ("test NDCG@10 (read once)", BAR_COLORS[0], test),
        ]
        _dots(ax, names, series, width=40)
        if "EASE" in report:
            ax.axvline(report["EASE"]["test"], color=KEPT, ls="--", lw=1.1, label="EASE, test")
        ax.set_xlabel("NDCG@10")
        _legend_below(fig, ax, ncols=3)
        ax.set_title(f"Closed-form item-item models on {split}, each at its validation choice")

    return _save(path, (10, 0.5 * len(names) + 1.8), draw)


# ------------------------------------------------------------------------ knowledge graph
def plot_kg(report: Mapping[str, Any], path: str | Path) -> Path:
    """benchmarks/kg.py: TransE/RotatE training loss per epoch and their filtered MRR and
    Hits@10 (the random ranking's as a mark), and each query's median and p95 latency."""
    kge = list(report.get("kge", []))
    queries = [
        (f"{g['dataset']}: {q}", v)
        for g in report.get("graphs", [])
        for q, v in g["queries"].items()
    ]

    def draw(fig: Any) -> None:
        top, bottom = fig.subfigures(2, 1, height_ratios=[3.6, 0.3 * len(queries) + 1.2])
        if kge:
            curve, bars = top.subplots(1, 2)
            for i, k in enumerate(kge):
                losses = k.get("losses") or []
                color = BAR_COLORS[i % len(BAR_COLORS)]
                epochs = range(1, len(losses) + 1)
                label = f"{k['dataset']} {k['model']}"
                curve.plot(epochs, losses, "-o", ms=3.5, color=color, label=label)
            curve.set_xlabel("epoch")
            curve.set_ylabel("training loss (mean per epoch)")
            curve.set_title("Knowledge-graph embeddings: training curves")
            curve.legend(fontsize=8)
            from matplotlib.ticker import MaxNLocator

            curve.xaxis.set_major_locator(MaxNLocator(integer=True))
            labels = {"mrr": "MRR", "hits@10": "Hits@10", "hits@1": "Hits@1"}
            values = {f"{k['dataset']}\n{k['model']}": {m: [k[m]] for m in labels} for k in kge}
            _grouped_bars(bars, list(values), list(labels), values, labels)
            random = max(k["random_hits@10"] for k in kge)
            bars.set_title(f"Link prediction, held-out 5% (random Hits@10 <= {random:.4f})")
            bars.legend(fontsize=8, loc="upper left", ncols=3)
        else:
            top.set_visible(False)
        ax = bottom.subplots()
        ax.set_xscale("log")
        median = {n: [v["median_ms"]] for n, v in queries}
        p95 = {n: [v["p95_ms"]] for n, v in queries}
        series = [("median ms", BAR_COLORS[0], median), ("p95 ms", BAR_COLORS[1], p95)]
        _dots(ax, [n for n, _ in queries], series, width=60, decimals=3)
        ax.set_xlabel("latency per query (ms, log scale; random items / item pairs)")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("Graph queries")

    return _save(path, (12, 3.6 + 0.3 * len(queries) + 1.2), draw)


def plot_kg_gain(report: Mapping[str, Any], path: str | Path) -> Path:
    """benchmarks/kg_gain.py: one row per (split, text, model), ALL NDCG@10 and COLD
    Recall@20 side by side (mean ± sd over seeds, each seed a tick)."""
    runs = report.get("runs", {})
    names = []
    for key in runs:
        split, text, model = key.split("|")
        names.append(f"{split} · {'' if text == '-' else text + ' · '}{model}")
    metrics = [
        ("ALL NDCG@10", None, "ndcg@10", BAR_COLORS[0]),
        ("COLD Recall@20", "cold", "recall@20", COLORS["metric"]),
    ]

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, len(metrics), sharey=True)
        for j, (ax, (label, segment, key, color)) in enumerate(zip(axes, metrics, strict=True)):
            values = {
                name: [
                    (r.get("segments", {}).get(segment) if segment else r or {}).get(key)
                    for r in records
                    if not segment or r.get("segment_users", {}).get(segment)
                ]
                for name, records in zip(names, runs.values(), strict=True)
            }
            _dots(ax, names, [(label, color, values)], width=48)
            ax.set_xlabel(label)
            if j:
                ax.tick_params(labelleft=False)
        fig.suptitle(
            "What the knowledge graph adds (test; mean ± sd over seeds, ticks: each seed)",
            fontweight="bold",
        )

    return _save(path, (13, max(3.2, 0.32 * len(names) + 1.6)), draw)


# ------------------------------------------------------------------------ text encoder
def plot_encoder(report: Mapping[str, Any], path: str | Path) -> Path:
    """benchmarks/encoder.py: items/s of each encoder, the median run as a bar and each run
    as a dot, the ratio to sentence-transformers written beside it."""
    encoders = list(report.get("encoders", []))
    if not encoders:
        raise ValueError("nothing to draw: the record has no throughput part")
    texts = report.get("meta", {}).get("texts")

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        ys = range(len(encoders))
        speeds = [r["items_per_s"] for r in encoders]
        colors = [MUTED if r["encoder"].startswith("sentence") else BAR_COLORS[0] for r in encoders]
        ax.barh(list(ys), speeds, 0.62, color=colors)
        every = []
        for y, r in zip(ys, encoders, strict=True):
            runs = [texts / s for s in r.get("runs_s", []) if texts and s]
            every += runs
            ax.plot(runs, [y] * len(runs), "o", ms=4, mfc="white", mec="#1d2330", mew=1)
            ax.annotate(
                f"{r['items_per_s']:.0f}/s, {r['ratio']:.2f}x (threads {r['threads']})",
                (max([r["items_per_s"], *runs]), y),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        ax.set_yticks(list(ys), [_wrap(r["encoder"], 30) for r in encoders], fontsize=8.5)
        ax.set_ylim(len(encoders) - 0.5, -0.5)
        ax.set_xlim(0, max(speeds + every) * 1.45)
        ax.grid(axis="y", visible=False)
        n = f"{texts:,} " if texts else ""
        ax.set_xlabel(f"items/s encoding {n}item texts (bar: median run; dots: each run)")
        ax.set_title("Text encoder throughput (grey: the sentence-transformers baseline)")

    return _save(path, (10, 0.55 * len(encoders) + 1.5), draw)


# ------------------------------------------------------------------------ cold/warm segments
SEGMENT_METRICS = {
    "COLD R@20": ("cold", "recall@20"),
    "COLD N@20": ("cold", "ndcg@20"),
    "WARM R@20": ("warm", "recall@20"),
    "WARM N@20": ("warm", "ndcg@20"),
    "ALL N@10": (None, "ndcg@10"),
}


def _segment_values(records: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, list]]:
    return {
        name: {
            label: [(r["segments"][seg] if seg else r)[key]]
            for label, (seg, key) in SEGMENT_METRICS.items()
        }
        for name, r in records.items()
    }


def plot_adapt(report: Mapping[str, Any], path: str | Path) -> Path:
    """benchmarks/adapt.py: COLD and WARM Recall/NDCG@20 and ALL NDCG@10 of LM-kNN with
    each encoder (base, LoRA two-tower adapter, full fine-tune)."""
    records = report["records"]

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        _grouped_bars(ax, list(records), list(SEGMENT_METRICS), _segment_values(records))
        ax.set_ylabel("test score (full ranking, train+valid masked)")
        ax.set_title("LM-kNN on ml-100k-cold with each encoder (COLD: items without train rows)")
        _legend_below(fig, ax, ncols=5)

    return _save(path, (9, 4.8), draw)


def plot_content(
    report: Mapping[str, Any], path: str | Path, references: Mapping[str, float] | None = None
) -> Path:
    """benchmarks/content.py: COLD and WARM Recall/NDCG@20 and ALL NDCG@10 per model on
    ml-100k-cold, ``references`` (COLD R@20 of other rankers) as lines; Recall and NDCG at 10
    and 20 per model on amazon-scientific."""
    cold = {r["model"]: r for r in report["records"].get("ml-100k-cold", [])}
    amazon = {r["model"]: r for r in report["records"].get("amazon-scientific", [])}
    rows = [x for x in (cold, amazon) if x]

    def draw(fig: Any) -> None:
        ratios = [1.5, 1][: len(rows)]
        axes = list(fig.subplots(1, len(rows), width_ratios=ratios, squeeze=False)[0])
        if cold:
            ax = axes.pop(0)
            _grouped_bars(ax, list(cold), list(SEGMENT_METRICS), _segment_values(cold))
            for j, (label, value) in enumerate((references or {}).items()):
                color = [MUTED, KEPT][j % 2]
                ax.axhline(value, color=color, ls="--", lw=1, label=f"{label}: {value:g}")
            ax.set_ylabel("test score (full ranking, train+valid masked)")
            ax.set_title("ml-100k-cold")
            ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=4)
        if amazon:
            ax = axes.pop(0)
            metrics = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]
            _grouped_bars(
                ax,
                list(amazon),
                metrics,
                {m: {k: [r[k]] for k in metrics} for m, r in amazon.items()},
                {"recall@10": "R@10", "ndcg@10": "N@10", "recall@20": "R@20", "ndcg@20": "N@20"},
            )
            ax.set_title("amazon-scientific (leave-one-out)")
            ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=4)
        fig.suptitle("Content recommenders", fontweight="bold")

    return _save(path, (13, 5.2), draw)


# ------------------------------------------------------------------------ index serving
def plot_ann_serving(report: Mapping[str, Any], path: str | Path) -> Path:
    """benchmarks/ann_serving.py: p50 and p99 per request of exact scoring and the index
    path for each kind of user (in process), and under load (log scale)."""
    compare = {k: v for k, v in report.get("compare", {}).items() if isinstance(v, Mapping)}
    load = [r for r in report.get("load", []) if "error" not in r]

    def draw(fig: Any) -> None:
        left, right = fig.subplots(1, 2, width_ratios=[1.4, 1])
        right.set_visible(bool(load))
        keys = ["exact_p50_ms", "exact_p99_ms", "index_p50_ms", "index_p99_ms"]
        labels = {k: k.replace("_ms", "").replace("_", " ") for k in keys}
        values = {
            f"{kind.replace('_', ' ')} ({row.get('users', '?')} users)": {m: [row[m]] for m in keys}
            for kind, row in compare.items()
        }
        _grouped_bars(left, list(values), keys, values, labels, decimals=1, log=True)
        left.set_ylabel("ms per request (log scale)")
        left.set_title("In process, no HTTP, no cache")
        left.legend(fontsize=7.5, ncols=2, loc="upper left")
        metrics = ["p50_ms", "p99_ms", "get_p99_ms", "p99_from_schedule_ms"]
        names = [
            f"{r.get('path', r['client'])}\n{r['achieved_rps']:g} of {r['target_rps']:g} req/s"
            for r in load
        ]
        values = {n: {m: [r[m]] for m in metrics} for n, r in zip(names, load, strict=True)}
        labels = {"p50_ms": "p50", "p99_ms": "p99", "get_p99_ms": "GET p99",
                  "p99_from_schedule_ms": "p99 from schedule"}  # fmt: skip
        _grouped_bars(right, names, metrics, values, labels, decimals=1, log=True)
        right.set_ylabel("ms (log scale)")
        right.set_title("Under load over HTTP (achieved of target rate)")
        right.legend(fontsize=7.5, ncols=2, loc="upper right")
        items = report.get("args", {}).get("items")
        fig.suptitle(
            "Index retrieval with exact re-scoring against exact scoring"
            + (f" ({items:,} items)" if items else ""),
            fontweight="bold",
        )

    return _save(path, (13, 5), draw)


# ------------------------------------------------------------------------ replicas
def plot_replicas(report: Mapping[str, Any], path: str | Path) -> Path:
    """benchmarks/replicas.py: closed-loop throughput (bars) and p50/p99 latency (closed
    loop and at the fixed rate) per number of replicas; the event-to-effect delay across
    replicas (p50, p99: idle, at the fixed rate, saturated), the 100 ms target marked."""
    rows = list(report["configs"])
    counts = [int(r["replicas"]) for r in rows]
    rate = report.get("rate")

    def draw(fig: Any) -> None:
        left, mid, right = fig.subplots(1, 3)
        left.bar(counts, [r["throughput_rps"] for r in rows], color=BAR_COLORS[0], width=0.6)
        left.set_xticks(counts)
        left.set_xlabel("replicas")
        left.set_ylabel("requests/s (closed loop)")
        left.set_title("Throughput")
        lines = (
            (lambda r: r["p50_ms"], "p50, closed loop", BAR_COLORS[0], "-"),
            (lambda r: r["p99_ms"], "p99, closed loop", BAR_COLORS[2], "-"),
            (lambda r: r["open_loop"]["p50_ms"], f"p50 at {rate:g} req/s", BAR_COLORS[0], "--"),
            (lambda r: r["open_loop"]["p99_ms"], f"p99 at {rate:g} req/s", BAR_COLORS[2], "--"),
        )
        for get, label, color, style in lines:
            mid.plot(counts, [get(r) for r in rows], "o", ls=style, color=color, label=label)
        mid.set_xticks(counts)
        mid.set_xlabel("replicas")
        mid.set_ylabel("request latency (ms)")
        mid.set_title("Latency")
        mid.legend(fontsize=8)
        series = (
            ("effect_idle", "idle", BAR_COLORS[1]),
            ("effect_rate", f"at {rate:g} req/s", BAR_COLORS[0]),
            ("effect_saturated", "saturated", BAR_COLORS[2]),
        )
        for part, label, color in series:
            for key, style in (("p50_ms", "--"), ("p99_ms", "-")):
                points = [(int(r["replicas"]), r[part][key]) for r in rows if r.get(part)]
                points = [(x, float(y)) for x, y in points if y is not None and math.isfinite(y)]
                if points:
                    name = f"{key.split('_')[0]} {label}"
                    right.plot(*zip(*points, strict=True), "o", ls=style, color=color, label=name)
        right.axhline(100, color=MUTED, lw=1, ls=":")
        right.set_xticks(counts)
        right.set_xlabel("replicas")
        right.set_ylabel("event on A to reflected on B (ms)")
        right.set_title("Event to effect across replicas")
        right.legend(fontsize=7)

    return _save(path, (13, 4.4), draw)
