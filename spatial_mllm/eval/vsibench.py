"""VSI-Bench evaluation: load the benchmark, build the prompts, predict, score.

Sources of truth: Spatial-MLLM's own evaluation scripts for prompts and decoding (``master`` = v1.1:
``src/evaluation/vsibench/eval_vsibench.py``; branch ``v1.0``: ``evaluate/eval_vsibench.py`` and
``evaluate/model.py``) and lmms-eval's ``vsibench`` task (``lmms_eval/tasks/vsibench/vsibench.yaml``,
``_default_template_yaml``, ``utils.py``) for the scores.

* **Data**: ``nyu-visionx/VSI-Bench``, split ``test`` (the paper's "over 5,000" questions), through
  ``datasets.load_dataset`` with a ``revision`` to pin (set it in ``params/paper``; no hub is reachable where
  this was written, so no commit is hard-coded), a local clone of that repository, a local rows file
  (``.jsonl``/``.json``/``.parquet``), or our synthetic benchmark rows
  (:func:`spatial_mllm.data.formats.write_vsibench_rows`). Rows keep the benchmark's 7 columns.
* **Prompt** (``prompt_style``, a named set of :mod:`spatial_mllm.eval.prompts`): ``"v1.1"`` (default;
  Spatial-MLLM v1.1's post-prompts, no pre-prompt), ``"sft"`` (our training prompt, the same text),
  ``"v1.0"`` (the ``<answer>``-tag prompt of ``Diankun/Spatial-MLLM-subset-sft``), ``"lmms_eval"``
  (lmms-eval's, with the pre-prompt ``"These are frames of a video."``; only when asked for by name),
  ``"think"`` (the GRPO stage's reasoning prompt), or ``"auto"``: the set the checkpoint's authors used
  (:meth:`EvalConfig.for_checkpoint`; v1.0 for the subset-sft model, v1.1 for the v1.1 models and
  Qwen2.5-VL-3B-Instruct).
* **Decoding** (``decoding``): ``"official"`` — Spatial-MLLM's evaluation settings, ``do_sample=True,
  temperature=0.1, top_p=0.001`` with up to 1024 new tokens on VSI-Bench (v1.1 ``eval_vsibench.py``
  ``inference_batch``; v1.0 ``evaluate/model.py`` ``ModelConfig`` holds the same three values and its
  ``inference_batch`` samples when ``temperature > 0``) and 256 on ScanQA (v1.1
  ``src/evaluation/scanqa/eval_scanqa.py``; SQA3D has no official script and gets the ScanQA budget);
  ``"greedy"`` (the dataclass default) — lmms-eval's ``generation_kwargs`` (``do_sample: false``,
  ``num_beams: 1``), 16 new tokens, except 1024 for the ``<answer>``-tag sets (``v1.0``, ``think``), which
  may reason first. ``max_new_tokens`` overrides the budget; a tag set below 128 tokens is an error naming
  the key. Released checkpoints are meant to be scored with ``decoding="official"`` and ``prompt_style="auto"``
  (``spatial-mllm evaluate vsibench --decoding official --prompt-style auto``).
  Top-p 0.001 keeps only the most probable token whenever its probability (after temperature 0.1) is at least
  0.001, so the official decoding is greedy in all but two cases: exact logit ties (the kept token then follows
  ``torch.sort``'s order, not ``argmax``'s) and flat distributions (top probability below 0.001), where it
  draws. Those draws are seeded: :class:`~spatial_mllm.eval.model_predict.ModelPredictor` seeds torch from
  ``seed`` and the ids of each batch, in a forked RNG. Keys the official scripts do not pass (``top_k``,
  ``repetition_penalty``) come from the checkpoint's ``generation_config.json`` in both codes.
* **Frames**: ``num_frames`` uniform frames (the adapter reads them with
  :func:`spatial_mllm.data.video.read_video`), or the space-aware sampler's choice from a frames cache
  (JSON ``{"<dataset>/<scene_name>": [frame indices]}``) passed as ``frame_indices``.
* **Scores** (:func:`score`): per question type the mean of accuracy (choices) or MRA (numbers), ×100;
  ``object_rel_direction`` = mean of its easy/medium/hard types; ``overall_macro`` = mean of the 8 task
  scores (lmms-eval's ``overall``); ``overall_micro`` = mean over questions.

Deviations from lmms-eval and the official scripts (all deliberate):

1. Missing task types: lmms-eval (EvolvingLMMs-Lab) raises ``KeyError`` when one of the three
   relative-direction types is absent, and thinking-in-space counts an absent one as 0; here
   ``object_rel_direction`` is the mean of the types present and ``overall_macro`` the mean of the tasks
   present (a subset evaluation does not crash and is not penalised).
2. A numeric ground truth of 0 raises ``ValueError`` naming the row (lmms-eval: ``ZeroDivisionError``).
3. Scores are percentages (lmms-eval aggregates fractions and the paper prints ×100).
4. ``extract_answer=True`` scores the ``<answer>`` content of reasoning outputs (not in lmms-eval; the
   official scripts' ``clean_text`` does the same). The tag sets require it.
5. The default prompt is Spatial-MLLM's (``"v1.1"``), not lmms-eval's; the default decoding is lmms-eval's
   greedy one (``"official"`` must be named). The official scripts neither seed their sampling nor record
   it; we seed it (see Decoding).
6. The resume fingerprint of a prediction covers the prompt set's name and the decoding settings besides the
   prompt text and frames: resuming with another decoding is refused instead of mixing predictions.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from spatial_mllm.config import StageConfig, resolve_path
from spatial_mllm.data import formats
from spatial_mllm.eval import prompts
from spatial_mllm.eval.loop import Predictor, evaluate_items
from spatial_mllm.eval.metrics import score_answer

__all__ = [
    "EvalConfig",
    "DECODINGS",
    "VSIBENCH_HUB_ID",
    "QUESTION_TYPES",
    "TASKS",
    "REL_DIRECTION_TYPES",
    "load_vsibench",
    "build_items",
    "load_frames_cache",
    "resolve_video",
    "score",
    "score_rows",
    "evaluate_vsibench",
]

VSIBENCH_HUB_ID = "nyu-visionx/VSI-Bench"
REL_DIRECTION_TYPES = ("object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard")
QUESTION_TYPES = formats.NA_TYPES + formats.MCA_TYPES
# the 8 tasks of the paper's table, lmms-eval's aggregate keys without the metric suffix
TASKS = (
    "object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation",
    "object_rel_distance", "object_rel_direction", "route_planning", "obj_appearance_order",
)  # fmt: skip
GENERATION_DEFAULTS = {"max_new_tokens": 16, "do_sample": False, "num_beams": 1}  # lmms-eval vsibench.yaml
# ``generate`` settings per decoding, without the token budget (EvalConfig.resolved_max_new_tokens adds it)
DECODINGS = {
    # Spatial-MLLM v1.1 eval_vsibench.py / eval_scanqa.py inference_batch; v1.0 evaluate/model.py ModelConfig
    "official": {"do_sample": True, "temperature": 0.1, "top_p": 0.001},
    # lmms-eval vsibench _default_template_yaml generation_kwargs (temperature 0, top_p 1.0 are no-ops when greedy)
    "greedy": {"do_sample": False, "num_beams": 1},
}
# max_new_tokens of the official decoding per benchmark: VSI-Bench 1024 (v1.1 and v1.0), ScanQA 256 (v1.1
# eval_scanqa.py); SQA3D has no official script and gets ScanQA's budget
OFFICIAL_MAX_NEW_TOKENS = {"vsibench": 1024, "scanqa": 256, "sqa3d": 256}
GREEDY_MAX_NEW_TOKENS = 16  # lmms-eval vsibench.yaml; the <answer>-tag prompt sets get TAGGED_MAX_NEW_TOKENS
TAGGED_MAX_NEW_TOKENS = 1024
MIN_TAGGED_NEW_TOKENS = 128  # below this a <think>/<answer> output is cut before its answer


@dataclass
class EvalConfig(StageConfig):
    """Evaluation of one benchmark (VSI-Bench, ScanQA or SQA3D) with one predictor."""

    output_dir: str = field(default="outputs/tiny/eval", metadata={"help": "predictions.jsonl, scores.json, run.json go here"})
    benchmark: Literal["vsibench", "scanqa", "sqa3d"] = field(default="vsibench", metadata={"help": "which benchmark"})
    source: str = field(
        default="outputs/tiny/data/test_vsibench.jsonl",
        metadata={"help": "VSI-Bench: hub id (nyu-visionx/VSI-Bench), local clone folder or rows file "
                          "(.jsonl/.json/.parquet); ScanQA: ScanQA_v1.0_val.json; SQA3D: the questions file"},
    )  # fmt: skip
    annotations: str | None = field(
        default=None, metadata={"help": "SQA3D only: v1_balanced_sqa_annotations_<split>_scannetv2.json"}
    )
    split: str = field(default="test", metadata={"help": "dataset split when loading through `datasets` (lmms-eval: test)"})
    subset: str | None = field(default=None, metadata={"help": "hub config name (newer VSI-Bench revisions: full / debiased)"})
    revision: str | None = field(
        default=None, metadata={"help": "hub commit to pin (set it for reported numbers; recorded in run.json)"}
    )
    video_root: str | None = field(
        default="outputs/tiny/data", metadata={"help": "videos: <root>/<dataset>/<scene>.mp4 (VSI-Bench) or <root>/<dataset>/<scene>/video.mp4 (ours)"}
    )  # fmt: skip
    prompt_style: Literal["v1.1", "sft", "v1.0", "lmms_eval", "think", "auto"] = field(
        default="v1.1", metadata={"help": "VSI-Bench prompt set (eval.prompts): v1.1 = Spatial-MLLM master's eval "
                                          "script (= sft, our training prompt), v1.0 = the <answer>-tag prompt of "
                                          "Spatial-MLLM-subset-sft, lmms_eval, think (GRPO reasoning), auto = the "
                                          "evaluated checkpoint's own set (for_checkpoint)"}
    )  # fmt: skip
    decoding: Literal["official", "greedy"] = field(
        default="greedy", metadata={"help": "official = Spatial-MLLM's eval scripts (sampling, temperature 0.1, "
                                            "top_p 0.001, 1024 new tokens on VSI-Bench, seeded here); greedy = "
                                            "lmms-eval's (16 new tokens; 1024 for the <answer>-tag prompts)"}
    )  # fmt: skip
    num_frames: int = field(default=16, metadata={"help": "uniform frames per video (paper: 16)"})
    frames_cache: str | None = field(
        default=None, metadata={"help": "JSON {'<dataset>/<scene>': [frame indices]} from the space-aware sampler"}
    )
    batch_size: int = field(default=1, metadata={"help": "questions per generate call (with share_prefix: per "
                            "call on one video's questions; else items per predict() call)"})
    share_prefix: bool = field(default=True, metadata={"help": "model predictors: answer one video's questions "
                               "from one shared prefix (video encoded and prompt prefix prefilled once; the same "
                               "answers as per question, tested); false = one prompt per question"})
    feature_cache_dir: str | None = field(default=None, metadata={"help": "folder of cached per-video visual "
                                          "features (ViT + connector(VGGT)), keyed by video content, frames, "
                                          "processor settings and weights: a second run skips the encoders"})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "new-token budget; null = the decoding's (official: 1024 VSI-Bench, 256 "
                                        "ScanQA/SQA3D; greedy: 16, or 1024 for the v1.0/think prompts)"}
    )  # fmt: skip
    extract_answer: bool = field(default=False, metadata={"help": "score the <answer>…</answer> content (reasoning outputs)"})
    score_rule: Literal["lmms_eval", "spatial_mllm"] = field(
        default="lmms_eval", metadata={"help": "VSI-Bench parsing rules: lmms-eval's (reported) or the Spatial-MLLM repo's"}
    )  # fmt: skip
    limit: int | None = field(default=None, metadata={"help": "evaluate only the first N items (smoke runs)"})
    predictor: Literal["chance", "frequency"] = field(
        default="frequency", metadata={"help": "built-in predictor for runs without a model (see eval.baselines)"}
    )  # fmt: skip
    seed: int = field(default=0, metadata={"help": "seed of the chance baseline and of the official (sampled) decoding"})

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be >= 1 or null")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 or null, got {self.max_new_tokens}")
        if self.prompt_style in prompts.TAGGED_PROMPT_SETS:
            if not self.extract_answer:
                raise ValueError(f"prompt_style {self.prompt_style!r} puts the answer inside <answer>…</answer>; "
                                 "set extract_answer: true")
            if self.max_new_tokens is not None and self.max_new_tokens < MIN_TAGGED_NEW_TOKENS:
                raise ValueError(f"max_new_tokens {self.max_new_tokens} would cut the answers of prompt_style "
                                 f"{self.prompt_style!r} (they may reason before the <answer> tag): set "
                                 f"max_new_tokens >= {MIN_TAGGED_NEW_TOKENS}, or null for {TAGGED_MAX_NEW_TOKENS}")
        if self.benchmark == "sqa3d" and self.annotations is None:
            raise ValueError("benchmark 'sqa3d' needs the annotations file (annotations: ...)")

    def resolved_max_new_tokens(self) -> int:
        """The token budget: ``max_new_tokens``, else the decoding's for this benchmark and prompt set (an
        unresolved ``"auto"`` counts as a set that may reason)."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        if self.decoding == "official":
            return OFFICIAL_MAX_NEW_TOKENS[self.benchmark]
        may_reason = self.prompt_style == "auto" or self.prompt_style in prompts.TAGGED_PROMPT_SETS
        return TAGGED_MAX_NEW_TOKENS if (self.benchmark == "vsibench" and may_reason) else GREEDY_MAX_NEW_TOKENS

    def generation_kwargs(self) -> dict:
        """``generate`` settings for the model adapter: the decoding's (:data:`DECODINGS`) and the budget."""
        return {**DECODINGS[self.decoding], "max_new_tokens": self.resolved_max_new_tokens()}

    def for_checkpoint(self, checkpoint: str | None) -> EvalConfig:
        """This config with ``prompt_style="auto"`` replaced by the prompt set of ``checkpoint`` (hub id or
        folder; :func:`spatial_mllm.eval.prompts.prompt_set_for`) and ``extract_answer`` switched on for the
        ``<answer>``-tag sets; unchanged for any other ``prompt_style``. Raises ``ValueError`` naming
        ``prompt_style`` for a checkpoint whose set is unknown."""
        if self.prompt_style != "auto":
            return self
        chosen = prompts.prompt_set_for(checkpoint)
        return self.replace(prompt_style=chosen, extract_answer=self.extract_answer or prompts.uses_answer_tags(chosen))


