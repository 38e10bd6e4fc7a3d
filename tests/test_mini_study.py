"""The mini study (notebook 07): config validation, the hierarchical bootstrap against VSI-Bench's own
scoring, paired contrasts and verdicts, the tiny LLM size overrides, and one micro study end to end — twice,
to show it is deterministic for a given seed."""

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from spatial_mllm.config import ConfigError, load_params  # noqa: E402
from spatial_mllm.data.formats import is_multiple_choice  # noqa: E402
from spatial_mllm.data.grounding import DEFAULT_TYPES, GROUNDING_TYPES  # noqa: E402
from spatial_mllm.eval.vsibench import score  # noqa: E402
from spatial_mllm.experiments import mini_study as ms  # noqa: E402
from spatial_mllm.experiments.mini_study import MiniStudyConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---- config ------------------------------------------------------------------------------------------


def test_defaults_are_the_mini_preset():
    cfg = load_params(ROOT / "params" / "mini" / "07_mini_study.yaml")
    assert isinstance(cfg, MiniStudyConfig)
    assert cfg.to_dict() == MiniStudyConfig().to_dict()
    assert len(cfg.seeds) >= 3 and set(cfg.variants) == set(ms.VARIANTS)


@pytest.mark.parametrize("bad, match", [
    (dict(geometry={"stepz": 3}), "stepz"),
    (dict(semantic={"text_overides": {}}), "text_overides"),
    (dict(sft_overrides={"no_such_field": 1}), "no_such_field"),
    (dict(sft_overrides={"connector": "none"}), "set by the study"),
    (dict(geometry={"seed": 3}), "set by the study"),
    (dict(variants=["2d_only", "3d_only"]), "variants"),
    (dict(num_frames=3), "even"),
    (dict(width=100), "multiples of 28"),
    (dict(seeds=[0, 0]), "distinct"),
    (dict(grounding_types=["visible_presence", "nope"]), "grounding_types"),
    (dict(reading_types=["room_size"]), "reading_types"),
    (dict(grounding_short_steps=-1), "grounding_short_steps"),
    (dict(grounding_short_steps=5, grounding_steps=0), "grounding_short_steps"),
    (dict(grounding_short_steps=5, grounding_short_frames=3), "grounding_short_frames"),
    (dict(grounding_short_steps=5, grounding_short_frames=8), "grounding_short_frames"),
])
def test_bad_config_names_the_key(bad, match):
    with pytest.raises((ValueError, ConfigError), match=match):
        MiniStudyConfig(**bad)


def test_variants_get_identical_budgets_and_their_own_encoders(tmp_path):
    cfg = MiniStudyConfig(output_dir=str(tmp_path))
    sft = {v: cfg.sft_config(v, 1) for v in ms.VARIANTS}
    same = ("max_steps", "global_batch_size", "learning_rate", "mm_projector_lr", "seed", "train_file",
            "num_frames", "model_name_or_path", "train_vision", "train_spatial")
    for f in same:
        assert len({getattr(c, f) for c in sft.values()}) == 1, f
    assert sft["2d_only"].connector == "none" and sft["2d_only"].vggt_name_or_path is None
    assert sft["vggt_pretrained"].vggt_name_or_path.endswith("pretrain/vggt")
    assert sft["vggt_random"].vggt_name_or_path.endswith("pretrain/vggt_random")
    assert not sft["vggt_pretrained"].train_spatial and not sft["vggt_pretrained"].train_vision  # frozen
    assert cfg.eval_config("2d_only", "uniform", 0).frames_cache is None
    assert cfg.eval_config("2d_only", "space_aware", 0).frames_cache == str(cfg.frames_cache_path())
    assert cfg.eval_config("2d_only", "uniform", 0).source.endswith("test_vsibench.jsonl")  # held-out rooms


# ---- statistics ----------------------------------------------------------------------------------------

TYPES = ["object_counting", "object_rel_direction_easy", "object_rel_direction_hard", "route_planning"]


