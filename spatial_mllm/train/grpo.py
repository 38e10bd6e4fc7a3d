"""GRPO for Spatial-MLLM on ``accelerate`` (stage 3; the cold start of stage 2 is ``cold_start.py``).

Why our own loop rather than TRL's ``GRPOTrainer``: TRL 1.16's trainer builds model inputs from its own
processing of prompts and passes no video tensors and no extra encoder inputs to the policy — Spatial-MLLM
needs ``pixel_values_videos``/``video_grid_thw``/``second_per_grid_ts`` for Qwen's ViT *and*
``spatial_pixel_values_videos`` for VGGT in both generation and the log-prob forward. The official
Spatial-MLLM repository never released its GRPO code (its issue #6: "on the roadmap"). The loop below keeps
TRL's contracts (reward functions ``f(completions, **kwargs)``, metric names ``rewards/<name>/mean``) and
its algorithm, written out in ~one screen (:func:`grpo_step`).

The algorithm (one *round* = one generation batch, then ``num_iterations`` optimizer steps on it):

1. **Generate.** Each process takes ``prompts_per_step`` rows and samples ``num_generations`` (G)
   completions per prompt at ``temperature`` from the current policy (no grad).
2. **Score.** Every reward function scores every completion (``None`` = not applicable); the reward is
   the weighted sum of the applicable ones (TRL: ``nansum(w · r)``).
3. **Advantages.** ``A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4)`` per group of G; a group whose
   rewards are all equal gets exactly 0 (never NaN). ``std`` is torch's unbiased one, as in TRL.
4. **Log-probs.** ``old`` (policy before this round's updates) and ``ref`` (frozen initial policy) per
   completion token.
5. **Loss** per token: ``-min(ρ·A, clip(ρ, 1-ε, 1+ε)·A) + β·KL`` with ``ρ = exp(logp - old)`` and the k3
   estimator ``KL = exp(ref - logp) - (ref - logp) - 1`` (Schulman; DeepSeekMath eq. 4), aggregated by
   ``loss_type``: ``"grpo"`` = mean over each completion's tokens, then mean over completions
   (DeepSeekMath eq. 3); ``"token"`` = sum over all completion tokens / their number (DAPO);
   ``"dr_grpo"`` = sum / (completions · max_new_tokens) (Dr. GRPO).

Where this departs from DeepSeekMath GRPO / Video-R1 / the paper (numbered, as in every trainer here):

1. The paper's GRPO hyper-parameters come from an unofficial summary; the paper's appendix text could
   not be read from here (see ``GRPOConfig`` help and the README). Values: G = 8, β = 0.04, lr 1e-6,
   temperature 1.0, 1000 steps, cold start 200 steps at lr 1e-5.
2. Each process generates whole groups, so group statistics need no gather (TRL spreads a group over
   processes and gathers rewards first); metrics are gathered across processes for logging only.
3. Video-R1's T-GRPO (a temporal contrast with shuffled frames) is not used — the paper's GRPO is plain.
4. ``num_iterations`` μ > 1 reuses a generation batch for μ optimizer steps (DeepSeekMath's inner loop);
   with μ = 1 ``old = logp.detach()`` so ρ ≡ 1 and clipping is inactive (TRL does the same).
5. Log-probs are computed on ``logits / temperature`` (TRL), i.e. for the distribution actually sampled.
6. The reference model is the policy this run started from (SFT or cold-start checkpoint), reloaded from
   its source on resume; with β = 0 no reference model is kept.
7. Vision placeholder tokens (``<|video_pad|>`` …) are never sampled and are removed from the softmax of
   the log-prob forward too (a completion holding one would break the model's feature/placeholder match).
8. ``shuffle_rewards`` (off by default) permutes rewards across a process's completions — a control that
   must remove all learning signal (used in the tests and the closing note's experiment).
9. Sampling goes through the model's own ``generate`` (ViT + connector(VGGT) fused before prefill); the
   log-prob of each token as sampled is recorded (:class:`SampledLogProbs`) and compared with the loss
   forward's on each round's first step (``sampling_logp_max_diff`` in the log) — the check that rollouts
   and the loss see one policy (TRL logs the same gap for vLLM rollouts).
10. Encoding each video once (not in the official code, which has no RL stage; on by default, switchable):
   ``share_prefix`` samples a prompt's G completions from one prefill of its video prefix and encodes its
   video once in the loss forward (``video_index``); ``encoder_cache`` computes the FROZEN encoders' outputs
   (ViT blocks, VGGT: :class:`~spatial_mllm.models.feature_cache.EncoderTrunkCache`) once per video and round
   — rollouts, reference and loss forwards run only the trainable merger and connector on them — and with
   ``encoder_cache_dir`` once per video for the whole run (epochs reuse them from disk). Both are tested equal
   to the plain path (log-probs ≤ 1e-5, the same sampled tokens).

Plumbing (checkpoints, data, logging) is kept apart from the algorithm's lines. Several processes run
through ``accelerate launch`` (DDP; DeepSpeed ZeRO-2/3 through an accelerate config file — gradient
accumulation is accelerate's own, so the same code serves both). Entry point::

    python -m spatial_mllm.train.grpo params/tiny/04_grpo.yaml [--set key=value ...]
    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 8 \\
        -m spatial_mllm.train.grpo params/paper/04_grpo.yaml
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from spatial_mllm.config import StageConfig, load_params, register_params, resolve_path
from spatial_mllm.train.distributed import (
    generation_context,
    grpo_accelerator_kwargs,
    prepare_policy_and_reference,
    whole_model_init,
)
from spatial_mllm.train.rewards import REWARDS, get_reward_funcs, is_malformed, task_reward

# the rollout plumbing, shared with the cold start (re-exported: it was first defined here)
from spatial_mllm.train.rollouts import (  # noqa: F401
    Rollout,
    SampledLogProbs,
    _completion_mask,
    _eos_ids,
    attach_trunks,
    collate_visual,
    encode_prompts,
    generate_completions,
    load_policy,
    load_rows,
    suppressed_ids,
    toy_rows,
)

__all__ = [
    "GRPOConfig",
    "Rollout",
    "group_advantages",
    "per_token_logps",
    "grpo_loss",
    "combine_rewards",
    "load_policy",
    "load_rows",
    "toy_rows",
    "GRPOTrainer",
    "generate_completions",
    "SampledLogProbs",
    "train_grpo",
    "evaluate_policy",
    "launch",
    "main",
]

PAPER_NOTE = ("unofficial (a summary of the paper); the paper's appendix could not be read from here to "
              "check it")


@register_params("04_grpo")
@dataclass
class GRPOConfig(StageConfig):
    """Parameters of stages 2-3 (cold start, GRPO) and notebook 04. Defaults are the ``tiny`` preset."""

    output_dir: str = field(default="outputs/tiny", metadata={"help": "run folder; checkpoints go to "
                            "<output_dir>/checkpoints/{cold_start,grpo}, figures/tables to figures/, tables/"})
    seed: int = field(default=0, metadata={"help": "seed of data order, sampling and the tiny model"})
    stages: list[str] = field(default_factory=lambda: ["cold_start", "grpo"], metadata={
        "help": "stages to run, in order: 'cold_start' then 'grpo' (either may be left out)"})
    # ---- model and data
    model: str = field(default="auto", metadata={"help": "policy to start from: 'auto' = notebook 03's SFT "
                       "checkpoint <output_dir>/checkpoints/sft when it exists, else a fresh tiny model; "
                       "'tiny'; or a checkpoint path / hub id"})
    task: Literal["spatial", "toy"] = field(default="spatial", metadata={"help": "'spatial': QA rows with "
                                            "videos; 'toy': text-only prompts rewarded by digit_fraction (a "
                                            "verifiable check that GRPO learns)"})
    train_file: str | None = field(default=None, metadata={"help": "training rows (jsonl: notebook 01's "
                                   "<split>_sft.jsonl conversations or qa_rows.jsonl rows); None: "
                                   "<output_dir>/data/train_sft.jsonl"})
    eval_file: str | None = field(default=None, metadata={"help": "rows for accuracy before/after; None: "
                                  "<output_dir>/data/val_sft.jsonl"})
    video_root: str | None = field(default=None, metadata={"help": "folder the rows' video paths are relative "
                                   "to; None: the rows file's folder"})
    max_train_rows: int | None = field(default=None, metadata={"help": "use at most this many training rows"})
    max_eval_rows: int = field(default=16, metadata={"help": "rows scored before/after training"})
    num_frames: int = field(default=4, metadata={"help": "frames per video (paper: 16)"})
    min_pixels: int = field(default=56 * 56, metadata={"help": "per-frame pixel lower bound (paper: 293216, the "
                            "official SFT script's; the official evaluation uses qwen-vl-utils' 100352)"})
    max_pixels: int = field(default=112 * 112, metadata={"help": "per-frame pixel upper bound (paper: 324576, the "
                            "official SFT script's; the official evaluation uses qwen-vl-utils' 602112)"})
    pixel_preset: Literal["official_train", "official_eval"] | None = field(default=None, metadata={
        "help": "how videos become frames (SpatialMLLMProcessor; sft.SFTConfig.pixel_preset): paper: "
                "official_train, the official TRAINING rule (the official code has no RL stage; its SFT's)"})
    second_per_grid_t: float | None = field(default=None, metadata={
        "help": "seconds per temporal patch in M-RoPE; None = the preset's, or the sampled fps's (paper: 0.5, "
                "the official TRAINING value, 2 / video_frame_fps 4; the official evaluation's is 1.0)"})
    trainable: list[str] = field(default_factory=lambda: ["merger", "connector", "llm"], metadata={
        "help": "parts trained (vision, merger, spatial, connector, llm); VGGT and the ViT stay frozen as in "
                "the official SFT"})
    # ---- cold start (stage 2)
    cold_start_teacher: str = field(default="template", metadata={"help": "model that writes reasoning "
                                    "completions: a checkpoint path / hub id (paper: Qwen2.5-VL-72B-Instruct), "
                                    "'policy' = the starting policy, or 'template' = a scripted CPU stand-in "
                                    "(spatial_mllm.train.cold_start.template_teacher)"})
    cold_start_k: int = field(default=4, metadata={"help": "completions sampled per question from the teacher"})
    cold_start_rows: int = field(default=24, metadata={"help": "questions sent to the teacher"})
    cold_start_thresholds: dict[str, float] = field(default_factory=lambda: {"mc": 1.0, "numeric": 0.5,
                                                                             "free": 0.5}, metadata={
        "help": "keep a completion when it is well-formed and its task reward ≥ this, per task kind "
                "(mc / numeric / free) or per question_type (which wins)"})
    cold_start_steps: int = field(default=80, metadata={"help": f"SFT steps on the kept completions (paper: "
                                  f"200, {PAPER_NOTE})"})
    cold_start_lr: float = field(default=5e-3, metadata={"help": f"cold-start learning rate (paper: 1e-5, "
                                 f"{PAPER_NOTE})"})
    cold_start_batch_size: int = field(default=4, metadata={"help": "cold-start per-device batch size"})
    cold_start_temperature: float = field(default=1.0, metadata={"help": "teacher sampling temperature"})
    # ---- GRPO (stage 3)
    num_generations: int = field(default=4, metadata={"help": f"G, completions per prompt (paper: 8, "
                                 f"{PAPER_NOTE})"})
    prompts_per_step: int = field(default=2, metadata={"help": "prompts per process per generation round"})
    temperature: float = field(default=0.5, metadata={"help": f"sampling temperature (paper: 1.0, {PAPER_NOTE}; "
                                f"tiny: 0.5, so that a barely cold-started tiny model keeps the format sometimes)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling p (1.0 = off)"})
    max_new_tokens: int = field(default=48, metadata={"help": "completion length limit, tokens"})
    share_prefix: bool = field(default=True, metadata={"help": "sample each prompt's G completions from one "
                               "prefill of its video prefix (models/prefix.py) instead of G prefills, and encode "
                               "its video once in the loss forward (video_index) instead of G times"})
    encoder_cache: bool = field(default=True, metadata={"help": "run the frozen encoders (ViT blocks, VGGT) once "
                                "per video and round and reuse their outputs in the rollouts, the reference and "
                                "the loss forwards (models/feature_cache.EncoderTrunkCache); needs 'vision' and "
                                "'spatial' out of trainable"})
    encoder_cache_dir: str | None = field(default=None, metadata={"help": "folder that keeps those outputs on "
                                          "disk for the whole run (epochs skip the ViT blocks and VGGT; about "
                                          "130 MB per video at 16 frames of 476x644 in bf16); None: memory only"})
    learning_rate: float = field(default=1e-3, metadata={"help": f"AdamW learning rate (paper: 1e-6, "
                                 f"{PAPER_NOTE})"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps, then constant"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})
    beta: float = field(default=0.04, metadata={"help": f"KL coefficient β (k3 estimator) (paper: 0.04, "
                        f"{PAPER_NOTE}); 0 = no reference model"})
    epsilon: float = field(default=0.2, metadata={"help": "clip range ε of the ratio (DeepSeekMath/TRL: 0.2)"})
    num_iterations: int = field(default=1, metadata={"help": "μ, optimizer steps per generation round"})
    loss_type: Literal["grpo", "token", "dr_grpo"] = field(default="grpo", metadata={
        "help": "loss aggregation: grpo (per-completion token mean, then mean; DeepSeekMath), token "
                "(all-token mean; DAPO), dr_grpo (sum / (completions · max_new_tokens))"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step "
                                             "(the round's G·prompts_per_step completions are split evenly)"})
    max_steps: int = field(default=20, metadata={"help": f"optimizer steps (paper: 1000, {PAPER_NOTE})"})
    reward_funcs: list[str] = field(default_factory=lambda: ["format", "accuracy", "mra"], metadata={
        "help": f"reward functions by name (registered: {sorted(REWARDS)}); 'length' = Video-R1's length reward "
                f"(off by default; counts completion tokens, so the scoring call must pass completion_ids — "
                f"spatial_mllm.train.rewards)"})
    reward_weights: list[float] | None = field(default=None, metadata={"help": "one weight per reward "
                                               "function; None = all 1 (Video-R1's length bonus: 0.2 on 'length')"})
    shuffle_rewards: bool = field(default=False, metadata={"help": "CONTROL: permute rewards across "
                                  "completions (removes the learning signal)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations (GPU memory)"})
    logging_steps: int = field(default=1, metadata={"help": "log every this many optimizer steps"})
    save_steps: int = field(default=5, metadata={"help": "save a resumable checkpoint (step_N/) every this many "
                            "steps — at the end of the round that reaches it — and at the last step (0 = none; the "
                            "final model is always saved)"})
    resume: bool = field(default=True, metadata={"help": "continue from the latest checkpoint under "
                         "<output_dir>/checkpoints/grpo when there is one"})
    # ---- processes
    num_processes: int = field(default=1, metadata={"help": ">1: the notebook starts `accelerate launch` "
                               "with that many processes (all GPUs of a node)"})
    accelerate_config: str | None = field(default=None, metadata={"help": "accelerate config file for "
                                          "num_processes > 1 (e.g. configs/accelerate/ddp.yaml)"})
    mixed_precision: Literal["no", "bf16", "fp16"] = field(default="no", metadata={
        "help": "accelerate mixed precision when run in-process (bf16 on GPUs)"})

    def __post_init__(self):
        bad = [s for s in self.stages if s not in ("cold_start", "grpo")]
        if bad:
            raise ValueError(f"stages: unknown {bad}; use 'cold_start' and/or 'grpo'")
        if self.num_generations < 2:
            raise ValueError("num_generations must be ≥ 2: advantages are relative to the group")
        n = self.num_generations * self.prompts_per_step
        if n % self.gradient_accumulation_steps:
            raise ValueError(f"num_generations·prompts_per_step = {n} must divide evenly into "
                             f"gradient_accumulation_steps = {self.gradient_accumulation_steps} micro-batches")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"reward_weights has {len(self.reward_weights)} values for "
                             f"{len(self.reward_funcs)} reward_funcs")
        unknown = [r for r in self.reward_funcs if r not in REWARDS]
        if unknown:
            raise ValueError(f"reward_funcs: unknown {unknown}; registered: {sorted(REWARDS)}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (GRPO samples)")
        if self.beta < 0 or self.epsilon <= 0:
            raise ValueError("beta must be ≥ 0 and epsilon > 0")
        if self.num_iterations < 1 or self.max_steps < 0:
            raise ValueError("num_iterations ≥ 1 and max_steps ≥ 0")
        trained_encoders = [t for t in ("vision", "spatial") if t in self.trainable]
        if self.encoder_cache and trained_encoders:
            raise ValueError(f"encoder_cache reuses the frozen encoders' outputs, but trainable has "
                             f"{trained_encoders}: set encoder_cache: false to train them")

    @property
    def checkpoint_dir(self) -> Path:
        return resolve_path(self.output_dir) / "checkpoints" / "grpo"


# ==================================================================================================
# the algorithm
# ==================================================================================================


def combine_rewards(per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``[N, F]`` rewards (NaN = not applicable) → ``[N]``: ``nansum(w · r)`` over functions (TRL)."""
    return torch.nansum(per_func * weights[None, :], dim=1)


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4
                     ) -> torch.Tensor:
    """Group-normalised advantages of ``[N]`` rewards in contiguous groups of ``group_size``.

    ``(r - mean) / (std + eps)`` per group (``scale=False``: ``r - mean``, Dr. GRPO); a group with equal
    rewards gets exactly 0.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {group_size}")
    g = rewards.view(-1, group_size).to(torch.float64)
    mean = g.mean(dim=1, keepdim=True)
    std = g.std(dim=1, keepdim=True)
    adv = g - mean
    if scale:
        adv = adv / (std + eps)
    adv = torch.where(std > 1e-8, adv, torch.zeros_like(adv))  # zero-variance group → no signal, never NaN
    return adv.view(-1).to(rewards.dtype)


def per_token_logps(logits: torch.Tensor, ids: torch.Tensor, temperature: float,
                    suppress: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp, entropy)`` ``[N, C]`` of tokens ``ids`` ``[N, C]`` under ``logits / temperature`` ``[N, C, V]``
    with the ``suppress`` ids removed (as at sampling); entropy without grad."""
    logits = logits.float() / temperature
    if suppress:
        logits = logits.index_fill(-1, torch.tensor(suppress, device=logits.device), float("-inf"))
    logp_all = logits.log_softmax(dim=-1)
    logp = logp_all.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        p = logp_all.exp()
        entropy = -(p * torch.where(p > 0, logp_all, torch.zeros_like(logp_all))).sum(-1)
    return logp, entropy


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, adv: torch.Tensor,
              mask: torch.Tensor, *, beta: float, epsilon: float, loss_type: str, norm: float,
              max_new_tokens: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate + β·k3 KL on one micro-batch.

    Args:
        logp, old_logp, ref_logp: ``[n, C]`` token log-probs (policy with grad, before the round, reference).
        adv: ``[n]`` advantages; mask: ``[n, C]`` 1 on completion tokens (up to and including EOS).
        norm: the round's normaliser for this ``loss_type`` (completions for grpo/dr_grpo, tokens for token)
            divided by the number of micro-batches, so that accelerate's averaging over micro-batches gives
            exactly the round's loss.
    Returns:
        ``(loss, stats)`` with summed (not averaged) ``kl``, ``clipped``, ``ratio`` over masked tokens.
    """
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)  # [n, C]
    a = adv[:, None]
    surrogate = torch.min(ratio * a, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * a)
    per_token = -surrogate
    if beta > 0 and ref_logp is not None:
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1  # k3 estimator, ≥ 0, 0 where policy = reference
        per_token = per_token + beta * kl
    else:
        kl = torch.zeros_like(logp)
    if loss_type == "grpo":
        lengths = mask.sum(1).clamp(min=1)
        loss = ((per_token * mask).sum(1) / lengths).sum() / norm
    elif loss_type == "token":
        loss = (per_token * mask).sum() / norm
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (norm * max_new_tokens)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    clipped = ((ratio < 1 - epsilon) & (a < 0)) | ((ratio > 1 + epsilon) & (a > 0))
    stats = {"kl": (kl.detach() * mask).sum(), "clipped": (clipped.to(mask.dtype) * mask).sum(),
             "ratio": (ratio.detach() * mask).sum(), "tokens": mask.sum()}
    return loss, stats



# ==================================================================================================
# the trainer
# ==================================================================================================


class GRPOTrainer:
    """GRPO on accelerate for a :class:`SpatialMLLMForConditionalGeneration` (see the module docstring).

    ``trainer.train()`` runs to ``cfg.max_steps`` optimizer steps (resuming when a checkpoint exists) and
    returns the log history; ``trainer.log_path`` is a jsonl of one record per logged step.
    """

    def __init__(self, cfg: GRPOConfig, rows: list[dict], model=None, processor=None, model_source=None,
                 accelerator=None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.cfg = cfg
        # grpo_accelerator_kwargs: cpu=True without CUDA (accelerate then joins the launched processes:
        # MULTI_CPU, gloo) unless DeepSpeed was launched, and DeepSpeed's batch/accumulation/clipping settings
        # (train/distributed.py: a loop without a dataloader cannot fill its "auto" values)
        self.accelerator = accelerator or Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                                                      mixed_precision=cfg.mixed_precision,
                                                      **grpo_accelerator_kwargs(cfg),
                                                      # text-only toy prompts leave the merger/connector unused
                                                      kwargs_handlers=[DistributedDataParallelKwargs(
                                                          find_unused_parameters=cfg.task == "toy")])
        set_seed(cfg.seed, device_specific=True)  # each process samples differently, reproducibly
        if model is None:
            with whole_model_init():  # ZeRO-3: built whole, partitioned by prepare (train/distributed.py)
                model, processor, model_source = load_policy(cfg)
        self.processor, self.model_source = processor, model_source
        self.rows = rows
        if not rows:
            raise ValueError("GRPO needs at least one training row")
        self.reward_names = list(cfg.reward_funcs)
        self.reward_funcs = get_reward_funcs(self.reward_names)
        w = cfg.reward_weights or [1.0] * len(self.reward_names)
        self.reward_weights = torch.tensor(w, dtype=torch.float32)
        self.suppress = suppressed_ids(processor.tokenizer)

        # reference: a frozen copy of the starting policy (before any trainable-flag change)
        self.ref_model = None
        if cfg.beta > 0:
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False).to(self.accelerator.device)
        model.set_trainable(**{p: p in cfg.trainable for p in ("vision", "merger", "spatial", "connector", "llm")},
                            verbose=False)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)
        self.model, self.optimizer, self.scheduler, self.ref_model = prepare_policy_and_reference(
            self.accelerator, model, optimizer, scheduler, self.ref_model)
        # the frozen encoders' outputs, shared by the policy and the reference (their frozen parts are equal)
        self.trunk_cache = None
        if cfg.encoder_cache:
            from spatial_mllm.models.feature_cache import EncoderTrunkCache

            self.trunk_cache = EncoderTrunkCache(self.accelerator.unwrap_model(self.model), cfg.encoder_cache_dir)
        self.step = 0  # optimizer steps done
        self.round = 0  # generation rounds done
        self.history: list[dict] = []
        self.log_path = cfg.checkpoint_dir / "log.jsonl"

    # ------------------------------------------------------------------------------------------ data
    def _round_rows(self, round_idx: int) -> list[dict]:
        """This process's prompts for a round: a seeded permutation per epoch, split by process index."""
        acc, cfg = self.accelerator, self.cfg
        per_round = cfg.prompts_per_step * acc.num_processes
        start = round_idx * per_round
        order: list[int] = []
        epoch = start // len(self.rows)
        while len(order) < (start % len(self.rows)) + per_round:
            order += np.random.default_rng(cfg.seed + epoch).permutation(len(self.rows)).tolist()
            epoch += 1
        chosen = order[start % len(self.rows):start % len(self.rows) + per_round]
        return [self.rows[i] for i in chosen[acc.process_index::acc.num_processes]]

    # ------------------------------------------------------------------------------------------ phases
    def generate(self, rows: list[dict]) -> Rollout:
        """Phase 1: G completions per prompt from the current policy."""
        cfg = self.cfg
        # ZeRO-3: the policy's parameters gathered once for the round (a no-op otherwise); the trunk cache's
        # encodings and weight fingerprint are computed in here, on whole parameters
        with generation_context(self.accelerator, self.model) as policy:
            return generate_completions(policy, self.processor, rows,
                                        cfg.num_generations, temperature=cfg.temperature, top_p=cfg.top_p,
                                        max_new_tokens=cfg.max_new_tokens, device=self.accelerator.device,
                                        share_prefix=cfg.share_prefix, trunk_cache=self.trunk_cache)

    def score(self, ro: Rollout) -> None:
        """Phase 2-3: rewards per function, weighted sum, group-normalised advantages."""
        kwargs = {k: [r[k] for r in ro.rows] for k in ("question_type", "ground_truth", "options")}
        # TRL's reward argument: each completion's token ids up to and including its EOS (the length reward)
        kwargs["completion_ids"] = [ids[m.bool()].tolist() for ids, m in zip(ro.completion_ids, ro.completion_mask)]
        cols = []
        for f in self.reward_funcs:
            vals = f(ro.texts, **kwargs)
            cols.append([math.nan if v is None else float(v) for v in vals])
        ro.rewards_per_func = torch.tensor(cols, dtype=torch.float32).T  # [N, F]
        rewards = combine_rewards(ro.rewards_per_func, self.reward_weights)
        if self.cfg.shuffle_rewards:  # control experiment: break the completion ↔ reward link
            g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + self.round)
            rewards = rewards[torch.randperm(len(rewards), generator=g)]
        ro.rewards = rewards
        # groups are whole on this process (departure 2), so no gather is needed before normalising
        ro.advantages = group_advantages(rewards, self.cfg.num_generations)

    def _forward_logps(self, model, ro: Rollout, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.accelerator.device
        inputs = ro.model_inputs(idx, device, share_visual=self.cfg.share_prefix)
        C = ro.completion_ids.shape[1]
        logits = model(**inputs, use_cache=False, logits_to_keep=C + 1).logits[:, :-1]  # [n, C, V]
        return per_token_logps(logits, ro.completion_ids[idx].to(device), self.cfg.temperature, self.suppress)

    def _micro_batches(self, n: int) -> list[list[int]]:
        k = self.cfg.gradient_accumulation_steps
        size = n // k
        return [list(range(i * size, (i + 1) * size)) for i in range(k)]

    @torch.no_grad()
    def reference_logps(self, ro: Rollout) -> None:
        """Phase 4: ``old`` (only when μ > 1) and ``ref`` log-probs, before any update of this round."""
        n = len(ro.texts)
        if self.cfg.num_iterations > 1:
            self.model.train()  # the same mode as in optimize(), so that ρ = 1 before the first update
            ro.old_logps = torch.cat([self._forward_logps(self.model, ro, mb)[0].cpu()
                                      for mb in self._micro_batches(n)])
        if self.ref_model is not None:
            ro.ref_logps = torch.cat([self._forward_logps(self.ref_model, ro, mb)[0].cpu()
                                      for mb in self._micro_batches(n)])

    def optimize(self, ro: Rollout, check_sampling: bool = False) -> dict[str, float]:
        """Phase 5: one optimizer step over the round's micro-batches (accelerate accumulates).

        ``check_sampling`` (the round's first step, when the policy is still the one that sampled): also
        return ``sampling_logp_max_diff``, the largest |loss log-prob − sampling-time log-prob| over the
        completion tokens — float noise when generation and the loss run the same model (with VGGT)."""
        cfg, acc, device = self.cfg, self.accelerator, self.accelerator.device
        mbs = self._micro_batches(len(ro.texts))
        k = len(mbs)
        # normaliser of the whole round, so that the k micro-batch losses (averaged by accelerate) add up
        # to the round's loss exactly
        if cfg.loss_type == "token":
            norm = float(ro.completion_mask.sum()) / k
        else:
            norm = len(ro.texts) / k
        sums: dict[str, float] = defaultdict(float)
        self.model.train()
        for mb in mbs:
            with acc.accumulate(self.model):
                logp, entropy = self._forward_logps(self.model, ro, mb)
                mask = ro.completion_mask[mb].to(device)
                if check_sampling and ro.sample_logps is not None:  # generation and loss: the same policy
                    gap = ((logp.detach() - ro.sample_logps[mb].to(device)).abs() * mask).max()
                    sums["sampling_logp_max_diff"] = max(sums["sampling_logp_max_diff"], float(gap))
                old = ro.old_logps[mb].to(device) if ro.old_logps is not None else logp.detach()
                ref = ro.ref_logps[mb].to(device) if ro.ref_logps is not None else None
                loss, st = grpo_loss(logp, old, ref, ro.advantages[mb].to(device), mask, beta=cfg.beta,
                                     epsilon=cfg.epsilon, loss_type=cfg.loss_type, norm=norm,
                                     max_new_tokens=cfg.max_new_tokens)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    sums["grad_norm"] = float(acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm))
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            sums["loss"] += float(loss.detach()) / k
            for key, v in st.items():
                sums[key] += float(v)
            sums["entropy"] += float((entropy * mask).sum())
        return dict(sums)

    # ------------------------------------------------------------------------------------------ logging
    def _round_metrics(self, ro: Rollout) -> dict[str, Any]:
        """Reward / length / accuracy metrics of a round, gathered over processes."""
        acc = self.accelerator
        rpf = acc.gather(ro.rewards_per_func.to(acc.device)).cpu()
        rew = acc.gather(ro.rewards.to(acc.device)).cpu()
        lengths = acc.gather(ro.completion_mask.sum(1).float().to(acc.device)).cpu()
        G = self.cfg.num_generations
        zero_std = acc.gather((ro.rewards.view(-1, G).std(1) < 1e-8).float().to(acc.device)).cpu()
        from accelerate.utils import gather_object

        local = []
        for r, t in zip(ro.rows, ro.texts):
            qt = r["question_type"]
            score = task_reward(t, qt, r["ground_truth"], r["options"]) if qt != "toy_digits" else None
            local.append((qt, score, is_malformed(t)))
        allp = gather_object(local) if acc.num_processes > 1 else local
        m: dict[str, Any] = {"reward": float(rew.mean()), "reward_std": float(rew.std()) if len(rew) > 1 else 0.0,
                             "completion_length": float(lengths.mean()),
                             "frac_reward_zero_std": float(zero_std.mean()),
                             "malformed_frac": float(np.mean([x[2] for x in allp]))}
        for j, name in enumerate(self.reward_names):
            col = rpf[:, j]
            col = col[~torch.isnan(col)]
            m[f"rewards/{name}/mean"] = float(col.mean()) if len(col) else None
            m[f"rewards/{name}/std"] = float(col.std()) if len(col) > 1 else (0.0 if len(col) else None)
        by_type: dict[str, list[float]] = defaultdict(list)
        for qt, s, _ in allp:
            if s is not None:
                by_type[qt].append(s)
        for qt, v in sorted(by_type.items()):
            m[f"accuracy/{qt}"] = float(np.mean(v))
        return m

    # ------------------------------------------------------------------------------------------ checkpoints
    def _latest_checkpoint(self) -> Path | None:
        d = self.cfg.checkpoint_dir
        steps = sorted((int(p.name.split("_")[1]), p) for p in d.glob("step_*") if (p / "trainer_state.json").is_file())
        return steps[-1][1] if steps else None

    def save_checkpoint(self) -> Path:
        """Resumable state (model, optimizer, scheduler, RNG of every process) + trainer state."""
        path = self.cfg.checkpoint_dir / f"step_{self.step}"
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(path))
        if self.accelerator.is_main_process:
            (path / "trainer_state.json").write_text(json.dumps(
                {"step": self.step, "round": self.round, "model_source": self.model_source,
                 "history": self.history}, indent=1))
        self.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path: Path) -> None:
        self.accelerator.load_state(str(path))
        st = json.loads((path / "trainer_state.json").read_text())
        self.step, self.round, self.history = st["step"], st["round"], st["history"]

    def save_final(self) -> Path:
        """``<checkpoint_dir>/final``: ``save_pretrained`` of the policy and the processor, with a model card
        that records this run (:mod:`spatial_mllm.models.hub`)."""
        from spatial_mllm.config import run_metadata

        out = self.cfg.checkpoint_dir / "final"
        self.accelerator.wait_for_everyone()
        model = self.accelerator.unwrap_model(self.model)
        state = self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            last = self.history[-1] if self.history else {}
            record = run_metadata(self.cfg, self.cfg.seed, stage="grpo", status="ok",
                                  result={"step": self.step, "round": self.round, "model_source": self.model_source,
                                          **{k: v for k, v in last.items() if isinstance(v, (int, float))}})
            model.save_pretrained(out, state_dict=state, processor=self.processor, run_info=record)
        self.accelerator.wait_for_everyone()
        return out

    # ------------------------------------------------------------------------------------------ loop
    def train(self) -> list[dict]:
        cfg, acc = self.cfg, self.accelerator
        if cfg.resume and (ckpt := self._latest_checkpoint()) is not None:
            self.load_checkpoint(ckpt)
            acc.print(f"[grpo] resumed from {ckpt} (step {self.step})")
        if acc.is_main_process:
            cfg.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "w") as f:  # rewritten from the (restored) history
                for rec in self.history:
                    f.write(json.dumps(rec) + "\n")
        while self.step < cfg.max_steps:
            t0 = time.time()
            # ---- algorithm: generate → score → reference log-probs → μ optimizer steps
            ro = self.generate(self._round_rows(self.round))
            self.score(ro)
            self.reference_logps(ro)  # order matters: before any update of this round
            metrics = self._round_metrics(ro)
            for inner in range(cfg.num_iterations):
                if self.step >= cfg.max_steps:
                    break
                sums = self.optimize(ro, check_sampling=inner == 0)
                self.step += 1
                # ---- plumbing: logs and checkpoints
                tot = acc.gather(torch.tensor([sums["tokens"], sums["kl"], sums["clipped"], sums["ratio"],
                                               sums["entropy"]], device=acc.device).view(1, -1)).sum(0).cpu()
                rec = {"step": self.step, "round": self.round, **metrics, "loss": sums["loss"],
                       "kl": float(tot[1] / tot[0]), "clip_ratio": float(tot[2] / tot[0]),
                       "ratio_mean": float(tot[3] / tot[0]), "entropy": float(tot[4] / tot[0]),
                       "grad_norm": sums.get("grad_norm"), "lr": self.scheduler.get_last_lr()[0],
                       "sampling_logp_max_diff": float(acc.gather(torch.tensor(
                           [sums["sampling_logp_max_diff"]], device=acc.device)).max())
                       if "sampling_logp_max_diff" in sums else None,
                       "seconds": time.time() - t0, "num_processes": acc.num_processes}
                self.history.append(rec)
                if acc.is_main_process and (self.step % cfg.logging_steps == 0 or self.step == cfg.max_steps):
                    with open(self.log_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
            self.round += 1
            # order matters: checkpoints sit at round boundaries (after round += 1), since a round's rollout
            # is not saved; a save_steps multiple passed inside this round's μ steps saves here
            if cfg.save_steps and (self.step // cfg.save_steps > (self.step - cfg.num_iterations) // cfg.save_steps
                                   or self.step == cfg.max_steps):
                self.save_checkpoint()
        return self.history


# ==================================================================================================
# evaluation and stage entry points
# ==================================================================================================


@torch.no_grad()
def evaluate_policy(model, processor, rows: list[dict], *, max_new_tokens: int = 32, batch_size: int = 8,
                    device=None) -> list[dict]:
    """Greedy answers to ``rows``; one record per row with ``question_type``, ``score`` (task reward),
    ``format`` (1/0) and the ``completion``."""
    device = device or next(model.parameters()).device
    tok = processor.tokenizer
    eos = _eos_ids(tok)
    model.eval()
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        enc, visual = encode_prompts(processor, chunk)
        gen = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                             **collate_visual(visual, device), do_sample=False, max_new_tokens=max_new_tokens,
                             eos_token_id=eos, pad_token_id=tok.pad_token_id,
                             suppress_tokens=suppressed_ids(tok))
        texts = processor.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for r, t in zip(chunk, texts):
            score = task_reward(t, r["question_type"], r["ground_truth"], r["options"]) \
                if r["question_type"] != "toy_digits" else REWARDS["digit_fraction"]([t])[0]
            out.append({"question_type": r["question_type"], "score": score, "format": float(not is_malformed(t)),
                        "completion": t})
    return out


