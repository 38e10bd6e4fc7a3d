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

So a second run of an evaluation or an ablation that varies only the prompt skips the encoders; a changed
model, setting or video is a miss (tested).

:class:`EncoderTrunkCache` keeps what TRAINING can reuse: when only the merger, the connector and the LLM train
(the official recipe; GRPO's default ``trainable``), the fused features change every step but the frozen
encoders' outputs do not. It stores each video's :class:`~spatial_mllm.models.modeling.VisualTrunk` (ViT blocks'
output before the merger + VGGT's patch tokens), keyed as above with a fingerprint of the FROZEN weights only;
:meth:`SpatialMLLMForConditionalGeneration.fuse_visual_trunks` runs the trainable rest. GRPO uses it
(``GRPOConfig.encoder_cache``, ``encoder_cache_dir``): within a round the rollouts, the reference and the loss
forwards share one encoding, and with a folder, later epochs over the same videos skip the ViT blocks and
VGGT entirely (the video is still decoded to get its grid). On disk
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

__all__ = ["EncoderTrunkCache", "VisualFeatureCache", "processor_settings", "video_content_hash"]


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


def processor_settings(processor, **extra) -> dict:
    """The processor settings that decide a video's frames and pixels (part of every cache key), updated with
    ``extra`` (the call's own frame choice: ``frame_indices``, a ``num_frames`` other than the processor's)."""
    return {**{k: getattr(processor, k, None) for k in ("pixel_preset", "num_frames", "min_pixels", "max_pixels",
                                                        "total_pixels", "second_per_grid_t")}, **extra}


class _SafetensorsCache:
    """Tensors per key: a memory LRU + optional safetensors files (written atomically); the key covers the video
    content, the settings, the grid and a fingerprint of the weights in :meth:`_visual_params`."""

    kind = "features"

    def __init__(self, model, cache_dir: str | os.PathLike | None = None, memory_items: int = 32):
        self.model = model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.memory_items = memory_items
        self._memory: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._fingerprint: str | None = None
        self._versions: tuple | None = None
        self.hits = self.misses = 0

    # ---- keys ------------------------------------------------------------------------------------------
    def _parts(self) -> list[tuple[str, torch.nn.Module | None]]:
        m = self.model
        return [("visual", m.model.visual), ("spatial_encoder", m.spatial_encoder), ("connector", m.connector)]

    def _visual_params(self) -> list[tuple[str, torch.Tensor]]:
        return [(f"{name}.{k}", t) for name, mod in self._parts() if mod is not None
                for k, t in sorted(mod.state_dict(keep_vars=True).items())]

    def fingerprint(self) -> str:
        """SHA-256 of the cached parts' weights (recomputed when a parameter changed in place since the last
        one)."""
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
        """The cache key of one video's tensors (module docstring)."""
        fields = {"video": video_content_hash(video), "grid": video_grid_thw.tolist(), "settings": settings,
                  "weights": self.fingerprint()}
        if self.kind != "features":
            fields["kind"] = self.kind
        blob = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    # ---- lookup ----------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.safetensors"

    def _get(self, key: str) -> dict[str, torch.Tensor] | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.cache_dir is not None and self._path(key).is_file():
            from safetensors.torch import load_file

            try:
                tensors = load_file(str(self._path(key)))
            except Exception as e:  # a truncated or foreign file: say which
                raise ValueError(f"feature cache file {self._path(key)} cannot be read ({e}); delete it") from e
            self._remember(key, tensors)
            return tensors
        return None

    def _put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        self._remember(key, tensors)
        if self.cache_dir is not None:
            from safetensors.torch import save_file

            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._path(key).with_suffix(f".tmp{os.getpid()}")
            save_file({k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}, str(tmp))
            os.replace(tmp, self._path(key))

    def _lookup(self, video, batch: dict, settings: dict, encode) -> dict[str, torch.Tensor]:
        """The tensors of the one video in ``batch`` (a processor output or one row's visual inputs): from the
        cache, or ``encode(device, grid)`` now (stored)."""
        grid = batch["video_grid_thw"]
        if grid.shape[0] != 1:
            raise ValueError(f"the {self.kind} cache takes one video at a time, got {grid.shape[0]}")
        key = self.key(video, grid, settings)
        tensors = self._get(key)
        if tensors is None:
            self.misses += 1
            with torch.no_grad():
                tensors = encode(next(self.model.parameters()).device, grid)
            self._put(key, tensors)
        else:
            self.hits += 1
        return tensors

    def _remember(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        self._memory[key] = tensors
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)


class VisualFeatureCache(_SafetensorsCache):
    """Fused visual features per (video content, frame choice, processor settings, visual weights).

    Args:
        model: the :class:`~spatial_mllm.models.modeling.SpatialMLLMForConditionalGeneration` whose features
            are cached.
        cache_dir: folder for safetensors files (None: memory only).
        memory_items: features kept in memory (least recently used dropped first).
    """

    def get(self, key: str) -> torch.Tensor | None:
        """``[tokens, hidden]`` features of ``key`` or None."""
        tensors = self._get(key)
        return None if tensors is None else tensors["features"]

    def put(self, key: str, features: torch.Tensor) -> None:
        self._put(key, {"features": features})

    def video_features(self, video, batch: dict, settings: dict) -> dict:
        """``{"video": SpatialFusedOutput}`` for the one video in ``batch`` (a processor output: pixels, grid,
        spatial frames), from the cache or encoded now (and stored)."""
        from spatial_mllm.models.modeling import SpatialFusedOutput

        def encode(device, grid):
            out = self.model.encode_visual_inputs(
                pixel_values_videos=batch["pixel_values_videos"].to(device), video_grid_thw=grid.to(device),
                spatial_pixel_values_videos=[f.to(device) for f in batch["spatial_pixel_values_videos"]])
            return {"features": out["video"].pooler_output[0]}

        feats = self._lookup(video, batch, settings, encode)["features"]
        device = next(self.model.parameters()).device
        return {"video": SpatialFusedOutput(pooler_output=(feats.to(device),))}


class EncoderTrunkCache(_SafetensorsCache):
    """The FROZEN encoders' outputs per video (:class:`~spatial_mllm.models.modeling.VisualTrunk`: the ViT
    blocks' output before the merger, VGGT's patch tokens), for training that updates only the merger, the
    connector and the LLM (the official recipe): GRPO epochs over the same videos skip the ViT blocks and VGGT,
    and one round's rollouts, reference and loss forwards share one encoding. The key's weight fingerprint
    covers only the ViT blocks/patch embedding and VGGT (a trained merger/connector does not invalidate it;
    a changed frozen weight does). Size: ``t·h·w·C_vit + S·h·w·2C`` values per video — about 130 MB in bf16
    at the paper's 16 frames of 476×644 (3B ViT, VGGT-1B): mind ``memory_items`` and the disk.
    """

    kind = "trunk"

    def _parts(self) -> list[tuple[str, torch.nn.Module | None]]:
        visual = self.model.model.visual
        blocks = torch.nn.ModuleDict({n: m for n, m in visual.named_children() if n != "merger"})
        return [("visual", blocks), ("spatial_encoder", self.model.spatial_encoder)]

    def video_trunk(self, video, batch: dict, settings: dict):
        """The :class:`~spatial_mllm.models.modeling.VisualTrunk` of the one video in ``batch`` (pixels, grid,
        spatial frames: a processor output or one row's visual inputs), from the cache or encoded now."""
        from spatial_mllm.models.modeling import VisualTrunk

        def encode(device, grid):
            spatial = batch.get("spatial_pixel_values_videos")
            if isinstance(spatial, torch.Tensor):
                spatial = [spatial]
            (trunk,) = self.model.encode_visual_trunks(
                batch["pixel_values_videos"].to(device), grid.to(device),
                None if spatial is None else [f.to(device) for f in spatial])
            tensors = {"vit_hidden": trunk.vit_hidden}
            if trunk.spatial_tokens is not None:
                tensors["spatial_tokens"] = trunk.spatial_tokens
            return tensors

        tensors = self._lookup(video, batch, settings, encode)
        device = next(self.model.parameters()).device
        return VisualTrunk(tensors["vit_hidden"], tensors.get("spatial_tokens")).to(device)
