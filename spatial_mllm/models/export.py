"""``spatial-mllm export``: re-save a checkpoint in our layout or the official Spatial-MLLM v1.1 layout.

``export_checkpoint(src, dst, layout)`` (``spatial-mllm export --layout ours|official-v1.1 SRC DST``):

* ``ours`` — ``from_pretrained`` + ``save_pretrained`` (our names, ``save_original_format=False``): a plain copy
  with the card, the generation config and the processor of ``src``.
* ``official-v1.1`` — what the official master code (``src/qwenvl/model/spatial_mllm.py``, transformers 4.51.3)
  loads: tensor names inverted from :mod:`~spatial_mllm.models.checkpoint_keys` (the mapping the loader uses;
  no second table), ``config.json`` in transformers 4.51's layout with the official ``SpatialMLLMConfig`` keys,
  processor files in 4.51's layout (``preprocessor_config.json``; 4.51 cannot read transformers 5's nested
  ``processor_config.json``). What the file holds: the Qwen2.5-VL tensors (``visual.*``, ``model.*``,
  ``lm_head.weight`` unless tied), ``spatial_encoder.vggt_model.aggregator.*`` and ``connector.*`` — our VGGT
  runs lean, so VGGT's camera/depth/point heads are there only if the model's ``spatial_config`` enables them,
  and the track head never, unless ``vggt_heads=`` (``--vggt-heads facebook/VGGT-1B``) copies the head tensors
  from a VGGT checkpoint. The official checkpoint holds a whole VGGT-1B (all four heads). The official
  loader (transformers 4.51 ``from_pretrained``, non-strict) accepts the lean file and initialises the absent
  heads at random with a "newly initialized" warning; Spatial-MLLM's forward reads only the aggregator, so
  its outputs are unaffected. A strict load (``load_state_dict(strict=True)``) of the lean file fails on
  exactly those head tensors; with ``--vggt-heads`` the key set equals the official model's. Only the
  ``mlp_add`` connector (v1.1) and VGGT-1B's aggregator shape can be built by the official code: other VGGT
  sizes are exported (with their sizes as extra ``spatial_config`` keys, which our loader honours and the
  official one ignores) with a warning.

The model card, the generation config and the upload are :mod:`spatial_mllm.models.hub`'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any

from spatial_mllm.models.hub import (
    OFFICIAL_TRANSFORMERS_VERSION,
    _is_hub_id,
    _read_json,
    load_run_info,
    paper_generation_config,
    upload_checkpoint,
    write_model_card,
)

__all__ = ["LAYOUTS", "official_key", "official_v11_config", "official_v11_state_dict", "save_official_v11",
           "export_checkpoint", "add_export_subparser", "run_export_command"]

logger = logging.getLogger(__name__)

LAYOUTS = ("ours", "official-v1.1")


# ================================================================================ official v1.1 layout
def _literal_prefix(pattern: str) -> str:
    """The literal prefix a rename pattern of :mod:`checkpoint_keys` matches: ``^model\\.(?!...)`` → ``model.``."""
    lit = re.sub(r"\(\?!.*\)$", "", pattern).removeprefix("^").replace("\\.", ".")
    if re.search(r"[\\^$*+?()\[\]{}|]", lit):
        raise ValueError(f"rename pattern {pattern!r} is not a plain prefix: cannot invert it")
    return lit


def official_key(key: str) -> str:
    """Our tensor name → its official v1.1 name, the inverse of the loader's renames.

    Inverts ``checkpoint_keys.QWEN_451_RENAMES`` (the only renames a v1.1 checkpoint needs: its spatial branch
    already has our names) and checks the result with ``checkpoint_keys.rename_key``, the function the
    loader's mapping is made of, so export and load cannot drift apart."""
    from spatial_mllm.models.checkpoint_keys import QWEN_451_RENAMES, rename_key

    for src, dst in QWEN_451_RENAMES:
        if key.startswith(dst):
            cand = _literal_prefix(src) + key[len(dst):]
            if rename_key(cand) == key:
                return cand
    if rename_key(key) != key:
        raise ValueError(f"no official v1.1 name maps to {key!r}")
    return key


