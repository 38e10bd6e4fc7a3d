"""Latency and peak memory of Spatial-MLLM vs plain Qwen2.5-VL (the ``connector="none"`` model) at 16 frames.

CPU (default): the tiny preset, 16 frames of 112×168 px. GPU (``--device cuda``): the paper's sizes —
Qwen2.5-VL-3B (config values written in ``spatial_mllm.models.tiny.QWEN25_VL_3B``, no hub) + VGGT-1B
aggregator + the v1.1 connector, random init in bf16, 16 frames at the official per-frame pixels
(640×480 video → 476×644 frames → 8×17×23 = 3128 video tokens). Random weights are fine for timing.

Measured per variant, each in a fresh subprocess (clean peak memory):
  prefill_ms  forward over the prompt (ViT [+ VGGT + connector] + LLM), ``logits_to_keep=1``
  spatial_ms  the spatial branch alone (VGGT aggregator, last layer, + connector)
  decode_ms_per_token  (``generate`` of 33 tokens − ``generate`` of 1) / 32, with the KV cache
  peak_mem_mb  CUDA: max_memory_allocated during prefill; CPU: peak RSS of the process

Usage::

    .venv/bin/python benchmarks/bench_model.py                       # CPU, tiny
    .venv/bin/python benchmarks/bench_model.py --device cuda         # GPU, 3B + VGGT-1B, bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def build(variant: str, device: str):
    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
    from spatial_mllm.models.tiny import qwen25_vl_3b_config, tiny_config, tiny_tokenizer

    connector = "mlp_add" if variant == "spatial-mllm" else "none"
    if device == "cuda":
        cfg = qwen25_vl_3b_config(connector)
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            model = SpatialMLLMForConditionalGeneration(cfg)
        torch.set_default_dtype(torch.float32)
        frames, (H, W) = 16, (476, 644)
    else:
        cfg = tiny_config(tiny_tokenizer(), connector)
        model = SpatialMLLMForConditionalGeneration(cfg)
        frames, (H, W) = 16, (112, 168)
    return model.eval(), cfg, frames, H, W


def make_inputs(cfg, frames: int, H: int, W: int, device: str, dtype: torch.dtype):
    """A prompt of 20 text tokens + <vs> video <ve> + 30 text tokens; random pixels."""
    t, h, w = frames // 2, H // 14, W // 14
    n_video = t * h * w // 4
    text = torch.randint(0, 100, (50,))
    ids = torch.cat([text[:20], torch.tensor([cfg.vision_start_token_id]),
                     torch.full((n_video,), cfg.video_token_id), torch.tensor([cfg.vision_end_token_id]), text[20:]])
    inputs = dict(
        input_ids=ids[None].to(device), attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
        pixel_values_videos=torch.randn(t * h * w, 3 * 2 * 14 * 14, device=device, dtype=dtype),
        video_grid_thw=torch.tensor([[t, h, w]], device=device),
        second_per_grid_ts=torch.tensor([1.0], device=device),
        spatial_pixel_values_videos=[torch.rand(frames, 3, H, W, device=device)],
    )
    return inputs, n_video


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return 1000 * sorted(ts)[len(ts) // 2]  # median, ms


def run_variant(variant: str, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    if device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    model, cfg, frames, H, W = build(variant, device)
    dtype = next(model.parameters()).dtype
    inputs, n_video = make_inputs(cfg, frames, H, W, device, dtype)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        prefill = timed(lambda: model(**inputs, logits_to_keep=1, use_cache=False), device, repeats)
        spatial = None
        if model.connector is not None:
            spatial = timed(lambda: model.get_spatial_embeds(inputs["spatial_pixel_values_videos"],
                                                             inputs["video_grid_thw"]), device, repeats)
        peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        gen = dict(do_sample=False)
        one = timed(lambda: model.generate(**inputs, max_new_tokens=1, **gen), device, repeats)
        many = timed(lambda: model.generate(**inputs, max_new_tokens=33, min_new_tokens=33, **gen), device, repeats)
    return dict(variant=variant, device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
                frames=frames, frame_hw=[H, W], video_tokens=n_video, seq_len=int(inputs["input_ids"].shape[1]),
                params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2), dtype=str(dtype),
                prefill_ms=round(prefill, 1), spatial_ms=None if spatial is None else round(spatial, 1),
                decode_ms_per_token=round((many - one) / 32, 2), peak_mem_mb=round(peak, 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (median); default 5 GPU, 3 CPU")
    ap.add_argument("--variant", choices=["spatial-mllm", "qwen2.5-vl"], default=None,
                    help="run one variant in this process (used internally)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    repeats = args.repeats or (5 if args.device == "cuda" else 3)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for but CUDA is not available")
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.device, repeats)))
        return 0
    rows = []
    for variant in ("qwen2.5-vl", "spatial-mllm"):
        out = subprocess.run([sys.executable, __file__, "--device", args.device, "--repeats", str(repeats),
                              "--variant", variant], capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"{variant} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    keys = ["variant", "prefill_ms", "spatial_ms", "decode_ms_per_token", "peak_mem_mb", "params_m", "video_tokens",
            "seq_len"]
    print(f"device: {rows[0]['device']}  frames: {rows[0]['frames']} x {rows[0]['frame_hw']}  dtype: {rows[0]['dtype']}")
    print("  ".join(f"{k:>20}" for k in keys))
    for r in rows:
        print("  ".join(f"{str(r[k]):>20}" for k in keys))
    base, sp = rows
    print(f"spatial-mllm / qwen2.5-vl: prefill x{sp['prefill_ms'] / base['prefill_ms']:.2f}, "
          f"peak memory +{sp['peak_mem_mb'] - base['peak_mem_mb']:.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
