"""Space-aware sampling of portrait videos: the official sampler turns them 90° clockwise before VGGT.

``src/sampling/sa_sampling.py`` (``load_and_preprocess_images``): ``if height > width: img = img.rotate(-90,
expand=True)`` — Pillow's angle is counter-clockwise, so -90 is a clockwise quarter turn. A portrait video must
therefore give exactly the selection of the landscape video it becomes when turned clockwise.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from spatial_mllm.models.vggt import VGGTConfig
from spatial_mllm.models.vggt.preprocess import load_and_preprocess_images, preprocess_image
from spatial_mllm.sampling.sampler import SpaceAwareSampler, SpaceAwareSamplerConfig


@pytest.fixture(scope="module")
def landscape():
    """A panning 'video' [30, 42, 56, 3] uint8 with structure in every direction."""
    rng = np.random.default_rng(1)
    base = (rng.random((42, 56, 3)) * 255).astype(np.uint8)
    return np.stack([np.roll(np.roll(base, 2 * t, axis=1), t // 3, axis=0) for t in range(30)])


@pytest.fixture(scope="module")
def portrait(landscape):
    """The same video held upright: each landscape frame turned 90° counter-clockwise → [30, 56, 42, 3]."""
    return np.ascontiguousarray(np.rot90(landscape, k=1, axes=(1, 2)))


def _sampler(portrait_rule="rotate"):
    torch.manual_seed(0)
    return SpaceAwareSampler(vggt_config=VGGTConfig.tiny(), device="cpu",
                             config=SpaceAwareSamplerConfig(num_candidates=12, target_size=56, portrait=portrait_rule))


def test_pillow_minus_90_is_a_clockwise_turn(portrait, landscape):
    # the script's call on a portrait frame gives the landscape frame back (np.rot90(k=-1) = clockwise)
    turned = np.asarray(Image.fromarray(portrait[3]).rotate(-90, expand=True))
    assert np.array_equal(turned, landscape[3])
    assert np.array_equal(np.rot90(portrait[3], k=-1), landscape[3])


def test_preprocess_rotates_portrait_frames_only(portrait, landscape):
    p = preprocess_image(portrait[0], "crop", 56, rotate_portrait=True)
    assert torch.equal(p, preprocess_image(landscape[0], "crop", 56))
    assert p.shape == (3, 42, 56)  # whole frame, landscape
    assert preprocess_image(portrait[0], "crop", 56).shape == (3, 56, 56)  # VGGT load_fn: centre crop
    # a landscape frame is never turned
    assert torch.equal(preprocess_image(landscape[0], "crop", 56, rotate_portrait=True),
                       preprocess_image(landscape[0], "crop", 56))
    batch = load_and_preprocess_images(list(portrait[:4]), "crop", 56, rotate_portrait=True)
    assert torch.equal(batch, load_and_preprocess_images(list(landscape[:4]), "crop", 56))


def test_portrait_video_selects_as_its_rotated_landscape_counterpart(portrait, landscape):
    s = _sampler()  # default: the official rule
    assert s.config.portrait == "rotate"
    assert torch.equal(s.preprocess(portrait[:3]), s.preprocess(landscape[:3]))
    a, b = s.sample(portrait, 5, name="upright"), s.sample(landscape, 5, name="turned")
    assert a.indices == b.indices and a.selected_candidates == b.selected_candidates
    assert a.gains == b.gains and a.covered == b.covered and a.candidates == b.candidates
    assert len(a.indices) == 5


def test_crop_stays_an_option(portrait, landscape):
    s = _sampler("crop")
    assert s.preprocess(portrait[:2]).shape == (2, 3, 56, 56)  # centre 56×56 of a 42×56 (W×H) frame
    res = s.sample(portrait, 5, name="upright")
    assert len(res.indices) == 5 and res.indices == sorted(set(res.indices))
    # on this video the crop changes the choice: the rule matters (the rotate test above is not vacuous)
    assert res.indices != _sampler().sample(landscape, 5, name="turned").indices
    assert _sampler()._cache_key(5) != s._cache_key(5)  # a cached crop selection is not reused by rotate
    with pytest.raises(ValueError, match="portrait must be 'rotate'"):
        SpaceAwareSamplerConfig(portrait="flip")
