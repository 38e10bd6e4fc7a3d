"""Ablation grid (notebook 05): config and grid, confidence intervals on hand-computed numbers, the
stratified evaluation subset, resume, and one tiny variant end to end (train → scores.json → tables)."""

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from spatial_mllm.config import ConfigError, load_params  # noqa: E402
from spatial_mllm.data import formats  # noqa: E402
from spatial_mllm.data.render import save_npz, write_mp4  # noqa: E402
from spatial_mllm.experiments import ablations  # noqa: E402
from spatial_mllm.experiments.ablation_plots import plot_overall, plot_per_task, save_png_pdf  # noqa: E402
from spatial_mllm.experiments.ablations import AblationConfig, Variant, build_grid, mean_ci  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

QA = [  # (question_type, question, ground truth, options)
    ("object_counting", "How many chair(s) are in this room?", "2", None),
    ("object_rel_distance", "Which of these objects is the closest to the bed?", "A", ["A. chair", "B. table"]),
    ("room_size_estimation", "What is the size of this room in square meters?", "12.5", None),
    ("route_planning", "You are a robot beginning at the door facing the window.", "B", ["A. left", "B. right"]),
]


def make_scene_data(root: Path, frames: int = 8, size: int = 56) -> Path:
    """``root/data`` in notebook 01's layout with one 'rendered' scene: video.mp4 + frames.npz (a camera
    turning in place in front of a wall 2 m away), train_sft.jsonl and val_vsibench.jsonl."""
    data = root / "data"
    scene = data / "synthetic" / "s0"
    rng = np.random.default_rng(0)
    write_mp4(scene / "video.mp4", (rng.random((frames, size, size, 3)) * 255).astype(np.uint8), fps=2.0)
    K = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float32)
    ext = []
    for t in range(frames):  # yaw sweep of 180°: frames look at different parts of the world
        a = np.pi * t / frames
        R = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]], np.float32)
        ext.append(np.concatenate([R, np.zeros((3, 1), np.float32)], 1))
    depth = np.full((frames, size, size), 2.0, np.float32) + rng.random((frames, size, size)).astype(np.float32)
    save_npz(scene / "frames.npz", depth=depth, intrinsics=np.repeat(K[None], frames, 0), extrinsics=np.stack(ext))
    rows = [{"id": i, "dataset": "synthetic", "scene_name": "s0", "question_type": qt, "question": q,
             "ground_truth": gt, "options": opts} for i, (qt, q, gt, opts) in enumerate(QA)]
    formats.write_jsonl([formats.to_training_record(r, video="synthetic/s0/video.mp4") for r in rows],
                        data / "train_sft.jsonl")
    formats.write_vsibench_rows(rows, data / "val_vsibench.jsonl")
    return data


def micro_cfg(tmp_path, **kw) -> AblationConfig:
    base = dict(output_dir=str(tmp_path / "out"), data_dir=str(tmp_path / "data"), build_data_if_missing=False,
                connectors=["mlp_add"], samplings=["space_aware"], frames=[4], seeds=[0], max_steps=2,
                global_batch_size=2, per_device_train_batch_size=2, eval_limit=3, eval_batch_size=4,
                eval_max_new_tokens=4)
    return AblationConfig(**{**base, **kw})


def test_params_files_and_rejections():
    tiny = load_params(ROOT / "params/tiny/05_ablations.yaml")
    assert tiny == AblationConfig()  # the tiny yaml is the dataclass defaults
    paper = load_params(ROOT / "params/paper/05_ablations.yaml")
    assert paper.mode == "evaluate" and paper.space_aware_source == "vggt" and paper.frames == [8, 16, 32]
    assert {c["connector"] for c in paper.checkpoints} == {"none", "mlp_add", "mlp2_add"}
    with pytest.raises(ValueError, match="connectors: unknown"):
        AblationConfig(connectors=["mlp3"])
    with pytest.raises(ValueError, match="evaluate mode needs `checkpoints`"):
        AblationConfig(mode="evaluate")
    with pytest.raises(ValueError, match="set by the ablation grid"):
        AblationConfig(sft_overrides={"num_frames": 4})
    with pytest.raises(ValueError, match="not an SFTConfig field"):
        AblationConfig(sft_overrides={"warmup": 0.1})
    with pytest.raises(ConfigError, match="frames must be distinct"):
        load_params(ROOT / "params/tiny/05_ablations.yaml", ["frames=[8, 8]"])
    # the per-run SFT config carries the grid cell and the shared budget
    sft = tiny.sft_config(Variant("none", "space_aware", 16, 1))
    assert (sft.connector, sft.num_frames, sft.seed, sft.max_steps) == ("none", 16, 1, tiny.max_steps)
    assert sft.frames_cache.endswith("ablations/frames_cache/space_aware_ground_truth_k16.json")
    assert tiny.sft_config(Variant("none", "uniform", 8, 0)).frames_cache is None


