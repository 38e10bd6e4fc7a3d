"""Render synthetic scenes into handheld-scan videos with exact depth, instance ids and cameras.

Renderer: open3d's Embree-backed :class:`open3d.t.geometry.RaycastingScene`, one per room, all rays of a
batch of frames cast at once on ``nthreads`` threads (1 by default: the benchmark and the presets
report one-core numbers).

Conventions (those of :mod:`spatial_mllm.geometry.cameras`, i.e. OpenCV / VGGT):

* ``extrinsics [T, 3, 4]`` are **camera-from-world** ``[R | t]`` (``x_cam = R x_world + t``), camera
  axes x right, y down, z forward; world z-up, metres;
* ``intrinsics [T, 3, 3]`` in pixels; the centre of pixel ``(u, v)`` (column, row) is at the integer
  coordinate ``(u, v)`` — rays are built here from ``K`` for exactly those coordinates, so
  ``unproject_depth(depth, K, E)`` lands on the surfaces. (open3d's ``create_rays_pinhole`` is not used:
  it shoots pixel ``(u, v)``'s ray through ``(u + 0.5, v + 0.5)``, checked with open3d 0.20);
* ``depth [T, H, W]`` is the z coordinate in the camera frame in metres (not the ray length). The ray
  direction is ``R^T K^-1 [u, v, 1]^T``, whose camera-frame z component is 1, so Embree's hit distance
  (measured in units of the direction's length) *is* the z-depth. A pixel whose ray hits nothing (never in
  a closed room) has depth 0 and instance id 0;
* ``instance_ids [T, H, W]``: the :class:`~spatial_mllm.data.scene.ObjectBox` ``instance_id`` of the
  surface seen, 0 for walls, floor and ceiling.

Shading: per-triangle albedo (category colour, per-instance jitter; floor, walls and ceiling their own
colours), a 3-D value-noise texture fixed to the surfaces (so it is consistent across frames), a tiled
floor, and Lambert shading with one fixed directional light plus ambient.

Camera path (:func:`camera_path`): a walk through the free floor (every point at least ``clearance`` m
from walls and object footprints), visiting spread-out waypoints by grid shortest paths, smoothed, at
constant speed; height 1.2-1.7 m with a slow bob, yaw = walking direction + a sinusoidal sweep, small
pitch/roll jitter — the motion of a person scanning a room with a phone (ScanNet / ARKitScenes style).

Files written by :func:`save_rendered` under ``<out>/<scene_id>/``:

* ``video.mp4``: H.264 (libx264 via PyAV), yuv420p, constant ``fps``, single-threaded encoder with the
  bitexact flags and x264's assembly kernels off (they made the bitstream vary between runs), so the
  same frames give the same bytes;
* ``frames.npz``: ``rgb [T,H,W,3] uint8`` (the exact rendered colours, before video compression),
  ``depth [T,H,W] float32`` metres, ``instance_ids [T,H,W] int32``, ``intrinsics [T,3,3] float32``,
  ``extrinsics [T,3,4] float32`` camera-from-world, ``fps`` (0-d float64); written with fixed zip
  timestamps so it is byte-identical across runs;
* ``scene.json``: the :class:`~spatial_mllm.data.scene.SceneMeta` (``save_scene``).

Departures from the paper: the paper's videos are real scans (ScanNet / ScanNet++ / ARKitScenes) at
their native resolution and frame rate; ours are synthetic and small by default (160×120) so the tiny
preset runs on a CPU.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from spatial_mllm.data.scene import SceneMeta, load_scene, save_scene
from spatial_mllm.data.synthetic import (
    SURFACE_FLOOR,
    SyntheticScene,
    TriMesh,
    footprint_corners,
    point_in_polygon,
)

__all__ = [
    "RenderConfig",
    "RenderedFrames",
    "Renderer",
    "intrinsics_from_fov",
    "camera_rays",
    "camera_path",
    "free_space_grid",
    "render_scene",
    "save_rendered",
    "load_rendered",
    "write_mp4",
    "save_npz",
]


@dataclass
class RenderConfig:
    """Image size, camera path and shading of a rendered scan (lengths in metres, angles in degrees)."""

    width: int = 160  # pixels; even (yuv420p video)
    height: int = 120  # pixels; even
    hfov_deg: float = 70.0  # horizontal field of view; ScanNet colour is ~58°, a phone wide camera ~70°
    num_frames: int = 64  # frames per video
    fps: float = 8.0  # frame rate written to the video; the walk speed is path length / duration
    cam_height: tuple[float, float] = (1.2, 1.7)  # eye height range above the floor
    pitch_deg: float = -12.0  # mean pitch (negative = looking down)
    pitch_jitter_deg: float = 4.0  # amplitude of the slow pitch wobble
    roll_jitter_deg: float = 2.0  # amplitude of the slow roll wobble
    yaw_sweep_deg: float = 60.0  # amplitude of the left-right sweep around the walking direction
    sweeps_per_metre: float = 0.35  # sweep cycles per metre walked
    clearance: float = 0.35  # minimum distance of the camera path from walls and object footprints
    min_view_distance: float = 1.6  # turn away from walls closer than this along the view direction
    grid_res: float = 0.1  # free-space grid resolution for path planning
    area_per_waypoint: float = 7.0  # m² of floor per waypoint of the walk (3-8 waypoints)
    ambient: float = 0.45  # ambient light fraction
    light_dir: tuple[float, float, float] = (0.35, 0.25, 1.0)  # direction towards the light (world)
    texture_noise: float = 0.08  # relative amplitude of the surface value noise
    texture_cell: float = 0.04  # size of a noise cell on the surfaces
    crf: int = 18  # libx264 constant rate factor of video.mp4 (lower = better)
    batch_frames: int = 16  # frames whose rays are cast in one call
    nthreads: int = 1  # Embree threads (0 = all cores)

    def __post_init__(self):
        if self.width % 2 or self.height % 2:
            raise ValueError(
                f"width and height must be even for yuv420p video, got {self.width}x{self.height}"
            )
        if not 0 < self.cam_height[0] <= self.cam_height[1]:
            raise ValueError(f"cam_height must be an increasing positive range, got {self.cam_height}")
        if self.num_frames < 2:
            raise ValueError("num_frames must be >= 2")


@dataclass
class RenderedFrames:
    """A rendered scan (all arrays indexed by frame first)."""

    rgb: np.ndarray  # [T, H, W, 3] uint8
    depth: np.ndarray  # [T, H, W] float32 z-depth in metres (0 = no hit)
    instance_ids: np.ndarray  # [T, H, W] int32 ObjectBox.instance_id, 0 = room / no hit
    intrinsics: np.ndarray  # [T, 3, 3] float32 pixels
    extrinsics: np.ndarray  # [T, 3, 4] float32 camera-from-world (OpenCV)
    fps: float  # frames per second


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Pinhole ``K [3, 3]`` with square pixels, principal point at the image centre ``((W-1)/2, (H-1)/2)``
    (pixel centres at integers)."""
    fx = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[fx, 0.0, (width - 1) / 2], [0.0, fx, (height - 1) / 2], [0.0, 0.0, 1.0]])


