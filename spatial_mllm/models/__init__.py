"""Models: the VGGT spatial encoder, connectors, and SpatialMLLM on Qwen2.5-VL.

Names are imported lazily (``from spatial_mllm.models import SpatialMLLMForConditionalGeneration`` loads
transformers only then), so ``import spatial_mllm.models`` stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "SpatialMLLMConfig": "spatial_mllm.models.configuration",
    "SpatialMLLMForConditionalGeneration": "spatial_mllm.models.modeling",
    "SpatialMLLMProcessor": "spatial_mllm.models.processing",
    "SpatialConnector": "spatial_mllm.models.connector",
    "get_rope_index": "spatial_mllm.models.rope",
    "ask": "spatial_mllm.models.ask",
    "answer_batch": "spatial_mllm.models.ask",
    "tiny_model": "spatial_mllm.models.tiny",
    "tiny_processor": "spatial_mllm.models.tiny",
    "tiny_tokenizer": "spatial_mllm.models.tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'spatial_mllm.models' has no attribute {name!r}")
