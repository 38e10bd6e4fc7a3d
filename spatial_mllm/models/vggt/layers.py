"""Transformer building blocks shared by DINOv2, the aggregator and the camera trunk.

Parameter names (``norm1``, ``attn.qkv``, ``attn.q_norm``, ``ls1.gamma``, ``mlp.fc1`` ...) are those of the
official checkpoint. One ``Block`` class serves all three users; they differ only in LayerNorm eps
(1e-6 in DINOv2, 1e-5 elsewhere), qk-norm (aggregator only), RoPE (aggregator only) and LayerScale init.

2D RoPE (``Rope2D``): each head vector of size d is split into a row half ``[0, d/2)`` rotated by the
token's row (y) position and a column half ``[d/2, d)`` rotated by its column (x) position. Inside a half
of size m, the rotated pairs are ``(j, j + m/2)`` with frequency ``base^(-2j/m)`` (rotate-half layout,
frequencies duplicated, not interleaved). Position 0 is the identity rotation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Rope2D", "RopeTable", "LayerScale", "Mlp", "Attention", "Block", "patch_positions"]


def patch_positions(n: int, h: int, w: int, num_special: int, device=None) -> torch.Tensor:
    """Integer (row, col) positions of one frame's tokens, repeated for ``n`` frames → ``[n, T, 2]``.

    Patches are numbered row-major (y slow, x fast) and shifted by +1; the ``num_special`` leading tokens
    (camera, registers) sit at (0, 0), where RoPE is the identity.
    """
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=-1) + 1  # [P, 2], (row, col) ∈ [1..h]×[1..w]
    special = torch.zeros(num_special, 2, dtype=pos.dtype, device=device)
    pos = torch.cat([special, pos], dim=0)  # [T, 2]
    return pos.unsqueeze(0).expand(n, -1, -1)  # [n, T, 2]


class RopeTable:
    """cos/sin tables of 2D RoPE for given positions, computed once per forward and shared by all blocks.

    ``angles`` are ``pos * inv_freq`` in float32 (as upstream's float32 outer product); tables for a dtype
    are made by casting the angles to that dtype first and then taking cos/sin (upstream's order), and
    memoised per dtype.
    """

    def __init__(self, pos: torch.Tensor, head_dim: int, base: float):
        # pos: [N, L, 2] integer (row, col)
        half = head_dim // 2  # dims per axis
        exps = torch.arange(0, half, 2, device=pos.device, dtype=torch.float32) / half
        inv_freq = 1.0 / (base ** exps)  # [half/2]
        ang = pos.to(torch.float32).unsqueeze(-1) * inv_freq  # [N, L, 2, half/2]
        ang = torch.cat([ang, ang], dim=-1)  # [N, L, 2, half]  duplicated (rotate-half layout)
        self.angles = ang.unsqueeze(1)  # [N, 1, L, 2, half]  broadcast over heads
        self._cache: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def cos_sin(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if dtype not in self._cache:
            a = self.angles.to(dtype)
            self._cache[dtype] = (a.cos(), a.sin())
        return self._cache[dtype]


class Rope2D:
    """Applies 2D RoPE to ``x [N, heads, L, d]`` with a :class:`RopeTable` of matching ``[N, ·, L]``."""

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=-1)
        return torch.cat([-b, a], dim=-1)

    @classmethod
    def apply(cls, x: torch.Tensor, table: RopeTable) -> torch.Tensor:
        cos, sin = table.cos_sin(x.dtype)  # [N, 1, L, 2, d/2]
        xy, xx = x.chunk(2, dim=-1)  # row half, column half: [N, h, L, d/2] each
        out_y = xy * cos[..., 0, :] + cls._rotate_half(xy) * sin[..., 0, :]
        out_x = xx * cos[..., 1, :] + cls._rotate_half(xx) * sin[..., 1, :]
        return torch.cat([out_y, out_x], dim=-1)  # [N, h, L, d]


class LayerScale(nn.Module):
    """``x * gamma`` with a learned per-channel ``gamma`` (key ``ls*.gamma``)."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 → exact (erf) GELU → fc2."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (scale 1/√head_dim, no mask).

    Order: qkv projection → (q_norm, k_norm: LayerNorm over head_dim, affine, shared across heads) →
    RoPE on q and k (never v) → SDPA → concat heads → proj.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RopeTable | None = None) -> torch.Tensor:
        N, L, C = x.shape
        qkv = self.qkv(x).reshape(N, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [N, heads, L, head_dim] each
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = Rope2D.apply(q, rope), Rope2D.apply(k, rope)
        out = F.scaled_dot_product_attention(q, k, v)  # [N, heads, L, head_dim]
        out = out.transpose(1, 2).reshape(N, L, C)  # [N, L, C]
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False,
                 init_values: float = 0.01, norm_eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, norm_eps=1e-5)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor, rope: RopeTable | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x
