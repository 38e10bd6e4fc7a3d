"""Questions about one video decoded from one shared prefix = the per-question path (same tokens)."""

import numpy as np
import pytest
import torch

from spatial_mllm.models.ask import answer_batch
from spatial_mllm.models.prefix import answer_questions, build_prefix, generate_from_prefix, split_prompt
from spatial_mllm.models.tiny import tiny_model

QUESTIONS = ["How many chairs are in this room?",
             "What is the distance between the sofa and the lamp (in meters)? Answer with a number.",
             "Which object is closest to the bed?\nOptions:\nA. chair\nB. table\nC. lamp\nD. sofa",
             "Room size?"]


def frames(n, h, w, seed=0):
    return list((np.random.default_rng(seed).random((n, h, w, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok).eval()


@pytest.mark.parametrize("shape", [(4, 60, 80), (6, 56, 112)])
def test_shared_prefix_answers_equal_per_question_path(model, proc, shape):
    video = frames(*shape, seed=shape[0])
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    shared = answer_questions(model, proc, video, QUESTIONS, batch_size=3, **kw)  # chunks of 3 and 1
    plain = answer_batch(model, proc, [video] * len(QUESTIONS), QUESTIONS, **kw)
    assert shared == plain
    one_by_one = [answer_batch(model, proc, [video], [q], **kw)[0] for q in QUESTIONS]
    assert shared == one_by_one


def test_shared_prefix_logits_equal_forward(model, proc):
    """Step logits of the shared-prefix decode = the plain forward over the full per-question prompt."""
    video = frames(4, 60, 80, seed=9)
    prompts = [proc.build_prompt(q) for q in QUESTIONS]
    prefix = build_prefix(model, proc, video, prompts[0])
    new = generate_from_prefix(model, proc, prefix, prompts, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    for prompt, toks in zip(prompts, new):
        b = proc(prompt, videos=[video])
        ids = torch.cat([b["input_ids"], toks[None]], 1)
        with torch.no_grad():
            logits = model(**{**b, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits[0]
        L = b["input_ids"].shape[1]
        assert torch.equal(logits[L - 1:-1].argmax(-1), toks)


def test_the_suffix_reads_the_cached_visual_features(model, proc):
    """Sensitivity: other fused features in the prefix cache change the suffix's logits."""
    video = frames(4, 60, 80, seed=3)
    prompt = proc.build_prompt(QUESTIONS[0])
    prefix = build_prefix(model, proc, video, prompt)
    fused = prefix.mm_encoder_outputs["video"]
    other = build_prefix(model, proc, video, prompt, features={"video": type(fused)(
        pooler_output=tuple(2 * e for e in fused.pooler_output))})
    assert (_first_logits(model, proc, prefix, prompt) - _first_logits(model, proc, other, prompt)).abs().max() > 1e-3


def _first_logits(model, proc, prefix, prompt):
    import copy

    from spatial_mllm.models.prefix import _suffix_ids

    s = _suffix_ids(proc, prefix, prompt)
    cache = copy.deepcopy(prefix.cache)
    ids = torch.cat([prefix.input_ids, s])[None]
    with torch.no_grad():
        pos, _ = model.model.get_rope_index(ids, video_grid_thw=prefix.video_grid_thw,
                                            second_per_grid_ts=prefix.second_per_grid_ts)
        out = model(input_ids=s[None], cache=cache, position_ids=pos[:, :, len(prefix.input_ids):],
                    attention_mask=torch.ones_like(ids))
    return out.logits[0, -1]


def test_bad_prompts_and_settings_are_errors(model, proc):
    video = frames(4, 60, 80)
    two = proc.build_prompt("q", num_videos=2)
    with pytest.raises(ValueError, match="exactly one video"):
        split_prompt(two)
    prefix = build_prefix(model, proc, video, proc.build_prompt("q"))
    with pytest.raises(ValueError, match="num_beams"):
        generate_from_prefix(model, proc, prefix, [proc.build_prompt("q")], num_beams=2, max_new_tokens=2)
    other_system = proc.build_prompt("q").replace("You are a helpful assistant.", "You are terse.")
    with pytest.raises(ValueError, match="shared prefix"):
        generate_from_prefix(model, proc, prefix, [other_system], max_new_tokens=2)


def test_evaluation_grouped_by_video_equals_the_per_question_path(model, proc, tmp_path):
    """VSI-Bench evaluation with shared prefixes (one predict call per video) = one prompt per question:
    identical predictions on 3 rooms, questions of different lengths and types (padding in every chunk)."""
    from spatial_mllm.data.build import DataConfig, build_datasets
    from spatial_mllm.eval.model_predict import ModelPredictor, evaluate_model_vsibench
    from spatial_mllm.eval.vsibench import EvalConfig

    data = build_datasets(DataConfig(output_dir=str(tmp_path / "d"), num_scenes=4, width=64, height=48,
                                     num_frames=16, max_area=20.0, train_fraction=0.25, val_fraction=0.0,
                                     max_questions_per_type=2)).data_dir
    proc.num_frames = 4
    scores, preds, calls = {}, {}, {}
    for share in (True, False):
        cfg = EvalConfig(output_dir=str(tmp_path / f"share_{share}"), source=str(data / "test_vsibench.jsonl"),
                         video_root=str(data), num_frames=4, batch_size=4, max_new_tokens=6, share_prefix=share)
        seen = []
        original = ModelPredictor.__call__

        def spy(self, batch, _seen=seen, _orig=original):
            _seen.append(len({it["video"] for it in batch}))
            return _orig(self, batch)

        ModelPredictor.__call__ = spy
        try:
            scores[share] = evaluate_model_vsibench(model, proc, cfg)
        finally:
            ModelPredictor.__call__ = original
        calls[share] = seen
        preds[share] = (tmp_path / f"share_{share}" / "predictions.jsonl").read_text()
    assert preds[True] == preds[False] and scores[True] == scores[False]
    assert all(n == 1 for n in calls[True]) and len(calls[True]) == 3  # one call per video
    assert len(calls[False]) > len(calls[True])  # the plain path: batches of 4 prompts