def camera_rays(K: np.ndarray, extrinsics: np.ndarray, width: int, height: int) -> np.ndarray:
    """Rays ``[T, H, W, 6]`` float32 (origin, direction) for camera-from-world ``extrinsics [T, 3, 4]``.

    Direction = ``R^T K^-1 [u, v, 1]`` for the pixel centre ``(u, v)`` (integers): its camera z is 1,
    so a hit distance along it equals the z-depth. ``K`` is ``[3, 3]`` or ``[T, 3, 3]``.
    """
    E = np.asarray(extrinsics, dtype=np.float64).reshape(-1, 3, 4)
    K = np.broadcast_to(np.asarray(K, dtype=np.float64), (len(E), 3, 3))
    T = len(E)
    u = np.arange(width, dtype=np.float64)
    v = np.arange(height, dtype=np.float64)
    rays = np.empty((T, height, width, 6), np.float32)
    same_K = bool(np.all(K == K[:1]))
    for i in range(T):
        if i == 0 or not same_K:
            d_cam = np.empty((height, width, 3), np.float64)  # K^-1 [u, v, 1]
            d_cam[..., 0] = ((u - K[i, 0, 2]) / K[i, 0, 0])[None, :]
            d_cam[..., 1] = ((v - K[i, 1, 2]) / K[i, 1, 1])[:, None]
            d_cam[..., 2] = 1.0
            d_cam = d_cam.astype(np.float32)
        R = E[i, :, :3]
        rays[i, ..., 3:] = d_cam @ R.astype(np.float32)  # row-vector form of R^T d_cam
        rays[i, ..., :3] = (-R.T @ E[i, :, 3]).astype(np.float32)  # camera centre
    return rays