# ---- data -----------------------------------------------------------------------------------------------------
def _normalise(rows: Sequence[dict], where: str) -> list[dict]:
    out = []
    for r in rows:
        missing = [k for k in formats.VSIBENCH_FIELDS if k not in r]
        if missing:
            raise KeyError(f"{where}: row {r.get('id')} lacks fields {missing}")
        o = {k: r[k] for k in formats.VSIBENCH_FIELDS}
        opts = o["options"]
        o["options"] = None if opts is None or len(opts) == 0 else [str(x) for x in opts]
        o["id"] = int(o["id"])
        o["ground_truth"] = str(o["ground_truth"])
        formats.is_multiple_choice(o["question_type"])  # unknown types fail here
        out.append(o)
    return out


def load_vsibench(
    source: str | os.PathLike = VSIBENCH_HUB_ID,
    *,
    split: str = "test",
    subset: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """VSI-Bench rows (the 7 benchmark columns; ``options`` a list or None; ``id`` int; ``ground_truth`` str).

    ``source``: a rows file (``.jsonl``/``.json``/``.parquet``, read directly), a local folder (a clone of the
    hub repository, read with ``datasets.load_dataset(folder, subset, split=split)``), or a hub dataset id
    (``datasets.load_dataset(id, subset, split=split, revision=revision)``). ``cache_dir``: the ``datasets``
    cache (default: ``$HF_DATASETS_CACHE``).
    """
    path = Path(os.path.expanduser(str(source)))
    if path.is_file():
        return formats.read_vsibench_rows(path)
    import datasets

    if path.is_dir():
        ds = datasets.load_dataset(str(path), subset, split=split, cache_dir=cache_dir)
    else:
        ds = datasets.load_dataset(str(source), subset, split=split, revision=revision, cache_dir=cache_dir)
    return _normalise(ds.to_list(), str(source))


def load_frames_cache(path: str | os.PathLike | None) -> dict[str, list[int]] | None:
    """The sampler's frame choice per video: ``{"<dataset>/<scene_name>": [indices]}`` (None → uniform)."""
    if path is None:
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {str(k): [int(i) for i in v] for k, v in data.items()}


def resolve_video(row: dict, video_root: str | os.PathLike | None) -> str:
    """Video of a row: ``<root>/<dataset>/<scene>.mp4`` (VSI-Bench, lmms-eval) if it exists, else
    ``<root>/<dataset>/<scene>/video.mp4`` (our rendered scenes) if it exists, else the VSI-Bench path."""
    root = Path(video_root) if video_root is not None else Path(".")
    vsi = root / row["dataset"] / f"{row['scene_name']}.mp4"
    ours = root / row["dataset"] / row["scene_name"] / "video.mp4"
    return str(ours if (not vsi.exists() and ours.exists()) else vsi)


def build_items(
    rows: Sequence[dict],
    *,
    prompt_style: str = "lmms_eval",
    video_root: str | os.PathLike | None = None,
    num_frames: int = 16,
    frames_cache: dict[str, list[int]] | None = None,
    generation: dict | None = None,
) -> list[dict]:
    """Rows + what a predictor needs: ``prompt`` (the row in the named set ``prompt_style``, see
    :mod:`spatial_mllm.eval.prompts`), ``prompt_set`` (that name), ``video``, ``num_frames``,
    ``frame_indices`` (None = uniform ``num_frames``) and ``generation`` (the decoding settings, recorded for
    the resume fingerprint; None when not given). Raises ``KeyError`` when a frames cache lacks a row's video."""
    if prompt_style == "auto":
        raise ValueError("prompt_style 'auto' must be resolved for the evaluated checkpoint first "
                         "(EvalConfig.for_checkpoint(model name or folder))")
    items = []
    for r in rows:
        vkey = f"{r['dataset']}/{r['scene_name']}"
        idx = None
        if frames_cache is not None:
            if vkey not in frames_cache:
                raise KeyError(f"frames cache has no entry for {vkey!r} (row {r['id']})")
            idx = frames_cache[vkey]
        items.append({
            **r,
            "prompt": prompts.build_prompt(r, prompt_style),
            "prompt_set": prompt_style,
            "video": resolve_video(r, video_root),
            "num_frames": len(idx) if idx is not None else num_frames,
            "frame_indices": idx,
            "generation": generation,
        })  # fmt: skip
    return items


# ---- scores ---------------------------------------------------------------------------------------------------
def score_rows(rows: Sequence[dict], *, rule: str = "lmms_eval", extract: bool = False) -> list[float]:
    """Per-question score in [0, 1] (accuracy or MRA) of rows with ``question_type``, ``ground_truth``,
    ``prediction``."""
    out = []
    for r in rows:
        try:
            out.append(score_answer(r["question_type"], r["prediction"], r["ground_truth"], rule=rule, extract=extract))
        except ValueError as e:
            raise ValueError(f"row {r.get('id', r.get('key'))}: {e}") from e
    return out


def score(rows: Sequence[dict], *, rule: str = "lmms_eval", extract: bool = False) -> dict:
    """VSI-Bench scores, percentages (0-100).

    Returns ``per_type`` (each question type present), ``per_task`` (the 8 tasks present;
    ``object_rel_direction`` = mean of easy/medium/hard present), ``overall_macro`` (mean of ``per_task``,
    lmms-eval's ``overall``), ``overall_micro`` (mean over questions) and ``counts`` (questions per type).
    """
    if not rows:
        raise ValueError("no rows to score")
    values = score_rows(rows, rule=rule, extract=extract)
    by_type: dict[str, list[float]] = defaultdict(list)
    for r, v in zip(rows, values):
        by_type[r["question_type"]].append(v)
    per_type = {t: 100.0 * float(np.mean(by_type[t])) for t in QUESTION_TYPES if t in by_type}
    per_task: dict[str, float] = {}
    for task in TASKS:
        if task == "object_rel_direction":
            present = [per_type[t] for t in REL_DIRECTION_TYPES if t in per_type]
            if present:
                per_task[task] = float(np.mean(present))
        elif task in per_type:
            per_task[task] = per_type[task]
    return {
        "per_type": per_type,
        "per_task": per_task,
        "overall_macro": float(np.mean(list(per_task.values()))),
        "overall_micro": 100.0 * float(np.mean(values)),
        "counts": {t: len(by_type[t]) for t in QUESTION_TYPES if t in by_type},
    }


# ---- the runner -----------------------------------------------------------------------------------------------
FINGERPRINT_FIELDS = ("id", "question_type", "ground_truth", "prompt", "prompt_set", "num_frames", "frame_indices",
                      "generation")
RECORD_FIELDS = ("id", "dataset", "scene_name", "question_type", "ground_truth")


def evaluate_vsibench(
    cfg: EvalConfig,
    predict: Predictor | Callable[[list[dict]], list[str]],
    *,
    rows: Sequence[dict] | None = None,
    state=None,
    progress: bool = False,
) -> dict:
    """Predict and score VSI-Bench; write ``predictions.jsonl``, ``scores.json`` and ``run.json`` to
    ``cfg.output_dir``. Resumes from predictions already there. Returns the scores (on every process).

    ``rows``: benchmark rows (default: :func:`load_vsibench` of ``cfg.source``). ``state``: an
    ``accelerate.PartialState`` (default: a new one). ``cfg.prompt_style`` must be a prompt set, not
    ``"auto"`` (resolve it with :meth:`EvalConfig.for_checkpoint`).
    """
    if cfg.benchmark != "vsibench":
        raise ValueError(f"evaluate_vsibench got benchmark {cfg.benchmark!r}")
    if rows is None:
        local = resolve_path(cfg.source)
        rows = load_vsibench(local if local.exists() else cfg.source, split=cfg.split, subset=cfg.subset,
                             revision=cfg.revision)  # fmt: skip
    rows = sorted(rows, key=lambda r: r["id"])
    if cfg.limit is not None:
        rows = rows[: cfg.limit]
    items = build_items(
        rows, prompt_style=cfg.prompt_style, video_root=resolve_path(cfg.video_root), num_frames=cfg.num_frames,
        frames_cache=load_frames_cache(resolve_path(cfg.frames_cache)), generation=cfg.generation_kwargs(),
    )  # fmt: skip

    def scorer(recs):
        return {**score(recs, rule=cfg.score_rule, extract=cfg.extract_answer), "num_questions": len(recs)}

    return evaluate_items(
        items, predict, resolve_path(cfg.output_dir), scorer, key=lambda it: it["id"],
        fingerprint_fields=FINGERPRINT_FIELDS, record_fields=RECORD_FIELDS, batch_size=cfg.batch_size,
        params=cfg, seed=cfg.seed, state=state, progress=progress,
    )  # fmt: skip
