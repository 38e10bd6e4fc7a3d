"""Figures of notebook 05 (ablations): grouped bars with confidence-interval error bars.

Input is :func:`spatial_mllm.experiments.ablations.aggregate`'s long table (one row per variant × metric with
``mean``, ``ci_low``, ``ci_high``) and, optionally, the per-run table (:func:`~spatial_mllm.experiments.ablations.
summarize`) whose seeds are drawn as dots on their bar. Bars are grouped by ``group`` (the connector in
train mode, the checkpoint in evaluate mode); within a group one bar per (sampling, frames). A variant with
a single run has no interval (drawn without an error bar).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["SAMPLING_COLORS", "plot_metric_bars", "plot_overall", "plot_per_task", "save_png_pdf"]

#: base colour per sampling; the frame counts are shades of it (darker = more frames)
SAMPLING_COLORS = {"uniform": "Blues", "space_aware": "Reds"}

METRIC_LABELS = {"overall_micro": "overall (micro: mean over questions)",
                 "overall_macro": "overall (macro: mean of tasks)"}


def _bar_styles(sub) -> dict[tuple[str, int], tuple]:
    """(sampling, frames) → colour: a colormap per sampling, a shade per frame count."""
    frames = sorted(sub["frames"].unique())
    styles = {}
    for s in dict.fromkeys(sub["sampling"]):
        cmap = plt.get_cmap(SAMPLING_COLORS.get(s, "Greys"))
        for j, f in enumerate(frames):
            styles[(s, f)] = cmap(0.45 + 0.4 * (j / max(1, len(frames) - 1)))
    return styles


def plot_metric_bars(agg, metric: str, *, group: str = "connector", runs=None, ax=None, legend: bool = True,
                     title: str | None = None, ylim: tuple[float, float] | None = (0.0, 100.0)):
    """Bars of one metric: x = ``group`` values (in table order), one bar per (sampling, frames) inside each
    group, error bar = the interval ``[ci_low, ci_high]``, dots = the individual runs (when ``runs``).
    ``ylim``: the score range (percentages); a t-interval reaching past it is cut at the axis."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    sub = agg[agg["metric"] == metric]
    groups = list(dict.fromkeys(sub[group]))
    bars = list(dict.fromkeys(zip(sub["sampling"], sub["frames"])))
    styles = _bar_styles(sub)
    width = 0.8 / max(1, len(bars))
    for j, (s, f) in enumerate(bars):
        xs, means, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            r = sub[(sub[group] == g) & (sub["sampling"] == s) & (sub["frames"] == f)]
            if r.empty:
                continue
            r = r.iloc[0]
            x = i - 0.4 + width * (j + 0.5)
            xs.append(x)
            means.append(r["mean"])
            has_ci = not (math.isnan(r["ci_low"]) or math.isnan(r["ci_high"]))
            lo.append(r["mean"] - r["ci_low"] if has_ci else 0.0)
            hi.append(r["ci_high"] - r["mean"] if has_ci else 0.0)
            if runs is not None:
                pts = runs[(runs[group] == g) & (runs["sampling"] == s) & (runs["frames"] == f)][metric].dropna()
                ax.scatter(np.full(len(pts), x), pts, s=10, color="black", zorder=3, alpha=0.7,
                           label="runs (seeds)" if (j == 0 and i == 0 and legend) else None)
        label = f"{s.replace('_', '-')}, {f} frames"
        ax.bar(xs, means, width * 0.95, color=styles[(s, f)], label=label, edgecolor="white")
        ax.errorbar(xs, means, yerr=[lo, hi], fmt="none", ecolor="black", elinewidth=1, capsize=3)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xticks(range(len(groups)), [str(g) for g in groups])
    ax.set_xlabel(group)
    ax.set_ylabel("score (%)")
    ax.set_title(title or METRIC_LABELS.get(metric, metric))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if legend:
        ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def plot_overall(agg, *, group: str = "connector", runs=None, level: float = 0.95, note: str = ""):
    """Two panels: overall micro and macro score per variant with CI error bars."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
    for k, m in enumerate(("overall_micro", "overall_macro")):
        plot_metric_bars(agg, m, group=group, runs=runs, ax=axes[k], legend=k == 1)
    fig.suptitle(f"VSI-Bench metric per variant, mean over seeds with {level:.0%} CI (cut at 0-100){note}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_per_task(agg, *, group: str = "connector", tasks: Sequence[str] | None = None, runs=None,
                  level: float = 0.95, ncols: int = 4):
    """One panel per VSI-Bench task (those in ``agg``), same bars as :func:`plot_overall`."""
    from spatial_mllm.eval.vsibench import TASKS

    present = set(agg["metric"])
    tasks = [t for t in (tasks or TASKS) if t in present]
    nrows = max(1, math.ceil(len(tasks) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, t in zip(axes.flat, tasks):
        plot_metric_bars(agg, t, group=group, runs=runs, ax=ax, legend=False, title=t)
        ax.set_xlabel("")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"per task, mean over seeds with {level:.0%} CI (cut at 0-100)", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def save_png_pdf(fig, path: str | Path, dpi: int = 120) -> list[Path]:
    """Write ``fig`` as ``<path>.png`` and ``<path>.pdf`` (parent folders created); returns both paths."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in (".png", ".pdf"):
        fig.savefig(path.with_suffix(ext), dpi=dpi, bbox_inches="tight")
        out.append(path.with_suffix(ext))
    return out
