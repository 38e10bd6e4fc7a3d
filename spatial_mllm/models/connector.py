"""Connectors: VGGT patch tokens → one vector per Qwen visual token, in the LLM's width (added to Qwen's).

Qwen2.5-VL turns every 2 frames × 2×2 patches (14 px) of a video into one LLM token. VGGT (patch 14 too)
gives per frame ``P = h·w`` patch tokens of width ``D = 2·embed_dim`` (2048). The connector gathers the
same 2 × 2 × 2 neighbourhood of VGGT tokens into one ``8·D`` = 16384-d vector per Qwen token, then maps it
with an MLP to the LLM width; the model adds the result to the Qwen video embeddings.

Types (``connector_config["type"]``):

* ``"mlp_add"`` — official v1.1 (``Diankun/Spatial-MLLM-v1.1-Instruct-*``): ``ln_q`` = RMSNorm(8D, eps
  1e-6) → ``mlp`` = Linear(8D, 8D) → GELU → Linear(8D, hidden). Merged vector flatten order
  ``(h_s, w_s, D, t)`` (t fastest).
* ``"mlp2_add"`` — official v1.0 (``Diankun/Spatial-MLLM-subset-sft``): the same first block, then
  ``ln_out`` = RMSNorm(hidden, eps 1e-6) → ``mlp_out`` = Linear(hidden, hidden) → GELU → Linear(hidden,
  hidden). Flatten order ``(t, h_s, w_s, D)`` (D fastest).
* ``"none"`` — the 2D-only ablation: no connector, no spatial encoder; the model is plain Qwen2.5-VL.

Token order of the output matches Qwen's merged tokens: ``(t', h', w')`` row-major with ``t' = S/2``,
``h' = h/2``, ``w' = w/2``.

Differences from the official code: none numerically (GELU is the exact erf GELU, RMSNorm is Qwen's with
fp32 variance). The v1.0 second block is named ``ln_out``/``mlp_out`` here (``vgg_to_language_*``
officially; the checkpoint key mapping renames them).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CONNECTOR_TYPES", "RMSNorm", "SpatialConnector", "merge_spatial_tokens", "build_connector"]

CONNECTOR_TYPES = ("mlp_add", "mlp2_add", "none")
FLATTEN_ORDERS = {"mlp_add": "hwdt", "mlp2_add": "thwd"}


class RMSNorm(nn.Module):
    """Qwen2 RMSNorm: ``weight · x / sqrt(mean(x²) + eps)`` with the statistics in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def merge_spatial_tokens(
    patch_tokens: torch.Tensor, grid_hw: tuple[int, int], *, temporal_merge: int = 2, spatial_merge: int = 2,
    order: str = "hwdt",
) -> torch.Tensor:
    """Gather VGGT patch tokens of one video into one vector per Qwen visual token.

    Args:
        patch_tokens: ``[S, P, D]`` patch tokens (special tokens already removed) of ``S`` frames, ``P = h·w``
            row-major, ``D`` = 2·embed_dim.
        grid_hw: ``(h, w)`` patches per frame (multiples of ``spatial_merge``).
        temporal_merge: frames merged into one Qwen token (Qwen's temporal_patch_size, 2); S must be a
            multiple of it.
        spatial_merge: patches merged per side (Qwen's spatial_merge_size, 2).
        order: flatten order of the merged vector: ``"hwdt"`` (v1.1: h_s, w_s, D, t) or ``"thwd"`` (v1.0).

    Returns:
        ``[S/2 · h/2 · w/2, 8·D]`` in Qwen's token order (t', h', w').
    """
    S, P, D = patch_tokens.shape
    h, w = grid_hw
    tm, sm = temporal_merge, spatial_merge
    if P != h * w:
        raise ValueError(f"{P} patch tokens per frame but the grid is {h}x{w}")
    if S % tm or h % sm or w % sm:
        raise ValueError(f"frames {S} must be a multiple of {tm} and the {h}x{w} grid of {sm}")
    x = patch_tokens.reshape(S // tm, tm, h // sm, sm, w // sm, sm, D)  # [t', t, h', h_s, w', w_s, D]
    if order == "hwdt":
        x = x.permute(0, 2, 4, 3, 5, 6, 1)  # [t', h', w', h_s, w_s, D, t]
    elif order == "thwd":
        x = x.permute(0, 2, 4, 1, 3, 5, 6)  # [t', h', w', t, h_s, w_s, D]
    else:
        raise ValueError(f"order must be 'hwdt' or 'thwd', got {order!r}")
    return x.reshape((S // tm) * (h // sm) * (w // sm), tm * sm * sm * D)


class SpatialConnector(nn.Module):
    """MLP connector (``mlp_add`` or ``mlp2_add``) from merged VGGT tokens to the LLM width.

    Attribute names = checkpoint key names (``connector.ln_q``, ``connector.mlp.{0,2}``, and for v1.0
    ``connector.ln_out``, ``connector.mlp_out.{0,2}``).
    """

    def __init__(self, kind: str, spatial_dim: int, hidden_size: int, *, temporal_merge: int = 2,
                 spatial_merge: int = 2):
        super().__init__()
        if kind not in ("mlp_add", "mlp2_add"):
            raise ValueError(f"SpatialConnector type must be 'mlp_add' or 'mlp2_add', got {kind!r}")
        self.kind = kind
        self.order = FLATTEN_ORDERS[kind]
        self.temporal_merge, self.spatial_merge = temporal_merge, spatial_merge
        self.merged_dim = spatial_dim * temporal_merge * spatial_merge**2  # 2048·8 = 16384
        self.ln_q = RMSNorm(self.merged_dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(self.merged_dim, self.merged_dim), nn.GELU(),
                                 nn.Linear(self.merged_dim, hidden_size))
        if kind == "mlp2_add":
            self.ln_out = RMSNorm(hidden_size, eps=1e-6)
            self.mlp_out = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(),
                                         nn.Linear(hidden_size, hidden_size))

    def merge(self, patch_tokens: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """``[S, P, D]`` → ``[N_tokens, 8D]`` in this connector's flatten order."""
        return merge_spatial_tokens(patch_tokens, grid_hw, temporal_merge=self.temporal_merge,
                                    spatial_merge=self.spatial_merge, order=self.order)

    def forward(self, merged: torch.Tensor) -> torch.Tensor:
        """``[N, 8D]`` merged spatial tokens → ``[N, hidden]`` (to be added to Qwen's visual embeddings)."""
        x = self.mlp(self.ln_q(merged))
        if self.kind == "mlp2_add":
            x = self.mlp_out(self.ln_out(x))
        return x


def build_connector(kind: str, spatial_dim: int, hidden_size: int, **kwargs) -> SpatialConnector | None:
    """The connector for ``kind`` (``None`` for ``"none"``)."""
    if kind not in CONNECTOR_TYPES:
        raise ValueError(f"connector type must be one of {CONNECTOR_TYPES}, got {kind!r}")
    return None if kind == "none" else SpatialConnector(kind, spatial_dim, hidden_size, **kwargs)
