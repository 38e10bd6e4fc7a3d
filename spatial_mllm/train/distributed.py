"""DeepSpeed ZeRO-2 / ZeRO-3 (and ZeRO-3 with CPU offload) for the two trainers.

The accelerate configs ``configs/accelerate/zero2.yaml``, ``zero3.yaml`` and ``zero3_offload.yaml`` point at a
DeepSpeed JSON each; ``accelerate launch --config_file <yaml>`` exports it to the ranks
(``ACCELERATE_USE_DEEPSPEED``, ``ACCELERATE_DEEPSPEED_CONFIG_FILE``, ``ACCELERATE_DEEPSPEED_ZERO3_INIT``). The
SFT stage (HF ``Trainer``) fills the JSON's ``"auto"`` values from its ``TrainingArguments``; the GRPO stage
(its own accelerate loop, no dataloader) gets them from :func:`deepspeed_plugin_for`. This module holds what
either stage needs on top of that (both import it; it imports neither):

* :func:`whole_model_init` — build the model whole, outside ``deepspeed.zero.Init`` (see decision 1 below).
* :func:`check_zero3_init_flag`, :func:`check_supported` — errors that name the config key to change.
* :func:`deepspeed_plugin_for` / :func:`grpo_accelerator_kwargs` — the ``Accelerator`` arguments of a loop
  without a dataloader: micro-batch, accumulation, global batch and clipping written into the DeepSpeed config.
* :func:`generation_context` — the policy with whole parameters for ``generate`` (decision 2).
* :func:`prepare_policy_and_reference` — ``accelerator.prepare`` of a loop without a dataloader (the
  model-sized "auto" buckets filled from ``text_config``), and GRPO's frozen reference, sharded like the policy
  under ZeRO-3 (:func:`prepare_reference_model`).
* :func:`fill_auto_values`, :func:`deepspeed_json_of`, :func:`zero_stage` — config reading (tests, checks).
* ``accelerate launch --config_file <yaml> -m spatial_mllm.train.distributed`` — check a launch before a long job
  (:func:`launch_summary`: the resolved ZeRO setup as JSON, or the error a trainer would raise).

Decisions:

1. **ZeRO-3 builds the model whole, then partitions it** (``zero3_init_flag: false``). With transformers 5.24
   and accelerate 1.15 the flag alone does not do that: once a ZeRO-3 config is active (``TrainingArguments``
   registers it, and so does ``Accelerator``), ``is_deepspeed_zero3_enabled()`` is true whatever the flag says
   (accelerate's ``DeepSpeedPlugin.set_deepspeed_weakref`` registers the config unconditionally), and every
   ``from_pretrained`` / ``_from_config`` — including the ViT that ``Qwen2_5_VLModel.__init__`` builds with
   ``_from_config`` — then runs under ``deepspeed.zero.Init``. :func:`whole_model_init` hides transformers'
   DeepSpeed config while the model is built, so that (a) ``from_qwen_and_vggt`` can copy whole state dicts
   (Qwen2.5-VL + VGGT) into the new model, (b) our strict ``from_pretrained`` checks keys against whole
   tensors, and (c) random parts (the fresh connector, the tiny preset) are initialised exactly as under
   DDP/FSDP for the same seed — ZeRO-3 runs start from the same weights as the other backends. DeepSpeed
   partitions the model at ``deepspeed.initialize`` (inside ``Trainer`` / ``accelerator.prepare``). Cost: each
   process holds the whole fp32 model in host memory once (~16 GB for 3B + VGGT-1B). ``zero3_init_flag: true``
   is refused with an error naming the key (:func:`check_zero3_init_flag`).
2. **GRPO generation under ZeRO-3 gathers the policy once per round** (:func:`generation_context`): all
   parameters are all-gathered (``deepspeed.zero.GatheredParameters``) and ZeRO-3's per-module fetch/release
   hooks are taken off for the duration, then put back — as TRL's ``unwrap_model_for_generation`` and
   DeepSpeed's own ``deepspeed.runtime.zero.stage3.unwrap_model_for_generation`` do. Without this, every
   decoding step would all-gather every layer, and ranks that stop after different numbers of tokens would
   wait on each other's collectives forever. The model's own ``generate`` runs inside, unchanged: the ViT +
   connector(VGGT) fusion still happens before transformers' generate (spatial_mllm.models.modeling). Memory:
   the whole policy in the compute dtype on each GPU while sampling (8 GB for 3B + 1B in bf16).
3. **The reference model** under ZeRO-3 is sharded too (``deepspeed.initialize`` without an optimizer, the
   policy's filled config minus optimizer offload), as TRL's ``prepare_deepspeed``; under ZeRO-2 it stays a
   plain module on each GPU (it is as large as the policy, which ZeRO-2 keeps whole anyway).

Differences from the official pipeline (``scripts/training/zero{2,3,3_offload}.json`` on ``master``):

1. ``gradient_clipping: "auto"`` (= ``max_grad_norm``) in our JSONs; the official ones have no such key, so
   with DeepSpeed < 0.19.3 (default 0) the official SFT ran unclipped although its script passes
   ``--max_grad_norm 1.0`` (HF fills only "auto" keys, and accelerate's ``clip_grad_norm_`` is a no-op under
   DeepSpeed); DeepSpeed ≥ 0.19.3 defaults to 1.0.
2. ``zero3_offload.json`` has no ``optimizer``/``scheduler`` sections: the official one hands the optimizer to
   DeepSpeed (one AdamW over all parameters at one lr, WarmupLR = warm-up then constant), which drops the two
   learning rates (LLM 7e-6, projector 2e-5) and the cosine schedule. Ours keeps the trainer's AdamW groups and
   schedule; accelerate turns the torch AdamW into DeepSpeed's ``DeepSpeedCPUAdam`` (AdamW mode, same groups),
   which DeepSpeed JIT-compiles on first use (g++ and Python headers needed, no nvcc).
3. ZeRO-3 builds the model whole first (decision 1); officially ``zero.Init`` partitioned it at construction and
   VGGT's weights were loaded under ``GatheredParameters`` on rank 0.
4. The fp16 loss-scale block (``loss_scale``, ``hysteresis``, ...) is left out: training is bf16 or fp32 (``fp16``
   stays "auto" = off). ``steps_per_print``/``wall_clock_breakdown`` are ours (accelerate silences printing).
5. LoRA under ZeRO-3 is refused (:func:`check_supported`): merging adapters needs whole weights. ZeRO-2 is fine.

Under DeepSpeed (compared with our DDP/FSDP runs): the final ``save_pretrained`` folder holds the module's
weights in the compute dtype (bf16 with bf16 on — as the official folders; fp32 master weights live only in the
DeepSpeed checkpoints); resumable checkpoints (SFT ``checkpoint-N``, GRPO ``step_N``) are DeepSpeed's own format
and resume under the same ZeRO stage and number of processes (resume tested for both stages under ZeRO-3); with
bf16 the engine casts the model to bf16 (no autocast over fp32 weights). In fp32 the losses equal DDP's
(tests/test_deepspeed.py, relative 1e-3; measured ~1e-6 on DeepSpeed's CPU accelerator).

Under ZeRO-3 every rank must call each module the same number of times per forward (each call all-gathers
its parameters). All SFT rows and all spatial GRPO rows carry a video, so the ViT and the connector run on every
rank. VGGT runs once per group of equal-shaped videos elsewhere, which would differ between ranks whose
micro-batches mix frame sizes differently (reproduced on 2 CPU ranks: gloo aborts; NCCL would hang); with
partitioned parameters ``SpatialEncoder.forward`` therefore runs it once per video (tested:
``test_zero3_ranks_with_different_frame_sizes_train``). The cold start and
GRPO cannot share one DeepSpeed launch (accelerate allows one DeepSpeed plugin per process; the error names
``stages``); run them as two launches.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DeepSpeedSetupError",
    "ZERO3_INIT_KEY",
    "deepspeed_available",
    "deepspeed_launched",
    "launched_deepspeed_config",
    "zero3_init_requested",
    "check_zero3_init_flag",
    "check_supported",
    "whole_model_init",
    "deepspeed_plugin_for",
    "grpo_accelerator_kwargs",
    "zero_stage",
    "generation_context",
    "prepare_policy_and_reference",
    "prepare_reference_model",
    "deepspeed_json_of",
    "fill_auto_values",
    "launch_summary",
    "main",
]

ZERO3_INIT_KEY = "deepspeed_config.zero3_init_flag"
INSTALL_HINT = ("pip install -e '.[deepspeed]' (DS_BUILD_OPS=0: no ops are compiled at install; DeepSpeed "
                "JIT-builds what a run needs)")


class DeepSpeedSetupError(ValueError):
    """A DeepSpeed setting this project does not support, or that contradicts the stage's config."""


