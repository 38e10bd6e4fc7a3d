"""Analytic box rooms with exact point maps, for the sampling tests and the benchmark.

A *box room* is an axis-aligned room ``[0, Lx] × [0, Ly] × [0, Lz]`` (metres, world z-up) holding
axis-aligned boxes (furniture) along its walls. A handheld-like camera walks an ellipse in the free middle
of the room, sweeping its yaw. Every pixel's ray is intersected analytically with the room and the boxes
(slab method), so depth and world points are exact, at any resolution, on any device, with no renderer.
The scenes of :mod:`spatial_mllm.data.synthetic` (furniture from primitives, open3d rendering) are the
project's real synthetic data; this module exists so the sampling tests and the 128 × 392 × 518 benchmark
do not depend on them and run in milliseconds to seconds.

Conventions are those of :mod:`spatial_mllm.geometry.cameras`: OpenCV camera axes, camera-from-world
``[R | t]`` extrinsics, ``K`` in pixels with pixel centres at integer coordinates, z-depth in metres.
``conf`` mimics VGGT's ``world_points_conf`` (≥ 1, larger for near, well-observed surfaces).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spatial_mllm.geometry.cameras import look_at

__all__ = ["BoxRoom", "make_box_room", "camera_walk", "render_box_room", "toy_point_maps"]


@dataclass
class BoxRoom:
    size: np.ndarray  # [3] room extent (Lx, Ly, Lz), metres
    boxes: np.ndarray  # [B, 2, 3] (min corner, max corner) of each furniture box, metres


def make_box_room(seed: int = 0, n_boxes: int = 8) -> BoxRoom:
    """A random room 4-8 m × 3.5-7 m × 2.6-3.2 m with ``n_boxes`` boxes standing along the walls."""
    rng = np.random.default_rng(seed)
    size = np.array([rng.uniform(4, 8), rng.uniform(3.5, 7), rng.uniform(2.6, 3.2)])
    boxes = []
    for _ in range(n_boxes):
        w, d, h = rng.uniform(0.4, 1.6), rng.uniform(0.3, 0.7), rng.uniform(0.4, 2.0)
        wall = rng.integers(4)
        along = 0 if wall < 2 else 1  # walls 0/1: y = 0 / y = Ly (box runs along x); 2/3: x = 0 / x = Lx
        other = 1 - along
        lo, hi = np.zeros(3), np.zeros(3)
        L = size[along]
        a0 = rng.uniform(0.0, max(L - w, 0.01))
        lo[along], hi[along] = a0, min(a0 + w, L)
        if wall % 2 == 0:
            lo[other], hi[other] = 0.0, d
        else:
            lo[other], hi[other] = size[other] - d, size[other]
        lo[2], hi[2] = 0.0, h
        boxes.append(np.stack([lo, hi]))
    return BoxRoom(size=size, boxes=np.asarray(boxes).reshape(-1, 2, 3))


def camera_walk(room: BoxRoom, n_frames: int, seed: int = 0, hfov_deg: float = 70.0,
                width: int = 518, height: int = 392) -> tuple[torch.Tensor, torch.Tensor]:
    """A loop around the room's middle (an ellipse at 28 % of the room size) with a swept yaw.

    Returns:
        ``K [S, 3, 3]`` (pixels) and camera-from-world extrinsics ``[S, 3, 4]``, float32.
    """
    rng = np.random.default_rng(seed + 1000)
    c = room.size[:2] / 2
    r = room.size[:2] * 0.28
    phase = rng.uniform(0, 2 * np.pi)
    s = np.linspace(0, 2 * np.pi, n_frames, endpoint=False) + phase
    E = []
    for i, a in enumerate(s):
        eye = np.array([c[0] + r[0] * np.cos(a), c[1] + r[1] * np.sin(a), 1.5 + 0.05 * np.sin(3 * a)])
        heading = a + np.pi / 2 + 0.9 * np.sin(2.3 * a + i * 0.01)  # tangent + a slow sweep
        tgt = eye + np.array([np.cos(heading), np.sin(heading), -0.25])
        E.append(look_at(eye, tgt))
    f = (width / 2) / np.tan(np.deg2rad(hfov_deg) / 2)
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
    Et = torch.as_tensor(np.stack(E), dtype=torch.float32)
    Kt = torch.as_tensor(K, dtype=torch.float32).expand(n_frames, 3, 3).clone()
    return Kt, Et


def render_box_room(room: BoxRoom, K: torch.Tensor, extrinsics: torch.Tensor, height: int, width: int,
                    device: str | torch.device = "cpu", chunk: int = 8) -> torch.Tensor:
    """Exact z-depth ``[S, H, W]`` (metres) by ray/box slab intersection, ``chunk`` frames at a time."""
    dev = torch.device(device)
    K = K.to(dev, torch.float32)
    E = extrinsics.to(dev, torch.float32)
    R, t = E[:, :, :3], E[:, :, 3]  # [S, 3, 3], [S, 3]
    centers = -(R.transpose(1, 2) @ t[..., None])[..., 0]  # [S, 3]
    v, u = torch.meshgrid(torch.arange(height, device=dev, dtype=torch.float32),
                          torch.arange(width, device=dev, dtype=torch.float32), indexing="ij")
    room_hi = torch.as_tensor(room.size, dtype=torch.float32, device=dev)
    boxes = torch.as_tensor(room.boxes, dtype=torch.float32, device=dev)  # [B, 2, 3]
    out = []
    for s0 in range(0, E.shape[0], chunk):
        sl = slice(s0, s0 + chunk)
        Ki = K[sl]
        x = (u - Ki[:, 0, 2, None, None]) / Ki[:, 0, 0, None, None]  # [s, H, W]
        y = (v - Ki[:, 1, 2, None, None]) / Ki[:, 1, 1, None, None]
        dc = torch.stack([x, y, torch.ones_like(x)], -1)  # [s, H, W, 3] camera-frame direction, z = 1
        d = torch.einsum("sji,shwj->shwi", R[sl], dc)  # world direction R^T dc; t along it = z-depth
        d = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
        o = centers[sl][:, None, None, :]  # [s, 1, 1, 3]
        inv = 1.0 / d
        t0, t1 = (0 - o) * inv, (room_hi - o) * inv
        depth = torch.maximum(t0, t1).amin(-1)  # exit of the room box (camera inside)
        for b in range(boxes.shape[0]):
            a0, a1 = (boxes[b, 0] - o) * inv, (boxes[b, 1] - o) * inv
            tn = torch.minimum(a0, a1).amax(-1)
            tf = torch.maximum(a0, a1).amin(-1)
            hit = (tn <= tf) & (tn > 1e-4)
            depth = torch.where(hit & (tn < depth), tn, depth)
        out.append(depth)
    return torch.cat(out)  # [S, H, W]


def toy_point_maps(n_frames: int = 32, height: int = 48, width: int = 64, seed: int = 0, n_boxes: int = 8,
                   device: str | torch.device = "cpu", noise: float = 0.0) -> dict[str, torch.Tensor]:
    """A box room scanned by ``n_frames`` cameras: exact ``world_points [S, H, W, 3]`` (metres),
    ``depth [S, H, W]``, ``intrinsics [S, 3, 3]``, ``extrinsics [S, 3, 4]`` and a VGGT-like ``conf [S, H, W]``
    (``1 + 4·exp(-depth / 3)`` times a random per-pixel factor in [0.5, 1.5]).

    ``noise``: std of Gaussian noise added to the points, relative to depth (0 = exact geometry).
    """
    from spatial_mllm.geometry.cameras import unproject_depth

    room = make_box_room(seed, n_boxes)
    K, E = camera_walk(room, n_frames, seed, width=width, height=height)
    depth = render_box_room(room, K, E, height, width, device)
    pts = unproject_depth(depth, K.to(depth.device), E.to(depth.device))  # [S, H, W, 3]
    g = torch.Generator(device="cpu").manual_seed(seed)
    factor = (0.5 + torch.rand(depth.shape, generator=g)).to(depth.device)
    if noise > 0:
        pts = pts + noise * depth[..., None] * torch.randn(pts.shape, generator=g).to(depth.device)
    conf = 1.0 + 4.0 * torch.exp(-depth / 3.0) * factor
    return {"world_points": pts, "conf": conf, "depth": depth, "intrinsics": K.to(depth.device),
            "extrinsics": E.to(depth.device), "room_size": torch.as_tensor(room.size)}