class Renderer:
    """Casts rays into one room's triangles; returns RGB, z-depth and instance ids."""

    def __init__(self, mesh: TriMesh, cfg: RenderConfig | None = None):
        import open3d as o3d  # heavy; imported where needed
        import open3d.core as o3c

        self.cfg = cfg or RenderConfig()
        self._o3c = o3c
        self.scene = o3d.t.geometry.RaycastingScene(nthreads=self.cfg.nthreads)
        self.scene.add_triangles(
            o3c.Tensor(np.ascontiguousarray(mesh.vertices, dtype=np.float32)),
            o3c.Tensor(np.ascontiguousarray(mesh.triangles, dtype=np.uint32)),
        )
        F = len(mesh.triangles)
        # one extra slot (index F) for rays that hit nothing
        self._albedo = np.concatenate([mesh.albedo, np.zeros((1, 3), np.float32)]).astype(np.float32)
        self._inst = np.concatenate([mesh.instance_ids, [0]]).astype(np.int32)
        self._floor = np.concatenate([mesh.surface == SURFACE_FLOOR, [False]])
        self._n_tri = F
        light = np.asarray(self.cfg.light_dir, dtype=np.float32)
        self._light = (light / np.linalg.norm(light)).astype(np.float32)

    def render(
        self, K: np.ndarray, extrinsics: np.ndarray, width: int, height: int
    ) -> tuple[np.ndarray, ...]:
        """``(rgb [T,H,W,3] uint8, depth [T,H,W] float32, instance_ids [T,H,W] int32)`` for the cameras
        ``extrinsics [T, 3, 4]`` (camera-from-world) and intrinsics ``K`` ``[3, 3]`` or ``[T, 3, 3]``."""
        E = np.asarray(extrinsics, dtype=np.float64).reshape(-1, 3, 4)
        Ks = np.broadcast_to(np.asarray(K, dtype=np.float64), (len(E), 3, 3))
        T, B = len(E), max(1, self.cfg.batch_frames)
        rgb = np.empty((T, height, width, 3), np.uint8)
        depth = np.empty((T, height, width), np.float32)
        inst = np.empty((T, height, width), np.int32)
        for s in range(0, T, B):
            sl = slice(s, min(T, s + B))
            rgb[sl], depth[sl], inst[sl] = self._render_batch(Ks[sl], E[sl], width, height)
        return rgb, depth, inst

    def _render_batch(self, K, E, width, height):
        cfg = self.cfg
        rays = camera_rays(K, E, width, height)  # [b, H, W, 6]
        hit = self.scene.cast_rays(self._o3c.Tensor(rays), nthreads=cfg.nthreads)
        t = hit["t_hit"].numpy()  # [b, H, W] = z-depth (direction has camera z = 1)
        prim = hit["primitive_ids"].numpy()  # uint32, INVALID_ID (2^32 - 1) on a miss
        miss = prim == np.uint32(0xFFFFFFFF)
        prim = np.where(miss, np.uint32(self._n_tri), prim)
        depth = np.where(miss, np.float32(0.0), t)
        inst = self._inst[prim]

        n = hit["primitive_normals"].numpy()  # [b, H, W, 3] unit normals (either side)
        d = rays[..., 3:]
        nl = n @ self._light  # [b, H, W]
        facing = np.einsum("...i,...i->...", n, d)  # < 0 when n points towards the camera
        # Lambert on the side the camera sees: n_seen = -sign(facing) n
        lam = np.maximum(np.where(facing < 0, nl, -nl), 0.0)
        shade = cfg.ambient + (1.0 - cfg.ambient) * lam
        # value-noise texture attached to the surfaces: hash of the 3-D cell holding the hit point
        p = rays[..., :3] + d * depth[..., None]  # world hit points
        cell = np.floor(p * (1.0 / cfg.texture_cell) + 0.371).astype(np.int32).view(np.uint32)
        h = (
            cell[..., 0] * np.uint32(73856093)
            ^ cell[..., 1] * np.uint32(19349663)
            ^ cell[..., 2] * np.uint32(83492791)
        )
        h ^= h >> np.uint32(13)
        h *= np.uint32(1274126177)
        h ^= h >> np.uint32(16)
        noise = (h >> np.uint32(22)).astype(np.float32) * (1.0 / 1023.0) - 0.5  # [-0.5, 0.5]
        shade *= 1.0 + 2.0 * cfg.texture_noise * noise
        on_floor = np.flatnonzero(self._floor[prim])  # 0.6 m floor tiles, on floor pixels only
        if on_floor.size:
            pf = p.reshape(-1, 3)[on_floor]
            tile = (np.floor(pf[:, 0] * (1 / 0.6)) + np.floor(pf[:, 1] * (1 / 0.6))) % 2
            shade.reshape(-1)[on_floor] *= 1.0 - 0.08 * tile
        shade *= 255.0
        rgb = self._albedo[prim]  # [b, H, W, 3] float32 (misses have albedo 0)
        rgb *= shade[..., None]
        rgb += 0.5
        np.minimum(rgb, 255.0, out=rgb)  # all terms are >= 0, so only the top needs clamping
        return rgb.astype(np.uint8), depth, inst


