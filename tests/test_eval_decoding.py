"""Decoding settings of the evaluation: the official ones (Spatial-MLLM's eval scripts) and lmms-eval's greedy
ones, their token budgets, the guard against cutting reasoning outputs, seeding, and the resume fingerprint.

Official values: diankun-wu/Spatial-MLLM ``master`` ``src/evaluation/vsibench/eval_vsibench.py``
(``inference_batch``: ``max_new_tokens=1024, do_sample=True, temperature=0.1, top_p=0.001``) and
``src/evaluation/scanqa/eval_scanqa.py`` (the same with ``max_new_tokens=256``); branch ``v1.0``
``evaluate/model.py`` (``ModelConfig``: ``temperature 0.1, top_p 0.001, max_tokens 1024``). lmms-eval's
``vsibench`` ``_default_template_yaml``: ``max_new_tokens 16``, ``do_sample false``, ``num_beams 1``.
"""

import pytest
import torch

from spatial_mllm.config import ConfigError
from spatial_mllm.eval import loop
from spatial_mllm.eval.baselines import FrequencyBaseline
from spatial_mllm.eval.cli import build_eval_config, build_parser
from spatial_mllm.eval.model_predict import ModelPredictor, batch_seed
from spatial_mllm.eval.vsibench import DECODINGS, EvalConfig, evaluate_vsibench


class LocalState:
    process_index, num_processes, is_main_process = 0, 1, True

    def wait_for_everyone(self):
        pass


def test_official_decoding_values():
    assert EvalConfig(decoding="official").generation_kwargs() == {
        "do_sample": True, "temperature": 0.1, "top_p": 0.001, "max_new_tokens": 1024}  # fmt: skip
    assert EvalConfig(decoding="official", benchmark="scanqa").generation_kwargs()["max_new_tokens"] == 256
    assert EvalConfig(decoding="official", max_new_tokens=64).generation_kwargs()["max_new_tokens"] == 64
    from spatial_mllm.models.ask import OFFICIAL_DECODING

    assert OFFICIAL_DECODING == DECODINGS["official"]  # `ask` uses the same values (models/ cannot import eval/)


def test_greedy_is_lmms_evals_and_never_cuts_a_tag_prompt():
    assert EvalConfig().decoding == "greedy"
    assert EvalConfig().generation_kwargs() == {"max_new_tokens": 16, "do_sample": False, "num_beams": 1}
    for style in ("v1.0", "think"):  # the model may reason before its <answer> tag: 1024, as official
        assert EvalConfig(prompt_style=style, extract_answer=True).generation_kwargs()["max_new_tokens"] == 1024
        with pytest.raises(ValueError, match="max_new_tokens"):
            EvalConfig(prompt_style=style, extract_answer=True, max_new_tokens=16)
        with pytest.raises(ConfigError, match="max_new_tokens"):
            EvalConfig.from_dict({"prompt_style": style, "extract_answer": True, "max_new_tokens": 16})
        with pytest.raises(ValueError, match="extract_answer"):
            EvalConfig(prompt_style=style)
    # "auto" checks the budget once the checkpoint's set is known
    cfg = EvalConfig(prompt_style="auto", max_new_tokens=16)
    assert cfg.for_checkpoint("Diankun/Spatial-MLLM-v1.1-Instruct-135K").generation_kwargs()["max_new_tokens"] == 16
    with pytest.raises(ConfigError, match="max_new_tokens"):
        cfg.for_checkpoint("Diankun/Spatial-MLLM-subset-sft")
    with pytest.raises(ValueError, match="max_new_tokens"):
        EvalConfig(max_new_tokens=0)


def test_cli_decoding_flag():
    args = build_parser().parse_args(["vsibench", "--model", "Diankun/Spatial-MLLM-subset-sft", "--decoding",
                                      "official", "--prompt-style", "auto", "--data", "rows.jsonl"])
    cfg = build_eval_config(args)
    assert (cfg.decoding, cfg.prompt_style, cfg.extract_answer) == ("official", "v1.0", True)
    assert cfg.generation_kwargs()["max_new_tokens"] == 1024