def official_v11_state_dict(model, vggt_heads=None) -> tuple[dict, list[str]]:
    """``({official name: tensor}, head prefixes still missing)``; tensors are shared with the model.

    ``vggt_heads``: a VGGT checkpoint (folder, file or hub id; official VGGT keys or a v1.1 checkpoint's
    ``spatial_encoder.vggt_model.*``) whose head tensors fill the heads our lean VGGT does not hold."""
    sd = {official_key(k): v for k, v in model.state_dict().items()}
    prefix = "spatial_encoder.vggt_model."
    if vggt_heads is not None and model.spatial_encoder is not None:
        dtype = model.spatial_encoder.vggt_model.aggregator.camera_token.dtype
        for k, v in _vggt_head_tensors(vggt_heads).items():
            sd.setdefault(prefix + k, v.to(dtype))
    heads = ("camera_head", "depth_head", "point_head", "track_head")
    missing = [h for h in heads if model.spatial_encoder is not None and not any(
        k.startswith(f"{prefix}{h}.") for k in sd)]
    return sd, missing


def _vggt_head_tensors(source) -> dict:
    """Head tensors (camera/depth/point/track) of a VGGT checkpoint, with VGGT's own names."""
    from spatial_mllm.models.vggt.model import WEIGHT_FILES, _resolve, load_checkpoint_file

    p = Path(source)
    if p.is_file():
        files = [p]
    elif p.is_dir() and (p / "model.safetensors.index.json").is_file():
        index = _read_json(p / "model.safetensors.index.json")
        files = [p / f for f in sorted(set(index["weight_map"].values()))]
    else:
        errors: list[str] = []
        files = [f for f in (_resolve(source, name, errors) for name in WEIGHT_FILES) if f is not None][:1]
        if not files:
            raise FileNotFoundError(f"no VGGT weights ({', '.join(WEIGHT_FILES)}) in {source}: " + "; ".join(errors))
    heads = ("camera_head.", "depth_head.", "point_head.", "track_head.")
    out = {}
    for f in files:
        for k, v in load_checkpoint_file(f).items():
            k = k.removeprefix("spatial_encoder.vggt_model.").removeprefix("vggt.")
            if k.startswith(heads):
                out[k] = v
    if not out:
        raise ValueError(f"{source}: no VGGT head tensors ({', '.join(h.rstrip('.') for h in heads)}) found")
    return out


# transformers 4.51.3 configuration_qwen2_5_vl.py: Qwen2_5_VLConfig.__init__ keeps the language model's fields
# at the top level (transformers 5 moved them to text_config); Qwen2_5_VLVisionConfig.__init__'s fields.
_QWEN451_TEXT_FIELDS = ("vocab_size", "max_position_embeddings", "hidden_size", "intermediate_size",
                        "num_hidden_layers", "num_attention_heads", "use_sliding_window", "sliding_window",
                        "max_window_layers", "num_key_value_heads", "hidden_act", "initializer_range", "rms_norm_eps",
                        "use_cache", "attention_dropout", "bos_token_id", "eos_token_id")
_QWEN451_VISION_FIELDS = ("depth", "hidden_size", "hidden_act", "intermediate_size", "num_heads", "in_channels",
                          "patch_size", "spatial_merge_size", "temporal_patch_size", "tokens_per_second",
                          "window_size", "out_hidden_size", "fullatt_block_indexes")
# keys Qwen/Qwen2.5-VL-*-Instruct's config.json carries beyond those (4.51 passes them through): name → source
_QWEN_LEGACY_VISION = {"in_chans": "in_channels", "spatial_patch_size": "patch_size"}
# the official VGGTSpatialEncoderConfig (src/qwenvl/model/spatial_encoder.py) has only these; it always builds
# VGGT(img_size, patch_size, embed_dim) with VGGT-1B's other sizes
_OFFICIAL_SPATIAL_FIELDS = ("img_size", "patch_size", "embed_dim")


