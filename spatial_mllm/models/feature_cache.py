"""Per-video visual features (ViT + connector(VGGT)), computed once and reused: in memory and on disk.

:class:`VisualFeatureCache` keeps the :class:`~spatial_mllm.models.modeling.SpatialFusedOutput` of a video —
what :meth:`SpatialMLLMForConditionalGeneration.encode_visual_inputs` returns, the LLM's whole visual input —
keyed by a SHA-256 of

* the video's CONTENT (the bytes of an mp4 file or of a folder's frame files, or the frames in memory; never
  its path or modification time),
* the frame choice and the processor settings (``frame_indices``, ``num_frames``, ``pixel_preset``, pixel
  bounds, ``second_per_grid_t``) and the resulting ``video_grid_thw``,
* the model's visual weights: a fingerprint of every tensor of the ViT (merger included), VGGT and the
  connector, and their dtype/device-independent values. It is recomputed whenever any of these parameters was
  modified in place since (an optimizer step bumps ``tensor._version``), so trained weights never hit features
  of the old ones.

So a second run of an evaluation, an ablation that varies only the prompt, or GRPO epochs over the same videos
with frozen encoders skip the encoders; a changed model, setting or video is a miss (tested). On disk
(``cache_dir``): one safetensors file per key (the features in the model's dtype + the grid), written
atomically (temp file + rename); a corrupt file raises an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

__all__ = ["VisualFeatureCache", "video_content_hash"]


def video_content_hash(video) -> str:
    """SHA-256 of a video's content: an mp4 file's bytes, a folder's frame files (names + bytes, sorted), or
    in-memory frames (shape, dtype and bytes)."""
    h = hashlib.sha256()
    if isinstance(video, (str, os.PathLike)):
        p = Path(video)
        files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
        if not files:
            raise FileNotFoundError(f"video {p}: no files to hash")
        for f in files:
            h.update(f.name.encode() if p.is_dir() else b"")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        return h.hexdigest()
    frames = getattr(video, "frames", video)  # a VideoInput or frames
    arr = frames.numpy() if isinstance(frames, torch.Tensor) else np.stack([np.asarray(f) for f in frames])
    h.update(json.dumps([list(arr.shape), str(arr.dtype)]).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


class VisualFeatureCache:
    """Fused visual features per (video content, frame choice, processor settings, visual weights).

    Args:
        model: the :class:`~spatial_mllm.models.modeling.SpatialMLLMForConditionalGeneration` whose features
            are cached.
        cache_dir: folder for safetensors files (None: memory only).
        memory_items: features kept in memory (least recently used dropped first).
    """

    def __init__(self, model, cache_dir: str | os.PathLike | None = None, memory_items: int = 32):
        self.model = model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.memory_items = memory_items
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._fingerprint: str | None = None
        self._versions: tuple | None = None
        self.hits = self.misses = 0

    # ---- keys ------------------------------------------------------------------------------------------
    def _visual_params(self) -> list[tuple[str, torch.Tensor]]:
        m = self.model
        parts = [("visual", m.model.visual), ("spatial_encoder", m.spatial_encoder), ("connector", m.connector)]
        return [(f"{name}.{k}", t) for name, mod in parts if mod is not None
                for k, t in sorted(mod.state_dict(keep_vars=True).items())]

    def fingerprint(self) -> str:
        """SHA-256 of the visual weights (recomputed when a parameter changed in place since the last one)."""
        params = self._visual_params()
        versions = tuple(t._version for _, t in params)
        if self._fingerprint is None or versions != self._versions:
            h = hashlib.sha256()
            for name, t in params:
                h.update(name.encode())
                h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._fingerprint, self._versions = h.hexdigest(), versions
        return self._fingerprint

    def key(self, video, video_grid_thw: torch.Tensor, settings: dict) -> str:
        """The cache key of one video's features (module docstring)."""
        blob = json.dumps({"video": video_content_hash(video), "grid": video_grid_thw.tolist(),
                           "settings": settings, "weights": self.fingerprint()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    # ---- lookup ----------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        """``[tokens, hidden]`` features of ``key`` or None."""
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.cache_dir is not None and self._path(key).is_file():
            from safetensors.torch import load_file

            try:
                feats = load_file(str(self._path(key)))["features"]
            except Exception as e:  # a truncated or foreign file: say which
                raise ValueError(f"feature cache file {self._path(key)} cannot be read ({e}); delete it") from e
            self._remember(key, feats)
            return feats
        return None

    def put(self, key: str, features: torch.Tensor) -> None:
        self._remember(key, features)
        if self.cache_dir is not None:
            from safetensors.torch import save_file

            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._path(key).with_suffix(f".tmp{os.getpid()}")
            save_file({"features": features.detach().to("cpu").contiguous()}, str(tmp))
            os.replace(tmp, self._path(key))

    def _remember(self, key: str, features: torch.Tensor) -> None:
        self._memory[key] = features
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)

    def video_features(self, video, batch: dict, settings: dict) -> dict:
        """``{"video": SpatialFusedOutput}`` for the one video in ``batch`` (a processor output: pixels, grid,
        spatial frames), from the cache or encoded now (and stored)."""
        from spatial_mllm.models.modeling import SpatialFusedOutput

        device = next(self.model.parameters()).device
        grid = batch["video_grid_thw"]
        if grid.shape[0] != 1:
            raise ValueError(f"the feature cache takes one video at a time, got {grid.shape[0]}")
        key = self.key(video, grid, settings)
        feats = self.get(key)
        if feats is None:
            self.misses += 1
            with torch.no_grad():
                out = self.model.encode_visual_inputs(
                    pixel_values_videos=batch["pixel_values_videos"].to(device), video_grid_thw=grid.to(device),
                    spatial_pixel_values_videos=[f.to(device) for f in batch["spatial_pixel_values_videos"]])
            feats = out["video"].pooler_output[0]
            self.put(key, feats)
        else:
            self.hits += 1
        return {"video": SpatialFusedOutput(pooler_output=(feats.to(device),))}
