"""Rendering throughput of :mod:`spatial_mllm.data.render` on ONE core (frames per second).

Usage::

    .venv/bin/python benchmarks/bench_render.py [--width 160 --height 120 --frames 256 --scenes 3]

Times ``Renderer.render`` only (ray generation, Embree ray casting with ``nthreads=1``, shading), after
one warm-up call; scene generation, the camera path and video encoding are reported separately. The
process is pinned to one CPU when the OS allows it, and numpy's BLAS is limited to one thread. Besides
wall-clock frames/s it prints frames per CPU-second of this process, which other jobs on a shared
machine disturb less. The
project's target is ≥ 200 frames/s at 160×120; the number is printed, not asserted (it depends on the
machine and its load).
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from spatial_mllm.data.render import (  # noqa: E402
    RenderConfig,
    Renderer,
    camera_path,
    intrinsics_from_fov,
    write_mp4,
)
from spatial_mllm.data.synthetic import SyntheticSceneConfig, generate_scene  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--frames", type=int, default=256, help="frames per scene")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16, help="frames per ray-casting call")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timed passes per scene")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    cfg = RenderConfig(
        width=args.width, height=args.height, num_frames=args.frames, batch_frames=args.batch, nthreads=1
    )
    K = intrinsics_from_fov(cfg.width, cfg.height, cfg.hfov_deg)
    rates, cpu_rates, t_gen, t_path, n_tri = [], [], 0.0, 0.0, []
    for i in range(args.scenes):
        t0 = time.perf_counter()
        scene = generate_scene(SyntheticSceneConfig(seed=0), i)
        t1 = time.perf_counter()
        E = camera_path(scene.meta, cfg, np.random.default_rng(i))
        t2 = time.perf_counter()
        t_gen += t1 - t0
        t_path += t2 - t1
        renderer = Renderer(scene.mesh, cfg)
        n_tri.append(len(scene.mesh.triangles))
        renderer.render(K, E[: cfg.batch_frames], cfg.width, cfg.height)  # warm-up
        best, best_cpu = np.inf, np.inf
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            rgb, _, _ = renderer.render(K, E, cfg.width, cfg.height)
            best = min(best, time.perf_counter() - t)
            best_cpu = min(best_cpu, time.process_time() - c)
        rates.append(len(E) / best)
        cpu_rates.append(len(E) / best_cpu)
        print(
            f"scene {i}: {scene.meta.room_size:5.1f} m², {len(scene.meta.objects):2d} objects, "
            f"{n_tri[-1]:5d} triangles: {rates[-1]:7.1f} frames/s wall, {cpu_rates[-1]:7.1f} per CPU-second"
        )
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_mp4(os.path.join(tmp, "bench.mp4"), rgb, cfg.fps)
        t_enc = time.perf_counter() - t
    print(
        f"render throughput (1 core, {cfg.width}x{cfg.height}): {np.mean(rates):.1f} frames/s "
        f"(min {np.min(rates):.1f}, max {np.max(rates):.1f}); "
        f"{np.mean(cpu_rates):.1f} frames per CPU-second (less sensitive to other load on the machine)"
    )
    print(
        f"scene generation {1e3 * t_gen / args.scenes:.1f} ms/scene, "
        f"camera path {1e3 * t_path / args.scenes:.1f} "
        f"ms/scene, H.264 encoding {len(rgb) / t_enc:.1f} frames/s"
    )


if __name__ == "__main__":
    main()