def official_v11_config(config, *, dtype: str = "bfloat16", vision_token_id: int | None = None) -> dict:
    """``config.json`` of the official v1.1 release for ``config``: transformers 4.51.3's layout of the
    official ``SpatialMLLMConfig`` (master ``src/qwenvl/model/spatial_mllm.py``), as its training script
    builds it from Qwen2.5-VL-3B-Instruct's config (``train_qwen.py`` ``get_model``).

    Not representable (raises ``ValueError``): a connector other than ``mlp_add``. Kept beyond the official
    keys: ``spatial_config`` sizes that differ from VGGT-1B's (our loader reads them, the official one ignores
    them: it can only build VGGT-1B). Left out: ``pad_token_id`` (the official config has none; 4.51 uses it
    only as the embedding's ``padding_idx``; it is in ``generation_config.json``). ``sliding_window`` is
    written as this config holds it (transformers 5 keeps ``null`` when sliding windows are off; 4.51 reads
    it only when ``use_sliding_window`` is true)."""
    from spatial_mllm.models.configuration import LEAN_SPATIAL_OVERRIDES
    from spatial_mllm.models.vggt import VGGTConfig

    cc = config.connector_config
    if cc["type"] != "mlp_add":
        raise ValueError(f"the official v1.1 layout has the mlp_add connector only; this checkpoint's connector is "
                         f"{cc['type']!r} (export it with --layout ours)")
    text = config.text_config
    out: dict[str, Any] = {}
    for k in _QWEN451_TEXT_FIELDS:
        v = getattr(text, k, None)
        out[k] = v if v is not None or k == "sliding_window" else getattr(config, k, None)
    rope = dict(getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {})
    out["rope_theta"] = rope.pop("rope_theta", getattr(text, "rope_theta", None))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    out["rope_scaling"] = {**{k: v for k, v in rope.items() if k not in ("type", "rope_type")},
                           "rope_type": rope_type, "type": rope_type}
    vc = config.vision_config
    vision = {k: getattr(vc, k) for k in _QWEN451_VISION_FIELDS}
    vision.update({k: getattr(vc, k, None) or getattr(vc, src) for k, src in _QWEN_LEGACY_VISION.items()})
    vision["model_type"] = "qwen2_5_vl"
    out["vision_config"] = vision
    for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        out[k] = getattr(config, k)
    out["vision_token_id"] = getattr(config, "vision_token_id", None) if vision_token_id is None else vision_token_id
    out["tie_word_embeddings"] = bool(getattr(config, "tie_word_embeddings", False))
    sc = config.spatial_config.to_dict()
    default = VGGTConfig(**LEAN_SPATIAL_OVERRIDES).to_dict()
    known = set(VGGTConfig.field_help())
    spatial = {k: sc[k] for k in _OFFICIAL_SPATIAL_FIELDS}
    extra = {k: sc[k] for k in sorted(known - set(_OFFICIAL_SPATIAL_FIELDS)) if k in sc and sc[k] != default.get(k)}
    if extra:
        logger.warning("official-v1.1 export: this VGGT differs from VGGT-1B (%s); the official code builds "
                       "VGGT-1B's aggregator from img_size/patch_size/embed_dim alone and cannot load it (this "
                       "package can: the sizes are kept in spatial_config)", ", ".join(f"{k}={v}" for k, v in extra.items()))
    out["spatial_config"] = {**spatial, **extra, "model_type": "vggt_spatial_encoder"}
    out["connector_config"] = {"connector_type": "mlp_add", "spatial_embeds_layer_idx": cc["spatial_embeds_layer_idx"]}
    out.update(architectures=["SpatialMLLMForConditionalGeneration"], model_type="spatial-mllm", torch_dtype=dtype,
               transformers_version=OFFICIAL_TRANSFORMERS_VERSION)
    return dict(sorted(out.items()))


