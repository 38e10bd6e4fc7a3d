"""3D (M-RoPE) position ids of Qwen2.5-VL under the ORIGINAL rule (transformers 4.51.3, Qwen's own code).

Each token gets three position ids (temporal, height, width). Text tokens use the same id on all three axes
and count up by one. A vision block (image or video, one placeholder token per merged 2×2 patch) of
``t × h' × w'`` LLM tokens (``h' = h / spatial_merge_size``, ``w' = w / spatial_merge_size``) gets, for the
token at (i, y, x) in (t, h', w') row-major order::

    temporal = st + floor(i · second_per_grid_t · tokens_per_second)      (videos)
    temporal = st                                                        (images: no temporal scaling)
    height   = st + y
    width    = st + x

where ``st`` is the start id of the block (= one more than the largest id before it). The first text token
after a vision block starts at ``max(vision ids) + 1`` — "text start position_ids = max vision position_ids
+ 1" in the Qwen authors' words — i.e. at ``st + max(floor((t-1)·s·tps), h'-1, w'-1) + 1``.

**Why this module exists (a difference from transformers 5.24).** transformers 5.24's
``Qwen2_5_VLModel.get_rope_index`` advances the text position after a vision block by
``max(h, w) // spatial_merge_size`` instead, i.e. to ``st + max(h', w')``, ignoring the temporal span.
The two agree for images (and for videos whose spatial span covers the temporal one) but differ whenever
``floor((t-1)·s·tps) ≥ max(h', w')`` (e.g. 8 frames at 112 px: t = 4, s·tps = 2 → 6 vs. 4), and then every
later token is shifted. Both official Spatial-MLLM checkpoints were trained with transformers 4.51.3, so
:class:`~spatial_mllm.models.modeling.SpatialMLLMForConditionalGeneration` uses this function (by
overriding the model's ``get_rope_index``; transformers is not patched).

Padding, as 4.51 did: tokens with ``attention_mask == 0`` are removed before positions are computed and
then get position id **1** on all axes; ``rope_deltas[b] = max(position_ids[b]) + 1 - L`` with ``L`` the
padded length (so incremental decoding continues at ``cache_length + rope_deltas``). Without any vision
input the ids are the 1D ``cumsum(attention_mask) - 1`` (padding → 1) replicated on 3 axes.

Vision blocks are found as in 4.51: the token right after each ``vision_start_token_id`` says whether an
image or a video follows, blocks are consumed in order of appearance, and ``image_grid_thw`` /
``video_grid_thw`` / ``second_per_grid_ts`` rows are consumed in that order across the whole batch.
``second_per_grid_t`` is read as a Python float and the temporal ids are computed as
``(arange(t) * s * tokens_per_second).long()`` exactly as 4.51.3 did, so rounding at exact integers agrees.
"""

from __future__ import annotations

import torch

__all__ = ["get_rope_index", "vision_block_position_ids"]


