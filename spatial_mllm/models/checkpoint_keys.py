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
import re
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


_HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _safetensors_keys(path: Path) -> list[str]:
    """Tensor names in one safetensors file (its header only); a corrupt file is an ``OSError`` naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return list(f.keys())
    except SafetensorError as e:
        raise OSError(f"corrupt checkpoint file {path}: {e}") from e


def list_checkpoint_keys(path_or_id: str | os.PathLike, **hub_kwargs) -> list[str]:
    """Tensor names of a safetensors checkpoint (local folder or hub repo) without reading the tensors.

    Errors name the folder or file: a path that is not a folder (and not a hub id), a folder without
    ``model.safetensors(.index.json)``, a shard the index names but that is missing, a corrupt safetensors
    header (``OSError``), a hub repo that cannot be reached or has no safetensors (``OSError``)."""
    p = Path(path_or_id)
    if p.is_dir():
        index = p / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise OSError(f"corrupt checkpoint index {index}: {e}") from e
            for shard in sorted(set(weight_map.values())):  # headers only: cheap, and a bad shard is named
                if not (p / shard).is_file():
                    raise FileNotFoundError(f"checkpoint shard {p / shard} (named in {index.name}) is missing")
                _safetensors_keys(p / shard)
            return sorted(weight_map)
        single = p / "model.safetensors"
        if single.is_file():
            return sorted(_safetensors_keys(single))
        raise FileNotFoundError(f"no model.safetensors(.index.json) in checkpoint folder {p}")
    name = str(path_or_id)
    if p.exists() or name.startswith((".", "/", "~")) or not _HUB_REPO_ID.match(name):
        what = "is a file, not a checkpoint folder" if p.exists() else "does not exist (and is not a hub repo id)"
        raise FileNotFoundError(f"checkpoint folder {name} {what}")
    from huggingface_hub import get_safetensors_metadata

    try:
        meta = get_safetensors_metadata(name, **hub_kwargs)
    except Exception as e:  # noqa: BLE001 - the hub client's error types vary (its own, httpx/httpx2): re-raised naming the repo
        first = (str(e).strip().splitlines() or [""])[0]
        raise OSError(f"checkpoint {name}: no such local folder, and the hub lookup failed "
                      f"({type(e).__name__}: {first})") from e
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
