"""DeepSpeed ZeRO-2/3 (spatial_mllm/train/distributed.py and configs/accelerate/zero*).

CPU, fast: every accelerate config parses with accelerate's own loader; each DeepSpeed JSON is the official one
where it should be and parses with DeepSpeed's own config class once its "auto" values are filled; the helpers
(errors naming the key, the GRPO plugin, whole-model construction, no-ops without DeepSpeed).
CPU, slow (``accelerate launch`` subprocesses, ~10 s each): each DeepSpeed config resolves in a launched process,
``zero3_init_flag: true`` is refused there, the SFT entry point starts under ZeRO-3.
GPU (``-m gpu``; CUDA, or DeepSpeed's CPU accelerator with ``SPATIAL_MLLM_DEEPSPEED_TESTS_ON_CPU=1``, ~4 min on 2
cores): 5 SFT steps and 2 GRPO steps of the tiny model under ZeRO-2 and ZeRO-3 equal the DDP run (fp32).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spatial_mllm.train.distributed import (
    DeepSpeedSetupError,
    check_supported,
    check_zero3_init_flag,
    deepspeed_available,
    deepspeed_json_of,
    deepspeed_plugin_for,
    fill_auto_values,
    generation_context,
    grpo_accelerator_kwargs,
    prepare_policy_and_reference,
    whole_model_init,
    zero_stage,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs/accelerate").glob("*.yaml"))
DS_CONFIGS = ["zero2", "zero3", "zero3_offload"]
needs_deepspeed = pytest.mark.skipif(not deepspeed_available(),
                                     reason="deepspeed is not installed (the [deepspeed] extra)")

# scripts/training/zero3.json of diankun-wu/Spatial-MLLM (master): its zero_optimization section
OFFICIAL_ZERO3 = {"stage": 3, "overlap_comm": True, "contiguous_gradients": True, "sub_group_size": 1e9,
                  "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                  "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 1e9,
                  "stage3_max_reuse_distance": 1e9, "stage3_gather_16bit_weights_on_model_save": True}


def _json_of(name: str) -> dict:
    return json.loads((ROOT / f"configs/accelerate/{name}.json").read_text())


@pytest.fixture
def ds_env(monkeypatch):
    """Set the environment `accelerate launch` gives a DeepSpeed rank: ds_env("zero3", zero3_init="false")."""
    from transformers.integrations import unset_hf_deepspeed_config

    def set_env(json_name: str, zero3_init: str | None = "false", path: Path | None = None):
        monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE",
                           str(path or ROOT / f"configs/accelerate/{json_name}.json"))
        monkeypatch.setenv("WORLD_SIZE", "1")
        if zero3_init is None:
            monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO3_INIT", raising=False)
        else:
            monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO3_INIT", zero3_init)

    yield set_env
    unset_hf_deepspeed_config()  # DeepSpeedPlugin() registers its config with transformers


# ---- config files --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_accelerate_config_parses_with_accelerates_loader(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type in ("NO", "MULTI_GPU", "FSDP", "DEEPSPEED"), path.name
    assert cfg.compute_environment == "LOCAL_MACHINE"
    if cfg.distributed_type == "DEEPSPEED":
        ds = deepspeed_json_of(path, ROOT)
        assert ds == ROOT / cfg.deepspeed_config["deepspeed_config_file"] and ds.is_file(), ds
        assert json.loads(ds.read_text())["zero_optimization"]["stage"] in (2, 3)
        assert cfg.deepspeed_config["zero3_init_flag"] is False  # distributed.py, decision 1
    else:
        assert deepspeed_json_of(path, ROOT) is None
    assert {p.stem for p in CONFIGS} >= {"ddp", "fsdp", "single_gpu", *DS_CONFIGS}


def test_zero3_jsons_are_the_official_ones_where_they_should_be():
    z3 = _json_of("zero3")
    assert z3["zero_optimization"] == OFFICIAL_ZERO3
    assert z3["gradient_clipping"] == "auto"  # ours: max_grad_norm (the official JSON has none; module docstring)
    assert all(z3[k] == "auto" for k in ("train_micro_batch_size_per_gpu", "train_batch_size",
                                         "gradient_accumulation_steps"))
    off = _json_of("zero3_offload")
    assert "optimizer" not in off and "scheduler" not in off  # the trainers' own AdamW groups and schedules
    zo = dict(off["zero_optimization"])
    assert zo.pop("offload_optimizer") == {"device": "cpu", "pin_memory": True}
    assert zo.pop("offload_param") == {"device": "cpu", "pin_memory": True}
    assert zo == OFFICIAL_ZERO3
    for name in DS_CONFIGS:
        assert "optimizer" not in _json_of(name) and _json_of(name)["bf16"] == {"enabled": "auto"}


@needs_deepspeed
@pytest.mark.parametrize("name", DS_CONFIGS)
def test_deepspeed_jsons_parse_with_deepspeeds_config_once_autos_are_filled(name):
    from deepspeed.runtime.config import DeepSpeedConfig

    filled = fill_auto_values(_json_of(name), micro_batch_size=2, gradient_accumulation_steps=3,
                              max_grad_norm=0.5, bf16=False)
    parsed = DeepSpeedConfig(filled)
    stage = 2 if name == "zero2" else 3
    assert parsed.zero_optimization_stage == stage
    assert (parsed.train_micro_batch_size_per_gpu, parsed.gradient_accumulation_steps,
            parsed.train_batch_size, parsed.gradient_clipping) == (2, 3, 6, 0.5)
    offloaded = parsed.zero_config.offload_optimizer is not None
    assert offloaded == (name == "zero3_offload") == (parsed.zero_config.offload_param is not None)
    assert parsed.zero_config.gather_16bit_weights_on_model_save == (stage == 3)  # save_pretrained of whole tensors
    with pytest.raises(ValueError, match="no value known for `zero_optimization.x: auto`"):
        fill_auto_values({"zero_optimization": {"x": "auto"}})


# ---- helpers -------------------------------------------------------------------------------------------------
def test_without_deepspeed_the_helpers_are_no_ops(monkeypatch):
    from accelerate import Accelerator

    from spatial_mllm.train.grpo import GRPOConfig

    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    check_zero3_init_flag()
    check_supported(lora=True)
    assert deepspeed_plugin_for(micro_batch_size=2, gradient_accumulation_steps=1, max_grad_norm=1.0) is None
    assert grpo_accelerator_kwargs(GRPOConfig()) == {"deepspeed_plugin": None, "cpu": not torch.cuda.is_available()}
    with whole_model_init():
        pass
    acc = Accelerator(cpu=True)
    model, ref = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    pmodel, _, _, pref = prepare_policy_and_reference(acc, model, opt, sched, ref)
    assert zero_stage(acc) is None and pref is ref
    with generation_context(acc, pmodel) as policy:
        assert policy is acc.unwrap_model(pmodel)
        assert torch.equal(policy.weight, model.weight)


@needs_deepspeed
def test_zero3_init_flag_true_or_missing_is_refused_naming_the_key(ds_env):
    for flag in ("true", None):  # accelerate defaults a missing flag to true under ZeRO-3
        ds_env("zero3", zero3_init=flag)
        with pytest.raises(DeepSpeedSetupError, match=r"deepspeed_config\.zero3_init_flag"):
            check_zero3_init_flag()
        with pytest.raises(DeepSpeedSetupError, match="zero3_init_flag"), whole_model_init():
            pass
    ds_env("zero3", zero3_init="false")
    check_zero3_init_flag()
    ds_env("zero2", zero3_init="true")  # the flag only means something under ZeRO-3
    check_zero3_init_flag()


@needs_deepspeed
def test_lora_is_refused_under_zero3_only(ds_env):
    ds_env("zero3")
    with pytest.raises(DeepSpeedSetupError, match="lora_r > 0 under ZeRO-3"):
        check_supported(lora=True)
    check_supported(lora=False)
    ds_env("zero2")
    check_supported(lora=True)


@needs_deepspeed
def test_the_grpo_plugin_carries_micro_batch_accumulation_and_clipping(ds_env, tmp_path, monkeypatch):
    import accelerate.state

    from spatial_mllm.train.grpo import GRPOConfig

    ds_env("zero3")
    monkeypatch.setattr(accelerate.state, "is_initialized", lambda: False)  # other tests build Accelerators
    cfg = GRPOConfig(num_generations=4, prompts_per_step=2, gradient_accumulation_steps=2, max_grad_norm=0.5)
    kw = grpo_accelerator_kwargs(cfg)
    assert kw["cpu"] is False  # accelerate ignores DeepSpeed when cpu=True
    ds = kw["deepspeed_plugin"].deepspeed_config
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"],
            ds["gradient_clipping"]) == (4, 2, 8, 0.5)
    assert ds["zero_optimization"]["stage"] == 3
    off = deepspeed_plugin_for(micro_batch_size=1, gradient_accumulation_steps=1, max_grad_norm=0.0)
    assert off.deepspeed_config["gradient_clipping"] == 0.0  # 0 = no clipping (accelerate would put 1.0)
    bad = {**_json_of("zero3"), "train_micro_batch_size_per_gpu": 3}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    ds_env("bad", path=tmp_path / "bad.json")
    with pytest.raises(DeepSpeedSetupError, match="`train_micro_batch_size_per_gpu` is 3 but the stage's micro-batch"):
        grpo_accelerator_kwargs(cfg)
    monkeypatch.setattr(accelerate.state, "is_initialized", lambda: True)  # e.g. the cold start's Trainer ran
    with pytest.raises(DeepSpeedSetupError, match=r"stages: under DeepSpeed run the cold start and GRPO as two"):
        grpo_accelerator_kwargs(cfg)


@needs_deepspeed
def test_whole_model_init_builds_the_ddp_model_under_an_active_zero3_config(tok):
    """A live ZeRO-3 config makes transformers build Qwen's ViT under zero.Init (partitioned, initialised another
    way); inside whole_model_init the tiny model is the one DDP builds, and the config is back afterwards."""
    from transformers.integrations import (
        HfDeepSpeedConfig,
        is_deepspeed_zero3_enabled,
        unset_hf_deepspeed_config,
    )

    from spatial_mllm.models.tiny import tiny_model

    want = tiny_model(tok, seed=3).state_dict()
    live = HfDeepSpeedConfig(fill_auto_values(_json_of("zero3")))
    try:
        assert is_deepspeed_zero3_enabled()
        with whole_model_init():
            assert not is_deepspeed_zero3_enabled()
            got = tiny_model(tok, seed=3).state_dict()
        assert is_deepspeed_zero3_enabled()
    finally:
        unset_hf_deepspeed_config()
        del live
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


# ---- launched processes --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(config: str | Path, *args: str, timeout: int = 600, extra: tuple = ()) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file <config> --num_processes 1 [extra] <args>`` from the project root."""
    path = config if isinstance(config, Path) else ROOT / f"configs/accelerate/{config}.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(path), "--num_processes", "1",
           "--main_process_port", str(_free_port()), *extra, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPATIAL_MLLM_ROOT": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize("name", DS_CONFIGS)
