"""Several questions about one video, decoded from one shared prefix: the video is encoded once.

A chat prompt about a video reads (Qwen2.5-VL's template, :meth:`SpatialMLLMProcessor.build_prompt`)::

    <|im_start|>system ...<|im_end|>\\n<|im_start|>user\\n<|vision_start|><|video_pad|>×N<|vision_end|>
    QUESTION<|im_end|>\\n<|im_start|>assistant\\n

Everything up to and including ``<|vision_end|>`` — the *prefix*, ~3,050 of ~3,100 tokens at 16 frames of
a 640×480 video — is the same for every question about that video. The per-question path runs the ViT,
VGGT and the whole prefill once per question; this module runs them once per video:

1. :func:`build_prefix`: the fused visual features (:meth:`SpatialMLLMForConditionalGeneration.
   encode_visual_inputs`, ViT + connector(VGGT); or features given by a cache) and one forward over the
   prefix (batch 1) that fills a KV cache.
2. :func:`generate_from_prefix`: per chunk of questions, the cache repeated to the chunk's rows and input ids
   ``[prefix | pads | suffix_i]`` — each suffix left-padded *after* the prefix, the pads masked
   (``attention_mask`` 0) — handed to the model's ``generate``, which continues from the cache and runs only
   the suffix tokens, then decodes as usual (any decoding ``generate`` offers; the visual features are
   already in the cache, so no pixels are passed).

Positions: ids are computed over the whole row by the ORIGINAL M-RoPE rule
(:func:`spatial_mllm.models.rope.get_rope_index`, which skips masked tokens, as transformers 4.51 did), so
the prefix keeps the positions it had in the cache and each suffix continues from the vision block's
``max + 1``: exactly the positions of the per-question prompt. Tested equal to the per-question path
(:func:`spatial_mllm.models.ask.answer_batch`): the same tokens, logits within ~2e-7 in fp32 (the masked pads
change only the summation order), ``tests/test_prefix.py``.

Not supported here (use the per-question path): images, several videos in one prompt, ``num_beams > 1``
and ``num_return_sequences > 1`` (repeat the question instead: rows are independent).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

__all__ = ["VideoPrefix", "build_prefix", "prefill_prefix", "split_prompt", "generate_from_prefix",
           "answer_questions"]

VISION_END = "<|vision_end|>"


@dataclass
class VideoPrefix:
    """One video's shared prefix, ready to decode questions from."""

    input_ids: torch.Tensor  # [P] system + user header + <|vision_start|> video pads <|vision_end|>
    video_grid_thw: torch.Tensor  # [1, 3]
    second_per_grid_ts: torch.Tensor  # [1]
    mm_encoder_outputs: dict  # {"video": SpatialFusedOutput} (ViT + connector(VGGT))
    cache: object  # the prefix's KV cache (transformers Cache), batch 1; never modified (copied per chunk)
    prompt_head: str  # the prompt text of the prefix (every question's prompt must start with it)


def split_prompt(prompt: str) -> tuple[str, str]:
    """``(head, tail)`` of a one-video chat prompt, cut right after its ``<|vision_end|>``."""
    if prompt.count(VISION_END) != 1:
        raise ValueError(f"a shared prefix needs a prompt with exactly one video, found {prompt.count(VISION_END)} "
                         f"{VISION_END} in {prompt[:120]!r}")
    cut = prompt.index(VISION_END) + len(VISION_END)
    return prompt[:cut], prompt[cut:]


@torch.no_grad()
def build_prefix(model, processor, video, prompt: str, *, frame_indices=None, num_frames: int | None = None,
                 features: dict | None = None, cache=None) -> VideoPrefix:
    """Encode ``video`` once and prefill the prefix of ``prompt`` (any question's prompt about it).

    Args:
        video: anything :meth:`SpatialMLLMProcessor.load_video` reads (mp4, folder, frames, VideoInput).
        prompt: a chat prompt with one video (``processor.build_prompt(question)``); only its head is used.
        features: ``{"video": SpatialFusedOutput}`` already computed for these frames; None = from ``cache``
            (a :class:`~spatial_mllm.models.feature_cache.VisualFeatureCache`) or computed here by
            ``model.encode_visual_inputs``.
    """
    head, _ = split_prompt(prompt)
    vin = processor.load_video(video, frame_indices=frame_indices, num_frames=num_frames)
    batch = processor(head, videos=[vin])
    device = next(model.parameters()).device
    grid = batch["video_grid_thw"].to(device)
    sgt = batch["second_per_grid_ts"].to(device)
    if features is None and cache is not None:
        from spatial_mllm.models.feature_cache import processor_settings

        settings = processor_settings(processor, frame_indices=frame_indices,
                                      **({"num_frames": num_frames} if num_frames is not None else {}))
        features = cache.video_features(video, batch, settings)
    if features is None:
        features = model.encode_visual_inputs(
            pixel_values_videos=batch["pixel_values_videos"].to(device), video_grid_thw=grid,
            spatial_pixel_values_videos=[f.to(device) for f in batch["spatial_pixel_values_videos"]])
    return prefill_prefix(model, batch["input_ids"][0].to(device), grid, sgt, features, head)


