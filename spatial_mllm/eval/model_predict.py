"""A Spatial-MLLM (model + processor) as a ``predict(batch) -> list[str]`` for the evaluation loop.

:class:`ModelPredictor` reads each item's video (``video``, ``num_frames`` uniform frames or the sampler's
``frame_indices``) with the processor, builds the chat prompt around the item's ``prompt`` (the same
template as training and :func:`spatial_mllm.models.ask.ask`) and decodes with one ``generate`` call per
batch (:func:`spatial_mllm.models.ask.answer_batch`, left padding) using the settings it was given —
:meth:`spatial_mllm.eval.vsibench.EvalConfig.generation_kwargs`: ``decoding="official"`` (Spatial-MLLM's
evaluation: sampling with temperature 0.1, top_p 0.001, 1024 new tokens on VSI-Bench) or ``"greedy"``
(lmms-eval's). Without settings it uses the official VSI-Bench decoding.

Sampled decoding is seeded: before each ``generate`` call torch is seeded with a number derived from
``seed`` and the batch's item ids (:func:`batch_seed`), inside ``torch.random.fork_rng`` so that the
caller's random state is left as it was. The same items in the same batches give the same answers, whatever
ran before; after an interrupted run resumes, or with another ``batch_size`` or number of processes, the
batches differ and so may the (rare, see :mod:`spatial_mllm.eval.vsibench`) sampled tokens.

:func:`evaluate_model_vsibench` runs :func:`spatial_mllm.eval.vsibench.evaluate_vsibench` with it, after
resolving ``prompt_style="auto"`` to the prompt set of the model's checkpoint (its ``name_or_path``);
:func:`sft_eval_config` is the evaluation notebook 03 runs before and after SFT; :func:`scores_table` and
:func:`markdown_table` put several runs' scores side by side.
The loop's resume fingerprint covers the items and the decoding, not the weights, so ``overwrite=True`` (the
default) removes earlier predictions in ``cfg.output_dir`` first: scores then always belong to the model given.

Deviations from the official evaluation scripts: answers are stripped of surrounding whitespace
(:func:`~spatial_mllm.models.ask.answer_batch`; the official scripts keep it and strip while scoring) and
decoded with the processor's tokenizer defaults (the official ``batch_decode`` passes
``clean_up_tokenization_spaces=False``); the sampling is seeded (the official one is not).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch

from spatial_mllm.eval.vsibench import (
    DECODINGS,
    OFFICIAL_MAX_NEW_TOKENS,
    TASKS,
    EvalConfig,
    evaluate_vsibench,
)

__all__ = ["ModelPredictor", "batch_seed", "video_key", "evaluate_model_vsibench", "sft_eval_config", "scores_table",
           "markdown_table"]

# Spatial-MLLM's VSI-Bench decoding (v1.1 src/evaluation/vsibench/eval_vsibench.py inference_batch)
OFFICIAL_VSIBENCH_GENERATION = {**DECODINGS["official"], "max_new_tokens": OFFICIAL_MAX_NEW_TOKENS["vsibench"]}


def batch_seed(seed: int, batch: Sequence[dict]) -> int:
    """The torch seed of one ``generate`` call: crc32 of ``seed`` and the batch's item ids (``id``, else
    ``key``, else the prompt) — independent of what was generated before."""
    ids = [it.get("id", it.get("key", it.get("prompt"))) for it in batch]
    return zlib.crc32(json.dumps([int(seed), ids], default=str).encode())


class ModelPredictor:
    """Answers of a Spatial-MLLM for evaluation items.

    Args:
        model: a :class:`~spatial_mllm.models.modeling.SpatialMLLMForConditionalGeneration` (its device is used).
        processor: its :class:`~spatial_mllm.models.processing.SpatialMLLMProcessor`.
        generation_kwargs: ``generate`` settings (``EvalConfig.generation_kwargs()``); default the official
            VSI-Bench decoding (``do_sample=True, temperature=0.1, top_p=0.001, max_new_tokens=1024``).
        seed: seeds every sampled ``generate`` call (:func:`batch_seed`); unused for greedy settings.
        share_prefix: answer a batch whose items all ask about the same video (and frames) from one shared
            prefix (:mod:`spatial_mllm.models.prefix`: the video encoded and the prompt prefix prefilled
            once, ``batch_size`` questions per ``generate``) — the same answers as the per-question path
            (tested), much faster. The evaluation loop then hands over one video's questions per call
            (:attr:`group_key`). A batch of mixed videos takes the per-question path.
        batch_size: questions per ``generate`` call in the shared-prefix path.
        feature_cache: a :class:`~spatial_mllm.models.feature_cache.VisualFeatureCache` (or a folder for one)
            that the shared-prefix path reads the videos' fused features from (and fills).
    """

    def __init__(self, model, processor, generation_kwargs: dict | None = None, seed: int = 0,
                 share_prefix: bool = True, batch_size: int = 32, feature_cache=None):
        if feature_cache is not None and not hasattr(feature_cache, "video_features"):
            from spatial_mllm.models.feature_cache import VisualFeatureCache

            feature_cache = VisualFeatureCache(model, feature_cache)
        self.feature_cache = feature_cache
        self.model = model
        self.processor = processor
        self.generation_kwargs = dict(generation_kwargs if generation_kwargs is not None
                                      else OFFICIAL_VSIBENCH_GENERATION)
        self.seed = int(seed)
        self.share_prefix = share_prefix
        self.batch_size = int(batch_size)

    @property
    def group_key(self):
        """``item -> key`` of its video and frame choice when sharing prefixes (the loop groups by it), else None."""
        return video_key if self.share_prefix else None

    def __call__(self, batch: list[dict]) -> list[str]:
        from spatial_mllm.models.ask import answer_batch
        from spatial_mllm.models.prefix import answer_questions

        one_video = self.share_prefix and len({video_key(it) for it in batch}) == 1
        videos = [self.processor.load_video(it["video"], frame_indices=it.get("frame_indices"),
                                            num_frames=it.get("num_frames")) for it in batch[:1 if one_video else None]]
        gen = dict(self.generation_kwargs)
        max_new = gen.pop("max_new_tokens", OFFICIAL_MAX_NEW_TOKENS["vsibench"])
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        # fork_rng restores the CPU (and this CUDA device's) generator afterwards
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda):
                if gen.get("do_sample"):
                    torch.manual_seed(batch_seed(self.seed, batch))
                if one_video:
                    return answer_questions(self.model, self.processor, videos[0], [it["prompt"] for it in batch],
                                            batch_size=self.batch_size, cache=self.feature_cache,
                                            max_new_tokens=max_new, **gen)
                return answer_batch(self.model, self.processor, videos, [it["prompt"] for it in batch],
                                    max_new_tokens=max_new, **gen)
        finally:
            self.model.train(was_training)


def video_key(item: dict) -> str:
    """The video and frame choice of an evaluation item (items with equal keys share a prompt prefix). A video
    given as a path is keyed by the path; one given as an object (frames in memory) by its identity."""
    video = item["video"]
    name = str(video) if isinstance(video, (str, os.PathLike)) else f"<object {id(video)}>"
    return json.dumps([name, item.get("frame_indices"), item.get("num_frames")], default=str)


def evaluate_model_vsibench(model, processor, cfg: EvalConfig, *, rows: Sequence[dict] | None = None,
                            overwrite: bool = True, state=None, progress: bool = False,
                            checkpoint: str | None = None) -> dict:
    """Score ``model`` on VSI-Bench rows as ``cfg`` says (``cfg.generation_kwargs()``, seeded with
    ``cfg.seed``); writes ``predictions.jsonl``, ``scores.json`` and ``run.json`` to ``cfg.output_dir``.
    Returns the scores.

    ``prompt_style="auto"`` becomes the prompt set of ``checkpoint`` (default: the model's ``name_or_path``,
    the hub id or folder it was loaded from; :meth:`EvalConfig.for_checkpoint`). ``overwrite``: delete
    earlier ``predictions*.jsonl`` there first (they may come from other weights).
    """
    from spatial_mllm.config import resolve_path

    out = Path(resolve_path(cfg.output_dir))
    if overwrite and out.is_dir():
        for f in out.glob("predictions*.jsonl"):
            f.unlink()
    cfg = cfg.for_checkpoint(checkpoint if checkpoint is not None else getattr(model, "name_or_path", None))
    predict = ModelPredictor(model, processor, cfg.generation_kwargs(), seed=cfg.seed, batch_size=cfg.batch_size,
                             share_prefix=cfg.share_prefix, feature_cache=cfg.feature_cache_dir)
    with torch.no_grad():
        return evaluate_vsibench(cfg, predict, rows=rows, state=state, progress=progress)


def sft_eval_config(cfg, name: str) -> EvalConfig:
    """The :class:`~spatial_mllm.eval.vsibench.EvalConfig` of notebook 03's validation scores for a
    :class:`~spatial_mllm.train.sft.SFTConfig`: ``eval_file`` rows, the run's frames and prompt, greedy
    decoding with ``eval_max_new_tokens`` (our own validation, not the official evaluation); results in
    ``<output_dir>/eval/03_sft_<name>``."""
    from spatial_mllm.config import resolve_path

    data_dir = cfg.resolved_data_dir()
    return EvalConfig(
        output_dir=str(resolve_path(cfg.output_dir) / "eval" / f"03_sft_{name}"),
        source=str(data_dir / cfg.eval_file), video_root=str(cfg.resolved_video_root()),
        prompt_style=cfg.eval_prompt_style, num_frames=cfg.num_frames, frames_cache=cfg.frames_cache,
        batch_size=cfg.eval_batch_size, max_new_tokens=cfg.eval_max_new_tokens, limit=cfg.eval_limit,
        seed=cfg.seed)


def scores_table(scores: dict[str, dict]):
    """``{run name: vsibench.score(...) result}`` → a DataFrame: one row per VSI-Bench task present, then
    ``overall (macro)`` (lmms-eval's overall) and ``overall (micro)`` (mean over questions); percentages."""
    import pandas as pd

    cols = {}
    for name, s in scores.items():
        col = {t: s["per_task"][t] for t in TASKS if t in s["per_task"]}
        col.update({"overall (macro)": s["overall_macro"], "overall (micro)": s["overall_micro"]})
        cols[name] = col
    table = pd.DataFrame(cols)
    table.index.name = "task"
    return table


def markdown_table(df, digits: int = 1) -> str:
    """A DataFrame as a GitHub pipe table (index included), numbers rounded to ``digits``."""
    header = [df.index.name or "", *map(str, df.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for idx, row in df.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else ("" if v is None else str(v)) for v in row]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines) + "\n"
