"""VGGT building blocks against the reference's documented numerics: RoPE, DINOv2 pos-embed, DPT pieces."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from spatial_mllm.models.vggt import VGGTConfig
from spatial_mllm.models.vggt.camera_head import activate_pose
from spatial_mllm.models.vggt.dpt_head import (
    FeatureFusionBlock,
    ResidualConvUnit,
    activate_head,
    dpt_pos_embed,
)
from spatial_mllm.models.vggt.layers import Rope2D, RopeTable, patch_positions
from spatial_mllm.models.vggt.patch_embed import DinoV2PatchEmbed

torch.set_num_threads(1)


def test_patch_positions_layout():
    pos = patch_positions(2, h=2, w=3, num_special=5)  # [2, 11, 2]
    assert pos.shape == (2, 11, 2)
    assert pos[0, :5].eq(0).all()  # camera + registers at (0, 0)
    assert pos[0, 5:].tolist() == [[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]  # (row, col)+1, row-major


def test_rope_matches_the_documented_formula():
    d = 64
    x = torch.randn(1, 2, 3, d, dtype=torch.float64).float()
    pos = torch.tensor([[[0, 0], [3, 7], [10, 2]]])  # [1, 3, 2] (row, col)
    out = Rope2D.apply(x, RopeTable(pos, d, 100.0))
    inv = 100.0 ** (-torch.arange(16, dtype=torch.float64) / 16)  # 100^(-2j/32)
    expected = torch.empty_like(x, dtype=torch.float64)
    for t in range(3):
        for half, p in ((0, pos[0, t, 0]), (1, pos[0, t, 1])):  # first 32 dims ↔ row, last 32 ↔ column
            a = x[..., t, half * 32:(half + 1) * 32].double()
            th = p * inv
            c, s = th.cos(), th.sin()
            expected[..., t, half * 32:half * 32 + 16] = a[..., :16] * c - a[..., 16:] * s
            expected[..., t, half * 32 + 16:(half + 1) * 32] = a[..., 16:] * c + a[..., :16] * s
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[..., 0, :], x[..., 0, :])  # position 0: identity


def test_rope_scores_depend_on_relative_position_only():
    d = 16
    q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)

    def score(pq, pk):
        tq = Rope2D.apply(q, RopeTable(torch.tensor([[pq]]), d, 100.0))
        tk = Rope2D.apply(k, RopeTable(torch.tensor([[pk]]), d, 100.0))
        return (tq * tk).sum()

    torch.testing.assert_close(score([2, 5], [1, 1]), score([4, 9], [3, 5]), rtol=1e-4, atol=1e-5)
    assert (score([2, 5], [1, 1]) - score([2, 5], [1, 2])).abs() > 1e-4


def test_dino_pos_embed_interpolation():
    pe = DinoV2PatchEmbed(img_size=42, patch_size=14, embed_dim=8, depth=1, num_heads=2)
    with torch.no_grad():
        pe.pos_embed.normal_()
    # exactly the stored square grid: used as is
    assert pe.interpolate_pos_embed(3, 3, torch.float32) is pe.pos_embed
    # otherwise antialiased bicubic from fp32 (the a=-0.5 kernel differs from the non-AA one)
    out = pe.interpolate_pos_embed(3, 5, torch.float32)  # [1, 1 + 15, 8]
    grid = pe.pos_embed[:, 1:].reshape(1, 3, 3, 8).permute(0, 3, 1, 2)
    aa = F.interpolate(grid, size=(3, 5), mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(1, 15, 8)
    no_aa = F.interpolate(grid, size=(3, 5), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 15, 8)
    torch.testing.assert_close(out[:, 1:], aa)
    assert (out[:, 1:] - no_aa).abs().max() > 1e-3
    torch.testing.assert_close(out[:, 0], pe.pos_embed[:, 0])  # cls part untouched
    # rows keep their scale (3 → 3): row r of the output depends on row r of the grid only
    before = out.clone()
    with torch.no_grad():
        pe.pos_embed[:, 1 + 3 * 2:] += 1.0  # change stored row 2
        after = pe.interpolate_pos_embed(3, 5, torch.float32)
    torch.testing.assert_close(after[:, 1:11], before[:, 1:11])


def test_dpt_pos_embed_values():
    H, W, h, w, C = 28, 42, 2, 3, 8
    pe = dpt_pos_embed(C, h, w, (H, W))  # [C, h, w]
    a = W / H
    sx, sy = a / math.sqrt(a * a + 1), 1 / math.sqrt(a * a + 1)
    u = [-sx * (w - 1) / w + i * 2 * sx * (w - 1) / w / (w - 1) for i in range(w)]
    v = [-sy * (h - 1) / h + i * 2 * sy * (h - 1) / h / (h - 1) for i in range(h)]
    om = [100 ** (-k / 2) for k in range(2)]
    for r in range(h):
        for c in range(w):
            exp = ([math.sin(u[c] * o) for o in om] + [math.cos(u[c] * o) for o in om]
                   + [math.sin(v[r] * o) for o in om] + [math.cos(v[r] * o) for o in om])
            torch.testing.assert_close(pe[:, r, c], torch.tensor(exp, dtype=torch.float32), rtol=1e-6, atol=1e-6)


def test_residual_conv_unit_adds_relu_of_input():
    rcu = ResidualConvUnit(4)
    with torch.no_grad():
        rcu.conv2.weight.zero_()
        rcu.conv2.bias.zero_()
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(rcu(x), F.relu(x))  # not x: upstream's in-place ReLU quirk
    assert x.lt(0).any()  # the input itself is left untouched


def test_fusion_block_upsamples_before_out_conv():
    fb = FeatureFusionBlock(4, has_residual=False)
    assert not hasattr(fb, "resConfUnit1")
    with torch.no_grad():
        for conv in (fb.resConfUnit2.conv2,):
            conv.weight.zero_()
            conv.bias.zero_()
    x = torch.randn(1, 4, 3, 3).abs()
    out = fb(x)  # default: 2× size
    expected = fb.out_conv(F.interpolate(x, size=(6, 6), mode="bilinear", align_corners=True))
    torch.testing.assert_close(out, expected)
    assert fb(x, size=(5, 4)).shape == (1, 4, 5, 4)


def test_head_activations():
    out = torch.tensor([[[[0.5]], [[-2.0]], [[0.0]], [[1.0]]]])  # [1, 4, 1, 1]
    pts, conf = activate_head(out, "inv_log")
    torch.testing.assert_close(pts[0, 0, 0], torch.tensor([math.expm1(0.5), -math.expm1(2.0), 0.0]))
    torch.testing.assert_close(conf[0, 0, 0], torch.tensor(1 + math.e))
    depth, _ = activate_head(out[:, :2], "exp")
    torch.testing.assert_close(depth[0, 0, 0], torch.tensor([math.exp(0.5)]))
    raw = torch.tensor([1.0, -2, 3, 0.5, 0.5, 0.5, -0.5, -0.1, 0.7])
    torch.testing.assert_close(activate_pose(raw), torch.tensor([1.0, -2, 3, 0.5, 0.5, 0.5, -0.5, 0.0, 0.7]))


def test_tiny_config_is_small():
    from spatial_mllm.models.vggt import VGGT

    n = sum(p.numel() for p in VGGT(VGGTConfig.tiny()).parameters())
    assert n < 2_000_000
