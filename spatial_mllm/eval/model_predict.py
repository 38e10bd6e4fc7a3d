"""A Spatial-MLLM (model + processor) as a ``predict(batch) -> list[str]`` for the evaluation loop.

:class:`ModelPredictor` reads each item's video (``video``, ``num_frames`` uniform frames or the sampler's
``frame_indices``) with the processor, builds the chat prompt around the item's ``prompt`` (the same
template as training and :func:`spatial_mllm.models.ask.ask`) and decodes greedily with one ``generate``
call per batch (:func:`spatial_mllm.models.ask.answer_batch`, left padding).

:func:`evaluate_model_vsibench` runs :func:`spatial_mllm.eval.vsibench.evaluate_vsibench` with it;
:func:`sft_eval_config` is the evaluation notebook 03 runs before and after SFT; :func:`scores_table` and
:func:`markdown_table` put several runs' scores side by side.
The loop's resume fingerprint covers the items, not the weights, so ``overwrite=True`` (the default)
removes earlier predictions in ``cfg.output_dir`` first: scores then always belong to the model given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from spatial_mllm.eval.vsibench import TASKS, EvalConfig, evaluate_vsibench

__all__ = ["ModelPredictor", "evaluate_model_vsibench", "sft_eval_config", "scores_table", "markdown_table"]


class ModelPredictor:
    """Greedy answers of a Spatial-MLLM for evaluation items.

    Args:
        model: a :class:`~spatial_mllm.models.modeling.SpatialMLLMForConditionalGeneration` (its device is used).
        processor: its :class:`~spatial_mllm.models.processing.SpatialMLLMProcessor`.
        generation_kwargs: ``generate`` settings; default greedy with 16 new tokens (lmms-eval's vsibench).
    """

    def __init__(self, model, processor, generation_kwargs: dict | None = None):
        self.model = model
        self.processor = processor
        self.generation_kwargs = dict(generation_kwargs or {"max_new_tokens": 16, "do_sample": False,
                                                            "num_beams": 1})

    def __call__(self, batch: list[dict]) -> list[str]:
        from spatial_mllm.models.ask import answer_batch

        videos = [self.processor.load_video(it["video"], frame_indices=it.get("frame_indices"),
                                            num_frames=it.get("num_frames")) for it in batch]
        gen = dict(self.generation_kwargs)
        max_new = gen.pop("max_new_tokens", 16)
        was_training = self.model.training
        self.model.eval()
        try:
            return answer_batch(self.model, self.processor, videos, [it["prompt"] for it in batch],
                                max_new_tokens=max_new, **gen)
        finally:
            self.model.train(was_training)


def evaluate_model_vsibench(model, processor, cfg: EvalConfig, *, rows: Sequence[dict] | None = None,
                            overwrite: bool = True, state=None, progress: bool = False) -> dict:
    """Score ``model`` on VSI-Bench rows as ``cfg`` says (greedy, ``cfg.generation_kwargs()``); writes
    ``predictions.jsonl``, ``scores.json`` and ``run.json`` to ``cfg.output_dir``. Returns the scores.

    ``overwrite``: delete earlier ``predictions*.jsonl`` there first (they may come from other weights).
    """
    from spatial_mllm.config import resolve_path

    out = Path(resolve_path(cfg.output_dir))
    if overwrite and out.is_dir():
        for f in out.glob("predictions*.jsonl"):
            f.unlink()
    predict = ModelPredictor(model, processor, cfg.generation_kwargs())
    with torch.no_grad():
        return evaluate_vsibench(cfg, predict, rows=rows, state=state, progress=progress)


def sft_eval_config(cfg, name: str) -> EvalConfig:
    """The :class:`~spatial_mllm.eval.vsibench.EvalConfig` of notebook 03's validation scores for a
    :class:`~spatial_mllm.train.sft.SFTConfig`: ``eval_file`` rows, the run's frames and prompt, greedy
    decoding; results in ``<output_dir>/eval/03_sft_<name>``."""
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
