"""Patch embeddings of the aggregator: DINOv2 ViT-L/14 with registers (the checkpoint) or a plain conv.

Both map normalised images ``[N, 3, H, W]`` (H, W multiples of 14) to patch tokens ``[N, P, C]``,
``P = (H/14)·(W/14)``, numbered row-major (y slow, x fast).

DINOv2 (keys ``aggregator.patch_embed.*``): conv 14×14 → prepend ``cls_token`` → add the absolute
``pos_embed`` (bicubic, antialiased resize of the stored 37×37 grid to h×w unless the input is exactly the
stored square) → insert ``register_tokens`` after cls (no pos-embed) → 24 pre-norm blocks (LN eps 1e-6,
LayerScale, GELU MLP, no qk-norm, no RoPE) → final ``norm`` → patch tokens ``x_norm[:, 1 + R:]``.
``mask_token`` exists for key compatibility only (masks are never used at inference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from spatial_mllm.models.vggt.layers import Block

__all__ = ["ConvPatchEmbed", "DinoV2PatchEmbed"]


class ConvPatchEmbed(nn.Module):
    """Conv2d(3→C, k=s=patch) with no norm; keys ``proj.{weight,bias}``."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, C, h, w] → [N, P, C]


class DinoV2PatchEmbed(nn.Module):
    """DINOv2 ViT with register tokens, used as the aggregator's patch embed (returns normed patch tokens)."""

    def __init__(self, img_size: int = 518, patch_size: int = 14, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: float = 4.0, num_register_tokens: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.grid = img_size // patch_size  # 37 for the checkpoint
        self.patch_embed = ConvPatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, embed_dim))  # [1, 1370, C]
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)  # unused
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qk_norm=False, init_values=1.0, norm_eps=1e-6)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.gradient_checkpointing = False
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def interpolate_pos_embed(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """Positional embedding for an h×w patch grid (+ cls first) → ``[1, 1 + h·w, C]``.

        The stored grid is used as is only when h == w == stored side; otherwise it is resized in fp32
        with bicubic, antialias=True, size-based interpolation (Keys a = -0.5 under antialias, even when
        upsampling) and cast to ``dtype``.
        """
        if h * w == self.grid**2 and h == w:
            return self.pos_embed
        pe = self.pos_embed.float()
        cls_pe, patch_pe = pe[:, :1], pe[:, 1:]  # [1, 1, C], [1, M², C]
        C = pe.shape[-1]
        grid = patch_pe.reshape(1, self.grid, self.grid, C).permute(0, 3, 1, 2)  # [1, C, M, M]
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        patch_pe = grid.permute(0, 2, 3, 1).reshape(1, h * w, C)  # [1, h·w, C] row-major
        return torch.cat([cls_pe, patch_pe], dim=1).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, _, H, W = x.shape
        h, w = H // self.patch_size, W // self.patch_size
        t = self.patch_embed(x)  # [N, P, C]
        # torch.cat type-promotes: under autocast the bf16 conv output joins the fp32 cls token as fp32.
        t = torch.cat([self.cls_token.expand(N, -1, -1), t], dim=1)  # [N, 1+P, C]
        t = t + self.interpolate_pos_embed(h, w, t.dtype)
        t = torch.cat([t[:, :1], self.register_tokens.expand(N, -1, -1), t[:, 1:]], dim=1)
        for blk in self.blocks:  # t: [N, 1+R+P, C]
            if self.gradient_checkpointing and torch.is_grad_enabled():
                t = checkpoint(blk, t, use_reentrant=False)
            else:
                t = blk(t)
        t = self.norm(t)
        return t[:, 1 + self.num_register_tokens:]  # [N, P, C]