@torch.no_grad()
def prefill_prefix(model, input_ids: torch.Tensor, video_grid_thw: torch.Tensor, second_per_grid_ts: torch.Tensor,
                   features: dict, prompt_head: str) -> VideoPrefix:
    """The prefix's KV cache from its token ids ``[P]`` (ending with ``<|vision_end|>``) and the video's fused
    features ``{"video": SpatialFusedOutput}``; ``prompt_head`` is its text (checked against each prompt)."""
    ids = input_ids[None]  # [1, P]
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), video_grid_thw=video_grid_thw,
                second_per_grid_ts=second_per_grid_ts, mm_encoder_outputs=features, use_cache=True,
                logits_to_keep=1)
    return VideoPrefix(input_ids, video_grid_thw, second_per_grid_ts, features, out.cache, prompt_head)


def _suffix_ids(processor, prefix: VideoPrefix, prompt: str) -> torch.Tensor:
    head, tail = split_prompt(prompt)
    if head != prefix.prompt_head:
        raise ValueError("a prompt does not start with the shared prefix (another system prompt or video?): "
                         f"{head[-80:]!r} vs {prefix.prompt_head[-80:]!r}")
    ids = processor.tokenizer(tail, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"prompt {prompt[-80:]!r} has nothing after its video")
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def generate_from_prefix(model, processor, prefix: VideoPrefix, prompts: list[str], **generate_kwargs
                         ) -> list[torch.Tensor]:
    """New tokens (``[n_i]`` each, as ``generate`` returns them: pads after an EOS included) for each prompt,
    all decoded in ONE ``generate`` call continuing from ``prefix``'s cache (one row per prompt)."""
    if generate_kwargs.get("num_beams", 1) != 1 or generate_kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError("generate_from_prefix decodes one row per prompt: num_beams and num_return_sequences "
                         "must be 1 (repeat a prompt for several samples)")
    device = prefix.input_ids.device
    pad = processor.tokenizer.pad_token_id
    suffixes = [_suffix_ids(processor, prefix, p) for p in prompts]
    n, S, P = len(suffixes), max(len(s) for s in suffixes), len(prefix.input_ids)
    ids = torch.full((n, P + S), pad, dtype=torch.long, device=device)
    mask = torch.zeros((n, P + S), dtype=torch.long, device=device)
    ids[:, :P], mask[:, :P] = prefix.input_ids, 1
    for i, s in enumerate(suffixes):  # left padding of the suffix: pads sit between prefix and question
        ids[i, P + S - len(s):] = s.to(device)
        mask[i, P + S - len(s):] = 1
    cache = copy.deepcopy(prefix.cache)
    cache.batch_repeat_interleave(n)
    out = model.generate(input_ids=ids, attention_mask=mask, cache=cache,
                         video_grid_thw=prefix.video_grid_thw.repeat(n, 1),
                         second_per_grid_ts=prefix.second_per_grid_ts.repeat(n), **generate_kwargs)
    sequences = out.sequences if hasattr(out, "sequences") else out
    return list(sequences[:, P + S:])


def answer_questions(model, processor, video, questions: list[str], *, frame_indices=None,
                     num_frames: int | None = None, batch_size: int = 32, features: dict | None = None,
                     cache=None, **generate_kwargs) -> list[str]:
    """Answers to ``questions`` about one ``video`` (the same texts as
    :func:`spatial_mllm.models.ask.answer_batch` on the same inputs), decoding ``batch_size`` questions per
    ``generate`` call from one prefix."""
    if not questions:
        return []
    prompts = [processor.build_prompt(q) for q in questions]
    prefix = build_prefix(model, processor, video, prompts[0], frame_indices=frame_indices, num_frames=num_frames,
                          features=features, cache=cache)
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        new = generate_from_prefix(model, processor, prefix, prompts[i:i + batch_size], **generate_kwargs)
        out += [s.strip() for s in processor.batch_decode(torch.stack(new))]
    return out
