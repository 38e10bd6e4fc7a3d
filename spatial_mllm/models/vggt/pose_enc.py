"""VGGT's ``absT_quaR_FoV`` pose encoding ↔ (extrinsics, intrinsics), quaternions, and depth unprojection.

Encoding (9 values per frame): ``[0:3]`` translation t, ``[3:7]`` quaternion **XYZW** (scalar last) of R,
``[7]`` vertical FoV, ``[8]`` horizontal FoV (radians), where ``[R | t]`` is the **camera-from-world**
extrinsic in OpenCV axes (x right, y down, z forward): ``x_cam = R x_world + t``. Intrinsics have the
principal point at the image centre ``(W/2, H/2)`` (no -0.5) and zero skew. VGGT's world frame is the
camera of frame 0 and its scale is normalised (not metric).

Differences from the reference: the functions accept any leading batch shape ``[..., 9]`` (the reference
assumes ``[B, S, 9]``) and keep the input's dtype/device for the intrinsics (the reference allocates fp32);
``unproject_depth_map_to_point_map`` is torch (any device) through
:func:`spatial_mllm.geometry.cameras.unproject_depth` instead of NumPy float64.
"""

from __future__ import annotations

import torch

from spatial_mllm.geometry.cameras import unproject_depth

__all__ = [
    "quat_to_mat",
    "mat_to_quat",
    "pose_encoding_to_extri_intri",
    "extri_intri_to_pose_encoding",
    "fov_to_intrinsics",
    "unproject_depth_map_to_point_map",
]


def quat_to_mat(q: torch.Tensor) -> torch.Tensor:
    """Quaternions XYZW ``[..., 4]`` (need not be unit: s = 2/|q|²) → rotation matrices ``[..., 3, 3]``."""
    x, y, z, w = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)
    R = torch.stack([
        1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
        s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
        s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
    ], dim=-1)
    return R.reshape(*q.shape[:-1], 3, 3)


def mat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` → unit quaternions XYZW ``[..., 4]`` with w ≥ 0.

    Best-conditioned of the four candidate formulas (PyTorch3D's method, as VGGT uses): the candidate whose
    |component| is largest, divided by ``2·max(|component|, 0.1)``.
    """
    m = R.reshape(*R.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    q_abs = torch.stack([
        1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22,
    ], dim=-1)
    q_abs = torch.sqrt(torch.clamp(q_abs, min=0.0))  # [..., 4] = 2·|w|, 2·|x|, 2·|y|, 2·|z|
    cand = torch.stack([  # rows: candidates (w, x, y, z) computed from w, x, y, z being largest
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2)  # [..., 4, 4]
    cand = cand / (2.0 * q_abs.clamp(min=0.1)[..., None])
    best = q_abs.argmax(dim=-1)  # [...]
    wxyz = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)  # [..., 4]
    xyzw = wxyz[..., [1, 2, 3, 0]]
    return torch.where(xyzw[..., 3:4] < 0, -xyzw, xyzw)


def fov_to_intrinsics(fov_h: torch.Tensor, fov_w: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Vertical/horizontal FoV (radians, ``[...]``) → ``K [..., 3, 3]`` with principal point (W/2, H/2)."""
    H, W = image_hw
    fy = (H / 2.0) / torch.tan(fov_h / 2.0)
    fx = (W / 2.0) / torch.tan(fov_w / 2.0)
    K = torch.zeros(*fov_h.shape, 3, 3, dtype=fov_h.dtype, device=fov_h.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = W / 2.0
    K[..., 1, 2] = H / 2.0
    K[..., 2, 2] = 1.0
    return K


def pose_encoding_to_extri_intri(
    pose_enc: torch.Tensor, image_size_hw: tuple[int, int] | None = None, build_intrinsics: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[..., 9]`` → extrinsics ``[..., 3, 4]`` (camera-from-world, OpenCV) and intrinsics ``[..., 3, 3]``
    (pixels of an image of size ``image_size_hw`` = (H, W); ``None`` if not built)."""
    t, q = pose_enc[..., :3], pose_enc[..., 3:7]
    extrinsics = torch.cat([quat_to_mat(q), t[..., None]], dim=-1)  # [..., 3, 4]
    intrinsics = None
    if build_intrinsics:
        if image_size_hw is None:
            raise ValueError("image_size_hw=(H, W) is needed to build intrinsics from FoV")
        intrinsics = fov_to_intrinsics(pose_enc[..., 7], pose_enc[..., 8], image_size_hw)
    return extrinsics, intrinsics


def extri_intri_to_pose_encoding(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_size_hw: tuple[int, int]
) -> torch.Tensor:
    """Extrinsics ``[..., 3, 4]`` (camera-from-world) and ``K [..., 3, 3]`` → ``[..., 9]`` float32 encoding."""
    H, W = image_size_hw
    t = extrinsics[..., :3, 3]
    q = mat_to_quat(extrinsics[..., :3, :3])
    fov_h = 2 * torch.atan((H / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2.0) / intrinsics[..., 0, 0])
    return torch.cat([t, q, fov_h[..., None], fov_w[..., None]], dim=-1).float()


def unproject_depth_map_to_point_map(
    depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor
) -> torch.Tensor:
    """Depth ``[..., H, W, 1]`` or ``[..., H, W]`` → world points ``[..., H, W, 3]``.

    ``extrinsics [..., 3, 4]`` camera-from-world, ``intrinsics [..., 3, 3]``; pixel (u, v) = (column, row)
    index with centres at integers, as VGGT does: X_cam = ((u-cx)·d/fx, (v-cy)·d/fy, d),
    X_world = Rᵀ(X_cam - t). Works for VGGT's predictions (``depth [B, S, H, W, 1]`` with
    ``pose_encoding_to_extri_intri(pose_enc, (H, W))``).
    """
    lead = extrinsics.dim() - 2  # number of batch dims, e.g. 2 for [B, S, 3, 4]
    if depth.dim() == lead + 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]  # [..., H, W]
    elif depth.dim() != lead + 2:
        raise ValueError(f"depth {tuple(depth.shape)} does not match extrinsics {tuple(extrinsics.shape)}")
    return unproject_depth(depth, intrinsics, extrinsics)