def _save_processor_official(processor, folder: Path) -> None:
    """The processor in transformers 4.51's files: ``preprocessor_config.json`` (the image processor, with
    4.51's ``min_pixels``/``max_pixels``), ``video_preprocessor_config.json`` (read by transformers 5 only), the
    tokenizer with a class name 4.51 knows, the chat template."""
    processor.save_pretrained(folder)
    nested = folder / "processor_config.json"
    if nested.is_file():
        d = _read_json(nested)
        cls = d.pop("processor_class", "Qwen2_5_VLProcessor")
        for key, name in (("image_processor", "preprocessor_config.json"),
                          ("video_processor", "video_preprocessor_config.json")):
            sub = d.pop(key, None)
            if sub is None:
                continue
            sub["processor_class"] = cls
            size = sub.get("size") or {}
            if key == "image_processor" and "shortest_edge" in size:
                sub.setdefault("min_pixels", size["shortest_edge"])
                sub.setdefault("max_pixels", size["longest_edge"])
            (folder / name).write_text(json.dumps(sub, indent=2, sort_keys=True) + "\n")
        if d:  # processor-level settings 4.51 passes to the processor's __init__
            nested.write_text(json.dumps({**d, "processor_class": cls}, indent=2, sort_keys=True) + "\n")
        else:
            nested.unlink()
    tok_cfg = folder / "tokenizer_config.json"
    if tok_cfg.is_file():
        d = _read_json(tok_cfg)
        if d.get("tokenizer_class") in (None, "TokenizersBackend", "PreTrainedTokenizerFast"):
            d["tokenizer_class"] = "Qwen2Tokenizer"  # 4.51's processor loads Qwen2TokenizerFast from tokenizer.json
        tok_cfg.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def save_official_v11(model, folder, *, processor=None, vggt_heads=None, max_shard_size: str = "5GB",
                      run_info=None, scores=None, model_card: bool = True, repo_id: str | None = None) -> list[str]:
    """Write ``model`` in the official v1.1 layout (see the module docstring). Returns the VGGT heads that the
    file does not hold (empty when the key set equals the official model's)."""
    from huggingface_hub import save_torch_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd, missing = official_v11_state_dict(model, vggt_heads)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    vision_token_id = None
    if processor is not None and "<|vision_pad|>" in processor.tokenizer.get_vocab():
        vision_token_id = processor.tokenizer.convert_tokens_to_ids("<|vision_pad|>")
    cfg = official_v11_config(model.config, dtype=dtype, vision_token_id=vision_token_id)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    save_torch_state_dict(sd, folder, max_shard_size=max_shard_size, metadata={"format": "pt"},
                          shared_tensors_to_discard=["lm_head.weight"])  # tied to the embeddings: 4.51 re-ties
    paper_generation_config(model).save_pretrained(folder)
    if processor is not None:
        _save_processor_official(processor, folder)
    if model_card:
        write_model_card(folder, model.config, run_info=run_info, scores=scores, layout="official-v1.1",
                         processor=processor, repo_id=repo_id, lean_heads=missing,
                         num_parameters=sum(v.numel() for v in sd.values()))
    if missing:
        logger.warning("official-v1.1 export: no %s tensors (the model runs VGGT's aggregator only); the official "
                       "loader initialises them at random and never uses them; pass vggt_heads (e.g. "
                       "facebook/VGGT-1B) for the official key set", ", ".join(missing))
    return missing


