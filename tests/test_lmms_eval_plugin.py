"""The lmms-eval plugin (``--model spatial_mllm``): registered through the entry point, run by lmms-eval's own
evaluator on a local VSI-Bench-format task scored by lmms-eval's vsibench functions, and equal to our own
predictor and scorer. CPU, offline, tiny model."""

import json
import sys
from pathlib import Path

import pytest
import torch

lmms_eval = pytest.importorskip("lmms_eval", reason="the lmms-eval extra is not installed (pip install -e '.[lmms-eval]')")

from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.tasks.vsibench.utils import extract_number, vsibench_doc_to_text  # noqa: E402

from spatial_mllm.config import ConfigError  # noqa: E402
from spatial_mllm.data.formats import is_multiple_choice, read_vsibench_rows  # noqa: E402
from spatial_mllm.eval.metrics import parse_number  # noqa: E402
from spatial_mllm.eval.model_predict import ModelPredictor  # noqa: E402
from spatial_mllm.eval.vsibench import TASKS, score  # noqa: E402
from spatial_mllm.integrations.lmms_eval import SpatialMLLMLmms, cut_at_stop_strings, generation_settings  # noqa: E402
from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration  # noqa: E402
from spatial_mllm.models.processing import SpatialMLLMProcessor  # noqa: E402
from spatial_mllm.models.tiny import tiny_model, tiny_processor  # noqa: E402

FIX = Path(__file__).resolve().parent / "fixtures" / "lmms_eval"
TASK = "vsibench_tiny"
PIX = dict(pixel_preset=None, num_frames=4, min_pixels=56 * 56, max_pixels=112 * 112)  # tiny frames
LMMS_TASK_KEYS = {  # lmms-eval's metric name → our per_task key
    "obj_appearance_order_accuracy": "obj_appearance_order", "object_abs_distance_mra": "object_abs_distance",
    "object_counting_mra": "object_counting", "object_rel_distance_accuracy": "object_rel_distance",
    "object_size_estimation_mra": "object_size_estimation", "room_size_estimation_mra": "room_size_estimation",
    "route_planning_accuracy": "route_planning", "object_rel_direction_accuracy": "object_rel_direction",
}  # fmt: skip


