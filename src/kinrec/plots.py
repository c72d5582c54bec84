"""The pictures kinrec draws, as PNG: one style, defined here, for all of them.

* :func:`training_curve_png`: the training curve of a model trained in epochs (bpr, multvae,
  lightgcn, kinformer...): mean training loss and validation NDCG@10 against the epoch, the
  epoch whose state was kept marked. ``kinrec train`` writes it as ``training.png`` in the
  model directory (:func:`write_training_curve`); the web console shows it.
* :func:`evaluation_bars_png`: NDCG@10 and Recall@20 (or other metrics) for all test users
  and for each segment of an evaluation (cold/warm items, low/mid/high-activity users);
  ``kinrec evaluate --plot PATH``.
* :func:`render_png` and :func:`write_png`: any other picture in the same style (the
  benchmark scripts' figures, ``benchmarks/_plots.py``).

Everything is drawn on matplotlib's non-interactive Agg canvas with ``Figure`` objects (no
pyplot, no display, no global figure state), under one lock, so the server can draw too.
matplotlib is imported only when a picture is drawn.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

TRAINING_FILE = "training.png"
"""The training curve's file name in a model directory."""

VALID_KEY = "valid_ndcg@10"
"""The validation score in a per-epoch history row (as :data:`kinrec.training.loop.VALID_KEY`)."""

DEFAULT_METRICS = ("ndcg@10", "recall@20")

COLORS = {
    "loss": "#2f6feb",  # the console's accent
    "metric": "#d97706",
    "kept": "#15803d",
    "muted": "#6b7280",
    "line": "#e5e7eb",
}
BAR_COLORS = ("#2f6feb", "#d97706", "#15803d", "#9333ea", "#0891b2")

STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": "#1d2330",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": COLORS["line"],
    "grid.linewidth": 0.8,
    "text.color": "#1d2330",
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "legend.frameon": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.dpi": 120,
}
"""matplotlib settings of every picture (applied while it is drawn and saved)."""

_LOCK = threading.Lock()  # rc settings are process-wide: one picture at a time


def render_png(draw: Callable[[Any], None], size: tuple[float, float]) -> bytes:
    """A figure of ``size`` inches (constrained layout) drawn by ``draw(figure)``, which adds
    its own axes, as PNG bytes: in :data:`STYLE`, under the lock."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _LOCK, rc_context(STYLE):
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        draw(fig)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _render(
    draw: Callable[[Any, Sequence[Any]], None],
    size: tuple[float, float],
    rows: int = 1,
    sharex: bool = False,
) -> bytes:
    """A figure of ``rows`` stacked axes, drawn by ``draw(figure, axes)``, as PNG bytes."""

    def stacked(fig: Any) -> None:
        axes = fig.subplots(rows, 1, sharex=sharex, squeeze=False)[:, 0]
        draw(fig, list(axes))

    return render_png(stacked, size)


def write_png(path: str | Path, data: bytes) -> Path:
    """Write PNG bytes to ``path`` (parent folders created); the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


_write = write_png


def metric_label(key: str) -> str:
    """``"ndcg@10"`` -> ``"NDCG@10"``, ``"recall@20"`` -> ``"Recall@20"``."""
    name, sep, k = key.partition("@")
    name = name.upper() if name in ("ndcg", "mrr", "map") else name.capitalize()
    return f"{name}{sep}{k}"


# ------------------------------------------------------------------------ training curve
def training_history(fit_info: Mapping[str, Any]) -> list[dict[str, float]]:
    """The per-epoch rows (``epoch``, ``loss``, ``valid_ndcg@10`` where validated) of a model
    trained in epochs; empty for one-pass models (ease, itemknn, pop) and for models saved
    before kinrec kept the history."""
    rows = fit_info.get("history") or []
    return [dict(r) for r in rows if isinstance(r, Mapping) and "epoch" in r and "loss" in r]


def _stop_note(fit_info: Mapping[str, Any], epochs: int) -> str:
    if fit_info.get("stopped_early"):
        return f"{epochs} epochs, stopped early (no better validation for `patience` checks)"
    if fit_info.get("stopped_by_budget"):
        return f"{epochs} epochs, stopped by the time budget (max_train_seconds)"
    return f"{epochs} epochs (max_epochs)"


