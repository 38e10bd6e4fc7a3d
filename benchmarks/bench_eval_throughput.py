"""VSI-Bench-shaped evaluation throughput: the per-question path vs the shared-prefix path, side by side.

Workload: ``--videos`` videos × ``--questions`` questions each (VSI-Bench: 288 × ~18), the real prompts
(v1.1 prompt set over the VSI-Bench-format rows of ``tests/fixtures/eval_vsibench_rows.jsonl``, all 8 task
types), greedy decoding with ``--max-new-tokens``, random frames and random weights (time and memory do not
depend on them). Both paths run in ONE process through :class:`spatial_mllm.eval.model_predict.ModelPredictor`
exactly as the evaluation loop calls it:

  (a) per question: ``share_prefix=False``, ``--batch-size`` prompts per ``generate`` (ViT + VGGT + the whole
      prefill once per question);
  (b) shared prefix: ``share_prefix=True``, one call per video (the video encoded and its prompt prefix
      prefilled once, the questions decoded from it, ``--batch-size`` per ``generate``).

Printed per case: questions/s of each path, the ratio, the peak memory during each path (CUDA:
``max_memory_allocated``; CPU: peak RSS of the process, sampled), and whether the predictions are identical.

Cases. CPU (default): the tiny model, and the 3B-shape model reduced in depth (real widths, vocabulary and
16384-d connector, 2 blocks each of LLM, ViT and VGGT; ``qwen25_vl_3b_config(layers=2)``) at ``--frames``
frames of ``--height``×``--width``. ``--device cuda``: the full Qwen2.5-VL-3B + VGGT-1B shape in bf16 at 16
frames of 476×644 (the official frames of a 640×480 video) and, by default, the full VSI-Bench shape, with the
hours a full run takes projected from the measured rate. The last line reads
``eval throughput: <ratio>x, predictions identical: yes|no`` (the 3B-shape case on CPU, the CUDA case with
``--device cuda``).

Usage::

    .venv/bin/python benchmarks/bench_eval_throughput.py                     # CPU, ~minutes
    .venv/bin/python benchmarks/bench_eval_throughput.py --device cuda --videos 288 --questions 18
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
VSIBENCH_QUESTIONS = 5130  # questions in VSI-Bench
VSIBENCH_VIDEOS = 288


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms), in MiB."""

    def __enter__(self):
        import psutil

        self._proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()

        def run():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._proc.memory_info().rss)
                time.sleep(0.02)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss) / 2**20


def build_case(case: str, device: str, frames: int, height: int, width: int):
    """``(model, processor)``; the processor resizes nothing (frames are given at the model's size)."""
    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
    from spatial_mllm.models.tiny import qwen25_vl_3b_config, tiny_model, tiny_processor, tiny_tokenizer

    tok = tiny_tokenizer()
    proc = tiny_processor(tok, min_pixels=height * width, max_pixels=height * width, num_frames=frames)
    torch.manual_seed(0)
    if case == "tiny":
        return tiny_model(tok).to(device).eval(), proc
    cfg = qwen25_vl_3b_config(layers=None if case == "3b" else 2, tokenizer=tok)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = SpatialMLLMForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    return model.eval(), proc


def workload(videos: int, questions: int, frames: int, height: int, width: int) -> list[dict]:
    """Evaluation items: ``videos`` random videos × ``questions`` real VSI-Bench-format prompts each."""
    from spatial_mllm.data.formats import read_jsonl
    from spatial_mllm.eval.prompts import build_prompt

    rows = read_jsonl(ROOT / "tests" / "fixtures" / "eval_vsibench_rows.jsonl")
    rng = np.random.default_rng(0)
    items = []
    for v in range(videos):
        clip = list(rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8))
        for q in range(questions):
            row = rows[(v * questions + q) % len(rows)]
            items.append({"id": f"{v}-{q}", "video": clip, "video_name": f"video{v}", "prompt": build_prompt(row, "v1.1")})
    return items


def run_path(model, proc, items: list[dict], *, share: bool, batch_size: int, max_new_tokens: int, device: str):
    """Predictions and seconds of one path, fed as the evaluation loop feeds it."""
    from spatial_mllm.eval.model_predict import ModelPredictor

    predict = ModelPredictor(model, proc, {"do_sample": False, "max_new_tokens": max_new_tokens},
                             share_prefix=share, batch_size=batch_size)
    if share:
        groups: dict[str, list[dict]] = {}
        for it in items:
            groups.setdefault(it["video_name"], []).append(it)
        calls = list(groups.values())
    else:
        calls = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    out: list[str] = []
    with PeakRSS() as mem, torch.no_grad():
        t0 = time.perf_counter()
        for batch in calls:
            out += predict(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else mem.peak
    return out, seconds, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--videos", type=int, default=None, help="videos (default: CPU 2, CUDA 288)")
    ap.add_argument("--questions", type=int, default=18, help="questions per video (VSI-Bench: ~18)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--height", type=int, default=None, help="frame height (default: CPU 224, CUDA 476)")
    ap.add_argument("--width", type=int, default=None, help="frame width (default: CPU 308, CUDA 644)")
    ap.add_argument("--batch-size", type=int, default=18, help="prompts per generate call in both paths")
    ap.add_argument("--max-new-tokens", type=int, default=16, help="greedy budget (lmms-eval: 16)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for but CUDA is not available")
    cpu = args.device == "cpu"
    videos = args.videos or (2 if cpu else VSIBENCH_VIDEOS)
    H, W = args.height or (224 if cpu else 476), args.width or (308 if cpu else 644)
    cases = [("tiny", 4, 56, 84), ("3b-shape-2-layers", args.frames, H, W)] if cpu else [("3b", 16, H, W)]
    results = []
    for case, frames, h, w in cases:
        model, proc = build_case(case, args.device, frames, h, w)
        items = workload(videos, args.questions, frames, h, w)
        kw = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, device=args.device)
        plain, t_plain, m_plain = run_path(model, proc, items, share=False, **kw)
        shared, t_shared, m_shared = run_path(model, proc, items, share=True, **kw)
        n = len(items)
        res = dict(case=case, device=args.device, videos=videos, questions=n, frames=frames, frame_hw=[h, w],
                   per_question_qps=round(n / t_plain, 3), shared_prefix_qps=round(n / t_shared, 3),
                   ratio=round(t_plain / t_shared, 2), per_question_peak_mb=round(m_plain),
                   shared_prefix_peak_mb=round(m_shared), identical=plain == shared)
        if not cpu:
            res["projected_full_vsibench_hours"] = {
                "per_question": round(VSIBENCH_QUESTIONS / res["per_question_qps"] / 3600, 2),
                "shared_prefix": round(VSIBENCH_QUESTIONS / res["shared_prefix_qps"] / 3600, 2)}
        results.append(res)
        print(json.dumps(res), flush=True)
        del model
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    last = results[-1]
    print(f"eval throughput: {last['ratio']}x, predictions identical: {'yes' if last['identical'] else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
