"""SpatialMLLM on the tiny preset: forward/backward, generate with KV cache, batching, parity with plain
Qwen2.5-VL, the spatial branch's contribution, bad inputs."""

import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
from spatial_mllm.models.tiny import tiny_config, tiny_model


def frames(n, h, w, seed=0):
    return list((np.random.default_rng(seed).random((n, h, w, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def batch1(proc):
    return proc(proc.build_prompt("How many chairs are in this room?"), videos=[frames(4, 60, 80)])


def plain_qwen_logits(model, batch):
    """A transformers Qwen2_5_VLForConditionalGeneration with the same Qwen weights, fed original-rule ids."""
    cfg = model.config.to_dict()
    for k in ("model_type", "spatial_config", "connector_config", "architectures"):
        cfg.pop(k, None)
    from transformers import Qwen2_5_VLConfig

    plain = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg)).eval()
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith(("spatial_encoder.", "connector."))}
    plain.load_state_dict(sd, strict=True)
    pos, _ = model.model.get_rope_index(batch["input_ids"], video_grid_thw=batch["video_grid_thw"],
                                        second_per_grid_ts=batch["second_per_grid_ts"],
                                        attention_mask=batch["attention_mask"])
    keep = ("input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts",
            "mm_token_type_ids")
    with torch.no_grad():
        return plain(**{k: batch[k] for k in keep}, position_ids=pos).logits


def test_forward_backward_trains_the_official_sft_parts(tok, batch1):
    model = tiny_model(tok).train()
    table = model.set_trainable(verbose=False)
    assert "connector" in table and "total" in table
    labels = batch1["input_ids"].clone()
    out = model(**batch1, labels=labels)
    assert out.logits.shape == (*batch1["input_ids"].shape, model.config.text_config.vocab_size)
    out.loss.backward()
    groups = model.parameter_groups()
    for name in ("merger", "connector", "llm"):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in groups[name] if p.dim() > 1), name
    for name in ("vision", "spatial"):
        assert all(not p.requires_grad and p.grad is None for p in groups[name]), name


def test_generate_with_kv_cache_equals_without(tok, batch1):
    model = tiny_model(tok)
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    g1 = model.generate(**batch1, use_cache=True, **kw)
    g2 = model.generate(**batch1, use_cache=False, **kw)
    assert g1.shape[1] == batch1["input_ids"].shape[1] + 6
    assert torch.equal(g1, g2)


def test_generate_derives_mm_token_type_ids(tok, batch1):
    model = tiny_model(tok)
    b = {k: v for k, v in batch1.items() if k != "mm_token_type_ids"}
    assert torch.equal(model.generate(**b, max_new_tokens=3, do_sample=False),
                       model.generate(**batch1, max_new_tokens=3, do_sample=False))


def test_batch_of_videos_of_different_sizes_matches_single_runs(tok, proc):
    model = tiny_model(tok)
    qs = ["How big is this room in square meters?", "Count the chairs."]
    vids = [frames(4, 60, 80, 1), frames(6, 100, 56, 2)]
    batch = proc([proc.build_prompt(q) for q in qs], videos=vids)
    with torch.no_grad():
        both = model(**batch).logits
        for i in range(2):
            one = proc(proc.build_prompt(qs[i]), videos=[vids[i]])
            single = model(**one).logits[0]
            real = batch["attention_mask"][i].bool()
            torch.testing.assert_close(both[i][real], single, atol=1e-4, rtol=1e-4)


def test_save_and_load_give_identical_logits(tok, batch1, tmp_path):
    model = tiny_model(tok)
    model.save_pretrained(tmp_path)
    loaded = SpatialMLLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(**batch1).logits, loaded(**batch1).logits)


def test_connector_none_equals_plain_qwen(tok, batch1):
    model = tiny_model(tok, connector="none")
    assert model.spatial_encoder is None and model.connector is None
    with torch.no_grad():
        ours = model(**batch1).logits
    torch.testing.assert_close(ours, plain_qwen_logits(model, batch1), atol=1e-5, rtol=1e-5)


def test_zero_connector_output_equals_plain_qwen(tok, batch1):
    model = tiny_model(tok)
    with torch.no_grad():
        model.connector.mlp[2].weight.zero_()
        model.connector.mlp[2].bias.zero_()
        ours = model(**batch1).logits
    torch.testing.assert_close(ours, plain_qwen_logits(model, batch1), atol=1e-5, rtol=1e-5)


def test_spatial_branch_contributes(tok, batch1):
    model = tiny_model(tok)
    ids = batch1["input_ids"][0]
    first_video = int((ids == model.config.video_token_id).nonzero()[0])
    with torch.no_grad():
        before = model(**batch1).logits
        for p in model.spatial_encoder.parameters():  # change only VGGT
            p.add_(0.05 * torch.randn_like(p))
        after = model(**batch1).logits
    assert torch.equal(before[:, :first_video], after[:, :first_video])  # causal: earlier tokens unchanged
    assert (before[:, first_video:] - after[:, first_video:]).abs().max() > 1e-3


def test_v10_connector_and_images(tok, proc):
    model = tiny_model(tok, connector="mlp2_add")
    assert model.connector.kind == "mlp2_add" and model.connector.order == "thwd"
    img = frames(1, 70, 90)[0]
    batch = proc(proc.build_prompt("What is this?", num_videos=1, num_images=1), videos=[frames(2, 56, 56)],
                 images=[img])
    assert batch["spatial_pixel_values_images"][0].shape[0] == 3
    with torch.no_grad():
        full = model(**batch).logits
        batch["spatial_pixel_values_images"] = [torch.zeros_like(batch["spatial_pixel_values_images"][0])]
        other = model(**batch).logits
    assert not torch.equal(full, other)  # images go through VGGT (repeated to 2 frames) too
    del batch["spatial_pixel_values_images"]
    with pytest.raises(ValueError, match="spatial_pixel_values_images"):
        model(**batch)


def test_bad_spatial_frames_name_the_video(tok, proc):
    model = tiny_model(tok)
    batch = proc([proc.build_prompt("a"), proc.build_prompt("b")], videos=[frames(4, 56, 56), frames(4, 56, 84)])
    batch["spatial_pixel_values_videos"][1] = batch["spatial_pixel_values_videos"][1][:, :, :, :56]
    with pytest.raises(ValueError, match="video 1: spatial frames are 4x56x56"):
        model(**batch)
    del batch["spatial_pixel_values_videos"]
    with pytest.raises(ValueError, match="spatial_pixel_values_videos"):
        model(**batch)


def test_bf16_spatial_encoder_runs(tok, batch1):
    model = tiny_model(tok).to(torch.bfloat16)
    with torch.no_grad():
        out = model(**batch1).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_tiny_config_roundtrip():
    c = tiny_config(connector="mlp2_add")
    assert c.connector_config == {"type": "mlp2_add", "spatial_embeds_layer_idx": -1}
    assert not c.spatial_config.enable_point
    with pytest.raises(ValueError, match="connector_config.type"):
        tiny_config(connector="bogus")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_generate(tok, batch1):
    model = tiny_model(tok).to("cuda", torch.bfloat16)
    b = {k: ([t.cuda() for t in v] if isinstance(v, list) else v.cuda()) for k, v in batch1.items()}
    out = model.generate(**b, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == batch1["input_ids"].shape[1] + 3
