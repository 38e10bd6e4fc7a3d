"""Stage 1 of the paper: supervised fine-tuning (SFT) of Spatial-MLLM on spatial QA, on the HF ``Trainer``.

The paper (§4.1, "Training details") fine-tunes on Spatial-MLLM-120k with the Qwen2.5-VL ViT and VGGT
frozen and the connector, the ViT's merger and the LLM trained; the official code is Qwen2.5-VL's
``qwen-vl-finetune`` recipe (HF ``Trainer`` + DeepSpeed ZeRO-3 on 6 GPUs; lr 7e-6 for the LLM, 2e-5 for the
projector modules, weight decay 0.1, warm-up ratio 0.03, cosine schedule, 1 epoch, bf16, effective batch 48,
max length 8192, 16 frames). This module keeps that engine:

* :class:`SFTConfig` — every knob, defaults = the ``tiny`` preset, ``params/paper/03_sft.yaml`` = the paper.
* :func:`train_sft` — one process (or one rank under ``accelerate launch``): model, freeze plan
  (``model.set_trainable``), optional LoRA on the LLM (peft), data (:mod:`spatial_mllm.data.collate`),
  :class:`SFTTrainer` (two learning rates as optimizer parameter groups), resume from the latest
  ``checkpoint-N``, final ``save_pretrained`` folder with the processor and ``sft_config.json``.
* :func:`run_sft` — what notebooks call: in this process, or with ``num_processes > 1`` as
  ``accelerate launch --config_file <accelerate_config> -m spatial_mllm.train.sft <params.yaml>`` (a
  subprocess over every GPU of the node), then the same :class:`SFTResult`.
* ``python -m spatial_mllm.train.sft params/paper/03_sft.yaml [--set key=value ...]`` — the entry point for
  ``accelerate launch`` (see ``configs/accelerate/``).
* :func:`load_sft_checkpoint` — ``(model, processor)`` from the saved folder
  (``<output_dir>/checkpoints/sft``), where the GRPO stage (notebook 04) starts.

Logged every ``logging_steps``: ``loss``, ``learning_rate`` (LLM group) and ``lr/<group>`` for each group,
``grad_norm`` (before clipping), ``tokens_per_second`` (non-padding input tokens over all processes, since
the previous log); tqdm shows progress.

Loss normalisation: the loss is the mean over the answer tokens of the whole global batch (all
micro-batches of an accumulation cycle on all processes: transformers' ``num_items_in_batch`` with
``average_tokens_across_devices``), so N processes × B rows give the same gradient as one process with
N·B rows or with gradient accumulation.

Departures from the paper / official code:

1. The effective batch is a config value (``global_batch_size``); gradient accumulation is derived from it
   and the number of processes at launch, so the same params file gives batch 48 on 1, 2, 4, 6 or 8 GPUs
   (officially per-device batch and accumulation are set by hand in a shell script).
2. Weights are loaded in fp32 and bf16 is applied by autocast (single GPU, DDP, FSDP) or by DeepSpeed's
   bf16 mode with fp32 master weights; the official script loads bf16 weights. On CPU training is fp32.
3. Loss = mean over the global batch's answer tokens (above); the official recipe uses the per-device
   token mean averaged over devices, which weights rows differently when answers differ in length.
4. Labels: only the answer and its closing ``<|im_end|>`` (officially also the newline after it); the
   prompt is the evaluation prompt (no newline after the video block). See :mod:`spatial_mllm.data.collate`.
5. Over-long samples are cut on the right like the official collator, but a cut through the video tokens
   is an error naming the row instead of a crash inside the model; cuts are counted.
6. Bad rows (missing/unreadable/too-short videos) are found before training and raise naming the row, or
   are skipped and counted with ``on_bad_video: skip``.
7. Optional LoRA (``lora_r > 0``) on the LLM's attention and MLP projections, with the connector and
   merger trained in full; the paper trains the LLM in full.
8. ZeRO-3 runs with ``zero3_init_flag: false`` (``configs/accelerate/zero3.yaml``): the model is
   assembled from two checkpoints (Qwen2.5-VL + VGGT) on the CPU first, outside ``deepspeed.zero.Init``
   (:func:`spatial_mllm.train.distributed.whole_model_init`), and partitioned when the Trainer starts; the
   official run partitioned at construction. ``zero3_init_flag: true`` and LoRA under ZeRO-3 are refused with
   errors naming the key; see :mod:`spatial_mllm.train.distributed` for the DeepSpeed JSONs' differences.
9. Official data (``train_mix``, :mod:`spatial_mllm.data.official`): the rows are the official annotation
   files converted losslessly, but our collator reads single-video, single-turn rows only — image, text-only,
   multi-video and multi-turn rows raise (or are skipped and counted with ``on_bad_video: skip``), so the
   v1.1-820K mix (VSI-590K image rows, MindCube images) is not reproduced in full; the official ``%N`` subset
   is drawn exactly, its final shuffle is not (the trainer shuffles with ``seed``).

The paper preset (``params/paper/03_sft.yaml``) is the official v1.1-135K recipe, read off
``scripts/training/spatial_mllm_train_demo.sh`` (``master``): ``datasets="spatial_mllm_mix_133k,
route_plan_scannet_2k"``, ``video_min_frames = video_max_frames = 16``, ``lr=7e-6``, ``mm_projector_lr=2e-5``,
``weight_decay=0.1``, ``warmup_ratio 0.03``, ``lr_scheduler_type cosine``, ``num_train_epochs 1``,
``model_max_length 8192``, ``max_grad_norm=1.0``, bf16, ``batch_size=1`` × ``grad_accum_steps=8`` ×
``torchrun --nproc_per_node=6`` = 48, frame pixels 293216..324576, ViT and VGGT frozen, merger + connector + LLM
trained (``tune_mm_vision False``, ``tune_mm_spatial_encoder False``, ``tune_mm_connector True`` — which also
unfreezes the merger in ``train_qwen.py`` — ``tune_mm_llm True``); ``mm_projector_lr`` applies to
``visual.merger`` and ``connector`` (``trainer.py``). The v1.1-820K mix (``TRAINING.md``) is
``params/paper_820k/03_sft.yaml``: the same values with ``train_mix`` = ``spatial_mllm_mix_203k, route_plan_4k,
vsi_590k, mindcube_21k`` (the official code gives no separate 820K script; we assume its hyper-parameters are
the 135K ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from spatial_mllm.config import StageConfig, load_params, register_params, resolve_path

__all__ = [
    "SFTConfig",
    "SFTResult",
    "build_model_and_processor",
    "apply_freeze_plan",
    "ensure_training_data",
    "training_rows",
    "build_dataset_and_collator",
    "train_sft",
    "run_sft",
    "load_sft_checkpoint",
    "compare_parameters",
    "parameter_group_of",
    "main",
]

CHECKPOINT_SUBDIR = "checkpoints/sft"
CONFIG_NAME = "sft_config.json"
RESULT_NAME = "sft_result.json"
LORA_TARGET_MODULES = (
    r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
)


@register_params("03_sft")
@dataclass
class SFTConfig(StageConfig):
    """Parameters of the SFT stage (notebook 03). Defaults are the ``tiny`` preset; the paper's values are
    in each help text and in ``params/paper/03_sft.yaml``."""

    # ---- run ----------------------------------------------------------------------------------------
    output_dir: str = field(default="outputs/tiny", metadata={
        "help": "run folder: checkpoints go to <output_dir>/checkpoints/sft, figures/tables/eval beside"})
    seed: int = field(default=0, metadata={"help": "seed of model init (tiny), connector init, data order"})
    # ---- data ---------------------------------------------------------------------------------------
    data_dir: str | None = field(default=None, metadata={
        "help": "folder of notebook 01's files (train_sft.jsonl, val_vsibench.jsonl, videos); "
                "None = <output_dir>/data"})
    train_file: str = field(default="train_sft.jsonl", metadata={
        "help": "training conversations, relative to data_dir (not read when train_mix is set)"})
    train_mix: list[str] | None = field(default=None, metadata={
        "help": "official SFT dataset mix by registry name, each optionally '<name>%N' (keep N % of its rows, "
                "drawn as the official loader does); replaces train_file (paper v1.1-135K: "
                "[spatial_mllm_mix_133k, route_plan_scannet_2k]; spatial_mllm.data.official)"})
    official_data_root: str | None = field(default=None, metadata={
        "help": "the official datasets/ folder of train_mix: annotations/<file> and visuals/ (the media the "
                "rows name), TRAINING.md's layout"})
    eval_file: str = field(default="val_vsibench.jsonl", metadata={
        "help": "VSI-Bench rows scored before/after training in notebook 03, relative to data_dir"})
    video_root: str | None = field(default=None, metadata={
        "help": "folder the rows' relative video paths start from; None = data_dir"})
    build_data_if_missing: bool = field(default=True, metadata={
        "help": "when train_file is absent, build a small synthetic dataset there (notebook 01's tiny preset)"})
    frames_cache: str | None = field(default=None, metadata={
        "help": "JSON {video key: [frame indices]} from the space-aware sampler (notebook 02); None = uniform"})
    on_bad_video: Literal["raise", "skip"] = field(default="raise", metadata={
        "help": "a row whose video is missing/unreadable/too short (or, with train_mix, a row the collator cannot "
                "read: images, text only, several videos or turns): raise naming the row, or skip and count"})
    num_frames: int = field(default=4, metadata={"help": "frames per video (paper: 16)"})
    min_pixels: int = field(default=56 * 56, metadata={
        "help": "per-frame pixel lower bound (paper: 293216, the official TRAINING script's; the official "
                "evaluation uses qwen-vl-utils' default 100352)"})
    max_pixels: int = field(default=112 * 112, metadata={
        "help": "per-frame pixel upper bound (paper: 324576, the official training script's → 644×476 frames "
                "for 640×480 video; the official evaluation uses qwen-vl-utils' default 602112)"})
    pixel_preset: Literal["official_train", "official_eval"] | None = field(default=None, metadata={
        "help": "how videos become frames (SpatialMLLMProcessor): 'official_train' = the official training "
                "rule (data_qwen.py: np.linspace(dtype=int) frames, Pillow bicubic into [min, max]_pixels), "
                "'official_eval' = the official evaluation's (qwen-vl-utils' defaults), None = qwen-vl-utils' "
                "rule with min/max_pixels (paper: official_train)"})
    second_per_grid_t: float | None = field(default=None, metadata={
        "help": "seconds per temporal patch in M-RoPE; None = the preset's, or without one the sampled fps's "
                "(paper: 0.5, the official TRAINING value: 2 frames / video_frame_fps 4 in data_qwen.py; the "
                "official evaluation's is 1.0)"})
    max_length: int = field(default=1024, metadata={
        "help": "longest sample in tokens; longer ones are cut on the right and counted (paper: 8192)"})
    video_cache_size: int = field(default=32, metadata={
        "help": "decoded videos kept in memory by the collator (0 = off; the paper preset's frames are large)"})
    encoder_cache: bool = field(default=False, metadata={
        "help": "run the FROZEN ViT blocks and VGGT once per video and frame choice and reuse their outputs in "
                "later steps (exact: the merger, connector and LLM see the same features); needs train_vision "
                "and train_spatial off; memory grows with the distinct videos (small models / few videos)"})
    # ---- model --------------------------------------------------------------------------------------
    model_name_or_path: str = field(default="tiny", metadata={
        "help": "'tiny' (random-init CPU model), a Qwen2.5-VL id/path when vggt_name_or_path is set (paper: "
                "Qwen/Qwen2.5-VL-3B-Instruct), or a Spatial-MLLM checkpoint folder/id"})
    vggt_name_or_path: str | None = field(default=None, metadata={
        "help": "VGGT weights for a fresh Spatial-MLLM (paper: facebook/VGGT-1B); None = the checkpoint's own"})
    connector: Literal["mlp_add", "mlp2_add", "none"] = field(default="mlp_add", metadata={
        "help": "connector of a fresh model: mlp_add (official v1.1), mlp2_add (v1.0), none (2D-only ablation)"})
    # ---- freeze plan (paper §4.1: ViT and VGGT frozen; merger, connector and LLM trained) --------------
    train_vision: bool = field(default=False, metadata={"help": "train the Qwen ViT blocks (paper: no)"})
    train_merger: bool = field(default=True, metadata={"help": "train the ViT's 2×2 merger (paper: yes)"})
    train_spatial: bool = field(default=False, metadata={"help": "train VGGT (paper: no)"})
    train_connector: bool = field(default=True, metadata={"help": "train the connector (paper: yes)"})
    train_llm: bool = field(default=True, metadata={"help": "train the LLM (paper: yes; with lora_r > 0: adapters)"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the LLM's projections; 0 = full fine-tuning "
                                                     "(paper)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA branch"})
    # ---- optimisation -------------------------------------------------------------------------------
    learning_rate: float = field(default=3e-3, metadata={"help": "peak lr of the LLM (paper: 7e-6)"})
    mm_projector_lr: float = field(default=6e-3, metadata={
        "help": "peak lr of the connector and the merger (official mm_projector_lr: 2e-5)"})
    vision_lr: float | None = field(default=None, metadata={
        "help": "peak lr of ViT blocks / VGGT when trained; None = learning_rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay, not on biases/norms (paper: 0.1)"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "linear warm-up fraction of the steps (paper: 0.03)"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name (paper: cosine)"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs over train_file (paper: 1)"})
    max_steps: int = field(default=200, metadata={
        "help": "optimizer steps; overrides num_train_epochs when > 0 (tiny: 200; paper: -1 = one epoch)"})
    global_batch_size: int = field(default=4, metadata={
        "help": "rows per optimizer step over all processes (paper: 48); accumulation is derived"})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "rows per forward pass (paper: 1)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping; 0 = off (official: 1.0)"})
    optim: str = field(default="adamw_torch", metadata={"help": "transformers optimizer name (official: AdamW)"})
    precision: Literal["auto", "bf16", "fp32"] = field(default="auto", metadata={
        "help": "auto = bf16 autocast on GPU, fp32 on CPU (paper: bf16)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in backward (paper preset: on)"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle rows each epoch (seeded); off = file order"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "collation worker processes per rank"})
    # ---- logging and checkpoints --------------------------------------------------------------------
    logging_steps: int = field(default=5, metadata={"help": "log loss, lr, grad norm, tokens/s every N steps"})
    save_steps: int = field(default=100, metadata={"help": "write checkpoint-N every N steps"})
    save_total_limit: int | None = field(default=2, metadata={"help": "keep the newest N checkpoints"})
    resume: bool = field(default=True, metadata={"help": "continue from the newest checkpoint-N when one exists"})
    report_to: str = field(default="none", metadata={"help": "none | tensorboard | wandb | ... (transformers)"})
    # ---- launch -------------------------------------------------------------------------------------
    num_processes: int = field(default=1, metadata={
        "help": "> 1: train through `accelerate launch` on this many processes (GPUs of the node)"})
    accelerate_config: str = field(default="configs/accelerate/ddp.yaml", metadata={
        "help": "accelerate config for num_processes > 1 (ddp, fsdp, zero2, zero3, zero3_offload in "
                "configs/accelerate/; the zero* ones need the [deepspeed] extra)"})
    # ---- evaluation in notebook 03 ------------------------------------------------------------------
    eval_batch_size: int = field(default=8, metadata={"help": "questions per generate call"})
    eval_max_new_tokens: int = field(default=16, metadata={"help": "greedy decoding budget (lmms-eval: 16)"})
    eval_limit: int | None = field(default=None, metadata={"help": "score only the first N rows of eval_file"})
    eval_prompt_style: Literal["sft", "lmms_eval"] = field(default="sft", metadata={
        "help": "sft = the training prompt (Spatial-MLLM's eval script); lmms_eval adds its pre-prompt"})

    def __post_init__(self):
        for name in ("learning_rate", "mm_projector_lr"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.vision_lr is not None and self.vision_lr <= 0:
            raise ValueError(f"vision_lr must be positive or null, got {self.vision_lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.per_device_train_batch_size < 1 or self.global_batch_size < 1:
            raise ValueError("per_device_train_batch_size and global_batch_size must be >= 1")
        if self.global_batch_size % self.per_device_train_batch_size:
            raise ValueError(f"global_batch_size {self.global_batch_size} is not a multiple of "
                             f"per_device_train_batch_size {self.per_device_train_batch_size}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set max_steps > 0 or num_train_epochs > 0")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2 (Qwen's temporal patch is 2 frames), got {self.num_frames}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        if self.max_length < 16:
            raise ValueError(f"max_length {self.max_length} is too small for any prompt")
        if not any((self.train_vision, self.train_merger, self.train_spatial, self.train_connector,
                    self.train_llm)):
            raise ValueError("the freeze plan trains nothing: set at least one train_* to true")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if self.lora_r > 0 and not self.train_llm:
            raise ValueError("lora_r > 0 puts adapters on the LLM: it needs train_llm: true")
        if self.lora_r > 0 and (self.train_vision or self.train_spatial):
            raise ValueError("LoRA runs train the LLM adapters, connector and merger only; set train_vision and "
                             "train_spatial to false (or lora_r: 0 for full fine-tuning)")
        if self.encoder_cache and (self.train_vision or self.train_spatial):
            raise ValueError("encoder_cache reuses the frozen encoders' outputs: set train_vision and train_spatial "
                             "to false, or encoder_cache to false")
        if self.connector == "none" and (self.vggt_name_or_path is not None or self.train_spatial):
            raise ValueError("connector 'none' is the 2D-only ablation: no VGGT to load or train")
        if self.model_name_or_path == "tiny" and self.vggt_name_or_path is not None:
            raise ValueError("the tiny model has its own random VGGT; vggt_name_or_path must be null")
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {self.num_processes}")
        if self.logging_steps < 1 or self.save_steps < 1:
            raise ValueError("logging_steps and save_steps must be >= 1")
        if self.eval_batch_size < 1 or self.eval_max_new_tokens < 1:
            raise ValueError("eval_batch_size and eval_max_new_tokens must be >= 1")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError("eval_limit must be >= 1 or null")
        if self.train_mix is not None:
            from spatial_mllm.data.official import parse_mix_entry

            if not self.train_mix:
                raise ValueError("train_mix is an empty list: name official datasets or set it to null")
            names = [parse_mix_entry(e)[0] for e in self.train_mix]  # unknown names raise here
            if len(set(names)) != len(names):
                raise ValueError(f"train_mix names a dataset twice: {self.train_mix}")
            if self.official_data_root is None:
                raise ValueError("train_mix needs official_data_root (the folder with annotations/ and visuals/)")
        elif self.official_data_root is not None:
            raise ValueError("official_data_root is only read with train_mix; set train_mix or leave it null")

    # ---- derived paths and sizes ----------------------------------------------------------------------
    def resolved_data_dir(self) -> Path:
        return resolve_path(self.data_dir) if self.data_dir is not None else resolve_path(self.output_dir) / "data"

    def resolved_video_root(self) -> Path:
        """Where the rows of ``eval_file`` (and of ``train_file``) find their videos."""
        return resolve_path(self.video_root) if self.video_root is not None else self.resolved_data_dir()

    def training_video_root(self) -> Path:
        """Where the training rows find their videos: ``<official_data_root>/visuals`` with ``train_mix``."""
        if self.train_mix is not None:
            from spatial_mllm.data.official import VISUALS_SUBDIR

            return resolve_path(self.official_data_root) / VISUALS_SUBDIR
        return self.resolved_video_root()

    def checkpoint_dir(self) -> Path:
        """``<output_dir>/checkpoints/sft``: ``checkpoint-N/`` folders and, at the end, the final model."""
        return resolve_path(self.output_dir) / CHECKPOINT_SUBDIR

    def gradient_accumulation_steps(self, world_size: int) -> int:
        per_step = self.per_device_train_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(f"global_batch_size {self.global_batch_size} is not a multiple of "
                             f"per_device_train_batch_size × processes = {per_step}")
        return self.global_batch_size // per_step

    def trained_parts(self) -> set[str]:
        """Parts the freeze plan trains (LoRA: the LLM through its adapters)."""
        flags = {"vision": self.train_vision, "merger": self.train_merger, "spatial": self.train_spatial,
                 "connector": self.train_connector, "llm": self.train_llm}
        return {k for k, v in flags.items() if v}

    def use_bf16(self) -> bool:
        if self.precision == "bf16" and not torch.cuda.is_available():
            raise ValueError("precision bf16 needs a CUDA device here; use auto or fp32 on CPU")
        return self.precision == "bf16" or (self.precision == "auto" and torch.cuda.is_available())


@dataclass
class SFTResult:
    """What a finished SFT run left behind (also written to ``<checkpoint_dir>/sft_result.json``)."""

    output_dir: str  # the final save_pretrained folder (= the checkpoint dir)
    global_step: int
    train_loss: float | None  # mean loss of the run (transformers' train_loss)
    log_history: list[dict]  # every log: loss, learning_rate, lr/<group>, grad_norm, tokens_per_second, ...
    stats: dict  # rows skipped (per reason), samples, truncated, truncated_no_labels, ...
    runtime_s: float
    num_processes: int
    gradient_accumulation_steps: int
    distributed_type: str  # accelerate's: NO, MULTI_GPU (DDP, also gloo on CPU), FSDP, DEEPSPEED

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, folder: str | os.PathLike) -> SFTResult:
        return cls(**json.loads((Path(folder) / RESULT_NAME).read_text()))


# --------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------


def build_model_and_processor(cfg: SFTConfig):
    """The untrained model and its processor (fp32, on the CPU; the Trainer moves it).

    ``tiny``: random init seeded by ``cfg.seed`` + the offline tokenizer; with ``vggt_name_or_path``:
    Qwen2.5-VL + VGGT weights + a fresh connector (``from_qwen_and_vggt``); else a Spatial-MLLM checkpoint.
    """
    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
    from spatial_mllm.models.processing import SpatialMLLMProcessor

    pix = dict(num_frames=cfg.num_frames, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
               pixel_preset=cfg.pixel_preset, second_per_grid_t=cfg.second_per_grid_t)
    if cfg.model_name_or_path == "tiny":
        from spatial_mllm.models.tiny import tiny_model, tiny_tokenizer

        tok = tiny_tokenizer()
        model = tiny_model(tok, connector=cfg.connector, seed=cfg.seed)
        return model, SpatialMLLMProcessor.build(tok, **pix)
    if cfg.vggt_name_or_path is not None or cfg.connector == "none":
        torch.manual_seed(cfg.seed)  # the connector's init
        model = SpatialMLLMForConditionalGeneration.from_qwen_and_vggt(
            cfg.model_name_or_path, cfg.vggt_name_or_path, connector=cfg.connector, dtype=torch.float32)
    else:
        model = SpatialMLLMForConditionalGeneration.from_pretrained(cfg.model_name_or_path, dtype=torch.float32)
    return model, SpatialMLLMProcessor.from_pretrained(cfg.model_name_or_path, **pix)


def parameter_group_of(name: str) -> str:
    """Part of a parameter by name (also under peft's ``base_model.model.`` prefix and
    ``modules_to_save`` copies): ``vision``, ``merger``, ``spatial``, ``connector`` or ``llm``."""
    if "visual.merger." in name:
        return "merger"
    if "visual." in name:
        return "vision"
    if "spatial_encoder." in name:
        return "spatial"
    if name.startswith("connector.") or ".connector." in name:
        return "connector"
    return "llm"


def apply_freeze_plan(model, cfg: SFTConfig, verbose: bool = False):
    """``model.set_trainable(...)`` with the config's plan; with ``lora_r > 0`` wrap the LLM's projections
    in LoRA adapters (peft) and keep the connector and merger fully trainable. Returns the model to train."""
    model.set_trainable(vision=cfg.train_vision, merger=cfg.train_merger, spatial=cfg.train_spatial,
                        connector=cfg.train_connector, llm=cfg.train_llm and cfg.lora_r == 0, verbose=verbose)
    if cfg.lora_r == 0:
        return model
    from peft import LoraConfig, get_peft_model

    save = [m for m, on in (("connector", cfg.train_connector and model.connector is not None),
                            ("merger", cfg.train_merger)) if on]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=LORA_TARGET_MODULES, modules_to_save=save or None, bias="none")
    return get_peft_model(model, lora)


def compare_parameters(before, after, trained_parts: set[str] | None = None) -> list[dict]:
    """Per part: tensors, trained tensors, how many of them changed, how many frozen ones are bit-identical.

    Args:
        before: the untrained model, or its ``{name: tensor}`` parameters.
        after: the trained model (same parameter names).
        trained_parts: parts that were trained (:meth:`SFTConfig.trained_parts`); None = ``after``'s
            ``requires_grad`` flags (the model object that was trained).
    """
    old = dict(before.named_parameters()) if isinstance(before, torch.nn.Module) else dict(before)
    rows: dict[str, Counter] = {}
    for name, p in after.named_parameters():
        part = parameter_group_of(name)
        c = rows.setdefault(part, Counter())
        same = torch.equal(old[name].detach().to(p.device, p.dtype), p.detach())
        trained = p.requires_grad if trained_parts is None else part in trained_parts
        c["tensors"] += 1
        if trained:
            c["trainable"] += 1
            c["trainable_changed"] += int(not same)
        else:
            c["frozen"] += 1
            c["frozen_identical"] += int(same)
    keys = ("tensors", "trainable", "trainable_changed", "frozen", "frozen_identical")
    return [{"part": part, **{k: int(c[k]) for k in keys}} for part, c in rows.items()]


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


def ensure_training_data(cfg: SFTConfig, progress: bool = False) -> Path:
    """``data_dir`` holding ``train_file``; when absent and ``build_data_if_missing``, build notebook 01's
    tiny dataset there (8 rooms at 112×84, ~15 s) with :func:`spatial_mllm.data.build.build_datasets`.
    With ``train_mix``: check that every official annotation file is in place (nothing is built) and return
    ``data_dir`` (where ``eval_file`` is)."""
    data_dir = cfg.resolved_data_dir()
    if cfg.train_mix is not None:
        from spatial_mllm.data.official import annotation_path, parse_mix_entry

        root = resolve_path(cfg.official_data_root)
        missing = [str(annotation_path(root, parse_mix_entry(e)[0])) for e in cfg.train_mix
                   if not annotation_path(root, parse_mix_entry(e)[0]).is_file()]
        if missing:
            raise FileNotFoundError(f"train_mix: official annotation file(s) not found: {missing} (see "
                                    f"spatial_mllm.data.official for where each comes from)")
        return data_dir
    if (data_dir / cfg.train_file).is_file():
        return data_dir
    if not cfg.build_data_if_missing:
        raise FileNotFoundError(f"{data_dir / cfg.train_file} not found: run notebook 01 (data construction) "
                                f"first or set data_dir")
    if data_dir.name != "data":
        raise FileNotFoundError(f"{data_dir / cfg.train_file} not found, and a dataset can only be built as "
                                f"<folder>/data (data_dir {data_dir} does not end in 'data')")
    from spatial_mllm.data.build import DataConfig, build_datasets

    build_datasets(DataConfig(output_dir=str(data_dir.parent), seed=cfg.seed), progress=progress)
    return data_dir


def training_rows(cfg: SFTConfig) -> list[dict]:
    """The training rows as records: ``train_file``'s, or with ``train_mix`` the official mix converted to our
    rows (:func:`spatial_mllm.data.official.load_official_mix`, every row, readable by the collator or not)."""
    if cfg.train_mix is not None:
        from spatial_mllm.data.official import load_official_mix

        return load_official_mix(cfg.train_mix, resolve_path(cfg.official_data_root))
    from spatial_mllm.data.formats import read_jsonl

    return read_jsonl(cfg.resolved_data_dir() / cfg.train_file)


def build_dataset_and_collator(cfg: SFTConfig, processor):
    """``(SFTDataset, SFTCollator)`` of ``cfg.train_file`` or ``cfg.train_mix`` (bad rows raise or are skipped as
    configured; official rows the collator cannot read count as ``unsupported_<reason>``)."""
    from spatial_mllm.data.collate import BadRowError, SFTCollator, SFTDataset

    # the official training rule reads every frame of a video shorter than num_frames once (data_qwen.py)
    common = dict(num_frames=cfg.num_frames, frames_cache=resolve_path(cfg.frames_cache),
                  on_bad_video=cfg.on_bad_video,
                  short_videos="all_frames" if processor.pixel_preset == "official_train" else "bad")
    if cfg.train_mix is None:
        dataset = SFTDataset(cfg.resolved_data_dir() / cfg.train_file, cfg.resolved_video_root(), **common)
    else:
        from spatial_mllm.data.official import sft_rows

        usable, unsupported, where = sft_rows(training_rows(cfg))
        if unsupported and cfg.on_bad_video == "raise":
            raise BadRowError(f"train_mix: {sum(unsupported.values())} row(s) our collator cannot read "
                              f"({dict(unsupported)}; first: {where[:3]}); set on_bad_video: skip to drop them")
        dataset = SFTDataset(usable, cfg.training_video_root(), **common)
        dataset.skipped.update({f"unsupported_{k}": v for k, v in unsupported.items()})
        dataset.skipped_rows.extend(where)
    collator = SFTCollator(processor, num_frames=cfg.num_frames, max_length=cfg.max_length,
                           on_bad_video=cfg.on_bad_video, video_cache_size=cfg.video_cache_size,
                           video_keys=cfg.encoder_cache)
    return dataset, collator


class EncoderTrunkMemo:
    """The frozen encoders' outputs (:class:`~spatial_mllm.models.modeling.VisualTrunk`) of each video seen in
    one training run, keyed by the collator's ``video_keys`` (video path, frame choice, frame count: what
    decides the pixels within a run). :meth:`replace_pixels` turns a batch's raw pixels into ``video_trunks``,
    encoding only the videos not seen before; the model then applies the trainable merger and connector
    (:meth:`~spatial_mllm.models.modeling.SpatialMLLMForConditionalGeneration.fuse_visual_trunks`), which
    gives the same features as the raw pixels, bit for bit. The model's frozen parts must not change during
    the run (the forward refuses trunks while the ViT or VGGT is trainable)."""

    def __init__(self):
        self._trunks: dict[str, Any] = {}
        self.hits = self.misses = 0
        self._checked = False

    def __len__(self) -> int:
        return len(self._trunks)

    def replace_pixels(self, model, inputs: dict, keys: list[str] | None) -> dict:
        if keys is None:
            raise ValueError("encoder_cache needs the collator's video_keys (SFTCollator(video_keys=True))")
        grid = inputs["video_grid_thw"]  # [B, 3]
        if len(keys) != len(grid):
            raise ValueError(f"{len(keys)} video_keys for {len(grid)} videos")
        if not self._checked:  # once per run: the model's partitioning does not change
            if any(hasattr(p, "ds_id") for p in model.parameters()):
                raise ValueError("encoder_cache is not supported with DeepSpeed ZeRO-3 (partitioned encoder "
                                 "parameters); set encoder_cache: false")
            self._checked = True
        pixels = inputs.pop("pixel_values_videos")  # [ΣN, D]
        spatial = inputs.pop("spatial_pixel_values_videos", None)  # [[S, 3, H, W]] per video
        chunks = torch.split(pixels, grid.prod(-1).tolist())
        first: dict[str, int] = {}  # each video not seen before → its first row in the batch
        for i, k in enumerate(keys):
            if k not in self._trunks:
                first.setdefault(k, i)
        todo = list(first.values())
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        if todo:
            new = model.encode_visual_trunks(
                torch.cat([chunks[i] for i in todo]), grid[todo],
                None if spatial is None or model.connector is None else [spatial[i] for i in todo])
            self._trunks.update({keys[i]: t for i, t in zip(todo, new)})
        inputs["video_trunks"] = [self._trunks[k] for k in keys]
        return inputs


# --------------------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _trainer_class():
    from transformers import Trainer

    class _SFTTrainer(Trainer):
        """``Trainer`` with the paper's two learning rates and extra logs (lr per group, tokens/s)."""

        def __init__(self, *args, sft_config: SFTConfig, **kwargs):
            super().__init__(*args, **kwargs)
            self.sft_config = sft_config
            self._last_log = (time.perf_counter(), 0)
            self.trunk_memo = EncoderTrunkMemo() if sft_config.encoder_cache else None

        def compute_loss(self, model, inputs, *args, **kwargs):
            keys = inputs.pop("video_keys", None)
            if self.trunk_memo is not None:
                inputs = self.trunk_memo.replace_pixels(self.accelerator.unwrap_model(model), inputs, keys)
            return super().compute_loss(model, inputs, *args, **kwargs)

        def create_optimizer(self, model=None):
            """AdamW over parameter groups: (llm | projector = connector + merger | encoders) × (decay |
            no decay on biases and norms); each group gets its lr and the schedule scales all of them."""
            if self.optimizer is not None:
                return self.optimizer
            cfg = self.sft_config
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            lrs = {"llm": cfg.learning_rate, "projector": cfg.mm_projector_lr,
                   "encoders": cfg.vision_lr if cfg.vision_lr is not None else cfg.learning_rate}
            kind = {"llm": "llm", "merger": "projector", "connector": "projector", "vision": "encoders",
                    "spatial": "encoders"}
            groups: dict[tuple[str, bool], list] = {}
            for n, p in opt_model.named_parameters():
                if p.requires_grad:
                    groups.setdefault((kind[parameter_group_of(n)], n in decay), []).append(p)
            params = [{"params": ps, "lr": lrs[k], "weight_decay": cfg.weight_decay if d else 0.0,
                       "group_name": f"{k}{'' if d else '/no_decay'}"}
                      for (k, d), ps in sorted(groups.items(), key=lambda kv: (list(lrs).index(kv[0][0]), not kv[0][1]))]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs.pop("lr", None)  # each group carries its own
            self.optimizer = optimizer_cls(params, lr=cfg.learning_rate, **optimizer_kwargs)
            return self.optimizer

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and "learning_rate" in logs and self.optimizer is not None:
                # every group follows the same schedule multiplier; transformers logs the first group's lr of
                # the step just taken, so scale each group's base lr by the same factor
                groups = self.optimizer.param_groups
                base0 = groups[0].get("initial_lr", groups[0]["lr"])
                for g in groups:
                    name = g.get("group_name", "")
                    if not name.endswith("/no_decay"):
                        logs[f"lr/{name}"] = g.get("initial_lr", g["lr"]) * float(logs["learning_rate"]) / base0
                now, seen = time.perf_counter(), int(self.state.num_input_tokens_seen or 0)
                t0, s0 = self._last_log
                if now > t0 and seen > s0:
                    logs["tokens_per_second"] = round((seen - s0) / (now - t0), 1)
                self._last_log = (now, seen)
            super().log(logs, start_time)

    return _SFTTrainer