def test_each_deepspeed_config_resolves_in_a_launched_process(name):
    proc = _launch(name, "-m", "spatial_mllm.train.distributed", "--micro-batch-size", "4",
                   "--gradient-accumulation-steps", "2", "--max-grad-norm", "0.5", timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["deepspeed"] is True and got["config_file"] == f"configs/accelerate/{name}.json"
    assert (got["stage"], got["zero3_init_flag"]) == (2 if name == "zero2" else 3, False)
    assert got["offload_optimizer"] == got["offload_param"] == ("cpu" if name == "zero3_offload" else "none")
    assert (got["train_micro_batch_size_per_gpu"], got["gradient_accumulation_steps"], got["train_batch_size"],
            got["gradient_clipping"]) == (4, 2, 8, 0.5)


@pytest.mark.slow
@needs_deepspeed
def test_a_launch_with_zero3_init_flag_true_is_refused_naming_the_key(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs/accelerate/zero3.yaml").read_text())
    cfg["deepspeed_config"]["zero3_init_flag"] = True
    (tmp_path / "z3init.yaml").write_text(yaml.safe_dump(cfg))
    proc = _launch(tmp_path / "z3init.yaml", "-m", "spatial_mllm.train.distributed", timeout=180)
    assert proc.returncode != 0
    assert "deepspeed_config.zero3_init_flag is true" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
@needs_deepspeed
def test_the_sft_entry_point_starts_under_zero3():
    proc = _launch("zero3", "-m", "spatial_mllm.train.sft", "--help", timeout=180)
    assert proc.returncode == 0 and "--set KEY=VALUE" in proc.stdout, proc.stderr[-3000:]


# ---- training equals DDP (GPU) -------------------------------------------------------------------------------
ON_CPU = os.environ.get("SPATIAL_MLLM_DEEPSPEED_TESTS_ON_CPU") == "1"
needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() or ON_CPU),
                               reason="needs CUDA (or SPATIAL_MLLM_DEEPSPEED_TESTS_ON_CPU=1: DeepSpeed's CPU accelerator)")
