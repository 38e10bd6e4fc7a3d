"""Encoder pretraining on synthetic renders: a geometry prior for the tiny VGGT, a semantic prior for the
tiny Qwen2.5-VL ViT.

The ``tiny`` preset's encoders are random, and a random spatial encoder carries no geometry. Synthetic scenes
give exact supervision (:func:`spatial_mllm.data.render.render_scene`: RGB, z-depth in metres, instance ids,
K, camera-from-world extrinsics in OpenCV axes), so both priors can be learned on a CPU:

* :func:`pretrain_vggt` — VGGT's multi-task objective (:mod:`spatial_mllm.train.losses`) on sequences of S
  frames of one scan, frame 0 the reference: camera loss on the ``absT_quaR_FoV`` encoding of the
  normalised extrinsics, confidence-weighted depth and point losses with the gradient term. Targets are
  normalised as VGGT's training code does: everything in frame 0's camera, divided by the mean distance of
  the valid points of the S frames to its centre. Saves ``VGGT.save_pretrained`` (all heads), which
  ``VGGT.from_pretrained`` and ``SpatialMLLMForConditionalGeneration.from_qwen_and_vggt`` load (the latter
  drops the heads).
* :func:`pretrain_vit` — the tiny Spatial-MLLM's Qwen2.5-VL vision tower (``model.model.visual``) plus a
  linear head on its merged tokens (the ``pooler_output``, one per 2×2 patches = 28×28 px), trained with
  cross-entropy against the majority category of each 28×28 block (from the instance masks; walls / floor /
  ceiling are ``"background"``), or (``target="presence"``) with a per-category sigmoid per temporal slot:
  is the category present (>= ``presence_min_pixels``) in that block of that frame. Most objects at 112×84
  cover less than a block (median 530 px of 784; 40 % of the visible ones are never a block's majority),
  so the majority target leaves them out of the tokens; presence keeps every visible object and which
  frame of the pair shows it — what a question about counts or order needs (the mini study, README
  finding 8). ``target="presence_centres"`` adds, per category and temporal slot, whether the *centre* of an
  instance of it (the mean pixel of its visible mask in that frame, if it covers >= ``centre_min_pixels``)
  lies in the block: presence says which categories a block shows, not how many instances — two chairs
  side by side light the same blocks as one wide chair — while the centres give each visible instance
  exactly one token, so the number of instances in a frame is a sum over its tokens (on the mini study's
  val + test rooms, the maximum over the 8 shown frames of the blocks holding a centre predicts the number
  of instances seen with r = 0.88; of the blocks where the category is present, r = 0.39).
  No depth or pose target reaches it, so the 2D branch gets semantics and no metric geometry.
  Saves a plain Qwen2.5-VL checkpoint (tiny text model untouched, ViT pretrained) with the tiny tokenizer,
  which ``from_qwen_and_vggt(qwen_dir, vggt_dir)`` and (``connector="none"``)
  ``SpatialMLLMForConditionalGeneration.from_pretrained(qwen_dir)`` accept; the head is saved beside it
  (``semantic_head.safetensors``).

Metrics (:func:`evaluate_geometry`, :func:`evaluate_semantics`): depth AbsRel and δ<1.25 after
**per-sequence median scaling** (pred · median(gt)/median(pred) over the valid pixels of the S frames —
VGGT's outputs are in a normalised scale, so only the shape is compared); pose errors over **all frame pairs
(i, j)** of a sequence, from the relative poses ``E_j E_i⁻¹`` (so independent of the world frame): rotation
angle error (degrees) and translation direction angle error (degrees, ``min(θ, 180°−θ)`` as in VGGT /
PoseDiffusion's evaluation), with the fraction of pairs under 15°.

Departures from VGGT's training recipe (Wang et al. 2025, §3.4 and facebookresearch/vggt ``training/``):

1. Data: procedural rooms rendered at 84×56 (defaults) or 112×84 (the mini study, notebook 07) instead of 17
   real/synthetic datasets at 518 px; S = 4 frames at a fixed stride instead of 2-24 random frames; no
   colour/scale/aspect augmentation.
2. Camera loss is L1 as in the official code (the paper says Huber; ``camera_loss_type="huber"`` exists);
   weights camera 5 : depth 1 : point 1 (official fine-tuning configs disable the point loss; the paper
   trains it).
3. No quantile outlier filtering, point loss uses the "grad" term (not the surface-normal one), no track
   head/loss (see :mod:`spatial_mllm.train.losses`).
4. Optimiser: AdamW, linear warmup + cosine decay, gradient clipping at ``grad_clip`` — the paper uses
   AdamW 160K iterations, peak lr 2e-4, warmup 8K; ours are 1500 steps (batch 8 sequences) at lr 1e-3 on CPU fp32,
   warmup 20 (about 12 minutes on 2 CPU cores at 112×84).
5. The tiny VGGT is random-init (no DINOv2 weights to start from).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from spatial_mllm.config import StageConfig, resolve_path, write_run_json
from spatial_mllm.geometry.cameras import unproject_depth
from spatial_mllm.models.vggt import VGGT, VGGTConfig
from spatial_mllm.models.vggt.pose_enc import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri
from spatial_mllm.train.losses import camera_loss, normalize_sequence, regression_loss

__all__ = [
    "GeometryPretrainConfig",
    "SemanticPretrainConfig",
    "RenderedScan",
    "render_scans",
    "make_sequences",
    "geometry_batch",
    "geometry_loss",
    "build_tiny_vggt",
    "train_geometry",
    "SemanticProbe",
    "pretrain_vggt",
    "depth_metrics",
    "relative_pose_errors",
    "evaluate_geometry",
    "SEMANTIC_CLASSES",
    "patch_labels",
    "patch_presence",
    "evaluate_presence",
    "SEMANTIC_TARGETS",
    "pretrain_vit",
    "evaluate_semantics",
    "save_qwen_part",
]

# The tiny Spatial-MLLM's spatial encoder (spatial_mllm.models.tiny.tiny_config), heads enabled.
TINY_MLLM_VGGT = {"depth": 2, "dino_depth": 1, "dpt_intermediate_layer_idx": [0, 0, 1, 1]}


def _tiny_mllm_vggt() -> dict[str, Any]:
    return dict(TINY_MLLM_VGGT)


# ----------------------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------------------


@dataclass
class GeometryPretrainConfig(StageConfig):
    """Geometry pretraining of a tiny VGGT on synthetic renders (lengths in metres before normalisation)."""

    out_dir: str = field(default="outputs/tiny/pretrain/vggt", metadata={"help": "checkpoint folder"})
    seed: int = field(default=0, metadata={"help": "scene generation, init and batch sampling seed"})
    num_train_scenes: int = field(default=48, metadata={"help": "rendered training scenes"})
    num_eval_scenes: int = field(default=8, metadata={"help": "held-out scenes (next scene indices)"})
    frames_per_scene: int = field(default=64, metadata={"help": "frames rendered per scan (the whole walk)"})
    width: int = field(default=84, metadata={"help": "render width in px; even and a multiple of 14"})
    height: int = field(default=56, metadata={"help": "render height in px; even and a multiple of 14"})
    seq_len: int = field(default=4, metadata={"help": "frames S per training sequence (VGGT: 2-24)"})
    frame_stride: int = field(default=1, metadata={"help": "stride between the S frames of a sequence"})
    steps: int = field(default=1500, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=8, metadata={"help": "sequences per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW lr (VGGT: 2e-4 at 1B params)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warmup, then cosine decay to 0"})
    grad_clip: float = field(default=1.0, metadata={"help": "max global grad norm (<= 0: off)"})
    camera_weight: float = field(default=5.0, metadata={"help": "camera loss weight (official config: 5.0)"})
    depth_weight: float = field(default=1.0, metadata={"help": "depth loss weight (official: 1.0)"})
    point_weight: float = field(default=1.0, metadata={"help": "point loss weight (paper: trained; 0 = off)"})
    camera_loss_type: Literal["l1", "huber"] = field(default="l1", metadata={
        "help": "official code: l1 ('more stable'); paper: Huber"})
    camera_gamma: float = field(default=0.6, metadata={"help": "decay over camera-head iterations (0.6)"})
    conf_alpha: float = field(default=0.2, metadata={"help": "alpha of -alpha*log(conf) (official 0.2)"})
    gradient_scales: int = field(default=3, metadata={"help": "scales of the gradient term (strides 1,2,4)"})
    vggt_overrides: dict[str, Any] = field(default_factory=_tiny_mllm_vggt, metadata={
        "help": "VGGTConfig.tiny(**this); default = the tiny Spatial-MLLM's spatial encoder"})
    eval_sequences_per_scene: int = field(default=4, metadata={"help": "held-out sequences per eval scene"})
    log_every: int = field(default=25, metadata={"help": "steps between logged losses"})

    def __post_init__(self):
        if self.width % 14 or self.height % 14 or self.width % 2 or self.height % 2:
            raise ValueError(f"width/height must be even multiples of 14 (VGGT patch 14, yuv420p), "
                             f"got {self.width}x{self.height}")
        if self.seq_len < 2:
            raise ValueError("seq_len must be >= 2: the camera loss needs frames relative to frame 0")
        if (self.seq_len - 1) * self.frame_stride >= self.frames_per_scene:
            raise ValueError(f"a sequence spans {(self.seq_len - 1) * self.frame_stride + 1} frames but only "
                             f"{self.frames_per_scene} are rendered per scene")
        if self.num_train_scenes < 1 or self.num_eval_scenes < 0 or self.steps < 0 or self.batch_size < 1:
            raise ValueError("need num_train_scenes >= 1, num_eval_scenes >= 0, steps >= 0, batch_size >= 1")
        if self.camera_weight < 0 or self.depth_weight < 0 or self.point_weight < 0:
            raise ValueError("loss weights must be >= 0")
        if self.gradient_scales < 1:
            raise ValueError("gradient_scales must be >= 1")
        bad = {"enable_camera", "enable_depth", "enable_point"} & set(self.vggt_overrides)
        if bad:
            raise ValueError(f"vggt_overrides must not set {sorted(bad)}: pretraining needs every head")


@dataclass
class SemanticPretrainConfig(StageConfig):
    """Semantic pretraining of the tiny Qwen2.5-VL ViT (per-merged-patch category classification)."""

    out_dir: str = field(default="outputs/tiny/pretrain/qwen", metadata={"help": "checkpoint folder"})
    seed: int = field(default=0, metadata={"help": "scene generation, init and batch sampling seed"})
    num_train_scenes: int = field(default=48, metadata={"help": "rendered training scenes"})
    num_eval_scenes: int = field(default=8, metadata={"help": "held-out scenes (next scene indices)"})
    frames_per_scene: int = field(default=16, metadata={"help": "frames rendered per scan"})
    width: int = field(default=112, metadata={"help": "render width in px; a multiple of 28 (merged patch)"})
    height: int = field(default=84, metadata={"help": "render height in px; a multiple of 28"})
    steps: int = field(default=1500, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=16, metadata={"help": "frames per step"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW lr (ViT and head)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    log_every: int = field(default=25, metadata={"help": "steps between logged losses"})
    text_overrides: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "merged into the tiny LLM's text_config (e.g. hidden_size, num_hidden_layers); the LLM is "
                "saved untrained, for SFT to train"})
    video_pairs: int = field(default=0, metadata={
        "help": "0: train on still frames (Qwen's image path: the frame fills both halves of a temporal patch); "
                "k > 0: on video patches of frames i and i + k of a scan (as video tokens are made: two "
                "different frames per temporal patch), the target the mean of both frames' patch labels"})
    vision_overrides: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "merged into the tiny ViT's vision_config (e.g. hidden_size, depth, num_heads, "
                "intermediate_size, fullatt_block_indexes); default: 2 blocks of width 32"})
    target: str = field(default="majority", metadata={
        "help": "what the head predicts per merged token: 'majority' (softmax over the block's majority "
                "category, walls/floor/ceiling = background) or 'presence' (sigmoid per object category and "
                "temporal slot: does the category cover >= presence_min_pixels of the block in that frame) or "
                "'presence_centres' (presence, and per category and slot: is an instance's centre in the block)"})
    presence_min_pixels: int = field(default=16, metadata={
        "help": "pixels of a 28x28 block a category must cover to be 'present' there (target 'presence')"})
    centre_min_pixels: int = field(default=30, metadata={
        "help": "pixels an instance must cover in a frame for its centre to be a target (target "
                "'presence_centres'; the grounding questions' threshold for 'seen')"})
    llm_init: str = field(default="qwen", metadata={
        "help": "init of the (untrained) tiny LLM saved with the ViT: 'qwen' (Qwen2.5-VL's, std 0.02) or "
                "'width_scaled' (embeddings N(0, 1), matrices N(0, 1/fan_in): spatial_mllm.models.tiny."
                "width_scaled_llm_init_)"})

    def __post_init__(self):
        from spatial_mllm.models.tiny import LLM_INITS

        if self.llm_init not in LLM_INITS:
            raise ValueError(f"llm_init must be one of {LLM_INITS}, got {self.llm_init!r}")
        if self.target not in SEMANTIC_TARGETS:
            raise ValueError(f"target must be one of {SEMANTIC_TARGETS}, got {self.target!r}")
        if self.presence_min_pixels < 1 or self.centre_min_pixels < 1:
            raise ValueError(f"presence_min_pixels and centre_min_pixels must be >= 1, got "
                             f"{self.presence_min_pixels}, {self.centre_min_pixels}")
        if self.width % 28 or self.height % 28:
            raise ValueError(f"width/height must be multiples of 28 (14-px patches merged 2x2), "
                             f"got {self.width}x{self.height}")
        if self.num_train_scenes < 1 or self.num_eval_scenes < 0 or self.steps < 0 or self.batch_size < 1:
            raise ValueError("need num_train_scenes >= 1, num_eval_scenes >= 0, steps >= 0, batch_size >= 1")
        if not 0 <= self.video_pairs < self.frames_per_scene:
            raise ValueError(f"video_pairs must be in [0, frames_per_scene={self.frames_per_scene}), "
                             f"got {self.video_pairs}")


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------


@dataclass
class RenderedScan:
    """One rendered scan as tensors (frame index first)."""

    scene_id: str
    images: torch.Tensor  # [T, 3, H, W] float RGB in [0, 1]
    depth: torch.Tensor  # [T, H, W] z-depth, metres (0 = no hit)
    world_points: torch.Tensor  # [T, H, W, 3] world, metres
    extrinsics: torch.Tensor  # [T, 3, 4] camera-from-world (OpenCV)
    intrinsics: torch.Tensor  # [T, 3, 3] pixels
    labels: torch.Tensor  # [T, H, W] int64 index into SEMANTIC_CLASSES
    instance_ids: torch.Tensor | None = None  # [T, H, W] int64 ObjectBox.instance_id, 0 = room / no hit


def render_scans(num_scenes: int, first_index: int, seed: int, width: int, height: int,
                 num_frames: int) -> list[RenderedScan]:
    """Generate scenes ``first_index ..`` of ``SyntheticSceneConfig(seed=seed)`` and render one scan each."""
    from spatial_mllm.data.render import RenderConfig, render_scene
    from spatial_mllm.data.synthetic import SyntheticSceneConfig, generate_scene

    scfg = SyntheticSceneConfig(seed=seed)
    rcfg = RenderConfig(width=width, height=height, num_frames=num_frames)
    cls_index = {c: i for i, c in enumerate(SEMANTIC_CLASSES)}
    scans = []
    for i in range(first_index, first_index + num_scenes):
        scene = generate_scene(scfg, i)
        fr = render_scene(scene, rcfg, seed=seed)
        lut = np.zeros(max([o.instance_id for o in scene.meta.objects] + [0]) + 1, dtype=np.int64)
        for o in scene.meta.objects:
            lut[o.instance_id] = cls_index[o.category]
        depth = torch.from_numpy(fr.depth).float()
        E = torch.from_numpy(fr.extrinsics).float()
        K = torch.from_numpy(fr.intrinsics).float()
        scans.append(RenderedScan(
            scene_id=scene.meta.scene_id,
            images=torch.from_numpy(fr.rgb).permute(0, 3, 1, 2).float() / 255.0,
            depth=depth, world_points=unproject_depth(depth, K, E), extrinsics=E, intrinsics=K,
            labels=torch.from_numpy(lut[fr.instance_ids]),
            instance_ids=torch.from_numpy(fr.instance_ids.astype(np.int64))))
    return scans


def make_sequences(scans: list[RenderedScan], seq_len: int, stride: int, per_scene: int) -> list[tuple[int, int]]:
    """``per_scene`` evenly spaced ``(scan index, start frame)`` pairs per scan (deterministic)."""
    out = []
    for si, scan in enumerate(scans):
        last = len(scan.images) - (seq_len - 1) * stride - 1
        out += [(si, int(s)) for s in np.linspace(0, last, per_scene).round()]
    return out


def geometry_batch(scans: list[RenderedScan], seqs: list[tuple[int, int]], seq_len: int,
                   stride: int) -> dict[str, torch.Tensor]:
    """Stack sequences and normalise them as VGGT does (frame 0 = reference, mean point distance = 1).

    Returns ``images [B,S,3,H,W]``, ``mask [B,S,H,W]`` (depth > 0), normalised ``extrinsics [B,S,3,4]``,
    ``depth [B,S,H,W]``, ``world_points [B,S,H,W,3]``, ``scale [B]`` (metres per unit), ``intrinsics`` and
    ``pose_enc [B,S,9]`` (ground-truth encoding of the normalised cameras).
    """
    idx = [[s + k * stride for k in range(seq_len)] for _, s in seqs]

    def stack(name):
        return torch.stack([getattr(scans[si], name)[ix] for (si, _), ix in zip(seqs, idx)])

    images, depth, pts, E, K = (stack(n) for n in ("images", "depth", "world_points", "extrinsics", "intrinsics"))
    mask = depth > 0
    norm = normalize_sequence(E, depth, pts, mask)
    H, W = images.shape[-2:]
    return {"images": images, "mask": mask, "intrinsics": K, **norm,
            "pose_enc": extri_intri_to_pose_encoding(norm["extrinsics"], K, (H, W))}


# ----------------------------------------------------------------------------------------------------
# geometry pretraining
# ----------------------------------------------------------------------------------------------------


def build_tiny_vggt(overrides: dict[str, Any] | None = None, seed: int = 0) -> VGGT:
    """Random-init ``VGGT(VGGTConfig.tiny(**overrides))`` with all heads (seeded)."""
    torch.manual_seed(seed)
    return VGGT(VGGTConfig.tiny(**(TINY_MLLM_VGGT if overrides is None else overrides)))


def geometry_loss(preds: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                  cfg: GeometryPretrainConfig) -> dict[str, torch.Tensor]:
    """VGGT's objective: ``camera_weight·L_cam + depth_weight·(conf + reg + grad) + point_weight·(...)``."""
    out = {}
    cam = camera_loss(preds["pose_enc_list"], batch["pose_enc"], gamma=cfg.camera_gamma,
                      loss_type=cfg.camera_loss_type)
    total = cfg.camera_weight * cam["loss_camera"]
    out.update(cam)
    kw = dict(alpha=cfg.conf_alpha, scales=cfg.gradient_scales)
    dl = regression_loss(preds["depth"], batch["depth"][..., None], batch["mask"], preds["depth_conf"], **kw)
    total = total + cfg.depth_weight * (dl["loss_conf"] + dl["loss_reg"] + dl["loss_grad"])
    out.update({f"{k}_depth": v for k, v in dl.items()})
    if cfg.point_weight > 0:
        pl = regression_loss(preds["world_points"], batch["world_points"], batch["mask"],
                             preds["world_points_conf"], **kw)
        total = total + cfg.point_weight * (pl["loss_conf"] + pl["loss_reg"] + pl["loss_grad"])
        out.update({f"{k}_point": v for k, v in pl.items()})
    out["objective"] = total
    return out


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def train_geometry(vggt: VGGT, scans: list[RenderedScan], cfg: GeometryPretrainConfig,
                   log=print) -> list[dict[str, float]]:
    """Run ``cfg.steps`` AdamW steps on random sequences of ``scans``; returns the logged losses."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(vggt.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, cfg.steps))
    span = (cfg.seq_len - 1) * cfg.frame_stride
    history = []
    vggt.train()
    t0 = time.time()
    for step in range(cfg.steps):
        si = torch.randint(len(scans), (cfg.batch_size,), generator=gen).tolist()
        seqs = [(s, int(torch.randint(len(scans[s].images) - span, (1,), generator=gen))) for s in si]
        batch = geometry_batch(scans, seqs, cfg.seq_len, cfg.frame_stride)
        losses = geometry_loss(vggt(batch["images"]), batch, cfg)
        opt.zero_grad(set_to_none=True)
        losses["objective"].backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(vggt.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            rec = {"step": step, "time_s": round(time.time() - t0, 1),
                   **{k: round(float(v.detach()), 4) for k, v in losses.items()}}
            history.append(rec)
            if log is not None:
                log(f"step {step:4d}  objective {rec['objective']:.3f}  cam {rec['loss_camera']:.3f}  "
                    f"depth_reg {rec['loss_reg_depth']:.3f}  ({rec['time_s']} s)")
    vggt.eval()
    return history


def pretrain_vggt(cfg: GeometryPretrainConfig, log=print) -> Path:
    """Render, train, evaluate (pretrained vs. the same random init) and save; returns the checkpoint folder.

    Writes ``model.safetensors`` + ``config.json`` (``VGGT.from_pretrained``), ``history.json`` and
    ``run.json`` (params, held-out metrics of both models).
    """
    out = resolve_path(cfg.out_dir)
    train = render_scans(cfg.num_train_scenes, 0, cfg.seed, cfg.width, cfg.height, cfg.frames_per_scene)
    held = render_scans(cfg.num_eval_scenes, cfg.num_train_scenes, cfg.seed, cfg.width, cfg.height,
                        cfg.frames_per_scene)
    vggt = build_tiny_vggt(cfg.vggt_overrides, cfg.seed)
    metrics = {}
    if held:
        metrics["random_init"] = evaluate_geometry(vggt, held, cfg.seq_len, cfg.frame_stride,
                                                   cfg.eval_sequences_per_scene)
    history = train_geometry(vggt, train, cfg, log)
    if held:
        metrics["pretrained"] = evaluate_geometry(vggt, held, cfg.seq_len, cfg.frame_stride,
                                                  cfg.eval_sequences_per_scene)
    vggt.save_pretrained(out)
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    write_run_json(out, {"stage": "pretrain_vggt", "params": cfg.to_dict(), "metrics": metrics})
    return out


# ----------------------------------------------------------------------------------------------------
# geometry metrics
# ----------------------------------------------------------------------------------------------------


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, align: bool = True) -> dict[str, float]:
    """AbsRel = mean |p−g|/g and δ<1.25 = mean[max(p/g, g/p) < 1.25] over ``mask`` (any matching shapes).

    ``align``: scale ``pred`` by median(gt)/median(pred) over the masked pixels first (per call — call it
    once per sequence for per-sequence median scaling).
    """
    p, g = pred[mask].double(), gt[mask].double()
    if align:
        p = p * (g.median() / p.median().clamp(min=1e-12))
    ratio = torch.maximum(p / g, g / p.clamp(min=1e-12))
    return {"abs_rel": float(((p - g).abs() / g).mean()), "delta1": float((ratio < 1.25).double().mean())}


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-12)
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def relative_pose_errors(pred_E: torch.Tensor, gt_E: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation and translation-direction errors (degrees) of all pairs i < j of one sequence.

    ``pred_E, gt_E [S, 3, 4]`` camera-from-world. Relative pose ``E_ij = E_j E_i⁻¹``: ``R_ij = R_j R_iᵀ``,
    ``t_ij = t_j − R_ij t_i``. Rotation error = angle of ``R_ij,predᵀ R_ij,gt``; translation error = angle
    between ``t_ij`` directions, folded to ``min(θ, 180−θ)`` (VGGT's evaluation). Returns two ``[P]`` tensors.
    """
    S = pred_E.shape[0]
    i, j = torch.triu_indices(S, S, offset=1)

    def rel(E):
        R, t = E[:, :3, :3].double(), E[:, :3, 3].double()
        Rij = R[j] @ R[i].transpose(-1, -2)
        return Rij, t[j] - (Rij @ t[i, :, None])[..., 0]

    Rp, tp = rel(pred_E)
    Rg, tg = rel(gt_E)
    tr = (Rp.transpose(-1, -2) @ Rg).diagonal(dim1=-2, dim2=-1).sum(-1)
    rot = torch.rad2deg(torch.arccos(((tr - 1) / 2).clamp(-1.0, 1.0)))
    ta = _angle_deg(tp, tg)
    return rot.float(), torch.minimum(ta, 180 - ta).float()


