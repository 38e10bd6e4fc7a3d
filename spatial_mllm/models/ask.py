"""`ask`: answer a question about a video with a Spatial-MLLM checkpoint (CLI ``spatial-mllm ask``).

``ask(model, video, question, frames=16, sampling="uniform")`` loads the model and processor (a path, a hub
id, or the word ``tiny`` for the random-init CPU preset), samples frames, and returns the decoded answer.
``answer_batch`` is the batch helper (several videos/questions, left padding, one ``generate``).

Sampling: ``uniform`` (qwen-vl-utils' ``linspace(...).round()``) or ``space-aware`` (the paper's §3.2:
``candidates`` (128) uniform candidate frames → VGGT point maps → greedy maximum voxel coverage →
``frames`` indices; :func:`spatial_mllm.sampling.select_frames`). Space-aware needs a VGGT with a point head:
``vggt=`` path/id, else the model's own spatial encoder when its point head is enabled.

Decoding (``decoding``): ``"official"`` (default) is the official inference and evaluation scripts'
``do_sample=True, temperature=0.1, top_p=0.001`` with ``max_new_tokens`` 1024 (``src/inference.py`` and
``src/evaluation/vsibench/eval_vsibench.py`` on ``master``; ``scripts/inference.py`` and
``evaluate/model.py`` on ``v1.0``), seeded here with ``seed`` inside ``torch.random.fork_rng`` (the official
scripts do not seed); ``"greedy"`` is ``do_sample=False``. Top-p 0.001 keeps only the most probable token
unless its probability after temperature 0.1 is below 0.001, so both give the same answer except on exact
logit ties and very flat distributions. Extra ``generate`` keywords win over either. ``answer_batch`` on its
own decodes greedily unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
from functools import lru_cache

import torch

__all__ = ["ask", "answer_batch", "load_model_and_processor", "space_aware_indices", "add_ask_subparser",
           "run_ask_command", "OFFICIAL_DECODING", "OFFICIAL_MAX_NEW_TOKENS"]

# master src/inference.py and src/evaluation/vsibench/eval_vsibench.py generation_kwargs (with max_new_tokens
# 1024); spatial_mllm.eval.vsibench.DECODINGS["official"] holds the same values (eval/ sits below models/)
from spatial_mllm.models.hub import OFFICIAL_DECODING, OFFICIAL_MAX_NEW_TOKENS  # noqa: E402


@lru_cache(maxsize=2)
def load_model_and_processor(model: str, device: str | None = None, dtype: str | None = None,
                             pixel_preset: str | None = "official_eval"):
    """``(model, processor)`` from a path / hub id, or ``"tiny"`` (random-init CPU preset, seed 0).

    ``pixel_preset``: the processor's frame rule (:data:`~spatial_mllm.models.processing.PIXEL_PRESETS`);
    default ``official_eval``, what the official inference and evaluation scripts feed the model (only
    ``nframes`` to qwen-vl-utils). The tiny preset keeps its own small frames."""
    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
    from spatial_mllm.models.processing import SpatialMLLMProcessor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if model == "tiny":
        from spatial_mllm.models.tiny import tiny_model, tiny_processor, tiny_tokenizer

        tok = tiny_tokenizer()
        return tiny_model(tok).to(device), tiny_processor(tok)
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    m = SpatialMLLMForConditionalGeneration.from_pretrained(model, dtype=torch_dtype).to(device).eval()
    return m, SpatialMLLMProcessor.from_pretrained(model, pixel_preset=pixel_preset)


def space_aware_indices(video: str | os.PathLike, k: int, vggt=None, candidates: int = 128,
                        device: str | None = None) -> list[int]:
    """Source frame indices chosen by space-aware sampling (k of ``candidates`` uniform candidates).

    ``vggt``: a :class:`~spatial_mllm.models.vggt.VGGT` with a point head, or a path/hub id to load one.
    """
    from spatial_mllm.data.video import read_video, video_info
    from spatial_mllm.models.vggt import VGGT, preprocess_image
    from spatial_mllm.sampling import select_frames

    if vggt is None:
        raise ValueError("space-aware sampling needs a VGGT with a point head: pass --vggt PATH_OR_ID "
                         "(e.g. facebook/VGGT-1B) or a model whose spatial_config enables the point head")
    if not isinstance(vggt, torch.nn.Module):
        vggt = VGGT.from_pretrained(vggt, enable_camera=False, enable_depth=False)
    if vggt.point_head is None:
        raise ValueError("the VGGT given for space-aware sampling has no point head (enable_point=False)")
    device = device or next(vggt.parameters()).device
    total, _ = video_info(video) if os.path.isfile(video) else (None, None)
    clip = read_video(video, num_frames=min(candidates, total) if total else candidates)
    if len(clip.indices) < k:
        raise ValueError(f"video {video}: only {len(clip.indices)} frames, fewer than the {k} asked for")
    size = vggt.config.img_size
    # portrait frames are turned 90° clockwise first, as the official sa_sampling.py does
    images = torch.stack([preprocess_image(f, mode="crop", target_size=size, rotate_portrait=True)
                          for f in clip.frames]).to(device)
    with torch.no_grad():
        preds = vggt(images)
    chosen = select_frames(preds["world_points"][0].float(), preds["world_points_conf"][0].float(), k)
    return [int(clip.indices[i]) for i in chosen]


def answer_batch(model, processor, videos: list, questions: list[str], *, frame_indices: list | None = None,
                 max_new_tokens: int = OFFICIAL_MAX_NEW_TOKENS, **generate_kwargs) -> list[str]:
    """Answer several (video, question) pairs with one ``generate`` call (left padding)."""
    if len(videos) != len(questions):
        raise ValueError(f"{len(videos)} videos but {len(questions)} questions")
    prompts = [processor.build_prompt(q) for q in questions]
    batch = processor(prompts, videos=videos, frame_indices=frame_indices)
    device = next(model.parameters()).device
    batch = {k: ([t.to(device) for t in v] if isinstance(v, list) else v.to(device)) for k, v in batch.items()}
    gen = dict(do_sample=False, max_new_tokens=max_new_tokens)
    gen.update(generate_kwargs)
    with torch.no_grad():
        out = model.generate(**batch, **gen)
    return [s.strip() for s in processor.batch_decode(out[:, batch["input_ids"].shape[1]:])]


def ask(model, video, question: str, frames: int = 16, sampling: str = "uniform", *, vggt=None,
        candidates: int = 128, max_new_tokens: int = OFFICIAL_MAX_NEW_TOKENS, device: str | None = None,
        decoding: str = "official", seed: int = 0, **generate_kwargs) -> str:
    """Answer ``question`` about ``video`` (mp4 path, frame folder, or list of frames).

    Args:
        model: path / hub id / ``"tiny"``, or a ``(model, processor)`` pair.
        frames: frames given to the model (16 in the paper).
        sampling: ``"uniform"`` or ``"space-aware"``.
        vggt: VGGT (or its path/id) for space-aware sampling; defaults to the model's own if it has a point head.
        decoding: ``"official"`` (temperature 0.1, top_p 0.001, sampled; the official scripts) or ``"greedy"``.
        seed: torch seed of the sampled decoding (the caller's random state is restored afterwards).
    """
    if sampling not in ("uniform", "space-aware"):
        raise ValueError(f"sampling must be 'uniform' or 'space-aware', got {sampling!r}")
    if decoding not in ("official", "greedy"):
        raise ValueError(f"decoding must be 'official' or 'greedy', got {decoding!r}")
    m, proc = model if isinstance(model, tuple) else load_model_and_processor(str(model), device)
    proc.num_frames = frames
    indices = None
    if sampling == "space-aware":
        if vggt is None and m.spatial_encoder is not None and m.spatial_encoder.vggt_model.point_head is not None:
            vggt = m.spatial_encoder.vggt_model
        indices = [space_aware_indices(video, frames, vggt=vggt, candidates=candidates)]
    gen = {**(OFFICIAL_DECODING if decoding == "official" else {"do_sample": False}), **generate_kwargs}
    dev = next(m.parameters()).device
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        return answer_batch(m, proc, [video], [question], frame_indices=indices, max_new_tokens=max_new_tokens,
                            **gen)[0]


def add_ask_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``ask`` on an ``argparse`` subparsers object (the lead wires it into ``cli.py``)."""
    p = subparsers.add_parser("ask", help="answer a question about a video with a Spatial-MLLM checkpoint")
    p.add_argument("question", help="the question (quote it)")
    p.add_argument("--model", required=True, help="checkpoint folder or hub id (official ones load), or 'tiny'")
    p.add_argument("--video", required=True, help="mp4 file or folder of frames (sa_sampling/<video>/ layout)")
    p.add_argument("--frames", type=int, default=16, help="frames given to the model (paper: 16)")
    p.add_argument("--sampling", choices=["uniform", "space-aware"], default="uniform",
                   help="frame sampling: uniform, or the paper's space-aware (needs a VGGT point head)")
    p.add_argument("--vggt", default=None, help="VGGT checkpoint for space-aware sampling (e.g. facebook/VGGT-1B)")
    p.add_argument("--candidates", type=int, default=128, help="candidate frames for space-aware sampling")
    p.add_argument("--max-new-tokens", type=int, default=OFFICIAL_MAX_NEW_TOKENS, help="generation length limit (official: 1024)")
    p.add_argument("--decoding", choices=["official", "greedy"], default="official",
                   help="official: temperature 0.1, top_p 0.001, sampled (the official scripts); greedy")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled decoding")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda if available)")
    p.set_defaults(func=run_ask_command)
    return p


def run_ask_command(args: argparse.Namespace) -> int:
    """Run ``ask`` from parsed CLI arguments and print the answer."""
    print(ask(args.model, args.video, args.question, frames=args.frames, sampling=args.sampling, vggt=args.vggt,
              candidates=args.candidates, max_new_tokens=args.max_new_tokens, device=args.device,
              decoding=args.decoding, seed=args.seed))
    return 0
