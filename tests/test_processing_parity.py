"""SpatialMLLMProcessor against the official pipeline's own tools, on mp4s of several sizes and lengths.

Oracles:

* evaluation (``pixel_preset="official_eval"``): qwen-vl-utils 0.0.14's ``fetch_video`` called as the official
  ``eval_vsibench.py`` calls it (only ``nframes``), then transformers' ``Qwen2_5_VLProcessor`` built offline with
  the tiny tokenizer; space-aware frames as the official script passes them (a list of PNG files);
* training (``pixel_preset="official_train"``): ``data_qwen.py``'s frame rule
  ``np.unique(np.linspace(0, total-1, 16, dtype=int))`` (restated here, one line) with every frame resized by
  qwen-vl-utils' ``fetch_image`` (Pillow bicubic to ``smart_resize`` in [293216, 324576], the operation the
  training script's image processor performs), then the same Qwen processor;
* the default preset: ``fetch_video`` with the training bounds passed as ``min_pixels`` / ``max_pixels``.

qwen-vl-utils reads mp4s with torchcodec, decord or ``torchvision.io.read_video``; none works here
(torchvision 0.29 has no ``read_video``), so its torchvision reader gets a stand-in ``read_video`` that decodes
every frame with PyAV, and qwen-vl-utils' own code picks the frames, the size and the sampled fps.

``second_per_grid_ts``: transformers 5.x takes it from its own video metadata, so the oracle is the value
the official code computed: ``temporal_patch_size / fps`` with transformers 4.51.3's ``fps=2.0`` default
(evaluation passes no fps) and ``video_frame_fps=4`` (training).
"""

import types
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

qvu = pytest.importorskip("qwen_vl_utils.vision_process")

from spatial_mllm.data.render import write_mp4  # noqa: E402
from spatial_mllm.models.processing import SpatialMLLMProcessor  # noqa: E402

pytestmark = pytest.mark.slow  # ~1 min: 1920×1440 clips resized several ways

TRAIN_BOUNDS = dict(min_pixels=293216, max_pixels=324576)  # scripts/training/spatial_mllm_train_demo.sh

# name: (frames, height, width, fps) — landscape ScanNet, ScanNet++/ARKit-like 4:3 and 16:9, portrait,
# odd frame counts, a video with exactly 16 frames, one shorter than 16
VIDEOS = {
    "scannet_640x480": (20, 480, 640, 24.0),
    "large_1920x1440_odd": (17, 1440, 1920, 30.0),
    "portrait_1440x1920": (18, 1920, 1440, 30.0),
    "arkit_1296x968_odd": (33, 968, 1296, 60.0),
    "wide_1920x1080_exact16": (16, 1080, 1920, 30.0),
    "portrait_480x640_odd": (25, 640, 480, 10.0),
    "short_640x480": (9, 480, 640, 10.0),
}


