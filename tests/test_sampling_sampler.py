"""Samplers behind one interface: uniform, random, space-aware (tiny VGGT), cache and official export layout."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from spatial_mllm.models.vggt import VGGTConfig
from spatial_mllm.sampling import select_frames
from spatial_mllm.sampling.sampler import (
    RandomSampler,
    SpaceAwareSampler,
    SpaceAwareSamplerConfig,
    UniformSampler,
    make_sampler,
)
from spatial_mllm.sampling.toy import toy_point_maps


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = (rng.random((1, 42, 56, 3)) * 255).astype(np.uint8)
    shift = np.stack([np.roll(base[0], 2 * t, axis=1) for t in range(30)])  # a panning "video"
    return shift  # [30, 42, 56, 3] uint8


def _tiny_sampler(tmp_path, **kw):
    torch.manual_seed(0)
    return SpaceAwareSampler(vggt_config=VGGTConfig.tiny(), device="cpu",
                             config=SpaceAwareSamplerConfig(num_candidates=12, target_size=56),
                             cache_dir=tmp_path / "cache", export_dir=tmp_path / "export", **kw)


def test_uniform_and_random(frames):
    u = UniformSampler().sample(frames, 4)
    assert u.indices == [0, 10, 19, 29] and u.method == "uniform"
    r1, r2 = RandomSampler(seed=3).sample(frames, 6), make_sampler("random", seed=3).sample(frames, 6)
    assert r1.indices == r2.indices == sorted(set(r1.indices)) and len(r1.indices) == 6
    with pytest.raises(ValueError, match="only 30 frames"):
        UniformSampler().sample(frames, 31)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("fps")


def test_space_aware_tiny_vggt_cache_and_export(frames, tmp_path):
    s = _tiny_sampler(tmp_path)
    res = s.sample(frames, 5, name="scene0")
    # exactly k sorted distinct source-frame indices, all among the uniform candidates
    assert len(res.indices) == 5 and res.indices == sorted(set(res.indices))
    assert set(res.indices) <= set(res.candidates) and len(res.candidates) == 12
    assert res.candidates == np.linspace(0, 29, 12).astype(int).tolist()  # the script's floor rounding
    assert res.covered == sum(res.gains) and not res.cached
    # the selection is select_frames on the sampler's own point maps
    from spatial_mllm.models.vggt.preprocess import load_and_preprocess_images

    imgs = load_and_preprocess_images(list(frames[res.candidates]), "crop", 56)
    pts, conf = s.point_maps(imgs)
    assert pts.shape == (12, 42, 56, 3) and conf.shape == (12, 42, 56)
    assert res.selected_candidates == select_frames(pts, conf, 5)
    # cache: the same answer without running VGGT
    fresh = _tiny_sampler(tmp_path)
    fresh.point_maps = None  # calling VGGT would now fail: the answer must come from the json cache
    hit = fresh.sample(frames, 5, name="scene0")
    assert hit.cached and hit.indices == res.indices and hit.gains == res.gains
    # export in the official layout
    out = tmp_path / "export" / "sa_sampling" / "scene0"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"scene0_frame_{i:06d}.png" for i in res.indices]
    meta = json.loads((out / "selected_frames.json").read_text())
    assert meta["selected_frames"] == res.indices and meta["num_frames"] == 5
    assert np.array_equal(np.asarray(Image.open(out / pngs[0])), frames[res.indices[0]])
    # another k is another cache entry, and the export folder then holds that selection only
    four = _tiny_sampler(tmp_path).sample(frames, 4, name="scene0")
    assert four.cached is False and len(list(out.glob("*.png"))) == 4
    with pytest.raises(ValueError, match="candidate frames"):
        _tiny_sampler(tmp_path).sample(frames, 13, name="scene0")


def test_space_aware_reads_a_frame_folder(frames, tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, f in enumerate(frames[:20]):
        Image.fromarray(f).save(folder / f"{t}.png")
    res = _tiny_sampler(tmp_path).sample(folder, 4)
    assert len(res.indices) == 4 and res.total_frames == 20
    assert (tmp_path / "cache" / "clip.json").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_selection_equals_cpu():
    d = toy_point_maps(n_frames=48, height=60, width=80, seed=2, noise=0.02)
    cpu = select_frames(d["world_points"], d["conf"], 12)
    gpu = select_frames(d["world_points"].cuda(), d["conf"].cuda(), 12)
    assert gpu == cpu
