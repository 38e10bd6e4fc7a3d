"""VGGT's DPT head (``depth_head`` and ``point_head``): four aggregator layers → dense per-pixel maps.

Per frame: patch tokens of layers ``[4, 11, 17, 23]`` → one shared LayerNorm → 1×1 projections to
256/512/1024/1024 channels (+ sin/cos positional embedding) → resize to 4×, 2×, 1×, ½× the patch grid →
3×3 convs to 256 → RefineNet fusion (coarse to fine) → 3×3 conv to 128 → bilinear (align_corners) resize to
exactly H×W (+ positional embedding again) → 3×3 conv, ReLU, 1×1 conv to ``output_dim`` → activation.

Outputs (channels-last): value ``[B, S, H, W, output_dim - 1]`` and confidence ``[B, S, H, W]``.
Depth head: ``exp`` → z-depth along the camera's optical axis (OpenCV, frame of each view), in VGGT's
normalised scene scale (not metres). Point head: ``inv_log`` = sign(y)·expm1(|y|) → 3D points in the world
frame = the camera frame of frame 0 (same normalised scale). Confidence ``expp1`` = 1 + exp(c) > 1.

Quirks kept on purpose (they are in the checkpoint's numerics): the residual conv unit adds ``relu(x)``
(not ``x``) because upstream's shared in-place ReLU overwrites its input; fusion blocks upsample before
their 1×1 ``out_conv``; ``refinenet4`` has no first residual unit; the positional embedding is computed in
float64 and uses the **image** aspect ratio.

Difference from the reference: none numerically. Frames are processed in chunks of
``frames_chunk_size`` (default 8, as upstream); tokens arrive in any dtype and are cast to the head's
parameter dtype (the reference receives fp32 tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spatial_mllm.models.vggt.config import VGGTConfig

__all__ = ["DPTHead", "dpt_pos_embed", "activate_head", "ResidualConvUnit", "FeatureFusionBlock"]

HEAD_HIDDEN = 32  # channels of output_conv2's hidden conv (fixed in VGGT)
POS_EMBED_RATIO = 0.1
POS_EMBED_OMEGA0 = 100.0


def dpt_pos_embed(channels: int, h: int, w: int, image_hw: tuple[int, int], device=None,
                  dtype=torch.float32) -> torch.Tensor:
    """Sin/cos positional embedding ``[channels, h, w]`` of an h×w map covering an image of size ``image_hw``.

    Coordinates: u (column) spans ±a/√(a²+1)·(w-1)/w and v (row) spans ±1/√(a²+1)·(h-1)/h with
    a = W/H of the **image**; channels ``[sin u·ω, cos u·ω, sin v·ω, cos v·ω]`` with ``channels/4``
    frequencies ω_k = 100^(-k/(channels/4)), products and sin/cos in float64, cast to ``dtype``.
    Not yet scaled by the 0.1 ratio.
    """
    H, W = image_hw
    a = W / H
    d = (a**2 + 1.0) ** 0.5
    span_x, span_y = a / d, 1.0 / d
    u = torch.linspace(-span_x * (w - 1) / w, span_x * (w - 1) / w, w, dtype=dtype, device=device)  # [w]
    v = torch.linspace(-span_y * (h - 1) / h, span_y * (h - 1) / h, h, dtype=dtype, device=device)  # [h]
    q = channels // 4
    omega = torch.arange(q, dtype=torch.float64, device=device) / q
    omega = 1.0 / POS_EMBED_OMEGA0**omega  # [q]
    au = u.double()[:, None] * omega  # [w, q]
    av = v.double()[:, None] * omega  # [h, q]
    emb_u = torch.cat([au.sin(), au.cos()], dim=-1).float()[None, :, :].expand(h, w, 2 * q)  # [h, w, 2q]
    emb_v = torch.cat([av.sin(), av.cos()], dim=-1).float()[:, None, :].expand(h, w, 2 * q)  # [h, w, 2q]
    return torch.cat([emb_u, emb_v], dim=-1).permute(2, 0, 1).to(dtype)  # [channels, h, w]


def _add_pos_embed(x: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    pe = dpt_pos_embed(x.shape[1], x.shape[2], x.shape[3], image_hw, device=x.device, dtype=x.dtype)
    return x + POS_EMBED_RATIO * pe  # [N, C, h, w]


def activate_head(out: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, C, H, W]`` → (value ``[N, H, W, C-1]``, confidence ``[N, H, W]``), conf = 1 + exp(c)."""
    fmap = out.permute(0, 2, 3, 1)  # [N, H, W, C]
    value, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        value = torch.exp(value)
    elif activation == "inv_log":
        value = torch.sign(value) * torch.expm1(value.abs())
    else:
        raise ValueError(f"unsupported DPT activation {activation!r} (VGGT uses 'exp' and 'inv_log')")
    return value, 1 + conf.exp()