def model_args(folder, **extra) -> str:
    args = {"pretrained": folder, "nframes": 4, "pixel_preset": "none", "min_pixels": PIX["min_pixels"],
            "max_pixels": PIX["max_pixels"], "device": "cpu", **extra}
    return ",".join(f"{k}={v}" for k, v in args.items())


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Offline hub, a private datasets cache, and the task's videos (VSI-Bench layout) in a tmp folder."""
    sys.path.insert(0, str(FIX))
    import vsibench_tiny_utils

    sys.path.remove(str(FIX))
    root = tmp_path_factory.mktemp("lmms_eval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("LMMS_EVAL_DATASETS_CACHE", str(root / "datasets"))
        mp.setenv(vsibench_tiny_utils.VIDEO_ROOT_ENV, str(root / "videos"))
        vsibench_tiny_utils.make_videos(root / "videos")
        yield {"root": root, "utils": vsibench_tiny_utils}


@pytest.fixture(scope="module")
def docs():
    return read_vsibench_rows(FIX.parent / "eval_vsibench_rows.jsonl")


@pytest.fixture(scope="module")
def tiny_dir(tok, env):
    """A tiny Spatial-MLLM (mlp_add connector) and its processor saved like a checkpoint folder."""
    folder = env["root"] / "tiny"
    tiny_model(tok, seed=0).save_pretrained(folder)
    tiny_processor(tok).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_loaded(tiny_dir):
    """Our own (model, processor) for the same folder: the reference the plugin is compared with."""
    model = SpatialMLLMForConditionalGeneration.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    return model, SpatialMLLMProcessor.from_pretrained(tiny_dir, **PIX)


@pytest.fixture(scope="module")
def evaluated(env, tiny_dir):
    """lmms-eval's evaluator on the local task (chat model, samples logged)."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    tm = TaskManager("ERROR", include_path=str(FIX), model_name="spatial_mllm")
    return simple_evaluate(model="spatial_mllm", model_args=model_args(tiny_dir), tasks=[TASK], task_manager=tm,
                           batch_size=2, log_samples=True, bootstrap_iters=0, verbosity="ERROR")


def requests_for(docs, utils, gen_kwargs=None, order=None):
    """Chat requests as lmms-eval builds them (api/task.py:1863) for ``docs`` of the local task."""
    gen = {"max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0, "num_beams": 1, "do_sample": False,
           "until": ["\n\n"], **(gen_kwargs or {})}

    def doc_to_messages(doc):
        return utils.doc_to_messages(doc, {"pre_prompt": ""})

    return [Instance("generate_until", ("", doc_to_messages, dict(gen), i, TASK, "test"), idx=0,
                     metadata={"task": TASK, "doc_id": i, "repeats": 1})
            for i in (order if order is not None else range(len(docs)))]


def plugin(folder, docs, **extra):
    lm = SpatialMLLMLmms.create_from_arg_string(model_args(folder, **extra))
    lm.task_dict = {TASK: {"test": docs}}
    return lm


def reference_items(docs, utils, **item):
    return [{"id": i, "video": utils.video_path(d), "num_frames": 4, "prompt": vsibench_doc_to_text(d, {}), **item}
            for i, d in enumerate(docs)]


# ---- registration --------------------------------------------------------------------------------------
def test_entry_point_is_registered():
    from importlib.metadata import entry_points

    from lmms_eval.models import get_model, get_model_manifest

    (ep,) = [e for e in entry_points(group="lmms_eval.models") if e.name == "spatial_mllm"]
    manifest = ep.load()()
    assert manifest.model_id == "spatial_mllm" and manifest.simple_class_path is None
    assert manifest.chat_class_path == "spatial_mllm.integrations.lmms_eval.SpatialMLLMLmms"
    assert get_model_manifest("spatial_mllm") == manifest  # lmms-eval loaded it at import
    assert get_model("spatial_mllm") is SpatialMLLMLmms and SpatialMLLMLmms.is_simple is False


def test_bad_model_args_name_the_key():
    from lmms_eval.models import get_model

    with pytest.raises(ConfigError, match="unknown key 'nframe'.*did you mean 'nframes'"):
        get_model("spatial_mllm").create_from_arg_string("pretrained=tiny,nframe=8")
    with pytest.raises(ConfigError, match="'sampling'.*'space_aware'.*'spaceaware'"):
        SpatialMLLMLmms.create_from_arg_string("pretrained=tiny,sampling=spaceaware")
    with pytest.raises(ConfigError, match="batch_size"):
        SpatialMLLMLmms.create_from_arg_string("pretrained=tiny", {"batch_size": "auto"})
    with pytest.raises(ConfigError, match="pretrained"):
        SpatialMLLMLmms.create_from_arg_string("nframes=8")


def test_generation_settings_follow_lmms_eval_conventions():
    vsibench = {"max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0, "num_beams": 1, "do_sample": False,
                "until": ["\n\n"]}
    assert generation_settings(vsibench) == ({"max_new_tokens": 16, "do_sample": False, "num_beams": 1}, [])
    gen, until = generation_settings({"temperature": 0.7, "top_p": 0.9, "top_k": 5, "until": "</answer>"})
    assert gen == {"max_new_tokens": 128, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "num_beams": 1,
                   "top_k": 5} and until == ["</answer>"]
    assert generation_settings({"do_sample": True})[0]["do_sample"] is False  # the temperature decides
    with pytest.warns(UserWarning, match="image_aspect_ratio"):
        generation_settings({"image_aspect_ratio": "pad"})
    assert cut_at_stop_strings("B. because\nC", ["\n", "."]) == "B"


# ---- lmms-eval's evaluator -----------------------------------------------------------------------------
def test_evaluator_scores_equal_our_scorer(evaluated, docs):
    """lmms-eval's vsibench numbers for the plugin's predictions = ``spatial_mllm.eval.vsibench.score`` of the
    same predictions, per task and overall — once the numeric answers are read with lmms-eval 0.7.3's
    ``extract_number`` (first number anywhere); our scorer reads the first token (the pre-0.7.3 rule), which
    differs exactly on the numeric rows where the two readings differ."""
    res, samples = evaluated["results"][TASK], evaluated["samples"][TASK]
    assert evaluated["config"]["model_backend"].endswith("SpatialMLLMLmms (chat)")
    assert sorted(s["doc_id"] for s in samples) == list(range(len(docs)))
    rows = [{"question_type": s["doc"]["question_type"], "ground_truth": s["doc"]["ground_truth"],
             "prediction": s["filtered_resps"][0]} for s in samples]
    assert all(isinstance(r["prediction"], str) for r in rows)

    def lmms_eval_reading(r):  # lmms-eval 0.7.3's number, written back as text our scorer reads
        if is_multiple_choice(r["question_type"]):
            return r
        x = extract_number(r["prediction"])
        return {**r, "prediction": "" if x is None else repr(x)}

    ours = score([lmms_eval_reading(r) for r in rows])
    assert set(ours["per_task"]) == set(TASKS)
    for metric, task in LMMS_TASK_KEYS.items():
        assert 100 * res[f"{metric},none"] == pytest.approx(ours["per_task"][task], abs=1e-4), task
    assert 100 * res["vsibench_overall,none"] == pytest.approx(ours["overall_macro"], abs=1e-4)

    # on the raw predictions only the numeric tasks whose rows parse differently may differ
    raw = score(rows)
    differ = {r["question_type"] for r in rows
              if not is_multiple_choice(r["question_type"]) and extract_number(r["prediction"]) != parse_number(r["prediction"])}
    for metric, task in LMMS_TASK_KEYS.items():
        if task not in differ:
            assert 100 * res[f"{metric},none"] == pytest.approx(raw["per_task"][task], abs=1e-4), task


def test_greedy_is_our_model_predictor(evaluated, docs, env, tiny_loaded):
    """temperature 0 = greedy = ModelPredictor's per-question path on the same frames and prompts."""
    model, processor = tiny_loaded
    preds = {s["doc_id"]: s["filtered_resps"][0] for s in evaluated["samples"][TASK]}
    ref = ModelPredictor(model, processor, {"do_sample": False, "num_beams": 1, "max_new_tokens": 16},
                         share_prefix=False)(reference_items(docs, env["utils"]))
    assert [preds[i] for i in range(len(docs))] == ref  # the task's default until ["\n\n"] is dropped


# ---- the class on its own ------------------------------------------------------------------------------
def test_grouped_by_video_equals_one_request_at_a_time(tiny_dir, docs, env):
    lm = plugin(tiny_dir, docs, batch_size=3)
    order = [0, 5, 1, 6, 2, 7, 3, 8, 4, 9, 11, 10]  # the two videos interleaved
    grouped = lm.generate_until(requests_for(docs, env["utils"], order=order))
    single = [lm.generate_until([r])[0] for r in requests_for(docs, env["utils"], order=order)]
    assert grouped == single and len(set(grouped)) > 1
    assert lm.feature_cache.misses == 2  # each video encoded once (then served from the cache)


def test_generation_kwargs_are_honoured(tiny_dir, tiny_loaded, docs, env):
    model, processor = tiny_loaded
    lm = plugin(tiny_dir, docs, batch_size=4, seed=3)
    u = env["utils"]
    sub = [0, 1, 4, 5, 6, 8]  # both videos, numeric and multiple-choice questions

    def run(**gen):
        return lm.generate_until(requests_for(docs, u, gen, order=sub))

    def ours(**gen):
        items = reference_items(docs, u)
        return ModelPredictor(model, processor, {"num_beams": 1, **gen}, share_prefix=False)([items[i] for i in sub])

    greedy = run(until=[])
    assert greedy == ours(do_sample=False, max_new_tokens=16)
    short = run(max_new_tokens=3, until=[])
    assert short == ours(do_sample=False, max_new_tokens=3) and short != greedy
    assert sum(map(len, short)) < sum(map(len, greedy))
    # top_p keeps only the most likely token here: sampling at temperature 1 is then greedy
    assert run(temperature=1.0, top_p=1e-9, until=[]) == greedy
    sampled = run(temperature=1.0, until=[])
    assert sampled != greedy and run(temperature=1.0, until=[]) == sampled  # seeded
    # until: the answer ends before the first stop string
    stop = greedy[0][2:4]
    assert run(until=[stop])[0] == greedy[0].split(stop)[0]
    # num_beams > 1 takes the per-question path (the shared prefix decodes one row per question)
    two = [0, 5]  # one question per video (beam search is the slow part)
    beams = plugin(tiny_dir, docs, batch_size=1).generate_until(
        requests_for(docs, u, {"num_beams": 2, "until": []}, order=two))
    items = reference_items(docs, u)
    assert beams == [ModelPredictor(model, processor, {"do_sample": False, "num_beams": 2, "max_new_tokens": 16},
                                    share_prefix=False)([items[i]])[0] for i in two]
    with pytest.raises(NotImplementedError, match="Loglikelihood"):
        lm.loglikelihood([])


def test_plain_qwen_checkpoint_runs_with_connector_none(tok, docs, env):
    """A plain Qwen2.5-VL checkpoint (no spatial tensors) loads as the 2D-only model (connector none)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ours = tiny_model(tok, connector="none", seed=1)
    cfg = ours.config.to_dict()
    for k in ("model_type", "spatial_config", "connector_config", "architectures"):
        cfg.pop(k, None)
    qwen = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg))
    qwen.load_state_dict(ours.state_dict())
    folder = env["root"] / "plain_qwen"
    qwen.save_pretrained(folder)
    tiny_processor(tok).save_pretrained(folder)

    lm = plugin(folder, docs[:5])
    assert lm.model.config.connector_config["type"] == "none" and lm.model.connector is None
    got = lm.generate_until(requests_for(docs[:5], env["utils"], {"until": []}))
    processor = SpatialMLLMProcessor.from_pretrained(folder, **PIX)
    ref = ModelPredictor(ours, processor, {"do_sample": False, "num_beams": 1, "max_new_tokens": 16},
                         share_prefix=False)(reference_items(docs[:5], env["utils"]))
    assert got == ref


def test_space_aware_frames_come_from_our_sampler(tiny_dir, tiny_loaded, docs, env):
    from spatial_mllm.models.vggt import VGGT, VGGTConfig
    from spatial_mllm.sampling.sampler import SpaceAwareSampler, SpaceAwareSamplerConfig

    torch.manual_seed(0)
    vggt_dir = VGGT(VGGTConfig.tiny()).save_pretrained(env["root"] / "vggt")
    cache = env["root"] / "sa_cache"
    lm = plugin(tiny_dir, docs, sampling="space_aware", vggt=vggt_dir, candidates=8, vggt_image_size=56,
                sampler_cache_dir=cache)
    got = lm.generate_until(requests_for(docs, env["utils"], {"until": []}))
    sampler = SpaceAwareSampler(model_path=str(vggt_dir), device="cpu",
                                config=SpaceAwareSamplerConfig(num_candidates=8, target_size=56))
    items = reference_items(docs, env["utils"])
    for it in items:
        video = Path(it["video"])
        want = sampler.sample(video, 4).indices
        assert lm.video_frames[it["video"]] == want and len(want) == 4
        assert want in [e["indices"] for e in json.loads((cache / f"{video.parent.name}__{video.stem}.json")
                                                           .read_text()).values()]
        it["frame_indices"] = want
    model, processor = tiny_loaded
    assert got == ModelPredictor(model, processor, {"do_sample": False, "num_beams": 1, "max_new_tokens": 16},
                                 share_prefix=False)(items)
