"""SpatialMLLMProcessor: official frame sizes, inputs (mp4 / frame folder / arrays), errors naming the input."""

import numpy as np
import pytest
import torch
from PIL import Image

from spatial_mllm.data import render
from spatial_mllm.data.video import VideoReadError
from spatial_mllm.models.processing import SpatialMLLMProcessor, qwen_video_frame_size, smart_resize
from spatial_mllm.models.tiny import tiny_processor


def write_mp4(path, frames, fps=10.0):
    return render.write_mp4(path, frames, fps=fps)


def rand_frames(n, h, w, seed=0):
    return (np.random.default_rng(seed).random((n, h, w, 3)) * 255).astype(np.uint8)


def test_official_640x480_grid_is_34x46(tok, tmp_path):
    # qwen-vl-utils with Spatial-MLLM's per-frame bounds: 640x480 → 644x476 (WxH) → 46x34 patches
    assert qwen_video_frame_size(480, 640, 16, 293216, 324576) == (476, 644)
    proc = SpatialMLLMProcessor.build(tok)  # the default setting: 16 frames, [293216, 324576] pixels (the official training bounds)
    path = write_mp4(tmp_path / "v.mp4", rand_frames(20, 480, 640), fps=10)
    b = proc(proc.build_prompt("q"), videos=[path])
    assert b["video_grid_thw"].tolist() == [[8, 34, 46]]
    assert b["spatial_pixel_values_videos"][0].shape == (16, 3, 476, 644)
    assert (b["input_ids"] == proc.video_token_id).sum() == 8 * 17 * 23
    # qwen-vl-utils' fps: 16 of 20 frames at 10 fps → 8 fps sampled → 2 / 8 s per temporal patch
    torch.testing.assert_close(b["second_per_grid_ts"], torch.tensor([0.25]))


def test_total_pixel_budget_caps_long_videos():
    # 768 frames: budget 90316800 / 768 · 2 = 235200 < min·1.05 → cap = 1.05·min; qwen-vl-utils' formula
    assert qwen_video_frame_size(480, 640, 768, 100352, 602112) == smart_resize(480, 640, 28, 100352, 235200)
    assert qwen_video_frame_size(480, 640, 768, 293216, 324576) == smart_resize(480, 640, 28, 293216, 307876)


def test_mp4_uniform_and_given_indices(proc, tmp_path):
    fr = rand_frames(12, 60, 80)
    path = write_mp4(tmp_path / "v.mp4", fr)
    v = proc.load_video(path, num_frames=4)
    assert v.indices == [0, 4, 7, 11]  # linspace(0, 11, 4).round(): 0, 3.67, 7.33, 11
    assert v.frames.shape == (4, 3, 56, 84) and v.frames.dtype == torch.float32
    w = proc.load_video(path, frame_indices=[1, 5, 6])
    assert w.indices == [1, 5, 6] and w.frames.shape[0] == 4  # odd count padded with the last frame
    assert torch.equal(w.frames[3], w.frames[2])


def test_frame_folder_sa_sampling_layout(proc, tmp_path):
    folder = tmp_path / "sa_sampling" / "scene0000_00"
    folder.mkdir(parents=True)
    fr = rand_frames(4, 60, 80)
    for i, f in enumerate(fr):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    b = proc(proc.build_prompt("q"), videos=[folder])
    assert b["video_grid_thw"].tolist() == [[2, 4, 6]]  # image path: smart_resize(60, 80) = 56x84
    expect = np.asarray(Image.fromarray(fr[2]).resize((84, 56), resample=Image.BICUBIC))
    np.testing.assert_allclose(b["spatial_pixel_values_videos"][0][2].permute(1, 2, 0).numpy() * 255, expect, atol=1e-3)
    Image.fromarray(rand_frames(1, 64, 80)[0]).save(folder / "00004.png")
    with pytest.raises(VideoReadError, match=r"scene0000_00/00004\.png is 80x64"):
        proc.load_video(folder)


def test_arrays_and_errors_name_the_input(proc, tmp_path):
    v = proc.load_video(list(rand_frames(6, 60, 80)), num_frames=4)
    assert v.indices == [0, 2, 3, 5] and v.sampled_fps == 2.0
    bad = list(rand_frames(3, 60, 80)) + [rand_frames(1, 60, 90)[0]]
    with pytest.raises(ValueError, match="frame 3 is 90x60"):
        proc.load_video(bad)
    path = write_mp4(tmp_path / "short.mp4", rand_frames(3, 56, 56))
    with pytest.raises(ValueError, match=r"short\.mp4: 3 frames, fewer than the 4"):
        proc.load_video(path, num_frames=4)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        proc.load_video(tmp_path / "nope.mp4")
    with pytest.raises(ValueError, match="placeholders"):
        proc(proc.build_prompt("q"), videos=[list(rand_frames(2, 56, 56))] * 2)


def test_batch_outputs_tokens_and_spatial_frames(proc):
    prompts = [proc.build_prompt("first"), proc.build_prompt("second, longer question?", num_images=1)]
    b = proc(prompts, videos=[list(rand_frames(4, 56, 56)), list(rand_frames(2, 84, 56))],
             images=[rand_frames(1, 56, 90)[0]])
    assert b["input_ids"].shape == b["attention_mask"].shape == b["mm_token_type_ids"].shape
    assert (b["attention_mask"][:, -1] == 1).all()  # left padding
    n_vid = [int(g.prod()) // 4 for g in b["video_grid_thw"]]
    assert (b["mm_token_type_ids"] == 2).sum() == sum(n_vid) == (b["input_ids"] == proc.video_token_id).sum()
    assert (b["mm_token_type_ids"] == 1).sum() == int(b["image_grid_thw"][0].prod()) // 4
    sp = b["spatial_pixel_values_videos"]
    assert [tuple(s.shape) for s in sp] == [(4, 3, 56, 56), (2, 3, 84, 56)]
    assert all(0.0 <= s.min() and s.max() <= 1.05 for s in sp)
    assert b["spatial_pixel_values_images"][0].shape == (3, 56, 84)  # smart_resize(56, 90)
    proc2 = tiny_processor(proc.tokenizer)
    proc2.second_per_grid_t = 1.0  # the official VSI-Bench script's effective value
    assert proc2(prompts[:1], videos=[list(rand_frames(4, 56, 56))])["second_per_grid_ts"].tolist() == [1.0]