def _training_rows(cfg: GRPOConfig) -> list[dict]:
    if cfg.task == "toy":
        return toy_rows(max(8, cfg.prompts_per_step))
    path = cfg.train_file or str(resolve_path(cfg.output_dir) / "data" / "train_sft.jsonl")
    return load_rows(path, cfg.video_root, cfg.max_train_rows)


def train_grpo(cfg: GRPOConfig, model=None, processor=None, model_source: str | None = None,
               rows: list[dict] | None = None) -> dict[str, Any]:
    """Run the GRPO stage: train to ``max_steps`` (resuming), save ``checkpoints/grpo/final``.

    Returns ``{"history", "final", "log_path", "model_source"}``.
    """
    rows = rows if rows is not None else _training_rows(cfg)
    trainer = GRPOTrainer(cfg, rows, model, processor, model_source)
    history = trainer.train()
    final = trainer.save_final()
    return {"history": history, "final": str(final), "log_path": str(trainer.log_path),
            "model_source": trainer.model_source, "trainer": trainer}


def run_stages(cfg: GRPOConfig) -> dict[str, Any]:
    """Cold start (if in ``cfg.stages``) then GRPO starting from its result."""
    import contextlib

    from accelerate import PartialState

    from spatial_mllm.config import RunRecord

    out: dict[str, Any] = {}
    model, processor, source = load_policy(cfg)
    record = RunRecord(resolve_path(cfg.output_dir) / "checkpoints", params=cfg, seed=cfg.seed,
                       name="04_grpo.run.json") if PartialState(cpu=not torch.cuda.is_available()).is_main_process \
        else contextlib.nullcontext()
    with record:
        if "cold_start" in cfg.stages:
            from spatial_mllm.train.cold_start import run_cold_start

            cs = run_cold_start(cfg, model, processor, source)
            out["cold_start"] = cs
            model, source = cs["model"], cs["checkpoint"]
        if "grpo" in cfg.stages:
            out["grpo"] = train_grpo(cfg, model, processor, source)
    return out


