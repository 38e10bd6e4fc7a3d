"""Figures of notebook 02 (frame sampling analysis); every function returns a matplotlib ``Figure``
(write it with :func:`spatial_mllm.viz.save_figure`).

World frame: metres, z-up; cameras: OpenCV camera-from-world ``[R | t]`` (x right, y down, z forward).

**The 3D view** (:func:`plot_scene_3d`) is open3d geometry drawn by a software projection, not by open3d's
``OffscreenRenderer``: that renderer needs a GPU-backed EGL/Vulkan context (Filament), and on a headless
CPU machine it fails to start (open3d 0.20 here: "Failed to load vulkan library!", also with
``OPEN3D_CPU_RENDERING=true``). Instead the point cloud is an ``open3d.geometry.PointCloud`` (voxel
down-sampled by open3d) and the cameras are open3d's ``LineSet.create_camera_visualization`` frusta; both
are projected with our own virtual pinhole camera: points are splatted into a z-buffer (nearest point per
pixel wins, back faces culled), frusta are drawn as projected line segments on top with matplotlib. It
runs anywhere, deterministically, in about a second for a few hundred thousand points.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from spatial_mllm.sampling.analysis import METHODS, ScanAnalysis, ScanVideo, covered_voxel_map

__all__ = [
    "METHOD_STYLE",
    "plot_coverage_vs_k",
    "plot_time_positions",
    "plot_covered_voxel_maps",
    "render_points",
    "view_camera",
    "plot_scene_3d",
    "plot_point_maps_topdown",
]

#: colour and label of each method
METHOD_STYLE = {
    "uniform": ("tab:blue", "uniform"),
    "random": ("tab:gray", "random"),
    "space_aware": ("tab:red", "space-aware (exact geometry)"),
    "optimal": ("black", "optimal (ILP)"),
    "space_aware_vggt": ("tab:purple", "space-aware (VGGT point maps)"),
}


def _style(method: str) -> tuple[str, str]:
    return METHOD_STYLE.get(method, ("tab:green", method))


def _ordered(methods) -> list[str]:
    methods = list(dict.fromkeys(methods))
    return [m for m in METHODS if m in methods] + [m for m in methods if m not in METHODS]


def plot_coverage_vs_k(curves, k_mark: int | None = None):
    """Left: fraction of the candidates' voxels covered by k frames (mean over scenes; the random band is
    ± the mean std over draws). Right: each method's coverage divided by the exact optimum at the ks where
    the optimum was solved (dots: scenes, line: mean), with greedy's worst-case bound 1 - 1/e.

    Args:
        curves: :func:`spatial_mllm.sampling.analysis.curves_table` (scene, method, k, covered, std,
            total, fraction).
        k_mark: a k to mark with a vertical line (Nk).
    """
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.35, 1]})
    for m in _ordered(curves["method"]):
        d = curves[curves["method"] == m]
        g = d.groupby("k")
        mean = g["fraction"].mean()
        color, label = _style(m)
        if m == "optimal":
            ax.plot(mean.index, mean.values, "D-", color=color, ms=5, lw=1, label=label, zorder=5)
        else:
            ax.plot(mean.index, mean.values, "-", color=color, lw=2, label=label)
        if m == "random":
            band = (d["std"] / d["total"]).groupby(d["k"]).mean()
            ax.fill_between(mean.index, mean - band, mean + band, color=color, alpha=0.25, lw=0)
    if k_mark is not None:
        ax.axvline(k_mark, color="grey", ls=":", lw=1)
    ax.set_xlabel("k (frames selected)")
    ax.set_ylabel("fraction of voxels covered")
    ax.set_title("coverage vs k (mean over scenes)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")

    if "optimal" in set(curves["method"]):
        opt = curves[curves["method"] == "optimal"].set_index(["scene", "k"])["covered"]
        for m in _ordered(curves["method"]):
            if m == "optimal":
                continue
            d = curves[curves["method"] == m].set_index(["scene", "k"])["covered"]
            r = (d.reindex(opt.index) / opt).dropna()
            if r.empty:
                continue
            color, label = _style(m)
            ks = r.index.get_level_values("k")
            ax2.scatter(ks, r.values, color=color, s=12, alpha=0.6)
            mean = r.groupby(level="k").mean()
            ax2.plot(mean.index, mean.values, "-", color=color, lw=1.5, label=label)
        ax2.axhline(1 - 1 / np.e, color="black", ls="--", lw=1)
        ax2.text(0.98, 1 - 1 / np.e - 0.01, "greedy's worst case: 1 - 1/e", fontsize=8, va="top", ha="right",
                 transform=ax2.get_yaxis_transform())
        ax2.set_ylim(min(0.55, ax2.get_ylim()[0]), 1.02)
        ax2.set_xlabel("k")
        ax2.set_ylabel("coverage / optimum")
        ax2.set_title("ratio to the exact optimum", fontsize=10)
        ax2.grid(alpha=0.3)
    else:
        ax2.axis("off")
    fig.tight_layout()
    return fig


def plot_time_positions(analyses: Sequence[ScanAnalysis], scans: Sequence[ScanVideo], k: int):
    """Where in the video each method's ``k`` frames lie: per scene, a bar strip of how many voxels each
    candidate frame sees, and one row per method with its chosen frames (x: video time in seconds; grey
    ticks: the Nm candidates)."""
    n = len(analyses)
    fig = plt.figure(figsize=(10, 2.9 * n))
    outer = fig.add_gridspec(n, 1, hspace=0.45)
    for r, (a, s) in enumerate(zip(analyses, scans)):
        inner = outer[r].subgridspec(2, 1, height_ratios=[1, 2.2], hspace=0.05)
        top, bot = fig.add_subplot(inner[0]), fig.add_subplot(inner[1])
        t_all = s.candidates / s.fps
        width = 0.8 * (np.diff(t_all).min() if len(t_all) > 1 else 1.0)
        top.bar(t_all, a.incidence.frame_counts().cpu().numpy(), width=width, color="#9ab", lw=0)
        top.set_ylabel("voxels\nseen", fontsize=7)
        top.set_title(f"{a.scene_id}: {k} of {len(s.candidates)} candidates", fontsize=9)
        top.tick_params(labelbottom=False, labelsize=7)
        methods = [m for m in _ordered(a.selections) if k in a.selections[m]]
        for i, m in enumerate(methods):
            y = len(methods) - 1 - i
            bot.scatter(t_all, np.full(len(t_all), y), marker="|", color="#ccc", s=30, lw=1)
            color, _ = _style(m)
            bot.scatter(s.seconds(a.selections[m][k]), np.full(k, y), color=color, s=28, zorder=3)
        bot.set_yticks(range(len(methods)))
        bot.set_yticklabels([_style(m)[1] for m in reversed(methods)], fontsize=7)
        bot.set_ylim(-0.6, len(methods) - 0.4)
        duration = len(s.frames.rgb) / s.fps
        for ax_ in (top, bot):
            ax_.set_xlim(-0.02 * duration, duration * 1.02)
        bot.set_xlabel("video time (s)", fontsize=8)
        bot.tick_params(labelsize=7)
    return fig


def _camera_centres_and_forward(extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    E = np.asarray(extrinsics, dtype=np.float64)
    R, t = E[:, :, :3], E[:, :, 3]
    return -np.einsum("tji,tj->ti", R, t), R[:, 2, :]  # centres [T, 3], view directions [T, 3]


def plot_covered_voxel_maps(analysis: ScanAnalysis, scan: ScanVideo, k: int,
                            methods: Sequence[str] | None = None):
    """Top-down maps of the voxels each method's ``k`` frames cover: colour = fraction of each (x, y)
    column's occupied voxels (floor, furniture, walls, ceiling) seen by the selection; white = nothing
    there. Dots and arrows: the chosen cameras' centres and view directions; black line: the floor
    polygon."""
    from matplotlib.patches import Polygon

    methods = [m for m in (methods or _ordered(analysis.selections)) if k in analysis.selections.get(m, {})]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.3 * len(methods) + 0.8, 3.6), squeeze=False)
    centres, fwd = _camera_centres_and_forward(scan.frames.extrinsics[scan.candidates])
    poly = scan.scene.meta.floor_polygon
    im = None
    for ax, m in zip(axes[0], methods):
        idx = analysis.selections[m][k]
        tm = covered_voxel_map(analysis.incidence, idx)
        cmap = plt.get_cmap("viridis").with_extremes(bad="white")
        im = ax.imshow(np.ma.masked_invalid(tm.fraction.T), origin="lower", extent=tm.extent, cmap=cmap,
                       vmin=0, vmax=1, interpolation="nearest")
        if poly is not None:
            ax.add_patch(Polygon(poly, closed=True, fill=False, ec="black", lw=1.2))
        c, f = centres[idx], fwd[idx, :2]
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-9)
        ax.quiver(c[:, 0], c[:, 1], f[:, 0], f[:, 1], color="orangered", scale=12, width=0.012, zorder=4)
        ax.plot(c[:, 0], c[:, 1], "o", color="orangered", mec="white", ms=4, zorder=5)
        ax.set_aspect("equal")
        ax.set_title(f"{_style(m)[1]}\n{100 * tm.covered / max(tm.total, 1):.1f} % of voxels", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("x (m)", fontsize=7)
    axes[0, 0].set_ylabel("y (m)", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), fraction=0.025, pad=0.02,
                     label="fraction of the column's voxels covered")
    fig.suptitle(f"{analysis.scene_id}: voxels covered by {k} frames (top-down)", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------
# 3D view: open3d geometry → software projection
# --------------------------------------------------------------------------------------------------


def view_camera(points: np.ndarray, width: int, height: int, hfov_deg: float = 50.0, azimuth_deg: float = -120.0,
                elevation_deg: float = 52.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A virtual camera looking down at the points' bounding box from outside (OpenCV convention).

    Returns:
        ``K [3, 3]`` (pixels), camera-from-world ``E [3, 4]`` and the eye ``[3]`` (world, metres).
    """
    from spatial_mllm.geometry.cameras import look_at

    lo, hi = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)
    target = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2] + 0.25 * (hi[2] - lo[2])])
    diag = float(np.linalg.norm(hi - lo))
    tan = np.tan(np.radians(hfov_deg) / 2)
    dist = 0.62 * diag / tan
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    eye = target + dist * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
    f = (width / 2) / tan
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    return K, np.asarray(look_at(eye, target), dtype=np.float64), eye