@torch.no_grad()
def evaluate_geometry(vggt: VGGT, scans: list[RenderedScan], seq_len: int = 4, stride: int = 2,
                      per_scene: int = 4) -> dict[str, float]:
    """Held-out depth and pose metrics of ``vggt`` on ``per_scene`` fixed sequences of each scan.

    Depth: per-sequence median scaling, then AbsRel / δ<1.25 averaged over sequences. A constant-depth
    predictor (every pixel the median) is reported as ``const_abs_rel`` / ``const_delta1`` for reference.
    Pose: all pairs of every sequence — mean and median rotation / translation-angle errors (degrees) and
    ``rra15`` / ``rta15``, the fraction of pairs under 15°; ``static_rot_err_mean`` is the rotation error of
    predicting no motion (= the mean ground-truth relative rotation), for reference.
    """
    was_training = vggt.training
    vggt.eval()
    seqs = make_sequences(scans, seq_len, stride, per_scene)
    d_abs, d_d1, c_abs, c_d1, rot, tra, static = [], [], [], [], [], [], []
    for k in range(0, len(seqs), 8):
        b = geometry_batch(scans, seqs[k:k + 8], seq_len, stride)
        preds = vggt(b["images"])
        H, W = b["images"].shape[-2:]
        pred_E, _ = pose_encoding_to_extri_intri(preds["pose_enc"], (H, W), build_intrinsics=False)
        for n in range(len(b["images"])):
            m = b["mask"][n]
            dm = depth_metrics(preds["depth"][n, ..., 0], b["depth"][n], m)
            cm = depth_metrics(torch.ones_like(b["depth"][n]), b["depth"][n], m)
            d_abs.append(dm["abs_rel"])
            d_d1.append(dm["delta1"])
            c_abs.append(cm["abs_rel"])
            c_d1.append(cm["delta1"])
            r, t = relative_pose_errors(pred_E[n], b["extrinsics"][n])
            rot.append(r)
            tra.append(t)
            static.append(relative_pose_errors(torch.eye(3, 4).expand_as(pred_E[n]), b["extrinsics"][n])[0])
    vggt.train(was_training)
    rot, tra = torch.cat(rot), torch.cat(tra)
    return {
        "abs_rel": float(np.mean(d_abs)), "delta1": float(np.mean(d_d1)),
        "const_abs_rel": float(np.mean(c_abs)), "const_delta1": float(np.mean(c_d1)),
        "rot_err_mean": float(rot.mean()), "rot_err_median": float(rot.median()),
        "trans_err_mean": float(tra.mean()), "trans_err_median": float(tra.median()),
        "rra15": float((rot < 15).float().mean()), "rta15": float((tra < 15).float().mean()),
        "static_rot_err_mean": float(torch.cat(static).mean()),
        "num_sequences": len(seqs), "num_pairs": int(rot.numel()),
    }


