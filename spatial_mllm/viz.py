"""Figures shared by the notebooks (matplotlib / seaborn). Every function returns the ``Figure``;
:func:`save_figure` writes it (PNG) under a run's ``figures/`` folder.

World frame: metres, z-up (floor plans are drawn in x, y). Cameras: OpenCV camera-from-world extrinsics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "category_colors",
    "plot_floor_plan",
    "plot_frame_strip",
    "plot_counts",
    "plot_numeric_answer_distributions",
    "plot_option_balance",
    "save_figure",
]

NUMERIC_TYPES = ("object_counting", "object_size_estimation", "room_size_estimation", "object_abs_distance")
NUMERIC_UNITS = {
    "object_counting": "count",
    "object_size_estimation": "cm",
    "room_size_estimation": "m²",
    "object_abs_distance": "m",
}


def category_colors(categories: Iterable[str]) -> dict[str, tuple]:
    """A stable colour per category (tab20, in sorted order)."""
    cats = sorted(set(categories))
    cmap = plt.get_cmap("tab20")
    return {c: cmap(i % 20) for i, c in enumerate(cats)}


def _footprint(o) -> np.ndarray:
    hx, hy = o.axes_lengths[0] / 2, o.axes_lengths[1] / 2
    local = np.array([[-hx, -hy, 0], [hx, -hy, 0], [hx, hy, 0], [-hx, hy, 0]])
    return (local @ o.rotation.T + o.centroid)[:, :2]


def plot_floor_plan(
    scene, extrinsics: np.ndarray | None = None, ax=None, arrow_every: int = 4, title: str | None = None
):
    """Top-down plan: floor polygon, object footprints (oriented boxes) labelled by category, and the camera
    path (centres, with view-direction arrows every ``arrow_every`` frames) from ``extrinsics [T, 3, 4]``."""
    from matplotlib.patches import Polygon

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 6))
    if scene.floor_polygon is not None:
        ax.add_patch(Polygon(scene.floor_polygon, closed=True, fc="#f3efe6", ec="black", lw=2))
    colors = category_colors(o.category for o in scene.objects)
    for o in scene.objects:
        fp = _footprint(o)
        ax.add_patch(Polygon(fp, closed=True, fc=colors[o.category], ec="black", lw=0.8, alpha=0.8))
        ax.text(*fp.mean(0), f"{o.category}\n#{o.instance_id}", ha="center", va="center", fontsize=6)
    if extrinsics is not None:
        E = np.asarray(extrinsics, dtype=np.float64)
        R, t = E[:, :, :3], E[:, :, 3]
        C = -np.einsum("tji,tj->ti", R, t)  # camera centres
        fwd = R[:, 2, :]  # camera z axis (view direction) in world coordinates
        ax.plot(C[:, 0], C[:, 1], "-", color="crimson", lw=1.5, label="camera path")
        ax.plot(C[0, 0], C[0, 1], "o", color="crimson", ms=6, label="start")
        k = slice(None, None, max(1, arrow_every))
        f = fwd[k, :2] / np.maximum(np.linalg.norm(fwd[k, :2], axis=1, keepdims=True), 1e-9)
        ax.quiver(C[k, 0], C[k, 1], f[:, 0], f[:, 1], color="crimson", scale=18, width=0.004)
        ax.legend(loc="upper right", fontsize=7)
    pts = [scene.floor_polygon] if scene.floor_polygon is not None else []
    pts += [_footprint(o) for o in scene.objects]
    if pts:
        allp = np.concatenate(pts)
        lo, hi = allp.min(0) - 0.3, allp.max(0) + 0.3
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    room = f", {scene.room_size:.1f} m²" if scene.room_size else ""
    ax.set_title(title or f"{scene.scene_id}{room}", fontsize=9)
    return fig


def plot_frame_strip(
    rgb: np.ndarray, depth: np.ndarray, instance_ids: np.ndarray, indices: Iterable[int], scene=None
):
    """Rows: RGB, z-depth (metres, colour bar), instance ids overlaid on RGB (categories labelled at the
    mask centroids when ``scene`` is given); one column per frame index."""
    idx = list(indices)
    n = len(idx)
    fig, axes = plt.subplots(3, n, figsize=(2.2 * n, 5.4), squeeze=False)
    dmax = float(np.max(depth[idx])) if n else 1.0
    rng = np.random.default_rng(0)
    palette = rng.uniform(0.15, 1.0, size=(int(instance_ids.max()) + 1, 3))
    palette[0] = 0
    by_id = scene.by_instance_id if scene is not None else {}
    im = None
    for j, t in enumerate(idx):
        axes[0, j].imshow(rgb[t])
        axes[0, j].set_title(f"frame {t}", fontsize=8)
        im = axes[1, j].imshow(depth[t], cmap="viridis", vmin=0, vmax=dmax)
        ids = instance_ids[t]
        overlay = np.where((ids > 0)[..., None], 0.45 * rgb[t] / 255.0 + 0.55 * palette[ids], rgb[t] / 255.0)
        axes[2, j].imshow(overlay)
        for iid in np.unique(ids):
            if iid == 0 or iid not in by_id:
                continue
            vv, uu = np.nonzero(ids == iid)
            if len(vv) >= 30:
                axes[2, j].text(
                    uu.mean(), vv.mean(), by_id[iid].category, fontsize=5, ha="center", color="white"
                )
        for r in range(3):
            axes[r, j].axis("off")
    axes[0, 0].text(-0.1, 0.5, "RGB", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.1, 0.5, "depth", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    axes[2, 0].text(
        -0.1, 0.5, "instances", transform=axes[2, 0].transAxes, rotation=90, va="center", ha="right"
    )
    if im is not None:
        fig.colorbar(im, ax=axes[1, :].tolist(), fraction=0.02, pad=0.01, label="z-depth (m)")
    return fig


def plot_counts(counts: Mapping[str, int] | Counter, title: str, xlabel: str = "count", ax=None):
    """Horizontal bar chart of ``{label: count}`` (largest at the top), with the numbers printed."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 0.35 * max(3, len(counts)) + 1))
    items = sorted(counts.items(), key=lambda kv: kv[1])
    labels = [k for k, _ in items]
    values = [v for _, v in items]
    ax.barh(labels, values, color="steelblue")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v}", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def plot_numeric_answer_distributions(rows: list[dict]):
    """Histogram of the ground-truth answers of each numeric task type present in ``rows``."""
    types = [t for t in NUMERIC_TYPES if any(r["question_type"] == t for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(types)), figsize=(3.4 * max(1, len(types)), 2.8), squeeze=False)
    for ax, t in zip(axes[0], types):
        vals = np.array([float(r["ground_truth"]) for r in rows if r["question_type"] == t])
        bins = (
            np.arange(vals.min() - 0.5, vals.max() + 1.5)
            if t == "object_counting"
            else min(20, max(5, len(vals) // 3))
        )
        ax.hist(vals, bins=bins, color="darkorange", edgecolor="white")
        ax.set_title(f"{t}\n(n={len(vals)}, median {np.median(vals):.3g})", fontsize=8)
        ax.set_xlabel(NUMERIC_UNITS[t])
    fig.tight_layout()
    return fig


def plot_option_balance(rows: list[dict]):
    """Fraction of multiple-choice answers on each option letter, per task type (balanced = equal bars)."""
    import pandas as pd
    import seaborn as sns

    mc = [r for r in rows if r["question_type"] not in NUMERIC_TYPES]
    df = pd.DataFrame(
        {"question_type": [r["question_type"] for r in mc], "letter": [r["ground_truth"] for r in mc]}
    )
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if len(df):
        frac = (
            df.groupby("question_type")["letter"]
            .value_counts(normalize=True)
            .rename("fraction")
            .reset_index()
        )
        sns.barplot(data=frac, x="question_type", y="fraction", hue="letter", hue_order=list("ABCD"), ax=ax)
        ax.legend(title="letter", bbox_to_anchor=(1.01, 1.0), loc="upper left", fontsize=8)
        ax.axhline(0.25, color="grey", lw=0.8, ls="--")
        ax.tick_params(axis="x", rotation=30, labelsize=7)
        for lbl in ax.get_xticklabels():
            lbl.set_horizontalalignment("right")
    ax.set_title("answer position (letter) per multiple-choice task", fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG (creating parent folders) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