def test_grid_train_and_evaluate_modes():
    cfg = AblationConfig()
    grid = build_grid(cfg)
    assert len(grid) == 3 * 2 * 2 * 3
    assert len({v.name for v in grid}) == len(grid)
    assert grid[0].name == "05_none_uniform_f8_s0" and grid[-1].name == "05_mlp2_add_space_aware_f16_s2"
    assert [v.seed for v in grid] == [0] * 12 + [1] * 12 + [2] * 12  # whole seeds first
    ev = AblationConfig(mode="evaluate", checkpoints=[
        {"name": "v1.1", "path": "Diankun/Spatial-MLLM-v1.1-Instruct-135K", "connector": "mlp_add"},
        {"name": "qwen", "path": "Qwen/Qwen2.5-VL-3B-Instruct", "connector": "none"}])
    egrid = build_grid(ev)
    assert [v.name for v in egrid[:4]] == ["05_v1.1_uniform_f8", "05_v1.1_uniform_f16", "05_v1.1_space_aware_f8",
                                           "05_v1.1_space_aware_f16"]
    assert len(egrid) == 8 and egrid[-1].connector == "none" and egrid[-1].path == "Qwen/Qwen2.5-VL-3B-Instruct"


def test_mean_ci_hand_computed():
    # t-interval of [1, 2, 3]: mean 2, s = 1, t_{0.975, 2} = 4.302653 → half-width 4.302653 / sqrt(3) = 2.484138
    r = mean_ci([1.0, 2.0, 3.0])
    assert r["n"] == 3 and r["mean"] == pytest.approx(2.0) and r["std"] == pytest.approx(1.0)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(2 - 2.484138, abs=1e-5), pytest.approx(2 + 2.484138, abs=1e-5))
    # two seeds 10 and 20: s = 7.0711, t_{0.975, 1} = 12.7062 → half-width 12.7062 · 7.0711 / sqrt(2) = 63.531
    r = mean_ci([10.0, 20.0])
    assert r["ci_high"] - 15.0 == pytest.approx(63.531, abs=1e-3)
    # 90 %: t_{0.95, 2} = 2.919986 → half-width 1.685854
    assert mean_ci([1.0, 2.0, 3.0], level=0.9)["ci_high"] == pytest.approx(2 + 1.685854, abs=1e-5)
    one = mean_ci([5.0, float("nan")])
    assert one["n"] == 1 and one["mean"] == 5.0 and math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])
    # bootstrap: constant data has a zero-width interval; otherwise it lies inside [min, max] around the mean
    b = mean_ci([4.0, 4.0, 4.0], method="bootstrap")
    assert (b["ci_low"], b["ci_high"]) == (4.0, 4.0)
    b = mean_ci([0.0, 10.0, 20.0, 30.0], method="bootstrap", n_boot=4000, seed=1)
    assert 0.0 <= b["ci_low"] < 15.0 < b["ci_high"] <= 30.0
    assert b == mean_ci([0.0, 10.0, 20.0, 30.0], method="bootstrap", n_boot=4000, seed=1)  # seeded


