"""Ablations (notebook 05): spatial encoder/connector × frame sampling × frame count, over seeds.

The paper isolates its two ideas in ablation tables: the spatial encoder and how its features enter the LLM
(2D-only Qwen2.5-VL vs. adding VGGT features through a connector; Table 3-style) and the frame sampler
(uniform vs. space-aware frames at a fixed budget, 8 or 16 frames; Table 4-style). This module runs that
grid:

* ``mode: train`` (the ``tiny`` preset): for every (connector ∈ {none, mlp_add, mlp2_add}, sampling ∈
  {uniform, space_aware}, frames ∈ {8, 16}, seed) train a fresh model with
  :func:`spatial_mllm.train.sft.train_sft` — identical budget for every variant (steps, batch, learning
  rates, data order per seed) — and score it on the validation split with the evaluation loop
  (:func:`spatial_mllm.eval.model_predict.evaluate_model_vsibench`). The sampler chooses the frames of
  *both* training and evaluation.
* ``mode: evaluate`` (the ``paper`` preset): no training; every checkpoint in ``checkpoints`` — released
  ones (Spatial-MLLM v1.1 = ``mlp_add``, the v1.0 subset-SFT model = ``mlp2_add``, plain Qwen2.5-VL-3B) and
  this project's own (notebook 03 / 04 folders) — is scored on VSI-Bench for each sampling × frames. An entry
  is ``{name, path, connector}`` plus optional ``stage`` (:data:`STAGES`: ``base`` = not trained for space,
  ``sft``, ``sft+cold_start+grpo``; default ``sft``; a column of the tables), ``prompt_style`` and
  ``max_new_tokens`` (that checkpoint's prompt and budget, e.g. ``think`` with room to reason for a GRPO
  model; ``think`` scores the ``<answer>`` content). A local checkpoint folder that does not exist yet is
  skipped with a note (status ``missing``) so that the released rows still run.

The paper's experiments in the paper preset (``params/paper/05_ablations.yaml``): the spatial encoder
(released v1.1-135K vs. the controlled 2D-only baseline = Qwen2.5-VL-3B fine-tuned on the same data and budget,
``connector: none`` — the official README reports 51.13 vs. 49.84 VSI-Bench micro, 50.48 vs. 49.64 macro, for
"Spatial-MLLM-v1.1-Instruct-135K" vs. "Qwen2.5-VL-3B-Instruct-135K"; that baseline is not released, so it is
notebook 03's paper recipe run with ``connector: none``), the sampler (uniform vs. space-aware) at 8, 16 and
32 frames, and the training stages (SFT vs. SFT + cold start + GRPO: notebook 03's and notebook 04's
checkpoints).

Each run writes ``<output_dir>/eval/05_<connector>_<sampling>_f<frames>_s<seed>/`` (train mode) or
``<output_dir>/eval/05_<checkpoint>_<sampling>_f<frames>/`` (evaluate mode) with the eval loop's
``predictions.jsonl``, ``scores.json`` and ``run.json`` (the layout notebook 06 collects), plus
``ablation.json`` (the variant, its settings and training summary; written last). A finished run is skipped, so
an interrupted grid resumes where it stopped; one made with other settings (SFT settings in train mode, the
checkpoint in evaluate mode) is an error naming the keys, never reused. :func:`summarize` gathers the runs into
``<output_dir>/tables/05_ablations.csv`` (one row per run) and :func:`aggregate` into
``05_ablations_aggregated.csv|md`` (mean and a 95 % **Student-t** interval over seeds by default:
``mean ± t_{0.975, n-1} · s / √n``; ``ci_method: bootstrap`` gives a percentile bootstrap of the mean).

**Space-aware frames.** A frames cache ``{"<dataset>/<scene>": [frame indices]}`` per frame count
(``<output_dir>/ablations/frames_cache/space_aware_<source>_k<k>.json``), the key that both the training
collator (:mod:`spatial_mllm.data.collate`, the folder of ``<folder>/video.mp4``) and the evaluation
(:func:`spatial_mllm.eval.vsibench.build_items`) look up. ``space_aware_source: ground_truth`` (tiny) runs
the greedy maximum coverage on the *rendered* depth and cameras (``frames.npz``) — the tiny VGGT is
random-init, its point maps are noise, so exact geometry is the only meaningful space-aware choice at toy
scale; ``vggt`` (paper) runs :class:`~spatial_mllm.sampling.sampler.SpaceAwareSampler` with VGGT-1B's point
head, as the paper does.

Departures from the paper's ablation protocol:

1. Train mode trains each variant from scratch for a few dozen SFT steps on synthetic rooms with a
   random-init tiny model; the paper's ablations fine-tune Qwen2.5-VL-3B + VGGT-1B on Spatial-MLLM-120k and
   report one run each. Numbers here are toy-scale: they show that the grid, the resumable runs, the
   tables and the intervals work, not which design wins.
2. Several seeds per variant with confidence intervals; the paper reports single runs without intervals.
3. Tiny space-aware sampling uses ground-truth depth + cameras instead of VGGT point maps (above), with the
   official relative voxel (min extent / 20) and every rendered frame as a candidate (the paper: Nm = 128
   uniform candidates; our videos have 48 frames).
4. Train mode uses the sampler's frames for training and evaluation alike, so that each variant is one
   consistent pipeline; the paper's sampler ablation compares the frames a trained model is shown.
5. Evaluate mode scores released checkpoints, which were trained on 16 uniform frames (the official
   training reads ``np.linspace(0, n - 1, 16)`` frames, ``src/qwenvl/data/data_qwen.py`` and
   ``scripts/training/spatial_mllm_train_demo.sh`` on ``master``; space-aware sampling is the paper's
   inference-time strategy, §3.2); scoring them at 8 frames is a test-time ablation only, unlike the paper's
   retrained variants, and space-aware frames are the paper's inference setting.
6. Validation questions are capped (``eval_limit``, a subset stratified over question types) to fit the
   tiny preset's time budget; the paper scores all of VSI-Bench.
7. The tiny preset trains on 56×56 frames (``max_pixels``) with a higher learning rate than notebook 03
   so that 24 runs fit in a few CPU minutes.
8. ``eval_decoding``: the paper preset decodes as the official scripts do (``official``: temperature 0.1,
   top_p 0.001 — near-greedy — seeded here, 1024 new tokens); the tiny preset greedily with 16 (lmms-eval's).
   Every checkpoint gets ``eval_prompt_style`` (``sft`` is
   v1.1's prompt) unless its entry names its own; the paper preset gives ``Diankun/Spatial-MLLM-subset-sft``
   v1.0's ``<answer>``-tag prompt (``prompt_style: v1.0``), as the v1.0 branch evaluates it.
9. The paper preset's trained rows are ours, not the authors': the controlled 2D-only baseline (the
   README's unreleased "Qwen2.5-VL-3B-Instruct-135K") is notebook 03's v1.1-135K recipe with ``connector:
   none``, and SFT vs. SFT + cold start + GRPO compares notebook 03's and notebook 04's checkpoints (the
   authors released no GRPO model; their GRPO code is unreleased). The 32-frame cells are test-time only, like
   item 5's 8-frame cells. A checkpoint entry's own ``prompt_style`` / ``max_new_tokens`` replaces item 8's
   single prompt for that checkpoint (the GRPO model answers in ``<think>…</think><answer>…</answer>``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spatial_mllm.config import StageConfig, register_params, resolve_path

__all__ = [
    "AblationConfig",
    "Variant",
    "build_grid",
    "mean_ci",
    "stratified_subset",
    "space_aware_frames_cache",
    "ground_truth_frames_cache",
    "vggt_frames_cache",
    "run_variant",
    "run_ablations",
    "load_checkpoint",
    "local_checkpoint",
    "summarize",
    "aggregate",
    "aggregated_markdown",
    "write_tables",
    "CONNECTORS",
    "SAMPLINGS",
    "STAGES",
]

CONNECTORS = ("none", "mlp_add", "mlp2_add")
SAMPLINGS = ("uniform", "space_aware")
STAGES = ("base", "sft", "sft+cold_start+grpo")  # training stages a checkpoint went through (train mode: sft)
CHECKPOINT_KEYS = ("name", "path", "connector")  # required keys of a `checkpoints` entry
CHECKPOINT_OPTIONAL_KEYS = ("stage", "prompt_style", "max_new_tokens")
CACHE_SUBDIR = "ablations/frames_cache"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@register_params("05_ablations")
@dataclass
class AblationConfig(StageConfig):
    """Parameters of notebook 05 (ablations). Defaults are the ``tiny`` preset; the paper preset evaluates
    released checkpoints instead of training."""

    # ---- run ------------------------------------------------------------------------------------------
    output_dir: str = field(default="outputs/tiny", metadata={
        "help": "run folder: eval/05_*/ per run, tables/05_*, figures/05_*, ablations/ (frames caches, models)"})
    mode: Literal["train", "evaluate"] = field(default="train", metadata={
        "help": "train: SFT every variant from scratch then score it (tiny); evaluate: score `checkpoints` "
                "only, no training (paper)"})
    seed: int = field(default=0, metadata={"help": "seed of the data build and of evaluate-mode runs"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "train mode: one run per seed and variant (model init, connector init, data order); the CI "
                "is over these"})
    # ---- the grid -------------------------------------------------------------------------------------
    connectors: list[str] = field(default_factory=lambda: list(CONNECTORS), metadata={
        "help": "train mode: none (2D-only Qwen2.5-VL), mlp_add (official v1.1), mlp2_add (v1.0)"})
    samplings: list[str] = field(default_factory=lambda: list(SAMPLINGS), metadata={
        "help": "uniform (Qwen's linspace) and/or space_aware (greedy max voxel coverage, paper §3.2)"})
    frames: list[int] = field(default_factory=lambda: [8, 16], metadata={
        "help": "frames per video, for training and evaluation (paper: 16; its sampler ablation also 8)"})
    space_aware_source: Literal["ground_truth", "vggt"] = field(default="ground_truth", metadata={
        "help": "point maps for space-aware sampling: ground_truth = rendered depth + cameras (frames.npz; "
                "tiny, whose VGGT is random-init), vggt = VGGT point head on the video (paper)"})
    vggt_name_or_path: str = field(default="facebook/VGGT-1B", metadata={
        "help": "VGGT weights of the space-aware sampler when space_aware_source is vggt"})
    num_candidates: int = field(default=128, metadata={
        "help": "Nm: uniform candidate frames the sampler picks from (paper: 128; ground_truth uses every "
                "frame up to this many)"})
    # ---- data -----------------------------------------------------------------------------------------
    data_dir: str | None = field(default=None, metadata={
        "help": "notebook 01's data folder (train_sft.jsonl, val_vsibench.jsonl, synthetic/); None = "
                "<output_dir>/data, built when missing and build_data_if_missing"})
    train_file: str = field(default="train_sft.jsonl", metadata={
        "help": "train mode: SFT conversations, relative to data_dir"})
    eval_source: str | None = field(default=None, metadata={
        "help": "VSI-Bench rows: a rows file, a local clone or the hub id nyu-visionx/VSI-Bench; None = "
                "<data_dir>/val_vsibench.jsonl"})
    eval_split: str = field(default="test", metadata={"help": "split when eval_source is loaded with datasets"})
    eval_revision: str | None = field(default=None, metadata={"help": "hub commit of eval_source to pin"})
    video_root: str | None = field(default=None, metadata={
        "help": "folder the rows' videos start from (<root>/<dataset>/<scene>.mp4 or .../video.mp4); None = "
                "data_dir"})
    build_data_if_missing: bool = field(default=True, metadata={
        "help": "train mode: build notebook 01's tiny dataset when train_file is missing"})
    min_pixels: int = field(default=28 * 28, metadata={
        "help": "per-frame pixel lower bound (paper: 100352, qwen-vl-utils' default, which the official "
                "evaluation uses; 293216 is the official TRAINING script's)"})
    max_pixels: int = field(default=4704, metadata={
        "help": "per-frame pixel upper bound (paper: 602112, qwen-vl-utils' default, the official evaluation's; "
                "324576 is the official training script's; tiny 4704: 112×84 frames → 56×56)"})
    pixel_preset: Literal["official_train", "official_eval"] | None = field(default=None, metadata={
        "help": "how videos become frames (SpatialMLLMProcessor): paper: official_eval, the official evaluation "
                "(eval_vsibench.py passes only nframes to qwen-vl-utils; space-aware frames as its PNG list)"})
    second_per_grid_t: float | None = field(default=None, metadata={
        "help": "seconds per temporal patch in M-RoPE; None = the preset's, or the sampled fps's (paper: 1.0, "
                "the official EVALUATION value: no fps reaches transformers 4.51.3's processor, which "
                "assumes 2.0; official training uses 0.5)"})
    # ---- training budget (train mode; identical for every variant) ------------------------------------
    model_name_or_path: str = field(default="tiny", metadata={
        "help": "train mode: 'tiny' or a Qwen2.5-VL id/path (with sft_overrides.vggt_name_or_path for the "
                "VGGT rows)"})
    max_steps: int = field(default=40, metadata={"help": "SFT optimizer steps per run (tiny: 40)"})
    global_batch_size: int = field(default=4, metadata={"help": "rows per optimizer step (paper SFT: 48)"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "rows per forward pass"})
    learning_rate: float = field(default=1e-2, metadata={"help": "peak lr of the LLM (paper: 7e-6)"})
    mm_projector_lr: float = field(default=2e-2, metadata={
        "help": "peak lr of the connector and merger (official: 2e-5)"})
    sft_overrides: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "any other SFTConfig fields for every run (e.g. warmup_ratio, lora_r); the grid's own "
                "fields (connector, num_frames, frames_cache, seed, output_dir, ...) are not allowed"})
    keep_checkpoints: bool = field(default=False, metadata={
        "help": "keep each run's trained model under ablations/<run>/ (tiny: off, ~7 MB a run)"})
    # ---- evaluate mode --------------------------------------------------------------------------------
    checkpoints: list[dict[str, str | int]] = field(default_factory=list, metadata={
        "help": "evaluate mode: [{name, path (hub id or folder), connector, optional stage (base | sft | "
                "sft+cold_start+grpo), prompt_style, max_new_tokens}] — paper: Spatial-MLLM v1.1 (mlp_add), "
                "v1.0 subset-sft (mlp2_add), Qwen2.5-VL-3B-Instruct (none), the 2D-only SFT baseline (none), "
                "this project's SFT and GRPO checkpoints"})
    # ---- evaluation -----------------------------------------------------------------------------------
    eval_limit: int | None = field(default=40, metadata={
        "help": "score N questions of eval_source, stratified: taken round-robin over the question types in "
                "id order (tiny: 40; paper: null = all)"})
    eval_batch_size: int = field(default=20, metadata={"help": "questions per generate call"})
    eval_decoding: Literal["greedy", "official"] = field(default="greedy", metadata={
        "help": "greedy (lmms-eval) or official (Spatial-MLLM's evaluation: temperature 0.1, top_p 0.001, seeded)"})
    eval_max_new_tokens: int = field(default=16, metadata={"help": "decoding budget (lmms-eval: 16; official: 1024)"})
    eval_prompt_style: Literal["sft", "lmms_eval"] = field(default="sft", metadata={
        "help": "sft = the training prompt (Spatial-MLLM's eval script); lmms_eval adds its pre-prompt"})
    # ---- statistics -----------------------------------------------------------------------------------
    ci_method: Literal["t", "bootstrap"] = field(default="t", metadata={
        "help": "interval over seeds: t = Student-t interval of the mean; bootstrap = percentile bootstrap"})
    ci_level: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    bootstrap_samples: int = field(default=10000, metadata={"help": "resamples for ci_method bootstrap"})
    progress: bool = field(default=False, metadata={
        "help": "progress bars and the trainer's own output (freeze plan, loss logs) of every run"})

    def __post_init__(self):
        for name, allowed in (("connectors", CONNECTORS), ("samplings", SAMPLINGS)):
            values = getattr(self, name)
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ValueError(f"{name}: unknown {bad}; choose from {list(allowed)}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {values}")
        if not self.samplings or not self.frames:
            raise ValueError("samplings and frames must each list at least one value")
        if any(f < 2 for f in self.frames) or len(set(self.frames)) != len(self.frames):
            raise ValueError(f"frames must be distinct and >= 2 (Qwen's temporal patch is 2 frames), "
                             f"got {self.frames}")
        if any(f > self.num_candidates for f in self.frames):
            raise ValueError(f"frames {self.frames} exceed num_candidates {self.num_candidates}")
        if not 0 < self.ci_level < 1:
            raise ValueError(f"ci_level must lie in (0, 1), got {self.ci_level}")
        if self.bootstrap_samples < 100:
            raise ValueError("bootstrap_samples must be >= 100")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError("eval_limit must be >= 1 or null")
        if self.eval_batch_size < 1 or self.eval_max_new_tokens < 1:
            raise ValueError("eval_batch_size and eval_max_new_tokens must be >= 1")
        if self.mode == "train":
            if not self.connectors:
                raise ValueError("train mode needs at least one connector")
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"seeds must be a non-empty list of distinct ints, got {self.seeds}")
            if self.max_steps < 1:
                raise ValueError("max_steps must be >= 1 (identical budgets need a step count, not epochs)")
            self._check_sft_overrides()
            self.sft_config(Variant("mlp_add", self.samplings[0], self.frames[0], self.seeds[0]))  # validates
        else:
            if not self.checkpoints:
                raise ValueError("evaluate mode needs `checkpoints`: [{name, path, connector}, ...]")
            names = []
            for i, c in enumerate(self.checkpoints):
                missing = set(CHECKPOINT_KEYS) - set(c)
                if missing or set(c) - set(CHECKPOINT_KEYS) - set(CHECKPOINT_OPTIONAL_KEYS):
                    raise ValueError(f"checkpoints[{i}] needs the keys name, path, connector (optional: "
                                     f"{', '.join(CHECKPOINT_OPTIONAL_KEYS)}); got {sorted(c)}")
                if not all(isinstance(c[k], str) for k in (*CHECKPOINT_KEYS, "stage", "prompt_style") if k in c):
                    raise ValueError(f"checkpoints[{i}]: name, path, connector, stage and prompt_style are strings")
                if c.get("stage", "sft") not in STAGES:
                    raise ValueError(f"checkpoints[{i}]: stage {c['stage']!r} not in {list(STAGES)}")
                budget = c.get("max_new_tokens")
                if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
                    raise ValueError(f"checkpoints[{i}]: max_new_tokens must be an int >= 1, got {budget!r}")
                if c["connector"] not in CONNECTORS:
                    raise ValueError(f"checkpoints[{i}]: connector {c['connector']!r} not in {list(CONNECTORS)}")
                if not _NAME_RE.match(c["name"]):
                    raise ValueError(f"checkpoints[{i}]: name {c['name']!r} must match {_NAME_RE.pattern} "
                                     f"(it names a folder)")
                names.append(c["name"])
            if len(set(names)) != len(names):
                raise ValueError(f"checkpoint names must be unique, got {names}")
            for v in build_grid(self)[:: len(self.samplings) * len(self.frames)]:  # one run per checkpoint
                self.eval_config(v)  # a per-checkpoint prompt_style / max_new_tokens EvalConfig rejects fails here

    _GRID_FIELDS = ("output_dir", "seed", "connector", "num_frames", "frames_cache", "data_dir", "train_file",
                    "video_root", "model_name_or_path", "num_processes")

    def _check_sft_overrides(self) -> None:
        from spatial_mllm.train.sft import SFTConfig

        known = {f.name for f in dataclasses.fields(SFTConfig)}
        own = {f.name for f in dataclasses.fields(self)} & known
        for k in self.sft_overrides:
            if k not in known:
                raise ValueError(f"sft_overrides: {k!r} is not an SFTConfig field")
            if k in self._GRID_FIELDS or k in own:
                raise ValueError(f"sft_overrides: {k!r} is set by the ablation grid or by this config's own "
                                 f"field; set it there")

    # ---- derived --------------------------------------------------------------------------------------
    def out(self) -> Path:
        return resolve_path(self.output_dir)

    def resolved_data_dir(self) -> Path:
        return resolve_path(self.data_dir) if self.data_dir is not None else self.out() / "data"

    def resolved_video_root(self) -> Path:
        return resolve_path(self.video_root) if self.video_root is not None else self.resolved_data_dir()

    def resolved_eval_source(self) -> str:
        if self.eval_source is None:
            return str(self.resolved_data_dir() / "val_vsibench.jsonl")
        local = resolve_path(self.eval_source)
        return str(local) if local.exists() else self.eval_source

    def group_column(self) -> str:
        """Column that groups bars in the plots: the connector (train) or the checkpoint (evaluate)."""
        return "connector" if self.mode == "train" else "model"

    def frames_cache_path(self, k: int) -> Path:
        return self.out() / CACHE_SUBDIR / f"space_aware_{self.space_aware_source}_k{k}.json"

    def sft_config(self, variant: Variant):
        """The :class:`~spatial_mllm.train.sft.SFTConfig` of one train-mode run (same budget for all)."""
        from spatial_mllm.train.sft import SFTConfig

        cache = str(self.frames_cache_path(variant.frames)) if variant.sampling == "space_aware" else None
        # the 2D-only row has no VGGT to load: a shared vggt_name_or_path applies to the VGGT rows only
        overrides = {k: v for k, v in self.sft_overrides.items()
                     if not (k == "vggt_name_or_path" and variant.connector == "none")}
        return SFTConfig.from_dict({
            "save_steps": 10**9, "logging_steps": max(1, self.max_steps // 8), "report_to": "none",
            **overrides,
            "output_dir": str(self.out() / "ablations" / variant.name),
            "seed": variant.seed, "connector": variant.connector, "num_frames": variant.frames,
            "frames_cache": cache, "data_dir": str(self.resolved_data_dir()), "train_file": self.train_file,
            "video_root": str(self.resolved_video_root()), "model_name_or_path": self.model_name_or_path,
            "min_pixels": self.min_pixels, "max_pixels": self.max_pixels, "pixel_preset": self.pixel_preset,
            "second_per_grid_t": self.second_per_grid_t, "max_steps": self.max_steps,
            "global_batch_size": self.global_batch_size,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "learning_rate": self.learning_rate, "mm_projector_lr": self.mm_projector_lr,
            "build_data_if_missing": self.build_data_if_missing,
        }, source="AblationConfig.sft_config")

    def eval_config(self, variant: Variant):
        """The :class:`~spatial_mllm.eval.vsibench.EvalConfig` of one run: ``<output_dir>/eval/<name>``."""
        from spatial_mllm.eval.vsibench import EvalConfig

        cache = str(self.frames_cache_path(variant.frames)) if variant.sampling == "space_aware" else None
        ec = EvalConfig(
            output_dir=str(self.out() / "eval" / variant.name), source=self.resolved_eval_source(),
            split=self.eval_split, revision=self.eval_revision, video_root=str(self.resolved_video_root()),
            prompt_style=self.eval_prompt_style, num_frames=variant.frames, frames_cache=cache,
            batch_size=self.eval_batch_size, decoding=self.eval_decoding, max_new_tokens=self.eval_max_new_tokens,
            seed=variant.seed)
        # a checkpoint's own prompt / budget (evaluate mode), e.g. the think prompt of a GRPO model
        own = {k: v for k, v in (("prompt_style", variant.prompt_style), ("max_new_tokens", variant.max_new_tokens))
               if v is not None}
        if variant.prompt_style is not None:
            own["extract_answer"] = variant.prompt_style in ("think", "v1.0")  # the <answer>-tag prompts
        return ec.replace(**own) if own else ec

    def eval_rows(self) -> list[dict]:
        """The scored VSI-Bench rows: all of ``eval_source``, or with ``eval_limit`` a stratified subset —
        question types in turn (VSI-Bench's type order), each type's rows in id order — so that a small
        subset still covers every task (rows are grouped by type in id order, a plain prefix would not)."""
        from spatial_mllm.eval.vsibench import load_vsibench

        rows = load_vsibench(self.resolved_eval_source(), split=self.eval_split, revision=self.eval_revision)
        return stratified_subset(rows, self.eval_limit)


def stratified_subset(rows: list[dict], limit: int | None) -> list[dict]:
    """``limit`` rows taken round-robin over the question types (VSI-Bench's type order), each type's rows in
    id order, returned in id order; all rows (sorted by id) when ``limit`` is None or not smaller."""
    from spatial_mllm.eval.vsibench import QUESTION_TYPES

    rows = sorted(rows, key=lambda r: r["id"])
    if limit is None or limit >= len(rows):
        return rows
    by_type: dict[str, list[dict]] = {}
    for r in rows:
        by_type.setdefault(r["question_type"], []).append(r)
    queues = [by_type[t] for t in QUESTION_TYPES if t in by_type]
    picked: list[dict] = []
    depth = 0
    while len(picked) < limit:
        picked += [q[depth] for q in queues if depth < len(q)][: limit - len(picked)]
        depth += 1
    return sorted(picked, key=lambda r: r["id"])


@dataclass(frozen=True)
class Variant:
    """One cell of the grid. ``model`` is ``None`` in train mode, the checkpoint's name in evaluate mode."""

    connector: str
    sampling: str
    frames: int
    seed: int
    model: str | None = None
    path: str | None = None
    stage: str = "sft"  # STAGES; train mode always trains SFT only
    prompt_style: str | None = None  # evaluate mode: the checkpoint's own prompt (None = eval_prompt_style)
    max_new_tokens: int | None = None  # evaluate mode: the checkpoint's own budget (None = eval_max_new_tokens)

    @property
    def name(self) -> str:
        """Folder name under ``<output_dir>/eval``."""
        if self.model is None:
            return f"05_{self.connector}_{self.sampling}_f{self.frames}_s{self.seed}"
        return f"05_{self.model}_{self.sampling}_f{self.frames}"

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.name, "model": self.model or "tiny", "connector": self.connector, "stage": self.stage,
                "sampling": self.sampling, "frames": self.frames, "seed": self.seed}


def build_grid(cfg: AblationConfig) -> list[Variant]:
    """Every run of the ablation, seeds outermost (train mode) so that a partial grid holds whole seeds;
    evaluate mode: checkpoints × samplings × frames (one model load serves consecutive runs)."""
    if cfg.mode == "train":
        return [Variant(c, s, f, seed) for seed, c, s, f in
                itertools.product(cfg.seeds, cfg.connectors, cfg.samplings, cfg.frames)]
    return [Variant(ck["connector"], s, f, cfg.seed, model=ck["name"], path=ck["path"], stage=ck.get("stage", "sft"),
                    prompt_style=ck.get("prompt_style"), max_new_tokens=ck.get("max_new_tokens"))
            for ck, s, f in itertools.product(cfg.checkpoints, cfg.samplings, cfg.frames)]


# --------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------


def mean_ci(values, level: float = 0.95, method: str = "t", n_boot: int = 10000, seed: int = 0) -> dict:
    """Mean of ``values`` (NaNs dropped) with a two-sided ``level`` interval.

    ``method="t"``: ``mean ± t_{(1+level)/2, n-1} · s / √n`` (s with ddof 1); ``"bootstrap"``: percentiles
    ``(1-level)/2`` and ``(1+level)/2`` of ``n_boot`` resampled means (numpy ``default_rng(seed)``).
    With fewer than two values the interval is NaN (no spread to estimate).

    Returns ``{"n", "mean", "std", "ci_low", "ci_high"}``.
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": std, "ci_low": math.nan, "ci_high": math.nan}
    if method == "t":
        from scipy import stats

        half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        low, high = (float(q) for q in np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))
    else:
        raise ValueError(f"unknown CI method {method!r}; use 't' or 'bootstrap'")
    return {"n": n, "mean": mean, "std": std, "ci_low": low, "ci_high": high}


# --------------------------------------------------------------------------------------------------
# space-aware frames caches
# --------------------------------------------------------------------------------------------------


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def ground_truth_frames_cache(scene_dirs: dict[str, Path], k: int, num_candidates: int = 128) -> dict[str, list[int]]:
    """``{key: k frame indices}`` chosen by greedy max coverage on rendered depth + cameras.

    Args:
        scene_dirs: video key (``"<dataset>/<scene>"``) → folder with ``frames.npz``
            (:func:`spatial_mllm.data.render.save_rendered`).
        k: frames per video. num_candidates: at most this many uniform candidates (all frames when fewer).
    Points come from :func:`spatial_mllm.sampling.select_frames_from_depth` (exact geometry, no confidence
    filter: ``conf_rule="none"``); voxels follow the official relative rule (min extent / 20).
    """
    import torch

    from spatial_mllm.data.video import uniform_frame_indices
    from spatial_mllm.sampling import select_frames_from_depth

    out = {}
    for key, folder in sorted(scene_dirs.items()):
        npz = Path(folder) / "frames.npz"
        if not npz.is_file():
            raise FileNotFoundError(f"{npz} not found: ground-truth space-aware sampling needs the rendered "
                                    f"depth and cameras of {key} (or use space_aware_source: vggt)")
        with np.load(npz) as d:
            depth, K, E = d["depth"], d["intrinsics"], d["extrinsics"]
        cand = uniform_frame_indices(len(depth), min(num_candidates, len(depth)), "round").tolist()
        if k > len(cand):
            raise ValueError(f"{key}: {k} frames requested from a video of {len(cand)} candidate frames")
        sel = select_frames_from_depth(torch.from_numpy(depth[cand]), torch.from_numpy(K[cand]),
                                       torch.from_numpy(E[cand]), k, conf_rule="none", warn=False)
        out[key] = [int(cand[i]) for i in sel]
    return out


def vggt_frames_cache(videos: dict[str, str], k: int, cfg: AblationConfig) -> dict[str, list[int]]:
    """``{key: k frame indices}`` from :class:`~spatial_mllm.sampling.sampler.SpaceAwareSampler` (VGGT
    point head, the paper's sampler); per-video selections are cached under the frames-cache folder."""
    from spatial_mllm.sampling.sampler import SpaceAwareSampler, SpaceAwareSamplerConfig

    sampler = SpaceAwareSampler(model_path=cfg.vggt_name_or_path,
                                config=SpaceAwareSamplerConfig(num_candidates=cfg.num_candidates),
                                cache_dir=cfg.out() / CACHE_SUBDIR / "per_video")
    return {key: sampler.sample(video, k, name=key.replace("/", "__")).indices
            for key, video in sorted(videos.items())}


def _videos_to_sample(cfg: AblationConfig) -> dict[str, str]:
    """Video key → video path: every synthetic scene of the data folder (train mode trains on them too),
    plus every video the evaluation rows name."""
    from spatial_mllm.eval.vsibench import resolve_video

    videos: dict[str, str] = {}
    root = cfg.resolved_video_root()
    if cfg.mode == "train":
        for npz in sorted(root.glob("*/*/frames.npz")):
            videos[f"{npz.parent.parent.name}/{npz.parent.name}"] = str(npz.parent / "video.mp4")
    for r in cfg.eval_rows():
        videos.setdefault(f"{r['dataset']}/{r['scene_name']}", resolve_video(r, root))
    return videos


def space_aware_frames_cache(cfg: AblationConfig, k: int) -> Path:
    """Write (or reuse) the space-aware frames cache for ``k`` frames; returns its path. An existing cache
    that already lists every video is reused (resume)."""
    path = cfg.frames_cache_path(k)
    videos = _videos_to_sample(cfg)
    old = json.loads(path.read_text()) if path.is_file() else {}
    if all(key in old for key in videos):
        return path
    if cfg.space_aware_source == "ground_truth":
        new = ground_truth_frames_cache({key: Path(v).parent for key, v in videos.items() if key not in old}, k,
                                        cfg.num_candidates)
    else:
        new = vggt_frames_cache({key: v for key, v in videos.items() if key not in old}, k, cfg)
    _write_json(path, {**old, **new})
    return path


# --------------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------------


def _settings(cfg: AblationConfig, v: Variant) -> dict:
    """What a run is made with: its SFT settings (train mode) or its checkpoint (evaluate mode)."""
    return {"sft": cfg.sft_config(v).to_dict()} if cfg.mode == "train" else {"checkpoint": v.path}


def _done(cfg: AblationConfig, v: Variant) -> bool:
    """A run is finished when its ``scores.json`` and ``ablation.json`` (written last) exist; it must have been made
    with the settings asked now (``ablation.json`` ``settings``), else an error names the keys."""
    from spatial_mllm.experiments.records import check_same_settings

    d = cfg.out() / "eval" / v.name
    if not (d / "scores.json").is_file() or not (d / "ablation.json").is_file():
        return False
    check_same_settings(d / "ablation.json", _settings(cfg, v), f"run {v.name!r}", key="settings")
    return True


def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_variant(cfg: AblationConfig, v: Variant, *, model=None, processor=None, rows=None) -> dict:
    """Train (train mode) and score one variant; returns its scores. ``model``/``processor``: evaluate
    mode's loaded checkpoint (loaded here when not given); ``rows``: :meth:`AblationConfig.eval_rows`
    (read here when not given)."""
    from spatial_mllm.eval.model_predict import evaluate_model_vsibench

    eval_dir = cfg.out() / "eval" / v.name
    info: dict[str, Any] = {**v.to_dict(), "mode": cfg.mode, "path": v.path, "settings": _settings(cfg, v)}
    t0 = time.perf_counter()
    if cfg.mode == "train":
        from spatial_mllm.train.sft import load_sft_checkpoint, train_sft

        sft = cfg.sft_config(v)
        # the trainer prints the freeze plan and a log dict per run; with progress off only the summary shows
        quiet = contextlib.redirect_stdout(io.StringIO()) if not cfg.progress else contextlib.nullcontext()
        with quiet:
            result = train_sft(sft)
        info.update(train_loss=result.train_loss, train_steps=result.global_step, train_s=result.runtime_s,
                    train_stats=result.stats)
        model, processor = load_sft_checkpoint(result.output_dir, device=_device())
    elif model is None or processor is None:
        model, processor = load_checkpoint(cfg, v)
    rows = cfg.eval_rows() if rows is None else rows
    scores = evaluate_model_vsibench(model, processor, cfg.eval_config(v), rows=rows, progress=cfg.progress)
    info["total_s"] = round(time.perf_counter() - t0, 2)
    _write_json(eval_dir / "ablation.json", info)
    if cfg.mode == "train" and not cfg.keep_checkpoints:
        shutil.rmtree(cfg.out() / "ablations" / v.name, ignore_errors=True)
    return scores


def local_checkpoint(path: str) -> Path | None:
    """The folder of a local checkpoint path (resolved from the project root), or None for a hub id. A path
    is local when it exists, starts with ``.``, ``/`` or ``~``, or has more than one ``/`` (a hub id is
    ``owner/name``)."""
    p = resolve_path(path)
    if p.exists() or str(path).startswith((".", "/", "~")) or str(path).count("/") > 1:
        return p
    return None


def load_checkpoint(cfg: AblationConfig, v: Variant):
    """Evaluate mode: ``(model, processor)`` of a checkpoint — hub id or local folder — (bf16 on CUDA, fp32 on
    CPU); its connector must be the one ``checkpoints`` claims."""
    import torch

    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
    from spatial_mllm.models.processing import SpatialMLLMProcessor

    dev = _device()
    local = local_checkpoint(v.path)
    src = str(local) if local is not None else v.path
    model = SpatialMLLMForConditionalGeneration.from_pretrained(
        src, dtype=torch.bfloat16 if dev == "cuda" else torch.float32).to(dev).eval()
    kind = model.config.connector_config["type"]
    if kind != v.connector:
        raise ValueError(f"checkpoint {v.model} ({v.path}) has connector {kind!r}, params say {v.connector!r}")
    processor = SpatialMLLMProcessor.from_pretrained(src, num_frames=max(cfg.frames), min_pixels=cfg.min_pixels,
                                                     max_pixels=cfg.max_pixels, pixel_preset=cfg.pixel_preset,
                                                     second_per_grid_t=cfg.second_per_grid_t)
    return model, processor


def run_ablations(cfg: AblationConfig, *, log=print) -> list[dict]:
    """Run every variant of :func:`build_grid` that has no ``scores.json`` yet (resume), building the data
    (train mode, when missing) and the space-aware frames caches first. Returns one status dict per run
    (``run``, ``status`` ∈ {ran, skipped, missing}, ``seconds``); ``missing``: evaluate mode, a local
    checkpoint folder that does not exist (yet), noted through ``log``."""
    if cfg.mode == "train":
        from spatial_mllm.train.sft import ensure_training_data

        ensure_training_data(cfg.sft_config(build_grid(cfg)[0]).replace(seed=cfg.seed))
    grid = build_grid(cfg)
    absent = set()
    if cfg.mode == "evaluate":
        for ck in cfg.checkpoints:
            local = local_checkpoint(ck["path"])
            if local is not None and not local.is_dir():
                absent.add(ck["name"])
                log(f"checkpoint {ck['name']}: {local} not found (train it first); its runs are skipped")
    grid_todo = [v for v in grid if v.model not in absent]
    todo = [v for v in grid_todo if not _done(cfg, v)]
    if "space_aware" in cfg.samplings and todo:
        for k in sorted({v.frames for v in todo if v.sampling == "space_aware"}):
            space_aware_frames_cache(cfg, k)
    rows = cfg.eval_rows()
    statuses, loaded = [], (None, None, None)
    for i, v in enumerate(grid):
        if _done(cfg, v):
            statuses.append({"run": v.name, "status": "skipped", "seconds": 0.0})
            continue
        if v.model in absent:
            statuses.append({"run": v.name, "status": "missing", "seconds": 0.0})
            continue
        t0 = time.perf_counter()
        model = processor = None
        if cfg.mode == "evaluate":
            if loaded[0] != v.path:
                loaded = (None, None, None)  # free the previous model before loading the next
                loaded = (v.path, *load_checkpoint(cfg, v))
            model, processor = loaded[1], loaded[2]
        scores = run_variant(cfg, v, model=model, processor=processor, rows=rows)
        dt = round(time.perf_counter() - t0, 1)
        statuses.append({"run": v.name, "status": "ran", "seconds": dt})
        log(f"[{i + 1}/{len(grid)}] {v.name}: overall {scores['overall_micro']:.1f} (micro), "
            f"{scores['overall_macro']:.1f} (macro) in {dt:.0f} s")
    return statuses


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------


def summarize(cfg: AblationConfig):
    """One row per finished run: run, model, connector, stage, sampling, frames, seed, overall_micro,
    overall_macro, the 8 task scores (NaN where a task has no question), num_questions, train_loss,
    train_steps. Runs without ``scores.json`` are left out."""
    import pandas as pd

    from spatial_mllm.eval.vsibench import TASKS

    rows = []
    for v in build_grid(cfg):
        d = cfg.out() / "eval" / v.name
        if not (d / "scores.json").is_file():
            continue
        s = json.loads((d / "scores.json").read_text())
        info = json.loads((d / "ablation.json").read_text()) if (d / "ablation.json").is_file() else {}
        rows.append({**v.to_dict(), "overall_micro": s["overall_micro"], "overall_macro": s["overall_macro"],
                     **{t: s["per_task"].get(t, math.nan) for t in TASKS},
                     "num_questions": s.get("num_questions"), "train_loss": info.get("train_loss"),
                     "train_steps": info.get("train_steps")})
    cols = ["run", "model", "connector", "stage", "sampling", "frames", "seed", "overall_micro", "overall_macro",
            *TASKS, "num_questions", "train_loss", "train_steps"]
    return pd.DataFrame(rows, columns=cols)


GROUP_KEYS = ("model", "connector", "stage", "sampling", "frames")


def aggregate(runs, *, level: float = 0.95, method: str = "t", n_boot: int = 10000, seed: int = 0):
    """Long table over seeds: one row per (model, connector, stage, sampling, frames, metric) with ``n``, ``mean``,
    ``std``, ``ci_low``, ``ci_high`` (:func:`mean_ci`). Metrics: overall_micro, overall_macro and each task
    with at least one score."""
    import pandas as pd

    from spatial_mllm.eval.vsibench import TASKS

    metrics = ["overall_micro", "overall_macro", *[t for t in TASKS if t in runs and runs[t].notna().any()]]
    out = []
    for keys, g in runs.groupby(list(GROUP_KEYS), sort=False):
        for m in metrics:
            out.append({**dict(zip(GROUP_KEYS, keys)), "metric": m,
                        **mean_ci(g[m].tolist(), level=level, method=method, n_boot=n_boot, seed=seed)})
    return pd.DataFrame(out, columns=[*GROUP_KEYS, "metric", "n", "mean", "std", "ci_low", "ci_high"])


def aggregated_markdown(agg, digits: int = 1) -> str:
    """The aggregated table as a GitHub pipe table: one row per variant, ``mean ± half-width`` per metric
    (``mean`` alone where n < 2)."""
    from spatial_mllm.eval.model_predict import markdown_table

    def cell(r):
        if r["n"] < 2 or math.isnan(r["ci_high"]):
            return f"{r['mean']:.{digits}f}"
        return f"{r['mean']:.{digits}f} ± {(r['ci_high'] - r['ci_low']) / 2:.{digits}f}"

    a = agg.copy()
    a["cell"] = a.apply(cell, axis=1)
    a["variant"] = a["model"] + " · " + a["connector"] + " · " + a["sampling"] + " · " + a["frames"].map("f{}".format)
    a["n"] = a["n"].astype(int)
    wide = a.pivot_table(index="variant", columns="metric", values="cell", aggfunc="first", sort=False)
    wide = wide[[m for m in dict.fromkeys(a["metric"])]]
    wide.insert(0, "seeds", a.groupby("variant", sort=False)["n"].max())
    wide.index.name = "variant (model · connector · sampling · frames)"
    return markdown_table(wide, digits)


def write_tables(cfg: AblationConfig):
    """Write ``tables/05_ablations.csv`` (runs), ``tables/05_ablations_aggregated.csv`` and ``.md``;
    returns ``(runs, aggregated)`` DataFrames."""
    runs = summarize(cfg)
    agg = aggregate(runs, level=cfg.ci_level, method=cfg.ci_method, n_boot=cfg.bootstrap_samples, seed=cfg.seed)
    tables = cfg.out() / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    runs.to_csv(tables / "05_ablations.csv", index=False)
    agg.to_csv(tables / "05_ablations_aggregated.csv", index=False)
    ci = ("Student-t" if cfg.ci_method == "t" else f"percentile bootstrap ({cfg.bootstrap_samples} resamples)")
    header = (f"VSI-Bench metric (%), mean over seeds ± half-width of the {cfg.ci_level:.0%} {ci} interval "
              f"({cfg.mode} mode).\n\n")
    (tables / "05_ablations_aggregated.md").write_text(header + aggregated_markdown(agg))
    return runs, agg
