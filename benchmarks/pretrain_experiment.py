"""Pretrained vs. random-init tiny VGGT (and tiny Qwen ViT) on held-out synthetic scenes, on CPU.

    .venv/bin/python benchmarks/pretrain_experiment.py --steps 1500 --batch-size 8 --train-scenes 48
    .venv/bin/python benchmarks/pretrain_experiment.py --semantic --steps 300

Geometry: trains :func:`spatial_mllm.train.pretrain.pretrain_vggt` and prints the held-out metrics of the
same network before (random init) and after training (depth AbsRel / δ<1.25 after per-sequence median
scaling, with a constant-depth reference; relative-pose rotation and translation-angle errors in degrees over
all frame pairs). Semantic: trains :func:`pretrain_vit` and prints held-out per-patch accuracy vs. chance.
Checkpoints and run.json go to ``--out`` (default outputs/bench/pretrain/...).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from spatial_mllm.train.pretrain import (
    GeometryPretrainConfig,
    SemanticPretrainConfig,
    pretrain_vggt,
    pretrain_vit,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--semantic", action="store_true", help="run the ViT semantic pretraining instead")
    ap.add_argument("--steps", type=int, default=1500)  # = the configs' defaults
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--train-scenes", type=int, default=48)
    ap.add_argument("--eval-scenes", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    common = dict(steps=a.steps, batch_size=a.batch_size, num_train_scenes=a.train_scenes,
                  num_eval_scenes=a.eval_scenes, lr=a.lr, log_every=max(1, a.steps // 20))
    if a.semantic:
        out = pretrain_vit(SemanticPretrainConfig(out_dir=a.out or "outputs/bench/pretrain/qwen", **common))
    else:
        out = pretrain_vggt(GeometryPretrainConfig(out_dir=a.out or "outputs/bench/pretrain/vggt", **common))
    run = json.loads((out / "run.json").read_text())
    print(json.dumps(run["metrics"], indent=1))
    print(f"checkpoint: {out}  wall: {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