def test_eval_rows_stratified(tmp_path):
    data = tmp_path / "data"
    types = ["object_counting"] * 5 + ["route_planning"] * 3 + ["object_rel_distance"] * 2
    rows = [{"id": i, "dataset": "synthetic", "scene_name": "s0", "question_type": t, "question": "q",
             "ground_truth": "A" if t != "object_counting" else "3",
             "options": None if t == "object_counting" else ["A. a", "B. b"]} for i, t in enumerate(types)]
    formats.write_vsibench_rows(rows, data / "val_vsibench.jsonl")
    cfg = AblationConfig(output_dir=str(tmp_path), data_dir=str(data), eval_limit=5)
    picked = cfg.eval_rows()
    # round-robin over types: counting 0, 1; rel_distance 8, 9; route 5 — a plain prefix would be all counting
    assert [r["id"] for r in picked] == [0, 1, 5, 8, 9]
    assert len(AblationConfig(output_dir=str(tmp_path), data_dir=str(data), eval_limit=None).eval_rows()) == 10


def _fake_scores(micro: float) -> dict:
    return {"per_type": {}, "per_task": {"object_counting": micro, "route_planning": 2 * micro},
            "overall_macro": 1.5 * micro, "overall_micro": micro, "counts": {}, "num_questions": 2}


def test_resume_skips_finished_runs_and_tables(tmp_path, monkeypatch):
    make_scene_data(tmp_path)
    cfg = micro_cfg(tmp_path, connectors=["none", "mlp_add"], samplings=["uniform"], seeds=[0, 1])
    grid = build_grid(cfg)
    for v, micro in zip(grid[:3], (10.0, 40.0, 20.0)):  # 3 of 4 runs finished earlier
        d = cfg.out() / "eval" / v.name
        d.mkdir(parents=True)
        (d / "scores.json").write_text(json.dumps(_fake_scores(micro)))
        (d / "ablation.json").write_text(json.dumps({"settings": ablations._settings(cfg, v)}))
    calls = []

    def fake_run_variant(c, v, **kw):
        calls.append(v.name)
        d = c.out() / "eval" / v.name
        d.mkdir(parents=True, exist_ok=True)
        (d / "scores.json").write_text(json.dumps(_fake_scores(50.0)))
        (d / "ablation.json").write_text(json.dumps({"settings": ablations._settings(c, v)}))
        return _fake_scores(50.0)

    monkeypatch.setattr(ablations, "run_variant", fake_run_variant)
    statuses = ablations.run_ablations(cfg, log=lambda *a: None)
    assert calls == [grid[3].name]
    assert [s["status"] for s in statuses] == ["skipped"] * 3 + ["ran"]
    assert ablations.run_ablations(cfg, log=lambda *a: None)[3]["status"] == "skipped" and len(calls) == 1
    # finished runs made with other SFT settings are never reused: an error names the key
    with pytest.raises(ValueError, match="other run .* settings \\(sft"):
        ablations.run_ablations(cfg.replace(learning_rate=cfg.learning_rate / 2), log=lambda *a: None)

    runs, agg = ablations.write_tables(cfg)
    assert list(runs["run"]) == [v.name for v in grid]
    assert list(runs["overall_micro"]) == [10.0, 40.0, 20.0, 50.0]
    none = agg[(agg["connector"] == "none") & (agg["metric"] == "overall_micro")].iloc[0]
    assert (none["n"], none["mean"]) == (2, 15.0) and none["ci_high"] - 15.0 == pytest.approx(63.531, abs=1e-3)
    assert set(agg["metric"]) == {"overall_micro", "overall_macro", "object_counting", "route_planning"}
    tables = cfg.out() / "tables"
    assert pd.read_csv(tables / "05_ablations.csv").shape[0] == 4
    md = (tables / "05_ablations_aggregated.md").read_text()
    assert "Student-t" in md and "| tiny · none · uniform · f4 | 2 | 15.0 ± 63.5 |" in md

    fig = plot_overall(agg, runs=runs)
    assert [len(ax.patches) for ax in fig.axes[:2]] == [2, 2]  # one bar per connector (one sampling × frames)
    assert [p.suffix for p in save_png_pdf(fig, cfg.out() / "figures" / "05_overall")] == [".png", ".pdf"]
    assert (cfg.out() / "figures" / "05_overall.pdf").stat().st_size > 0
    fig = plot_per_task(agg, runs=runs)
    assert [ax.get_title() for ax in fig.axes if ax.patches] == ["object_counting", "route_planning"]
    plt.close("all")
    # a run whose scores exist but whose ablation.json (written last) does not is redone
    (cfg.out() / "eval" / grid[0].name / "ablation.json").unlink()
    assert ablations.run_ablations(cfg, log=lambda *a: None)[0]["status"] == "ran" and calls[-1] == grid[0].name