# fp32 everywhere (no autocast): the ZeRO runs must then agree with DDP up to reduction order; Adam turns the
# tiny gradient differences of near-zero gradients into weight differences of up to ~1e-4 after a few steps
LOSS_RTOL, WEIGHT_ATOL = 1e-3, 1e-3


def _train(stage: str, config: str, params: dict, out: Path) -> None:
    name = "03_sft" if stage == "sft" else "04_grpo"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.yaml").write_text(yaml.safe_dump(params))
    proc = _launch(config, "-m", f"spatial_mllm.train.{stage}", str(out / f"{name}.yaml"),
                   extra=("--mixed_precision", "no"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from test_collate import make_videos_and_rows

    root = tmp_path_factory.mktemp("ds_data")
    make_videos_and_rows(root)  # 3 videos of 3 sizes, 6 rows
    return root


def _sft_params(out: Path, data: Path) -> dict:
    # 1 row per forward, accumulation 2: the DeepSpeed JSON's "auto"s come from the TrainingArguments
    return dict(output_dir=str(out), data_dir=str(data), train_file="train.jsonl", build_data_if_missing=False,
                num_frames=4, per_device_train_batch_size=1, global_batch_size=2, max_steps=5, logging_steps=1,
                save_steps=1000, warmup_ratio=0.0, shuffle=False, precision="fp32", video_cache_size=8, seed=0)


def _grpo_params(out: Path, data: Path) -> dict:
    # spatial rows with videos (VGGT fused at generation and in the loss), G = 4, 2 micro-batches per step
    return dict(output_dir=str(out), task="spatial", model="tiny", stages=["grpo"], train_file=str(data / "train.jsonl"),
                video_root=str(data), num_frames=4, num_generations=4, prompts_per_step=1, max_new_tokens=8,
                temperature=1.0, gradient_accumulation_steps=2, beta=0.04, learning_rate=1e-3, max_steps=2,
                save_steps=2, resume=False, mixed_precision="no", seed=0,
                # the random tiny model never answers right: digit_fraction gives every group a reward spread
                reward_funcs=["digit_fraction", "format", "accuracy", "mra"])


def _sft_log(out: Path) -> tuple[list[float], list[float], str]:
    from spatial_mllm.train.sft import SFTResult

    res = SFTResult.read(out / "checkpoints/sft")
    steps = [h for h in res.log_history if "loss" in h and "grad_norm" in h]  # per-step logs
    return [h["loss"] for h in steps], [h["grad_norm"] for h in steps], res.distributed_type


def _grpo_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "checkpoints/grpo/log.jsonl").read_text().splitlines()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration

    return SpatialMLLMForConditionalGeneration.from_pretrained(folder).state_dict()  # strict: every key


@pytest.fixture(scope="module")
def ddp_runs(videos, tmp_path_factory):
    """The DDP baseline of both stages (ddp.yaml, one process), run once for the parametrized tests."""
    base = tmp_path_factory.mktemp("ddp")
    _train("sft", "ddp", _sft_params(base / "sft", videos), base / "sft")
    _train("grpo", "ddp", _grpo_params(base / "grpo", videos), base / "grpo")
    return base


@pytest.mark.gpu
@needs_deepspeed
@needs_gpu
@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_gpu_five_sft_steps_under_zero_equal_ddp(config, videos, ddp_runs, tmp_path):
    _train("sft", config, _sft_params(tmp_path, videos), tmp_path)
    loss, gnorm, dist = _sft_log(tmp_path)
    want_loss, want_gnorm, _ = _sft_log(ddp_runs / "sft")
    assert dist == "DEEPSPEED" and len(loss) == 5
    assert loss == pytest.approx(want_loss, rel=LOSS_RTOL)
    assert gnorm == pytest.approx(want_gnorm, rel=LOSS_RTOL)
    got, want = _weights(tmp_path / "checkpoints/sft"), _weights(ddp_runs / "sft/checkpoints/sft")
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=WEIGHT_ATOL, rtol=0, msg=k)