# --------------------------------------------------------------------------------------------------
# what was launched
# --------------------------------------------------------------------------------------------------


def deepspeed_available() -> bool:
    """True when the ``deepspeed`` package is installed (the ``[deepspeed]`` extra)."""
    return importlib.util.find_spec("deepspeed") is not None


def deepspeed_launched() -> bool:
    """True in a process started by ``accelerate launch`` with a DEEPSPEED config."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def launched_deepspeed_config() -> dict | None:
    """The DeepSpeed JSON this process was launched with (``ACCELERATE_DEEPSPEED_CONFIG_FILE``, relative to the
    working directory as accelerate reads it), as a dict; None when not launched with DeepSpeed or when the
    accelerate config gives its ZeRO settings inline instead of a file."""
    if not deepspeed_launched():
        return None
    path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if path in ("", "none"):
        return None
    return json.loads(Path(path).read_text())


def _launched_stage() -> int | None:
    ds = launched_deepspeed_config()
    if ds is not None:
        return int(ds.get("zero_optimization", {}).get("stage", 0))
    if deepspeed_launched():
        return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
    return None


def zero3_init_requested() -> bool:
    """Whether the launch asks for ``deepspeed.zero.Init`` at model construction: ZeRO-3 with
    ``zero3_init_flag`` true, or left out of the accelerate config (accelerate then defaults it to true)."""
    if _launched_stage() != 3:
        return False
    flag = os.environ.get("ACCELERATE_DEEPSPEED_ZERO3_INIT")
    return True if flag is None else flag.strip().lower() in ("true", "1", "yes")


def check_zero3_init_flag() -> None:
    """Raise :class:`DeepSpeedSetupError` naming ``deepspeed_config.zero3_init_flag`` when a ZeRO-3 launch
    asks for partitioned construction (module docstring, decision 1)."""
    if zero3_init_requested():
        raise DeepSpeedSetupError(
            f"{ZERO3_INIT_KEY} is true (or missing) in the accelerate config: partitioned construction "
            f"(deepspeed.zero.Init) is not supported here — Spatial-MLLM is assembled from two checkpoints "
            f"(Qwen2.5-VL + VGGT) by copying whole state dicts, and its strict loading and seeded init need whole "
            f"tensors. Set `zero3_init_flag: false` under deepspeed_config (as configs/accelerate/zero3.yaml does); "
            f"DeepSpeed then partitions the model when training starts.")


def check_supported(*, lora: bool = False) -> None:
    """Errors for combinations this project does not run under DeepSpeed, each naming the key to change.
    A no-op outside a DeepSpeed launch."""
    if not deepspeed_launched():
        return
    if not deepspeed_available():
        raise ImportError(f"the accelerate config asks for DeepSpeed (distributed_type: DEEPSPEED) but deepspeed "
                          f"is not installed: {INSTALL_HINT}")
    check_zero3_init_flag()
    if lora and _launched_stage() == 3:
        raise DeepSpeedSetupError(
            "lora_r > 0 under ZeRO-3 is not supported: merging the adapters into the saved model needs whole "
            "weights. Use configs/accelerate/zero2.yaml (or ddp/fsdp) for LoRA, or set lora_r: 0.")


@contextlib.contextmanager
def whole_model_init() -> Iterator[None]:
    """Build models whole inside this block, even when a ZeRO-3 config is active (decision 1).

    Hides transformers' registered DeepSpeed config (its ``is_deepspeed_zero3_enabled()`` turns ``zero.Init``
    on) for the duration and restores the same object afterwards. Raises first when the launch asks for
    ``zero3_init_flag: true``. A no-op without DeepSpeed."""
    check_zero3_init_flag()
    if not deepspeed_available():
        yield
        return
    from transformers.integrations import deepspeed as hf_ds

    # transformers keeps the active config only behind this module-level weakref (set/unset are public; the
    # object is not): read it, so that the very object its owner (TrainingArguments / DeepSpeedPlugin) holds
    # is put back
    held = hf_ds._hf_deepspeed_config_weak_ref
    if held is None or held() is None or not held().is_zero3():
        yield
        return
    keep_alive = held()  # the owner (TrainingArguments / the DeepSpeedPlugin) holds it; so do we, meanwhile
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_ds.set_hf_deepspeed_config(keep_alive)


# --------------------------------------------------------------------------------------------------
# a loop without a dataloader (GRPO): the Accelerator's DeepSpeed plugin
# --------------------------------------------------------------------------------------------------


def _fill(ds: dict, key: str, value: Any, source: str, why: str) -> None:
    """``ds[key] = value`` when absent or "auto"; a different explicit value is an error naming the key."""
    node, _, leaf = key.rpartition(".")
    target = ds
    for part in filter(None, node.split(".")):
        target = target.setdefault(part, {})
    have = target.get(leaf, "auto")
    if have == "auto":
        target[leaf] = value
    elif have != value:
        raise DeepSpeedSetupError(f"{source}: `{key}` is {have!r} but {why} gives {value!r}; set it to \"auto\"")


def deepspeed_plugin_for(*, micro_batch_size: int, gradient_accumulation_steps: int, max_grad_norm: float,
                         num_processes: int | None = None):
    """An accelerate ``DeepSpeedPlugin`` for a training loop that prepares no dataloader, or None when this
    process was not launched with DeepSpeed.

    ``accelerator.prepare`` can only resolve ``train_micro_batch_size_per_gpu: "auto"`` from a dataloader, and it
    fills ``gradient_clipping: "auto"`` with 1.0 whatever the loop clips at; so the launched JSON's "auto" values
    are written here: the micro-batch (rows per forward on one process), accumulation, the global batch
    (micro · accumulation · processes) and the clipping norm (0 = off). Explicit values in the JSON must agree.
    """
    if not deepspeed_launched():
        return None
    check_supported()
    if micro_batch_size < 1 or gradient_accumulation_steps < 1:
        raise ValueError(f"micro_batch_size {micro_batch_size} and gradient_accumulation_steps "
                         f"{gradient_accumulation_steps} must be >= 1")
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin()  # reads the launch's environment (config file, ZeRO-3 init flag, ...)
    ds = plugin.deepspeed_config
    world = num_processes or int(os.environ.get("WORLD_SIZE", "1"))
    source = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "the DeepSpeed config")
    _fill(ds, "train_micro_batch_size_per_gpu", micro_batch_size, source, "the stage's micro-batch")
    _fill(ds, "gradient_accumulation_steps", gradient_accumulation_steps, source,
          "the stage's gradient_accumulation_steps")
    _fill(ds, "train_batch_size", micro_batch_size * gradient_accumulation_steps * world, source,
          "micro-batch × accumulation × processes")
    _fill(ds, "gradient_clipping", float(max_grad_norm), source, "the stage's max_grad_norm")
    plugin.gradient_accumulation_steps = gradient_accumulation_steps
    plugin.gradient_clipping = float(max_grad_norm)
    return plugin


def grpo_accelerator_kwargs(cfg) -> dict[str, Any]:
    """``Accelerator`` keyword arguments for the GRPO loop: ``deepspeed_plugin`` (None without DeepSpeed) and
    ``cpu``. ``cfg`` is a GRPO config (``num_generations``, ``prompts_per_step``,
    ``gradient_accumulation_steps``, ``max_grad_norm``): each round's ``num_generations · prompts_per_step``
    completions per process are split into ``gradient_accumulation_steps`` micro-batches.

    ``cpu``: True without CUDA (accelerate then joins the launched processes over gloo), except under
    DeepSpeed, which accelerate ignores when ``cpu=True``; DeepSpeed runs on its CPU accelerator instead.

    Raises :class:`DeepSpeedSetupError` naming ``stages`` when an ``Accelerator`` already exists under DeepSpeed
    (the cold start's Trainer in the same launch): accelerate refuses a second DeepSpeed plugin per process."""
    import torch
    from accelerate import state

    if deepspeed_launched() and state.is_initialized():
        raise DeepSpeedSetupError(
            "stages: under DeepSpeed run the cold start and GRPO as two launches (`stages: [cold_start]`, then "
            "`stages: [grpo]` with `model: <output_dir>/cold_start/checkpoints/sft`; relaunching the same params "
            "also works, a finished cold start is reused): accelerate keeps one DeepSpeed config per process, and "
            "the cold start's SFT Trainer has set it up for its own batch sizes")
    n = cfg.num_generations * cfg.prompts_per_step
    plugin = deepspeed_plugin_for(micro_batch_size=n // cfg.gradient_accumulation_steps,
                                  gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                                  max_grad_norm=cfg.max_grad_norm)
    return {"deepspeed_plugin": plugin, "cpu": plugin is None and not torch.cuda.is_available()}


# --------------------------------------------------------------------------------------------------
# inside a prepared run
# --------------------------------------------------------------------------------------------------


def zero_stage(accelerator) -> int | None:
    """The ZeRO stage of a prepared (or at least constructed) ``Accelerator``; None without DeepSpeed."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    return int(accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage"])


def _zero3_offload(engine):
    """The object that owns a ZeRO-3 engine's per-module hooks (DeepSpeed's ``DeepSpeedZeRoOffload``)."""
    opt = getattr(engine, "optimizer", None)
    owner = getattr(opt, "parameter_offload", None) or opt
    if owner is None or not hasattr(owner, "forward_hooks") or not hasattr(owner, "_register_deepspeed_module"):
        import deepspeed

        raise RuntimeError(f"cannot find ZeRO-3's module hooks on this engine (deepspeed {deepspeed.__version__}); "
                           f"generation under ZeRO-3 needs a policy prepared with an optimizer")
    return owner


@contextlib.contextmanager
def generation_context(accelerator, model) -> Iterator[Any]:
    """``with generation_context(accelerator, model) as policy: policy.generate(...)``.

    Yields the unwrapped policy ready for ``generate`` (our ``SpatialMLLMForConditionalGeneration.generate``,
    which fuses VGGT features before transformers' generate). Without DeepSpeed or below ZeRO-3 it is
    ``accelerator.unwrap_model(model)`` and nothing else. Under ZeRO-3 the parameters are gathered whole for the
    block and ZeRO-3's fetch/release hooks are removed, then restored and the parameters re-partitioned on exit
    (also when the block raises) — decision 2 of the module docstring. Every rank must enter the block (the
    gather is a collective); inside, ranks may generate different numbers of tokens."""
    unwrapped = accelerator.unwrap_model(model)
    if zero_stage(accelerator) != 3:
        yield unwrapped
        return
    import deepspeed

    owner = _zero3_offload(model)
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        for hook in owner.forward_hooks + owner.backward_hooks:
            hook.remove()
        owner.forward_hooks, owner.backward_hooks = [], []
        try:
            yield unwrapped
        finally:
            owner._register_deepspeed_module(owner.module)
            coordinator = owner.get_param_coordinator() if hasattr(owner, "get_param_coordinator") else None
            if coordinator is not None and not coordinator.is_invalid_trace():
                coordinator._invalidate_trace()  # the recorded fetch order no longer matches the new hooks


def _fill_hidden_size_autos(accelerator, model) -> None:
    """The DeepSpeed buckets sized from the model (``reduce_bucket_size`` = h², ZeRO-3 prefetch 0.9·h² and
    persistence threshold 10·h, as HF's ``trainer_config_finalize``): accelerate looks for ``config.hidden_size``
    only, which a vision-language config keeps in ``text_config``."""
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    h = model.config.get_text_config().hidden_size
    zero = ds.setdefault("zero_optimization", {})
    for key, value in (("reduce_bucket_size", h * h), ("stage3_prefetch_bucket_size", int(0.9 * h * h)),
                       ("stage3_param_persistence_threshold", 10 * h)):
        if zero.get(key) == "auto":
            zero[key] = value


def prepare_policy_and_reference(accelerator, model, optimizer, scheduler, ref_model=None):
    """``accelerator.prepare(model, optimizer, scheduler)`` for a loop without a dataloader, plus GRPO's frozen
    reference: ``(model, optimizer, scheduler, ref_model)``.

    Under DeepSpeed the model-sized "auto" buckets are filled from ``text_config.hidden_size`` first (see
    :func:`deepspeed_plugin_for` for the batch-sized ones). The reference (None = no reference) comes back as
    :func:`prepare_reference_model` makes it. Both models must be whole (built under :func:`whole_model_init`
    or before the ``Accelerator``)."""
    if zero_stage(accelerator) is not None:
        _fill_hidden_size_autos(accelerator, model)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if ref_model is not None:
        ref_model = prepare_reference_model(accelerator, ref_model)
    return model, optimizer, scheduler, ref_model


def prepare_reference_model(accelerator, model):
    """GRPO's frozen reference after ``accelerator.prepare(policy, ...)`` (decision 3): under ZeRO-3 a
    DeepSpeed inference engine sharded like the policy (call it as the model: ``ref(**inputs)``); otherwise
    ``model`` itself. ``model`` must be whole (built under :func:`whole_model_init` or before the Accelerator)."""
    if zero_stage(accelerator) != 3:
        return model
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)  # "auto"s filled by prepare
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    config["zero_optimization"].pop("offload_optimizer", None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


# --------------------------------------------------------------------------------------------------
# config files
# --------------------------------------------------------------------------------------------------


def deepspeed_json_of(accelerate_config: str | os.PathLike, root: str | os.PathLike | None = None) -> Path | None:
    """The DeepSpeed JSON an accelerate YAML names (``deepspeed_config.deepspeed_config_file``, relative to
    ``root``, default the working directory as for ``accelerate launch``); None for non-DeepSpeed configs."""
    import yaml

    cfg = yaml.safe_load(Path(accelerate_config).read_text()) or {}
    if cfg.get("distributed_type") != "DEEPSPEED":
        return None
    name = (cfg.get("deepspeed_config") or {}).get("deepspeed_config_file")
    if name in (None, "none"):
        return None
    p = Path(name)
    return p if p.is_absolute() else Path(root or ".") / p


def fill_auto_values(ds_config: dict, *, micro_batch_size: int = 1, gradient_accumulation_steps: int = 1,
                     num_processes: int = 1, max_grad_norm: float = 1.0, bf16: bool = True,
                     hidden_size: int = 2048, learning_rate: float = 1e-5, weight_decay: float = 0.0,
                     warmup_steps: int = 1, total_steps: int = 100) -> dict:
    """A copy of a DeepSpeed config with every ``"auto"`` replaced as the trainers do (HF's
    ``trainer_config_process``/``trainer_config_finalize`` and accelerate's ``_prepare_deepspeed``): batch
    sizes, accumulation, clipping, bf16/fp16, the hidden-size-based buckets, optimizer/scheduler values.
    Raises ``ValueError`` naming a key whose "auto" this does not know."""
    out = copy.deepcopy(ds_config)
    known = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "train_batch_size": micro_batch_size * gradient_accumulation_steps * num_processes,
        "gradient_clipping": float(max_grad_norm),
        "bf16.enabled": bf16, "fp16.enabled": False,
        "zero_optimization.reduce_bucket_size": hidden_size * hidden_size,
        "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "zero_optimization.stage3_param_persistence_threshold": 10 * hidden_size,
        "optimizer.params.lr": learning_rate, "optimizer.params.weight_decay": weight_decay,
        "optimizer.params.betas": [0.9, 0.999], "optimizer.params.eps": 1e-8,
        "scheduler.params.warmup_min_lr": 0.0, "scheduler.params.warmup_max_lr": learning_rate,
        "scheduler.params.warmup_num_steps": warmup_steps, "scheduler.params.total_num_steps": total_steps,
    }

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif v == "auto":
                if prefix + k not in known:
                    raise ValueError(f"no value known for `{prefix + k}: auto`")
                node[k] = known[prefix + k]

    walk(out, "")
    return out


# --------------------------------------------------------------------------------------------------
# checking a launch before a long job
# --------------------------------------------------------------------------------------------------


def launch_summary(*, micro_batch_size: int = 1, gradient_accumulation_steps: int = 1,
                   max_grad_norm: float = 1.0) -> dict[str, Any]:
    """This process's DeepSpeed setup as the GRPO loop would resolve it (:func:`deepspeed_plugin_for`), checked
    by DeepSpeed's own config parser; ``{"deepspeed": False}`` outside a DeepSpeed launch. Raises the errors
    the trainers would raise (naming the key)."""
    if not deepspeed_launched():
        return {"deepspeed": False}
    plugin = deepspeed_plugin_for(micro_batch_size=micro_batch_size,
                                  gradient_accumulation_steps=gradient_accumulation_steps,
                                  max_grad_norm=max_grad_norm)
    import deepspeed
    from deepspeed.runtime.config import DeepSpeedConfig

    ds = plugin.deepspeed_config
    # DeepSpeed checks train_batch_size against the initialised world (1 here): recompute it for one process
    parsed = DeepSpeedConfig(fill_auto_values({**ds, "train_batch_size": "auto"}, micro_batch_size=micro_batch_size,
                                              gradient_accumulation_steps=gradient_accumulation_steps,
                                              max_grad_norm=max_grad_norm))
    zero = parsed.zero_config

    def device(offload) -> str:
        return "none" if offload is None else str(getattr(offload.device, "value", offload.device))

    return {"deepspeed": True, "deepspeed_version": deepspeed.__version__,
            "config_file": os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"),
            "stage": parsed.zero_optimization_stage, "zero3_init_flag": zero3_init_requested(),
            "offload_optimizer": device(zero.offload_optimizer), "offload_param": device(zero.offload_param),
            "gather_16bit_weights_on_model_save": bool(zero.gather_16bit_weights_on_model_save),
            "train_micro_batch_size_per_gpu": ds["train_micro_batch_size_per_gpu"],
            "gradient_accumulation_steps": ds["gradient_accumulation_steps"],
            "train_batch_size": ds["train_batch_size"], "gradient_clipping": ds["gradient_clipping"],
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def main(argv: list[str] | None = None) -> int:
    """``accelerate launch --config_file configs/accelerate/zero3.yaml -m spatial_mllm.train.distributed``:
    print how this launch resolves (JSON on rank 0), or the error a trainer would raise (exit code 2)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m spatial_mllm.train.distributed",
                                description="check a DeepSpeed launch (run it under accelerate launch)")
    p.add_argument("--micro-batch-size", type=int, default=1)
    p.add_argument("--gradient-accumulation-steps", type=int, default=1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    a = p.parse_args(argv)
    try:
        summary = launch_summary(micro_batch_size=a.micro_batch_size,
                                 gradient_accumulation_steps=a.gradient_accumulation_steps,
                                 max_grad_norm=a.max_grad_norm)
    except (DeepSpeedSetupError, ImportError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    from spatial_mllm.errors import close_process_group

    close_process_group()  # no gloo threads left running at exit (they can abort a finished rank)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