def test_one_variant_end_to_end(tmp_path):
    make_scene_data(tmp_path)
    cfg = micro_cfg(tmp_path)
    statuses = ablations.run_ablations(cfg, log=lambda *a: None)
    assert [s["status"] for s in statuses] == ["ran"]
    run_dir = cfg.out() / "eval" / "05_mlp_add_space_aware_f4_s0"
    scores = json.loads((run_dir / "scores.json").read_text())
    assert scores["num_questions"] == 3 and 0.0 <= scores["overall_micro"] <= 100.0
    info = json.loads((run_dir / "ablation.json").read_text())
    assert info["train_steps"] == 2 and info["connector"] == "mlp_add"
    assert info["settings"]["sft"]["max_steps"] == 2 and info["settings"] == ablations._settings(cfg, build_grid(cfg)[0])
    assert not (cfg.out() / "ablations" / "05_mlp_add_space_aware_f4_s0").exists()  # keep_checkpoints: false
    # the space-aware frames came from the ground-truth geometry: 4 sorted distinct frames of the 8
    cache = json.loads(cfg.frames_cache_path(4).read_text())
    assert list(cache) == ["synthetic/s0"] and len(set(cache["synthetic/s0"])) == 4
    assert cache["synthetic/s0"] == sorted(cache["synthetic/s0"]) and max(cache["synthetic/s0"]) < 8
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 3
    runs, _ = ablations.write_tables(cfg)
    assert runs.iloc[0][["connector", "sampling", "frames", "seed"]].tolist() == ["mlp_add", "space_aware", 4, 0]
    assert runs.iloc[0]["overall_micro"] == pytest.approx(scores["overall_micro"])
    mtime = (run_dir / "scores.json").stat().st_mtime_ns
    assert ablations.run_ablations(cfg, log=lambda *a: None)[0]["status"] == "skipped"
    assert (run_dir / "scores.json").stat().st_mtime_ns == mtime


# ---- the paper's experiments: stages, the controlled 2D-only baseline, frame counts -------------------------


def test_paper_preset_expresses_the_papers_experiments():
    paper = load_params(ROOT / "params/paper/05_ablations.yaml")
    cks = {c["name"]: c for c in paper.checkpoints}
    assert paper.frames == [8, 16, 32] and paper.samplings == ["uniform", "space_aware"]
    # spatial encoder: released v1.1-135K vs the 2D-only baseline fine-tuned on the same data (connector none)
    assert cks["spatial_mllm_v1.1"]["path"] == "Diankun/Spatial-MLLM-v1.1-Instruct-135K"
    base2d = cks["qwen2.5_vl_3b_sft_135k"]
    assert (base2d["connector"], base2d["stage"]) == ("none", "sft")
    assert ablations.local_checkpoint(base2d["path"]) is not None  # trained here (notebook 03, connector none)
    # training stages: SFT vs SFT + cold start + GRPO, the GRPO model with its reasoning prompt
    assert {c.get("stage", "sft") for c in paper.checkpoints} == set(ablations.STAGES)
    grpo = cks["ours_sft_grpo"]
    assert grpo["stage"] == "sft+cold_start+grpo" and grpo["prompt_style"] == "think" and grpo["max_new_tokens"] >= 128
    assert cks["ours_sft"]["stage"] == "sft" and cks["ours_sft"]["connector"] == grpo["connector"] == "mlp_add"
    grid = build_grid(paper)
    assert len(grid) == len(paper.checkpoints) * 2 * 3
    ev = paper.eval_config(next(v for v in grid if v.model == "ours_sft_grpo"))
    assert (ev.prompt_style, ev.extract_answer, ev.max_new_tokens) == ("think", True, grpo["max_new_tokens"])
    ev = paper.eval_config(next(v for v in grid if v.model == "spatial_mllm_v1.1"))
    assert (ev.prompt_style, ev.extract_answer) == (paper.eval_prompt_style, False)


