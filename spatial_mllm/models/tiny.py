"""Tiny presets: a random-init Spatial-MLLM and an offline tokenizer/processor, so every path runs on CPU.

* :func:`tiny_tokenizer` — a byte-level BPE trained in memory (deterministic, ~1 s) with all Qwen2.5-VL
  special tokens (``<|im_start|>``, ``<|vision_start|>``, ``<|video_pad|>``, ...) and Qwen2.5-VL's chat
  template. No hub access.
* :func:`tiny_config` — Qwen2.5-VL text 64-d × 2 layers, ViT 32-d × 1 block, tiny VGGT (64-d, 2 layers),
  token ids wired to the tokenizer. Same structure as the real model (M-RoPE sections, window attention,
  2×2 merger, temporal patch 2, tokens_per_second 2), just small.
* :func:`tiny_model` / :func:`tiny_processor` — ready-made instances.

The real sizes are in :data:`QWEN25_VL_3B` (Qwen/Qwen2.5-VL-3B-Instruct's config values) for benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["QWEN_SPECIAL_TOKENS", "QWEN25_VL_CHAT_TEMPLATE", "QWEN25_VL_3B", "tiny_tokenizer", "tiny_config",
           "tiny_model", "tiny_processor", "qwen25_vl_3b_config", "width_scaled_llm_init_", "LLM_INITS"]

# Qwen2.5-VL's added tokens, in their id order (151643...) — here they get ids right after the BPE vocab.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]

# Qwen/Qwen2.5-VL-*-Instruct chat template (chat_template.json).
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A small built-in corpus for the BPE merges (spatial QA vocabulary; content only affects token lengths).
_CORPUS = """You are a helpful assistant. system user assistant
How many chairs are in this room? What is the length of the longest dimension of the table in centimeters?
What is the size of this room in square meters? Measuring from the closest point of each object, what is
the distance between the sofa and the tv in meters? Which of these objects is the closest to the bed?
If I am standing by the refrigerator and facing the door, is the lamp to my front-left, front-right,
back-left, or back-right? What will be the first-time appearance order of the following categories in
the video: chair, table, sofa, bed? You are a robot beginning at the door facing the window. Turn left,
turn right, turn back, go forward until you reach the cabinet. Answer with the option's letter from the
given choices directly. Please answer the question using a single word or phrase. Options: A. B. C. D.
<think> </think> <answer> </answer> 0 1 2 3 4 5 6 7 8 9 10 12.5 3.14 left right front back yes no
"""


def tiny_tokenizer(vocab_size: int = 512, words: Sequence[str] = ()):
    """A Qwen-style fast tokenizer built offline: byte-level BPE + Qwen special tokens + chat template.

    Ids ``[0, vocab_size)`` are the BPE vocabulary (256 bytes + merges); the 14 special tokens follow.
    ``pad`` = ``eos`` = ``<|endoftext|>`` as Qwen2.5-VL's processor sets them (generation stops on
    ``<|im_end|>`` too via the generation config). ``words`` (e.g. the synthetic rooms' object categories)
    are added to the merge corpus often enough that each becomes one token after a space (``" chair"`` →
    ``["Ġchair"]``; a two-word name gets one token per word), as a real tokenizer's vocabulary holds common
    words; the default (no words) is the historical tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    extra = [" " + " ".join(words)] * 8 if words else []
    tok.train_from_iterator([_CORPUS] * 4 + extra, trainer=trainer)
    tok.add_special_tokens(QWEN_SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        chat_template=QWEN25_VL_CHAT_TEMPLATE, padding_side="left",
    )
    fast.image_token, fast.video_token = "<|image_pad|>", "<|video_pad|>"
    return fast


def _token_ids(tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def tiny_config(tokenizer=None, connector: str = "mlp_add", *, text_overrides: dict[str, Any] | None = None,
                vision_overrides: dict[str, Any] | None = None, **overrides: Any):
    """Config of a tiny Spatial-MLLM (CPU tests/presets); ``overrides`` go to ``SpatialMLLMConfig``,
    ``text_overrides`` are merged into the tiny LLM's ``text_config`` (e.g. ``hidden_size``) and
    ``vision_overrides`` into the ViT's ``vision_config`` (e.g. ``hidden_size``, ``depth``, ``num_heads``;
    its ``out_hidden_size`` always follows the LLM)."""
    from spatial_mllm.models.configuration import SpatialMLLMConfig
    from spatial_mllm.models.vggt import VGGTConfig

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    vocab = len(tokenizer)
    kw = dict(
        text_config=dict(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1], window_size=56, tokens_per_second=2, spatial_merge_size=2,
                           temporal_patch_size=2, patch_size=14),
        spatial_config=VGGTConfig.tiny(depth=2, dino_depth=1, dpt_intermediate_layer_idx=[0, 0, 1, 1],
                                       enable_camera=False, enable_depth=False,
                                       enable_point=False).to_dict(),
        connector_config={"type": connector, "spatial_embeds_layer_idx": -1},
        **_token_ids(tokenizer),
    )
    if text_overrides:
        bad = set(text_overrides) & {"vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"}
        if bad:
            raise ValueError(f"text_overrides must not set {sorted(bad)}: they follow the tokenizer")
        text = {**kw["text_config"], **text_overrides}
        half = text["hidden_size"] // text["num_attention_heads"] // 2  # rotary frequencies per head
        if "rope_parameters" not in text_overrides and sum(text["rope_parameters"]["mrope_section"]) != half:
            t = half // 4  # Qwen2.5-VL's split (t, h, w) = (16, 24, 24) of 64, scaled
            text["rope_parameters"] = {**text["rope_parameters"], "mrope_section": [t, (half - t) // 2,
                                                                                   half - t - (half - t) // 2]}
        kw["text_config"] = text
        kw["vision_config"] = {**kw["vision_config"], "out_hidden_size": text["hidden_size"]}
    if vision_overrides:
        bad = set(vision_overrides) & {"out_hidden_size", "patch_size", "spatial_merge_size", "temporal_patch_size"}
        if bad:
            raise ValueError(f"vision_overrides must not set {sorted(bad)}: they fix the token layout / LLM width")
        kw["vision_config"] = {**kw["vision_config"], **vision_overrides}
    kw.update(overrides)
    return SpatialMLLMConfig(**kw)


LLM_INITS = ("qwen", "width_scaled")


def width_scaled_llm_init_(model, seed: int = 0) -> None:
    """Re-initialise the LLM of a Qwen2.5-VL / Spatial-MLLM in place for its width (seeded, ViT untouched):
    token embeddings N(0, 1), every other LLM weight matrix (attention and MLP projections, ``lm_head``)
    N(0, 1/fan_in); biases and norm weights keep their init (0 and 1).

    Qwen2.5-VL's own init (``initializer_range`` 0.02 everywhere) is tuned for 2048-d and wider: in a
    128-d LLM it makes query·key products ~16× smaller than a fan-in init, attention stays uniform and the
    model learns to look things up in its context slowly (the mini study's reading problem, README). The
    tiny LLM has untied input/output embeddings, so ``lm_head`` gets the fan-in scale."""
    import torch

    lm = model.model.language_model
    out = model.get_output_embeddings()
    if out is not None and out.weight is lm.embed_tokens.weight:
        raise ValueError("width_scaled init needs untied input/output embeddings")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lm.embed_tokens.weight.normal_(0.0, 1.0, generator=gen)
        mats = [p for n, p in lm.named_parameters() if p.dim() == 2 and not n.startswith("embed_tokens")]
        for w in [*mats, *([out.weight] if out is not None else [])]:
            w.normal_(0.0, w.shape[1] ** -0.5, generator=gen)


def tiny_model(tokenizer=None, connector: str = "mlp_add", seed: int = 0, llm_init: str = "qwen", **overrides: Any):
    """A random-init tiny :class:`SpatialMLLMForConditionalGeneration` in eval mode (seeded); ``llm_init``
    ``"qwen"`` (Qwen2.5-VL's init) or ``"width_scaled"`` (:func:`width_scaled_llm_init_`)."""
    import torch

    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration

    if llm_init not in LLM_INITS:
        raise ValueError(f"llm_init must be one of {LLM_INITS}, got {llm_init!r}")
    torch.manual_seed(seed)
    model = SpatialMLLMForConditionalGeneration(tiny_config(tokenizer, connector, **overrides))
    if llm_init == "width_scaled":
        width_scaled_llm_init_(model, seed)
    return model.eval()


def tiny_processor(tokenizer=None, min_pixels: int = 56 * 56, max_pixels: int = 112 * 112, num_frames: int = 4):
    """A :class:`SpatialMLLMProcessor` with the tiny tokenizer and small frames (56..112 px per side)."""
    from spatial_mllm.models.processing import SpatialMLLMProcessor

    return SpatialMLLMProcessor.build(tokenizer if tokenizer is not None else tiny_tokenizer(),
                                      min_pixels=min_pixels, max_pixels=max_pixels, num_frames=num_frames)


# Qwen/Qwen2.5-VL-3B-Instruct config values (for benchmarks without hub access).
QWEN25_VL_3B: dict[str, Any] = dict(
    text_config=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                     num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
                     rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151645,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                       fullatt_block_indexes=[7, 15, 23, 31], window_size=112, tokens_per_second=2,
                       spatial_merge_size=2, temporal_patch_size=2, patch_size=14, hidden_act="silu"),
    image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
    tie_word_embeddings=True,
)


def qwen25_vl_3b_config(connector: str = "mlp_add", layers: int | None = None, tokenizer=None):
    """Spatial-MLLM at the paper's sizes: Qwen2.5-VL-3B + VGGT-1B (aggregator only) + connector.

    ``layers``: a "3B-shape" model reduced in depth — the real widths, vocabulary and 16384-d connector,
    but only ``layers`` LLM blocks, ViT blocks (the last one full-attention) and VGGT frame/global block
    pairs (DINOv2 patch embed too). For tests and benchmarks of code paths at real tensor sizes.
    ``tokenizer``: take the vision token ids from it (e.g. the offline tiny tokenizer, whose ids all lie in
    the 3B vocabulary), so that its processor can feed the model.
    """
    import copy

    from spatial_mllm.models.configuration import SpatialMLLMConfig

    values = copy.deepcopy(QWEN25_VL_3B)
    spatial = None
    if layers is not None:
        values["text_config"]["num_hidden_layers"] = layers
        values["vision_config"]["depth"] = layers
        values["vision_config"]["fullatt_block_indexes"] = [layers - 1]
        spatial = {"depth": layers, "dino_depth": layers}
    if tokenizer is not None:
        values.update(_token_ids(tokenizer))
    return SpatialMLLMConfig(**values, spatial_config=spatial, connector_config={"type": connector})
