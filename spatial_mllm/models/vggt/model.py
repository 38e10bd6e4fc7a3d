"""VGGT (Wang et al., "VGGT: Visual Geometry Grounded Transformer", CVPR 2025): our implementation, loading
the official ``facebook/VGGT-1B`` weights key for key (the track head is not implemented).

Conventions of every output: cameras are **camera-from-world** extrinsics in OpenCV axes (x right, y down,
z forward); the world frame is the camera of frame 0 (learned behaviour: its extrinsic ≈ identity);
lengths (translations, depths, points) are in VGGT's normalised scene scale, **not metres**.

Differences from the reference ``vggt.models.vggt.VGGT`` (see also the aggregator, DPT and pose-encoding
module docstrings):

1. No track head: ``track_head.*`` checkpoint tensors are dropped by ``from_pretrained`` /
   ``load_official_state_dict``; there is no ``query_points`` argument and no ``track/vis/conf`` output.
2. The aggregator keeps only the layers the enabled heads read (last layer for the camera head,
   ``dpt_intermediate_layer_idx`` for the DPT heads) and, under autocast, stores them in the autocast
   dtype (bf16); the reference keeps all 24 layers in fp32. The heads then run in fp32 on bf16-rounded
   tokens (outside autocast the results are the reference's up to float rounding).
3. The heads run with autocast disabled on the input's device type (the reference disables CUDA autocast
   only, so under CPU autocast its heads would run in bf16).
4. Gradient checkpointing is opt-in (``gradient_checkpointing_enable()``) instead of always-on in train
   mode.
5. ``from_pretrained`` builds the model on the meta device and assigns the loaded tensors (no random init,
   no second copy of the weights) and is strict about every non-track key; disabled heads' keys are
   dropped, so ``enable_camera/depth/point=False`` gives an aggregator-only model from the full checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from spatial_mllm.models.vggt.aggregator import Aggregator, normalize_layer_indices
from spatial_mllm.models.vggt.camera_head import CameraHead
from spatial_mllm.models.vggt.config import VGGTConfig
from spatial_mllm.models.vggt.dpt_head import DPTHead

__all__ = ["VGGT", "WEIGHT_FILES", "load_checkpoint_file"]

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.pt")  # tried in this order
HEAD_PREFIXES = {"enable_camera": "camera_head.", "enable_depth": "depth_head.", "enable_point": "point_head."}
ALWAYS_DROPPED = ("track_head.",)


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file or a torch ``.pt``/``.pth`` file (``weights_only=True``) onto the CPU."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping):
        raise TypeError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return dict(sd)


def _resolve(repo_id_or_path: str | os.PathLike, filename: str, errors: list[str], **hub_kwargs) -> Path | None:
    """A file of a local folder, or downloaded from the hub; ``None`` (and the reason appended to
    ``errors``) if it is not there."""
    p = Path(repo_id_or_path)
    if p.is_dir():
        f = p / filename
        if f.is_file():
            return f
        errors.append(f"{f}: no such file")
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(str(repo_id_or_path), filename, **hub_kwargs))
    except EntryNotFoundError as err:  # absent remotely, or (offline) absent from the cache
        errors.append(f"{repo_id_or_path}/{filename}: {type(err).__name__}: {err}")
        return None


class VGGT(nn.Module):
    """Aggregator + camera head + depth head + point head (any head can be disabled by config).

    Build with ``VGGT(VGGTConfig())`` (random init) or ``VGGT.from_pretrained("facebook/VGGT-1B")``.
    For Spatial-MLLM's spatial encoder only: ``VGGT.from_pretrained(path, enable_camera=False,
    enable_depth=False, enable_point=False).aggregator(images, keep_layers=[-1])``.
    """

    def __init__(self, config: VGGTConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else VGGTConfig()
        self.aggregator = Aggregator(config)
        self.camera_head = CameraHead(config) if config.enable_camera else None
        self.depth_head = DPTHead(config, output_dim=2, activation="exp") if config.enable_depth else None
        self.point_head = DPTHead(config, output_dim=4, activation="inv_log") if config.enable_point else None

    # ------------------------------------------------------------------------------------------ forward
    def needed_layers(self) -> list[int]:
        """Aggregator layers the enabled heads read (sorted, non-negative)."""
        need: list[int] = []
        if self.camera_head is not None:
            need.append(-1)
        if self.depth_head is not None or self.point_head is not None:
            need += list(self.config.dpt_intermediate_layer_idx)
        return normalize_layer_indices(need, self.config.depth)

    def forward(self, images: torch.Tensor, frames_chunk_size: int | None = 8) -> dict[str, torch.Tensor]:
        """Predict cameras, depth and points for each sequence of frames.

        Args:
            images: ``[S, 3, H, W]`` or ``[B, S, 3, H, W]``, RGB in [0, 1] (not normalised), H and W multiples
                of 14 (518 wide after :func:`~spatial_mllm.models.vggt.preprocess.load_and_preprocess_images`).
            frames_chunk_size: frames per DPT chunk (memory bound only; results do not depend on it).

        Returns a dict (keys present only for enabled heads):
            ``pose_enc`` ``[B, S, 9]``: absT_quaR_FoV of the last refinement iteration — translation (3,
                normalised scale), quaternion XYZW (4, not normalised), FoV vertical/horizontal (2, radians)
                of the camera-from-world extrinsic (OpenCV); decode with ``pose_encoding_to_extri_intri``.
            ``pose_enc_list``: the 4 iterations' encodings, each ``[B, S, 9]``.
            ``depth`` ``[B, S, H, W, 1]``: z-depth in each frame's camera (normalised scale, > 0).
            ``depth_conf`` ``[B, S, H, W]``: confidence 1 + exp(·) > 1.
            ``world_points`` ``[B, S, H, W, 3]``: 3D point per pixel in frame 0's camera frame (normalised).
            ``world_points_conf`` ``[B, S, H, W]``: confidence > 1.
            ``images`` ``[B, S, 3, H, W]``: the input (eval mode only, as the reference).
        """
        if images.dim() == 4:
            images = images.unsqueeze(0)  # [1, S, 3, H, W]
        H, W = images.shape[-2:]
        layers, _ = self.aggregator(images, keep_layers=self.needed_layers() or [-1])
        preds: dict[str, torch.Tensor] = {}
        with torch.autocast(device_type=images.device.type, enabled=False):
            if self.camera_head is not None:
                pose_enc_list = self.camera_head(layers)
                preds["pose_enc"] = pose_enc_list[-1]  # [B, S, 9]
                preds["pose_enc_list"] = pose_enc_list
            if self.depth_head is not None:
                preds["depth"], preds["depth_conf"] = self.depth_head(layers, (H, W), frames_chunk_size)
            if self.point_head is not None:
                preds["world_points"], preds["world_points_conf"] = self.point_head(
                    layers, (H, W), frames_chunk_size)
        if not self.training:
            preds["images"] = images
        return preds

    def gradient_checkpointing_enable(self) -> None:
        """Recompute aggregator and DINOv2 blocks in backward (activation memory ~ one block per layer)."""
        self.aggregator.set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self.aggregator.set_gradient_checkpointing(False)

    # ------------------------------------------------------------------------------------------ weights
    def load_official_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], prefix: str = "", assign: bool = False
    ) -> list[str]:
        """Load an official VGGT state dict strictly, key for key; returns the keys that were dropped.

        Dropped on purpose: ``track_head.*`` (not implemented) and the keys of heads this config disables.
        ``prefix`` selects and strips a sub-tree (e.g. ``"spatial_encoder.vggt_model."`` of a Spatial-MLLM
        v1.1 checkpoint; keys outside it are ignored). Every other key must match a parameter of this
        model with the same shape, and every parameter must be present; otherwise a ``KeyError`` names the
        missing and unexpected keys.
        """
        if prefix:
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        drop = list(ALWAYS_DROPPED) + [p for flag, p in HEAD_PREFIXES.items() if not getattr(self.config, flag)]
        kept = {k: v for k, v in state_dict.items() if not k.startswith(tuple(drop))}
        dropped = sorted(set(state_dict) - set(kept))
        expected = set(self.state_dict().keys())
        missing = sorted(expected - set(kept))
        unexpected = sorted(set(kept) - expected)
        if missing or unexpected:
            def show(keys: list[str]) -> str:
                return ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")

            raise KeyError(f"state dict does not match VGGT({self.config.patch_embed}, depth "
                           f"{self.config.depth}, embed_dim {self.config.embed_dim}): missing keys [{show(missing)}]; "
                           f"unexpected keys [{show(unexpected)}]")
        self.load_state_dict(kept, strict=True, assign=assign)
        if dropped:
            logger.info("VGGT: dropped %d checkpoint tensors (%s)", len(dropped),
                        ", ".join(sorted({k.split('.')[0] for k in dropped})))
        return dropped

    @classmethod
    def from_pretrained(
        cls,
        repo_id_or_path: str | os.PathLike = "facebook/VGGT-1B",
        config: VGGTConfig | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        prefix: str = "",
        **config_overrides,
    ) -> VGGT:
        """Load VGGT weights from a local folder or a hub repo (``model.safetensors``, else ``model.pt``).

        ``config``: if ``None``, read ``config.json`` next to the weights when it is ours (``model_type``
        "vggt") or keep those of its keys that are ``VGGTConfig`` fields (the official repo's
        ``PyTorchModelHubMixin`` config holds img_size/patch_size/embed_dim), else defaults.
        ``config_overrides`` are then applied (e.g. ``enable_depth=False``). The track head's tensors and
        those of disabled heads are dropped (logged); everything else must match key for key.
        """
        hub = dict(revision=revision, cache_dir=cache_dir)
        if config is None:
            cfg_file = _resolve(repo_id_or_path, "config.json", [], **hub)  # optional
            cfg_dict = json.loads(cfg_file.read_text()) if cfg_file is not None else {}
            if cfg_dict.get("model_type") != VGGTConfig.model_type:
                known = set(VGGTConfig.field_help())
                cfg_dict = {k: v for k, v in cfg_dict.items() if k in known}
            config = VGGTConfig.from_dict(cfg_dict)
        if config_overrides:
            config = VGGTConfig.from_dict({**config.to_dict(), **config_overrides})
        weights, errors = None, []
        for name in WEIGHT_FILES:
            weights = _resolve(repo_id_or_path, name, errors, **hub)
            if weights is not None:
                break
        if weights is None:
            raise FileNotFoundError(f"none of {WEIGHT_FILES} found in {repo_id_or_path}: " + "; ".join(errors))
        state_dict = load_checkpoint_file(weights)
        with torch.device("meta"):
            model = cls(config)
        model.load_official_state_dict(state_dict, prefix=prefix, assign=True)
        if dtype is not None or device is not None:
            model = model.to(device=device, dtype=dtype)
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (our keys, i.e. the official ones minus track)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.to_json_file(folder / "config.json")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()},
                  str(folder / "model.safetensors"))
        return folder
