"""`SpatialMLLMProcessor`: Qwen2.5-VL's processor + the [0, 1] frames for the spatial encoder.

Inputs per video: an mp4 path (uniform sampling of ``num_frames``, or given frame indices), a folder of
frames (the official ``sa_sampling/<video>/`` layout: the selected frames as images), or a list/array of
``[H, W, 3]`` uint8 frames. Outputs (a ``BatchFeature``): ``input_ids``, ``attention_mask`` (left padding),
``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``, ``mm_token_type_ids`` and
``spatial_pixel_values_videos`` (list of ``[T, 3, H', W']`` float in [0, 1], the SAME resized frames the
ViT sees); the same for images (``pixel_values``, ``image_grid_thw``, ``spatial_pixel_values_images``).

Frame sizes follow what the official evaluation fed the model. It reads videos with qwen-vl-utils
(``fetch_video``): ``nframes`` rounded to a multiple of 2; indices ``linspace(0, total-1, n).round()``;
per-frame pixel bounds ``[min_pixels, max_pixels]`` (Spatial-MLLM: [293216, 324576]) further capped by the
total-video budget ``max(min(768·28², total_pixels / n · 2), 1.05 · min_pixels)``; ``smart_resize`` to
multiples of 28 keeping the aspect ratio; torchvision bicubic resize with antialias, kept as float (not
re-quantised). So a 640×480 video becomes 644×476 (W×H) = 46×34 patches = 23×17 tokens per 2 frames.
transformers 5.24's video processor skips that per-frame cap unless ``cap_pixels_per_frame=True``; here
the resize is done in this module and the Qwen video processor runs with ``do_resize=False``. A folder of
frames follows qwen-vl-utils' image-list path: each image is resized with PIL bicubic to ``smart_resize``
within the image bounds ``[4·28², 16384·28²]``, and an odd count is padded by repeating the last frame.

Temporal positions: ``second_per_grid_ts = temporal_patch_size / sampled_fps`` with qwen-vl-utils'
``sampled_fps = n / total_frames · video_fps`` (mp4), 2.0 for a folder or a frame list. Note: the official
VSI-Bench script passes no fps to the processor, so transformers 4.51 used its default fps 2.0
(``second_per_grid_ts = 1.0``) for every video; pass ``second_per_grid_t=1.0`` to reproduce that.

The VGGT frames are ``resized / 255`` (bicubic overshoot can leave values slightly outside [0, 1], as in
the official pipeline, which does the same).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["SpatialMLLMProcessor", "VideoInput", "smart_resize", "qwen_video_frame_size", "SPATIAL_MLLM_DEFAULTS"]

IMAGE_FACTOR = 28
FRAME_FACTOR = 2
VIDEO_MAX_PIXELS = 768 * 28 * 28  # qwen-vl-utils' per-frame ceiling
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)  # qwen-vl-utils' total-video budget
IMAGE_MIN_PIXELS = 4 * 28 * 28
IMAGE_MAX_PIXELS = 16384 * 28 * 28

SPATIAL_MLLM_DEFAULTS = dict(num_frames=16, min_pixels=293216, max_pixels=324576)


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



class SpatialMLLMProcessor:
    """Wraps a ``Qwen2_5_VLProcessor`` (tokenizer + chat template, image and video processors).

    Args:
        qwen_processor: the wrapped processor (``from_pretrained`` of a Qwen2.5-VL / Spatial-MLLM repo, or
            :meth:`build` from a tokenizer).
        num_frames: frames sampled uniformly from an mp4 (16 officially; rounded to a multiple of 2).
        min_pixels / max_pixels: per-frame pixel bounds of videos (official: 293216 / 324576).
        total_pixels: qwen-vl-utils' total-video pixel budget (caps the per-frame size of long videos).
        second_per_grid_t: force this value for every video (1.0 = the official VSI-Bench script);
            ``None`` derives it from the sampled fps.
    """

    def __init__(self, qwen_processor, num_frames: int = 16, min_pixels: int = 293216, max_pixels: int = 324576,
                 total_pixels: int = VIDEO_TOTAL_PIXELS, second_per_grid_t: float | None = None):
        self.qwen = qwen_processor
        self.tokenizer = qwen_processor.tokenizer
        self.num_frames = num_frames
        self.min_pixels, self.max_pixels, self.total_pixels = min_pixels, max_pixels, total_pixels
        self.second_per_grid_t = second_per_grid_t
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

    # ------------------------------------------------------------------------------------------ videos
    def _resize_video(self, frames: list[np.ndarray], source: str) -> torch.Tensor:
        import torchvision.transforms.functional as TF
        from torchvision.transforms import InterpolationMode

        if len(frames) % FRAME_FACTOR:  # Qwen pads to the temporal patch by repeating the last frame
            frames = frames + [frames[-1]] * (FRAME_FACTOR - len(frames) % FRAME_FACTOR)
        video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # [T, 3, H, W] uint8
        H, W = video.shape[-2:]
        h, w = qwen_video_frame_size(H, W, len(frames), self.min_pixels, self.max_pixels, self.total_pixels)
        return TF.resize(video, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True).float()

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
                resized = self._resize_image_list(frames, str(p))
                return VideoInput(resized, fps, [int(i) for i in clip.indices], str(p))
            if not p.is_file():
                raise FileNotFoundError(f"video file not found: {p}")
            n = num_frames if num_frames is not None else self.num_frames
            if frame_indices is None:
                n = max(FRAME_FACTOR, round(n / FRAME_FACTOR) * FRAME_FACTOR)  # qwen-vl-utils' smart_nframes
                total, _ = video_info(p)
                if total < n:
                    raise ValueError(f"video {p}: {total} frames, fewer than the {n} asked for")
            clip = read_video(p, num_frames=None if frame_indices is not None else n, indices=frame_indices)
            frames = _as_frame_list(clip.frames, str(p))
            sampled_fps = len(frames) / max(clip.total_frames, 1e-6) * clip.fps
            return VideoInput(self._resize_video(frames, str(p)), sampled_fps, [int(i) for i in clip.indices], str(p))
        frames = _as_frame_list(video, "<frames>")
        idx = list(range(len(frames)))
        if frame_indices is not None:
            idx = [int(i) for i in frame_indices]
        elif num_frames is not None:
            if len(frames) < num_frames:
                raise ValueError(f"video <frames>: {len(frames)} frames, fewer than the {num_frames} asked for")
            from spatial_mllm.data.video import uniform_frame_indices

            idx = uniform_frame_indices(len(frames), num_frames).tolist()
        return VideoInput(self._resize_video([frames[i] for i in idx], "<frames>"), fps, idx, "<frames>")

    def _resize_image_list(self, frames: list[np.ndarray], source: str) -> torch.Tensor:
        """qwen-vl-utils' image-list path: PIL bicubic per frame to smart_resize in the image bounds."""
        from PIL import Image

        H, W = frames[0].shape[:2]
        h, w = smart_resize(H, W, IMAGE_FACTOR, IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS)
        out = [np.asarray(Image.fromarray(f).resize((w, h), resample=Image.BICUBIC)) for f in frames]
        if len(out) % FRAME_FACTOR:
            out += [out[-1]] * (FRAME_FACTOR - len(out) % FRAME_FACTOR)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()

    def load_image(self, image) -> torch.Tensor:
        """An image (path, PIL image, ``[H, W, 3]`` uint8) → ``[3, H', W']`` float 0..255, as qwen-vl-utils'
        ``fetch_image`` (PIL bicubic to ``smart_resize`` within ``[4·28², 16384·28²]`` pixels)."""
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as im:
                image = np.asarray(im.convert("RGB"))
        elif isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        return self._resize_image_list([np.asarray(image)], "<image>")[0]

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
                spts.append(self.second_per_grid_t if self.second_per_grid_t is not None
                            else self.temporal_patch_size / v.sampled_fps)
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