# ----------------------------------------------------------------------------------------------------
# semantic pretraining of the tiny Qwen ViT
# ----------------------------------------------------------------------------------------------------


def _semantic_classes() -> tuple[str, ...]:
    from spatial_mllm.data.synthetic import CATALOG

    return ("background",) + tuple(CATALOG)


SEMANTIC_CLASSES: tuple[str, ...] = _semantic_classes()  # index 0 = walls / floor / ceiling / no hit
SEMANTIC_TARGETS = ("majority", "presence", "presence_centres")


def _block_class_counts(labels: torch.Tensor, block: int) -> torch.Tensor:
    """Pixels of each class per ``block × block`` block: ``[..., H, W]`` → ``[..., H/block, W/block, C]``."""
    *lead, H, W = labels.shape
    x = labels.reshape(-1, H // block, block, W // block, block).permute(0, 1, 3, 2, 4)
    x = x.reshape(-1, H // block, W // block, block * block)  # [N, h, w, block²]
    return F.one_hot(x, len(SEMANTIC_CLASSES)).sum(-2).reshape(*lead, H // block, W // block, -1)


def patch_presence(labels: torch.Tensor, min_pixels: int, block: int = 28) -> torch.Tensor:
    """Object categories present per ``block × block`` pixel block: ``[..., H, W]`` class indices →
    ``[..., H/block, W/block, C - 1]`` float (1 where category ``c + 1`` covers ``>= min_pixels`` pixels of
    the block; background excluded), row-major like Qwen's merged tokens."""
    return (_block_class_counts(labels, block)[..., 1:] >= min_pixels).float()


def patch_centres(instance_ids: torch.Tensor, labels: torch.Tensor, min_pixels: int,
                  block: int = 28) -> torch.Tensor:
    """Object categories with an instance *centre* per ``block × block`` pixel block: ``instance_ids`` and
    ``labels`` ``[..., H, W]`` (instance id, 0 = room; class index of each pixel) → ``[..., H/block, W/block,
    C - 1]`` float, 1 where an instance of category ``c + 1`` that covers ``>= min_pixels`` pixels of the frame
    has the mean pixel (row, column) of its visible mask in the block. Each visible instance marks one block
    per frame, so per frame and category the marked blocks count the instances (up to two centres sharing a
    block)."""
    *lead, H, W = labels.shape
    ids = instance_ids.reshape(-1, H * W).long()
    cls = labels.reshape(-1, H * W).long()
    h, w, k = H // block, W // block, len(SEMANTIC_CLASSES)
    out = torch.zeros(ids.shape[0], h * w * (k - 1))
    rows = torch.arange(H, dtype=torch.float64).repeat_interleave(W)
    cols = torch.arange(W, dtype=torch.float64).repeat(H)
    n_ids = int(ids.max()) + 1 if ids.numel() else 1
    for f in range(ids.shape[0]):
        count = torch.bincount(ids[f], minlength=n_ids)
        keep = torch.nonzero(count >= min_pixels).flatten()
        keep = keep[keep > 0]
        if not len(keep):
            continue
        cy = torch.bincount(ids[f], weights=rows, minlength=n_ids)[keep] / count[keep]
        cx = torch.bincount(ids[f], weights=cols, minlength=n_ids)[keep] / count[keep]
        first = torch.full((n_ids,), H * W, dtype=torch.long).scatter_reduce(
            0, ids[f], torch.arange(H * W), reduce="amin")[keep]  # one pixel of each instance
        c = cls[f, first]
        ok = c > 0  # an instance labelled background (not in the catalog) is left out
        blk = (cy.long() // block) * w + cx.long() // block
        out[f, (blk[ok] * (k - 1) + c[ok] - 1)] = 1.0
    return out.reshape(*lead, h, w, k - 1)


def patch_labels(labels: torch.Tensor, block: int = 28) -> torch.Tensor:
    """Majority class per ``block × block`` pixel block: ``[..., H, W]`` → ``[..., H/block, W/block]``
    (ties → lowest class index), row-major like Qwen's merged tokens."""
    return _block_class_counts(labels, block).argmax(-1)


def _qwen_pixels(images: torch.Tensor):
    """``[N, 3, H, W]`` in [0, 1] → Qwen2.5-VL ``pixel_values [N·h·w, 1176]``, ``grid_thw [N, 3]`` (no resize)."""
    from transformers import Qwen2VLImageProcessor

    ip = Qwen2VLImageProcessor()
    u8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = ip(images=list(u8), return_tensors="pt", do_resize=False)
    return out["pixel_values"], out["image_grid_thw"]


def _video_pair(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two still frames' Qwen patches ``[h·w, C·2·p·p]`` (each frame in both temporal slots) → the patches of
    the 2-frame video (a, b): temporal slot 0 from ``a``, slot 1 from ``b`` (Qwen's (C, T, p, p) layout)."""
    n, d = a.shape
    a4, b4 = a.view(n, 3, 2, d // 6), b.view(n, 3, 2, d // 6)
    return torch.cat([a4[:, :, :1], b4[:, :, 1:]], dim=2).reshape(n, d)


class SemanticProbe(torch.nn.Module):
    """Qwen2.5-VL vision tower + linear head on its merged tokens (``pooler_output``)."""

    def __init__(self, visual: torch.nn.Module, num_classes: int = len(SEMANTIC_CLASSES)):
        super().__init__()
        self.visual = visual
        self.head = torch.nn.Linear(visual.config.out_hidden_size, num_classes)

    @classmethod
    def for_target(cls, visual: torch.nn.Module, target: str) -> SemanticProbe:
        """'majority': one logit per class (softmax); 'presence': one per object category and temporal slot
        (``[slot 0 categories, slot 1 categories]``, sigmoid); 'presence_centres': those, then as many for
        the instance centres (``[presence slot 0, slot 1, centres slot 0, slot 1]``)."""
        k = len(SEMANTIC_CLASSES)
        return cls(visual, {"majority": k, "presence": 2 * (k - 1), "presence_centres": 4 * (k - 1)}[target])

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Logits ``[N·h/2·w/2, num_outputs]`` in merged-token order (image, row, column)."""
        return self.head(self.visual(pixel_values, grid_thw=grid_thw).pooler_output)


def _frames(scans: list[RenderedScan]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.cat([s.images for s in scans])
    return images, patch_labels(torch.cat([s.labels for s in scans]))


@torch.no_grad()
def _still_logits(probe: SemanticProbe, images: torch.Tensor) -> torch.Tensor:
    was = probe.training
    probe.eval()
    out = []
    for k in range(0, len(images), 32):
        pv, g = _qwen_pixels(images[k:k + 32])
        out.append(probe(pv, g))
    probe.train(was)
    return torch.cat(out)


@torch.no_grad()
def _binary_scores(pred: torch.Tensor, pos: torch.Tensor) -> dict[str, float]:
    tp = float((pred & pos).sum())
    precision, recall = tp / max(1.0, float(pred.sum())), tp / max(1.0, float(pos.sum()))
    return {"accuracy": float((pred == pos).float().mean()), "chance_absent": float((~pos).float().mean()),
            "precision": precision, "recall": recall, "f1": 2 * precision * recall / max(1e-9, precision + recall)}


@torch.no_grad()
def evaluate_presence(probe: SemanticProbe, scans: list[RenderedScan], min_pixels: int,
                      centre_min_pixels: int | None = None) -> dict[str, float]:
    """Target 'presence' on still frames (both temporal slots the same frame; their probabilities averaged):
    accuracy over (merged patch, object category) pairs vs. chance (predicting 'absent' everywhere), and
    precision / recall / F1 of 'present'. With ``centre_min_pixels`` (target 'presence_centres') also the
    centres' scores (``centres``) and ``frame_count_accuracy``: over the (frame, category) pairs where the
    category has a centre in the truth or the prediction, how often the number of blocks predicted to hold
    a centre equals the true number (the instances of it the frame shows), vs. ``frame_count_chance``
    (always one)."""
    k = len(SEMANTIC_CLASSES) - 1
    images = torch.cat([s.images for s in scans])
    labels = torch.cat([s.labels for s in scans])
    truth = patch_presence(labels, min_pixels).reshape(-1, k)
    heads = 2 if centre_min_pixels is None else 4
    prob = torch.sigmoid(_still_logits(probe, images)).view(len(truth), heads, k)  # [N·h·w, heads, C - 1]
    out = {**_binary_scores(prob[:, :2].mean(1) > 0.5, truth > 0.5), "num_patches": len(truth)}
    if centre_min_pixels is not None:
        ct = patch_centres(torch.cat([s.instance_ids for s in scans]), labels, centre_min_pixels)  # [N, h, w, k]
        pred = (prob[:, 2:].mean(1) > 0.5).view(ct.shape)
        out["centres"] = _binary_scores(pred.reshape(-1, k), ct.reshape(-1, k) > 0.5)
        n_true, n_pred = ct.sum((1, 2)), pred.float().sum((1, 2))  # [N, k] centres per frame and category
        asked = (n_true > 0) | (n_pred > 0)
        out["frame_count_accuracy"] = float((n_true[asked] == n_pred[asked]).float().mean())
        out["frame_count_chance"] = float((n_true[asked] == 1).float().mean())
    return out


@torch.no_grad()
def evaluate_semantics(probe: SemanticProbe, scans: list[RenderedScan],
                       train_labels: torch.Tensor | None = None) -> dict[str, float]:
    """Per-merged-patch accuracy on ``scans`` vs. chance (always predicting the most frequent class of
    ``train_labels``, else of the evaluated labels); ``object_accuracy`` over the patches whose label is an
    object category (not background), where the majority-class predictor scores 0."""
    images, labels = _frames(scans)
    pred, flat = _still_logits(probe, images).argmax(-1), labels.reshape(-1)
    obj = flat != 0
    ref = (train_labels if train_labels is not None else labels).reshape(-1)
    majority = int(torch.bincount(ref, minlength=len(SEMANTIC_CLASSES)).argmax())
    return {"accuracy": float((pred == flat).float().mean()),
            "object_accuracy": float((pred[obj] == flat[obj]).float().mean()) if obj.any() else float("nan"),
            "chance_majority": float((labels.reshape(-1) == majority).float().mean()),
            "majority_class": SEMANTIC_CLASSES[majority], "num_patches": labels.numel()}


def save_qwen_part(model, folder: str | Path, tokenizer=None) -> Path:
    """Save the Qwen2.5-VL part of a Spatial-MLLM as a plain ``Qwen2_5_VLForConditionalGeneration``
    checkpoint (spatial encoder and connector dropped), plus, when ``tokenizer`` is given, a
    :class:`~spatial_mllm.models.processing.SpatialMLLMProcessor` built on it (tokenizer, chat template and
    video processor), so that ``SpatialMLLMProcessor.from_pretrained(folder)`` and SFT accept the folder."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = model.config.to_dict()
    for k in ("spatial_config", "connector_config", "model_type", "architectures", "transformers_version"):
        cfg.pop(k, None)
    qwen = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg))
    sd = {k: v for k, v in model.state_dict().items()
          if not k.startswith(("spatial_encoder.", "connector.", "model.spatial_encoder.", "model.connector."))}
    qwen.load_state_dict(sd, strict=True)
    folder = Path(folder)
    qwen.save_pretrained(folder)
    if tokenizer is not None:
        from spatial_mllm.models.processing import SpatialMLLMProcessor

        SpatialMLLMProcessor.build(tokenizer).save_pretrained(folder)
    return folder


def pretrain_vit(cfg: SemanticPretrainConfig, log=print) -> Path:
    """Train the tiny Spatial-MLLM's ViT + a linear head on per-patch categories; save the Qwen part.

    The tiny model is :func:`spatial_mllm.models.tiny.tiny_model` (seed ``cfg.seed``); only
    ``model.model.visual`` (and the head) are trained. Writes the plain Qwen2.5-VL checkpoint + tokenizer,
    ``semantic_head.safetensors`` and ``run.json`` (accuracy of the pretrained probe and of chance on the
    held-out scenes) to ``cfg.out_dir``.
    """
    from safetensors.torch import save_file

    from spatial_mllm.models.tiny import tiny_model, tiny_tokenizer

    out = resolve_path(cfg.out_dir)
    tok = tiny_tokenizer()
    model = tiny_model(tok, seed=cfg.seed, llm_init=cfg.llm_init, text_overrides=cfg.text_overrides,
                       vision_overrides=cfg.vision_overrides)
    torch.manual_seed(cfg.seed)
    probe = SemanticProbe.for_target(model.model.visual, cfg.target)
    train = render_scans(cfg.num_train_scenes, 0, cfg.seed, cfg.width, cfg.height, cfg.frames_per_scene)
    held = render_scans(cfg.num_eval_scenes, cfg.num_train_scenes, cfg.seed, cfg.width, cfg.height,
                        cfg.frames_per_scene)
    images, labels = _frames(train)
    presence = (patch_presence(torch.cat([s.labels for s in train]), cfg.presence_min_pixels)
                if cfg.target != "majority" else None)  # [N, h, w, C − 1]
    centres = (patch_centres(torch.cat([s.instance_ids for s in train]), torch.cat([s.labels for s in train]),
                             cfg.centre_min_pixels) if cfg.target == "presence_centres" else None)  # [N, h, w, C − 1]
    pixels = [_qwen_pixels(images[k:k + 1]) for k in range(len(images))]  # per frame: ([h·w, 1176], [1, 3])
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    probe.train()
    t0 = time.time()
    F_ = cfg.frames_per_scene
    starts = torch.tensor([i for i in range(len(images)) if i % F_ + cfg.video_pairs < F_])  # pair starts
    for step in range(cfg.steps):
        if cfg.video_pairs:
            ix = starts[torch.randint(len(starts), (cfg.batch_size,), generator=gen)].tolist()
            second = [i + cfg.video_pairs for i in ix]  # temporal slot 1's frames
            pv = torch.cat([_video_pair(pixels[i][0], pixels[j][0]) for i, j in zip(ix, second)])
        else:
            ix = torch.randint(len(images), (cfg.batch_size,), generator=gen).tolist()
            second = ix  # a still frame fills both temporal slots
            pv = torch.cat([pixels[i][0] for i in ix])
        logits = probe(pv, torch.cat([pixels[i][1] for i in ix]))  # [B·h·w, outputs]
        if presence is not None:  # targets [B·h·w, 2(C − 1)]: slot 0's categories, then slot 1's (then centres)
            parts = [presence[ix], presence[second]] + ([] if centres is None else [centres[ix], centres[second]])
            loss = F.binary_cross_entropy_with_logits(logits, torch.cat(parts, -1).reshape(len(logits), -1))
        elif cfg.video_pairs:
            k = len(SEMANTIC_CLASSES)
            loss = F.cross_entropy(logits, 0.5 * (F.one_hot(labels[ix].reshape(-1), k) +
                                                  F.one_hot(labels[second].reshape(-1), k)).float())
        else:
            loss = F.cross_entropy(logits, labels[ix].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": round(float(loss.detach()), 4), "time_s": round(time.time() - t0, 1)})
            if log is not None:
                log(f"step {step:4d}  {'bce' if presence is not None else 'ce'} {float(loss.detach()):.3f}")
    if cfg.target != "majority":
        metrics = {"held_out": evaluate_presence(probe, held, cfg.presence_min_pixels, cfg.centre_min_pixels
                                                 if cfg.target == "presence_centres" else None) if held else None}
    else:
        metrics = {"held_out": evaluate_semantics(probe, held, labels) if held else None}
    model.eval()
    save_qwen_part(model, out, tok)
    save_file({k: v.detach().contiguous() for k, v in probe.head.state_dict().items()},
              str(out / "semantic_head.safetensors"))
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    write_run_json(out, {"stage": "pretrain_vit", "params": cfg.to_dict(), "metrics": metrics,
                         "classes": list(SEMANTIC_CLASSES)})
    return out