def vision_block_position_ids(
    grid_thw: tuple[int, int, int] | torch.Tensor,
    start: int,
    *,
    spatial_merge_size: int = 2,
    second_per_grid_t: float = 0.0,
    tokens_per_second: int = 2,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Position ids ``[3, t·h'·w']`` of one vision block starting at id ``start``.

    Args:
        grid_thw: ``(t, h, w)`` in ViT patches (t = temporal patches, h, w = 14-px patches, before merging).
        start: id of the first position of the block (the previous max + 1).
        spatial_merge_size: patches merged per side into one LLM token (2 in Qwen2.5-VL).
        second_per_grid_t: seconds per temporal patch (videos); 0 for images (all tokens at temporal id
            ``start``: no temporal scaling).
        tokens_per_second: temporal positions per second of video.
    """
    t, h, w = (int(v) for v in grid_thw)
    gh, gw = h // spatial_merge_size, w // spatial_merge_size
    rng = torch.arange(t, device=device).view(-1, 1).expand(-1, gh * gw)  # [t, h'w']
    t_index = (rng * float(second_per_grid_t) * tokens_per_second).long().flatten()  # 4.51.3's op order
    h_index = torch.arange(gh, device=device).view(1, -1, 1).expand(t, -1, gw).flatten()
    w_index = torch.arange(gw, device=device).view(1, 1, -1).expand(t, gh, -1).flatten()
    return torch.stack([t_index, h_index, w_index]) + start  # [3, t·h'·w']


def _next_start(chunks: list[torch.Tensor]) -> int:
    """Start id of the next segment: one more than the largest id so far (0 at the beginning)."""
    return int(chunks[-1].max()) + 1 if chunks else 0


def get_rope_index(
    input_ids: torch.LongTensor,
    image_grid_thw: torch.LongTensor | None = None,
    video_grid_thw: torch.LongTensor | None = None,
    second_per_grid_ts: torch.Tensor | list[float] | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    spatial_merge_size: int = 2,
    tokens_per_second: int = 2,
    image_token_id: int,
    video_token_id: int,
    vision_start_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """3D RoPE position ids under the original Qwen2.5-VL rule (see the module docstring).

    Args:
        input_ids: ``[B, L]`` token ids with one ``image_token_id`` / ``video_token_id`` placeholder per
            merged visual token, each vision block preceded by ``vision_start_token_id``.
        image_grid_thw: ``[num_images, 3]`` (t, h, w) in ViT patches, in order of appearance.
        video_grid_thw: ``[num_videos, 3]``.
        second_per_grid_ts: ``[num_videos]`` seconds spanned by one temporal patch (= temporal_patch_size /
            sampled fps); ``None`` → 1.0 for every video.
        attention_mask: ``[B, L]`` 1 for real tokens, 0 for padding (either side).
        spatial_merge_size: ViT patches merged per side into one LLM token.
        tokens_per_second: temporal positions per second of video (``vision_config.tokens_per_second``).

    Returns:
        ``position_ids [3, B, L]`` (int64, same device as ``input_ids``) and ``rope_deltas [B, 1]``.
    """
    B, L = input_ids.shape
    device = input_ids.device
    has_vision = image_grid_thw is not None or video_grid_thw is not None
    if not has_vision:
        if attention_mask is not None:
            pos = attention_mask.long().cumsum(-1) - 1
            pos = pos.masked_fill(attention_mask == 0, 1)
            pos = pos.unsqueeze(0).expand(3, -1, -1).to(device)
            max_pos = pos.max(0, keepdim=False)[0].max(-1, keepdim=True)[0]  # [B, 1]
            return pos, max_pos + 1 - attention_mask.shape[-1]
        pos = torch.arange(L, device=device).view(1, 1, -1).expand(3, B, -1)
        return pos, torch.zeros(B, 1, device=device, dtype=input_ids.dtype)

    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device)
    position_ids = torch.ones(3, B, L, dtype=input_ids.dtype, device=device)
    image_index = video_index = 0
    deltas = []
    for b in range(B):
        keep = attention_mask[b] == 1
        ids = input_ids[b][keep]
        tokens = ids.tolist()
        starts = torch.argwhere(ids == vision_start_token_id).squeeze(1)
        starts = starts[starts + 1 < len(tokens)]
        kinds = ids[starts + 1]
        remain_images = int((kinds == image_token_id).sum())
        remain_videos = int((kinds == video_token_id).sum())
        chunks: list[torch.Tensor] = []
        st = 0  # index into tokens of the first not-yet-positioned token

        for _ in range(remain_images + remain_videos):
            ed_image = tokens.index(image_token_id, st) if remain_images > 0 and image_token_id in tokens[st:] \
                else len(tokens) + 1
            ed_video = tokens.index(video_token_id, st) if remain_videos > 0 and video_token_id in tokens[st:] \
                else len(tokens) + 1
            if ed_image < ed_video:
                if image_grid_thw is None or image_index >= len(image_grid_thw):
                    raise ValueError(f"sequence {b} has more image blocks than image_grid_thw rows")
                grid = image_grid_thw[image_index]
                s = 0.0
                image_index += 1
                remain_images -= 1
                ed = ed_image
            else:
                if video_grid_thw is None or video_index >= len(video_grid_thw):
                    raise ValueError(f"sequence {b} has more video blocks than video_grid_thw rows")
                grid = video_grid_thw[video_index]
                s = 1.0 if second_per_grid_ts is None else second_per_grid_ts[video_index]
                s = float(s.item()) if torch.is_tensor(s) else float(s)
                video_index += 1
                remain_videos -= 1
                ed = ed_video
            text_len = ed - st
            st_idx = _next_start(chunks)
            chunks.append(torch.arange(text_len, device=device).view(1, -1).expand(3, -1) + st_idx)
            t, h, w = (int(v) for v in grid)
            chunks.append(vision_block_position_ids(
                (t, h, w), st_idx + text_len, spatial_merge_size=spatial_merge_size, second_per_grid_t=s,
                tokens_per_second=tokens_per_second, device=device))
            st = ed + t * (h // spatial_merge_size) * (w // spatial_merge_size)
        if st < len(tokens):
            st_idx = _next_start(chunks)
            chunks.append(torch.arange(len(tokens) - st, device=device).view(1, -1).expand(3, -1) + st_idx)
        llm_positions = torch.cat(chunks, dim=1).reshape(3, -1)
        if llm_positions.shape[1] != len(tokens):
            raise ValueError(f"sequence {b}: {len(tokens)} tokens but the grids describe {llm_positions.shape[1]} "
                             "positions (placeholder count does not match image/video_grid_thw)")
        position_ids[:, b, keep] = llm_positions.to(position_ids.dtype)
        deltas.append(int(llm_positions.max()) + 1 - L)
    return position_ids, torch.tensor(deltas, device=device).unsqueeze(1)
