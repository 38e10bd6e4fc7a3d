"""Video reading: uniform sampling conventions, PyAV round trip, frame folders, clear errors."""

import importlib.util

import numpy as np
import pytest
from PIL import Image

from spatial_mllm.data.render import write_mp4
from spatial_mllm.data.video import (
    VideoReadError,
    available_backends,
    read_video,
    uniform_frame_indices,
    video_info,
)


def test_uniform_indices_qwen_and_lmms_eval_conventions():
    # linspace(0, 99, 8) = 0, 14.14, 28.29, 42.43, 56.57, 70.71, 84.86, 99
    np.testing.assert_array_equal(uniform_frame_indices(100, 8), [0, 14, 28, 42, 57, 71, 85, 99])
    np.testing.assert_array_equal(
        uniform_frame_indices(100, 8, rounding="floor"), [0, 14, 28, 42, 56, 70, 84, 99]
    )
    np.testing.assert_array_equal(uniform_frame_indices(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(uniform_frame_indices(5, 16), np.arange(5))  # never more than the video
    np.testing.assert_array_equal(uniform_frame_indices(7, 1), [0])
    for total, n in [(300, 16), (33, 32), (1000, 7)]:
        idx = uniform_frame_indices(total, n)
        assert len(idx) == n and idx[0] == 0 and idx[-1] == total - 1 and np.all(np.diff(idx) > 0)
    with pytest.raises(ValueError):
        uniform_frame_indices(0, 4)
    with pytest.raises(ValueError):
        uniform_frame_indices(10, 4, rounding="ceil")


@pytest.fixture(scope="module")
def clip_frames():
    rng = np.random.default_rng(0)
    T, H, W = 10, 48, 64
    colours = rng.integers(30, 220, size=(T, 3))
    frames = np.broadcast_to(colours[:, None, None, :], (T, H, W, 3)).astype(np.uint8).copy()
    frames[:, 10:20, 10:30] = 255 - frames[:, 10:20, 10:30]  # some structure
    return frames


def test_mp4_round_trip_with_pyav(tmp_path, clip_frames):
    path = write_mp4(tmp_path / "v.mp4", clip_frames, fps=5.0)
    assert video_info(path) == (10, 5.0)
    clip = read_video(path)
    assert clip.frames.shape == clip_frames.shape and clip.frames.dtype == np.uint8
    assert clip.fps == 5.0 and clip.total_frames == 10
    np.testing.assert_allclose(clip.timestamps, np.arange(10) / 5.0, atol=1e-6)
    assert np.abs(clip.frames.astype(int) - clip_frames).mean() < 4.0  # lossy but close
    sub = read_video(path, num_frames=4)
    np.testing.assert_array_equal(sub.indices, [0, 3, 6, 9])
    np.testing.assert_array_equal(sub.frames, clip.frames[[0, 3, 6, 9]])
    np.testing.assert_allclose(sub.timestamps, [0.0, 0.6, 1.2, 1.8], atol=1e-6)
    picked = read_video(path, indices=[7, 2, 2])
    np.testing.assert_array_equal(picked.frames, clip.frames[[7, 2, 2]])
    with pytest.raises(IndexError):
        read_video(path, indices=[10])


def test_frame_folder_natural_order(tmp_path, clip_frames):
    for i in range(10):
        Image.fromarray(clip_frames[i]).save(tmp_path / f"frame_{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    clip = read_video(tmp_path, folder_fps=2.0)
    np.testing.assert_array_equal(clip.frames, clip_frames)  # 10 after 9, lossless PNG
    np.testing.assert_allclose(clip.timestamps, np.arange(10) / 2.0)
    sub = read_video(tmp_path, num_frames=3)
    np.testing.assert_array_equal(sub.indices, [0, 4, 9])  # round(4.5) = 4 (ties to even)


def test_frame_folder_of_mixed_sizes_names_the_frame(tmp_path, clip_frames):
    for i in range(3):
        Image.fromarray(clip_frames[i]).save(tmp_path / f"frame_{i}.png")
    Image.fromarray(clip_frames[3][:-2]).save(tmp_path / "frame_3.png")  # two rows short
    with pytest.raises(VideoReadError, match=r"frame_3\.png.*share one size"):
        read_video(tmp_path)


def test_corrupt_and_missing_files_name_the_file(tmp_path, clip_frames):
    bad = tmp_path / "broken_scene.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not really a video" * 50)
    with pytest.raises(VideoReadError, match="broken_scene.mp4"):
        read_video(bad)
    good = write_mp4(tmp_path / "cut.mp4", clip_frames, fps=5.0).read_bytes()
    truncated = tmp_path / "truncated_scene.mp4"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(VideoReadError, match="truncated_scene.mp4"):
        read_video(truncated)
    with pytest.raises(FileNotFoundError, match="missing_scene.mp4"):
        read_video(tmp_path / "missing_scene.mp4")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(VideoReadError, match="empty_folder"):
        read_video(empty)


def test_backends(tmp_path, clip_frames):
    assert "pyav" in available_backends()
    path = write_mp4(tmp_path / "v.mp4", clip_frames, fps=5.0)
    with pytest.raises(ValueError, match="unknown video backend"):
        read_video(path, backend="opencv")
    if importlib.util.find_spec("decord") is None:
        with pytest.raises(ImportError, match="decord"):
            read_video(path, backend="decord")
    else:
        assert read_video(path, backend="decord").frames.shape == clip_frames.shape