def render_points(points: np.ndarray, colors: np.ndarray, K: np.ndarray, E: np.ndarray, width: int, height: int,
                  radius: int = 1, background: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffered splatting of a coloured point cloud with a pinhole camera.

    Args:
        points: ``[N, 3]`` world. colors: ``[N, 3]`` RGB in [0, 1].
        K: ``[3, 3]`` pixels. E: camera-from-world ``[3, 4]`` (OpenCV).
        radius: each point fills a ``(2 radius + 1)²`` pixel square.
    Returns:
        ``image [H, W, 3]`` float in [0, 1] and ``depth [H, W]`` (z in the virtual camera, inf = empty).
    """
    R, t = E[:, :3], E[:, 3]
    cam = points @ R.T + t  # [N, 3]
    keep = cam[:, 2] > 1e-3
    cam, col = cam[keep], colors[keep]
    z = cam[:, 2]
    u = np.round(K[0, 0] * cam[:, 0] / z + K[0, 2]).astype(np.int64)
    v = np.round(K[1, 1] * cam[:, 1] / z + K[1, 2]).astype(np.int64)
    offs = np.arange(-radius, radius + 1)
    du, dv = (a.ravel() for a in np.meshgrid(offs, offs))
    U = (u[:, None] + du[None]).ravel()  # [N·(2r+1)²]
    V = (v[:, None] + dv[None]).ravel()
    Z = np.repeat(z, du.size)
    src = np.repeat(np.arange(len(z)), du.size)
    inside = (U >= 0) & (U < width) & (V >= 0) & (V < height)
    lin, Z, src = V[inside] * width + U[inside], Z[inside], src[inside]
    order = np.lexsort((Z, lin))  # by pixel, nearest first
    lin_sorted = lin[order]
    first = np.flatnonzero(np.r_[True, lin_sorted[1:] != lin_sorted[:-1]])
    pix, win = lin_sorted[first], order[first]
    img = np.full((height * width, 3), background, dtype=np.float64)
    depth = np.full(height * width, np.inf)
    img[pix] = col[src[win]]
    depth[pix] = Z[win]
    return img.reshape(height, width, 3), depth.reshape(height, width)


def plot_scene_3d(points: np.ndarray, colors: np.ndarray, extrinsics: np.ndarray, intrinsics: np.ndarray,
                  image_size: tuple[int, int], chosen: Sequence[int], *, to_camera: np.ndarray | None = None,
                  frame_labels: Sequence[int] | None = None, voxel: float = 0.02, width: int = 720,
                  height: int = 540, radius: int = 2, frustum_scale: float = 0.3, title: str | None = None):
    """A 3D view of the point cloud with the chosen cameras (see the module docstring for how it is drawn).

    Args:
        points: ``[N, 3]`` world (metres). colors: ``[N, 3]`` RGB in [0, 1].
        extrinsics: ``[Nm, 3, 4]`` camera-from-world of the candidates. intrinsics: ``[3, 3]`` (pixels) of
            the video, ``image_size`` = its ``(width, height)``.
        chosen: candidate indices whose frusta are drawn (coloured by time); the other candidates' centres
            are grey dots on the camera path.
        to_camera: ``[N, 3]`` vectors from each point to the camera that saw it; points facing away from the
            virtual camera are culled (this removes the ceiling and the near walls, a dollhouse view).
        frame_labels: labels of the chosen frusta (e.g. video frame numbers).
        voxel: open3d voxel down-sampling size, metres (0 = none).
        radius: splat half-size in pixels (points fill ``(2 radius + 1)²`` pixels).
    """
    import open3d as o3d

    K, E, eye = view_camera(points, width, height)
    if to_camera is not None:
        facing = np.einsum("nd,nd->n", to_camera, eye[None] - points) > 0
        points, colors = points[facing], colors[facing]
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(np.clip(colors, 0, 1).astype(np.float64))
    if voxel > 0:
        pcd = pcd.voxel_down_sample(voxel)
    img, _ = render_points(np.asarray(pcd.points), np.asarray(pcd.colors), K, E, width, height, radius=radius)

    fig, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
    ax.imshow(img, interpolation="nearest")

    def project(p):  # [M, 3] world → [M, 2] pixels and z
        c = p @ E[:, :3].T + E[:, 3]
        return np.stack([K[0, 0] * c[:, 0] / c[:, 2] + K[0, 2], K[1, 1] * c[:, 1] / c[:, 2] + K[1, 2]], 1), c[:, 2]

    centres, _ = _camera_centres_and_forward(extrinsics)
    cuv, cz = project(centres)
    ax.plot(cuv[:, 0], cuv[:, 1], "-", color="0.35", lw=0.8, alpha=0.8)
    ax.plot(cuv[:, 0], cuv[:, 1], ".", color="0.35", ms=3)
    cmap = plt.get_cmap("plasma")
    chosen = list(chosen)
    W0, H0 = image_size
    for j, i in enumerate(chosen):
        T = np.eye(4)
        T[:3] = extrinsics[i]
        ls = o3d.geometry.LineSet.create_camera_visualization(int(W0), int(H0), np.asarray(intrinsics, np.float64),
                                                              T, frustum_scale)
        P = np.asarray(ls.points)[:5]  # centre + 4 image-plane corners (drop the axis lines)
        L = np.asarray(ls.lines)[:8]
        uv, zz = project(P)
        color = cmap(0.1 + 0.8 * j / max(len(chosen) - 1, 1))
        for a, b in L:
            if zz[a] > 0 and zz[b] > 0:
                ax.plot(uv[[a, b], 0], uv[[a, b], 1], "-", color=color, lw=1.4)
        if frame_labels is not None:
            ax.text(uv[0, 0], uv[0, 1] - 4, str(frame_labels[j]), color=color, fontsize=6, ha="center",
                    va="bottom", fontweight="bold",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.6})
    ax.set_xlim(0, width - 1)
    ax.set_ylim(height - 1, 0)
    ax.axis("off")
    ax.set_title(title or f"point cloud and {len(chosen)} chosen cameras", fontsize=9)
    return fig


def plot_point_maps_topdown(exact_points: np.ndarray, vggt_points: np.ndarray, frames: Sequence[int],
                            max_points: int = 4000, seed: int = 0, vggt_title: str = "VGGT world_points"):
    """Top-down scatter of the same candidate frames' points: exact geometry (world x, y in metres) beside
    VGGT's ``world_points`` (frame 0's camera frame, x right / z forward, normalised units). Colour = frame.

    Args:
        exact_points: ``[Nm, H, W, 3]``. vggt_points: ``[Nm, h, w, 3]``. frames: candidate indices to show.
    """
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    cmap = plt.get_cmap("viridis")
    for ax, pts, (a, b), title, labels in (
        (axes[0], exact_points, (0, 1), "exact geometry (world, m)", ("x (m)", "y (m)")),
        (axes[1], vggt_points, (0, 2), vggt_title, ("x (VGGT units)", "z (VGGT units)")),
    ):
        for j, f in enumerate(frames):
            p = np.asarray(pts[f]).reshape(-1, 3)
            p = p[np.isfinite(p).all(1)]
            if len(p) > max_points:
                p = p[rng.choice(len(p), max_points, replace=False)]
            ax.scatter(p[:, a], p[:, b], s=1, color=cmap(j / max(len(frames) - 1, 1)), alpha=0.5,
                       label=f"candidate {f}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(labels[0], fontsize=8)
        ax.set_ylabel(labels[1], fontsize=8)
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, markerscale=6, loc="best")
    fig.tight_layout()
    return fig
