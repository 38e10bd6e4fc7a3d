"""Evaluation: VSI-Bench, ScanQA and SQA3D metrics and runners.

* :mod:`~spatial_mllm.eval.metrics` — answer parsing (lmms-eval's VSI-Bench rules), MRA, ScanQA/SQA3D
  normalisation, EM / refined EM, BLEU / ROUGE-L / CIDEr (and METEOR through pycocoevalcap);
* :mod:`~spatial_mllm.eval.loop` — the model-agnostic loop: ``predict(batch) -> list[str]``, sharded across
  accelerate processes by video, written incrementally to jsonl, resumable;
* :mod:`~spatial_mllm.eval.vsibench` — VSI-Bench loading, :func:`score`, :class:`EvalConfig` (the official or
  greedy decoding), :func:`evaluate_vsibench`; :mod:`~spatial_mllm.eval.prompts` — the prompt sets (v1.1, v1.0,
  sft, lmms_eval, think);
* :mod:`~spatial_mllm.eval.scanqa` — ScanQA / SQA3D loading, prompts, :func:`score_qa`, :func:`evaluate_qa`;
* :mod:`~spatial_mllm.eval.model_predict` — the model adapter (:class:`ModelPredictor`: one video's questions
  from one shared prefix) and the stand-alone CLI in :mod:`~spatial_mllm.eval.cli`;
* :mod:`~spatial_mllm.eval.baselines` — chance / frequency predictors (no model needed);
* :mod:`~spatial_mllm.eval.results` — notebook 06's tables and figures from saved scores.

Evaluation never trains and never imports :mod:`spatial_mllm.train`; studies that train and evaluate are in
:mod:`spatial_mllm.experiments`.
"""

from spatial_mllm.eval.metrics import (
    extract_answer,
    mc_letter_match,
    mean_relative_accuracy,
    parse_number,
    score_answer,
)

__all__ = ["extract_answer", "mc_letter_match", "mean_relative_accuracy", "parse_number", "score_answer"]
