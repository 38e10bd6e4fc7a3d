"""The frozen encoders' outputs computed once (``VisualTrunk``, ``EncoderTrunkCache``) give what the raw
pixels give: features bit-identical, logits and gradients equal, GRPO rollouts and log-probs equal (≤ 1e-5);
the trunk is a declared input (changing it changes the output); a cache hit returns the same tensors, a
changed frozen weight / video / setting misses, a trained merger/connector does not (it is not cached).

The reference is always the raw-pixel path (``pixel_values_videos`` + ``spatial_pixel_values_videos``).
"""

import numpy as np
import pytest
import torch

from spatial_mllm.models.feature_cache import EncoderTrunkCache, processor_settings
from spatial_mllm.models.tiny import tiny_model

ATOL = 1e-5


def frames(n, h, w, seed=0):
    return list((np.random.default_rng(seed).random((n, h, w, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def batch(proc):
    """2 videos of different sizes whose ViT windows are not trivial (several windows per frame)."""
    return proc([proc.build_prompt("How many chairs?"), proc.build_prompt("How far is the sofa from the lamp?")],
                videos=[frames(4, 224, 308, seed=1), frames(4, 308, 196, seed=2)])


def _raw(b):
    return {k: b[k] for k in ("pixel_values_videos", "video_grid_thw", "spatial_pixel_values_videos")}


def _trunk_inputs(model, b):
    with torch.no_grad():
        trunks = model.encode_visual_trunks(b["pixel_values_videos"], b["video_grid_thw"],
                                            b["spatial_pixel_values_videos"])
    rest = {k: v for k, v in b.items() if k not in ("pixel_values_videos", "spatial_pixel_values_videos")}
    return trunks, rest


@pytest.mark.parametrize("connector", ["mlp_add", "none"])
def test_trunk_then_fuse_equals_the_raw_encoding(tok, batch, connector):
    model = tiny_model(tok, connector=connector).eval()
    with torch.no_grad():
        ref = model.encode_visual_inputs(**_raw(batch))["video"].pooler_output
        trunks, _ = _trunk_inputs(model, batch)
        got = model.fuse_visual_trunks(trunks, batch["video_grid_thw"]).pooler_output
    assert (trunks[0].spatial_tokens is None) == (connector == "none")
    assert all(torch.equal(a, b) for a, b in zip(ref, got))


def test_forward_with_trunks_equals_raw_logits_and_gradients(tok, batch):
    """Logits (also through ``video_index``) and the trainable merger's/connector's gradients."""
    model = tiny_model(tok)
    model.set_trainable(verbose=False)  # the official plan: ViT blocks and VGGT frozen
    trunks, rest = _trunk_inputs(model, batch)

    def run(**kw):
        model.zero_grad(set_to_none=True)
        out = model(**kw, use_cache=False).logits
        out.float().pow(2).mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()
                 if p.grad is not None and ("merger" in n or "connector" in n)}
        return out.detach(), grads

    ref, g_ref = run(**batch)
    got, g_got = run(**rest, video_trunks=trunks)
    assert torch.allclose(ref, got, atol=ATOL, rtol=0) and g_ref.keys() == g_got.keys() and g_ref
    for n in g_ref:
        assert torch.allclose(g_ref[n], g_got[n], atol=1e-6, rtol=1e-5), n
    # video_index: the first video shown twice, from one trunk
    two = {k: (v[[0, 0]] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()
           if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        a = model(**two, video_grid_thw=batch["video_grid_thw"][[0, 0]],
                  second_per_grid_ts=batch["second_per_grid_ts"][[0, 0]],
                  pixel_values_videos=batch["pixel_values_videos"][: int(batch["video_grid_thw"][0].prod())].repeat(2, 1),
                  spatial_pixel_values_videos=[batch["spatial_pixel_values_videos"][0]] * 2).logits
        b = model(**two, video_grid_thw=batch["video_grid_thw"][:1], second_per_grid_ts=batch["second_per_grid_ts"][:1],
                  video_trunks=trunks[:1], video_index=[0, 0]).logits
    assert torch.allclose(a, b, atol=ATOL, rtol=0)


def test_trunk_is_a_declared_input(tok, batch):
    """Change only the ViT part, or only the VGGT part, of a trunk: the logits move."""
    model = tiny_model(tok).eval()
    trunks, rest = _trunk_inputs(model, batch)
    with torch.no_grad():
        base = model(**rest, video_trunks=trunks).logits
        vit = [type(t)(t.vit_hidden + 0.5, t.spatial_tokens) for t in trunks]
        vggt = [type(t)(t.vit_hidden, t.spatial_tokens.flip(0)) for t in trunks]  # frames reversed
        for changed in (vit, vggt):
            assert (model(**rest, video_trunks=changed).logits - base).abs().max() > 1e-3


def test_trunk_errors_name_the_argument(tok, batch):
    model = tiny_model(tok)
    trunks, rest = _trunk_inputs(model, batch)
    with pytest.raises(ValueError, match="video_trunks replace pixel_values_videos"):
        model(**batch, video_trunks=trunks)
    model.set_trainable(vision=True, verbose=False)
    with pytest.raises(ValueError, match=r"vision parameters are trainable"):
        model(**rest, video_trunks=trunks)
    model.set_trainable(verbose=False)
    with pytest.raises(ValueError, match=r"video_trunks\[0\] has .* ViT patches"):
        model(**rest, video_trunks=trunks[::-1])
    with pytest.raises(ValueError, match="2 video_trunks but 1"):
        model.fuse_visual_trunks(trunks, batch["video_grid_thw"][:1])


def test_trunk_cache_hits_misses_and_disk(tok, proc, tmp_path):
    model = tiny_model(tok).eval()
    video = frames(4, 60, 80, seed=4)
    b = proc(proc.build_prompt("q"), videos=[video])
    settings = processor_settings(proc)
    cache = EncoderTrunkCache(model, tmp_path / "trunks")
    first = cache.video_trunk(video, b, settings)
    again = cache.video_trunk(video, b, settings)
    assert (cache.misses, cache.hits) == (1, 1)
    assert torch.equal(first.vit_hidden, again.vit_hidden) and torch.equal(first.spatial_tokens, again.spatial_tokens)
    (direct,) = model.encode_visual_trunks(b["pixel_values_videos"], b["video_grid_thw"],
                                           b["spatial_pixel_values_videos"])
    assert torch.equal(first.vit_hidden, direct.vit_hidden)
    fresh = EncoderTrunkCache(model, tmp_path / "trunks")  # a later epoch / run: from disk
    disk = fresh.video_trunk(video, b, settings)
    assert (fresh.hits, fresh.misses) == (1, 0) and torch.equal(disk.spatial_tokens, first.spatial_tokens)

    # a trained merger/connector is NOT part of the trunk: still a hit, and fusing gives the new features
    with torch.no_grad():
        model.connector.ln_q.weight.add_(0.5)
        model.model.visual.merger.mlp[0].weight.mul_(1.5)
    hit = cache.video_trunk(video, b, settings)
    assert cache.hits == 2
    with torch.no_grad():
        fused = model.fuse_visual_trunks([hit], b["video_grid_thw"]).pooler_output[0]
        now = model.encode_visual_inputs(**_raw(b))["video"].pooler_output[0]
    assert torch.equal(fused, now)

    # a changed frozen weight (ViT block, VGGT), video or setting: a miss
    misses = cache.misses
    with torch.no_grad():
        model.model.visual.blocks[0].mlp.down_proj.weight.add_(0.1)
    cache.video_trunk(video, b, settings)
    with torch.no_grad():
        next(model.spatial_encoder.parameters()).add_(0.1)
    cache.video_trunk(video, b, settings)
    cache.video_trunk(frames(4, 60, 80, seed=5), b, settings)
    cache.video_trunk(video, b, {**settings, "num_frames": 2})
    assert cache.misses == misses + 4


def _rows(n=2):
    return [{"prompt": f"How many chairs are in room {i}? Answer in <answer></answer>.",
             "video": frames(4, 112, 140 + 28 * i, seed=10 + i), "question_type": "object_counting",
             "ground_truth": str(i + 2), "options": None} for i in range(n)]


@pytest.mark.parametrize("share_prefix", [False, True])
def test_grpo_rollouts_and_logps_with_trunks_equal_raw(tok, proc, share_prefix):
    """The same sampled tokens under one seed, sampling log-probs and loss log-probs (policy and reference)
    within 1e-5, with and without the frozen encoders' outputs reused."""
    from spatial_mllm.train.grpo import generate_completions

    model = tiny_model(tok)
    model.set_trainable(verbose=False)
    rows = _rows()
    kw = dict(temperature=0.9, max_new_tokens=6, share_prefix=share_prefix)
    torch.manual_seed(3)
    raw = generate_completions(model, proc, rows, 3, **kw)
    torch.manual_seed(3)
    cache = EncoderTrunkCache(model)
    got = generate_completions(model, proc, rows, 3, trunk_cache=cache, **kw)
    assert cache.misses == 2 and all("video_trunk" in v for v in got.visual)
    assert torch.equal(raw.completion_ids, got.completion_ids)
    assert (raw.sample_logps - got.sample_logps).abs().max() < ATOL
    idx = list(range(len(rows) * 3))
    for share_visual in (False, True):
        a = model(**raw.model_inputs(idx, "cpu", share_visual=share_visual), use_cache=False).logits
        b_in = got.model_inputs(idx, "cpu", share_visual=share_visual)
        assert "video_trunks" in b_in and "pixel_values_videos" not in b_in
        b = model(**b_in, use_cache=False).logits
        assert (a - b).abs().max() < ATOL


def test_grpo_step_with_encoder_cache_equals_without(tok, proc, tmp_path):
    """One whole GRPO step (rollouts, rewards, reference, μ = 2 inner steps): the same updated weights."""
    from spatial_mllm.train.grpo import GRPOConfig, GRPOTrainer

    def step(encoder_cache, cache_dir=None):
        cfg = GRPOConfig(output_dir=str(tmp_path / str(encoder_cache)), model="tiny", stages=["grpo"],
                         num_generations=3, prompts_per_step=2, max_new_tokens=6, temperature=0.9, beta=0.04,
                         max_steps=1, resume=False, num_iterations=2, encoder_cache=encoder_cache,
                         encoder_cache_dir=cache_dir, reward_funcs=["format", "accuracy", "mra"])
        trainer = GRPOTrainer(cfg, _rows(), model=tiny_model(tok), processor=proc, model_source="tiny")
        torch.manual_seed(0)
        ro = trainer.generate(trainer.rows)
        trainer.score(ro)
        trainer.reference_logps(ro)
        stats = trainer.optimize(ro, check_sampling=True)
        return trainer, ro, stats

    t0, ro0, s0 = step(False)
    t1, ro1, s1 = step(True, tmp_path / "trunks")
    assert torch.equal(ro0.completion_ids, ro1.completion_ids)
    assert (ro0.ref_logps - ro1.ref_logps).abs().max() < ATOL
    assert s1["sampling_logp_max_diff"] < ATOL and s1["ratio"] / s1["tokens"] == 1.0
    p0 = dict(t0.accelerator.unwrap_model(t0.model).named_parameters())
    for n, p in t1.accelerator.unwrap_model(t1.model).named_parameters():
        assert torch.allclose(p, p0[n], atol=1e-6, rtol=1e-5), n
    assert t1.trunk_cache.misses == 2 and len(list((tmp_path / "trunks").glob("*.safetensors"))) == 2
    # the next epoch over the same videos: hits, the ViT blocks and VGGT do not run
    t1.generate(t1.rows)
    assert t1.trunk_cache.misses == 2 and t1.trunk_cache.hits >= 2


def test_config_refuses_the_cache_with_trained_encoders(tmp_path):
    from spatial_mllm.train.grpo import GRPOConfig

    with pytest.raises(ValueError, match=r"encoder_cache .* \['vision'\]"):
        GRPOConfig(output_dir=str(tmp_path), trainable=["vision", "llm"])
    GRPOConfig(output_dir=str(tmp_path), trainable=["vision", "llm"], encoder_cache=False)