def _clip(T, H, W):
    """Smooth frames (cheap to make and encode: drawn at 1/8 size, blown up) that differ from frame to frame
    (a wrong index shows)."""
    y, x = np.mgrid[0:H // 8, 0:W // 8].astype(np.float32) * 8
    out = []
    for t in range(T):
        img = np.stack([128 + 100 * np.sin(x / 37.0 + 0.3 * t), 128 + 100 * np.cos(y / 23.0 - 0.2 * t),
                        (x + y + 9 * t) % 256], -1)
        r0 = int((H // 8 - H // 40) * t / max(T - 1, 1))
        img[r0:r0 + H // 40, W // 24:W // 24 + W // 32] = (255, 40, 40)
        out.append(np.clip(img, 0, 255).astype(np.uint8).repeat(8, axis=0).repeat(8, axis=1))
    return np.stack(out)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    return {name: write_mp4(root / f"{name}.mp4", _clip(T, H, W), fps=fps) for name, (T, H, W, fps) in VIDEOS.items()}


_DECODED: dict = {}


def _decode_all(path):
    """Every frame of ``path`` (PyAV rgb24, as spatial_mllm.data.video) and the stream's average rate."""
    import av

    key = str(path)
    if key not in _DECODED:
        with av.open(key) as c:
            s = c.streams.video[0]
            frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(s)])
            _DECODED[key] = (frames, float(s.average_rate))
    return _DECODED[key]


def _read_video_standin(path, start_pts=0.0, end_pts=None, pts_unit="sec", output_format="TCHW"):
    assert start_pts == 0.0 and end_pts is None and output_format == "TCHW"
    frames, fps = _decode_all(path)
    return torch.from_numpy(frames).permute(0, 3, 1, 2), torch.zeros(0), {"video_fps": fps}


@pytest.fixture(autouse=True)
def _qwen_vl_utils_reads_with_pyav(monkeypatch):
    monkeypatch.setattr(qvu, "get_video_reader_backend", lambda: "torchvision")
    monkeypatch.setattr(qvu, "io", types.SimpleNamespace(read_video=_read_video_standin))


@pytest.fixture(scope="module")
def qwen(tok):
    """transformers' Qwen2.5-VL processor with its default image/video processors (the official repos'
    preprocessor_config.json holds the same defaults)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tok,
                               video_processor=Qwen2VLVideoProcessor(), chat_template=tok.chat_template)


def _qwen_inputs(qwen, prompt, video):
    """The official call: ``processor(text=..., videos=[video])`` with no fps and no video kwargs."""
    return qwen(text=[prompt], videos=[video], return_tensors="pt")


def _compare(proc, qwen, path, oracle_video, oracle_indices, expect_spgt, frame_indices=None):
    """Our processor on ``path`` against the oracle's resized frames [T, 3, h, w] (0..255 float) and indices."""
    prompt = proc.build_prompt("How many chairs are in this room?")
    ours_v = proc.load_video(path, frame_indices=frame_indices)
    assert ours_v.indices == [int(i) for i in oracle_indices]
    assert ours_v.frames.shape == oracle_video.shape, (ours_v.frames.shape, oracle_video.shape)
    assert torch.equal(ours_v.frames, oracle_video.float())  # same integer-valued pixels
    ours = proc(prompt, videos=[ours_v])  # the loaded video as it is (a VideoInput passes through)
    ref = _qwen_inputs(qwen, prompt, oracle_video)
    assert ours["video_grid_thw"].tolist() == ref["video_grid_thw"].tolist()
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    torch.testing.assert_close(ours["pixel_values_videos"], ref["pixel_values_videos"], atol=1e-6, rtol=0)
    torch.testing.assert_close(ours["spatial_pixel_values_videos"][0], oracle_video.float() / 255.0,
                               atol=1e-6, rtol=0)
    assert ours["second_per_grid_ts"].tolist() == pytest.approx([expect_spgt], abs=1e-7)
    return ours


# ------------------------------------------------------------------------------------------ evaluation


@pytest.mark.parametrize("name", [n for n in VIDEOS if not n.startswith("short")])
def test_official_eval_matches_qwen_vl_utils_defaults(name, videos, tok, qwen):
    proc = SpatialMLLMProcessor.build(tok, pixel_preset="official_eval")
    ele = {"type": "video", "video": str(videos[name]), "nframes": 16}  # eval_vsibench.py's message
    video, meta = qvu.fetch_video(ele, return_video_metadata=True)
    ours = _compare(proc, qwen, videos[name], video, meta["frames_indices"],
                    expect_spgt=qwen.video_processor.temporal_patch_size / 2.0)  # 4.51.3: fps defaults to 2.0
    assert ours["second_per_grid_ts"].tolist() == [1.0]
    h, w = video.shape[-2:]
    assert 128 * 28 * 28 <= h * w <= 768 * 28 * 28  # qwen-vl-utils' default video bounds, not the training ones


def test_official_eval_sizes_differ_from_training_except_640x480(videos, tok):
    ev = SpatialMLLMProcessor.build(tok, pixel_preset="official_eval")
    tr = SpatialMLLMProcessor.build(tok, pixel_preset="official_train")
    sizes = {n: (tuple(ev.load_video(videos[n]).frames.shape[-2:]), tuple(tr.load_video(videos[n]).frames.shape[-2:]))
             for n in ("scannet_640x480", "large_1920x1440_odd", "portrait_1440x1920")}
    assert sizes["scannet_640x480"] == ((476, 644), (476, 644))
    assert sizes["large_1920x1440_odd"] == ((672, 896), (476, 644))
    assert sizes["portrait_1440x1920"] == ((896, 672), (644, 476))


def test_official_eval_short_video_is_an_error_as_in_qwen_vl_utils(videos, tok):
    proc = SpatialMLLMProcessor.build(tok, pixel_preset="official_eval")
    with pytest.raises(ValueError, match="nframes should in interval"):
        qvu.fetch_video({"video": str(videos["short_640x480"]), "nframes": 16})
    with pytest.raises(ValueError, match="9 frames, fewer than the 16"):
        proc.load_video(videos["short_640x480"])


@pytest.mark.parametrize("name", ["scannet_640x480", "large_1920x1440_odd", "portrait_480x640_odd"])
def test_official_eval_selected_frames_match_the_sa_sampling_png_list(name, videos, tok, qwen, tmp_path):
    """Space-aware evaluation: the official script saves the chosen frames as PNGs and passes the list."""
    proc = SpatialMLLMProcessor.build(tok, pixel_preset="official_eval")
    frames, _ = _decode_all(videos[name])
    idx = [0, 2, 3, 7, 8, 11, 15]  # an odd count: qwen-vl-utils pads with the last frame
    pngs = []
    for i in idx:
        Image.fromarray(frames[i]).save(tmp_path / f"{name}_frame_{i:06d}.png")
        pngs.append(str(tmp_path / f"{name}_frame_{i:06d}.png"))
    video = qvu.fetch_video({"type": "video", "video": pngs})
    assert video.shape[0] == 8
    ours = _compare(proc, qwen, videos[name], video, idx, expect_spgt=1.0, frame_indices=idx)
    via_call = proc(proc.build_prompt("q"), videos=[videos[name]], frame_indices=[idx])
    assert torch.equal(via_call["pixel_values_videos"], ours["pixel_values_videos"])
    # the folder itself (the sa_sampling/<video>/ layout) gives the same frames
    folder = proc.load_video(tmp_path)
    assert torch.equal(folder.frames, video.float())


# ------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("name", list(VIDEOS))
def test_official_train_matches_the_training_scripts_rule(name, videos, tok, qwen):
    proc = SpatialMLLMProcessor.build(tok, pixel_preset="official_train")
    frames, _ = _decode_all(videos[name])
    total = len(frames)
    idx = np.unique(np.linspace(0, total - 1, 16, dtype=int))  # data_qwen.py process_video
    resized = [np.asarray(qvu.fetch_image({"image": Image.fromarray(frames[i]), **TRAIN_BOUNDS})) for i in idx]
    if len(resized) % 2:  # the image processor repeats the last frame up to the temporal patch
        resized.append(resized[-1])
    video = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)
    ours = _compare(proc, qwen, videos[name], video, idx, expect_spgt=2 / 4)  # temporal_patch / video_frame_fps
    assert ours["second_per_grid_ts"].tolist() == [0.5]
    h, w = video.shape[-2:]
    assert TRAIN_BOUNDS["min_pixels"] <= h * w <= TRAIN_BOUNDS["max_pixels"]
    if name.startswith("short"):
        assert idx.tolist() == list(range(9)) and video.shape[0] == 10


# ------------------------------------------------------------------------------------------ default


@pytest.mark.parametrize("name", ["scannet_640x480", "large_1920x1440_odd", "portrait_480x640_odd"])
def test_default_is_qwen_vl_utils_with_the_training_bounds(name, videos, tok, qwen):
    proc = SpatialMLLMProcessor.build(tok)  # pixel_preset=None
    ele = {"type": "video", "video": str(videos[name]), "nframes": 16, **TRAIN_BOUNDS}
    video, meta = qvu.fetch_video(ele, return_video_metadata=True)
    _, sample_fps = qvu.fetch_video(ele, return_video_sample_fps=True)
    _compare(proc, qwen, videos[name], video, meta["frames_indices"], expect_spgt=2 / sample_fps)
    T, fps = VIDEOS[name][0], VIDEOS[name][3]
    assert sample_fps == pytest.approx(16 / T * float(Fraction(fps).limit_denominator(1001)))


def test_presets_are_named_and_overridable(tok):
    ev = SpatialMLLMProcessor.build(tok, pixel_preset="official_eval")
    assert (ev.num_frames, ev.min_pixels, ev.max_pixels, ev.second_per_grid_t) == (16, 100352, 602112, 1.0)
    tr = SpatialMLLMProcessor.build(tok, pixel_preset="official_train", num_frames=8)
    assert (tr.num_frames, tr.min_pixels, tr.max_pixels, tr.second_per_grid_t) == (8, 293216, 324576, 0.5)
    assert SpatialMLLMProcessor.build(tok, pixel_preset="official_eval", second_per_grid_t="sampled_fps"
                                      ).second_per_grid_t is None
    with pytest.raises(ValueError, match="pixel_preset must be one of"):
        SpatialMLLMProcessor.build(tok, pixel_preset="official")
