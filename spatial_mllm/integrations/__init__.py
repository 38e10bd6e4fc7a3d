"""Adapters that plug this package into outside frameworks; nothing in the package imports them.

* :mod:`~spatial_mllm.integrations.lmms_eval` — the ``spatial_mllm`` model of lmms-eval (a chat model), found
  by lmms-eval through the ``lmms_eval.models`` entry point that ``pyproject.toml`` declares and that points at
  :func:`lmms_eval_manifests`. Install the extra: ``pip install -e '.[lmms-eval]'``.

This module stays import-light: lmms-eval loads every entry point of its group each time it starts, so only
the manifest is built here and the model module (which imports lmms-eval, torch and transformers) is
imported by lmms-eval when ``--model spatial_mllm`` is asked for.
"""

from __future__ import annotations

__all__ = ["LMMS_EVAL_MODEL_ID", "LMMS_EVAL_CLASS_PATH", "lmms_eval_manifests"]

LMMS_EVAL_MODEL_ID = "spatial_mllm"
LMMS_EVAL_CLASS_PATH = "spatial_mllm.integrations.lmms_eval.SpatialMLLMLmms"


def lmms_eval_manifests():
    """The entry point's payload: lmms-eval 0.7.3 calls it (``ModelRegistryV2._coerce_payload_to_manifests``)
    and registers the returned ``ModelManifest``: model id ``spatial_mllm`` → our chat class."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=LMMS_EVAL_MODEL_ID, chat_class_path=LMMS_EVAL_CLASS_PATH)
