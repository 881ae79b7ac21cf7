"""Figures: the BABILong accuracy heatmap and the sweep plot of ``rmt-report``.

The heatmap follows the BABILong paper figures: tasks as rows, input lengths as columns,
the accuracy written in every cell (percent), a red-yellow-green colour scale fixed to 0..1 so
two figures can be compared by eye. Matplotlib runs on the Agg backend (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rmt.eval.results import EvalResult, grid  # noqa: E402


def plot_heatmap(
    rows: Sequence[EvalResult],
    path: str | Path,
    *,
    title: str | None = None,
    value: str = "accuracy",
) -> Path:
    """Draw one series' rows (one model, one mode) as a task x length heatmap PNG."""
    if not rows:
        raise ValueError("plot_heatmap: no results to plot")
    tasks, lengths, matrix = grid(rows, value)
    data = [[math.nan if v is None else float(v) for v in line] for line in matrix]
    fig_w = 1.2 + 0.75 * len(lengths)
    fig_h = 1.0 + 0.45 * len(tasks)
    fig, ax = plt.subplots(figsize=(max(fig_w, 3.5), max(fig_h, 2.2)))
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="lightgrey")
    image = ax.imshow(data, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i, line in enumerate(data):
        for j, v in enumerate(line):
            text = "-" if math.isnan(v) else f"{100 * v:.0f}"  # percent, as the colour bar says
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="black")
    ax.set_xticks(range(len(lengths)), labels=lengths)
    ax.set_yticks(range(len(tasks)), labels=tasks)
    ax.set_xlabel("input length (tokens)")
    ax.set_title(title or rows[0].model, fontsize=10)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=f"{value} (%)")
    bar.set_ticks([0, 0.25, 0.5, 0.75, 1], labels=["0", "25", "50", "75", "100"])
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sweep(
    records: Sequence[dict],
    path: str | Path,
    *,
    x: str,
    y: str,
    group_by: Sequence[str] = (),
    title: str | None = None,
) -> Path:
    """Plot ``y`` against the swept parameter ``x``, one line per value of ``group_by`` keys.

    Numeric ``x`` values are placed on a numeric axis (log scale when they span more than two
    decades, as memory sizes and lengths often do); other values are categorical, in the order
    they first appear. Records without a ``y`` value (failed or unfinished jobs) are skipped.
    """
    points = [r for r in records if _is_number(r.get(y))]
    if not points:
        raise ValueError(f"plot_sweep: no job has a value for {y!r}; nothing to plot")
    numeric_x = all(_is_number(r.get(x)) for r in points)
    categories: list[str] = []
    if not numeric_x:
        for r in points:
            if str(r.get(x)) not in categories:
                categories.append(str(r.get(x)))
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in points:
        label = ", ".join(f"{k}={r.get(k)}" for k in group_by) or y
        xv = float(r[x]) if numeric_x else float(categories.index(str(r.get(x))))
        lines.setdefault(label, []).append((xv, float(r[y])))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, pts in lines.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    if numeric_x:
        xs = [float(r[x]) for r in points]
        if min(xs) > 0 and max(xs) / min(xs) > 100:
            ax.set_xscale("log")
        if len(set(xs)) <= 12:  # the swept values themselves, not 0.5 steps between them
            ax.set_xticks(sorted(set(xs)), labels=[f"{v:g}" for v in sorted(set(xs))])
            ax.minorticks_off()
    else:
        ax.set_xticks(range(len(categories)), labels=categories)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_ylim(*y_range(y, [float(r[y]) for r in points]))
    ax.grid(alpha=0.3)
    if len(lines) > 1 or group_by:
        ax.legend(fontsize=8)
    ax.set_title(title or f"{y} vs {x}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def y_range(name: str, ys: list[float]) -> tuple[float, float]:
    """Axis limits with a small margin that never leave the metric's range: no negative
    values for a metric that is never negative, nothing above 1 for a fraction (accuracy)."""
    low, high = min(ys), max(ys)
    pad = (high - low) * 0.08 or 0.05 * max(abs(high), 1.0)
    bottom, top = low - pad, high + pad
    if low >= 0:
        bottom = max(bottom, 0.0)
    if high <= 1 and low >= 0 and any(tag in name.lower() for tag in ("acc", "exact")):
        top = min(top, 1.0)
    return bottom, top


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return not math.isnan(float(value))
    return False


def plot_segment_perplexity(rows: Sequence, path: str | Path, *, title: str | None = None) -> Path:
    """Perplexity by segment index, one line per (model, input length) of ``rmt-eval`` on an LM
    checkpoint (``rmt.eval.perplexity.PerplexityResult`` rows): how much later segments gain
    from what memory carries."""
    if not rows:
        raise ValueError("plot_segment_perplexity: no results to plot")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for row in rows:
        ax.plot(range(len(row.segments)), row.segments, marker="o", markersize=3,
                label=f"{row.model}, {row.length}")  # fmt: skip
    ax.set_xlabel("segment index")
    ax.set_ylabel("perplexity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "perplexity by segment index", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