def __getattr__(name):  # SFTTrainer is built lazily so that importing the config does not import transformers
    if name == "SFTTrainer":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _training_arguments(cfg: SFTConfig, out: Path, world_size: int):
    from transformers import TrainingArguments

    cpu = not torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(out),
        seed=cfg.seed,
        data_seed=cfg.seed,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps(world_size),
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=float(cfg.warmup_ratio),  # a float in [0, 1) is a ratio of the total steps (transformers 5)
        lr_scheduler_type=cfg.lr_scheduler_type,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        bf16=cfg.use_bf16(),
        use_cpu=cpu,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        train_sampling_strategy="random" if cfg.shuffle else "sequential",
        dataloader_num_workers=cfg.dataloader_num_workers,
        remove_unused_columns=False,  # the collator reads the dataset's own fields
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        include_num_input_tokens_seen="non_padding",
        average_tokens_across_devices=True,
        ddp_find_unused_parameters=False,  # every trainable tensor takes part in every forward
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to,
        disable_tqdm=False,
    )


def _gather_counts(counter: Counter) -> dict:
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return dict(counter)
    from accelerate.utils import gather_object

    total: Counter = Counter()
    for c in gather_object([dict(counter)]):
        total.update(c)
    return dict(total)


def train_sft(cfg: SFTConfig, *, callbacks: list | None = None, model=None, processor=None) -> SFTResult:
    """Fine-tune on ``cfg.train_file`` in this process (one rank of ``accelerate launch`` or alone).

    Args:
        cfg: the stage config.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        model, processor: an untrained model/processor to use instead of :func:`build_model_and_processor`.

    Returns the :class:`SFTResult`; the final model, the processor, ``sft_config.json`` and
    ``sft_result.json`` are in ``cfg.checkpoint_dir()``.
    """
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from spatial_mllm.train.distributed import check_supported, whole_model_init

    t0 = time.perf_counter()
    out = cfg.checkpoint_dir()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    check_supported(lora=cfg.lora_r > 0)  # DeepSpeed launches: errors naming zero3_init_flag / lora_r
    args = _training_arguments(cfg, out, world)  # before the model: DeepSpeed/FSDP settings take effect first
    set_seed(cfg.seed)
    if model is None or processor is None:
        with whole_model_init():  # ZeRO-3: built whole (the same init as DDP), partitioned by the Trainer
            model, processor = build_model_and_processor(cfg)
    model = apply_freeze_plan(model, cfg, verbose=args.process_index == 0)
    if cfg.gradient_checkpointing and cfg.lora_r > 0:
        model.enable_input_require_grads()  # the frozen embeddings' output must carry grad into checkpoints
    dataset, collator = build_dataset_and_collator(cfg, processor)
    trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, data_collator=collator,
                               processing_class=processor.qwen, callbacks=callbacks, sft_config=cfg)
    last = get_last_checkpoint(str(out)) if cfg.resume and out.is_dir() else None
    train_out = trainer.train(resume_from_checkpoint=last)

    stats = {"rows": len(dataset), **{f"skipped_{k}": v for k, v in dataset.skipped.items()},
             **_gather_counts(collator.stats), "resumed_from": Path(last).name if last else None}
    if trainer.trunk_memo is not None:
        stats.update(encoder_cache_hits=trainer.trunk_memo.hits, encoder_cache_misses=trainer.trunk_memo.misses)
    if cfg.lora_r > 0:
        merged = trainer.model.merge_and_unload()  # a plain Spatial-MLLM folder, loadable without peft
        if trainer.is_world_process_zero():
            merged.save_pretrained(out)
    else:
        trainer.save_model(str(out))
    result = SFTResult(
        output_dir=str(out), global_step=trainer.state.global_step,
        train_loss=float(train_out.training_loss) if train_out.training_loss is not None else None,
        log_history=list(trainer.state.log_history), stats=stats, runtime_s=round(time.perf_counter() - t0, 2),
        num_processes=args.world_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        distributed_type=str(trainer.accelerator.distributed_type.value))
    if trainer.is_world_process_zero():
        from spatial_mllm.models.hub import write_model_card

        processor.save_pretrained(out)
        (out / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        (out / RESULT_NAME).write_text(json.dumps(_jsonable(result.to_dict()), indent=2) + "\n")
        # the card the model's save wrote has no run record yet: rewrite it with this run's recipe and result
        write_model_card(out, run_info=sft_run_record(cfg, result), processor=processor)
    trainer.accelerator.wait_for_everyone()
    return result


def sft_run_record(cfg: SFTConfig, result: SFTResult, **extra) -> dict:
    """A run record (``run.json``'s fields: params, seed, git sha, versions, device, times) of a finished SFT
    run, with its result (steps, loss, runtime, row counts) — what the checkpoint's model card shows."""
    import datetime

    from spatial_mllm.config import run_metadata

    end = datetime.datetime.now(datetime.timezone.utc)
    rec = run_metadata(cfg, cfg.seed, **{"stage": "sft", "status": "ok", **extra})
    rec["start_time"] = (end - datetime.timedelta(seconds=result.runtime_s)).isoformat(timespec="seconds")
    rec["end_time"] = end.isoformat(timespec="seconds")
    summary = {k: v for k, v in result.to_dict().items() if k not in ("log_history", "stats", "output_dir")}
    rec["result"] = _jsonable({**summary, **result.stats})
    return rec


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_sft(cfg: SFTConfig, *, callbacks: list | None = None, model=None, processor=None,
            launcher_args: list[str] | None = None) -> SFTResult:
    """Train as the config says: in this process (``num_processes == 1``) or through ``accelerate launch``
    with ``cfg.accelerate_config`` on ``num_processes`` processes (without CUDA: ``--mixed_precision no``
    and the config's torchrun launcher, whose ranks use gloo). ``launcher_args`` go to ``accelerate
    launch`` (a free ``--main_process_port`` is added unless given).

    The launched run reads the config from ``<checkpoint_dir>/sft_params.yaml``; its output streams to this
    process's stdout. ``callbacks``/``model``/``processor`` apply to in-process runs only.
    """
    if cfg.num_processes == 1:
        return train_sft(cfg, callbacks=callbacks, model=model, processor=processor)
    import yaml

    out = cfg.checkpoint_dir()
    out.mkdir(parents=True, exist_ok=True)
    params = out / "sft_params.yaml"
    params.write_text(yaml.safe_dump({**cfg.to_dict(), "num_processes": 1}, sort_keys=False))
    acc = resolve_path(cfg.accelerate_config)
    if not acc.is_file():
        raise FileNotFoundError(f"accelerate config not found: {acc}")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(acc),
           "--num_processes", str(cfg.num_processes)]
    extra = list(launcher_args or [])
    if not torch.cuda.is_available():
        # CPU-only machine: keep the config's multi-process launcher (torchrun; the ranks talk over gloo).
        # `--cpu` would pick accelerate's simple launcher, which starts ONE process unless given an mpirun
        # hostfile; and there is no bf16 autocast here.
        if "--mixed_precision" not in extra:
            extra += ["--mixed_precision", "no"]
    if "--main_process_port" not in extra:  # a free port: other runs may share the node
        extra += ["--main_process_port", str(_free_port())]
    cmd += [*extra, "-m", "spatial_mllm.train.sft", str(params)]
    env = {**os.environ, "SPATIAL_MLLM_ROOT": str(resolve_path("."))}
    # relay the ranks' output line by line (a notebook's sys.stdout is not the process's stdout)
    with subprocess.Popen(cmd, env=env, cwd=resolve_path("."), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:  # cwd: the project root (accelerate configs' paths)
        for line in proc.stdout:
            print(line, end="", flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode} (its output is above)")
    return SFTResult.read(out)


def load_sft_checkpoint(folder: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None):
    """``(model, processor)`` from a folder :func:`train_sft` wrote (the processor gets the run's frame
    count and pixel bounds from ``sft_config.json``). The model is in eval mode."""
    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
    from spatial_mllm.models.processing import SpatialMLLMProcessor

    folder = Path(folder)
    meta = json.loads((folder / CONFIG_NAME).read_text()) if (folder / CONFIG_NAME).is_file() else {}
    pix = {k: meta[k] for k in ("num_frames", "min_pixels", "max_pixels", "pixel_preset", "second_per_grid_t")
           if k in meta}
    model = SpatialMLLMForConditionalGeneration.from_pretrained(folder, dtype=dtype or torch.float32)
    if device is not None:
        model = model.to(device)
    return model.eval(), SpatialMLLMProcessor.from_pretrained(folder, **pix)


# --------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m spatial_mllm.train.sft PARAMS.yaml [--set key=value ...]`` (one rank; see the README for
    ``accelerate launch``)."""
    from spatial_mllm.errors import close_process_group

    p = argparse.ArgumentParser(prog="python -m spatial_mllm.train.sft", description=__doc__.splitlines()[0])
    p.add_argument("params", help="params/<preset>/03_sft.yaml (or any file with SFTConfig keys)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter (YAML value), repeatable")
    a = p.parse_args(argv)
    cfg = load_params(a.params, a.set, schema=SFTConfig)
    if cfg.num_processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        result = run_sft(cfg)  # not under a launcher yet: start one (its params file says num_processes: 1)
    else:
        result = train_sft(cfg)
    close_process_group()  # a rank of a finished launch: no gloo threads left running at exit (they can abort it)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"output_dir": result.output_dir, "global_step": result.global_step,
                          "train_loss": result.train_loss, "stats": result.stats}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
