"""`SpatialMLLMProcessor`: Qwen2.5-VL's processor + the [0, 1] frames for the spatial encoder.

Inputs per video: an mp4 path (uniform sampling of ``num_frames``, or given frame indices), a folder of
frames (the official ``sa_sampling/<video>/`` layout: the selected frames as images), or a list/array of
``[H, W, 3]`` uint8 frames. Outputs (a ``BatchFeature``): ``input_ids``, ``attention_mask`` (left padding),
``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``, ``mm_token_type_ids`` and
``spatial_pixel_values_videos`` (list of ``[T, 3, H', W']`` float in [0, 1], the SAME resized frames the
ViT sees); the same for images (``pixel_values``, ``image_grid_thw``, ``spatial_pixel_values_images``).

Pixel presets. The official code feeds video differently at training and at evaluation, so the processor
has two named presets (``pixel_preset=``) and a backwards-compatible default:

* ``"official_eval"`` — what ``src/evaluation/vsibench/eval_vsibench.py`` (also ``eval_scanqa.py`` and
  ``src/inference.py``) feeds: it passes only ``nframes`` to qwen-vl-utils' ``process_vision_info``, so
  qwen-vl-utils' DEFAULT video bounds apply. mp4: ``nframes`` rounded to a multiple of 2, indices
  ``torch.linspace(0, total-1, n).round()`` (fewer frames than ``n``: ``ValueError``, as qwen-vl-utils);
  per-frame bounds ``[128·28², 768·28²] = [100352, 602112]`` further capped by the total-video budget
  ``max(min(602112, 128000·28²·0.9 / n · 2), 1.05 · min)``; ``smart_resize`` to multiples of 28; torchvision
  bicubic with antialias on the uint8 clip, then ``.float()`` (integer-valued). 640×480 → 644×476 (W×H),
  1920×1440 → 896×672, 1440×1920 → 672×896. ``second_per_grid_ts = 1.0``: the script passes no ``fps`` to
  the processor and transformers 4.51.3's ``Qwen2_5_VLProcessor`` then uses ``fps = 2.0`` (2 / 2.0).
  Pre-selected frames (a folder, a frame list, or explicit ``frame_indices``) follow the official
  space-aware evaluation, which writes the selected frames as PNGs (``src/sampling/sa_sampling.py``) and
  passes the file list (``eval_vsibench.py`` ``build_user_message``, no ``nframes``): qwen-vl-utils'
  image-list path as of 0.0.13/0.0.14 — each frame Pillow-bicubic to ``smart_resize`` with factor **56**
  and bounds ``[4·56², 16384·56²]`` (``fetch_video`` hands ``fetch_image`` the 28-pixel factor where it
  expects the 14-pixel patch size), the list padded to an even count with its last frame, then the video
  resize above on the stacked frames. 640×480 → 616×504, 1920×1440 → 868×672, 1440×1920 → 672×868.
  qwen-vl-utils ≤ 0.0.11 resized each listed frame with factor 28 in ``[4·28², 16384·28²]`` and stopped
  there (640×480 → 644×476, 1920×1440 → 1932×1428); the official README installs qwen-vl-utils unpinned,
  so which of the two the reported space-aware numbers used is not recorded — a fresh install gets 0.0.14.
* ``"official_train"`` — ``src/qwenvl/data/data_qwen.py::process_video`` with
  ``scripts/training/spatial_mllm_train_demo.sh`` (``video_{min,max}_frames=16``,
  ``video_{min,max}_frame_pixels = 293216 / 324576``, ``video_frame_fps=4``): indices
  ``np.unique(np.linspace(0, total-1, 16, dtype=int))`` (truncation; a shorter video gives every frame
  once, no error); each frame PIL bicubic (the script's ``Qwen2VLImageProcessorModified`` resizes through
  ``transformers.image_transforms.resize``, i.e. Pillow on uint8) to ``smart_resize`` within
  ``[293216, 324576]``, no total-video budget; odd counts padded with the last frame;
  ``second_per_grid_ts = temporal_patch_size / video_frame_fps = 2 / 4 = 0.5``. 640×480 → 644×476,
  1920×1440 → 644×476, 1440×1920 → 476×644.
* ``None`` (default; the tiny presets) — qwen-vl-utils' mp4 rule above with THIS processor's bounds
  (default ``[293216, 324576]``, i.e. the training bounds read through qwen-vl-utils, which agree with both
  official presets for 640×480 video only), ``second_per_grid_ts`` from qwen-vl-utils' sampled fps
  ``n / total_frames · video_fps`` (2.0 for a folder or a frame list), a folder read as qwen-vl-utils ≤
  0.0.11 did (PIL bicubic within the image bounds, no video resize), a frame list resized as a clip.

Any of ``num_frames``, ``min_pixels``, ``max_pixels``, ``total_pixels``, ``second_per_grid_t`` given
explicitly overrides the preset's value. transformers 5.x's video processor skips qwen-vl-utils' per-frame
cap unless ``cap_pixels_per_frame=True`` and derives ``second_per_grid_ts`` from its own metadata (2 / 24
for a tensor without metadata, even with ``fps=2.0``), so the resize and the temporal spacing are done in
this module and the Qwen video processor runs with ``do_resize=False``.

The VGGT frames are ``resized / 255`` (bicubic overshoot can leave values slightly outside [0, 1] in the
torchvision paths, as in the official pipeline, which does the same).

Departures from the official pipeline (tests/test_processing_parity.py checks the rest against
qwen-vl-utils 0.0.14 and transformers' Qwen2.5-VL processor):

1. mp4 files are decoded with PyAV (FFmpeg); the official code uses decord (evaluation: qwen-vl-utils
   picks decord when installed; training: ``decord.VideoReader``). Indices and sizes do not depend on the
   decoder; pixels are identical only where both decoders convert YUV→RGB identically (not checked here).
2. The Qwen patches come from transformers 5.x's ``Qwen2VLVideoProcessor`` (``do_resize=False``, torch
   float32 rescale + normalise). The official code used 4.51.3's slow image processor, whose resize at an
   unchanged size is a no-op (Pillow returns a copy) and whose rescale runs in float64 before float32:
   the pixel values can differ in the last float32 bit (~1e-7).
3. ``num_frames=1`` gives 2 frames here; qwen-vl-utils rounds it to 0 and raises.
4. ``official_train``'s ``smart_resize`` keeps qwen-vl-utils' ``max(28, ·)`` floor; the training script's
   copy raises for a side under 28 pixels instead (no effect on real videos).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["SpatialMLLMProcessor", "VideoInput", "smart_resize", "qwen_video_frame_size", "SPATIAL_MLLM_DEFAULTS",
           "PIXEL_PRESETS"]

IMAGE_FACTOR = 28
FRAME_FACTOR = 2
VIDEO_MIN_PIXELS = 128 * 28 * 28  # qwen-vl-utils' per-frame floor (VIDEO_MIN_TOKEN_NUM · 28²)
VIDEO_MAX_PIXELS = 768 * 28 * 28  # qwen-vl-utils' per-frame ceiling (VIDEO_MAX_TOKEN_NUM · 28²)
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)  # qwen-vl-utils' total-video budget (MODEL_SEQ_LEN 128000)
IMAGE_MIN_PIXELS = 4 * 28 * 28
IMAGE_MAX_PIXELS = 16384 * 28 * 28

# the official training script's bounds (scripts/training/spatial_mllm_train_demo.sh)
SPATIAL_MLLM_DEFAULTS = dict(num_frames=16, min_pixels=293216, max_pixels=324576)

PIXEL_PRESETS: dict[str | None, dict] = {
    # src/evaluation/vsibench/eval_vsibench.py: only nframes → qwen-vl-utils' defaults; no fps → 4.51.3's 2.0
    "official_eval": dict(num_frames=16, min_pixels=VIDEO_MIN_PIXELS, max_pixels=VIDEO_MAX_PIXELS,
                          total_pixels=VIDEO_TOTAL_PIXELS, second_per_grid_t=1.0),
    # src/qwenvl/data/data_qwen.py + spatial_mllm_train_demo.sh: 16 frames, [293216, 324576], fps 4
    "official_train": dict(num_frames=16, min_pixels=293216, max_pixels=324576, total_pixels=None,
                           second_per_grid_t=0.5),
    # default: qwen-vl-utils' mp4 rule with the training bounds, temporal spacing from the sampled fps
    None: dict(num_frames=16, min_pixels=293216, max_pixels=324576, total_pixels=VIDEO_TOTAL_PIXELS,
               second_per_grid_t=None),
}


def smart_resize(height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """Qwen's ``smart_resize``: ``(h, w)`` multiples of ``factor``, area in bounds, aspect ratio kept."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen_video_frame_size(height: int, width: int, nframes: int, min_pixels: int, max_pixels: int,
                          total_pixels: int = VIDEO_TOTAL_PIXELS) -> tuple[int, int]:
    """Resized ``(H, W)`` of a video's frames exactly as qwen-vl-utils' ``fetch_video`` computes it."""
    cap = max(min(VIDEO_MAX_PIXELS, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return smart_resize(height, width, IMAGE_FACTOR, min_pixels=min_pixels, max_pixels=min(max_pixels, cap))


@dataclass
class VideoInput:
    """One video ready for the model: resized frames and where they came from."""

    frames: torch.Tensor  # [T, 3, H, W] float32 in 0..255 (resized, not re-quantised), T even
    sampled_fps: float  # frames per second of the sampled frames (for second_per_grid_ts)
    indices: list[int]  # source frame indices (into the mp4 / folder / list)
    source: str  # path or "<frames>"


def _as_frame_list(frames, source: str) -> list[np.ndarray]:
    if isinstance(frames, torch.Tensor):
        frames = frames.numpy()
    arrs = [np.asarray(f) for f in frames]
    if not arrs:
        raise ValueError(f"video {source}: no frames")
    for i, a in enumerate(arrs):
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"video {source}: frame {i} has shape {a.shape}, expected [H, W, 3] RGB")
        if a.shape != arrs[0].shape:
            raise ValueError(f"video {source}: frame {i} is {a.shape[1]}x{a.shape[0]} (WxH) but frame 0 is "
                             f"{arrs[0].shape[1]}x{arrs[0].shape[0]}: all frames of a video must have one size")
    return arrs


def _pad_to_even(frames: list) -> list:
    """Qwen's temporal patch is 2 frames: an odd count is padded by repeating the last frame."""
    if len(frames) % FRAME_FACTOR:
        frames = frames + [frames[-1]] * (FRAME_FACTOR - len(frames) % FRAME_FACTOR)
    return frames


def _pil_resize(frames: list[np.ndarray], h: int, w: int) -> list[np.ndarray]:
    """Pillow bicubic of uint8 frames to ``(h, w)`` (qwen-vl-utils' ``fetch_image``; the training script's
    image processor), uint8 out."""
    from PIL import Image

    return [np.asarray(Image.fromarray(f).resize((w, h), resample=Image.BICUBIC)) for f in frames]


class SpatialMLLMProcessor:
    """Wraps a ``Qwen2_5_VLProcessor`` (tokenizer + chat template, image and video processors).

    Args:
        qwen_processor: the wrapped processor (``from_pretrained`` of a Qwen2.5-VL / Spatial-MLLM repo, or
            :meth:`build` from a tokenizer).
        num_frames: frames sampled uniformly from an mp4 (16 officially; rounded to a multiple of 2 except
            under ``official_train``).
        min_pixels / max_pixels: per-frame pixel bounds of videos (``official_eval``: qwen-vl-utils'
            100352 / 602112; ``official_train`` and the default: the training script's 293216 / 324576).
        total_pixels: qwen-vl-utils' total-video pixel budget (caps the per-frame size of long videos;
            unused by ``official_train``).
        second_per_grid_t: force this value for every video (``official_eval``: 1.0, ``official_train``:
            0.5); ``"sampled_fps"`` or, without a preset, ``None`` derives it from the sampled fps.
        pixel_preset: ``"official_eval"``, ``"official_train"`` or ``None``: how frames are chosen, resized
            and spaced in time (module docstring); the arguments above, when given, override its values.
    """

    def __init__(self, qwen_processor, num_frames: int | None = None, min_pixels: int | None = None,
                 max_pixels: int | None = None, total_pixels: int | None = None,
                 second_per_grid_t: float | str | None = None, *, pixel_preset: str | None = None):
        if pixel_preset not in PIXEL_PRESETS:
            raise ValueError(f"pixel_preset must be one of {[k for k in PIXEL_PRESETS if k]} or None, "
                             f"got {pixel_preset!r}")
        preset = PIXEL_PRESETS[pixel_preset]
        self.qwen = qwen_processor
        self.tokenizer = qwen_processor.tokenizer
        self.pixel_preset = pixel_preset
        self.num_frames = num_frames if num_frames is not None else preset["num_frames"]
        self.min_pixels = min_pixels if min_pixels is not None else preset["min_pixels"]
        self.max_pixels = max_pixels if max_pixels is not None else preset["max_pixels"]
        self.total_pixels = total_pixels if total_pixels is not None else preset["total_pixels"]
        if second_per_grid_t == "sampled_fps":
            second_per_grid_t = None
        elif second_per_grid_t is None:
            second_per_grid_t = preset["second_per_grid_t"]
        elif isinstance(second_per_grid_t, str) or second_per_grid_t <= 0:
            raise ValueError(f"second_per_grid_t must be a positive number, 'sampled_fps' or None, got "
                             f"{second_per_grid_t!r}")
        self.second_per_grid_t = second_per_grid_t
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        vp = qwen_processor.video_processor
        self.temporal_patch_size = vp.temporal_patch_size
        self.merge_size = vp.merge_size
        ids = self.tokenizer.convert_tokens_to_ids
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id, self.video_token_id = ids(self.image_token), ids(self.video_token)

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def build(cls, tokenizer, **kwargs) -> SpatialMLLMProcessor:
        """From a tokenizer (with Qwen's special tokens and chat template), default Qwen2.5-VL processors."""
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        qwen = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer,
                                   video_processor=Qwen2VLVideoProcessor(), chat_template=tokenizer.chat_template)
        return cls(qwen, **kwargs)

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, **kwargs) -> SpatialMLLMProcessor:
        """Load the Qwen2.5-VL processor files of a model repo / folder (official checkpoints ship them)."""
        from transformers import Qwen2_5_VLProcessor

        hub = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "token") if k in kwargs}
        return cls(Qwen2_5_VLProcessor.from_pretrained(path_or_id, **hub), **kwargs)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.qwen.save_pretrained(folder)

    # ------------------------------------------------------------------------------------------ frame rules
    def uniform_indices(self, total: int, num_frames: int | None = None, source: str = "<frames>") -> list[int]:
        """Source frame indices of uniform sampling under this processor's preset.

        qwen-vl-utils (``official_eval``, default): ``n`` rounded to a multiple of 2, then
        ``torch.linspace(0, total-1, n).round()`` (float32, as qwen-vl-utils); fewer frames: ``ValueError``.
        ``official_train``: ``np.unique(np.linspace(0, total-1, n, dtype=int))``.
        """
        from spatial_mllm.data.video import uniform_frame_indices

        n = num_frames if num_frames is not None else self.num_frames
        if self.pixel_preset == "official_train":
            return [int(i) for i in uniform_frame_indices(total, n, "floor")]  # n ≥ total: every frame once
        n = max(FRAME_FACTOR, round(n / FRAME_FACTOR) * FRAME_FACTOR)  # qwen-vl-utils' smart_nframes
        if total < n:
            raise ValueError(f"video {source}: {total} frames, fewer than the {n} asked for")
        return torch.linspace(0, total - 1, n).round().long().tolist()

    def _resize_clip(self, frames: list[np.ndarray]) -> torch.Tensor:
        """qwen-vl-utils' video resize: the whole clip, torchvision bicubic + antialias, per-frame cap."""
        import torchvision.transforms.functional as TF
        from torchvision.transforms import InterpolationMode

        video = torch.from_numpy(np.stack(_pad_to_even(frames))).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
        H, W = video.shape[-2:]
        h, w = qwen_video_frame_size(H, W, video.shape[0], self.min_pixels, self.max_pixels, self.total_pixels)
        return TF.resize(video, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True).float()

    def _resize_frames(self, frames: list[np.ndarray]) -> torch.Tensor:
        """The training script's rule: each frame Pillow-bicubic to smart_resize in [min, max] pixels."""
        H, W = frames[0].shape[:2]
        h, w = smart_resize(H, W, IMAGE_FACTOR, self.min_pixels, self.max_pixels)
        out = _pad_to_even(_pil_resize(frames, h, w))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()  # [T, 3, h, w]

    def _resize_image_list(self, frames: list[np.ndarray]) -> torch.Tensor:
        """qwen-vl-utils' image-list path: Pillow bicubic per frame to ``smart_resize`` in the image bounds,
        padded to an even count. The default follows qwen-vl-utils ≤ 0.0.11 (factor 28, bounds
        ``[4·28², 16384·28²]``, nothing more); ``official_eval`` follows 0.0.13/0.0.14, which hand
        ``fetch_image`` the 28-pixel factor as its 14-pixel patch size (factor 56, bounds ``[4·56², 16384·56²]``)
        and then apply the video resize to the stacked frames."""
        factor = 2 * IMAGE_FACTOR if self.pixel_preset == "official_eval" else IMAGE_FACTOR
        H, W = frames[0].shape[:2]
        h, w = smart_resize(H, W, factor, 4 * factor**2, 16384 * factor**2)
        out = _pad_to_even(_pil_resize(frames, h, w))
        if self.pixel_preset == "official_eval":
            return self._resize_clip(out)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()

    def _resize_selected(self, frames: list[np.ndarray]) -> torch.Tensor:
        """Frames the caller chose (folder, frame list, explicit indices) under this preset's rule."""
        if self.pixel_preset == "official_train":
            return self._resize_frames(frames)
        if self.pixel_preset == "official_eval":
            return self._resize_image_list(frames)
        return self._resize_clip(frames)

    # ------------------------------------------------------------------------------------------ videos
    def load_video(self, video, frame_indices=None, num_frames: int | None = None, fps: float = 2.0) -> VideoInput:
        """Read and resize one video.

        Args:
            video: mp4 path, folder of frame images, a list of ``[H, W, 3]`` uint8 arrays or ``[T, H, W, 3]``
                array, or a :class:`VideoInput` (returned as is).
            frame_indices: explicit source frame indices (e.g. from the space-aware sampler).
            num_frames: frames to sample uniformly (default ``self.num_frames``; a folder or a frame list
                is used whole unless this or ``frame_indices`` is given).
            fps: frame rate assumed for a frame list / folder (qwen-vl-utils uses 2.0).
        """
        if isinstance(video, VideoInput):
            return video
        if isinstance(video, (str, os.PathLike)):
            from spatial_mllm.data.video import read_frames_folder, read_video, video_info

            p = Path(video)
            if p.is_dir():
                n_req = num_frames
                # read_frames_folder names the file of an unreadable frame or of a frame of another size
                clip = read_frames_folder(p, None if frame_indices is None and n_req is None else n_req,
                                          indices=frame_indices, fps=fps)
                if n_req is not None and frame_indices is None and clip.total_frames < n_req:
                    raise ValueError(f"video {p}: the folder has {clip.total_frames} frames, fewer than the "
                                     f"{n_req} asked for")
                frames = _as_frame_list(clip.frames, str(p))
                if self.pixel_preset is None:  # qwen-vl-utils ≤ 0.0.11's image list
                    resized = self._resize_image_list(frames)
                else:
                    resized = self._resize_selected(frames)
                return VideoInput(resized, fps, [int(i) for i in clip.indices], str(p))
            if not p.is_file():
                raise FileNotFoundError(f"video file not found: {p}")
            if frame_indices is None:
                total, _ = video_info(p)
                idx = self.uniform_indices(total, num_frames, str(p))
            else:
                idx = [int(i) for i in frame_indices]
            clip = read_video(p, indices=idx)
            frames = _as_frame_list(clip.frames, str(p))
            sampled_fps = len(frames) / max(clip.total_frames, 1e-6) * clip.fps  # qwen-vl-utils' sample_fps
            if frame_indices is not None:
                resized = self._resize_selected(frames)
            elif self.pixel_preset == "official_train":
                resized = self._resize_frames(frames)
            else:
                resized = self._resize_clip(frames)
            return VideoInput(resized, sampled_fps, [int(i) for i in clip.indices], str(p))
        frames = _as_frame_list(video, "<frames>")
        if frame_indices is not None:
            idx = [int(i) for i in frame_indices]
            resized = self._resize_selected([frames[i] for i in idx])
        elif num_frames is not None:
            if self.pixel_preset is None:
                if len(frames) < num_frames:
                    raise ValueError(f"video <frames>: {len(frames)} frames, fewer than the {num_frames} "
                                     "asked for")
                from spatial_mllm.data.video import uniform_frame_indices

                idx = uniform_frame_indices(len(frames), num_frames).tolist()
                resized = self._resize_clip([frames[i] for i in idx])
            else:  # a decoded clip sampled like an mp4
                idx = self.uniform_indices(len(frames), num_frames)
                sel = [frames[i] for i in idx]
                resized = self._resize_frames(sel) if self.pixel_preset == "official_train" else self._resize_clip(sel)
        else:
            idx = list(range(len(frames)))
            resized = self._resize_selected(frames)
        return VideoInput(resized, fps, idx, "<frames>")

    def load_image(self, image) -> torch.Tensor:
        """An image (path, PIL image, ``[H, W, 3]`` uint8) → ``[3, H', W']`` float 0..255, as qwen-vl-utils'
        ``fetch_image`` (PIL bicubic to ``smart_resize`` within ``[4·28², 16384·28²]`` pixels)."""
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as im:
                image = np.asarray(im.convert("RGB"))
        elif isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        image = np.asarray(image)
        h, w = smart_resize(image.shape[0], image.shape[1], IMAGE_FACTOR, IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS)
        return torch.from_numpy(_pil_resize([image], h, w)[0]).permute(2, 0, 1).float()

    # ------------------------------------------------------------------------------------------ prompts
    def build_prompt(self, question: str, num_videos: int = 1, num_images: int = 0) -> str:
        """Chat-template text of one user turn: the images, the videos, then the question (official order)."""
        content = [{"type": "image"}] * num_images + [{"type": "video"}] * num_videos + [{"type": "text", "text": question}]
        return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                  add_generation_prompt=True)

    # ------------------------------------------------------------------------------------------ call
    def __call__(self, text: str | list[str], videos=None, images=None, *, frame_indices=None,
                 padding: bool = True, return_tensors: str = "pt"):
        """Tokenise prompts (each ``<|video_pad|>`` / ``<|image_pad|>`` placeholder expanded to the video's /
        image's number of LLM tokens) and preprocess the visual inputs in order of appearance.

        Args:
            text: one prompt or a batch; placeholders are consumed in order across the batch.
            videos: list of videos (anything :meth:`load_video` accepts).
            images: list of images (anything :meth:`load_image` accepts).
            frame_indices: optional list (one entry per video, ``None`` allowed) of source frame indices.
        """
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text)
        data: dict = {}
        video_tokens: list[int] = []
        image_tokens: list[int] = []
        if videos:
            fi = frame_indices or [None] * len(videos)
            loaded = [self.load_video(v, frame_indices=i) for v, i in zip(videos, fi)]
            pv, grids, spts = [], [], []
            for v in loaded:
                out = self.qwen.video_processor(videos=[v.frames], do_resize=False, do_sample_frames=False,
                                                cap_pixels_per_frame=False, return_tensors="pt")
                pv.append(out["pixel_values_videos"])
                grids.append(out["video_grid_thw"])
                spts.append(self.second_per_grid_t if self.second_per_grid_t is not None  # a preset's value
                            else self.temporal_patch_size / v.sampled_fps)  # qwen-vl-utils' sampled fps
            data["pixel_values_videos"] = torch.cat(pv)
            data["video_grid_thw"] = torch.cat(grids)
            data["second_per_grid_ts"] = torch.tensor(spts, dtype=torch.float32)
            data["spatial_pixel_values_videos"] = [v.frames / 255.0 for v in loaded]
            video_tokens = [int(g.prod()) // self.merge_size**2 for g in data["video_grid_thw"]]
        if images:
            loaded_img = [self.load_image(im) for im in images]
            pv, grids = [], []
            for im in loaded_img:
                out = self.qwen.image_processor(images=[im], do_resize=False, return_tensors="pt")
                pv.append(out["pixel_values"])
                grids.append(out["image_grid_thw"])
            data["pixel_values"] = torch.cat(pv)
            data["image_grid_thw"] = torch.cat(grids)
            data["spatial_pixel_values_images"] = [im / 255.0 for im in loaded_img]
            image_tokens = [int(g.prod()) // self.merge_size**2 for g in data["image_grid_thw"]]
        texts = self._expand(texts, self.video_token, video_tokens, "video")
        texts = self._expand(texts, self.image_token, image_tokens, "image")
        enc = self.tokenizer(texts, padding=padding, padding_side="left", return_tensors=return_tensors)
        ids = enc["input_ids"]
        mm = torch.zeros_like(ids, dtype=torch.int32)
        mm[ids == self.image_token_id] = 1
        mm[ids == self.video_token_id] = 2
        spatial = {k: data.pop(k) for k in ("spatial_pixel_values_videos", "spatial_pixel_values_images") if k in data}
        feats = BatchFeature({**enc, **data, "mm_token_type_ids": mm}, tensor_type=return_tensors)
        feats.update(spatial)  # lists of differently-sized tensors stay lists
        return feats

    @staticmethod
    def _expand(texts: list[str], token: str, counts: list[int], what: str) -> list[str]:
        marker = "\0SPATIAL_MLLM_PLACEHOLDER\0"
        n_found = sum(t.count(token) for t in texts)
        if n_found != len(counts):
            raise ValueError(f"the prompts hold {n_found} {token} placeholders but {len(counts)} {what}s were given")
        it = iter(counts)
        out = []
        for t in texts:
            while token in t:
                t = t.replace(token, marker * next(it), 1)
            out.append(t.replace(marker, token))
        return out

    def batch_decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)