def test_checkpoint_entries_stage_and_own_decoding():
    cks = [{"name": "a", "path": "Diankun/Spatial-MLLM-v1.1-Instruct-135K", "connector": "mlp_add"},
           {"name": "b", "path": "outputs/x/checkpoints/grpo/final", "connector": "mlp_add",
            "stage": "sft+cold_start+grpo", "prompt_style": "think", "max_new_tokens": 512}]
    cfg = AblationConfig(mode="evaluate", checkpoints=cks, frames=[8])
    va, vb = build_grid(cfg)[0], build_grid(cfg)[-1]
    assert (va.stage, va.prompt_style, va.max_new_tokens) == ("sft", None, None)  # default stage: sft
    assert (vb.stage, vb.prompt_style, vb.max_new_tokens) == ("sft+cold_start+grpo", "think", 512)
    assert vb.name == "05_b_space_aware_f8" and vb.to_dict()["stage"] == "sft+cold_start+grpo"
    assert Variant("none", "uniform", 8, 0).to_dict()["stage"] == "sft"  # train mode trains SFT only
    for bad, msg in (({"stage": "grpo"}, "stage 'grpo' not in"), ({"decoding": "official"}, "optional"),
                     ({"max_new_tokens": 0}, "max_new_tokens must be an int"),
                     ({"prompt_style": "think", "max_new_tokens": 16}, "max_new_tokens")):
        with pytest.raises(ValueError, match=msg):
            AblationConfig(mode="evaluate", checkpoints=[{**cks[0], **bad}])
    with pytest.raises(ConfigError, match="stage"):
        load_params(ROOT / "params/paper/05_ablations.yaml",
                    ["checkpoints=[{name: a, path: b/c, connector: none, stage: rl}]"])


def test_local_checkpoint_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("SPATIAL_MLLM_ROOT", str(tmp_path))
    assert ablations.local_checkpoint("Qwen/Qwen2.5-VL-3B-Instruct") is None  # a hub id
    assert ablations.local_checkpoint("outputs/paper/checkpoints/sft") == tmp_path / "outputs/paper/checkpoints/sft"
    assert ablations.local_checkpoint("./ck") == tmp_path / "ck"
    (tmp_path / "mine" / "ck").mkdir(parents=True)
    assert ablations.local_checkpoint("mine/ck") == tmp_path / "mine" / "ck"  # one slash, but it exists


def test_missing_local_checkpoints_are_skipped_with_a_note(tmp_path, monkeypatch):
    make_scene_data(tmp_path)
    monkeypatch.setenv("SPATIAL_MLLM_ROOT", str(tmp_path))
    (tmp_path / "ck" / "sft").mkdir(parents=True)
    cfg = AblationConfig(mode="evaluate", output_dir=str(tmp_path / "out"), data_dir=str(tmp_path / "data"),
                         samplings=["uniform"], frames=[4], eval_limit=2, checkpoints=[
                             {"name": "sft", "path": "ck/sft", "connector": "mlp_add"},
                             {"name": "grpo", "path": "ck/grpo/final", "connector": "mlp_add",
                              "stage": "sft+cold_start+grpo", "prompt_style": "think", "max_new_tokens": 256}])
    loaded, ran, notes = [], [], []

    def fake_load(c, v):
        loaded.append(v.path)
        return "model", "processor"

    def fake_run(c, v, **kw):
        ran.append(v.name)
        d = c.out() / "eval" / v.name
        d.mkdir(parents=True, exist_ok=True)
        (d / "scores.json").write_text(json.dumps(_fake_scores(30.0)))
        return _fake_scores(30.0)

    monkeypatch.setattr(ablations, "load_checkpoint", fake_load)
    monkeypatch.setattr(ablations, "run_variant", fake_run)
    statuses = ablations.run_ablations(cfg, log=notes.append)
    assert [s["status"] for s in statuses] == ["ran", "missing"] and ran == ["05_sft_uniform_f4"]
    assert loaded == ["ck/sft"] and any("grpo" in n and "not found" in n for n in notes)
    runs = ablations.summarize(cfg)
    assert list(runs["stage"]) == ["sft"] and "stage" in ablations.aggregate(runs).columns
