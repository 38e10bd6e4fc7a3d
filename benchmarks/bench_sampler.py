"""Space-aware frame selection: the official logic vs ours, side by side on the same point maps.

Inputs: a box room (:mod:`spatial_mllm.sampling.toy`) scanned by ``--frames`` cameras at
``--height × --width`` (default 128 × 392 × 518, VGGT's input size for 640×480 video), exact geometry plus
``--noise`` (Gaussian, relative to depth) so the maps look like VGGT's, and a VGGT-like confidence.

Methods (each timed ``--repeats`` times, median reported; all on ``--device``):
  official  :mod:`spatial_mllm.sampling.official`: np.percentile, per-frame ``torch.unique(dim=0)``, Python
            sets, greedy over sets (a faithful re-implementation of ``src/sampling/sa_sampling.py``)
  ours      :func:`spatial_mllm.sampling.select_frames` (plain torch, block-wise on CPU)
  ours-fused  the same with ``fused=True`` (the two passes over the points torch.compile'd into one kernel
            each; compile time is reported separately and not in the median)

It prints time, speed-up over official, peak memory (CUDA: ``max_memory_allocated`` above the inputs; CPU:
peak resident-set growth sampled every 2 ms) and whether the selections agree. With ``--device cuda`` it
also times VGGT-1B (random init: timing and memory do not depend on the weights) + selection on
``--vggt-frames`` real-size frames, lean (point head only, 4 layers kept in bf16) vs full-layer (all heads,
all 24 layers kept in fp32 as the reference script), with peak GPU memory.

CPU, one core (the issue's setting):  python benchmarks/bench_sampler.py
GPU:  python benchmarks/bench_sampler.py --device cuda --json outputs/bench_sampler_cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from spatial_mllm.sampling import select_frames_detailed
from spatial_mllm.sampling.benchmark import compare_selection, timed
from spatial_mllm.sampling.toy import toy_point_maps


def bench_selection(args, device: torch.device) -> dict:
    t0 = time.perf_counter()
    d = toy_point_maps(args.frames, args.height, args.width, seed=args.seed, device=device, noise=args.noise)
    pts, conf = d["world_points"], d["conf"]
    print(f"inputs: {args.frames} x {args.height} x {args.width} point maps on {device} "
          f"({pts.numel() * 4 / 2**20:.0f} MiB points + {conf.numel() * 4 / 2**20:.0f} MiB conf), "
          f"made in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = compare_selection(pts, conf, args.k, repeats=args.repeats, official_repeats=args.official_repeats,
                             fused=args.fused, official=not args.skip_official,
                             log=lambda line: print(line, flush=True))
    print(f"selected (ours): {rows['ours']['indices']}")
    return rows


def _vggt_once(model, sampler, images: torch.Tensor, full: bool, k: int):
    """One VGGT forward + selection; returns (Selection, selection seconds)."""
    H, W = images.shape[-2:]
    if full:  # the reference path: every head, every aggregator layer kept in fp32
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            layers, _ = model.aggregator(images[None], keep_layers=None, output_dtype=None)
        with torch.no_grad(), torch.autocast("cuda", enabled=False):
            model.camera_head(layers)
            model.depth_head(layers, (H, W), 8)
            pts, conf = model.point_head(layers, (H, W), 8)
        pts, conf = pts[0], conf[0]
    else:
        pts, conf = sampler.point_maps(images)
    torch.cuda.synchronize()
    t_sel = time.perf_counter()
    sel = select_frames_detailed(pts, conf, k, warn=False)
    torch.cuda.synchronize()
    return sel, time.perf_counter() - t_sel


def bench_vggt(args, device: torch.device) -> dict:
    """VGGT-1B (random init) + selection on real-size frames: lean vs full-layer, time and peak memory."""
    from spatial_mllm.models.vggt import VGGTConfig
    from spatial_mllm.sampling.sampler import SpaceAwareSampler, SpaceAwareSamplerConfig

    S, H, W = args.vggt_frames, args.height, args.width
    g = torch.Generator(device="cpu").manual_seed(0)
    images = torch.rand(S, 3, H, W, generator=g).to(device)  # [S, 3, H, W] in [0, 1]
    out = {}
    for mode in args.vggt_modes.split(","):
        full = mode == "full"
        cfg = VGGTConfig()  # VGGT-1B sizes
        if not full:
            cfg.enable_camera, cfg.enable_depth = False, False
        torch.cuda.empty_cache()
        with torch.device(device):
            from spatial_mllm.models.vggt import VGGT

            model = VGGT(cfg).eval()
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        sampler = SpaceAwareSampler(model, device=device,
                                    config=SpaceAwareSamplerConfig(full_layers=full, frames_chunk_size=8))

        def run(model=model, sampler=sampler, full=full):
            return _vggt_once(model, sampler, images, full, args.k)

        try:
            run()  # warm-up
            (sel, t_sel), t, peak, _ = timed(run, device, args.vggt_repeats)
            out[mode] = {"seconds": t, "selection_seconds": t_sel, "peak_bytes_above_inputs": peak,
                         "weights_bytes": weights, "peak_total_bytes": peak + weights, "indices": sel.indices}
            print(f"VGGT-1B {mode:5s} {S} frames {W}x{H}: {t:6.2f} s (selection {t_sel * 1e3:.1f} ms), peak GPU "
                  f"{(peak + weights) / 2**30:.2f} GiB (weights {weights / 2**30:.2f} GiB)", flush=True)
        except torch.OutOfMemoryError as e:
            out[mode] = {"error": f"OOM: {e}"}
            print(f"VGGT-1B {mode}: out of memory", flush=True)
        model = sampler = run = None  # free the weights before the next mode
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = the issue's one core)")
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--height", type=int, default=392)
    ap.add_argument("--width", type=int, default=518)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--noise", type=float, default=0.02, help="point noise std relative to depth")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--official-repeats", type=int, default=2)
    ap.add_argument("--no-fused", dest="fused", action="store_false", help="skip the torch.compile'd variant")
    ap.add_argument("--skip-official", action="store_true")
    ap.add_argument("--no-vggt", dest="vggt", action="store_false", help="(cuda) skip the VGGT-1B part")
    ap.add_argument("--vggt-frames", type=int, default=128)
    ap.add_argument("--vggt-modes", default="lean,full")
    ap.add_argument("--vggt-repeats", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "args": vars(args)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(info))
    results = {"info": info, "selection": bench_selection(args, device)}
    if device.type == "cuda" and args.vggt:
        results["vggt"] = bench_vggt(args, device)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
