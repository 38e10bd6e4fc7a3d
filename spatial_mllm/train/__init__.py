"""Trainers: SFT, cold start, GRPO, and their rewards.

SFT and encoder-pretraining names are imported lazily (``from spatial_mllm.train import SFTConfig`` loads transformers only when the
trainer is built), so ``import spatial_mllm.train`` stays cheap.
"""

from importlib import import_module

_EXPORTS = {
    "SFTConfig": "spatial_mllm.train.sft",
    "SFTResult": "spatial_mllm.train.sft",
    "train_sft": "spatial_mllm.train.sft",
    "run_sft": "spatial_mllm.train.sft",
    "load_sft_checkpoint": "spatial_mllm.train.sft",
    "GeometryPretrainConfig": "spatial_mllm.train.pretrain",
    "SemanticPretrainConfig": "spatial_mllm.train.pretrain",
    "pretrain_vggt": "spatial_mllm.train.pretrain",
    "pretrain_vit": "spatial_mllm.train.pretrain",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'spatial_mllm.train' has no attribute {name!r}")