def _qs(arms: dict, seeds=(0, 1, 2), per_type=6, rng=None):
    """Question-score table: ``arms[(variant, sampling)]`` = P(correct) per question type (Bernoulli draws)."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for (v, s), p in arms.items():
        for seed in seeds:
            for t_i, t in enumerate(TYPES):
                for q in range(per_type):
                    qid = t_i * 100 + q
                    rows.append({"variant": v, "sampling": s, "seed": seed, "id": qid, "question_type": t,
                                 "score": float(rng.random() < p[t] if isinstance(p, dict) else p)})
    return pd.DataFrame(rows)


def test_point_estimates_equal_vsibench_scoring_averaged_over_seeds():
    qs = _qs({("a", "uniform"): {"object_counting": 0.8, "object_rel_direction_easy": 0.5,
                                 "object_rel_direction_hard": 0.2, "route_planning": 0.6}})
    table, _ = ms.bootstrap_scores(qs, n_boot=200)
    by_seed = []
    for _, g in qs.groupby("seed"):
        # VSI-Bench's scorer on rows whose prediction is right exactly when score == 1
        rows = [{"question_type": r.question_type, "ground_truth": "A" if is_multiple_choice(r.question_type)
                 else "2", "prediction": ("A" if is_multiple_choice(r.question_type) else "2") if r.score else
                 ("B" if is_multiple_choice(r.question_type) else "100")} for r in g.itertuples()]
        by_seed.append(score(rows))
    t = table.set_index("metric")["mean"]
    assert t["overall_macro"] == pytest.approx(np.mean([s["overall_macro"] for s in by_seed]))
    assert t["overall_micro"] == pytest.approx(np.mean([s["overall_micro"] for s in by_seed]))
    # relative direction = mean of its levels, as VSI-Bench
    assert t["object_rel_direction"] == pytest.approx(np.mean([s["per_task"]["object_rel_direction"]
                                                               for s in by_seed]))
    assert (table["ci_low"] <= table["mean"] + 1e-9).all() and (table["mean"] <= table["ci_high"] + 1e-9).all()


def test_contrasts_verdicts_and_determinism():
    # a float is every question's score; a dict gives P(correct) per type
    arms = {("vggt_pretrained", "uniform"): 1.0, ("2d_only", "uniform"): 0.0,
            ("vggt_random", "uniform"): 1.0, ("vggt_pretrained", "space_aware"): 0.0}
    qs = _qs(arms)
    table, reps = ms.bootstrap_scores(qs, n_boot=300, seed=4)
    table2, reps2 = ms.bootstrap_scores(qs, n_boot=300, seed=4)
    pd.testing.assert_frame_equal(table, table2)
    con = ms.contrast_table(table, reps)
    macro = con[con.metric == "overall_macro"].set_index("claim")
    assert macro.loc["spatial_encoder", "verdict"] == "supported"  # 100 vs 0 points
    assert macro.loc["spatial_encoder", "difference"] == pytest.approx(100.0)
    assert macro.loc["geometry_prior", "verdict"] == "not resolved"  # identical arms: difference exactly 0
    assert macro.loc["geometry_prior", ["ci_low", "ci_high"]].tolist() == [0.0, 0.0]
    assert macro.loc["space_aware_sampling", "verdict"] == "contradicted"
    text = ms.claims_markdown(con)
    assert text.count("**supported**") == 1 and text.count("**contradicted**") == 1
    assert "**not resolved**" in text
    assert "blind control finds no evidence" not in text  # no other_room arm: nothing to say
    # with a blind control that scores the same as the own-room frames, the reading says so
    arms[("vggt_pretrained", "other_room")] = 1.0
    table, reps = ms.bootstrap_scores(_qs(arms), n_boot=300, seed=4)
    text = ms.claims_markdown(ms.contrast_table(table, reps))
    assert "blind control finds no evidence" in text


def test_bootstrap_interval_covers_noise_and_shrinks_with_more_questions():
    arms = {("vggt_pretrained", "uniform"): 0.5, ("2d_only", "uniform"): 0.5}
    rng = np.random.default_rng(1)
    widths = []
    for n in (5, 60):
        qs = _qs({a: {t: 0.5 for t in TYPES} for a in arms}, per_type=n, rng=rng)
        table, reps = ms.bootstrap_scores(qs, n_boot=500)
        con = ms.contrast_table(table, reps)
        o = con[(con.claim == "spatial_encoder") & (con.metric == "overall_macro")].iloc[0]
        widths.append(o.ci_high - o.ci_low)
    assert widths[1] < widths[0]


def test_bootstrap_refuses_runs_with_different_questions():
    qs = _qs({("a", "uniform"): 0.5})
    with pytest.raises(ValueError, match="a/uniform/seed 1"):
        ms.bootstrap_scores(qs[~((qs.seed == 1) & (qs.id == 0))], n_boot=100)


def test_other_room_rows_swap_every_video_and_keep_the_question():
    rows = [{"id": i, "dataset": "synthetic", "scene_name": f"room{i % 3}", "question": f"q{i}",
             "ground_truth": "1", "question_type": "object_counting"} for i in range(6)]
    blind = ms.other_room_rows(rows)
    assert [b["scene_name"] for b in blind] == ["room1", "room2", "room0"] * 2
    assert all(b["question"] == r["question"] and b["ground_truth"] == r["ground_truth"] for b, r in zip(blind, rows))
    with pytest.raises(ValueError, match="two held-out rooms"):
        ms.other_room_rows(rows[:1])


def test_encoder_table_reports_the_vits_target(tmp_path):
    """The ViT rows follow its pretraining target: majority-class accuracy vs the majority class, or presence
    accuracy vs 'all absent' with precision / recall / F1, and with instance centres their scores and the
    per-frame instance counts vs 'always one'."""
    cfg = MiniStudyConfig(output_dir=str(tmp_path))
    pre = cfg.study_dir() / "pretrain"
    keys = ("abs_rel", "delta1", "const_abs_rel", "const_delta1", "rot_err_mean", "static_rot_err_mean",
            "rot_err_median", "trans_err_mean", "rra15", "rta15")
    for sub, held in (("vggt", None), ("qwen", {"accuracy": 0.9, "object_accuracy": 0.7, "chance_majority": 0.8})):
        (pre / sub).mkdir(parents=True)
        metrics = {"random_init": dict.fromkeys(keys, 1.0), "pretrained": dict.fromkeys(keys, 0.5)} if held is None \
            else {"held_out": held}
        (pre / sub / "run.json").write_text(json.dumps({"metrics": metrics}))
    t = ms.encoder_table(cfg).set_index("metric")
    assert t.loc["ViT per-patch category accuracy ↑", "reference"] == 0.8
    assert t.loc["ViT accuracy on object patches ↑", "pretrained"] == 0.7
    held = {"accuracy": 0.97, "chance_absent": 0.95, "precision": 0.86, "recall": 0.61, "f1": 0.71}
    (pre / "qwen" / "run.json").write_text(json.dumps({"metrics": {"held_out": held}}))
    t = ms.encoder_table(cfg).set_index("metric")
    assert t.loc["ViT per-patch category presence accuracy ↑", "reference"] == 0.95
    assert [t.loc[f"ViT presence {k} ↑", "pretrained"] for k in ("precision", "recall", "f1")] == [0.86, 0.61, 0.71]
    assert "ViT per-patch category accuracy ↑" not in t.index
    assert "ViT instance-centre f1 ↑" not in t.index
    held["centres"] = {"accuracy": 0.99, "chance_absent": 0.98, "precision": 0.76, "recall": 0.46, "f1": 0.58}
    held.update(frame_count_accuracy=0.42, frame_count_chance=0.91)  # target 'presence_centres'
    (pre / "qwen" / "run.json").write_text(json.dumps({"metrics": {"held_out": held}}))
    t = ms.encoder_table(cfg).set_index("metric")
    assert [t.loc[f"ViT instance-centre {k} ↑", "pretrained"] for k in ("precision", "recall", "f1")] == [0.76, 0.46, 0.58]
    row = t.loc["ViT instances per frame and category exact ↑"]
    assert (row["pretrained"], row["reference"], row["reference_is"]) == (0.42, 0.91, "always one")


def test_grounding_accuracy_asks_about_the_next_video_in_the_blind_control(monkeypatch):
    """A reader that answers right only about the video it is shown: all correct with the own videos, all
    wrong with the next one's (each question keeps its text and answer)."""
    import spatial_mllm.models.ask as ask

    truth = {("v/a.mp4", "Is there a bed?"): "yes", ("v/b.mp4", "Is there a bed?"): "no",
             ("v/c.mp4", "How many chair(s)?"): "2", ("v/a.mp4", "How many chair(s)?"): "1"}
    rows = [{"video": v, "conversations": [{"value": "<video>\n" + q}], "ground_truth": a,
             "question_type": "visible_presence" if "bed" in q else "visible_counting"}
            for (v, q), a in truth.items()]
    shown = []

    class Reader:
        def load_video(self, path, num_frames):
            assert num_frames == 4
            return Path(path).relative_to("root").as_posix()

    def answer_batch(model, processor, videos, questions, **kw):
        shown.extend(videos)
        return [truth.get((v, q), "?") for v, q in zip(videos, questions)]

    monkeypatch.setattr(ask, "answer_batch", answer_batch)
    own = ms.grounding_accuracy(torch.nn.Linear(1, 1), Reader(), rows, "root", 4, batch_size=3)
    assert own == {"visible_presence": [True, True], "visible_counting": [True, True]}
    assert shown == [r["video"] for r in rows]
    shown.clear()
    blind = ms.grounding_accuracy(torch.nn.Linear(1, 1), Reader(), rows, "root", 4, other_room=True)
    assert shown == ["v/b.mp4", "v/c.mp4", "v/a.mp4", "v/b.mp4"]  # a -> b -> c -> a (sorted)
    assert blind == {"visible_presence": [False, False], "visible_counting": [False, False]}
    with pytest.raises(ValueError, match="two videos"):
        ms.grounding_accuracy(torch.nn.Linear(1, 1), Reader(), rows[:1], "root", 4, other_room=True)


