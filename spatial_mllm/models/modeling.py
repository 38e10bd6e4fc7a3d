"""SpatialMLLM (Wu et al. 2025): Qwen2.5-VL ⊕ VGGT aggregator → connector, added to the video embeddings.

Forward for a video (``pixel_values_videos`` + ``spatial_pixel_values_videos``):

1. Qwen's ViT embeds the video as usual → ``[t'·h'·w', hidden]`` per video (t' = frames/2, h' = h/2, ...).
2. The SAME resized frames, RGB in [0, 1], ``[S, 3, H, W]`` with ``H = 14·h``, go through VGGT's
   aggregator (frozen, no grad unless ``set_trainable(spatial=True)``; lean: only the last layer is kept),
   giving patch tokens ``[S, h·w, 2·embed_dim]``.
3. The connector merges 2 frames × 2×2 patches into one ``8·2·embed_dim`` (16384) vector per Qwen token
   and maps it to ``hidden``; the result is ADDED to the ViT embeddings, which then replace the
   ``<|video_pad|>`` embeddings (through transformers' ``mm_encoder_outputs`` input).
Images work the same way with the image repeated to 2 frames (``spatial_pixel_values_images``).

Fusion happens in ONE place, :meth:`SpatialMLLMForConditionalGeneration.encode_visual_inputs`: it returns
``{"video": ..., "image": ...}`` :class:`SpatialFusedOutput` objects whose ``pooler_output`` already holds
``ViT + connector(VGGT)`` per video/image. Every path goes through it:

- ``forward`` with raw pixels (``pixel_values_videos`` + ``spatial_pixel_values_videos``) calls it and hands
  the result to Qwen's forward as ``mm_encoder_outputs``;
- ``generate`` calls it BEFORE handing over to transformers' ``GenerationMixin.generate`` and passes only the
  fused outputs (the pixels and spatial frames are consumed). transformers 5.24's generate pre-encodes raw
  pixels itself through ``base_model.get_video_features`` (ViT only) — with our pre-encoding it never sees
  raw pixels, so it has nothing to pre-encode; it only expands the fused outputs for
  ``num_return_sequences``/beams and slices them for chunked prefill (both keep the output's type).
- ``forward`` given ``mm_encoder_outputs`` by anyone (a caller, a cache, a future transformers) accepts only
  :class:`SpatialFusedOutput` for a model with a spatial branch; anything else (e.g. Qwen's plain
  ``get_video_features`` output) is a ``ValueError`` naming ``mm_encoder_outputs`` — never a silent run
  without VGGT. Pixels without their spatial frames, spatial frames without their pixels, or pixels and
  pre-encoded outputs for the same modality are errors too.

Why this design: the type of the features is the proof that they were fused, so it stays correct whatever
transformers' generate does with them next — if a future version re-encodes pixels on its own path, it
cannot (it never gets them); if it rebuilds the outputs as another type, forward raises.
The fused features live in the KV cache after prefill. Videos of different sizes in one batch are fine
(VGGT runs once per group of equal-shaped videos). The 2D-only ablation (connector ``none``) has no spatial
branch: its fused outputs are the ViT's alone and spatial frames given to it are not used (by design).

Position ids follow the ORIGINAL Qwen2.5-VL rule (:mod:`spatial_mllm.models.rope`), by overriding
``get_rope_index`` of the inner model (no monkeypatching). ``mm_token_type_ids`` is derived from
``input_ids`` when a caller omits it, because transformers 5 otherwise silently falls back to 1D positions.

Differences from the official code (also in the README):

1. Position ids: 4.51.3's rule, as the official checkpoints were trained with, not transformers 5.24's.
2. VGGT runs lean: only the last aggregator layer is materialised (officially all 24 are kept and the
   connector picks ``spatial_embeds_layer_idx``); any other ``spatial_embeds_layer_idx`` is honoured by
   keeping that layer instead. VGGT's heads are not built unless the config enables them.
3. VGGT runs under autocast in the dtype of its weights when they are not fp32 (the official code runs
   the bf16 model directly); the connector and the addition run in the LLM's dtype.
4. No monkeypatching (nor global registration of conversion mappings); ``from_pretrained`` is strict (missing/unexpected tensors are errors naming the
   keys, after the declared renames and skips of :mod:`spatial_mllm.models.checkpoint_keys`).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel, Qwen2_5_VLPreTrainedModel
from transformers.vision_utils import get_vision_window_index

from spatial_mllm.models.checkpoint_keys import (
    detect_layout,
    ignored_key_patterns,
    key_mapping_for,
    list_checkpoint_keys,
)
from spatial_mllm.models.configuration import SpatialMLLMConfig
from spatial_mllm.models.connector import build_connector
from spatial_mllm.models.hub import ShareableCheckpointMixin
from spatial_mllm.models.rope import get_rope_index
from spatial_mllm.models.vggt import VGGT, VGGTConfig

__all__ = ["SpatialEncoder", "SpatialMLLMModel", "SpatialMLLMForConditionalGeneration", "SPATIAL_INPUT_NAMES",
           "SpatialFusedOutput", "VisualTrunk", "mm_token_type_ids_from_input_ids"]

logger = logging.getLogger(__name__)

SPATIAL_INPUT_NAMES = ("spatial_pixel_values_videos", "spatial_pixel_values_images")

# (modality, Qwen pixel argument, grid argument, spatial frames argument, what the spatial frames are)
_BRANCHES = (
    ("video", "pixel_values_videos", "video_grid_thw", "spatial_pixel_values_videos", "frames"),
    ("image", "pixel_values", "image_grid_thw", "spatial_pixel_values_images", "images"),
)


@dataclass
class SpatialFusedOutput(BaseModelOutputWithPooling):
    """Visual features that already hold the spatial addition: ``pooler_output`` is a tuple with one
    ``[t'·h'·w', hidden]`` tensor per video (or image), ``ViT(pixels) + connector(VGGT(frames))`` (ViT only
    for connector ``none``). Its TYPE is the marker that :meth:`SpatialMLLMForConditionalGeneration.forward`
    checks on ``mm_encoder_outputs``; make it only through
    :meth:`SpatialMLLMForConditionalGeneration.encode_visual_inputs`."""


@dataclass
class VisualTrunk:
    """The frozen part of one video's visual encoding (:meth:`SpatialMLLMForConditionalGeneration.encode_visual_trunks`):

    - ``vit_hidden`` ``[t·h·w, C_vit]``: the ViT blocks' output before the merger, in the ViT's window order
      (t, h, w = the video's patch grid);
    - ``spatial_tokens`` ``[S, h·w, 2·embed_dim]``: VGGT's patch tokens of the connector's layer (None for the
      2D-only model).

    What is left (merger, connector, addition) is cheap and may be trainable: a cache of trunks lets GRPO
    epochs skip the ViT blocks and VGGT (:class:`spatial_mllm.models.feature_cache.EncoderTrunkCache`).
    """

    vit_hidden: torch.Tensor
    spatial_tokens: torch.Tensor | None = None

    def to(self, device) -> VisualTrunk:
        return VisualTrunk(self.vit_hidden.to(device),
                           None if self.spatial_tokens is None else self.spatial_tokens.to(device))


def mm_token_type_ids_from_input_ids(input_ids: torch.Tensor, config) -> torch.Tensor:
    """``[B, L]`` modality of each token: 0 text, 1 image placeholder, 2 video placeholder."""
    out = torch.zeros_like(input_ids, dtype=torch.int32)
    out[input_ids == config.image_token_id] = 1
    out[input_ids == config.video_token_id] = 2
    return out


class SpatialEncoder(nn.Module):
    """VGGT wrapped as ``vggt_model`` (the official v1.1 key prefix); returns patch tokens per video."""

    def __init__(self, config: VGGTConfig):
        super().__init__()
        self.vggt_model = VGGT(config)

    def forward(self, videos: list[torch.Tensor], layer_idx: int = -1) -> list[torch.Tensor]:
        """Aggregator patch tokens of one layer for each video.

        Args:
            videos: list of ``[S_i, 3, H_i, W_i]`` frames, RGB in [0, 1]; videos of equal shape run as one
                batch (under DeepSpeed ZeRO-3: one call per video, so that every rank calls VGGT equally often).
            layer_idx: aggregator layer to return (-1 = last; only that layer is materialised).

        Returns:
            list of ``[S_i, (H_i/14)·(W_i/14), 2·embed_dim]`` patch tokens (camera/register tokens removed).
        """
        agg = self.vggt_model.aggregator
        param = next(self.parameters())
        groups: dict[tuple, list[int]] = defaultdict(list)
        # under DeepSpeed ZeRO-3 (partitioned parameters carry ``ds_id``) every call all-gathers the weights, so
        # every rank must make the same number of calls: one per video (ranks hold equal numbers of videos),
        # never "one per group of equal shapes", which differs between ranks with mixed frame sizes
        one_per_video = hasattr(param, "ds_id")
        for i, v in enumerate(videos):
            groups[(i,) if one_per_video else tuple(v.shape)].append(i)
        out: list[torch.Tensor | None] = [None] * len(videos)
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())
        use_amp = param.dtype != torch.float32
        for idx in groups.values():
            batch = torch.stack([videos[i] for i in idx]).to(param.device, torch.float32)  # [b, S, 3, H, W]
            with torch.set_grad_enabled(grad), torch.autocast(param.device.type, dtype=param.dtype,
                                                              enabled=use_amp):
                layers, psi = agg(batch, keep_layers=[layer_idx])
            tokens = layers[layer_idx][:, :, psi:]  # [b, S, P, 2C]
            for j, i in enumerate(idx):
                out[i] = tokens[j]
        return out


class SpatialMLLMModel(Qwen2_5_VLModel):
    """Qwen2.5-VL's base model with the original (4.51.3) M-RoPE position rule."""

    config: SpatialMLLMConfig

    def get_rope_index(self, input_ids, mm_token_type_ids=None, image_grid_thw=None, video_grid_thw=None,
                       second_per_grid_ts=None, attention_mask=None, **kwargs):
        """``(position_ids [3, B, L], rope_deltas [B, 1])`` by :func:`spatial_mllm.models.rope.get_rope_index`.

        ``mm_token_type_ids`` is accepted for signature compatibility; vision blocks are found from
        ``vision_start_token_id`` as in 4.51.
        """
        vc = self.config.vision_config
        return get_rope_index(
            input_ids, image_grid_thw, video_grid_thw, second_per_grid_ts, attention_mask,
            spatial_merge_size=vc.spatial_merge_size, tokens_per_second=vc.tokens_per_second,
            image_token_id=self.config.image_token_id, video_token_id=self.config.video_token_id,
            vision_start_token_id=self.config.vision_start_token_id,
        )


class SpatialMLLMForConditionalGeneration(ShareableCheckpointMixin, Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL for generation + ``spatial_encoder`` (VGGT) + ``connector`` (see the module docstring).

    Extra forward inputs:
        spatial_pixel_values_videos: list (one per video, in order of appearance) of ``[S, 3, H, W]`` frames
            in [0, 1], the same resized frames the ViT saw (S = 2·grid_t, H = 14·grid_h, W = 14·grid_w).
        spatial_pixel_values_images: list of ``[3, H, W]`` (or ``[1, 3, H, W]``) images in [0, 1].
    """

    config_class = SpatialMLLMConfig
    config: SpatialMLLMConfig

    def __init__(self, config: SpatialMLLMConfig):
        # Qwen2_5_VLForConditionalGeneration.__init__ minus its Qwen2_5_VLModel (built here as SpatialMLLMModel,
        # so a 3B model is not constructed twice)
        Qwen2_5_VLPreTrainedModel.__init__(self, config)
        self.model = SpatialMLLMModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        kind = config.connector_config["type"]
        if kind == "none":
            self.spatial_encoder = None
            self.connector = None
        else:
            self.spatial_encoder = SpatialEncoder(config.spatial_config)
            self.connector = build_connector(
                kind, config.spatial_config.head_dim_in, config.text_config.hidden_size,
                temporal_merge=config.vision_config.temporal_patch_size,
                spatial_merge=config.vision_config.spatial_merge_size)
        self._keys_to_ignore_on_load_unexpected = ignored_key_patterns(config)
        self.post_init()

    # ------------------------------------------------------------------------------------------ spatial
    def get_spatial_embeds(self, frames: list[torch.Tensor], grid_thw: torch.Tensor, what: str = "video"
                           ) -> list[torch.Tensor]:
        """Connector output per video/image: ``[t'·h'·w', hidden]`` each, in Qwen's token order.

        Args:
            frames: list of ``[S, 3, H, W]`` in [0, 1] (images: ``[3, H, W]``, repeated to 2 frames).
            grid_thw: ``[N, 3]`` ViT patch grids of the same videos/images (rows in the same order).
        """
        return self.connect_spatial_tokens(self.spatial_tokens(frames, grid_thw, what), grid_thw)

    def spatial_tokens(self, frames: list[torch.Tensor], grid_thw: torch.Tensor, what: str = "video"
                       ) -> list[torch.Tensor]:
        """VGGT's patch tokens per video/image: ``[S, (H/14)·(W/14), 2·embed_dim]`` each (the layer
        ``spatial_embeds_layer_idx``); arguments as :meth:`get_spatial_embeds`."""
        if len(frames) != len(grid_thw):
            raise ValueError(f"{len(frames)} spatial {what} inputs but {len(grid_thw)} {what}_grid_thw rows")
        tp = self.config.vision_config.temporal_patch_size
        p = self.config.spatial_config.patch_size
        prepared = []
        for i, (f, (t, h, w)) in enumerate(zip(frames, grid_thw.tolist())):
            if f.dim() == 3:
                f = f.unsqueeze(0)
            if what == "image":
                f = f.expand(tp, -1, -1, -1)  # images are duplicated to 2 frames, as officially
            S, _, H, W = f.shape
            if (S, H, W) != (t * tp, h * p, w * p):
                raise ValueError(
                    f"{what} {i}: spatial frames are {S}x{H}x{W} (frames x height x width) but its grid "
                    f"{(t, h, w)} needs {t * tp}x{h * p}x{w * p}: pass the same resized frames the ViT saw")
            prepared.append(f)
        layer = self.config.connector_config["spatial_embeds_layer_idx"]
        return self.spatial_encoder(prepared, layer_idx=layer)  # list of [S, P, 2C]

    def connect_spatial_tokens(self, tokens: list[torch.Tensor], grid_thw: torch.Tensor) -> list[torch.Tensor]:
        """The connector on VGGT patch tokens: ``[S, P, 2C]`` per video → ``[t'·h'·w', hidden]`` per video."""
        dtype = self.connector.ln_q.weight.dtype
        merged = [self.connector.merge(tok.to(dtype), (h, w)) for tok, (_, h, w) in zip(tokens, grid_thw.tolist())]
        out = self.connector(torch.cat(merged, dim=0))  # [ΣN, hidden]
        return list(torch.split(out, [m.shape[0] for m in merged]))

    # ------------------------------------------------------------------------------------------ trunks
    def _check_trunks_frozen(self) -> None:
        if not torch.is_grad_enabled():
            return
        groups = self.parameter_groups()
        for part in ("vision", "spatial"):
            if any(p.requires_grad for p in groups[part]):
                raise ValueError(f"video_trunks hold the frozen encoders' outputs, but the {part} parameters are "
                                 f"trainable (set_trainable({part}=True)): their gradient would be lost. Pass the raw "
                                 f"pixel_values_videos/spatial_pixel_values_videos instead")

    @torch.no_grad()
    def encode_visual_trunks(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.LongTensor,
                             spatial_pixel_values_videos: list[torch.Tensor] | None = None) -> list[VisualTrunk]:
        """The FROZEN part of each video's visual encoding (no grad), one :class:`VisualTrunk` per video: the
        ViT blocks' output before the merger and VGGT's patch tokens. :meth:`fuse_visual_trunks` applies the
        trainable rest (merger, connector, addition); together they equal :meth:`encode_visual_inputs`."""
        visual = self.model.visual
        out = visual(pixel_values_videos.type(visual.dtype), grid_thw=video_grid_thw, return_dict=True)
        # the blocks' output is in window order, video by video (the windows never cross videos)
        hidden = torch.split(out.last_hidden_state, video_grid_thw.prod(-1).tolist())  # [t·h·w, C_vit] each
        tokens: list[torch.Tensor | None] = [None] * len(hidden)
        if self.connector is not None:
            if spatial_pixel_values_videos is None:
                raise ValueError("pixel_values_videos given without spatial_pixel_values_videos: the spatial "
                                 "encoder needs the [0, 1] frames (SpatialMLLMProcessor returns them)")
            tokens = self.spatial_tokens(spatial_pixel_values_videos, video_grid_thw, "video")
        return [VisualTrunk(h, t) for h, t in zip(hidden, tokens)]

    def fuse_visual_trunks(self, trunks: list[VisualTrunk], video_grid_thw: torch.LongTensor) -> SpatialFusedOutput:
        """``ViT merger(trunk) + connector(trunk's VGGT tokens)`` per video (with grad where the merger and the
        connector are trainable): the same features as :meth:`encode_visual_inputs` on the raw video."""
        if len(trunks) != len(video_grid_thw):
            raise ValueError(f"{len(trunks)} video_trunks but {len(video_grid_thw)} video_grid_thw rows")
        visual = self.model.visual
        merger_param = next(visual.merger.parameters())
        for i, (t, (gt, gh, gw)) in enumerate(zip(trunks, video_grid_thw.tolist())):
            if t.vit_hidden.shape[0] != gt * gh * gw:
                raise ValueError(f"video_trunks[{i}] has {t.vit_hidden.shape[0]} ViT patches but its grid "
                                 f"{(gt, gh, gw)} has {gt * gh * gw}")
            if self.connector is not None and t.spatial_tokens is None:
                raise ValueError(f"video_trunks[{i}] has no spatial_tokens, but the model has a spatial branch")
        hidden = torch.cat([t.vit_hidden for t in trunks]).to(merger_param.device, merger_param.dtype)
        window_index, _ = get_vision_window_index(video_grid_thw, spatial_merge_size=visual.spatial_merge_size,
                                                  window_size=visual.window_size, patch_size=visual.patch_size)
        merged = visual.merger(hidden)[torch.argsort(window_index)]  # as Qwen's ViT: window order undone
        m2 = visual.spatial_merge_size ** 2
        vit = torch.split(merged, (video_grid_thw.prod(-1) // m2).tolist())
        if self.connector is not None:
            device = merger_param.device
            spatial = self.connect_spatial_tokens([t.spatial_tokens.to(device) for t in trunks], video_grid_thw)
            vit = tuple(e + s.to(e.dtype) for e, s in zip(vit, spatial))
        return SpatialFusedOutput(pooler_output=tuple(vit))

    # ------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        spatial_pixel_values_videos: list[torch.Tensor] | None = None,
        spatial_pixel_values_images: list[torch.Tensor] | None = None,
        mm_encoder_outputs: dict | None = None,
        video_index: torch.LongTensor | list[int] | None = None,
        video_trunks: list[VisualTrunk] | None = None,
        **kwargs,
    ):
        """Qwen2.5-VL's forward with the spatial branch added to the visual embeddings.

        All Qwen2.5-VL arguments are accepted (``labels``, ``cache``, ``use_cache``, ``logits_to_keep``,
        ...). Returns ``MultimodalCausalLMOutputWithPast`` (``logits [B, L, vocab]``, ``loss``, ``cache``).

        ``video_index`` (``[n_blocks]``): the video inputs (pixels, grid, spatial frames, seconds per grid)
        hold each DISTINCT video once, and the ``k``-th video block of the batch (in order) shows video
        ``video_index[k]`` — e.g. the G completions of one GRPO prompt: each video is encoded once (ViT +
        VGGT + connector, with grad where trainable) and its features serve every row that shows it.

        ``video_trunks`` (one :class:`VisualTrunk` per video, or per distinct video with ``video_index``):
        the frozen encoders' outputs instead of ``pixel_values_videos`` + ``spatial_pixel_values_videos``;
        the merger and the connector run here (with grad where trainable). An error when the ViT blocks or
        VGGT are trainable (their gradient would be lost).
        """
        distinct = None  # the features of the distinct videos, when computed here
        if video_trunks is not None:
            if (pixel_values_videos is not None or spatial_pixel_values_videos is not None
                    or (mm_encoder_outputs or {}).get("video") is not None):
                raise ValueError("video_trunks replace pixel_values_videos, spatial_pixel_values_videos and "
                                 "mm_encoder_outputs['video']: pass one of them")
            if video_grid_thw is None:
                raise ValueError("video_trunks given without video_grid_thw")
            self._check_trunks_frozen()
            distinct = self.fuse_visual_trunks(video_trunks, video_grid_thw)
        elif video_index is not None:
            if pixel_values_videos is None or mm_encoder_outputs is not None:
                raise ValueError("video_index needs the distinct videos' raw inputs (pixel_values_videos, "
                                 "spatial_pixel_values_videos), not mm_encoder_outputs")
            distinct = self.encode_visual_inputs(pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
                                                 spatial_pixel_values_videos=spatial_pixel_values_videos)["video"]
            pixel_values_videos = spatial_pixel_values_videos = None
        if distinct is not None:
            if video_index is not None:  # one block per row: each shows one of the distinct videos
                idx = torch.as_tensor(video_index, dtype=torch.long, device=video_grid_thw.device)
                distinct = SpatialFusedOutput(pooler_output=tuple(distinct.pooler_output[i] for i in idx.tolist()))
                video_grid_thw = video_grid_thw[idx]
                second_per_grid_ts = second_per_grid_ts[idx] if second_per_grid_ts is not None else None
            mm_encoder_outputs = {**(mm_encoder_outputs or {}), "video": distinct}
        if mm_token_type_ids is None and input_ids is not None and (
                image_grid_thw is not None or video_grid_thw is not None):
            mm_token_type_ids = mm_token_type_ids_from_input_ids(input_ids, self.config)
        raw = {"pixel_values_videos": pixel_values_videos, "video_grid_thw": video_grid_thw,
               "spatial_pixel_values_videos": spatial_pixel_values_videos, "pixel_values": pixel_values,
               "image_grid_thw": image_grid_thw, "spatial_pixel_values_images": spatial_pixel_values_images}
        mm_encoder_outputs = self._fused_encoder_outputs(raw, mm_encoder_outputs)
        if mm_encoder_outputs:  # Qwen must not encode these pixels a second time
            pixel_values_videos = None if "video" in mm_encoder_outputs else pixel_values_videos
            pixel_values = None if "image" in mm_encoder_outputs else pixel_values
        return super().forward(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            pixel_values=pixel_values, pixel_values_videos=pixel_values_videos, image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw, mm_token_type_ids=mm_token_type_ids,
            second_per_grid_ts=second_per_grid_ts, mm_encoder_outputs=mm_encoder_outputs, **kwargs)

    # ------------------------------------------------------------------------------------------ fusion
    def encode_visual_inputs(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        spatial_pixel_values_videos: list[torch.Tensor] | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        spatial_pixel_values_images: list[torch.Tensor] | None = None,
    ) -> dict[str, SpatialFusedOutput]:
        """The visual features the LLM reads, per modality present: ``{"video"|"image": SpatialFusedOutput}``.

        Video: ``pooler_output[i] = ViT(pixel_values_videos)[i] + connector(VGGT(spatial_pixel_values_videos[i]))``
        ``[t'·h'·w', hidden]`` for each video ``i`` (``video_grid_thw [N, 3]``); images likewise. The result
        can be passed as ``mm_encoder_outputs`` to ``forward``/``generate`` instead of the raw inputs (same
        logits). Raises ``ValueError`` naming the argument when pixels come without their spatial frames (or
        the reverse) on a model with a spatial branch.
        """
        raw = {"pixel_values_videos": pixel_values_videos, "video_grid_thw": video_grid_thw,
               "spatial_pixel_values_videos": spatial_pixel_values_videos, "pixel_values": pixel_values,
               "image_grid_thw": image_grid_thw, "spatial_pixel_values_images": spatial_pixel_values_images}
        out: dict[str, SpatialFusedOutput] = {}
        for modality, name, grid_name, spatial_name, what in _BRANCHES:
            pixels, grid, spatial_pixels = raw[name], raw[grid_name], raw[spatial_name]
            if pixels is None:
                if spatial_pixels is not None and self.connector is not None:
                    raise ValueError(f"{spatial_name} given without {name}: pass both (the ViT and VGGT see the "
                                     f"same {what}), or pre-encoded mm_encoder_outputs alone")
                continue
            if grid is None:
                raise ValueError(f"{name} given without {grid_name}")
            features = self.model.get_video_features if modality == "video" else self.model.get_image_features
            vit = features(pixels, grid, return_dict=True).pooler_output
            if self.connector is not None:
                if spatial_pixels is None:
                    raise ValueError(f"{name} given without {spatial_name}: the spatial encoder needs the "
                                     f"[0, 1] {what} (SpatialMLLMProcessor returns them)")
                spatial = self.get_spatial_embeds(spatial_pixels, grid, modality)
                vit = tuple(e + s.to(e.dtype) for e, s in zip(vit, spatial))
            out[modality] = SpatialFusedOutput(pooler_output=tuple(vit))
        return out

    def _fused_encoder_outputs(self, raw: dict, given: dict | None) -> dict | None:
        """``mm_encoder_outputs`` for Qwen's forward: the caller's (checked) + the fusion of the raw inputs."""
        given = {k: v for k, v in (given or {}).items() if v is not None}
        for modality, name, _, spatial_name, _ in _BRANCHES:
            out = given.get(modality)
            if out is None:
                continue
            if self.connector is not None and not isinstance(out, SpatialFusedOutput):
                raise ValueError(
                    f"mm_encoder_outputs[{modality!r}] is a {type(out).__name__}, not a SpatialFusedOutput: it does "
                    f"not carry the spatial encoder's addition (e.g. Qwen's get_{modality}_features output). Pass "
                    f"the raw {name} with {spatial_name}, or the output of model.encode_visual_inputs(...)")
            if raw[name] is not None or (raw[spatial_name] is not None and self.connector is not None):
                raise ValueError(f"both mm_encoder_outputs[{modality!r}] and raw {name}/{spatial_name} given: "
                                 f"pass one or the other")
        fused = self.encode_visual_inputs(**raw)
        return {**given, **fused} or None

    def generate(self, *args, **kwargs):
        """``GenerationMixin.generate`` with the visual inputs fused first (see the module docstring).

        Accepts everything transformers' ``generate`` accepts plus ``spatial_pixel_values_videos`` /
        ``spatial_pixel_values_images``; raw pixels and spatial frames are replaced by
        ``mm_encoder_outputs`` (:class:`SpatialFusedOutput`) before transformers sees them.
        """
        raw = {arg: kwargs.pop(arg, None) for _, pixels, _, spatial, _ in _BRANCHES for arg in (pixels, spatial)}
        raw["video_grid_thw"] = kwargs.get("video_grid_thw")
        raw["image_grid_thw"] = kwargs.get("image_grid_thw")
        with torch.no_grad():  # as transformers' generate itself
            mm = self._fused_encoder_outputs(raw, kwargs.pop("mm_encoder_outputs", None))
        if mm:
            kwargs["mm_encoder_outputs"] = mm
        return super().generate(*args, **kwargs)

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        ids = model_kwargs.get("input_ids", inputs_tensor)
        if (model_kwargs.get("mm_token_type_ids") is None and ids is not None and ids.dim() == 2
                and (model_kwargs.get("image_grid_thw") is not None
                     or model_kwargs.get("video_grid_thw") is not None)):
            model_kwargs["mm_token_type_ids"] = mm_token_type_ids_from_input_ids(ids, self.config)
        return super()._prepare_position_ids_for_generation(inputs_tensor, model_kwargs)

    # ------------------------------------------------------------------------------------------ training
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per part: vision (ViT blocks + patch embed), merger, spatial, connector, llm."""
        merger = list(self.model.visual.merger.parameters())
        merger_ids = {id(p) for p in merger}
        groups = {
            "vision": [p for p in self.model.visual.parameters() if id(p) not in merger_ids],
            "merger": merger,
            "spatial": list(self.spatial_encoder.parameters()) if self.spatial_encoder is not None else [],
            "connector": list(self.connector.parameters()) if self.connector is not None else [],
            "llm": list(self.model.language_model.parameters()),
        }
        seen = {id(p) for ps in groups.values() for p in ps}
        groups["llm"] += [p for p in self.lm_head.parameters() if id(p) not in seen]  # untied lm_head
        return groups

    def set_trainable(self, vision: bool = False, merger: bool = True, spatial: bool = False,
                      connector: bool = True, llm: bool = True, verbose: bool = True) -> str:
        """Freeze/unfreeze parts (defaults = the official SFT plan) and return (and print) the table."""
        flags = {"vision": vision, "merger": merger, "spatial": spatial, "connector": connector, "llm": llm}
        for name, params in self.parameter_groups().items():
            for p in params:
                p.requires_grad_(flags[name])
        table = self.trainable_parameters_table()
        if verbose:
            print(table)
        return table

    def trainable_parameters_table(self) -> str:
        """A text table: part, parameters, trainable parameters, trainable %."""
        rows = [("part", "params", "trainable", "%")]
        tot = tr = 0
        for name, params in self.parameter_groups().items():
            n = sum(p.numel() for p in params)
            t = sum(p.numel() for p in params if p.requires_grad)
            tot, tr = tot + n, tr + t
            rows.append((name, f"{n:,}", f"{t:,}", f"{100 * t / n:.1f}" if n else "-"))
        rows.append(("total", f"{tot:,}", f"{tr:,}", f"{100 * tr / tot:.1f}" if tot else "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args, strict: bool = True,
                        **kwargs):
        """Load our saves, official v1.1 / v1.0 checkpoints (and, with ``connector="none"`` configs, a
        plain Qwen2.5-VL checkpoint). Strict: missing or unexpected tensors raise a ``KeyError`` naming them
        (after the declared renames/skips of :mod:`~spatial_mllm.models.checkpoint_keys`).

        The v1.0 release has a plain Qwen2.5-VL ``config.json``; it is recognised from its tensor names
        and gets ``connector_config.type = "mlp2_add"`` with a VGGT-1B ``spatial_config``.
        """
        config = kwargs.pop("config", None)
        hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token") if k in kwargs}
        keys = list_checkpoint_keys(pretrained_model_name_or_path,
                                    **{k: v for k, v in hub_kwargs.items() if k == "revision"})
        layout = detect_layout(keys)
        if config is None:
            config = SpatialMLLMConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
            raw = SpatialMLLMConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)[0]
            if raw.get("connector_config") is None and layout in ("v1.0", "qwen2.5-vl"):
                kind = "mlp2_add" if layout == "v1.0" else "none"
                config.connector_config = {**config.connector_config, "type": kind}
        want_info = kwargs.pop("output_loading_info", False)
        mapping = {**key_mapping_for(keys), **(kwargs.pop("key_mapping", None) or {})}
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, config=config,
                                              output_loading_info=True, key_mapping=mapping or None, **kwargs)
        bad = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if strict and any(bad.values()):
            def show(keys):
                return ", ".join(map(str, keys[:12])) + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")

            raise KeyError(f"checkpoint {pretrained_model_name_or_path} does not match SpatialMLLM "
                           f"(connector {config.connector_config['type']}): missing tensors [{show(bad['missing_keys'])}]; "
                           f"unexpected [{show(bad['unexpected_keys'])}]; shape mismatch "
                           f"[{show(bad['mismatched_keys'])}]")
        return (model, info) if want_info else model

    @classmethod
    def from_qwen_and_vggt(cls, qwen_id_or_path: str | os.PathLike, vggt_id_or_path: str | os.PathLike | None,
                           connector: str = "mlp_add", *, dtype: torch.dtype | None = None,
                           spatial_heads: bool = False, spatial_embeds_layer_idx: int = -1,
                           **qwen_kwargs) -> SpatialMLLMForConditionalGeneration:
        """The untrained model for SFT: Qwen2.5-VL weights + VGGT weights + a randomly initialised connector
        (``normal(0, initializer_range)`` linears, zero biases, unit norms — Qwen's init, as officially).

        ``vggt_id_or_path=None`` with ``connector="none"`` builds the 2D-only ablation.
        ``spatial_heads=True`` keeps VGGT's camera/depth/point heads (for space-aware sampling).
        """
        qwen = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen_id_or_path, dtype=dtype, **qwen_kwargs)
        cfg = qwen.config.to_dict()
        for k in ("model_type", "architectures", "transformers_version"):
            cfg.pop(k, None)
        if connector != "none":
            if vggt_id_or_path is None:
                raise ValueError(f"connector {connector!r} needs a VGGT checkpoint (vggt_id_or_path)")
            heads = {} if spatial_heads else dict(enable_camera=False, enable_depth=False, enable_point=False)
            vggt = VGGT.from_pretrained(vggt_id_or_path, **heads)
            spatial_config = vggt.config
        else:
            vggt, spatial_config = None, None
        config = SpatialMLLMConfig(**cfg, spatial_config=spatial_config, connector_config={
            "type": connector, "spatial_embeds_layer_idx": spatial_embeds_layer_idx})
        model = cls(config)
        missing, unexpected = model.load_state_dict(qwen.state_dict(), strict=False)
        missing = [k for k in missing if not k.startswith(("spatial_encoder.", "connector."))]
        if missing or unexpected:
            raise KeyError(f"Qwen2.5-VL weights from {qwen_id_or_path} do not fit: missing {missing[:10]}, "
                           f"unexpected {unexpected[:10]}")
        if vggt is not None:
            model.spatial_encoder.vggt_model.load_state_dict(vggt.state_dict(), strict=True)
        if dtype is not None:
            model = model.to(dtype)
        return model