def test_top_p_0001_keeps_only_the_top_token_unless_the_distribution_is_flat():
    # the claim behind "near-greedy": after temperature 0.1, top_p 0.001 keeps one token whenever its probability
    # is >= 0.001, and samples among several only when the distribution is flatter than that
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    temp, top_p = TemperatureLogitsWarper(0.1), TopPLogitsWarper(0.001)
    ids = torch.zeros(1, 1, dtype=torch.long)
    peaked = torch.randn(1, 151_936)  # Qwen2.5-VL's vocabulary, random logits
    kept = torch.isfinite(top_p(ids, temp(ids, peaked.clone())))
    assert kept.sum() == 1 and kept[0, peaked.argmax()]
    flat = torch.zeros(1, 151_936)
    flat[0, :3] = 1e-4  # almost uniform: the top probability is far below 0.001
    assert torch.isfinite(top_p(ids, temp(ids, flat))).sum() > 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import numpy as np

    from spatial_mllm.data.render import write_mp4
    from spatial_mllm.models.tiny import tiny_model, tiny_processor, tiny_tokenizer

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    video = write_mp4(tmp_path_factory.mktemp("vid") / "room.mp4",
                      (np.random.default_rng(0).random((8, 56, 84, 3)) * 255).astype(np.uint8), fps=4.0)
    items = [{"id": i, "prompt": q, "video": str(video), "num_frames": 4, "frame_indices": None}
             for i, q in enumerate(["How many chairs?", "How big is the room?", "Which is closer?"])]
    return tiny_model(tok).eval(), tiny_processor(tok), items


def test_official_decoding_equals_greedy_on_a_small_vocabulary(tiny):
    # the tiny vocabulary has 526 tokens, so the top probability is always >= 1/526 > 0.001: top_p keeps the
    # argmax alone and the official (sampled) decoding must give the greedy answers exactly
    model, proc, items = tiny
    n = {"max_new_tokens": 5, "min_new_tokens": 5}
    greedy = ModelPredictor(model, proc, {**EvalConfig().generation_kwargs(), **n})(items)
    official = ModelPredictor(model, proc, {**EvalConfig(decoding="official").generation_kwargs(), **n}, seed=3)
    assert official(items) == greedy


def test_sampling_is_seeded_per_batch_and_leaves_the_callers_rng_alone(tiny):
    model, proc, items = tiny
    hot = {"do_sample": True, "temperature": 5.0, "max_new_tokens": 6, "min_new_tokens": 6}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = ModelPredictor(model, proc, hot, seed=1)(items)
    assert torch.equal(torch.get_rng_state(), state)  # forked RNG: the caller's stream is untouched
    torch.manual_seed(999)  # whatever ran before does not matter
    assert ModelPredictor(model, proc, hot, seed=1)(items) == a
    assert ModelPredictor(model, proc, hot, seed=2)(items) != a  # 18 tokens at temperature 5: they differ
    assert batch_seed(1, items) == batch_seed(1, [dict(it) for it in items]) != batch_seed(1, items[:2])


def test_default_predictor_decoding_is_the_official_one(tiny):
    model, proc, _ = tiny
    assert ModelPredictor(model, proc).generation_kwargs == {**DECODINGS["official"], "max_new_tokens": 1024}


def test_resume_refuses_predictions_made_with_another_decoding(tmp_path):
    from pathlib import Path

    from spatial_mllm.eval.vsibench import load_vsibench

    fixture = Path(__file__).parent / "fixtures" / "eval_vsibench_rows.jsonl"
    rows = load_vsibench(fixture)

    def cfg(**kw):
        return EvalConfig(output_dir=str(tmp_path / "run"), source=str(fixture), batch_size=4, **kw)

    first = evaluate_vsibench(cfg(decoding="official"), FrequencyBaseline(rows), rows=rows, state=LocalState())
    again = evaluate_vsibench(cfg(decoding="official"), FrequencyBaseline(rows), rows=rows, state=LocalState())
    assert again == first  # same settings: resumed
    with pytest.raises(loop.StalePredictionsError):
        evaluate_vsibench(cfg(decoding="greedy"), FrequencyBaseline(rows), rows=rows, state=LocalState())