# ---- model size ----------------------------------------------------------------------------------------


def test_tiny_llm_size_overrides(tok):
    from spatial_mllm.models.tiny import tiny_config, tiny_model

    cfg = tiny_config(tok, text_overrides={"hidden_size": 128, "num_hidden_layers": 3})
    assert cfg.text_config.hidden_size == 128 and cfg.text_config.num_hidden_layers == 3
    assert cfg.vision_config.out_hidden_size == 128  # the ViT's merger feeds the LLM
    assert sum(cfg.text_config.rope_parameters["mrope_section"]) == 128 // 4 // 2  # head_dim / 2
    model = tiny_model(tok, text_overrides={"hidden_size": 128})
    ids = torch.tensor([[1, 2, 3]])
    assert model(input_ids=ids).logits.shape == (1, 3, len(tok))
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_config(tok, text_overrides={"vocab_size": 7})


# ---- end to end ----------------------------------------------------------------------------------------


def _micro(out: Path) -> MiniStudyConfig:
    return MiniStudyConfig(
        output_dir=str(out), seeds=[0, 1], variants=["2d_only", "vggt_pretrained"], num_frames=4,
        num_scenes=7, num_frames_rendered=12, max_questions_per_type=1, train_fraction=0.43, val_fraction=0.29,
        geometry=dict(num_train_scenes=1, num_eval_scenes=1, frames_per_scene=6, seq_len=2, steps=3, batch_size=2,
                      eval_sequences_per_scene=1),
        semantic=dict(num_train_scenes=1, num_eval_scenes=1, frames_per_scene=2, steps=3, batch_size=2,
                      target="presence", text_overrides={"num_hidden_layers": 1}),
        max_steps=3, global_batch_size=4, per_device_train_batch_size=4, sft_overrides={"encoder_cache": True},
        eval_limit=12, eval_batch_size=12, bootstrap_samples=200, grounding_steps=2, grounding_random_subsets=1,
        grounding_draws=1, run_workers=1,
        grounding_mix=0.5, grounding_types=list(GROUNDING_TYPES), reading_steps=2,
        text_pretraining={"steps": 2, "batch_size": 2, "eval_size": 8, "log_every": 2},
        reading_types=["object_counting", "room_size_estimation"], data_overrides={"instance_counts": [1, 2, 3]})