# ----------------------------------------------------------------------------------------------------
# Camera path
# ----------------------------------------------------------------------------------------------------


def free_space_grid(meta: SceneMeta, res: float, clearance: float):
    """Walkable cells of the floor: ``(mask [ny, nx] bool, origin (x0, y0), distance [ny, nx] m)``.

    A cell is walkable when its centre lies inside the floor polygon at least ``clearance`` metres from
    any wall and any object footprint (every object counts; wall-mounted ones are thin and near walls).
    """
    from scipy import ndimage

    poly = meta.floor_polygon
    lo, hi = poly.min(axis=0) - res, poly.max(axis=0) + res
    nx, ny = int(math.ceil((hi[0] - lo[0]) / res)), int(math.ceil((hi[1] - lo[1]) / res))
    xs = lo[0] + (np.arange(nx) + 0.5) * res
    ys = lo[1] + (np.arange(ny) + 0.5) * res
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    free = point_in_polygon(pts, poly)
    for o in meta.objects:
        corners = footprint_corners(o.centroid, o.axes_lengths, o.rotation)
        free &= ~point_in_polygon(pts, corners)
    free = free.reshape(ny, nx)
    dist = ndimage.distance_transform_edt(free) * res  # distance to the nearest blocked cell centre
    return dist >= clearance, np.array([lo[0], lo[1]]), dist


def _smooth_noise(rng, n: int, amplitude: float, cycles: float = 2.0) -> np.ndarray:
    """A slow random wobble: three sinusoids with random phases, ``n`` samples, peak ≈ ``amplitude``."""
    s = np.linspace(0.0, 1.0, n)
    out = np.zeros(n)
    for k in range(3):
        f = cycles * (k + 1) * rng.uniform(0.7, 1.3)
        out += np.sin(2 * np.pi * f * s + rng.uniform(0, 2 * np.pi)) / (k + 1)
    return amplitude * out / 1.83


