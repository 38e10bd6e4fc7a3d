"""The per-video feature cache: a hit returns the same tensors; a changed weight, setting or video misses."""

import numpy as np
import pytest
import torch

from spatial_mllm.models.feature_cache import VisualFeatureCache, video_content_hash
from spatial_mllm.models.prefix import answer_questions
from spatial_mllm.models.tiny import tiny_model


def frames(n, h, w, seed=0):
    return list((np.random.default_rng(seed).random((n, h, w, 3)) * 255).astype(np.uint8))


def _features(cache, proc, video, **settings):
    batch = proc(proc.build_prompt("q"), videos=[video])
    return cache.video_features(video, batch, settings)["video"].pooler_output[0]


def test_hit_miss_and_disk_round_trip(tok, proc, tmp_path):
    model = tiny_model(tok).eval()
    video = frames(4, 60, 80)
    cache = VisualFeatureCache(model, tmp_path / "cache")
    first = _features(cache, proc, video)
    again = _features(cache, proc, video)
    assert (cache.misses, cache.hits) == (1, 1) and torch.equal(first, again)
    with torch.no_grad():
        direct = model.encode_visual_inputs(**{k: v for k, v in proc(proc.build_prompt("q"), videos=[video]).items()
                                               if k in ("pixel_values_videos", "video_grid_thw",
                                                        "spatial_pixel_values_videos")})["video"].pooler_output[0]
    assert torch.equal(first, direct)
    fresh = VisualFeatureCache(model, tmp_path / "cache")  # a second run: from disk
    assert torch.equal(_features(fresh, proc, video), first) and fresh.hits == 1 and fresh.misses == 0

    _features(cache, proc, frames(4, 60, 80, seed=1))  # another video
    _features(cache, proc, video, num_frames=2)  # another setting
    assert cache.misses == 3
    with torch.no_grad():  # a changed weight (in place, as an optimizer step): the fingerprint moves
        model.connector.ln_q.weight.add_(0.5)
    changed = _features(cache, proc, video)
    assert cache.misses == 4 and not torch.equal(changed, first)


def test_content_hash_ignores_the_path_not_the_bytes(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"same"), b.write_bytes(b"same")
    assert video_content_hash(a) == video_content_hash(b)
    b.write_bytes(b"other")
    assert video_content_hash(a) != video_content_hash(b)
    assert video_content_hash(frames(2, 8, 8)) != video_content_hash(frames(2, 8, 8, seed=1))


def test_answers_with_the_cache_equal_without(tok, proc, tmp_path):
    model = tiny_model(tok).eval()
    video = frames(4, 60, 80, seed=5)
    qs = ["How many chairs?", "How big is this room (in square meters)?"]
    kw = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)
    plain = answer_questions(model, proc, video, qs, **kw)
    cache = VisualFeatureCache(model, tmp_path / "c")
    assert answer_questions(model, proc, video, qs, cache=cache, **kw) == plain
    assert answer_questions(model, proc, video, qs, cache=cache, **kw) == plain and cache.hits == 1


def test_a_corrupt_file_is_named(tok, proc, tmp_path):
    model = tiny_model(tok).eval()
    cache = VisualFeatureCache(model, tmp_path / "c")
    video = frames(4, 60, 80)
    _features(cache, proc, video)
    (path,) = list((tmp_path / "c").glob("*.safetensors"))
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=path.name):
        _features(VisualFeatureCache(model, tmp_path / "c"), proc, video)
