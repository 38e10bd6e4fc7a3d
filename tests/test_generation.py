"""Every path that generates runs the model with its spatial branch (issue: generation dropped VGGT).

The reference is always the plain path: full ``forward`` calls without a KV cache, one per new token, on
the raw pixels + spatial frames — never ``generate`` compared with itself. Tolerance: logits within 1e-5
(fp32, the tiny model; observed differences are ~2e-7, the KV cache's summation order).
"""

import numpy as np
import pytest
import torch

from spatial_mllm.models.modeling import SpatialFusedOutput
from spatial_mllm.models.tiny import tiny_model

ATOL = 1e-5
N_NEW = 5


def frames(n, h, w, seed=0):
    return list((np.random.default_rng(seed).random((n, h, w, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok).eval()


@pytest.fixture(scope="module")
def inputs(proc):
    """One processor batch per modality: a video, an image, and 2 videos of different sizes (left padding)."""
    img = frames(1, 70, 90, seed=3)[0]
    return {
        "video": proc(proc.build_prompt("How many chairs are in this room?"), videos=[frames(4, 60, 80)]),
        "image": proc(proc.build_prompt("What is this?", num_videos=0, num_images=1), images=[img]),
        "batch": proc([proc.build_prompt("How many chairs?"),
                       proc.build_prompt("How far is the sofa from the lamp, in metres?")],
                      videos=[frames(4, 60, 80, seed=1), frames(4, 56, 112, seed=2)]),
    }


def _spatial_name(batch):
    return "spatial_pixel_values_videos" if "spatial_pixel_values_videos" in batch else "spatial_pixel_values_images"


def forward_decode(model, batch, n, *, sample=False, temperature=1.0, eos_ids=(), pad_id=0, suppress=()):
    """The plain path: ``n`` full forward calls (no cache), argmax or ``multinomial`` as transformers'
    sampler does (suppressed ids at -inf, logits / temperature, softmax, one draw per row per step; rows
    that ended get ``pad_id``). Returns ``(new tokens [B, n'], raw last-token logits per step)``."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rest = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    new, steps = [], []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **rest).logits[:, -1].float()
            steps.append(logits)
            scores = logits.clone()
            if suppress:
                scores[:, list(suppress)] = float("-inf")
            if sample:
                tok = torch.multinomial((scores / temperature).softmax(-1), num_samples=1).squeeze(1)
            else:
                tok = scores.argmax(-1)
            tok = torch.where(done, torch.full_like(tok, pad_id), tok)
            done |= torch.isin(tok, torch.tensor(list(eos_ids), dtype=tok.dtype))
            new.append(tok)
            ids = torch.cat([ids, tok[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            if eos_ids and done.all():
                break
    return torch.stack(new, 1), steps


def gen(model, batch, **kw):
    return model.generate(**batch, output_logits=True, return_dict_in_generate=True, **kw)


# ---- (1) generate = the plain forward path ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["video", "image", "batch"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generate_equals_forward_argmax_loop(model, inputs, kind, use_cache):
    batch = inputs[kind]
    ref_tokens, ref_logits = forward_decode(model, batch, N_NEW)
    out = gen(model, batch, max_new_tokens=N_NEW, min_new_tokens=N_NEW, do_sample=False, use_cache=use_cache)
    L = batch["input_ids"].shape[1]
    assert torch.equal(out.sequences[:, L:], ref_tokens)
    for k, (g, f) in enumerate(zip(out.logits, ref_logits)):
        assert torch.allclose(g, f, atol=ATOL, rtol=0), (kind, k, (g - f).abs().max())


def test_sampled_groups_score_like_forward(model, inputs):
    """num_return_sequences > 1 (GRPO groups), sampled: every returned row's step logits are the forward's
    on that row's own prompt + sampled tokens."""
    batch = inputs["batch"]
    torch.manual_seed(1)
    R = 3
    out = gen(model, batch, max_new_tokens=N_NEW, min_new_tokens=N_NEW, do_sample=True, temperature=0.7,
              top_k=0, num_return_sequences=R)
    L = batch["input_ids"].shape[1]
    for row in range(out.sequences.shape[0]):
        src = row // R
        single = {k: (v[src:src + 1] if k in ("input_ids", "attention_mask", "second_per_grid_ts",
                                              "video_grid_thw") else v) for k, v in batch.items()}
        single["spatial_pixel_values_videos"] = [batch["spatial_pixel_values_videos"][src]]
        grid = batch["video_grid_thw"]
        sizes = [int(g.prod()) for g in grid]
        single["pixel_values_videos"] = torch.split(batch["pixel_values_videos"], sizes)[src]
        ids = torch.cat([single["input_ids"], out.sequences[row:row + 1, L:]], 1)
        mask = torch.cat([single["attention_mask"], torch.ones(1, N_NEW, dtype=single["attention_mask"].dtype)], 1)
        with torch.no_grad():
            logits = model(**{**single, "input_ids": ids, "attention_mask": mask}).logits[0, L - 1:-1]
        got = torch.stack([s[row] for s in out.logits])
        assert torch.allclose(got, logits, atol=ATOL, rtol=0), (row, (got - logits).abs().max())


def test_beam_search_scores_are_forward_log_probs(model, inputs):
    """Beam search (3 beams, 2 returned): each sequence's score (length_penalty 0: the sum of its tokens'
    log-probs) equals the sum computed by the plain forward on that sequence."""
    batch = inputs["video"]
    out = model.generate(**batch, num_beams=3, num_return_sequences=2, max_new_tokens=4, min_new_tokens=4,
                         length_penalty=0.0, do_sample=False, output_scores=True, return_dict_in_generate=True)
    L = batch["input_ids"].shape[1]
    for row in range(2):
        ids = out.sequences[row:row + 1]
        with torch.no_grad():
            logp = model(**{**batch, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits[0, L - 1:-1]
        total = logp.float().log_softmax(-1).gather(-1, ids[0, L:, None]).sum()
        assert float(out.sequences_scores[row]) == pytest.approx(float(total), abs=1e-4)


# ---- (2) sensitivity: the spatial frames reach generate ------------------------------------------------------
@pytest.mark.parametrize("kind", ["video", "image", "batch"])
def test_changing_only_the_vggt_frames_changes_generate(model, inputs, kind):
    batch = inputs[kind]
    name = _spatial_name(batch)
    other = {**batch, name: [1.0 - f for f in batch[name]]}  # the ViT pixels are untouched
    a = gen(model, batch, max_new_tokens=1, do_sample=False).logits[0]
    b = gen(model, other, max_new_tokens=1, do_sample=False).logits[0]
    assert (a - b).abs().max() > 1e-3
    with torch.no_grad():  # and generate moves exactly as the forward does
        fa, fb = model(**batch).logits[:, -1], model(**other).logits[:, -1]
    assert torch.allclose(b, fb, atol=ATOL, rtol=0) and torch.allclose(a, fa, atol=ATOL, rtol=0)


# ---- (5) pre-encoded features ---------------------------------------------------------------------------------
def _split_raw(batch):
    visual = ("pixel_values_videos", "spatial_pixel_values_videos", "pixel_values", "spatial_pixel_values_images")
    raw = {k: batch[k] for k in visual if k in batch}
    raw.update({k: batch[k] for k in ("video_grid_thw", "image_grid_thw") if k in batch})
    rest = {k: v for k, v in batch.items() if k not in visual}
    return raw, rest


@pytest.mark.parametrize("kind", ["video", "image", "batch"])
def test_fused_mm_encoder_outputs_equal_raw_pixels(model, inputs, kind):
    batch = inputs[kind]
    raw, rest = _split_raw(batch)
    with torch.no_grad():
        fused = model.encode_visual_inputs(**raw)
        assert all(isinstance(v, SpatialFusedOutput) for v in fused.values())
        assert torch.equal(model(**rest, mm_encoder_outputs=fused).logits, model(**batch).logits)
    g_raw = gen(model, batch, max_new_tokens=3, do_sample=False)
    g_pre = gen(model, rest, mm_encoder_outputs=model.encode_visual_inputs(**raw), max_new_tokens=3,
                do_sample=False)
    assert torch.equal(g_raw.sequences, g_pre.sequences)
    assert all(torch.equal(a, b) for a, b in zip(g_raw.logits, g_pre.logits))


def test_plain_qwen_features_are_refused(model, inputs):
    batch = inputs["video"]
    raw, rest = _split_raw(batch)
    with torch.no_grad():
        plain = {"video": model.model.get_video_features(raw["pixel_values_videos"], raw["video_grid_thw"],
                                                         return_dict=True)}
    with pytest.raises(ValueError, match=r"mm_encoder_outputs\['video'\].*spatial"):
        model(**rest, mm_encoder_outputs=plain)
    with pytest.raises(ValueError, match=r"mm_encoder_outputs\['video'\]"):
        model.generate(**rest, mm_encoder_outputs=plain, max_new_tokens=2)
    fused = model.encode_visual_inputs(**raw)
    with pytest.raises(ValueError, match="both mm_encoder_outputs"):
        model(**batch, mm_encoder_outputs=fused)


def test_missing_spatial_frames_are_errors_in_generate(model, inputs):
    batch = dict(inputs["video"])
    no_spatial = {k: v for k, v in batch.items() if k != "spatial_pixel_values_videos"}
    with pytest.raises(ValueError, match="spatial_pixel_values_videos"):
        model.generate(**no_spatial, max_new_tokens=2)
    no_pixels = {k: v for k, v in batch.items() if k != "pixel_values_videos"}
    with pytest.raises(ValueError, match="spatial_pixel_values_videos given without pixel_values_videos"):
        model.generate(**no_pixels, max_new_tokens=2)
    img = {k: v for k, v in inputs["image"].items() if k != "spatial_pixel_values_images"}
    with pytest.raises(ValueError, match="spatial_pixel_values_images"):
        model.generate(**img, max_new_tokens=2)


def test_2d_only_model_takes_plain_features(tok, inputs):
    """connector "none" has no spatial branch: Qwen's own features are its whole visual input."""
    model = tiny_model(tok, connector="none").eval()
    raw, rest = _split_raw(inputs["video"])
    with torch.no_grad():
        plain = {"video": model.model.get_video_features(raw["pixel_values_videos"], raw["video_grid_thw"],
                                                         return_dict=True)}
        assert torch.equal(model(**rest, mm_encoder_outputs=plain).logits, model(**inputs["video"]).logits)


# ---- (3) GRPO: sampling and the loss see the same policy -----------------------------------------------------
def _rows(n=2):
    return [{"prompt": f"How many chairs are in room {i}? Answer in <answer></answer>.",
             "video": frames(4, 56 + 28 * i, 84, seed=10 + i), "question_type": "object_counting",
             "ground_truth": str(i + 2), "options": None} for i in range(n)]


def _trainer(tok, proc, tmp_path, **kw):
    from spatial_mllm.train.grpo import GRPOConfig, GRPOTrainer

    base = dict(output_dir=str(tmp_path), model="tiny", stages=["grpo"], num_generations=4, prompts_per_step=2,
                max_new_tokens=6, temperature=0.7, beta=0.04, max_steps=1, resume=False, num_iterations=2,
                reward_funcs=["format", "accuracy", "mra"])
    base.update(kw)
    cfg = GRPOConfig(**base)
    return GRPOTrainer(cfg, _rows(), model=tiny_model(tok), processor=proc, model_source="tiny")


@pytest.mark.parametrize("share_prefix,encoder_cache", [(False, False), (True, False), (True, True)])
def test_grpo_sampling_logps_equal_loss_logps_and_ratio_is_one(tok, proc, tmp_path, share_prefix, encoder_cache):
    """Also with the shared prefill (each prompt's G samples from one prefill of its video prefix) and the
    frozen encoders' outputs reused: the log-probs recorded while sampling equal the loss forward's on the
    full (prompt, completion)."""
    trainer = _trainer(tok, proc, tmp_path, share_prefix=share_prefix, encoder_cache=encoder_cache)
    torch.manual_seed(0)
    ro = trainer.generate(trainer.rows)
    assert ro.sample_logps.shape == ro.completion_ids.shape
    mask = ro.completion_mask.bool()
    trainer.model.train()
    with torch.no_grad():
        logp, _ = trainer._forward_logps(trainer.model, ro, list(range(len(ro.texts))))
    diff = (logp - ro.sample_logps).abs()[mask]
    assert diff.max() < ATOL, diff.max()
    trainer.score(ro)
    trainer.reference_logps(ro)
    st = trainer.optimize(ro, check_sampling=True)
    assert st["ratio"] / st["tokens"] == 1.0 and st["clipped"] == 0.0  # exactly, on the first inner step
    assert st["sampling_logp_max_diff"] < ATOL


# ---- (4) the public generating functions --------------------------------------------------------------------
def test_evaluate_policy_answers_as_the_forward_path(tok, proc):
    from spatial_mllm.train.grpo import (
        _eos_ids,
        collate_visual,
        encode_prompts,
        evaluate_policy,
        suppressed_ids,
    )

    model = tiny_model(tok).eval()
    rows = _rows()
    got = evaluate_policy(model, proc, rows, max_new_tokens=N_NEW, batch_size=2)
    enc, visual = encode_prompts(proc, rows)
    ref, _ = forward_decode(model, {**enc, **collate_visual(visual, "cpu")}, N_NEW, eos_ids=_eos_ids(tok),
                            pad_id=tok.pad_token_id, suppress=suppressed_ids(tok))
    assert [r["completion"] for r in got] == proc.batch_decode(ref, skip_special_tokens=True)


def test_cold_start_sampler_samples_as_the_forward_path(tok, proc, tmp_path):
    from spatial_mllm.train.cold_start import sample_teacher
    from spatial_mllm.train.grpo import GRPOConfig, _eos_ids, collate_visual, encode_prompts, suppressed_ids

    model = tiny_model(tok).eval()
    rows = _rows()
    cfg = GRPOConfig(output_dir=str(tmp_path), model="tiny", cold_start_teacher="policy", cold_start_k=2,
                     cold_start_temperature=0.9, max_new_tokens=N_NEW, prompts_per_step=2, seed=3)
    got = sample_teacher(cfg, rows, policy=model, processor=proc)
    torch.manual_seed(cfg.seed)  # the replay: the same draws from the plain forward's distributions
    enc, visual = encode_prompts(proc, rows)
    k = cfg.cold_start_k
    batch = {"input_ids": enc["input_ids"].repeat_interleave(k, 0),
             "attention_mask": enc["attention_mask"].repeat_interleave(k, 0),
             **collate_visual([v for v in visual for _ in range(k)], "cpu")}
    ref, _ = forward_decode(model, batch, N_NEW, sample=True, temperature=cfg.cold_start_temperature,
                            eos_ids=_eos_ids(tok), pad_id=tok.pad_token_id, suppress=suppressed_ids(tok))
    texts = proc.batch_decode(ref, skip_special_tokens=True)
    assert got == [texts[i:i + k] for i in range(0, len(texts), k)]


def test_ask_answers_as_the_forward_path(tok, proc):
    from spatial_mllm.models.ask import ask

    model = tiny_model(tok).eval()
    video = frames(4, 60, 80, seed=7)
    proc.num_frames = 4
    got = ask((model, proc), video, "How many chairs?", frames=4, max_new_tokens=N_NEW, min_new_tokens=N_NEW)
    batch = proc(proc.build_prompt("How many chairs?"), videos=[video])
    ref, _ = forward_decode(model, batch, N_NEW)
    assert got == proc.batch_decode(ref)[0].strip()


# ---- the same on CUDA in bf16, at the paper's widths ----------------------------------------------------------
def check_3b_shape_generate(device: str, frames: int, H: int, W: int, tol: float) -> None:
    """(1) on the 3B-shape model (real widths and vocabulary, 2 blocks each), random weights, bf16: greedy
    ``generate``'s step logits equal the plain forward's on the same sequence within ``tol``, and each token
    is the forward's argmax up to ``tol`` (bf16 logits tie often; an exact token match would test rounding)."""
    import sys
    from pathlib import Path

    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
    from spatial_mllm.models.tiny import qwen25_vl_3b_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_model import make_inputs

    torch.manual_seed(0)
    cfg = qwen25_vl_3b_config(layers=2)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = SpatialMLLMForConditionalGeneration(cfg).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    batch, _ = make_inputs(cfg, frames, H, W, device, torch.bfloat16)
    out = gen(model, batch, max_new_tokens=N_NEW, min_new_tokens=N_NEW, do_sample=False)
    L = batch["input_ids"].shape[1]
    with torch.no_grad():
        full = model(**{**batch, "input_ids": out.sequences,
                        "attention_mask": torch.ones_like(out.sequences)}).logits[0, L - 1:-1].float()
    for k, g in enumerate(out.logits):
        f = full[k]
        assert (g[0].float() - f).abs().max() < tol, (k, (g[0].float() - f).abs().max())
        assert f.max() - f[out.sequences[0, L + k]] < tol
    other = {**batch, "spatial_pixel_values_videos": [1.0 - v for v in batch["spatial_pixel_values_videos"]]}
    moved = gen(model, other, max_new_tokens=1, do_sample=False).logits[0]
    assert (moved.float() - out.logits[0].float()).abs().max() > tol  # VGGT reaches generate at this size too


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_3b_shape_generate_equals_forward():
    check_3b_shape_generate("cuda", 16, 476, 644, tol=0.05)


def test_bf16_3b_shape_generate_equals_forward_on_cpu():
    """The same check on CPU at small frames (4 of 112×168): real widths, vocabulary and connector."""
    check_3b_shape_generate("cpu", 4, 112, 168, tol=0.05)


def test_grpo_passes_completion_ids_to_rewards(tok, proc, tmp_path):
    """The length reward (Video-R1, in tokens) reads TRL's ``completion_ids``: the trainer passes them."""
    trainer = _trainer(tok, proc, tmp_path, reward_funcs=["accuracy", "length"], reward_weights=[1.0, 0.2])
    torch.manual_seed(0)
    ro = trainer.generate(trainer.rows)
    trainer.score(ro)
    length_col = ro.rewards_per_func[:, 1]
    assert not torch.isnan(length_col).any()
    assert set(length_col.tolist()) <= {0.0, 1.0}


def test_grpo_loss_forward_encodes_each_video_once(tok, proc, tmp_path):
    """share_visual: the G rows of a prompt read one encoding of its video (video_index) — the same log-probs
    and gradients as encoding it per row, and VGGT runs once per distinct video."""
    from spatial_mllm.train.grpo import per_token_logps

    trainer = _trainer(tok, proc, tmp_path, encoder_cache=False)  # raw pixels (trunks: test_encoder_trunks.py)
    torch.manual_seed(0)
    ro = trainer.generate(trainer.rows)
    model = trainer.accelerator.unwrap_model(trainer.model)
    idx = list(range(len(ro.texts)))
    calls = []
    hook = model.spatial_encoder.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    results = {}
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        inputs = ro.model_inputs(idx, "cpu", share_visual=share)
        C = ro.completion_ids.shape[1]
        logits = model(**inputs, use_cache=False, logits_to_keep=C + 1).logits[:, :-1]
        logp, _ = per_token_logps(logits, ro.completion_ids, 0.7)
        (logp * ro.completion_mask).sum().backward()
        results[share] = (logp.detach(), model.connector.ln_q.weight.grad.clone())
    hook.remove()
    assert calls == [len(idx), len(trainer.rows)]  # 8 videos encoded, then 2
    assert torch.allclose(results[True][0], results[False][0], atol=ATOL, rtol=0)
    assert torch.allclose(results[True][1], results[False][1], atol=1e-5, rtol=1e-4)


def test_video_index_picks_which_video_each_block_shows(model, proc):
    """video_index is an input: swapping which distinct video each row's block shows swaps the rows' logits,
    and [0, 1] over two distinct videos equals passing both videos per row."""
    a, b = frames(4, 56, 84, seed=21), frames(4, 56, 84, seed=22)
    q = [proc.build_prompt("How many chairs?")] * 2
    per_row = proc(q, videos=[a, b])
    distinct = {k: per_row[k] for k in ("input_ids", "attention_mask")}
    distinct.update(pixel_values_videos=per_row["pixel_values_videos"], video_grid_thw=per_row["video_grid_thw"],
                    second_per_grid_ts=per_row["second_per_grid_ts"],
                    spatial_pixel_values_videos=per_row["spatial_pixel_values_videos"])
    with torch.no_grad():
        plain = model(**per_row).logits[:, -1]
        same = model(**distinct, video_index=[0, 1]).logits[:, -1]
        swapped = model(**distinct, video_index=[1, 0]).logits[:, -1]
    assert torch.allclose(same, plain, atol=ATOL, rtol=0)
    assert (swapped - same).abs().max() > 1e-3
    assert torch.allclose(swapped[0], plain[1], atol=ATOL, rtol=0) and torch.allclose(swapped[1], plain[0], atol=ATOL, rtol=0)
