#!/usr/bin/env bash
# The GPU checks the open work asks for, as one script for a session that has a CUDA device (~10 minutes on
# an H100/H200 after `make setup`): the CUDA-only tests (generate = forward in bf16 at the 3B shape, ...),
# the model latency, the evaluation throughput (full 3B + VGGT-1B shape, 16 frames of 476×644; 8 videos × 18
# questions, projected to VSI-Bench's 5,130) and one GRPO step (G = 8). Results go to ${OUT:-outputs/gpu}.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -m pytest -q -rs tests -k "cuda" 2>&1 | tee "$OUT/cuda_tests.txt" | tail -5
$PY benchmarks/bench_model.py --device cuda --json "$OUT/bench_model.json" 2>&1 | tail -4
$PY benchmarks/bench_eval_throughput.py --device cuda --videos 8 --questions 18 --json "$OUT/bench_eval.json" 2>&1 | tail -3
$PY benchmarks/bench_grpo_step.py --device cuda 2>&1 | tee "$OUT/bench_grpo.txt" | tail -2
# DeepSpeed ZeRO-2/3 vs DDP (tiny model: 5 SFT steps, 2 GRPO steps each, fp32; ~3 min); skipped without the
# [deepspeed] extra. The GRPO ones need grpo.py's DeepSpeed hooks (spatial_mllm/train/distributed.py).
$PY -m pytest -q -rs tests/test_deepspeed.py -m gpu 2>&1 | tee "$OUT/deepspeed_tests.txt" | tail -5