@pytest.fixture
def one_thread():
    """Torch at 1 thread for the test (a study's worker processes run at 1 thread; floats depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.timeout(900)
def test_micro_study_end_to_end_is_deterministic(tmp_path, one_thread, monkeypatch):
    results, logs = [], []
    for name, workers in (("a", 1), ("b", 2)):
        cfg = _micro(tmp_path / name).replace(run_workers=workers)
        statuses = ms.run_study(cfg, log=logs.append)
        assert [s["status"] for s in statuses] == ["ran"] * 4 and all(s["seconds"] > 0 for s in statuses)
        assert [s["run"] for s in statuses] == ["2d_only_s0", "vggt_pretrained_s0", "2d_only_s1", "vggt_pretrained_s1"]
        enc, table, con, text = ms.write_study_tables(cfg)
        results.append((cfg, enc, table, con, text))
    (cfg, enc, table, con, text), (cfg_b, enc_b, table_b, con_b, text_b) = results
    # the same seed gives the same study — here once in this process and once with the runs in 2 worker processes
    # (1 thread each, as this process; each run's training one job, then its scoring one job per sampling: 4 + 12):
    # encoders, every prediction, the tables and the verdict text
    assert "4 SFT runs and their scoring (16 jobs), 2 at once at 1 thread each ..." in logs
    for variant in cfg.variants:
        for seed in cfg.seeds:
            for sampling in cfg.samplings_of(variant):
                name = cfg.eval_name(variant, sampling, seed)
                assert (cfg.out() / "eval" / name / "predictions.jsonl").read_bytes() == \
                    (cfg_b.out() / "eval" / name / "predictions.jsonl").read_bytes(), name
                ja, jb = (json.loads((c.out() / "eval" / name / "study.json").read_text()) for c in (cfg, cfg_b))
                assert (ja["train_loss"], ja["sampling"]) == (jb["train_loss"], jb["sampling"]) and \
                    jb["sampling"] == sampling, name
                assert [j["params"] for j in (ja, jb)] == [c.sft_config(variant, seed).to_dict() for c in (cfg, cfg_b)]
    assert json.loads((cfg_b.out() / "eval" / cfg_b.eval_name("2d_only", "uniform", 0) / "study.json").read_text()
                      )["torch_threads"] == 1
    pd.testing.assert_frame_equal(enc, enc_b)
    pd.testing.assert_frame_equal(table, table_b)
    pd.testing.assert_frame_equal(con, con_b)
    assert text == text_b
    qa = pd.read_csv(cfg.out() / "tables" / "07_question_scores.csv")
    qb = pd.read_csv(cfg_b.out() / "tables" / "07_question_scores.csv")
    pd.testing.assert_frame_equal(qa, qb)
    # every arm scored the same held-out questions; the pretrained encoders and checkpoints are there
    assert qa.groupby(["variant", "sampling", "seed"])["id"].apply(frozenset).nunique() == 1
    test_scenes = set(json.loads((cfg.data_dir() / "splits.json").read_text())["test"])
    rows = cfg.eval_rows()
    assert {r["scene_name"] for r in rows} <= test_scenes
    for sub in ("vggt", "vggt_random", "qwen", "qwen_s0", "qwen_s1", "qwen_grounded"):
        assert (cfg.study_dir() / "pretrain" / sub / "config.json").is_file(), sub
    # every variant and seed starts from the one reading-stage LLM, which started from the grounded one, which
    # started from the text-pretrained LLM (qwen_s<pretrain_seed>'s LLM, same ViT)
    assert {cfg.sft_config(v, s).model_name_or_path for v in cfg.variants for s in cfg.seeds} == {
        str(cfg.reading_path())}
    assert cfg.reading_config().model_name_or_path == str(cfg.grounded_path())
    assert cfg.grounding_config().model_name_or_path == str(cfg.text_path())
    text_run = json.loads((cfg.text_path() / "run.json").read_text())
    sem = cfg.semantic_config()  # the text stage depends on its own settings and the LLM's init, not the ViT's
    assert text_run["params"] == {**cfg.text_config().to_dict(), "llm_init": sem.llm_init,
                                  "text_overrides": sem.text_overrides}
    assert text_run["params"]["seed"] == cfg.pretrain_seed
    assert text_run["source"] == f"qwen_s{cfg.pretrain_seed}'s LLM init" and text_run["torch_threads"] == 1
    assert text_run["vit"] == str(cfg.qwen_path(cfg.pretrain_seed))
    assert (cfg.text_path() / "model.safetensors").read_bytes() == \
        (cfg_b.text_path() / "model.safetensors").read_bytes()
    # the text stage ran in a worker beside the encoders' pretraining, on a fresh copy of the LLM init, and was
    # spliced with the ViT: tensor for tensor what text pretraining of qwen_s<pretrain_seed> itself gives
    from safetensors.torch import load_file

    from spatial_mllm.train.text_pretrain import pretrain_llm_text

    pretrain_llm_text(cfg.qwen_path(cfg.pretrain_seed), tmp_path / "direct", cfg.text_config())
    direct, spliced = (load_file(f / "model.safetensors") for f in (tmp_path / "direct", cfg.text_path()))
    assert direct.keys() == spliced.keys() and all(torch.equal(direct[k], spliced[k]) for k in direct)
    start = load_file(cfg.qwen_path(cfg.pretrain_seed) / "model.safetensors")
    vit = {k for k in start if k.startswith("visual.")}  # the saved checkpoint's names: visual.*, model.*, lm_head
    assert vit and all(torch.equal(start[k], spliced[k]) for k in vit)
    assert all(not torch.equal(start[k], spliced[k]) for k in ("model.embed_tokens.weight", "lm_head.weight"))
    # the stage run on its own (not beside the encoders) gives the same bytes
    import shutil

    before = (cfg_b.text_path() / "model.safetensors").read_bytes()
    shutil.rmtree(cfg_b.text_path())
    shutil.rmtree(cfg_b.text_llm_path())
    assert ms.text_pretrain_stage(cfg_b, log=lambda *a: None) == cfg_b.text_path()
    assert (cfg_b.text_path() / "model.safetensors").read_bytes() == before
    text_rows = enc[enc["metric"].str.startswith("LLM text")].set_index("metric")
    assert len(text_rows) == 2 and text_rows.loc["LLM text how many <category>(s) accuracy ↑", "pretrained"] == \
        text_run["metrics"]["after"]["count"]
    reading = [json.loads(x) for x in (cfg.data_dir() / "reading_train.jsonl").read_text().splitlines()]
    assert reading and {r["question_type"] for r in reading} <= {"object_counting", "room_size_estimation"}
    assert {r["video"].split("/")[1] for r in reading} <= set(json.loads((cfg.data_dir() / "splits.json").read_text())["train"])
    rcheck = json.loads((cfg.reading_path() / "run.json").read_text())["val"]
    assert rcheck and set(rcheck) <= {"object_counting", "room_size_estimation"}
    assert all(set(v) == {"own", "other_room"} and all(0 <= x <= 100 for x in v.values()) for v in rcheck.values())
    grounding = [json.loads(x) for x in (cfg.data_dir() / "grounding_train.jsonl").read_text().splitlines()]
    train_scenes = set(json.loads((cfg.data_dir() / "splits.json").read_text())["train"])
    assert {g["video"].split("/")[1] for g in grounding} <= train_scenes
    assert any("frame_indices" in g for g in grounding) and any("frame_indices" not in g for g in grounding)
    assert {g["question_type"] for g in grounding} >= {"frame_objects", "visible_presence"}
    # the grounded model's reading check ran on the val rooms' questions, own frames vs another val room's
    val_rooms = set(json.loads((cfg.data_dir() / "splits.json").read_text())["val"])
    val_rows = [json.loads(x) for x in (cfg.grounded_path() / "val_grounding.jsonl").read_text().splitlines()]
    assert len(val_rooms) == 2 and {g["video"].split("/")[1] for g in val_rows} == val_rooms
    check = json.loads((cfg.grounded_path() / "run.json").read_text())["val"]
    assert check["questions"] == len(val_rows) == sum(v["n"] for k, v in check.items() if k != "questions")
    assert all(0 <= v[k] <= 100 for name, v in check.items() if name != "questions" for k in ("own", "other_room"))
    mixed = [json.loads(x) for x in (cfg.data_dir() / "train_sft_grounded.jsonl").read_text().splitlines()]
    spatial = [json.loads(x) for x in (cfg.data_dir() / "train_sft.jsonl").read_text().splitlines()]
    assert mixed[:len(spatial)] == spatial and len(mixed) == len(spatial) + round(0.5 * len(spatial))
    for c in (cfg, cfg_b):  # checkpoints removed after scoring, in this process and in the worker jobs
        assert not any((c.study_dir() / "runs" / c.run_name(v, s)).exists() for v in c.variants for s in c.seeds)
    for sampling in ("space_aware", "space_aware_gt"):
        cache = json.loads(cfg.frames_cache_path(sampling).read_text())
        assert set(cache) == {f"{r['dataset']}/{r['scene_name']}" for r in rows}
        assert all(len(v) == cfg.num_frames and v == sorted(set(v)) for v in cache.values())
    cov = ms.sampling_coverage(cfg)
    cols = ["uniform", "space_aware", "space_aware_gt"]
    assert ((cov[cols] > 0) & (cov[cols] <= 1)).all().all()
    assert set(table["variant"]) == {"2d_only", "vggt_pretrained", "frequency", "visible_reader"}
    assert set(table["sampling"]) == {"uniform", "space_aware", "space_aware_gt", "other_room", "-"}
    # the visible-instance reader is scored with every sampling's frames, the other room's too
    assert set(table[table["variant"] == "visible_reader"]["sampling"]) == set(cfg.samplings)
    assert {"frames_tell", "space_aware_frames_tell", "space_aware_gt_frames_tell"} <= set(con["claim"])
    # the space-aware samplings are scored for the full model only (space_aware_variants)
    assert set(table[table["variant"] == "2d_only"]["sampling"]) == {"uniform", "other_room"}
    conf = ms.counting_confusion(cfg, "vggt_pretrained")
    n_counting = sum(r["question_type"] == "object_counting" for r in rows)
    assert int(conf.to_numpy().sum()) == n_counting * len(cfg.seeds)
    assert "true \\ predicted" in (cfg.out() / "tables" / "07_counting_confusion.md").read_text()
    blind = [json.loads(x) for x in (cfg.out() / "eval" / cfg.eval_name("2d_only", "other_room", 0) /
                                     "predictions.jsonl").read_text().splitlines()]
    own = {r["id"]: r["scene_name"] for r in rows}
    assert all(b["scene_name"] != own[b["id"]] for b in blind)  # every question saw another room
    assert {"reads_video", "reads_video_2d", "space_aware_sampling_gt"} <= set(con["claim"])
    assert "geometry_prior" not in set(con["claim"])  # its control arm was not run
    assert "not tested" in ms.claims_markdown(con)
    assert not math.isnan(enc.set_index("metric").loc["depth AbsRel ↓ (median-scaled)", "pretrained"])
    # a rerun skips every finished run; finished encoders or data made with other settings are an error, and so are
    # scores of runs trained with other SFT settings (a changed recipe never reuses the old recipe's scores)
    assert {s["status"] for s in ms.run_study(cfg, log=lambda *a: None)} == {"skipped"}
    with pytest.raises(ValueError, match="other SFT settings \\(train_merger"):
        ms.run_study(cfg.replace(sft_overrides={**cfg.sft_overrides, "train_merger": False}), log=lambda *a: None)
    with pytest.raises(ValueError, match="other SFT settings \\(learning_rate"):
        ms.run_study(cfg.replace(learning_rate=cfg.learning_rate / 2), log=lambda *a: None)
    # a run redone from the finished pieces (data, encoders, grounded LLM) writes the same predictions, byte for byte
    done = cfg.out() / "eval" / cfg.eval_name("vggt_pretrained", "uniform", 1)
    before = {s: (cfg.out() / "eval" / cfg.eval_name("vggt_pretrained", s, 1) / "predictions.jsonl").read_bytes()
              for s in cfg.samplings_of("vggt_pretrained")}
    import shutil

    shutil.rmtree(done)
    statuses = ms.run_study(cfg, log=lambda *a: None)
    assert [s["run"] for s in statuses if s["status"] == "ran"] == ["vggt_pretrained_s1"]
    for s, b in before.items():
        assert (cfg.out() / "eval" / cfg.eval_name("vggt_pretrained", s, 1) / "predictions.jsonl").read_bytes() == b, s
    with pytest.raises(ValueError, match="other grounding settings"):
        ms.ground_llm(cfg.replace(grounding_lr=1e-2), log=lambda *a: None)
    with pytest.raises(ValueError, match="other text pretraining settings \\(lr"):
        ms.text_pretrain_stage(cfg.replace(text_pretraining={**cfg.text_pretraining, "lr": 0.5}), log=lambda *a: None)
    with pytest.raises(ValueError, match="other grounding settings \\(model_name_or_path"):  # now from qwen_s1000
        ms.ground_llm(cfg.replace(text_pretraining={}), log=lambda *a: None)
    with pytest.raises(ValueError, match="other reading settings"):
        ms.reading_stage(cfg.replace(reading_types=["object_counting"]), log=lambda *a: None)
    with pytest.raises(ValueError, match="other grounding settings \\(types"):
        ms.build_grounding_data(cfg.replace(grounding_types=["visible_presence"]))
    changed = cfg.replace(geometry={**cfg.geometry, "steps": 4})
    with pytest.raises(ValueError, match="other geometry settings \\(steps"):
        ms.pretrain_encoders(changed, log=lambda *a: None)
    with pytest.raises(ValueError, match="other data settings \\(num_scenes"):
        ms.build_study_data(cfg.replace(num_scenes=8))

    # the val blind control trains a candidate exactly as the study trains its run (same loss, bit for bit, as the
    # study's 2d_only s0) and scores it on the val rooms only: own video, then another val room's
    val = ms.val_blind_control(cfg, "2d_only", 0, "preset")
    study_run = json.loads((cfg.out() / "eval" / cfg.eval_name("2d_only", "uniform", 0) / "study.json").read_text())
    assert val["train_loss"] == study_run["train_loss"]
    assert val["gap"] == pytest.approx(val["own"]["macro"] - val["other_room"]["macro"])
    vdir = cfg.out() / "val" / "preset_2d_only_s0"
    seen = {n: [json.loads(x) for x in (vdir / n / "predictions.jsonl").read_text().splitlines()]
            for n in ("own", "other_room")}
    assert {r["scene_name"] for r in seen["own"]} == val_rooms and len(seen["own"]) == val["questions"]
    by_id = {r["id"]: r["scene_name"] for r in seen["own"]}
    assert all(r["scene_name"] != by_id[r["id"]] and r["scene_name"] in val_rooms for r in seen["other_room"])
    assert not (cfg.study_dir() / "runs" / "val_preset_2d_only_s0").exists()
    vt = ms.val_table(cfg)
    assert list(vt["seed"]) == [0, "mean"] and vt["gap"].tolist() == pytest.approx([val["gap"]] * 2)
    assert ms.val_table(cfg.replace(output_dir=str(tmp_path / "none"))).empty
    # finished: reused without training; another recipe under the same tag is an error naming the key
    def no_training(*a, **k):
        raise AssertionError("a finished val run was retrained")

    monkeypatch.setattr(ms, "_train_run", no_training)
    assert ms.val_blind_control(cfg, "2d_only", 0, "preset") == val
    with pytest.raises(ValueError, match="other val run 'preset' settings \\(learning_rate"):
        ms.val_blind_control(cfg.replace(learning_rate=cfg.learning_rate * 2), "2d_only", 0, "preset")
    with pytest.raises(ValueError, match="at least two val rooms"):
        ms.val_blind_control(cfg.replace(output_dir=str(tmp_path / "empty")), "2d_only", 0, "x")
    # without SFT (train=False) it scores the model the runs start from, the reading stage's: on the reading types
    # the same scores as the reading stage's own val check of that model (another path to the same answers)
    start = ms.val_blind_control(cfg, "2d_only", 0, "start", train=False)
    assert start["trained"] is False and start["train_loss"] is None and start["questions"] == val["questions"]
    for task, v in rcheck.items():
        assert {k: round(start[k]["per_task"][task], 1) for k in ("own", "other_room")} == v, task
    assert ms.val_blind_control(cfg, "2d_only", 0, "start", train=False) == start  # reused
    with pytest.raises(ValueError, match="other val run 'start' settings \\(trained"):
        ms.val_blind_control(cfg, "2d_only", 0, "start")

    from spatial_mllm.experiments.mini_study_plots import (
        plot_contrasts,
        plot_geometry_examples,
        plot_study_per_task,
    )

    ex = ms.geometry_examples(cfg, num_frames=2)
    assert ex["rgb"].shape == (2, cfg.height, cfg.width, 3)
    assert ex["gt"].shape == ex["random"].shape == ex["pretrained"].shape == (2, cfg.height, cfg.width)
    valid = ex["gt"] > 0
    for k in ("random", "pretrained"):  # median-scaled to the ground truth
        assert np.median(ex[k][valid]) == pytest.approx(np.median(ex["gt"][valid]), rel=0.05)
    for fig in (plot_study_per_task(table), plot_contrasts(con), plot_geometry_examples(ex)):
        assert fig.axes
        plt.close(fig)


@pytest.mark.timeout(600)
def test_grounding_draws_keep_the_draw_that_reads_best_on_val(tmp_path):
    """With ``grounding_draws: 2`` the grounding stage is drawn twice in spawned 1-thread processes; the kept
    model is the draw ranked first by the val criterion, byte for byte, and a draw run here in-process at 1
    thread is the same bytes as the worker's (the parallel path equals the plain one)."""
    cfg = _micro(tmp_path / "s").replace(grounding_draws=2)
    ms.build_study_data(cfg)
    ms.pretrain_encoders(cfg, log=lambda *a: None)
    lines = []
    out = ms.ground_llm(cfg, log=lines.append)
    rec = json.loads((out / "run.json").read_text())
    seeds = cfg.grounding_draw_seeds()
    assert seeds == [cfg.pretrain_seed, cfg.pretrain_seed + 1] and sorted(rec["draws"]) == [str(s) for s in seeds]
    best = max(seeds, key=lambda s: ms._draw_rank(s, rec["draws"][str(s)]["val"]))
    assert rec["chosen_seed"] == best and rec["criterion"] == ms.GROUNDING_DRAW_CRITERION
    assert any(f"keeping draw s{best}" in line for line in lines)
    weights = {s: (cfg.grounding_draw_path(s) / "model.safetensors").read_bytes() for s in seeds}
    assert weights[seeds[0]] != weights[seeds[1]]  # the draw's seed changes the model
    assert (out / "model.safetensors").read_bytes() == weights[best]
    # the worker's draw (spawned, 1 thread) is what the same draw gives in this process at 1 thread
    threads = torch.get_num_threads()
    try:
        again = ms._grounding_draw(cfg, seeds[1], tmp_path / "plain", threads=1)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "plain" / "model.safetensors").read_bytes() == weights[seeds[1]]
    assert again["val"] == rec["draws"][str(seeds[1])]["val"]
    # finished: reused as it is; a different number of draws is another stage, refused by name
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert ms.ground_llm(cfg, log=lambda *a: None) == out and (out / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other grounding settings \\(grounding_draws"):
        ms.ground_llm(cfg.replace(grounding_draws=3), log=lambda *a: None)
    for s in seeds:  # a finished draw does not depend on how many draws there are: more draws reuse it
        ms._same_params(cfg.grounding_draw_path(s) / "run.json",
                        ms._grounding_params(cfg.replace(grounding_draws=3), s, of_draw=True), "grounding")
    assert cfg.reading_config().model_name_or_path == str(out)


def test_grounding_draw_rank_is_presence_gain_then_count_gain_then_lower_seed():
    val = lambda p, c: {"visible_presence": {"own": p, "other_room": 50.0},  # noqa: E731
                        "visible_counting": {"own": c, "other_room": 20.0}, "questions": 9}
    draws = {1000: val(70.0, 30.0), 1001: val(75.0, 21.0), 1002: val(75.0, 25.0), 1003: val(75.0, 25.0)}
    assert max(draws, key=lambda s: ms._draw_rank(s, draws[s])) == 1002
    with pytest.raises(ValueError, match="grounding_draws"):
        MiniStudyConfig(grounding_draws=0)


def test_same_params_reads_a_setting_added_later_as_the_value_older_runs_had(tmp_path):
    """A record written before ``grounding_types`` existed was made with the default types: it is reused at
    the default and refused (naming the key) otherwise."""
    record = tmp_path / "grounding.json"
    record.write_text(json.dumps({"seed": 0, "mix": 0.3}))
    ms._same_params(record, {"seed": 0, "mix": 0.3, "types": list(DEFAULT_TYPES)}, "grounding", key=None)
    with pytest.raises(ValueError, match="types"):
        ms._same_params(record, {"seed": 0, "mix": 0.3, "types": list(GROUNDING_TYPES)}, "grounding", key=None)
    with pytest.raises(ValueError, match="mix"):
        ms._same_params(record, {"seed": 0, "mix": 0.5, "types": list(DEFAULT_TYPES)}, "grounding", key=None)


def test_freezing_the_merger_in_the_spatial_sft_leaves_the_reading_stage_as_set(tmp_path):
    base = MiniStudyConfig(output_dir=str(tmp_path), sft_overrides={"encoder_cache": True})
    assert base.sft_config("2d_only", 0).train_merger and base.reading_config().train_merger
    frozen = base.replace(sft_overrides={"encoder_cache": True, "train_merger": False})
    assert not frozen.sft_config("2d_only", 0).train_merger and not frozen.sft_config("vggt_pretrained", 1).train_merger
    assert frozen.reading_config().to_dict() == base.reading_config().to_dict()  # the reading stage is reused
    assert not base.replace(reading_train_merger=False).reading_config().train_merger


def test_text_pretraining_moves_where_the_shared_stages_start(tmp_path):
    base = MiniStudyConfig(output_dir=str(tmp_path))
    assert base.text_config().steps == 0 and base.llm_start_path() == base.qwen_path(base.pretrain_seed)
    assert base.grounding_config().model_name_or_path == str(base.qwen_path(base.pretrain_seed))
    on = base.replace(text_pretraining={"steps": 10})
    assert on.llm_start_path() == on.text_path() and on.grounding_config().model_name_or_path == str(on.text_path())
    assert on.replace(grounding_steps=0).shared_path() == on.text_path()
    assert on.replace(grounding_steps=0, reading_steps=0, text_pretraining={}).base_path(2) == base.qwen_path(2)
    with pytest.raises(ValueError, match="no grounding or reading stage"):
        on.replace(grounding_steps=0, reading_steps=0)
    with pytest.raises(ConfigError, match="'step'"):
        base.replace(text_pretraining={"step": 10})


def test_a_scored_run_is_reused_only_with_the_sft_settings_it_was_trained_with(tmp_path):
    """``_scored``: a run is finished when every sampling has scores and its ``study.json`` (written last); its
    recorded SFT settings must equal the ones the config gives it now; a record without them is refused."""
    cfg = MiniStudyConfig(output_dir=str(tmp_path))
    folders = [cfg.out() / "eval" / cfg.eval_name("2d_only", s, 0) for s in cfg.samplings_of("2d_only")]
    assert len(folders) >= 2 and not ms._scored(cfg, "2d_only", 0)
    record = {"variant": "2d_only", "seed": 0, "params": cfg.sft_config("2d_only", 0).to_dict()}
    for f in folders:
        f.mkdir(parents=True)
        (f / "scores.json").write_text("{}")
    (folders[0] / "study.json").write_text(json.dumps(record))
    assert not ms._scored(cfg, "2d_only", 0)  # one sampling's record is missing: redo the run
    (folders[1] / "study.json").write_text(json.dumps(record))
    assert ms._scored(cfg, "2d_only", 0)
    with pytest.raises(ValueError, match="other SFT settings \\(max_steps"):
        ms._scored(cfg.replace(max_steps=cfg.max_steps + 1), "2d_only", 0)
    (folders[1] / "study.json").write_text(json.dumps({k: v for k, v in record.items() if k != "params"}))
    with pytest.raises(ValueError, match="no record of its SFT settings"):
        ms._scored(cfg, "2d_only", 0)


@pytest.mark.timeout(600)
def test_a_short_clip_curriculum_starts_the_grounding_stage(tmp_path, one_thread):
    """``grounding_short_steps``: the grounding questions asked about clips of 2 consecutive uniform frames train
    the stage's start first (``pretrain/qwen_grounded_short``, val-checked on whole videos); the grounding stage
    then starts from it, and its model differs from the one without the curriculum. Reused when finished;
    other curriculum settings are refused by name."""
    from spatial_mllm.data.formats import read_jsonl
    from spatial_mllm.data.video import uniform_frame_indices

    assert MiniStudyConfig(num_frames=2).grounding_short_steps == 0  # off: its clip length is not checked
    cfg = _micro(tmp_path / "c").replace(grounding_short_steps=2, text_pretraining={}, reading_steps=0)
    plain = cfg.replace(grounding_short_steps=0, output_dir=str(tmp_path / "p"))
    assert plain.grounding_config().model_name_or_path == str(plain.llm_start_path())
    assert cfg.grounding_config().model_name_or_path == str(cfg.grounded_short_path())
    assert cfg.grounding_short_config().model_name_or_path == str(cfg.llm_start_path())
    assert cfg.grounding_short_config().max_steps == 2 and cfg.grounding_short_config().learning_rate == cfg.grounding_lr
    for c in (cfg, plain):
        ms.build_study_data(c)
        ms.pretrain_encoders(c, log=lambda *a: None)
    lines = []
    out = ms.ground_llm(cfg, log=lines.append)
    assert any("grounding curriculum (2 steps on clips of 2 frames)" in line for line in lines)
    short = json.loads((cfg.grounded_short_path() / "run.json").read_text())
    assert "visible_presence" in short["val"] and short["params"]["grounding_short_frames"] == 2
    rows = read_jsonl(cfg.data_dir() / cfg.grounding_short_file())
    uniform = [int(f) for f in uniform_frame_indices(cfg.num_frames_rendered, cfg.num_frames)]
    assert {tuple(r["frame_indices"]) for r in rows} <= {tuple(uniform[:2]), tuple(uniform[2:])}
    train = set(json.loads((cfg.data_dir() / "splits.json").read_text())["train"])
    assert {r["video"].split("/")[1] for r in rows} <= train
    assert ms.ground_llm(plain, log=lambda *a: None) == plain.grounded_path()
    assert not plain.grounded_short_path().exists()
    assert (out / "model.safetensors").read_bytes() != (plain.grounded_path() / "model.safetensors").read_bytes()
    stamp = (cfg.grounded_short_path() / "model.safetensors").stat().st_mtime_ns
    assert ms.ground_short_clips(cfg, log=lambda *a: None) == cfg.grounded_short_path()
    assert (cfg.grounded_short_path() / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="grounding_short_steps"):
        ms.ground_llm(cfg.replace(grounding_short_steps=3), log=lambda *a: None)
    with pytest.raises(ValueError, match="max_steps"):
        ms.ground_short_clips(cfg.replace(grounding_short_steps=3), log=lambda *a: None)
