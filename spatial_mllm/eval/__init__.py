"""Evaluation: VSI-Bench, ScanQA and SQA3D metrics and runners.

* :mod:`~spatial_mllm.eval.metrics` — answer parsing (lmms-eval's VSI-Bench rules), MRA, ScanQA/SQA3D
  normalisation, EM / refined EM, BLEU / ROUGE-L / CIDEr (and METEOR through pycocoevalcap);
* :mod:`~spatial_mllm.eval.loop` — the model-agnostic loop: ``predict(batch) -> list[str]``, sharded across
  accelerate processes, written incrementally to jsonl, resumable;
* :mod:`~spatial_mllm.eval.vsibench` — VSI-Bench loading, lmms-eval prompts, :func:`score`,
  :class:`EvalConfig`, :func:`evaluate_vsibench`;
* :mod:`~spatial_mllm.eval.scanqa` — ScanQA / SQA3D loading, prompts, :func:`score_qa`, :func:`evaluate_qa`;
* :mod:`~spatial_mllm.eval.baselines` — chance / frequency predictors (no model needed).
"""

from spatial_mllm.eval.metrics import (
    extract_answer,
    mc_letter_match,
    mean_relative_accuracy,
    parse_number,
    score_answer,
)

__all__ = ["extract_answer", "mc_letter_match", "mean_relative_accuracy", "parse_number", "score_answer"]
