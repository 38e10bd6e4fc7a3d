"""Tiny checkpoints written in both official namings load with zero missing/unexpected keys and give the
same logits as our model with the same weights; a missing tensor is an error naming it."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from spatial_mllm.models.checkpoint_keys import detect_layout, list_checkpoint_keys, rename_key
from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
from spatial_mllm.models.tiny import tiny_model, tiny_processor
from spatial_mllm.models.vggt import VGGT

V11 = [(r"^model\.visual\.", "visual."), (r"^model\.language_model\.", "model."),
       (r"^spatial_encoder\.vggt_model\.", "spatial_encoder.vggt_model.")]
V10 = [(r"^model\.visual\.", "visual."), (r"^model\.language_model\.", "model."),
       (r"^spatial_encoder\.vggt_model\.", "vggt."),
       (r"^connector\.ln_q\.", "vggt_embedding_merger.token_merge_ln_q."),
       (r"^connector\.mlp\.", "vggt_embedding_merger.token_merge_mlp."),
       (r"^connector\.ln_out\.", "vggt_embedding_merger.vgg_to_language_ln_q."),
       (r"^connector\.mlp_out\.", "vggt_embedding_merger.vgg_to_language_mlp.")]


def to_official(sd, rules):
    out = {}
    for k, v in sd.items():
        for src, dst in rules:
            if re.search(src, k):
                k = re.sub(src, dst, k)
                break
        out[k] = v.contiguous()
    return out


def full_vggt_heads(model, prefix):
    """Head tensors a full official VGGT carries (camera/depth/point from a tiny VGGT, plus a track head)."""
    cfg = model.config.spatial_config.to_dict()
    cfg.update(enable_camera=True, enable_depth=True, enable_point=True)
    from spatial_mllm.models.vggt import VGGTConfig

    full = VGGT(VGGTConfig.from_dict(cfg))
    heads = {f"{prefix}{k}": v for k, v in full.state_dict().items() if not k.startswith("aggregator.")}
    heads[f"{prefix}track_head.fnet.norm.weight"] = torch.ones(4)
    return heads


def qwen451_config(model, extra):
    """A config.json in the transformers-4.51 style (text fields flat at the top level)."""
    cfg = model.config.to_dict()
    text = cfg.pop("text_config")
    for k in ("spatial_config", "connector_config", "transformers_version"):
        cfg.pop(k, None)
    text.pop("model_type", None)
    return {**cfg, **text, **extra}


@pytest.fixture(scope="module")
def batch(tok):
    proc = tiny_processor(tok)
    rng = np.random.default_rng(3)
    return proc(proc.build_prompt("Where is the lamp?"), videos=[list((rng.random((4, 56, 84, 3)) * 255).astype(np.uint8))])


@pytest.mark.parametrize("release", ["v1.1", "v1.0"])
def test_official_namings_load_strictly_with_same_logits(tok, batch, tmp_path, release):
    connector = "mlp_add" if release == "v1.1" else "mlp2_add"
    ours = tiny_model(tok, connector=connector, seed=1)
    sd = to_official(ours.state_dict(), V11 if release == "v1.1" else V10)
    prefix = "spatial_encoder.vggt_model." if release == "v1.1" else "vggt."
    sd.update(full_vggt_heads(ours, prefix))
    save_file(sd, str(tmp_path / "model.safetensors"))
    spatial = ours.config.spatial_config.to_dict()
    if release == "v1.1":  # official: model_type spatial-mllm, connector_config with connector_type
        extra = {"model_type": "spatial-mllm", "architectures": ["SpatialMLLMForConditionalGeneration"],
                 "spatial_config": {k: spatial[k] for k in spatial if k not in ("enable_camera", "enable_depth",
                                                                                 "enable_point")},
                 "connector_config": {"connector_type": "mlp_add", "spatial_embeds_layer_idx": -1}}
    else:  # official v1.0: a plain Qwen2.5-VL config (the tiny VGGT's sizes have to be told somehow)
        extra = {"model_type": "qwen2_5_vl", "spatial_config": spatial}
    (tmp_path / "config.json").write_text(json.dumps(qwen451_config(ours, extra)))
    assert detect_layout(list_checkpoint_keys(tmp_path)) == release

    loaded, info = SpatialMLLMForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert loaded.config.connector_config["type"] == connector
    with torch.no_grad():
        assert torch.equal(loaded.eval()(**batch).logits, ours(**batch).logits)


def test_missing_tensor_is_an_error_naming_it(tok, tmp_path):
    ours = tiny_model(tok)
    ours.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    sd = load_file(str(tmp_path / "model.safetensors"))
    victim = "connector.mlp.2.bias"
    del sd[victim]
    sd["connector.extra.weight"] = torch.zeros(2)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyError, match=re.escape(victim)) as err:
        SpatialMLLMForConditionalGeneration.from_pretrained(tmp_path)
    assert "connector.extra.weight" in str(err.value)


def test_rename_key_table():
    assert rename_key("visual.blocks.0.attn.qkv.weight") == "model.visual.blocks.0.attn.qkv.weight"
    assert rename_key("model.layers.3.mlp.up_proj.weight") == "model.language_model.layers.3.mlp.up_proj.weight"
    assert rename_key("model.visual.merger.ln_q.weight") == "model.visual.merger.ln_q.weight"
    assert rename_key("vggt.aggregator.camera_token") == "spatial_encoder.vggt_model.aggregator.camera_token"
    assert rename_key("vggt_embedding_merger.vgg_to_language_mlp.2.bias") == "connector.mlp_out.2.bias"
    assert rename_key("connector.mlp.0.weight") == "connector.mlp.0.weight"


def test_from_qwen_and_vggt_builds_the_sft_start(tok, batch, tmp_path):
    donor = tiny_model(tok, seed=2)
    qwen_dir, vggt_dir = tmp_path / "qwen", tmp_path / "vggt"
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = donor.config.to_dict()
    for k in ("model_type", "spatial_config", "connector_config", "architectures"):
        cfg.pop(k, None)
    qwen = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg))
    qwen.load_state_dict({k: v for k, v in donor.state_dict().items()
                          if not k.startswith(("spatial_encoder.", "connector."))})
    qwen.save_pretrained(qwen_dir)
    donor.spatial_encoder.vggt_model.save_pretrained(vggt_dir)
    model = SpatialMLLMForConditionalGeneration.from_qwen_and_vggt(qwen_dir, vggt_dir, connector="mlp_add")
    sd, ref = model.state_dict(), donor.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in ref if not k.startswith("connector."))
    assert not torch.equal(sd["connector.mlp.0.weight"], ref["connector.mlp.0.weight"])  # fresh connector
    assert model.connector.mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.2)  # Qwen's init
    assert torch.all(model.connector.mlp[0].bias == 0) and torch.all(model.connector.ln_q.weight == 1)
    with torch.no_grad():
        assert torch.isfinite(model.eval()(**batch).logits).all()
