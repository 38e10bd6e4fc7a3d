"""Frame samplers behind one interface: ``uniform``, ``random`` and ``space_aware`` (the paper's §3.2).

``sampler.sample(video, num_frames) -> SampledFrames``: sorted frame indices into the source video (always
exactly ``num_frames`` of them, or a ``ValueError`` when the video has fewer frames). ``video`` is a path
(an mp4 or a folder of frames, read with :mod:`spatial_mllm.data.video`), a
:class:`~spatial_mllm.data.video.VideoClip`, or a ``uint8 [T, H, W, 3]`` array.

:class:`SpaceAwareSampler`: Nm = min(128, T) uniform candidates → VGGT point head (``world_points``,
``world_points_conf``) → :func:`spatial_mllm.sampling.select_frames` (official confidence rule, relative
voxels, greedy max coverage) → Nk indices. It imports :mod:`spatial_mllm.models.vggt` lazily (inside
the class): DESIGN's one-way flow puts sampling above models, and only this sampler needs the model.
VGGT runs *lean*: the aggregator keeps only the four layers the point head reads, in bf16 under CUDA
autocast, and the DPT point head runs on ``frames_chunk_size`` frames at a time; camera and depth heads
are never run. Results are cached per video (json) and the selected frames can be exported in the
official folder layout so evaluation can reuse them.

Portrait videos: the script turns every frame taller than wide 90° clockwise before VGGT
(``img.rotate(-90, expand=True)`` in its ``load_and_preprocess_images``), so VGGT sees the whole frame as a
landscape image (1440×1920 → 518×392); ``portrait="rotate"`` (default) does the same. ``portrait="crop"``
keeps VGGT's own ``load_fn`` rule, which centre-crops a portrait frame to 518×518 (a quarter of a 3:4 frame
lost) — an option, not the official rule. Only VGGT's input turns; the indices and the exported frames are
the source video's.

Departures from the official ``src/sampling/sa_sampling.py``:

1. Exactly ``num_frames`` frames always: when no frame adds coverage the greedy fills with the frame
   farthest in time from those chosen (the official loop stops and returns fewer frames, which then
   crashes evaluation). Filled frames are listed in the result and warned about.
2. Selection runs on the tensors' device, vectorised (no per-frame ``torch.unique``, no Python sets);
   the voxel ids and the picks are the official ones (same float32 arithmetic, same lowest-index ties).
3. VGGT keeps 4 of 24 aggregator layers in bf16 (the script keeps all 24 in fp32, ≈ 26 GB at 128
   frames) and runs only the point head; the script runs all heads.
4. The input images stay float32 into autocast (the script casts them to bf16 first; the first conv
   runs in bf16 either way under autocast, so only the input rounding differs).
5. Candidates come straight from the decoder in temporal order; the script writes them as
   ``frame_{idx:04d}.png`` and reads them back sorted by name, which misorders videos of ≥ 10 000
   frames.
6. Bad input is an error with a reason (NaN/inf points are dropped and counted; an empty confidence
   mask, a degenerate extent, or fewer frames than requested raise ``ValueError``); the script crashes
   or returns a short list.
7. Candidate indices use ``np.linspace(0, T - 1, Nm).astype(int)`` (``candidate_rounding="floor"``,
   the script's rule); ``"round"`` gives Qwen's rounding.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spatial_mllm.sampling.coverage import CoverageOptions
from spatial_mllm.sampling.select import select_frames_detailed

__all__ = [
    "SampledFrames",
    "FrameSampler",
    "UniformSampler",
    "RandomSampler",
    "SpaceAwareSampler",
    "SpaceAwareSamplerConfig",
    "make_sampler",
    "export_frames",
]


@dataclass
class SampledFrames:
    """Result of a sampler: ``indices`` (sorted, into the source video) and how they were found."""

    indices: list[int]
    method: str
    total_frames: int
    candidates: list[int] | None = None  # the Nm candidate frame indices (space-aware)
    selected_candidates: list[int] | None = None  # indices into ``candidates`` (sorted)
    gains: list[int] | None = None  # new voxels per greedy pick, in selection order
    filled: list[int] | None = None  # candidate indices added by the fill rule
    covered: int | None = None  # voxels covered by the selection
    total_voxels: int | None = None  # voxels covered by all candidates
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_frames(video, indices=None):
    """(frames [N, H, W, 3] uint8 at ``indices`` or all, total frame count, name)."""
    from spatial_mllm.data.video import VideoClip, read_video

    if isinstance(video, (str, os.PathLike)):
        p = Path(video)
        if indices is None:
            clip = read_video(p)
            return clip.frames, clip.total_frames, p.stem
        clip = read_video(p, indices=np.asarray(indices))
        return clip.frames, clip.total_frames, p.stem
    if isinstance(video, VideoClip):
        frames = video.frames
        name = Path(video.path).stem if video.path else "video"
    else:
        frames = np.asarray(video)
        name = "video"
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    total = frames.shape[0]
    return (frames if indices is None else frames[np.asarray(indices)]), total, name


def _total_frames(video) -> tuple[int, str]:
    from spatial_mllm.data.video import VideoClip, read_frames_folder, video_info

    if isinstance(video, (str, os.PathLike)):
        p = Path(video)
        if p.is_dir():
            return read_frames_folder(p).total_frames, p.stem
        return video_info(p)[0], p.stem
    if isinstance(video, VideoClip):
        return video.frames.shape[0], Path(video.path).stem if video.path else "video"
    return int(np.asarray(video).shape[0]), "video"


def _check_count(num_frames: int, available: int, what: str) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames > available:
        raise ValueError(f"{num_frames} frames requested but only {available} {what}; no short list is "
                         "returned silently")


class FrameSampler:
    """Interface: ``sample(video, num_frames) -> SampledFrames``; ``name`` identifies the method."""

    name = "base"

    def sample(self, video, num_frames: int) -> SampledFrames:  # pragma: no cover - interface
        raise NotImplementedError


class UniformSampler(FrameSampler):
    """Evenly spaced frames, first and last included (``rounding``: ``"round"`` = Qwen2.5-VL / Spatial-MLLM
    evaluation, ``"floor"`` = lmms-eval)."""

    name = "uniform"

    def __init__(self, rounding: str = "round"):
        self.rounding = rounding

    def sample(self, video, num_frames: int) -> SampledFrames:
        from spatial_mllm.data.video import uniform_frame_indices

        total, _ = _total_frames(video)
        _check_count(num_frames, total, "frames in the video")
        idx = uniform_frame_indices(total, num_frames, self.rounding).tolist()
        return SampledFrames(indices=[int(i) for i in idx], method=self.name, total_frames=total)


class RandomSampler(FrameSampler):
    """``num_frames`` distinct frames drawn uniformly without replacement (``seed`` fixes them), sorted."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def sample(self, video, num_frames: int) -> SampledFrames:
        total, _ = _total_frames(video)
        _check_count(num_frames, total, "frames in the video")
        rng = np.random.default_rng(self.seed)
        idx = sorted(int(i) for i in rng.choice(total, size=num_frames, replace=False))
        return SampledFrames(indices=idx, method=self.name, total_frames=total)