@pytest.mark.gpu
@needs_deepspeed
@needs_gpu
@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_gpu_two_grpo_steps_under_zero_equal_ddp(config, videos, ddp_runs, tmp_path):
    """Also: generation under ZeRO-3 used the whole policy with VGGT fused (the sampled tokens' log-probs equal
    the loss forward's), and the reference / clipping / saving went through DeepSpeed."""
    _train("grpo", config, _grpo_params(tmp_path, videos), tmp_path)
    got, want = _grpo_log(tmp_path), _grpo_log(ddp_runs / "grpo")
    assert [r["step"] for r in got] == [1, 2]
    assert all(w["grad_norm"] > 0 for w in want) and want[1]["kl"] > 0  # a real update, not zero advantages
    assert (tmp_path / "checkpoints/grpo/step_2/zero_to_fp32.py").is_file()  # saved by the DeepSpeed engine
    for g, w in zip(got, want):
        assert g["reward"] == pytest.approx(w["reward"], abs=1e-6)  # the same completions were sampled
        for key in ("loss", "kl", "grad_norm", "entropy"):
            assert g[key] == pytest.approx(w[key], rel=LOSS_RTOL, abs=1e-6), (key, g[key], w[key])
        assert g["sampling_logp_max_diff"] < 1e-3
    final, base = _weights(tmp_path / "checkpoints/grpo/final"), _weights(ddp_runs / "grpo/checkpoints/grpo/final")
    for k in base:
        torch.testing.assert_close(final[k], base[k], atol=WEIGHT_ATOL, rtol=0, msg=k)



