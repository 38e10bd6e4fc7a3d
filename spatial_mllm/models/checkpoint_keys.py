"""The declared key mapping between checkpoint tensor names and our modules.

Our module tree (what ``SpatialMLLMForConditionalGeneration.state_dict()`` holds)::

    model.visual.*               Qwen2.5-VL ViT incl. model.visual.merger.*      (transformers 5 layout)
    model.language_model.*       Qwen2.5 LLM (embed_tokens, layers.N, norm)
    lm_head.weight
    spatial_encoder.vggt_model.* VGGT (aggregator; heads only if spatial_config enables them)
    connector.ln_q.weight, connector.mlp.{0,2}.{weight,bias}                       (mlp_add, mlp2_add)
    connector.ln_out.weight, connector.mlp_out.{0,2}.{weight,bias}                 (mlp2_add only)

Checkpoint layouts that load into it (``detect_layout``):

* ``"ours"`` — a save of this model (transformers 5 layout), or
* ``"v1.1"`` — ``Diankun/Spatial-MLLM-v1.1-Instruct-*``: Qwen tensors in the transformers-4.51 layout
  (``visual.*``, ``model.*``), ``spatial_encoder.vggt_model.*`` (full VGGT), ``connector.*``;
* ``"v1.0"`` — ``Diankun/Spatial-MLLM-subset-sft``: 4.51 Qwen layout, ``vggt.*``,
  ``vggt_embedding_merger.{token_merge_ln_q, token_merge_mlp, vgg_to_language_ln_q, vgg_to_language_mlp}``;
* ``"qwen2.5-vl"`` — a plain Qwen2.5-VL checkpoint (either layout): only for ``connector="none"``.

``KEY_RENAMES`` are regex renames (source pattern → target). ``from_pretrained`` reads the checkpoint's
tensor names first (``list_checkpoint_keys``, no tensor data) and passes the renames that layout needs as
transformers' ``key_mapping`` (nothing is registered globally). transformers reverts the renames it applied
when a loaded model is saved again, so a re-save of an official checkpoint keeps the official names; a
model built here saves in the transformers-5 layout. Both load. ``ignored_key_patterns(config)`` are the tensors
skipped on purpose: VGGT's ``track_head`` (never used by Spatial-MLLM, not implemented by our VGGT), the
camera/depth/point heads when ``spatial_config`` disables them, and the whole spatial branch when the
connector is ``"none"``. Anything else missing or unexpected is an error naming the keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["KEY_RENAMES", "QWEN_451_RENAMES", "V10_RENAMES", "ignored_key_patterns", "detect_layout",
           "list_checkpoint_keys", "rename_key", "key_mapping_for"]

# (source regex, target); the patterns are disjoint.
QWEN_451_RENAMES: list[tuple[str, str]] = [  # transformers 4.51 Qwen2.5-VL layout → transformers 5
    (r"^visual\.", "model.visual."),
    (r"^model\.(?!visual\.|language_model\.)", "model.language_model."),
]
V10_RENAMES: list[tuple[str, str]] = [  # official v1.0 spatial branch → ours
    (r"^vggt\.", "spatial_encoder.vggt_model."),
    (r"^vggt_embedding_merger\.token_merge_ln_q\.", "connector.ln_q."),
    (r"^vggt_embedding_merger\.token_merge_mlp\.", "connector.mlp."),
    (r"^vggt_embedding_merger\.vgg_to_language_ln_q\.", "connector.ln_out."),
    (r"^vggt_embedding_merger\.vgg_to_language_mlp\.", "connector.mlp_out."),
]
KEY_RENAMES = QWEN_451_RENAMES + V10_RENAMES


def rename_key(key: str) -> str:
    """Apply ``KEY_RENAMES`` to one checkpoint key (first match wins; used by tests and tools)."""
    import re

    for src, dst in KEY_RENAMES:
        if re.search(src, key):
            return re.sub(src, dst, key, count=1)
    return key


def key_mapping_for(keys) -> dict[str, str]:
    """The renames a checkpoint with these tensor names needs (``key_mapping`` of ``from_pretrained``)."""
    keys = list(keys)
    mapping = {}
    if any(k.startswith("visual.") for k in keys) or any(
            k.startswith("model.") and not k.startswith(("model.visual.", "model.language_model.")) for k in keys):
        mapping.update(QWEN_451_RENAMES)
    if detect_layout(keys) == "v1.0":
        mapping.update(V10_RENAMES)
    return mapping


def ignored_key_patterns(config) -> list[str]:
    """Regexes of checkpoint tensors (our names) that are skipped on purpose for this config."""
    pats = [r"^spatial_encoder\.vggt_model\.track_head\.", r"^vggt\.track_head\."]
    if config.connector_config["type"] == "none":
        pats += [r"^spatial_encoder\.", r"^connector\.", r"^vggt\.", r"^vggt_embedding_merger\."]
        return pats
    sc = config.spatial_config
    for flag, head in (("enable_camera", "camera_head"), ("enable_depth", "depth_head"),
                       ("enable_point", "point_head")):
        if not getattr(sc, flag):
            pats += [rf"^spatial_encoder\.vggt_model\.{head}\.", rf"^vggt\.{head}\."]
    return pats


def list_checkpoint_keys(path_or_id: str | os.PathLike, **hub_kwargs) -> list[str]:
    """Tensor names of a safetensors checkpoint (local folder or hub repo) without reading the tensors."""
    p = Path(path_or_id)
    if p.is_dir():
        index = p / "model.safetensors.index.json"
        if index.is_file():
            return sorted(json.loads(index.read_text())["weight_map"])
        single = p / "model.safetensors"
        if single.is_file():
            from safetensors import safe_open

            with safe_open(str(single), "pt") as f:
                return sorted(f.keys())
        raise FileNotFoundError(f"no model.safetensors(.index.json) in {p}")
    from huggingface_hub import get_safetensors_metadata

    meta = get_safetensors_metadata(str(path_or_id), **hub_kwargs)
    return sorted(meta.weight_map)


def detect_layout(keys) -> str:
    """``"ours"`` | ``"v1.1"`` | ``"v1.0"`` | ``"qwen2.5-vl"`` from a checkpoint's tensor names."""
    keys = list(keys)
    if any(k.startswith("vggt_embedding_merger.") or k.startswith("vggt.") for k in keys):
        return "v1.0"
    old_qwen = any(k.startswith("visual.") for k in keys)
    if any(k.startswith("spatial_encoder.") or k.startswith("connector.") for k in keys):
        return "v1.1" if old_qwen else "ours"
    return "qwen2.5-vl"
