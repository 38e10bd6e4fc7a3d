"""Pinhole cameras, rigid transforms and (un)projection — one convention for the whole package.

Conventions (the same as VGGT and OpenCV):

* camera axes: x right, y down, z forward (OpenCV);
* ``extrinsics`` are **camera-from-world** rigid transforms ``[R | t]``, shape ``[..., 3, 4]`` (or
  ``[..., 4, 4]``): ``x_cam = R @ x_world + t``;
* ``intrinsics`` ``K`` are ``[..., 3, 3]`` in pixels; pixel ``(u, v)`` = (column, row) index and the
  centre of pixel ``(u, v)`` is at the integer coordinate ``(u, v)`` (no +0.5 offset), as in VGGT's
  ``depth_to_world_coords_points`` and OpenCV;
* depth is the z coordinate in the camera frame (not the ray length), in metres for ground truth
  (VGGT's predictions are in its own normalised scale);
* the world is z-up for scenes of this package (metres); these functions do not depend on that.

Every function accepts torch tensors (any device/dtype, batched over leading dims). ``look_at`` and
``rotation_*`` helpers also accept numpy arrays and return the same kind they were given.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "to_homogeneous",
    "invert_rigid",
    "camera_centers",
    "pixel_grid",
    "depth_to_camera_points",
    "unproject_depth",
    "project_points",
    "look_at",
]


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    """Return (tensor, was_numpy)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x), True
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.as_tensor(np.asarray(x)), True


def _back(x: torch.Tensor, was_numpy: bool):
    return x.numpy() if was_numpy else x


def to_homogeneous(T):
    """``[..., 3, 4]`` rigid transform → ``[..., 4, 4]`` (``[..., 4, 4]`` passes through)."""
    t, np_in = _as_tensor(T)
    if t.shape[-2:] == (4, 4):
        return _back(t, np_in)
    if t.shape[-2:] != (3, 4):
        raise ValueError(f"expected a [..., 3, 4] or [..., 4, 4] transform, got shape {tuple(t.shape)}")
    bottom = torch.zeros(*t.shape[:-2], 1, 4, dtype=t.dtype, device=t.device)
    bottom[..., 0, 3] = 1
    return _back(torch.cat([t, bottom], dim=-2), np_in)


def invert_rigid(T):
    """Closed-form inverse of a rigid transform ``[R | t]`` → ``[Rᵀ | -Rᵀ t]``; keeps the input's shape
    (``[..., 3, 4]`` or ``[..., 4, 4]``). camera-from-world ↔ world-from-camera."""
    t, np_in = _as_tensor(T)
    R = t[..., :3, :3]
    tr = t[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.cat([Rt, -Rt @ tr], dim=-1)  # [..., 3, 4]
    if t.shape[-2:] == (4, 4):
        out = to_homogeneous(out)
    return _back(out, np_in)


def camera_centers(extrinsics):
    """Camera centres in world coordinates: ``-Rᵀ t``; ``[..., 3, 4] → [..., 3]``."""
    t, np_in = _as_tensor(extrinsics)
    R = t[..., :3, :3]
    tr = t[..., :3, 3]
    return _back(-(R.transpose(-1, -2) @ tr.unsqueeze(-1)).squeeze(-1), np_in)


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel coordinates ``[H, W, 2]`` holding (u, v) = (column, row); pixel centres at integers."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u, v], dim=-1)


def depth_to_camera_points(depth, intrinsics):
    """Depth ``[..., H, W]`` and ``K [..., 3, 3]`` → camera-frame points ``[..., H, W, 3]`` (OpenCV)."""
    d, np_in = _as_tensor(depth)
    K, _ = _as_tensor(intrinsics)
    K = K.to(device=d.device, dtype=d.dtype)
    H, W = d.shape[-2:]
    uv = pixel_grid(H, W, device=d.device, dtype=d.dtype)  # [H, W, 2]
    fx = K[..., 0, 0][..., None, None]
    fy = K[..., 1, 1][..., None, None]
    cx = K[..., 0, 2][..., None, None]
    cy = K[..., 1, 2][..., None, None]
    x = (uv[..., 0] - cx) / fx * d
    y = (uv[..., 1] - cy) / fy * d
    return _back(torch.stack([x, y, d], dim=-1), np_in)


def unproject_depth(depth, intrinsics, extrinsics):
    """Depth maps to world points.

    Args:
        depth: ``[..., H, W]`` z-depth (metres for ground truth).
        intrinsics: ``[..., 3, 3]`` pixels.
        extrinsics: ``[..., 3, 4]`` or ``[..., 4, 4]`` camera-from-world (OpenCV).

    Returns:
        world points ``[..., H, W, 3]`` (same kind — numpy or torch — as ``depth``).
    """
    d, np_in = _as_tensor(depth)
    E, _ = _as_tensor(extrinsics)
    E = E.to(device=d.device, dtype=d.dtype)
    pc = depth_to_camera_points(d, intrinsics)  # [..., H, W, 3]
    c2w = invert_rigid(E)[..., :3, :]  # [..., 3, 4]
    R = c2w[..., :3, :3][..., None, None, :, :]  # [..., 1, 1, 3, 3]
    t = c2w[..., :3, 3][..., None, None, :]  # [..., 1, 1, 3]
    pw = (R @ pc.unsqueeze(-1)).squeeze(-1) + t
    return _back(pw, np_in)


def project_points(points, intrinsics, extrinsics):
    """World points ``[..., N, 3]`` → pixel coordinates ``[..., N, 2]`` and camera depth ``[..., N]``.

    Points behind the camera get depth ≤ 0; their pixel coordinates are meaningless (check ``z > 0``).
    """
    p, np_in = _as_tensor(points)
    K, _ = _as_tensor(intrinsics)
    E, _ = _as_tensor(extrinsics)
    K = K.to(device=p.device, dtype=p.dtype)
    E = E.to(device=p.device, dtype=p.dtype)
    pc = p @ E[..., :3, :3].transpose(-1, -2) + E[..., None, :3, 3]  # [..., N, 3]
    z = pc[..., 2]
    proj = pc @ K.transpose(-1, -2)  # [..., N, 3]
    uv = proj[..., :2] / z.unsqueeze(-1)
    return _back(uv, np_in), _back(z, np_in)


def look_at(eye, target, up=(0.0, 0.0, 1.0)):
    """Camera-from-world extrinsics ``[3, 4]`` (OpenCV) for a camera at ``eye`` looking at ``target``.

    ``up`` is the world's up direction (z-up in this package); the camera's y axis points down, i.e.
    along ``-up`` projected onto the image plane. Raises if the view direction is parallel to ``up``.
    """
    was_np = not isinstance(eye, torch.Tensor)
    eye_t = torch.as_tensor(np.asarray(eye, dtype=np.float64)) if was_np else eye.double()
    tgt = torch.as_tensor(np.asarray(target, dtype=np.float64)) if was_np else target.double()
    up_t = torch.as_tensor(np.asarray(up, dtype=np.float64))
    z = tgt - eye_t
    z = z / torch.linalg.norm(z)
    x = torch.linalg.cross(z, up_t.to(z))  # right = forward × up
    n = torch.linalg.norm(x)
    if n < 1e-9:
        raise ValueError("look_at: view direction is parallel to the up vector")
    x = x / n
    y = torch.linalg.cross(z, x)  # down
    R = torch.stack([x, y, z], dim=0)  # rows: camera axes in world coordinates
    t = -R @ eye_t
    E = torch.cat([R, t[:, None]], dim=1)
    return E.numpy() if was_np else E