# ================================================================================ export
def export_checkpoint(src, dst, layout: str = "ours", *, run_info=None, scores=None, vggt_heads=None,
                      dtype: str = "auto", max_shard_size: str = "5GB", repo_id: str | None = None) -> Path:
    """Load ``src`` (our save or an official checkpoint: folder or hub id) and write it to ``dst`` in ``layout``
    (``"ours"`` or ``"official-v1.1"``) with its processor (when ``src`` has one), the paper generation config
    and a model card. ``run_info``/``scores`` default to ``src``'s ``run.json`` (or SFT records) and
    ``scores.json``."""
    import torch

    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
    from spatial_mllm.models.processing import SpatialMLLMProcessor

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    src_path = Path(src)
    if not src_path.exists() and not _is_hub_id(str(src)):
        raise FileNotFoundError(f"checkpoint folder not found: {src}")
    dst = Path(dst)
    if dst.exists() and dst.resolve() == src_path.resolve():
        raise ValueError(f"export {src} onto itself: give another destination folder")
    torch_dtype = dtype if dtype == "auto" else getattr(torch, str(dtype), None)
    if not isinstance(torch_dtype, (str, torch.dtype)):
        raise ValueError(f"--dtype {dtype!r} is not a torch dtype (auto, bfloat16, float16, float32)")
    model = SpatialMLLMForConditionalGeneration.from_pretrained(src, dtype=torch_dtype).eval()
    try:
        processor = SpatialMLLMProcessor.from_pretrained(src)
    except (OSError, ValueError, TypeError) as e:  # a checkpoint without processor files: export the model alone
        logger.warning("no processor in %s (%s): exporting the model without tokenizer/processor files", src, e)
        processor = None
    if run_info is None and src_path.is_dir():
        run_info = load_run_info(src_path)
    if scores is None and (src_path / "scores.json").is_file():
        scores = src_path / "scores.json"
    if layout == "ours":
        model.save_pretrained(dst, processor=processor, run_info=run_info, scores=scores, repo_id=repo_id,
                              max_shard_size=max_shard_size, save_original_format=False)
    else:
        save_official_v11(model, dst, processor=processor, vggt_heads=vggt_heads, max_shard_size=max_shard_size,
                          run_info=run_info, scores=scores, repo_id=repo_id)
    return dst


def add_export_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``export`` on an ``argparse`` subparsers object (``spatial_mllm/cli.py`` wires it)."""
    what = "write a checkpoint as a Hub-ready folder (model card, generation config, processor), in our layout or " \
           "the official v1.1 one"
    p = subparsers.add_parser("export", help=what, description=what)
    p.add_argument("src", help="checkpoint folder or hub id (our save or an official checkpoint)")
    p.add_argument("dst", help="output folder")
    p.add_argument("--layout", choices=LAYOUTS, default="ours",
                   help="ours: our names (transformers 5); official-v1.1: what the official master code loads")
    p.add_argument("--run-info", default=None, help="run.json (or its folder) whose recipe goes into the card "
                                                    "(default: SRC/run.json, or SRC's sft_config.json)")
    p.add_argument("--scores", action="append", default=None, metavar="[NAME=]PATH",
                   help="scores.json (or its eval folder) for the card; repeatable (default: SRC/scores.json)")
    p.add_argument("--vggt-heads", default=None, metavar="VGGT_CKPT",
                   help="official-v1.1: copy VGGT's camera/depth/point/track heads from this VGGT checkpoint "
                        "(e.g. facebook/VGGT-1B) so that the key set equals the official model's")
    p.add_argument("--dtype", default="auto",
                   help="tensor dtype written (auto = as stored; bfloat16 = as the official releases)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="upload the written folder to this Hub repo (needs a token: hf auth login)")
    p.set_defaults(func=run_export_command)
    return p


def _parse_scores(items: list[str] | None):
    if not items:
        return None
    named = {}
    for i, item in enumerate(items):
        name, sep, path = item.partition("=")
        if not sep:
            name, path = (Path(item).parent.name or f"scores {i + 1}"), item
        named[name] = path
    return named


def run_export_command(args: argparse.Namespace) -> int:
    """``spatial-mllm export``: write the folder, then (``--push-to-hub``) upload it."""
    dst = export_checkpoint(args.src, args.dst, args.layout, run_info=args.run_info, scores=_parse_scores(args.scores),
                            vggt_heads=args.vggt_heads, dtype=args.dtype, max_shard_size=args.max_shard_size,
                            repo_id=args.push_to_hub)
    print(f"wrote {args.layout} checkpoint: {dst} ({', '.join(sorted(f.name for f in dst.iterdir()))})")
    if args.push_to_hub:
        print(f"uploaded: {upload_checkpoint(dst, args.push_to_hub)}")
    return 0
