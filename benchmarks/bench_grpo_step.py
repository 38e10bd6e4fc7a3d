"""One GRPO step (G completions of one prompt + the loss forward/backward), before/after: G full prefills
and G encodings of the video in the loss forward, vs one shared prefill of the video prefix
(``generate_completions(share_prefix=True)``) and one encoding for the G rows (``share_visual``); then the
same with the frozen encoders' outputs reused (``EncoderTrunkCache``, GRPO's ``encoder_cache``): "cold" = the
first epoch (the ViT blocks and VGGT run once for rollout + loss), "warm" = a later epoch over the same video
(they do not run; with ``encoder_cache_dir`` this holds across the whole run).

Per path: seconds of the rollout (sampling G completions), seconds of the loss forward + backward over the
G (prompt, completion) rows, the peak memory (CUDA: ``max_memory_allocated``;
CPU: peak RSS, sampled), and whether the two rollouts are identical under the same sampling seed (one
prompt: both paths draw from ``[G, vocab]`` probabilities each step, so equal distributions give equal
tokens). Model: CPU (default) the 3B-shape model reduced in depth (real widths, vocabulary and connector,
2 blocks each; ``qwen25_vl_3b_config(layers=2)``), fp32, ``--frames`` of ``--height``×``--width``;
``--device cuda`` the full Qwen2.5-VL-3B + VGGT-1B shape in bf16 at 16 frames of 476×644. Random weights.

Usage::

    .venv/bin/python benchmarks/bench_grpo_step.py                 # CPU
    .venv/bin/python benchmarks/bench_grpo_step.py --device cuda   # GPU, the paper's shapes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval_throughput import PeakRSS, build_case  # noqa: E402


def step(model, proc, rows, G, share, max_new_tokens, device, trunk_cache=None):
    from spatial_mllm.train.grpo import generate_completions, per_token_logps, suppressed_ids

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        ro = generate_completions(model, proc, rows, G, temperature=1.0, max_new_tokens=max_new_tokens,
                                  device=device, share_prefix=share, trunk_cache=trunk_cache)
        t1 = time.perf_counter()
        inputs = ro.model_inputs(list(range(len(ro.texts))), device, share_visual=share)
        C = ro.completion_ids.shape[1]
        logits = model(**inputs, use_cache=False, logits_to_keep=C + 1).logits[:, :-1]
        logp, _ = per_token_logps(logits, ro.completion_ids.to(device), 1.0, suppressed_ids(proc.tokenizer))
        (-(logp * ro.completion_mask.to(device)).sum()).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else mem.peak
    return ro, t1 - t0, t2 - t1, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--generations", type=int, default=8, help="G (paper: 8)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--height", type=int, default=None, help="default: CPU 224, CUDA 476")
    ap.add_argument("--width", type=int, default=None, help="default: CPU 308, CUDA 644")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args(argv)
    cpu = args.device == "cpu"
    H, W = args.height or (224 if cpu else 476), args.width or (308 if cpu else 644)
    model, proc = build_case("3b-shape-2-layers" if cpu else "3b", args.device, args.frames, H, W)
    model.set_trainable(verbose=False)  # the official plan: merger, connector, LLM
    clip = list(np.random.default_rng(0).integers(0, 256, (args.frames, H, W, 3), dtype=np.uint8))
    rows = [{"prompt": "How many chairs are in this room? Think, then answer in <answer></answer>.",
             "video": clip, "question_type": "object_counting", "ground_truth": "3", "options": None}]
    from spatial_mllm.models.feature_cache import EncoderTrunkCache

    res = {}
    rollouts = {}
    trunks = EncoderTrunkCache(model)
    for name, share, cache in (("g_prefills", False, None), ("shared_prefill", True, None),
                               ("encoder_cache_cold", True, trunks), ("encoder_cache_warm", True, trunks)):
        ro, t_gen, t_loss, peak = step(model, proc, rows, args.generations, share, args.max_new_tokens, args.device,
                                       trunk_cache=cache)
        rollouts[name] = ro
        res[name] = dict(rollout_s=round(t_gen, 2), loss_fwd_bwd_s=round(t_loss, 2), step_s=round(t_gen + t_loss, 2),
                         peak_mb=round(peak))
    same = all(torch.equal(rollouts["g_prefills"].completion_ids, ro.completion_ids) for ro in rollouts.values())
    res.update(device=args.device, G=args.generations, frames=args.frames, frame_hw=[H, W],
               rollout_ratio=round(res["g_prefills"]["rollout_s"] / res["shared_prefill"]["rollout_s"], 2),
               step_ratio=round(res["g_prefills"]["step_s"] / res["shared_prefill"]["step_s"], 2),
               warm_step_ratio=round(res["g_prefills"]["step_s"] / res["encoder_cache_warm"]["step_s"], 2),
               rollouts_identical=same)
    print(json.dumps(res))
    print(f"grpo step: rollout {res['rollout_ratio']}x, step {res['step_ratio']}x, with the encoder cache (warm) "
          f"{res['warm_step_ratio']}x, rollouts identical: {'yes' if same else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