class ResidualConvUnit(nn.Module):
    """``relu(x) + conv2(relu(conv1(relu(x))))`` — the skip adds relu(x), as upstream's in-place ReLU does."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """``o = a (+ RCU1(b))`` → RCU2 → bilinear (align_corners) resize to ``size`` (default 2×) → 1×1 out_conv."""

    def __init__(self, features: int, has_residual: bool = True):
        super().__init__()
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)
        self.has_residual = has_residual

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        o = a
        if self.has_residual:
            o = o + self.resConfUnit1(b)
        o = self.resConfUnit2(o)
        if size is None:
            size = (2 * o.shape[-2], 2 * o.shape[-1])
        o = F.interpolate(o, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(o)


class DPTHead(nn.Module):
    """Dense prediction head over aggregator layers (keys ``depth_head.*`` / ``point_head.*``)."""

    def __init__(self, config: VGGTConfig, output_dim: int, activation: str):
        super().__init__()
        dim_in = config.head_dim_in
        feats, oc = config.dpt_features, config.dpt_out_channels
        self.patch_size = config.patch_size
        self.patch_start_idx = config.patch_start_idx
        self.intermediate_layer_idx = list(config.dpt_intermediate_layer_idx)
        self.activation = activation
        self.norm = nn.LayerNorm(dim_in, eps=1e-5)  # one norm shared by the four layers
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),  # ×4
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),  # ×2
            nn.Identity(),  # ×1
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),  # ×½ (ceil)
        ])
        self.scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, feats, 3, padding=1, bias=False))
        self.scratch.refinenet1 = FeatureFusionBlock(feats)
        self.scratch.refinenet2 = FeatureFusionBlock(feats)
        self.scratch.refinenet3 = FeatureFusionBlock(feats)
        self.scratch.refinenet4 = FeatureFusionBlock(feats, has_residual=False)
        self.scratch.output_conv1 = nn.Conv2d(feats, feats // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(feats // 2, HEAD_HIDDEN, 3, padding=1), nn.ReLU(), nn.Conv2d(HEAD_HIDDEN, output_dim, 1)
        )

    def _forward_frames(self, layers: list[torch.Tensor | None], s0: int, s1: int,
                        H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = H // self.patch_size, W // self.patch_size
        dtype = self.norm.weight.dtype
        maps = []
        for k, li in enumerate(self.intermediate_layer_idx):
            x = layers[li]
            if x is None:
                raise ValueError(f"DPT head needs aggregator layer {li}; it was not kept")
            x = x[:, s0:s1, self.patch_start_idx:].to(dtype)  # [B, s, P, 2C]
            B, s = x.shape[:2]
            x = self.norm(x.reshape(B * s, h * w, x.shape[-1]))  # [B·s, P, 2C]
            x = x.transpose(1, 2).reshape(B * s, -1, h, w)  # [B·s, 2C, h, w]
            x = _add_pos_embed(self.projects[k](x), (H, W))  # [B·s, oc_k, h, w]
            maps.append(self.resize_layers[k](x))  # 4h, 2h, h, ceil(h/2)
        sc = self.scratch
        r1, r2, r3, r4 = (getattr(sc, f"layer{i}_rn")(m) for i, m in enumerate(maps, start=1))  # 256 ch each
        del maps
        o = sc.refinenet4(r4, size=r3.shape[-2:])
        o = sc.refinenet3(o, r3, size=r2.shape[-2:])
        o = sc.refinenet2(o, r2, size=r1.shape[-2:])
        o = sc.refinenet1(o, r1)  # [B·s, 256, 8h, 8w]
        o = sc.output_conv1(o)  # [B·s, 128, 8h, 8w]
        o = F.interpolate(o, size=(h * self.patch_size, w * self.patch_size), mode="bilinear",
                          align_corners=True)  # [B·s, 128, H, W]
        o = sc.output_conv2(_add_pos_embed(o, (H, W)))  # [B·s, output_dim, H, W]
        value, conf = activate_head(o, self.activation)  # [B·s, H, W, D], [B·s, H, W]
        return value.reshape(B, s, *value.shape[1:]), conf.reshape(B, s, *conf.shape[1:])

    def forward(self, layers: list[torch.Tensor | None], image_hw: tuple[int, int],
                frames_chunk_size: int | None = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Aggregator layers (``[B, S, T, 2C]`` each) → value ``[B, S, H, W, D]``, conf ``[B, S, H, W]``.

        ``frames_chunk_size``: process this many frames at a time (``None`` or ≥ S: all at once); every
        operation is per frame, so chunking only bounds the memory of the high-resolution maps.
        """
        H, W = image_hw
        S = layers[self.intermediate_layer_idx[0]].shape[1]
        if frames_chunk_size is None or frames_chunk_size >= S:
            return self._forward_frames(layers, 0, S, H, W)
        values, confs = [], []
        for s0 in range(0, S, frames_chunk_size):
            v, c = self._forward_frames(layers, s0, min(s0 + frames_chunk_size, S), H, W)
            values.append(v)
            confs.append(c)
        return torch.cat(values, dim=1), torch.cat(confs, dim=1)