def export_frames(frames: np.ndarray, indices: list[int], out_root: str | os.PathLike, video_name: str,
                  meta: dict[str, Any] | None = None) -> Path:
    """Write the selected frames in the official layout, for evaluation to reuse:
    ``<out_root>/<video_name>/<video_name>_frame_{idx:06d}.png`` and ``selected_frames.json``
    (``scene_name``, ``selected_frames``, ``num_frames``, plus ``meta``). Frames of an earlier export of the
    same video are removed first, so the folder always holds one selection.

    Args:
        frames: ``[len(indices), H, W, 3]`` uint8, the frames at ``indices`` (source-video numbering).
    """
    from PIL import Image

    out = Path(out_root) / video_name
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{video_name}_frame_*.png"):  # an earlier selection of this video
        stale.unlink()
    for img, idx in zip(frames, indices):
        Image.fromarray(np.asarray(img)).save(out / f"{video_name}_frame_{int(idx):06d}.png")
    record = {"scene_name": video_name, "selected_frames": [int(i) for i in indices], "num_frames": len(indices)}
    record.update(meta or {})
    (out / "selected_frames.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


@dataclass
class SpaceAwareSamplerConfig:
    """Settings of :class:`SpaceAwareSampler` (defaults: the paper / official script)."""

    num_candidates: int = field(default=128, metadata={"help": "Nm: uniform candidates fed to VGGT (128)"})
    candidate_rounding: str = field(default="floor", metadata={"help": (
        "'floor' = np.linspace(..., dtype=int) as the official script; 'round' = Qwen's rounding")})
    frames_chunk_size: int = field(default=8, metadata={"help": "frames per DPT point-head chunk (memory only)"})
    full_layers: bool = field(default=False, metadata={"help": (
        "keep all aggregator layers in fp32 like the reference (for the memory comparison only)")})
    preprocess_mode: str = field(default="crop", metadata={"help": "VGGT preprocessing: 'crop' (518 wide) or 'pad'"})
    portrait: str = field(default="rotate", metadata={"help": (
        "frames taller than wide: 'rotate' = 90° clockwise before VGGT (the official sa_sampling.py); "
        "'crop' = VGGT load_fn's centre crop to 518×518")})
    target_size: int = field(default=518, metadata={"help": "VGGT input width (pixels)"})
    greedy_method: str = field(default="auto", metadata={"help": "'auto' | 'lazy' | 'dense' greedy evaluation"})

    def __post_init__(self):
        if self.portrait not in ("rotate", "crop"):
            raise ValueError(f"portrait must be 'rotate' (the official rule) or 'crop', got {self.portrait!r}")


class SpaceAwareSampler(FrameSampler):
    """Space-aware frame sampling with VGGT point maps (see the module docstring for the departures).

    Args:
        model: a :class:`spatial_mllm.models.vggt.VGGT` with a point head (any other heads are ignored);
            ``None`` builds one on first use: ``VGGT.from_pretrained(model_path, enable_camera=False,
            enable_depth=False)`` or, with ``vggt_config``, a random-init ``VGGT(vggt_config)``.
        model_path: hub id or local folder of the checkpoint (default ``facebook/VGGT-1B``).
        vggt_config: a :class:`~spatial_mllm.models.vggt.VGGTConfig` for a random-init model (tests, tiny).
        device: where VGGT and the selection run (default: CUDA when available).
        amp_dtype: autocast dtype on CUDA (bf16, as the script); CPU runs in float32.
        coverage: :class:`CoverageOptions` (default: the official rule).
        config: :class:`SpaceAwareSamplerConfig`.
        cache_dir: per-video json cache of the selections (``<cache_dir>/<video>.json``); None = off.
        export_dir: when set, selected frames are written to ``<export_dir>/sa_sampling/<video>/``.
    """

    name = "space_aware"

    def __init__(self, model=None, *, model_path: str = "facebook/VGGT-1B", vggt_config=None,
                 device: str | torch.device | None = None, amp_dtype: torch.dtype = torch.bfloat16,
                 coverage: CoverageOptions | None = None, config: SpaceAwareSamplerConfig | None = None,
                 cache_dir: str | os.PathLike | None = None, export_dir: str | os.PathLike | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model
        self.model_path = model_path
        self.vggt_config = vggt_config
        self.amp_dtype = amp_dtype
        self.coverage = coverage or CoverageOptions()
        self.config = config or SpaceAwareSamplerConfig()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.export_dir = Path(export_dir) if export_dir is not None else None

    # ---- model ---------------------------------------------------------------------------------------
    def _model(self):
        if self.model is None:
            from spatial_mllm.models.vggt import VGGT  # lazy: sampling sits above models in DESIGN's flow

            if self.vggt_config is not None:
                cfg = copy.deepcopy(self.vggt_config)  # lean: the point head only
                cfg.enable_camera, cfg.enable_depth, cfg.enable_point = False, False, True
                self.model = VGGT(cfg)
            else:
                self.model = VGGT.from_pretrained(self.model_path, enable_camera=False, enable_depth=False)
        self.model.to(self.device).eval()
        if getattr(self.model, "point_head", None) is None:
            raise ValueError("SpaceAwareSampler needs a VGGT with a point head (enable_point=True)")
        return self.model

    @torch.no_grad()
    def point_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VGGT point head on preprocessed frames.

        Args:
            images: ``[S, 3, H, W]`` float in [0, 1] (VGGT preprocessing), H, W multiples of 14.
        Returns:
            ``world_points [S, H, W, 3]`` (frame 0's camera frame, VGGT's normalised scale) and
            ``world_points_conf [S, H, W]`` (≥ 1), float32 on ``self.device``.
        """
        model = self._model()
        images = images.to(self.device)
        H, W = images.shape[-2:]
        cuda = self.device.type == "cuda"
        keep = None if self.config.full_layers else list(model.config.dpt_intermediate_layer_idx)
        out_dtype = None if self.config.full_layers else "auto"  # None: the stream's fp32, like the reference
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=cuda):
            layers, _ = model.aggregator(images[None], keep_layers=keep, output_dtype=out_dtype)
        with torch.autocast(device_type=self.device.type, enabled=False):
            pts, conf = model.point_head(layers, (H, W), self.config.frames_chunk_size)
        return pts[0].float(), conf[0].float()

    def preprocess(self, frames) -> torch.Tensor:
        """Candidate frames (uint8 ``[H, W, 3]`` each) → VGGT input ``[N, 3, h, w]`` in [0, 1]: portrait frames
        turned or cropped per ``config.portrait``, then ``config.preprocess_mode`` at ``config.target_size``."""
        from spatial_mllm.models.vggt.preprocess import load_and_preprocess_images

        return load_and_preprocess_images(list(frames), self.config.preprocess_mode, self.config.target_size,
                                          rotate_portrait=self.config.portrait == "rotate")

    # ---- cache ---------------------------------------------------------------------------------------
    def _cache_key(self, num_frames: int) -> str:
        model = self.model_path if (self.model is None and self.vggt_config is None) else "custom"
        desc = json.dumps({"k": num_frames, "cfg": asdict(self.config), "cov": asdict(self.coverage),
                           "model": model}, sort_keys=True)
        return f"k{num_frames}-" + hashlib.sha1(desc.encode()).hexdigest()[:12]

    def _cache_read(self, name: str, key: str) -> SampledFrames | None:
        if self.cache_dir is None:
            return None
        f = self.cache_dir / f"{name}.json"
        if not f.is_file():
            return None
        entry = json.loads(f.read_text()).get(key)
        if entry is None:
            return None
        return SampledFrames(**{**entry, "cached": True})

    def _cache_write(self, name: str, key: str, res: SampledFrames) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        f = self.cache_dir / f"{name}.json"
        data = json.loads(f.read_text()) if f.is_file() else {}
        data[key] = {**res.to_dict(), "cached": False}
        tmp = f.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(f)

    # ---- sampling ------------------------------------------------------------------------------------
    def sample(self, video, num_frames: int, name: str | None = None) -> SampledFrames:
        """Select ``num_frames`` frames of ``video`` (path, VideoClip or uint8 ``[T, H, W, 3]``).

        ``name`` names the video in the cache and export (default: the file's stem).
        """
        from spatial_mllm.data.video import uniform_frame_indices

        total, default_name = _total_frames(video)
        name = name or default_name
        key = self._cache_key(num_frames)
        hit = self._cache_read(name, key)
        if hit is not None and hit.total_frames == total:
            return hit
        cand = uniform_frame_indices(total, min(self.config.num_candidates, total),
                                     self.config.candidate_rounding).tolist()
        _check_count(num_frames, len(cand), "candidate frames")
        frames, _, _ = _as_frames(video, cand)  # [Nm, H, W, 3] uint8
        images = self.preprocess(frames)  # [Nm, 3, h, w]
        pts, conf = self.point_maps(images)
        sel = select_frames_detailed(pts, conf, num_frames, method=self.config.greedy_method,
                                     options=self.coverage)
        res = SampledFrames(
            indices=[int(cand[i]) for i in sel.indices], method=self.name, total_frames=total,
            candidates=[int(c) for c in cand], selected_candidates=sel.indices, gains=sel.greedy.gains,
            filled=sel.greedy.filled, covered=sel.greedy.covered, total_voxels=sel.greedy.total)
        self._cache_write(name, key, res)
        if self.export_dir is not None:
            pos = {c: i for i, c in enumerate(cand)}
            export_frames(frames[[pos[i] for i in res.indices]], res.indices, self.export_dir / "sa_sampling",
                          name, {"selected_prediction_indices": sel.indices, "method": self.name})
        return res


def make_sampler(name: str, **kwargs) -> FrameSampler:
    """``"uniform"`` | ``"random"`` | ``"space_aware"`` → a sampler (kwargs go to its constructor)."""
    table = {"uniform": UniformSampler, "random": RandomSampler, "space_aware": SpaceAwareSampler}
    if name not in table:
        raise ValueError(f"unknown sampler {name!r}; choose from {sorted(table)}")
    return table[name](**kwargs)
