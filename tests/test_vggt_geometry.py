"""VGGT pose encoding, quaternions, unprojection and reference preprocessing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from spatial_mllm.models.vggt import (
    extri_intri_to_pose_encoding,
    load_and_preprocess_images,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
    unproject_depth_map_to_point_map,
)
from spatial_mllm.models.vggt.preprocess import target_size_hw

torch.set_num_threads(1)


def random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return quat_to_mat(q / q.norm(dim=-1, keepdim=True))


def test_quaternion_convention_and_round_trip():
    # XYZW, scalar last: 90° about z maps x → y
    q = torch.tensor([0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)], dtype=torch.float64)
    R = quat_to_mat(q)
    torch.testing.assert_close(R @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                               torch.tensor([0.0, 1, 0], dtype=torch.float64))
    torch.testing.assert_close(quat_to_mat(3 * q), R)  # non-unit quaternions: s = 2/|q|²
    Rs = random_rotations(64)
    Rs = torch.cat([Rs, torch.diag(torch.tensor([1.0, -1, -1], dtype=torch.float64))[None]])  # 180°, w = 0
    qs = mat_to_quat(Rs)
    assert (qs[..., 3] >= 0).all()
    torch.testing.assert_close(qs.norm(dim=-1), torch.ones(len(qs), dtype=torch.float64))
    torch.testing.assert_close(quat_to_mat(qs), Rs)
    torch.testing.assert_close(mat_to_quat(torch.eye(3)), torch.tensor([0.0, 0, 0, 1]))


def test_pose_encoding_round_trip():
    B, S, H, W = 2, 3, 294, 518
    R = random_rotations(B * S, seed=1).float().reshape(B, S, 3, 3)
    t = torch.randn(B, S, 3)
    extr = torch.cat([R, t[..., None]], dim=-1)  # [B, S, 3, 4]
    fx, fy = torch.rand(B, S) * 300 + 200, torch.rand(B, S) * 300 + 200
    K = torch.zeros(B, S, 3, 3)
    K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = fx, fy, W / 2, H / 2, 1
    enc = extri_intri_to_pose_encoding(extr, K, (H, W))
    assert enc.shape == (B, S, 9) and enc.dtype == torch.float32
    torch.testing.assert_close(enc[..., 7], 2 * torch.atan(H / 2 / fy))
    torch.testing.assert_close(enc[..., 8], 2 * torch.atan(W / 2 / fx))
    extr2, K2 = pose_encoding_to_extri_intri(enc, (H, W))
    torch.testing.assert_close(extr2, extr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(K2, K, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(extri_intri_to_pose_encoding(extr2, K2, (H, W)), enc, rtol=1e-5, atol=1e-5)
    # identity camera (what frame 0 should predict): T = 0, q = (0, 0, 0, 1)
    ident = torch.tensor([0.0, 0, 0, 0, 0, 0, 1, 1.0, 1.2])
    e, k = pose_encoding_to_extri_intri(ident, (H, W))
    torch.testing.assert_close(e, torch.eye(3, 4))
    assert pose_encoding_to_extri_intri(ident, build_intrinsics=False)[1] is None


def test_unprojection_of_a_depth_plane():
    H, W, d = 4, 6, 2.5
    K = torch.tensor([[100.0, 0, 3], [0, 80, 2], [0, 0, 1]])
    depth = torch.full((1, 1, H, W, 1), d)  # VGGT layout [B, S, H, W, 1]
    pts = unproject_depth_map_to_point_map(depth, torch.eye(3, 4)[None, None], K[None, None])
    assert pts.shape == (1, 1, H, W, 3)
    torch.testing.assert_close(pts[..., 2], torch.full((1, 1, H, W), d))
    u, v = torch.meshgrid(torch.arange(W).float(), torch.arange(H).float(), indexing="xy")
    torch.testing.assert_close(pts[0, 0, ..., 0], (u - 3) * d / 100)  # pixel centres at integer coords
    torch.testing.assert_close(pts[0, 0, ..., 1], (v - 2) * d / 80)
    # a moved camera: world points map back onto the plane z = d in camera coordinates
    R = random_rotations(1, seed=3)[0].float()
    t = torch.tensor([0.3, -1.0, 2.0])
    E = torch.cat([R, t[:, None]], dim=1)
    pw = unproject_depth_map_to_point_map(depth[0, 0], E, K)  # [H, W, 1] with [3, 4]
    pc = pw @ R.T + t
    torch.testing.assert_close(pc, pts[0, 0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        unproject_depth_map_to_point_map(torch.ones(2, 1, H, W, 1), E, K)


def test_preprocess_sizes_match_reference_rules():
    assert target_size_hw(640, 480) == (392, 518)
    assert target_size_hw(1920, 1080) == (294, 518)
    assert target_size_hw(480, 640, "pad") == (518, 392)
    # banker's rounding: 370·518/740/14 = 18.5 → round half to even = 18 → 252 rows
    assert target_size_hw(740, 370) == (252, 518)


def test_preprocess_crop_pad_and_rgba(tmp_path):
    rng = np.random.default_rng(0)
    land = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    port = rng.integers(0, 256, (640, 480, 3), dtype=np.uint8)
    Image.fromarray(land).save(tmp_path / "land.png")
    x = load_and_preprocess_images([str(tmp_path / "land.png"), land])
    assert x.shape == (2, 3, 392, 518) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and 0 <= x.min() and x.max() <= 1
    ref = np.asarray(Image.fromarray(land).resize((518, 392), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    torch.testing.assert_close(x[0], torch.from_numpy(ref).permute(2, 0, 1))
    # portrait in crop mode: 640·518/480 = 690.7 → 49·14 = 686 rows → centre 518 rows from row 84
    assert target_size_hw(480, 640) == (686, 518)
    xp = load_and_preprocess_images([Image.fromarray(port)])
    full = np.asarray(Image.fromarray(port).resize((518, 686), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    torch.testing.assert_close(xp[0], torch.from_numpy(full[84:84 + 518]).permute(2, 0, 1))
    # mixed sizes are padded with white to the largest
    mixed = load_and_preprocess_images([land, port])
    assert mixed.shape == (2, 3, 518, 518)
    assert mixed[0, :, :63].eq(1).all() and mixed[0, :, 63 + 392:].eq(1).all()
    # pad mode: 392×518 centred in 518×518 white; portrait 518×392 centred horizontally
    xpad = load_and_preprocess_images([land, port], mode="pad")
    assert xpad.shape == (2, 3, 518, 518)
    assert xpad[0, :, :63].eq(1).all() and xpad[1, :, :, :63].eq(1).all()
    # RGBA is composited over white
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    out = load_and_preprocess_images([Image.fromarray(rgba, mode="RGBA")], target_size=28)
    assert out.shape == (1, 3, 28, 28) and out.eq(1).all()
