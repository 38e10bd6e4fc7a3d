"""VGGT's camera head: iterative refinement of an ``absT_quaR_FoV`` pose encoding from camera tokens.

Reads the camera token (token 0) of the **last** aggregator layer, ``[B, S, 2C]``. Each of 4 iterations
embeds the current raw encoding (a learned ``empty_pose_tokens`` on the first), turns it into adaLN
(shift, scale, gate) for the normalised camera token, runs a 4-block trunk that attends across the S
frames of a sequence, and adds a predicted delta. Output: a list of 4 activated encodings ``[B, S, 9]``:
translation ``[0:3]`` (linear), quaternion XYZW ``[3:7]`` (linear, **not** normalised), FoV ``[7:9]``
(vertical, horizontal; radians; ReLU). The raw (pre-ReLU) encoding is what is fed back, detached.
The encoding describes **camera-from-world** extrinsics in OpenCV axes (x right, y down, z forward), with
frame 0 ≈ identity; translations are in VGGT's normalised scene scale, not metres.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spatial_mllm.models.vggt.config import VGGTConfig
from spatial_mllm.models.vggt.layers import Block, Mlp

__all__ = ["CameraHead", "activate_pose"]

POSE_ENC_DIM = 9  # absT_quaR_FoV: 3 + 4 + 2


def activate_pose(raw: torch.Tensor) -> torch.Tensor:
    """``[..., 9]`` raw encoding → activated: T and quaternion linear, FoV through ReLU."""
    return torch.cat([raw[..., :7], F.relu(raw[..., 7:9])], dim=-1)


class CameraHead(nn.Module):
    """Keys ``camera_head.*``: trunk, token_norm, trunk_norm, empty_pose_tokens, embed_pose,
    poseLN_modulation.1, pose_branch (adaln_norm has no parameters)."""

    def __init__(self, config: VGGTConfig):
        super().__init__()
        dim = config.head_dim_in  # 2048
        self.num_iterations = config.camera_num_iterations
        self.trunk = nn.Sequential(*[
            Block(dim, config.camera_num_heads, config.mlp_ratio, qk_norm=False,
                  init_values=config.init_values, norm_eps=1e-5)
            for _ in range(config.camera_trunk_depth)
        ])
        self.token_norm = nn.LayerNorm(dim, eps=1e-5)
        self.trunk_norm = nn.LayerNorm(dim, eps=1e-5)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENC_DIM))
        self.embed_pose = nn.Linear(POSE_ENC_DIM, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.pose_branch = Mlp(dim, dim // 2, POSE_ENC_DIM)

    def forward(self, layers: list[torch.Tensor | None]) -> list[torch.Tensor]:
        """``layers``: aggregator output list (only ``layers[-1]`` is read) → 4 encodings ``[B, S, 9]``."""
        tokens = layers[-1]
        if tokens is None:
            raise ValueError("the camera head needs the last aggregator layer (keep_layers must include -1)")
        cam = tokens[:, :, 0].to(self.token_norm.weight.dtype)  # [B, S, 2C] camera tokens (bf16 → fp32)
        c = self.token_norm(cam)  # fixed across iterations
        B, S, _ = c.shape
        raw = None
        out = []
        for _ in range(self.num_iterations):
            if raw is None:
                m = self.embed_pose(self.empty_pose_tokens.expand(B, S, -1))  # [B, S, 2C]
            else:
                m = self.embed_pose(raw.detach())
            shift, scale, gate = self.poseLN_modulation(m).chunk(3, dim=-1)  # [B, S, 2C] each
            z = gate * (self.adaln_norm(c) * (1 + scale) + shift) + c
            z = self.trunk(z)  # attention across the S frames of each sequence
            delta = self.pose_branch(self.trunk_norm(z))  # [B, S, 9]
            raw = delta if raw is None else raw + delta
            out.append(activate_pose(raw))
        return out
