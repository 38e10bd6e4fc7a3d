"""SFT stage on the tiny model: config files, overfitting a fixed batch, the freeze plan, two learning rates,
resume = uninterrupted run, LoRA, and two `accelerate launch` processes = one process on the same global batch."""

from pathlib import Path

import pytest
import torch
from test_collate import make_videos_and_rows
from transformers import TrainerCallback

from spatial_mllm.config import ConfigError, load_params
from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
from spatial_mllm.train.sft import (
    SFTConfig,
    SFTResult,
    build_model_and_processor,
    compare_parameters,
    load_sft_checkpoint,
    parameter_group_of,
    run_sft,
    train_sft,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    make_videos_and_rows(root)  # 3 videos of 3 sizes, 6 rows
    return root


def cfg_for(out, data_root, **kw) -> SFTConfig:
    base = dict(output_dir=str(out), data_dir=str(data_root), train_file="train.jsonl", build_data_if_missing=False,
                num_frames=4, logging_steps=1, save_steps=1000, warmup_ratio=0.0, video_cache_size=8,
                per_device_train_batch_size=2, global_batch_size=2)
    return SFTConfig(**{**base, **kw})


def trainable_state(folder) -> dict[str, torch.Tensor]:
    model = SpatialMLLMForConditionalGeneration.from_pretrained(folder)
    model.set_trainable(verbose=False)  # the default plan = the one trained in these tests
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def test_params_files_and_rejections():
    tiny = load_params(ROOT / "params/tiny/03_sft.yaml", schema=SFTConfig)
    assert tiny == SFTConfig()  # the yaml is the dataclass defaults
    paper = load_params(ROOT / "params/paper/03_sft.yaml", schema=SFTConfig)
    assert (paper.learning_rate, paper.mm_projector_lr, paper.weight_decay, paper.warmup_ratio) == (7e-6, 2e-5, 0.1, 0.03)
    assert (paper.lr_scheduler_type, paper.num_train_epochs, paper.global_batch_size, paper.max_length,
            paper.num_frames, paper.precision) == ("cosine", 1.0, 48, 8192, 16, "bf16")
    assert paper.gradient_accumulation_steps(8) == 6 and paper.gradient_accumulation_steps(1) == 48
    with pytest.raises(ValueError, match="not a multiple"):
        paper.gradient_accumulation_steps(5)
    with pytest.raises(ConfigError, match="lora_r > 0 puts adapters on the LLM"):
        load_params(ROOT / "params/tiny/03_sft.yaml", ["lora_r=8", "train_llm=false"], schema=SFTConfig)
    with pytest.raises(ValueError, match="global_batch_size 6 is not a multiple of per_device_train_batch_size 4"):
        SFTConfig(global_batch_size=6)
    with pytest.raises(ValueError, match="trains nothing"):
        SFTConfig(train_merger=False, train_connector=False, train_llm=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="bf16 needs a CUDA device"):
            paper.use_bf16()
    assert [parameter_group_of(n) for n in (
        "model.visual.blocks.0.attn.qkv.weight", "model.visual.merger.mlp.0.weight", "connector.mlp.0.weight",
        "spatial_encoder.vggt_model.aggregator.x", "base_model.model.model.language_model.layers.0.mlp.up_proj"
        ".lora_A.default.weight", "base_model.model.connector.modules_to_save.default.mlp.0.weight", "lm_head.weight",
    )] == ["vision", "merger", "connector", "spatial", "llm", "connector", "llm"]


def test_overfits_a_fixed_batch_trains_only_the_plan_and_saves_a_loadable_folder(data, tmp_path):
    root = tmp_path / "fixed"
    root.mkdir()
    make_videos_and_rows(root, sizes=((8, 56, 56), (8, 84, 112)), rows_per_video=2)  # 4 rows = one batch
    cfg = cfg_for(tmp_path / "run", root, per_device_train_batch_size=4, global_batch_size=4, max_steps=30,
                  learning_rate=3e-3, mm_projector_lr=6e-3, lr_scheduler_type="constant")
    model, processor = build_model_and_processor(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = train_sft(cfg, model=model, processor=processor)

    logs = [h for h in res.log_history if "loss" in h]
    assert res.global_step == 30 and [h["step"] for h in logs] == list(range(1, 31))
    assert min(h["loss"] for h in logs) < 0.5 * logs[0]["loss"], [round(h["loss"], 3) for h in logs]
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"]
    for h in logs:  # the two learning rates, grad norm and throughput are logged
        assert h["lr/llm"] == pytest.approx(3e-3) and h["lr/projector"] == pytest.approx(6e-3)
        assert h["grad_norm"] > 0 and h["tokens_per_second"] > 0

    parts = {r["part"]: r for r in compare_parameters(before, model)}
    assert set(parts) == {"vision", "merger", "spatial", "connector", "llm"}
    for name, r in parts.items():
        assert r["trainable_changed"] == r["trainable"], name  # every trained tensor moved
        assert r["frozen_identical"] == r["frozen"], name  # every frozen one is bit-identical
    assert parts["vision"]["trainable"] == parts["spatial"]["trainable"] == 0
    assert parts["vision"]["frozen"] > 0 and parts["spatial"]["frozen"] > 0
    assert min(parts[p]["trainable"] for p in ("merger", "connector", "llm")) > 0

    out = cfg.checkpoint_dir()
    assert SFTResult.read(out).global_step == 30 and (out / "sft_config.json").is_file()
    loaded, proc2 = load_sft_checkpoint(out)
    assert proc2.num_frames == 4 and proc2.max_pixels == cfg.max_pixels
    trained = dict(model.named_parameters())
    for n, p in loaded.named_parameters():
        assert torch.equal(p, trained[n].detach()), n


class StopAt(TrainerCallback):
    """Interrupt training after ``step`` optimizer steps (the checkpoint of that step is written first)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def test_resume_equals_an_uninterrupted_run(data, tmp_path):
    kw = dict(max_steps=10, shuffle=True, warmup_ratio=0.2, learning_rate=2e-3)  # 6 rows / batch 2: resumes mid-epoch
    straight = train_sft(cfg_for(tmp_path / "a", data, **kw))
    cfg = cfg_for(tmp_path / "b", data, save_steps=5, **kw)
    first = train_sft(cfg, callbacks=[StopAt(5)])
    assert first.global_step == 5 and (cfg.checkpoint_dir() / "checkpoint-5").is_dir()
    second = train_sft(cfg)
    assert second.global_step == 10 and second.stats["resumed_from"] == "checkpoint-5"
    a, b = trainable_state(straight.output_dir), trainable_state(second.output_dir)
    for n in a:
        torch.testing.assert_close(b[n], a[n], atol=1e-6, rtol=1e-5, msg=n)
    la = [h["loss"] for h in straight.log_history if "loss" in h]
    lb = [h["loss"] for h in second.log_history if "loss" in h]
    assert lb == pytest.approx(la, rel=1e-5)


@pytest.mark.parametrize("connector", ["mlp_add", "none"])
def test_encoder_cache_equals_raw_pixels(data, tmp_path, connector):
    """The second path: SFT reusing the frozen ViT's and VGGT's outputs per video (encoder_cache) trains to the
    same weights and losses as encoding the raw pixels every step (3 videos of 3 sizes, 4 epochs)."""
    kw = dict(max_steps=12, shuffle=True, learning_rate=2e-3, connector=connector)
    raw = train_sft(cfg_for(tmp_path / "raw", data, **kw))
    memo = train_sft(cfg_for(tmp_path / "memo", data, encoder_cache=True, **kw))
    assert "encoder_cache_hits" not in raw.stats
    assert memo.stats["encoder_cache_misses"] == 3 and memo.stats["encoder_cache_hits"] == 12 * 2 - 3
    a, b = trainable_state(raw.output_dir), trainable_state(memo.output_dir)
    assert set(a) == set(b) and any(n.startswith("connector.") for n in a) == (connector != "none")
    for n in a:
        torch.testing.assert_close(b[n], a[n], atol=1e-6, rtol=1e-5, msg=n)
    la = [h["loss"] for h in raw.log_history if "loss" in h]
    assert [h["loss"] for h in memo.log_history if "loss" in h] == pytest.approx(la, rel=1e-6)
    with pytest.raises(ValueError, match="encoder_cache"):
        cfg_for(tmp_path / "x", data, encoder_cache=True, train_vision=True)


def test_lora_trains_adapters_and_saves_a_merged_model(data, tmp_path):
    cfg = cfg_for(tmp_path / "lora", data, max_steps=3, lora_r=4, learning_rate=1e-2)
    model, processor = build_model_and_processor(cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = train_sft(cfg, model=model, processor=processor)
    assert res.global_step == 3
    merged = SpatialMLLMForConditionalGeneration.from_pretrained(res.output_dir)  # a plain folder, no peft
    after = dict(merged.named_parameters())
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(after[q], before[q])  # W + B·A·alpha/r
    for n in ("model.language_model.embed_tokens.weight", "model.visual.blocks.0.attn.qkv.weight",
              "model.language_model.layers.0.input_layernorm.weight"):
        assert torch.equal(after[n], before[n]), n  # frozen under LoRA
    for n in ("connector.mlp.0.weight", "model.visual.merger.mlp.0.weight"):
        assert not torch.equal(after[n], before[n]), n  # trained in full beside the adapters


@pytest.mark.slow
def test_two_accelerate_processes_equal_one_process_on_the_same_global_batch(data, tmp_path, monkeypatch):
    """`accelerate launch --config_file ddp.yaml --num_processes 2` on the CPU (through run_sft: torchrun +
    gloo) vs one process with gradient accumulation 2: plain SGD, so equal weights after 2 steps mean
    equal gradients at both steps. (FSDP/DeepSpeed need GPUs: on the CPU the Trainer runs them as DDP.)"""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    kw = dict(per_device_train_batch_size=1, global_batch_size=2, max_steps=2, optim="sgd", learning_rate=0.5,
              mm_projector_lr=1.0, weight_decay=0.0, lr_scheduler_type="constant", max_grad_norm=0.0,
              shuffle=False)
    one = train_sft(cfg_for(tmp_path / "one", data, **kw))
    assert (one.num_processes, one.gradient_accumulation_steps, one.distributed_type) == (1, 2, "NO")
    a = trainable_state(one.output_dir)
    init = {n: p for n, p in build_model_and_processor(cfg_for(tmp_path, data))[0].named_parameters()}
    assert all(not torch.equal(a[n], init[n].detach()) for n in a)
    g1 = [h["grad_norm"] for h in one.log_history if "grad_norm" in h]
    assert len(g1) == 2
    two = run_sft(cfg_for(tmp_path / "two", data, num_processes=2,
                          accelerate_config=str(ROOT / "configs/accelerate/ddp.yaml"), **kw))
    dist = "MULTI_GPU" if torch.cuda.is_available() else "MULTI_CPU"  # DDP; over gloo on the CPU
    assert (two.num_processes, two.gradient_accumulation_steps, two.distributed_type) == (2, 1, dist)
    g2 = [h["grad_norm"] for h in two.log_history if "grad_norm" in h]
    assert g2 == pytest.approx(g1, rel=1e-5)
    b = trainable_state(two.output_dir)
    for n in a:
        torch.testing.assert_close(b[n], a[n], atol=1e-6, rtol=1e-5, msg=n)


def test_model_predictor_runs_the_eval_loop_and_overwrites_stale_predictions(data, tmp_path):
    from spatial_mllm.eval.model_predict import evaluate_model_vsibench, markdown_table, scores_table
    from spatial_mllm.eval.vsibench import EvalConfig

    rows = [{"id": i, "dataset": "videos", "scene_name": f"v{i % 3}", "question_type": "object_counting",
             "question": "How many chair(s) are in this room?", "ground_truth": "2", "options": None}
            for i in range(3)]
    cfg = cfg_for(tmp_path, data)
    model, processor = build_model_and_processor(cfg)
    ec = EvalConfig(output_dir=str(tmp_path / "eval"), video_root=str(data), prompt_style="sft", num_frames=4,
                    batch_size=2, max_new_tokens=3)
    (tmp_path / "eval").mkdir()
    stale = '{"key": "0", "fingerprint": "x", "prediction": "2"}\n'
    (tmp_path / "eval" / "predictions.shard0.jsonl").write_text(stale)  # another model's answers
    scores = evaluate_model_vsibench(model, processor, ec, rows=rows)
    preds = (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    assert scores["num_questions"] == 3 and len(preds) == 3 and stale.strip() not in preds
    table = scores_table({"a": scores, "b": scores})
    assert list(table.columns) == ["a", "b"] and table.index[-1] == "overall (micro)"
    assert markdown_table(table).splitlines()[0] == "| task | a | b |"
