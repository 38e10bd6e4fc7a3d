"""Timing the official selection logic against ours on the same point maps (shared by
``benchmarks/bench_sampler.py`` and notebook 02).

:func:`compare_selection` runs :func:`spatial_mllm.sampling.official.official_select` (np.percentile,
per-frame ``torch.unique(dim=0)``, Python sets) and :func:`spatial_mllm.sampling.select_frames_detailed`
(plain torch, optionally ``fused=True``) on one ``world_points [S, H, W, 3]`` / ``conf [S, H, W]`` pair and
reports, per method, the median wall time in seconds, the peak memory above the level at entry in bytes
(CUDA: ``max_memory_allocated``; CPU: resident-set size sampled every 2 ms), the selection and whether it
equals the official one.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable

import torch

from spatial_mllm.sampling.official import official_select
from spatial_mllm.sampling.select import select_frames_detailed

__all__ = ["PeakMemory", "rss_bytes", "timed", "compare_selection"]

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident-set size of this process, bytes (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakMemory:
    """Peak memory above the level at entry, bytes: CUDA allocator peak, or sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.base = rss_bytes()
            self._stop = False
            self._max = self.base

            def poll():
                while not self._stop:
                    self._max = max(self._max, rss_bytes())
                    time.sleep(0.002)

            self._t = threading.Thread(target=poll, daemon=True)
            self._t.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop = True
            self._t.join()
            self.peak = max(self._max, rss_bytes()) - self.base
        return False


def timed(fn: Callable, device: torch.device, repeats: int):
    """``(result of the last call, median seconds, max peak bytes, all seconds)`` over ``repeats`` calls."""
    device = torch.device(device)
    times, peaks, out = [], [], None
    for _ in range(repeats):
        with PeakMemory(device) as pm:
            t0 = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        peaks.append(pm.peak)
    return out, statistics.median(times), max(peaks), times


def compare_selection(world_points: torch.Tensor, conf: torch.Tensor, k: int, *, repeats: int = 5,
                      official_repeats: int = 2, fused: bool = False, official: bool = True,
                      log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Time the official selection and ours on the same point maps.

    Args:
        world_points: ``[S, H, W, 3]`` on the device to time on. conf: ``[S, H, W]`` (official rule).
        k: frames to select.
        repeats / official_repeats: timed calls per method (the median is reported); ours gets one
            untimed warm-up call first (allocator, kernels), the fused variant's first call compiles and is
            reported as ``first_call_seconds``.
        fused: also time ``fused=True`` (torch.compile of the passes over the points) as ``"ours-fused"``.
        official: time the official logic (slow on big inputs).
        log: called with one line per result (``print`` in the benchmark script).

    Returns:
        ``{"official" | "ours" | "ours-fused": row}``, each row with ``seconds`` (median), ``peak_bytes``,
        ``indices`` (sorted), ``all_seconds``; ours also ``voxels``, ``filled``, ``covered`` and, when the
        official logic ran, ``speedup_vs_official`` and ``agrees_with_official``.
    """
    log = log or (lambda s: None)
    device = world_points.device
    rows: dict[str, dict] = {}
    if official:
        sel, t, peak, ts = timed(lambda: official_select(world_points, conf, k), device, official_repeats)
        rows["official"] = {"seconds": t, "peak_bytes": peak, "indices": sel, "all_seconds": ts}
        log(f"official   {t:8.3f} s  peak {peak / 2**20:8.1f} MiB  -> {len(sel)} frames")
    methods = [("ours", {})] + ([("ours-fused", {"fused": True})] if fused else [])
    for name, kw in methods:
        t0 = time.perf_counter()
        select_frames_detailed(world_points, conf, k, warn=False, **kw)  # warm-up / compile
        if device.type == "cuda":
            torch.cuda.synchronize()
        first = time.perf_counter() - t0
        sel, t, peak, ts = timed(lambda kw=kw: select_frames_detailed(world_points, conf, k, warn=False, **kw),
                                 device, repeats)
        row = {"seconds": t, "peak_bytes": peak, "indices": sel.indices, "all_seconds": ts,
               "voxels": sel.coverage.num_voxels, "filled": sel.greedy.filled, "covered": sel.greedy.covered}
        extra = ""
        if kw.get("fused"):
            row["first_call_seconds"] = first
            extra = f"  (first call incl. compile {first:.1f} s)"
        rows[name] = row
        log(f"{name:10s} {t:8.3f} s  peak {peak / 2**20:8.1f} MiB  -> {len(sel.indices)} frames{extra}")
    if "official" in rows:
        off = rows["official"]
        for name, _ in methods:
            r = rows[name]
            r["speedup_vs_official"] = off["seconds"] / r["seconds"]
            r["agrees_with_official"] = r["indices"] == off["indices"]
            log(f"{name:10s} speed-up {r['speedup_vs_official']:6.1f}x   same selection as official: "
                f"{r['agrees_with_official']}")
    if "ours-fused" in rows:
        log(f"fused == eager selection: {rows['ours-fused']['indices'] == rows['ours']['indices']}")
    return rows
