"""Figures of notebook 07 (the mini study): per-task bars with bootstrap intervals, and the claims' paired
differences as a forest plot.

Inputs are :func:`spatial_mllm.experiments.mini_study.bootstrap_scores`'s table (one row per arm × metric with
``mean``, ``ci_low``, ``ci_high``) and :func:`~spatial_mllm.experiments.mini_study.contrast_table`'s differences.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from spatial_mllm.experiments.mini_study import CLAIMS, DIAGNOSTICS, VARIANT_LABELS

__all__ = ["ARM_COLORS", "plot_study_per_task", "plot_contrasts", "plot_geometry_examples"]

#: (variant, sampling) → colour; space-aware is a darker shade of its variant's colour (ground truth: darkest)
ARM_COLORS = {
    ("2d_only", "uniform"): "#9ecae1", ("2d_only", "space_aware"): "#3182bd",
    ("vggt_pretrained", "uniform"): "#fdae6b", ("vggt_pretrained", "space_aware"): "#e6550d",
    ("vggt_pretrained", "space_aware_gt"): "#a63603", ("2d_only", "space_aware_gt"): "#08519c",
    ("vggt_random", "space_aware_gt"): "#54278f",
    ("vggt_random", "uniform"): "#bcbddc", ("vggt_random", "space_aware"): "#756bb1",
    ("2d_only", "other_room"): "#deebf7", ("vggt_pretrained", "other_room"): "#fee6ce",
    ("vggt_random", "other_room"): "#efedf5",
    ("frequency", "-"): "#bdbdbd",
    ("visible_reader", "uniform"): "#74c476", ("visible_reader", "space_aware"): "#31a354",
    ("visible_reader", "space_aware_gt"): "#006d2c", ("visible_reader", "other_room"): "#e5f5e0",
}

TITLES = {"overall_macro": "overall (macro)", "overall_micro": "overall (micro)"}


def plot_study_per_task(table, *, level: float = 0.95, ncols: int = 5, note: str = ""):
    """One panel per metric (the tasks, then overall macro/micro); one bar per arm with the interval as
    error bar. Returns the figure."""
    metrics = list(dict.fromkeys(table["metric"]))
    arms = list(dict.fromkeys(zip(table["variant"], table["sampling"])))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.9 * nrows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        sub = table[table["metric"] == m].set_index(["variant", "sampling"])
        for i, arm in enumerate(arms):
            if arm not in sub.index:
                continue
            r = sub.loc[arm]
            ax.bar(i, r["mean"], color=ARM_COLORS.get(arm, "#969696"), width=0.8)
            ax.errorbar(i, r["mean"], yerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]],
                        color="black", capsize=2, lw=1)
        ax.set_title(TITLES.get(m, m.replace("_", " ")), fontsize=9)
        ax.set_xticks([])
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=ARM_COLORS.get(a, "#969696")) for a in arms]
    labels = [f"{VARIANT_LABELS.get(v, v)}" + (f" · {s.replace('_', ' ')}" if s != "-" else "") for v, s in arms]
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(arms)), fontsize=8, frameon=False)
    fig.suptitle(f"Held-out synthetic VSI-Bench tasks: mean over seeds, {level:.0%} hierarchical bootstrap "
                 f"interval{note}", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return fig


def plot_contrasts(contrasts, *, level: float = 0.95):
    """Forest plot: one panel per claim (diagnostics first), one row per metric, the paired difference A − B (points) with its
    interval; green = interval above 0, red = below, grey = contains 0."""
    claims = [c for c in {**DIAGNOSTICS, **CLAIMS} if c in set(contrasts["claim"])]
    ncols = min(3, len(claims))
    nrows = math.ceil(len(claims) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.6 * nrows), squeeze=False, sharey=True)
    for ax in list(axes.flat)[len(claims):]:
        ax.axis("off")
    colors = {"supported": "#31a354", "contradicted": "#de2d26", "not resolved": "#636363"}
    for ax, c in zip(axes.flat, claims):
        sub = contrasts[contrasts["claim"] == c].reset_index(drop=True)
        y = np.arange(len(sub))[::-1]
        for yi, r in zip(y, sub.itertuples()):
            ax.errorbar(r.difference, yi, xerr=[[r.difference - r.ci_low], [r.ci_high - r.difference]], fmt="o",
                        color=colors[r.verdict], capsize=2, ms=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([TITLES.get(m, m.replace("_", " ")) for m in sub["metric"]], fontsize=8)
        a, b = sub.loc[0, "a"], sub.loc[0, "b"]
        ax.set_title(f"{c.replace('_', ' ')}\n{a} − {b}", fontsize=9)
        ax.set_xlabel("difference (points)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Paired differences with {level:.0%} bootstrap intervals", fontsize=10)
    fig.tight_layout()
    return fig


def plot_geometry_examples(ex: dict):
    """Rows: the frames, true depth, random-init VGGT depth, pretrained VGGT depth (both median-scaled);
    one shared colour scale in metres (:func:`spatial_mllm.experiments.mini_study.geometry_examples`)."""
    S = len(ex["rgb"])
    rows = [("frames", ex["rgb"]), ("true depth", ex["gt"]), ("random-init VGGT", ex["random"]),
            ("pretrained VGGT", ex["pretrained"])]
    valid = ex["gt"][ex["gt"] > 0]
    vmin, vmax = float(np.percentile(valid, 2)), float(np.percentile(valid, 98))
    fig, axes = plt.subplots(len(rows), S, figsize=(2.0 * S, 1.6 * len(rows)), squeeze=False)
    im = None
    for r, (label, arr) in enumerate(rows):
        for c in range(S):
            ax = axes[r, c]
            if arr.ndim == 4:
                ax.imshow(arr[c])
            else:
                im = ax.imshow(np.where(ex["gt"][c] > 0, arr[c], np.nan), cmap="turbo", vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.colorbar(im, ax=axes[1:, :].ravel().tolist(), shrink=0.8, label="depth (m)")
    fig.suptitle("Held-out room: depth after per-sequence median scaling", fontsize=10)
    return fig
