"""Voxel incidence from point maps: the official rule bit for bit, the options, and bad input."""

import numpy as np
import pytest
import torch

from spatial_mllm.sampling import CoverageOptions, select_frames, select_frames_from_depth, voxel_incidence
from spatial_mllm.sampling.coverage import official_conf_threshold
from spatial_mllm.sampling.official import official_select, official_voxel_sets
from spatial_mllm.sampling.toy import toy_point_maps


@pytest.fixture(scope="module")
def scene():
    return toy_point_maps(n_frames=24, height=30, width=40, seed=3, noise=0.01)


def _pairs(inc):
    """{(frame, (i, j, k))} of a VoxelIncidence."""
    f, v = inc.incidence.nonzero(as_tuple=True)
    coords = inc.voxel_coords[v].tolist()
    return {(int(a), tuple(b)) for a, b in zip(f.tolist(), coords)}


@pytest.mark.parametrize("n", [1, 2, 7, 1000, (1 << 16) + 4099])
@pytest.mark.parametrize("pct", [0.0, 37.5, 50.0, 90.0, 100.0])
def test_threshold_is_numpy_percentile(n, pct):
    g = torch.Generator().manual_seed(n)
    x = (torch.rand(n, generator=g) * 5).round(decimals=2).float() + 1  # many ties
    want = np.percentile(x.numpy(), pct)
    assert official_conf_threshold(x, pct).item() == pytest.approx(float(want), abs=0, rel=0)
    # the sample-bracket path (used on CPU for large inputs) gives the same number
    assert official_conf_threshold(x, pct, chunk=1024).item() == float(want)


def test_incidence_equals_official_voxel_sets(scene):
    sets = official_voxel_sets(scene["world_points"], scene["conf"])
    want = {(t, v) for t, s in enumerate(sets) for v in s}
    for chunk in (None, 1, 3000):  # one block, one frame per block, a few frames per block
        inc = voxel_incidence(scene["world_points"], scene["conf"], chunk_points=chunk)
        assert _pairs(inc) == want
    # columns are the occupied voxels only, each seen by at least one frame
    assert bool(inc.incidence.any(0).all())
    assert inc.voxel_size.item() == pytest.approx(
        float((scene["world_points"].reshape(-1, 3)[inc.kept_mask(scene["conf"]).reshape(-1)].amax(0)
               - inc.origin).min()) / 20, rel=1e-6)


def test_sort_based_path_equals_table(scene):
    a = voxel_incidence(scene["world_points"], scene["conf"])
    b = voxel_incidence(scene["world_points"], scene["conf"], max_dense_cells=1)
    assert torch.equal(a.incidence, b.incidence) and torch.equal(a.voxel_coords, b.voxel_coords)


def test_select_frames_matches_official_rule():
    agreed = 0
    for seed in range(4):
        d = toy_point_maps(n_frames=32, height=24, width=32, seed=seed, noise=0.02)
        off = official_select(d["world_points"], d["conf"], 8)
        ours = select_frames(d["world_points"][None], d["conf"][None], 8)  # VGGT's [1, S, ...] layout too
        assert ours == sorted(ours) and len(set(ours)) == 8
        if len(off) == 8:
            assert ours == off
            agreed += 1
    assert agreed >= 3  # the fixtures are ones where the official rule returns k frames


def test_options_metric_stride_and_depth_path(scene):
    pts, conf, depth = scene["world_points"], scene["conf"], scene["depth"]
    # stride = the same rule on pre-strided maps
    a = voxel_incidence(pts, conf, stride=2)
    b = voxel_incidence(pts[:, ::2, ::2].contiguous(), conf[:, ::2, ::2].contiguous())
    assert torch.equal(a.incidence, b.incidence)
    # metric voxels: the size is what was asked; finer voxels -> more of them
    m = voxel_incidence(pts, None, voxel_size=0.25)
    f = voxel_incidence(pts, None, voxel_size=0.1)
    assert m.voxel_size.item() == pytest.approx(0.25) and f.num_voxels > m.num_voxels
    # voxel centres lie inside the points' bounding box grown by half a voxel (metres, world frame)
    centers = m.voxel_centers()
    p = pts.reshape(-1, 3)
    assert bool((centers >= p.amin(0) - 0.125).all() and (centers <= p.amax(0) + 0.125).all())
    # ground-truth depth + cameras = the exact (noise-free) point maps of the same scene
    exact = toy_point_maps(n_frames=24, height=30, width=40, seed=3, noise=0.0)
    assert torch.allclose(exact["depth"], depth)
    k_depth = select_frames_from_depth(depth, scene["intrinsics"], scene["extrinsics"], 6, voxel_size=0.25)
    k_pts = select_frames(exact["world_points"], None, 6, voxel_size=0.25)
    assert k_depth == k_pts


def test_nonfinite_dropped_or_rejected(scene):
    pts, conf = scene["world_points"].clone(), scene["conf"].clone()
    pts[0, :3, :5] = float("nan")
    conf[1, 2:4, :] = float("inf")
    inc = voxel_incidence(pts, conf)
    assert inc.num_nonfinite == 15 + 2 * conf.shape[-1]
    valid = torch.isfinite(pts).all(-1) & torch.isfinite(conf)
    clean = voxel_incidence(torch.nan_to_num(pts, nan=0.0), torch.nan_to_num(conf, posinf=1.0), valid=valid)
    assert _pairs(inc) == _pairs(clean)
    with pytest.raises(ValueError, match="NaN/inf"):
        voxel_incidence(pts, conf, nonfinite="raise")


def test_bad_input_errors(scene):
    pts, conf = scene["world_points"], scene["conf"]
    with pytest.raises(ValueError, match="empty mask"):
        voxel_incidence(pts, torch.full_like(conf, 0.05))  # nothing passes conf > 0.1
    flat = pts.clone()
    flat[..., 2] = 1.0  # every point on one plane: min extent 0
    with pytest.raises(ValueError, match="degenerate"):
        voxel_incidence(flat, conf)
    assert voxel_incidence(flat, conf, voxel_size=0.2).num_voxels > 0  # the documented way out
    with pytest.raises(ValueError, match="candidates"):
        select_frames(pts[:5], conf[:5], 8)
    with pytest.raises(ValueError, match="does not match"):
        voxel_incidence(pts, conf[:, :-1])
    with pytest.raises(TypeError, match="unknown coverage option"):
        voxel_incidence(pts, conf, voxel_sise=0.1)
    with pytest.raises(ValueError, match="voxel_size"):
        CoverageOptions(voxel_size=0.0)
