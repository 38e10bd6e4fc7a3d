"""Peak memory and time of the VGGT aggregator (size-faithful: DINOv2 ViT-L + 24×2 blocks, 1024-d).

Modes:
  lean  keep only the last layer, stored in the compute dtype (bf16 under --dtype bf16): what Spatial-MLLM
        needs from its spatial encoder.
  full  return all 24 layers in fp32, as the reference aggregator does (its outputs are fp32 by type
        promotion even under autocast).

Weights are random (timing and memory do not depend on them). On CUDA, memory is
``torch.cuda.max_memory_allocated`` minus the weights; on CPU it is the peak resident-set growth during the
forward (sampled every 2 ms from /proc/self/statm), a coarser number.

CPU (2 cores, minutes):   python benchmarks/bench_vggt_aggregator.py --device cpu --img-size 28
GPU (the real case):      python benchmarks/bench_vggt_aggregator.py --device cuda --img-size 518 \
                              --img-height 392 --dtype bf16 --json outputs/bench_vggt_aggregator.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import torch

from spatial_mllm.models.vggt import Aggregator, VGGTConfig

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class RssPeak:
    """Samples the resident set size in a thread; ``peak - start`` approximates a forward's CPU memory."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())


def run_case(agg: Aggregator, frames: int, H: int, W: int, mode: str, dtype: str, device: torch.device,
             repeats: int) -> dict:
    images = torch.rand(1, frames, 3, H, W, device=device)
    keep = [-1] if mode == "lean" else None
    out_dtype = "auto" if mode == "lean" else torch.float32
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=(dtype == "bf16"))

    def forward():
        with torch.inference_mode(), autocast:
            layers, _ = agg(images, keep_layers=keep, output_dtype=out_dtype)
        return layers

    times, peak, out_bytes = [], 0, 0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            layers = forward()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            peak = max(peak, torch.cuda.max_memory_allocated() - base)
        else:
            with RssPeak() as m:
                t0 = time.perf_counter()
                layers = forward()
                times.append(time.perf_counter() - t0)
            peak = max(peak, m.peak - m.start)
        kept = [t for t in layers if t is not None]
        out_bytes = sum(t.numel() * t.element_size() for t in kept)
        del layers, kept
    T = 5 + (H // 14) * (W // 14)
    return dict(frames=frames, mode=mode, dtype=dtype, H=H, W=W, tokens_per_frame=T,
                time_s=min(times), peak_mem_gb=peak / 2**30, output_gb=out_bytes / 2**30)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--img-size", type=int, default=28, help="image width in pixels (multiple of 14)")
    ap.add_argument("--img-height", type=int, default=None, help="image height (default: = --img-size); "
                    "518x392 is what 4:3 video becomes after VGGT's crop preprocessing")
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--modes", nargs="+", choices=["lean", "full"], default=["lean", "full"])
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default=None,
                    help="bf16 = autocast with fp32 weights, as VGGT's demo (default: bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (min reported); "
                    "default 2 on cuda, 1 on cpu (after one global 2-frame warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    repeats = args.repeats or (2 if device.type == "cuda" else 1)
    W = args.img_size
    H = args.img_height or args.img_size
    if H % 14 or W % 14:
        raise SystemExit("image sides must be multiples of 14")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    cfg = VGGTConfig(enable_camera=False, enable_depth=False, enable_point=False)  # VGGT-1B aggregator
    t0 = time.perf_counter()
    with torch.device(device):
        agg = Aggregator(cfg).eval()
    n_params = sum(p.numel() for p in agg.parameters())
    print(f"aggregator: {n_params / 1e6:.1f} M params, built in {time.perf_counter() - t0:.1f} s on {device}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f" ({platform.processor()}, "
             f"{torch.get_num_threads()} threads)"))
    print(f"images {H}x{W} ({5 + (H // 14) * (W // 14)} tokens/frame), dtype {dtype}, repeats {repeats}")

    t0 = time.perf_counter()
    run_case(agg, 2, H, W, "lean", dtype, device, 1)  # warm-up: kernels, allocator, first touch of weights
    print(f"warm-up (2 frames) {time.perf_counter() - t0:.1f} s")

    rows = []
    for frames in args.frames:
        for mode in args.modes:
            try:
                row = run_case(agg, frames, H, W, mode, dtype, device, repeats)
            except torch.OutOfMemoryError:
                row = dict(frames=frames, mode=mode, dtype=dtype, H=H, W=W, error="out of memory")
                torch.cuda.empty_cache()
            rows.append(row)
            if "error" in row:
                print(f"{frames:>6} {mode:>5}  OOM")
            else:
                print(f"{frames:>6} {mode:>5}  time {row['time_s']:8.3f} s  peak {row['peak_mem_gb']:7.2f} GB  "
                      f"outputs {row['output_gb']:7.2f} GB", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(device=str(device), params=n_params, torch=torch.__version__,
                    gpu=torch.cuda.get_device_name() if device.type == "cuda" else None)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
