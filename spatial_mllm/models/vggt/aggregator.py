"""VGGT's Aggregator: DINOv2 patch tokens + per-frame special tokens → alternating frame/global attention.

Input ``images``: ``[B, S, 3, H, W]`` (or ``[S, 3, H, W]``), RGB in [0, 1], H and W multiples of 14;
ImageNet mean/std normalisation happens inside. Per frame the token sequence is
``[camera (1), registers (R=4), patches (P = H/14 · W/14)]``, ``T = 5 + P``; frame 0 of every sequence
gets slot 0 of ``camera_token`` / ``register_token``, frames 1..S-1 get slot 1 (this is how VGGT knows the
reference frame: frame 0 defines the world coordinate frame).

For each of ``depth`` (24) layers: a frame block attends within each frame (``[B·S, T, C]``), then a global
block attends across all frames of a sequence (``[B, S·T, C]``). Both use 2D RoPE on (row, col) patch
positions (+1; special tokens at 0) and qk-norm. Layer ``i``'s output is
``concat(frame_out_i, global_out_i)`` along channels → ``[B, S, T, 2C]`` (channels ``[0, C)`` frame,
``[C, 2C)`` global) and ``patch_start_idx = 5``.

Differences from the reference (numerically neutral unless stated):

1. ``keep_layers`` returns only the requested layers (others are ``None`` in the list, so indices keep
   their meaning); the reference always materialises all 24.
2. ``output_dtype="auto"`` stores the returned layers in the autocast dtype when autocast is on (bf16 on
   GPU). The reference's outputs are fp32 by type promotion (~1 GB per layer at 128 frames of 518×392).
   The residual stream itself is computed exactly as in the reference (fp32 under autocast); only the
   stored copies are rounded. Pass ``output_dtype=torch.float32`` for the reference's outputs.
3. Gradient checkpointing is off unless ``gradient_checkpointing`` is set (the reference checkpoints
   every block whenever the module is in train mode).
4. RoPE cos/sin tables are built once per forward from the positions of one frame and broadcast over
   frames, instead of a cached per-position table lookup per block; the values are identical.
5. ``aa_order`` must name "frame" and "global" once each (upstream accepts other lists but then fails
   when pairing outputs).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from spatial_mllm.models.vggt.config import VGGTConfig
from spatial_mllm.models.vggt.layers import Block, RopeTable, patch_positions
from spatial_mllm.models.vggt.patch_embed import ConvPatchEmbed, DinoV2PatchEmbed

__all__ = ["Aggregator", "IMAGENET_MEAN", "IMAGENET_STD", "expand_frame_slots", "normalize_layer_indices"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def expand_frame_slots(param: torch.Tensor, B: int, S: int) -> torch.Tensor:
    """``[1, 2, X, C]`` learned slots → ``[B·S, X, C]``: frame 0 of each sequence gets slot 0, others slot 1."""
    first = param[:, 0:1].expand(B, 1, *param.shape[2:])  # [B, 1, X, C]
    rest = param[:, 1:2].expand(B, S - 1, *param.shape[2:])  # [B, S-1, X, C]
    return torch.cat([first, rest], dim=1).reshape(B * S, *param.shape[2:])  # [B·S, X, C]


def normalize_layer_indices(layers: Iterable[int] | None, depth: int) -> list[int]:
    """Python-style layer indices (negatives allowed) → sorted unique indices in ``[0, depth)``."""
    if layers is None:
        return list(range(depth))
    out = set()
    for i in layers:
        if not -depth <= int(i) < depth:
            raise IndexError(f"layer index {i} out of range for an aggregator of depth {depth}")
        out.add(int(i) % depth)
    return sorted(out)


class Aggregator(nn.Module):
    """Alternating-attention aggregator (keys ``aggregator.*`` of the official checkpoint)."""

    def __init__(self, config: VGGTConfig):
        super().__init__()
        if sorted(config.aa_order) != ["frame", "global"]:
            raise ValueError(f"aa_order must contain 'frame' and 'global' once each, got {config.aa_order}")
        self.config = config
        C = config.embed_dim
        if config.patch_embed == "conv":
            self.patch_embed = ConvPatchEmbed(config.patch_size, C)
        else:
            self.patch_embed = DinoV2PatchEmbed(
                img_size=config.img_size, patch_size=config.patch_size, embed_dim=C, depth=config.dino_depth,
                num_heads=config.dino_num_heads, mlp_ratio=config.mlp_ratio,
                num_register_tokens=config.num_register_tokens,
            )

        def make_block() -> Block:
            return Block(C, config.num_heads, config.mlp_ratio, qk_norm=config.qk_norm,
                         init_values=config.init_values, norm_eps=1e-5)

        self.frame_blocks = nn.ModuleList(make_block() for _ in range(config.depth))
        self.global_blocks = nn.ModuleList(make_block() for _ in range(config.depth))
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, C) * 1e-6)  # [1, 2 slots, 1, C]
        self.register_token = nn.Parameter(torch.randn(1, 2, config.num_register_tokens, C) * 1e-6)
        self.patch_start_idx = config.patch_start_idx  # 5
        self.gradient_checkpointing = False

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute every frame/global/DINO block in backward (saves activation memory when training)."""
        self.gradient_checkpointing = enabled
        if isinstance(self.patch_embed, DinoV2PatchEmbed):
            self.patch_embed.gradient_checkpointing = enabled

    def _run(self, block: Block, x: torch.Tensor, rope: RopeTable | None) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, rope, use_reentrant=False)
        return block(x, rope)

    def forward(
        self,
        images: torch.Tensor,
        keep_layers: Iterable[int] | None = None,
        output_dtype: torch.dtype | str | None = "auto",
    ) -> tuple[list[torch.Tensor | None], int]:
        """Aggregate a batch of frame sequences.

        Args:
            images: ``[B, S, 3, H, W]`` or ``[S, 3, H, W]``, RGB in [0, 1]; H, W multiples of patch_size.
            keep_layers: layer indices to return (negatives allowed, e.g. ``[-1]`` for the last layer only,
                ``[4, 11, 17, 23]`` for the DPT heads); ``None`` returns all ``depth`` layers.
            output_dtype: dtype of the returned layers. ``"auto"``: the autocast dtype when autocast is
                enabled on the images' device, else the residual stream's dtype; ``None``: the stream's
                dtype (the reference: fp32 even under autocast); or an explicit ``torch.dtype``.

        Returns:
            ``(layers, patch_start_idx)``: ``layers`` is a list of ``depth`` entries; entry ``i`` is
            ``[B, S, T, 2C]`` (frame ⊕ global tokens of layer ``i``, T = 5 + P, all tokens kept) if ``i`` was
            asked for, else ``None``. ``patch_start_idx`` = 5: ``layers[i][:, :, 5:]`` are the patch
            tokens (row-major h×w grid), ``[..., 0, :]`` the camera token.
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)  # [1, S, 3, H, W]
        B, S, C_in, H, W = images.shape
        if C_in != 3:
            raise ValueError(f"expected RGB images [B, S, 3, H, W], got {tuple(images.shape)}")
        p = self.config.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} must be a multiple of the patch size {p}")
        keep = set(normalize_layer_indices(keep_layers, self.config.depth))
        if output_dtype == "auto":
            dev = images.device.type
            output_dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None

        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 1, 3, 1, 1)
        x = ((images - mean) / std).reshape(B * S, 3, H, W)  # [B·S, 3, H, W]
        patches = self.patch_embed(x)  # [B·S, P, C]
        cam = expand_frame_slots(self.camera_token, B, S)  # [B·S, 1, C]
        reg = expand_frame_slots(self.register_token, B, S)  # [B·S, R, C]
        tokens = torch.cat([cam, reg, patches], dim=1)  # [B·S, T, C]
        T, C = tokens.shape[1], tokens.shape[2]

        rope_frame = rope_global = None
        if self.config.rope_freq > 0:
            pos = patch_positions(1, H // p, W // p, self.patch_start_idx, device=images.device)  # [1, T, 2]
            head_dim = C // self.config.num_heads
            rope_frame = RopeTable(pos, head_dim, self.config.rope_freq)  # broadcast over B·S frames
            # same (row, col) positions for every frame: no temporal rotation in global attention
            rope_global = RopeTable(pos.repeat(1, S, 1), head_dim, self.config.rope_freq)  # [1, S·T, 2]

        k = self.config.aa_block_size
        layers: list[torch.Tensor | None] = [None] * self.config.depth
        fi = gi = 0
        for group in range(self.config.depth // k):
            idx = range(group * k, (group + 1) * k)
            frame_out: list[torch.Tensor | None] = []
            global_out: list[torch.Tensor | None] = []
            for attn_type in self.config.aa_order:
                for layer in idx:
                    if attn_type == "frame":
                        tokens = self._run(self.frame_blocks[fi], tokens.reshape(B * S, T, C), rope_frame)
                        fi += 1
                        frame_out.append(tokens.reshape(B, S, T, C) if layer in keep else None)
                    else:
                        tokens = self._run(self.global_blocks[gi], tokens.reshape(B, S * T, C), rope_global)
                        gi += 1
                        global_out.append(tokens.reshape(B, S, T, C) if layer in keep else None)
            for j, layer in enumerate(idx):
                if layer in keep:
                    out = torch.cat([frame_out[j], global_out[j]], dim=-1)  # [B, S, T, 2C]
                    layers[layer] = out if output_dtype is None else out.to(output_dtype)
            del frame_out, global_out
        return layers, self.patch_start_idx
