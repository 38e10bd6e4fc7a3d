"""`SpatialMLLMConfig`: Qwen2.5-VL's config plus the spatial encoder (VGGT) and the connector.

``model_type = "spatial-mllm"`` as in the official v1.1 release, so its ``config.json`` loads directly.
Official spellings are accepted: ``connector_config.connector_type`` (→ ``type``) and a ``spatial_config``
holding only ``img_size/patch_size/embed_dim`` (→ a :class:`VGGTConfig` with VGGT-1B defaults for the rest).
The v1.0 release (``Diankun/Spatial-MLLM-subset-sft``) ships a plain Qwen2.5-VL ``config.json``;
:meth:`SpatialMLLMForConditionalGeneration.from_pretrained` recognises it from the checkpoint's tensor
names and sets ``connector_config.type = "mlp2_add"``.

Differences from the official config: the spatial encoder's heads (camera / depth / point) are off by
default (``spatial_config.enable_* = False``): the model only runs VGGT's aggregator, and the heads' tensors
in the official checkpoints are skipped by the declared key mapping (``checkpoint_keys.py``). Turn them on
(``spatial_config={"enable_point": True, ...}``) to keep them, e.g. for space-aware frame sampling with the
model's own VGGT.
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import (
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLVisionConfig,
)

from spatial_mllm.models.connector import CONNECTOR_TYPES
from spatial_mllm.models.vggt.config import VGGTConfig

__all__ = ["SpatialMLLMConfig", "DEFAULT_CONNECTOR_CONFIG", "LEAN_SPATIAL_OVERRIDES"]

DEFAULT_CONNECTOR_CONFIG: dict[str, Any] = {
    "type": "mlp_add",  # "mlp_add" (official v1.1) | "mlp2_add" (official v1.0) | "none" (2D-only ablation)
    "spatial_embeds_layer_idx": -1,  # aggregator layer fed to the connector (-1 = last, as officially)
}
CONNECTOR_HELP = {
    "type": "'mlp_add' (v1.1: RMSNorm→Linear→GELU→Linear, flatten h_s,w_s,D,t), 'mlp2_add' (v1.0: plus a "
            "second RMSNorm→MLP block, flatten t,h_s,w_s,D), 'none' (no spatial branch: plain Qwen2.5-VL)",
    "spatial_embeds_layer_idx": "index into VGGT's aggregator layers of the tokens used (-1 = last layer, "
                                "the only one computed in lean mode)",
}
# VGGT heads are not used by the model's forward; built only if asked for.
LEAN_SPATIAL_OVERRIDES = {"enable_camera": False, "enable_depth": False, "enable_point": False}


class SpatialMLLMConfig(Qwen2_5_VLConfig):
    """Qwen2.5-VL config + ``spatial_config`` (:class:`VGGTConfig`) + ``connector_config`` (dict).

    ``connector_config`` keys: see ``CONNECTOR_HELP`` (``SpatialMLLMConfig.connector_help()``).
    """

    model_type = "spatial-mllm"
    sub_configs_defaults = {
        "vision_config": Qwen2_5_VLVisionConfig,
        "text_config": Qwen2_5_VLTextConfig,
        "spatial_config": VGGTConfig,
    }

    spatial_config: dict | VGGTConfig | None = None
    connector_config: dict | None = None

    def __post_init__(self, **kwargs):
        if self.spatial_config is None:
            self.spatial_config = dict(LEAN_SPATIAL_OVERRIDES)
        elif isinstance(self.spatial_config, dict) and self.spatial_config.get("model_type") != "vggt":
            # official v1.1 spelling: {img_size, patch_size, embed_dim} (+ HF bookkeeping keys) → ours, lean
            known = set(VGGTConfig.field_help())
            self.spatial_config = {**LEAN_SPATIAL_OVERRIDES,
                                   **{k: v for k, v in self.spatial_config.items() if k in known}}
        cc = dict(DEFAULT_CONNECTOR_CONFIG)
        given = dict(self.connector_config or {})
        if "connector_type" in given:  # official spelling
            given.setdefault("type", given.pop("connector_type"))
        unknown = set(given) - set(DEFAULT_CONNECTOR_CONFIG)
        if unknown:
            raise ValueError(f"unknown connector_config keys {sorted(unknown)}; known: {sorted(DEFAULT_CONNECTOR_CONFIG)}")
        cc.update(given)
        if cc["type"] not in CONNECTOR_TYPES:
            raise ValueError(f"connector_config.type must be one of {CONNECTOR_TYPES}, got {cc['type']!r}")
        self.connector_config = cc
        super().__post_init__(**kwargs)
        if self.vision_config.patch_size != self.spatial_config.patch_size:
            raise ValueError(f"the connector pairs ViT and VGGT patches one to one: vision_config.patch_size "
                             f"{self.vision_config.patch_size} != spatial_config.patch_size "
                             f"{self.spatial_config.patch_size}")

    @property
    def connector_type(self) -> str:
        return self.connector_config["type"]

    @staticmethod
    def connector_help() -> dict[str, str]:
        """``{connector_config key: meaning}``."""
        return dict(CONNECTOR_HELP)
