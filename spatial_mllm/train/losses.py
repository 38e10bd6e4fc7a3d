"""VGGT's training losses and target normalisation (Wang et al., CVPR 2025, §3.4; official ``training/loss.py``
and ``train_utils/normalization.py`` of facebookresearch/vggt), for geometry pretraining of a tiny VGGT.

Conventions: extrinsics are camera-from-world ``[R | t]`` in OpenCV axes (x right, y down, z forward);
``depth`` is z-depth; after :func:`normalize_sequence` the world frame is frame 0's camera and lengths are in
VGGT's normalised scale (the mean distance of the valid points to frame 0's camera centre is 1).

What the official code does, and what we follow:

* **Normalisation** (``normalize_camera_extrinsics_and_points_batch``): extrinsics become
  ``E_i · E_0⁻¹`` (frame 0 is the identity), world points are mapped into frame 0's camera
  (``R_0 X + t_0``), and translations, depths and points are divided by the mean Euclidean distance of the
  valid points of *all* S frames (in frame 0's camera) to the origin. Followed exactly.
* **Camera loss**: per-iteration loss on the 9-d ``absT_quaR_FoV`` encoding, weighted
  ``gamma^(n-1-k)`` (gamma 0.6) over the camera head's n refinement iterations and averaged; translation,
  rotation and FoV terms weighted 1 / 1 / 0.5; translation error clamped at 100. The paper says Huber; the
  official code uses L1 ("more stable"); we default to L1 and offer ``"huber"`` (smooth L1, beta 1).
* **Depth / point loss** (``regression_loss``): ``gamma·‖pred−gt‖·conf − alpha·log(conf)`` (gamma 1, alpha
  0.2) averaged over valid pixels, plus the plain ``‖pred−gt‖`` term, plus the confidence-weighted gradient
  term (``gradient_loss``: L1 of the horizontal/vertical finite differences of ``pred − gt``, weighted by
  conf with the same −alpha·log(conf), over 3 scales (strides 1, 2, 4) — the official wrapper's
  default is 4 scales for "grad" and 3 for "normal"; we use ``scales`` = 3 by default because the tiny
  images are small).

Simplifications (listed again in :mod:`spatial_mllm.train.pretrain`):

1. No quantile outlier filtering (official ``valid_range`` 0.98): rendered ground truth is exact.
2. The point loss uses the same "grad" gradient term as depth (the official code also offers a
   surface-normal term, ``gradient_loss_fn="normal"``); no ``check_and_fix_inf_nan`` (inputs are finite).
3. No track loss (our VGGT has no track head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "normalize_sequence",
    "camera_loss",
    "gradient_loss",
    "multi_scale_gradient_loss",
    "regression_loss",
]


def _to_homogeneous(E: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 4]`` → ``[..., 4, 4]``."""
    bottom = torch.zeros(*E.shape[:-2], 1, 4, dtype=E.dtype, device=E.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([E, bottom], dim=-2)


def normalize_sequence(
    extrinsics: torch.Tensor, depth: torch.Tensor, world_points: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """VGGT's target normalisation of a batch of sequences (frame 0 = reference).

    Args:
        extrinsics: ``[B, S, 3, 4]`` camera-from-world (any world frame, metres).
        depth: ``[B, S, H, W]`` z-depth in metres.
        world_points: ``[B, S, H, W, 3]`` points in the same world frame (metres).
        mask: ``[B, S, H, W]`` bool, valid pixels (depth > 0).

    Returns ``extrinsics [B,S,3,4]`` (camera-from-frame-0-camera, translations scaled), ``depth [B,S,H,W]``,
    ``world_points [B,S,H,W,3]`` (in frame 0's camera) — all divided by ``scale [B]``, the mean distance of
    the valid points (all frames) to frame 0's camera centre, in metres.
    """
    E = _to_homogeneous(extrinsics)  # [B, S, 4, 4]
    E0_inv = torch.linalg.inv(E[:, 0])  # [B, 4, 4] frame-0 camera → world
    E_rel = E @ E0_inv[:, None]  # [B, S, 4, 4] camera-i-from-camera-0
    R0, t0 = extrinsics[:, 0, :3, :3], extrinsics[:, 0, :3, 3]  # [B, 3, 3], [B, 3]
    pts = torch.einsum("bij,bshwj->bshwi", R0, world_points) + t0[:, None, None, None]  # [B, S, H, W, 3]
    m = mask.to(pts.dtype)
    dist_sum = (pts.norm(dim=-1) * m).sum(dim=(1, 2, 3))  # [B]
    scale = (dist_sum / m.sum(dim=(1, 2, 3)).clamp(min=1.0)).clamp(min=1e-6, max=1e6)  # [B] metres
    E_rel = E_rel[:, :, :3].clone()
    E_rel[..., 3] = E_rel[..., 3] / scale[:, None, None]
    return {
        "extrinsics": E_rel,
        "depth": depth / scale[:, None, None, None],
        "world_points": pts / scale[:, None, None, None, None],
        "scale": scale,
    }


def camera_loss(
    pose_enc_list: list[torch.Tensor],
    gt_pose_enc: torch.Tensor,
    gamma: float = 0.6,
    weight_trans: float = 1.0,
    weight_rot: float = 1.0,
    weight_focal: float = 0.5,
    loss_type: str = "l1",
) -> dict[str, torch.Tensor]:
    """VGGT's camera loss on ``absT_quaR_FoV`` encodings.

    ``pose_enc_list``: the camera head's iterations, each ``[B, S, 9]``; ``gt_pose_enc [B, S, 9]`` from
    :func:`~spatial_mllm.models.vggt.pose_enc.extri_intri_to_pose_encoding` of normalised extrinsics.
    Iteration k of n gets weight ``gamma^(n-1-k)``; the weighted sum is divided by n. Returns
    ``loss_camera`` (= T·weight_trans + R·weight_rot + FL·weight_focal) and the parts ``loss_T/R/FL``.
    """
    if loss_type not in ("l1", "huber"):
        raise ValueError(f"loss_type must be 'l1' or 'huber', got {loss_type!r}")

    def err(a, b):
        return (a - b).abs() if loss_type == "l1" else F.smooth_l1_loss(a, b, reduction="none", beta=1.0)

    n = len(pose_enc_list)
    tot_T = tot_R = tot_FL = 0.0
    for k, pred in enumerate(pose_enc_list):
        w = gamma ** (n - k - 1)
        tot_T = tot_T + w * err(pred[..., :3], gt_pose_enc[..., :3]).clamp(max=100).mean()
        tot_R = tot_R + w * err(pred[..., 3:7], gt_pose_enc[..., 3:7]).mean()
        tot_FL = tot_FL + w * err(pred[..., 7:], gt_pose_enc[..., 7:]).mean()
    T, R, FL = tot_T / n, tot_R / n, tot_FL / n
    return {"loss_camera": T * weight_trans + R * weight_rot + FL * weight_focal,
            "loss_T": T, "loss_R": R, "loss_FL": FL}


def gradient_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, conf: torch.Tensor | None = None,
                  gamma: float = 1.0, alpha: float = 0.2) -> torch.Tensor:
    """VGGT's gradient term: L1 of the finite differences of ``d = (pred − gt)·mask`` along x and y.

    ``pred, gt [N, H, W, C]``, ``mask [N, H, W]`` bool, ``conf [N, H, W]`` (> 0) or None. With conf, each
    difference ``g`` becomes ``gamma·g·conf − alpha·log(conf)`` (conf of the right / lower pixel, as the
    official code slices it). The sum is divided by the number of valid pixel-channels. Differences are
    clamped at 100.
    """
    C = pred.shape[-1]
    m = mask[..., None].expand(-1, -1, -1, C).to(pred.dtype)  # [N, H, W, C]
    diff = (pred - gt) * m
    gx = (diff[:, :, 1:] - diff[:, :, :-1]).abs() * (m[:, :, 1:] * m[:, :, :-1])  # [N, H, W-1, C]
    gy = (diff[:, 1:] - diff[:, :-1]).abs() * (m[:, 1:] * m[:, :-1])  # [N, H-1, W, C]
    gx, gy = gx.clamp(max=100), gy.clamp(max=100)
    if conf is not None:
        c = conf[..., None].expand(-1, -1, -1, C)
        cx, cy = c[:, :, 1:], c[:, 1:]
        gx = gamma * gx * cx - alpha * torch.log(cx)
        gy = gamma * gy * cy - alpha * torch.log(cy)
    denom = m.sum()
    if denom == 0:
        return (pred * 0).sum()
    return (gx.sum() + gy.sum()) / denom


def multi_scale_gradient_loss(pred, gt, mask, conf=None, scales: int = 3, gamma: float = 1.0,
                              alpha: float = 0.2) -> torch.Tensor:
    """Mean of :func:`gradient_loss` on the inputs subsampled by strides ``1, 2, ..., 2^(scales-1)``."""
    total = 0.0
    for s in range(scales):
        st = 2 ** s
        total = total + gradient_loss(pred[:, ::st, ::st], gt[:, ::st, ::st], mask[:, ::st, ::st],
                                      None if conf is None else conf[:, ::st, ::st], gamma, alpha)
    return total / scales


def regression_loss(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, conf: torch.Tensor,
    gamma: float = 1.0, alpha: float = 0.2, gradient: bool = True, scales: int = 3,
) -> dict[str, torch.Tensor]:
    """VGGT's confidence-weighted regression loss for depth (C = 1) or points (C = 3).

    ``pred, gt [B, S, H, W, C]``, ``mask [B, S, H, W]`` bool, ``conf [B, S, H, W]`` (> 1 from the heads).
    Returns ``loss_conf = mean(gamma·‖pred−gt‖·conf − alpha·log conf)``, ``loss_reg = mean ‖pred−gt‖`` (both
    over valid pixels) and ``loss_grad`` (:func:`multi_scale_gradient_loss` with conf; 0 if ``gradient``
    is False). The official total for a head is ``loss_conf + loss_reg + loss_grad``.
    """
    B, S, H, W, C = pred.shape
    if not mask.any():
        zero = (pred * 0).sum()
        return {"loss_conf": zero, "loss_reg": zero, "loss_grad": zero}
    reg = torch.norm(gt[mask] - pred[mask], dim=-1)  # [M]
    loss_conf = (gamma * reg * conf[mask] - alpha * torch.log(conf[mask])).mean()
    loss_grad = (multi_scale_gradient_loss(pred.reshape(B * S, H, W, C), gt.reshape(B * S, H, W, C),
                                           mask.reshape(B * S, H, W), conf.reshape(B * S, H, W), scales,
                                           gamma, alpha)
                 if gradient else (pred * 0).sum())
    return {"loss_conf": loss_conf, "loss_reg": reg.mean(), "loss_grad": loss_grad}