def launch(cfg: GRPOConfig, params_path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """Run the stages in this process (``num_processes`` 1) or through ``accelerate launch`` as a subprocess
    with ``cfg.accelerate_config`` (``num_processes`` > 1: every GPU of the node). The subprocess reads the
    resolved config from a YAML written here; its logs are under ``<output_dir>/checkpoints/``."""
    if cfg.num_processes <= 1:
        return run_stages(cfg)
    import yaml

    tmp = Path(params_path) if params_path else Path(tempfile.mkdtemp()) / "04_grpo.yaml"
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    cmd = [shutil.which("accelerate") or os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch"]
    if cfg.accelerate_config:
        cmd += ["--config_file", str(resolve_path(cfg.accelerate_config))]
    elif not torch.cuda.is_available():
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--num_machines", "1"]
    cmd += ["--num_processes", str(cfg.num_processes), "-m", "spatial_mllm.train.grpo", str(tmp)]
    print("[grpo] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return None


def main(argv: list[str] | None = None) -> int:
    from spatial_mllm.errors import close_process_group

    p = argparse.ArgumentParser(description="Cold start + GRPO for Spatial-MLLM (params/<preset>/04_grpo.yaml)")
    p.add_argument("params", help="params YAML (e.g. params/tiny/04_grpo.yaml)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override parameters")
    args = p.parse_args(argv)
    cfg = load_params(args.params, args.set)
    run_stages(cfg)
    close_process_group()  # a rank of a finished launch: no gloo threads left running at exit (they can abort it)
    return 0


if __name__ == "__main__":
    sys.exit(main())