def training_curve_png(fit_info: Mapping[str, Any], name: str = "model") -> bytes | None:
    """The training curve of a model's ``fit_info`` as PNG bytes; None without a history.

    Top panel: the mean training loss of each epoch. Bottom panel (when the model was
    validated): validation NDCG@10 on the validated epochs. A dashed line marks the epoch
    whose state the model kept: the best validated one, else the last.
    """
    history = training_history(fit_info)
    if not history:
        return None
    epochs = [int(r["epoch"]) for r in history]
    losses = [float(r["loss"]) for r in history]
    checked = [(int(r["epoch"]), float(r[VALID_KEY])) for r in history if VALID_KEY in r]
    best = fit_info.get("best_epoch")
    kept = int(best) if best and checked else epochs[-1]
    markers = "o" if len(epochs) <= 40 else None

    def draw(fig, axes) -> None:
        fig.suptitle(f"{name}: training curve", fontweight="bold")
        loss_ax = axes[0]
        loss_ax.plot(epochs, losses, color=COLORS["loss"], lw=1.8, marker=markers, ms=3.5)
        loss_ax.set_ylabel("training loss\n(mean per epoch)")
        loss_ax.set_title(
            _stop_note(fit_info, len(epochs)),
            fontsize=9,
            fontweight="normal",
            color=COLORS["muted"],
        )
        for ax in axes:
            ax.axvline(kept, color=COLORS["kept"], ls="--", lw=1.3, zorder=1)
        if checked:
            metric_ax = axes[1]
            xs, ys = zip(*checked, strict=True)
            metric_ax.plot(xs, ys, color=COLORS["metric"], lw=1.8, marker="o", ms=3.5)
            metric_ax.set_ylabel("validation\nNDCG@10")
            score = dict(checked).get(kept)
            if score is not None:
                metric_ax.plot(
                    [kept], [score], marker="*", ms=15, color=COLORS["kept"], zorder=3, ls=""
                )
                left = kept <= (epochs[0] + epochs[-1]) / 2
                metric_ax.annotate(
                    f"kept: epoch {kept}\nNDCG@10 {score:.4f}",
                    (kept, score),
                    xytext=(10 if left else -10, -14),
                    textcoords="offset points",
                    va="top",
                    ha="left" if left else "right",
                    color=COLORS["kept"],
                    fontsize=9,
                    bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "none", "alpha": 0.9},
                )
            metric_ax.set_xlabel("epoch")
        else:
            loss_ax.set_xlabel("epoch")
            loss_ax.annotate(
                f"kept: last epoch {kept} (no validation)",
                (kept, losses[-1]),
                xytext=(-6, 10),
                textcoords="offset points",
                ha="right",
                color=COLORS["kept"],
                fontsize=9,
            )
        from matplotlib.ticker import MaxNLocator

        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            pad = max(0.5, 0.02 * (epochs[-1] - epochs[0]))
            ax.set_xlim(epochs[0] - pad, epochs[-1] + pad)

    rows = 2 if checked else 1
    return _render(draw, (7.5, 5.6 if rows == 2 else 3.6), rows=rows, sharex=True)


def write_training_curve(
    fit_info: Mapping[str, Any], directory: str | Path, name: str = "model"
) -> Path | None:
    """Write ``training.png`` into a model directory; None (nothing written) for a model
    that was not trained in epochs."""
    data = training_curve_png(fit_info, name)
    return None if data is None else _write(Path(directory) / TRAINING_FILE, data)


# ------------------------------------------------------------------------ segment bars
def default_metrics(available: Sequence[str]) -> list[str]:
    """NDCG@10 and Recall@20 where reported, else the NDCG@k and Recall@k nearest to them."""
    out = []
    for wanted in DEFAULT_METRICS:
        if wanted in available:
            out.append(wanted)
            continue
        family, _, k = wanted.partition("@")
        ks = [int(m.partition("@")[2]) for m in available if m.startswith(family + "@")]
        if ks:
            out.append(f"{family}@{min(ks, key=lambda x: abs(x - int(k)))}")
    return out


def _segment_label(name: str, users: int | None) -> str:
    if name == "all":
        label = "all test users"
    elif name in ("cold", "warm"):
        label = f"{name} items"
    elif name.startswith("users:"):
        label = f"{name.partition(':')[2]}-activity users"
    else:
        label = name
    return label if users is None else f"{label}\n({users:,} users)"


def segment_bars_png(
    rows: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    users: Mapping[str, int] | None = None,
    title: str = "evaluation by segment",
) -> bytes:
    """Grouped bars: one group per row (segment), one bar per metric, values written on
    the bars. ``users`` gives each row's number of users (shown under its name)."""
    if not rows or not metrics:
        raise ValueError("nothing to draw: no segments or no metrics")
    names = list(rows)
    users = users or {}
    width = 0.8 / len(metrics)

    def draw(fig, axes) -> None:
        ax = axes[0]
        top = 0.0
        for j, metric in enumerate(metrics):
            values = [float(rows[n].get(metric, math.nan)) for n in names]
            xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(names))]
            heights = [v if math.isfinite(v) else 0.0 for v in values]
            bars = ax.bar(
                xs,
                heights,
                width * 0.92,
                label=metric_label(metric),
                color=BAR_COLORS[j % len(BAR_COLORS)],
            )
            labels = [f"{v:.3f}" if math.isfinite(v) else "n/a" for v in values]
            ax.bar_label(bars, labels=labels, padding=2, fontsize=8)
            top = max(top, *heights)
        if len(names) > 1 and names[0] == "all":
            ax.axvline(0.5, color=COLORS["muted"], lw=0.8, ls=":")
        ax.set_xticks(range(len(names)), [_segment_label(n, users.get(n)) for n in names])
        ax.set_ylim(0, (top or 1.0) * 1.18)
        ax.set_ylabel("score on the test split")
        ax.grid(axis="x", visible=False)
        ax.set_title(title)
        fig.legend(loc="outside lower center", ncols=len(metrics))

    return _render(draw, (max(6.5, 1.35 * len(names) + 2.5), 4.4))


def evaluation_bars_png(
    result: Any, metrics: Sequence[str] | None = None, title: str = "evaluation by segment"
) -> bytes:
    """:func:`segment_bars_png` of an :class:`~kinrec.evaluation.protocol.EvaluationResult`:
    all test users first, then each segment."""
    metrics = list(metrics) if metrics else default_metrics(list(result.metrics))
    rows = {"all": result.metrics, **result.segments}
    users = {"all": result.n_users, **result.segment_users}
    return segment_bars_png(rows, metrics, users, title)


def write_evaluation_bars(
    result: Any,
    path: str | Path,
    metrics: Sequence[str] | None = None,
    title: str = "evaluation by segment",
) -> Path:
    """Write :func:`evaluation_bars_png` to ``path`` (parent folders created)."""
    return _write(path, evaluation_bars_png(result, metrics, title))