def _wall_distance(origin: np.ndarray, angles: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance (m) from a 2-D point inside ``poly`` to its boundary along each direction ``angles [A]``."""
    d = np.stack([np.cos(angles), np.sin(angles)], axis=1)[:, None, :]  # [A, 1, 2]
    a, b = poly, np.roll(poly, -1, axis=0)  # edges a→b, [N, 2]
    e = (b - a)[None]  # [1, N, 2]
    w = (a - origin)[None]  # [1, N, 2]
    den = d[..., 0] * e[..., 1] - d[..., 1] * e[..., 0]  # cross(d, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (w[..., 0] * e[..., 1] - w[..., 1] * e[..., 0]) / den  # along the ray
        u = (w[..., 0] * d[..., 1] - w[..., 1] * d[..., 0]) / den  # along the edge
    ok = (np.abs(den) > 1e-12) & (t > 0) & (u >= 0) & (u <= 1)
    return np.where(ok, t, np.inf).min(axis=1)


def _avoid_walls(yaw: np.ndarray, path: np.ndarray, poly: np.ndarray, min_dist: float) -> np.ndarray:
    """Turn each frame's yaw, as little as possible, until the wall ahead is at least ``min_dist`` m away
    (or to the most open direction), then smooth; keeps frames from staring at a blank wall."""
    offsets = np.radians(np.arange(-90, 91, 10))
    order = np.argsort(np.abs(offsets), kind="stable")
    out = yaw.copy()
    for i in range(len(yaw)):
        dist = _wall_distance(path[i], yaw[i] + offsets[order], poly)
        good = np.flatnonzero(dist >= min_dist)
        out[i] = yaw[i] + offsets[order][good[0] if len(good) else int(np.argmax(dist))]
    if len(out) > 4:  # moving average (edge-padded) so the turn is smooth
        pad = np.r_[np.repeat(out[:1], 2), out, np.repeat(out[-1:], 2)]
        out = np.convolve(pad, np.ones(5) / 5, mode="valid")
    return out


def _extrinsic(eye, yaw, pitch, roll) -> np.ndarray:
    """Camera-from-world ``[3, 4]`` for a camera at ``eye`` with yaw (about world z, 0 = +x), pitch
    (positive up) and roll (about the view axis), radians."""
    f = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    x = np.cross(f, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(f, x)
    c, s = math.cos(roll), math.sin(roll)
    x, y = c * x + s * y, -s * x + c * y
    R = np.stack([x, y, f])
    return np.concatenate([R, (-R @ np.asarray(eye))[:, None]], axis=1)


def camera_path(meta: SceneMeta, cfg: RenderConfig, rng: np.random.Generator) -> np.ndarray:
    """Handheld-scan cameras ``[num_frames, 3, 4]`` (camera-from-world) through the free floor of ``meta``.

    Raises ``ValueError`` if the room has no walkable cell even at 0.15 m clearance.
    """
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    res = cfg.grid_res
    clearance = cfg.clearance
    while True:
        mask, origin, _ = free_space_grid(meta, res, clearance)
        if mask.any() or clearance <= 0.15:
            break
        clearance -= 0.05
    if not mask.any():
        raise ValueError(f"scene {meta.scene_id}: no free floor for a camera path")
    labels, n_comp = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n_comp + 1))
    comp = labels == (1 + int(np.argmax(sizes)))
    cells = np.argwhere(comp)  # [M, 2] (row=y, col=x)
    xy = origin + (cells[:, ::-1] + 0.5) * res  # cell centres, metres

    # waypoints: farthest-point sampling from a random start
    area = meta.room_size or float(comp.sum() * res * res)
    k = int(np.clip(round(area / cfg.area_per_waypoint), 3, 8))
    k = min(k, len(cells))
    chosen = [int(rng.integers(len(cells)))]
    dmin = np.linalg.norm(xy - xy[chosen[0]], axis=1)
    for _ in range(k - 1):
        chosen.append(int(np.argmax(dmin)))
        dmin = np.minimum(dmin, np.linalg.norm(xy - xy[chosen[-1]], axis=1))
    # visiting order: greedy nearest neighbour from the start
    order, left = [chosen[0]], set(chosen[1:])
    while left:
        last = xy[order[-1]]
        nxt = min(sorted(left), key=lambda i: float(np.linalg.norm(xy[i] - last)))
        order.append(nxt)
        left.remove(nxt)

    # 8-connected grid graph over the component; shortest paths between consecutive waypoints
    index = -np.ones(comp.shape, np.int64)
    index[comp] = np.arange(len(cells))
    rows, cols, wts = [], [], []
    for dy, dx in [(0, 1), (1, 0), (1, 1), (1, -1)]:
        a = cells
        b = cells + [dy, dx]
        ok = (b[:, 0] < comp.shape[0]) & (b[:, 1] >= 0) & (b[:, 1] < comp.shape[1])
        a, b = a[ok], b[ok]
        ok = comp[b[:, 0], b[:, 1]]
        rows.append(index[a[ok, 0], a[ok, 1]])
        cols.append(index[b[ok, 0], b[ok, 1]])
        wts.append(np.full(int(ok.sum()), math.hypot(dy, dx)))
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(wts)
    graph = coo_matrix((np.r_[w, w], (np.r_[r, c], np.r_[c, r])), shape=(len(cells),) * 2).tocsr()
    _, pred = dijkstra(graph, indices=order[:-1], return_predecessors=True)
    route = [order[0]]
    for j in range(len(order) - 1):
        seg, node = [], order[j + 1]
        while node != order[j] and node >= 0:
            seg.append(node)
            node = pred[j, node]
        route += seg[::-1]
    pts = xy[route]
    if len(pts) < 2:  # a single free cell: turn on the spot
        pts = np.repeat(pts, 2, axis=0)
    # smooth (moving average keeps the path within the grid's free cells up to res/2) and resample
    if len(pts) > 5:
        kernel = np.ones(5) / 5
        pad = np.concatenate([np.repeat(pts[:1], 2, 0), pts, np.repeat(pts[-1:], 2, 0)])
        pts = np.stack([np.convolve(pad[:, i], kernel, mode="valid") for i in range(2)], axis=1)
    seglen = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.r_[0.0, np.cumsum(seglen)]
    T = cfg.num_frames
    total = arc[-1]
    s = np.linspace(0.0, total, T)
    if total > 1e-9:
        path = np.stack([np.interp(s, arc, pts[:, i]) for i in range(2)], axis=1)
    else:
        path = np.repeat(pts[:1], T, axis=0)

    # heading = smoothed walking direction; yaw sweeps around it
    if total > 1e-9:
        ahead = np.stack([np.interp(np.minimum(s + 0.5, total), arc, pts[:, i]) for i in range(2)], axis=1)
        behind = np.stack([np.interp(np.maximum(s - 0.5, 0), arc, pts[:, i]) for i in range(2)], axis=1)
        heading = np.unwrap(np.arctan2(*(ahead - behind)[:, ::-1].T))
    else:
        heading = np.zeros(T)
    n_sweeps = max(1.0, cfg.sweeps_per_metre * total)
    phase = rng.uniform(0, 2 * np.pi)
    yaw = heading + math.radians(cfg.yaw_sweep_deg) * np.sin(
        2 * np.pi * n_sweeps * np.linspace(0, 1, T) + phase
    )
    if total <= 1e-9:
        yaw = np.linspace(0, 2 * np.pi, T, endpoint=False)
    yaw = _avoid_walls(yaw, path, meta.floor_polygon, cfg.min_view_distance)
    lo_h, hi_h = cfg.cam_height
    base = rng.uniform(lo_h + 0.25 * (hi_h - lo_h), hi_h - 0.25 * (hi_h - lo_h))
    z = np.clip(base + _smooth_noise(rng, T, 0.25 * (hi_h - lo_h)), lo_h, hi_h)
    pitch = np.radians(cfg.pitch_deg + _smooth_noise(rng, T, cfg.pitch_jitter_deg, cycles=3))
    roll = np.radians(_smooth_noise(rng, T, cfg.roll_jitter_deg, cycles=3))
    return np.stack([_extrinsic((path[i, 0], path[i, 1], z[i]), yaw[i], pitch[i], roll[i]) for i in range(T)])


def _scene_seed(scene_id: str, seed: int) -> list[int]:
    return [int(seed), zlib.crc32(scene_id.encode())]


def render_scene(scene: SyntheticScene, cfg: RenderConfig | None = None, seed: int = 0) -> RenderedFrames:
    """Camera path + rendering of a synthetic scene; deterministic in ``(scene, cfg, seed)``."""
    cfg = cfg or RenderConfig()
    rng = np.random.default_rng(_scene_seed(scene.meta.scene_id, seed))
    E = camera_path(scene.meta, cfg, rng)
    K = intrinsics_from_fov(cfg.width, cfg.height, cfg.hfov_deg)
    rgb, depth, inst = Renderer(scene.mesh, cfg).render(K, E, cfg.width, cfg.height)
    T = len(E)
    return RenderedFrames(
        rgb=rgb,
        depth=depth,
        instance_ids=inst,
        intrinsics=np.repeat(K[None], T, axis=0).astype(np.float32),
        extrinsics=E.astype(np.float32),
        fps=float(cfg.fps),
    )


# ----------------------------------------------------------------------------------------------------
# Deterministic writers
# ----------------------------------------------------------------------------------------------------


def save_npz(path: str | Path, compress: bool = True, **arrays) -> Path:
    """``np.savez(_compressed)`` with fixed zip timestamps (numpy stamps the current time, which breaks
    byte-identical outputs). Readable with ``np.load``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    return path


def write_mp4(path: str | Path, rgb: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Encode ``rgb [T, H, W, 3] uint8`` as H.264/yuv420p mp4 with PyAV; deterministic bytes
    (one encoder thread, bitexact muxer/encoder flags, x264 ``asm=0``, no creation time)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 [T, H, W, 3] frames, got {rgb.dtype} {rgb.shape}")
    T, H, W, _ = rgb.shape
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.thread_count = 1
        # asm=0: the bundled x264's SIMD kernels make the bitstream differ from run to run (seen with
        # PyAV 18.1 / x264 core 165 even with threads=1); the C kernels are deterministic and fast enough
        # for small frames.
        stream.options = {
            "crf": str(crf),
            "preset": "veryfast",
            "threads": "1",
            "flags": "+bitexact",
            "x264-params": "asm=0:threads=1:lookahead-threads=1",
        }
        for i in range(T):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[i]), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def save_rendered(out_dir: str | Path, meta: SceneMeta, frames: RenderedFrames, crf: int = 18) -> Path:
    """Write ``video.mp4``, ``frames.npz`` and ``scene.json`` under ``<out_dir>/<scene_id>/``; returns
    that folder."""
    folder = Path(out_dir) / meta.scene_id
    folder.mkdir(parents=True, exist_ok=True)
    write_mp4(folder / "video.mp4", frames.rgb, frames.fps, crf=crf)
    save_npz(
        folder / "frames.npz",
        rgb=frames.rgb,
        depth=frames.depth.astype(np.float32),
        instance_ids=frames.instance_ids.astype(np.int32),
        intrinsics=frames.intrinsics.astype(np.float32),
        extrinsics=frames.extrinsics.astype(np.float32),
        fps=np.float64(frames.fps),
    )
    save_scene(meta, folder / "scene.json")
    return folder


def load_rendered(folder: str | Path) -> tuple[SceneMeta, RenderedFrames]:
    """Read back what :func:`save_rendered` wrote: ``(scene, frames)`` (RGB from ``frames.npz``, exact)."""
    folder = Path(folder)
    npz = folder / "frames.npz"
    if not npz.is_file():
        raise FileNotFoundError(f"rendered frames not found: {npz}")
    with np.load(npz) as d:
        frames = RenderedFrames(
            rgb=d["rgb"],
            depth=d["depth"],
            instance_ids=d["instance_ids"],
            intrinsics=d["intrinsics"],
            extrinsics=d["extrinsics"],
            fps=float(d["fps"]),
        )
    return load_scene(folder / "scene.json"), frames