@pytest.mark.slow
@needs_deepspeed
@pytest.mark.skipif(torch.cuda.is_available(), reason="2 ranks on DeepSpeed's CPU accelerator (a 1-GPU node "
                    "cannot hold 2 NCCL ranks)")
def test_zero3_ranks_with_different_frame_sizes_train(tmp_path):
    """Rank 0's micro-batch holds two videos of one size, rank 1's two sizes. VGGT used to run once per group of
    equal shapes (1 call on rank 0, 2 on rank 1): ZeRO-3's per-call all-gathers then mismatched and the run
    aborted (gloo; NCCL hangs). Under ZeRO-3 VGGT now runs once per video, the same count on every rank."""
    from test_collate import make_videos_and_rows

    from spatial_mllm.data import formats

    _, recs = make_videos_and_rows(tmp_path, sizes=((4, 56, 56), (4, 84, 112)), rows_per_video=3)
    a, b = [r for r in recs if r["video"].endswith("v0.mp4")], [r for r in recs if r["video"].endswith("v1.mp4")]
    formats.write_jsonl([a[0], a[1], a[2], b[0]], tmp_path / "train.jsonl")  # rank r reads rows r, r + 2
    params = dict(_sft_params(tmp_path / "out", tmp_path), per_device_train_batch_size=2, global_batch_size=4,
                  max_steps=1)
    (tmp_path / "03_sft.yaml").write_text(yaml.safe_dump(params))
    proc = _launch("zero3", "-m", "spatial_mllm.train.sft", str(tmp_path / "03_sft.yaml"),
                   extra=("--num_processes", "2", "--mixed_precision", "no"), timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    _, _, distributed = _sft_log(tmp_path / "out")
    assert distributed == "DEEPSPEED"
