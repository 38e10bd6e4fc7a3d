"""Dataset build (notebook 01's stage): files, splits by scene, counts, determinism, real layouts, figures."""

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from spatial_mllm.config import ConfigError, load_params
from spatial_mllm.data.build import DataConfig, build_datasets, split_scenes
from spatial_mllm.data.formats import VSIBENCH_FIELDS, read_jsonl
from spatial_mllm.data.qa import META_INFO_TYPES, QUESTION_TYPES
from spatial_mllm.data.render import load_rendered

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "meta_info_small.json"


def _cfg(out, **kw):
    base = dict(
        output_dir=str(out),
        num_scenes=3,
        width=64,
        height=48,
        num_frames=24,
        fps=2.0,
        max_area=20.0,
        train_fraction=0.34,
        val_fraction=0.33,
    )
    return DataConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    return build_datasets(_cfg(out, meta_info_path=str(FIXTURE)))


def test_files_splits_and_counts(built):
    d = built.data_dir
    for name in ["qa_rows.jsonl", "splits.json", "summary.json"] + [
        f"{s}_{k}.jsonl" for s in ("train", "val", "test") for k in ("sft", "vsibench")
    ]:
        assert (d / name).is_file(), name
    splits = json.loads((d / "splits.json").read_text())
    all_ids = sorted(built.scene_dirs)
    assert sorted(sum(splits.values(), [])) == all_ids and len(all_ids) == 3
    assert all(len(v) == 1 for v in splits.values())
    rows = read_jsonl(d / "qa_rows.jsonl")
    assert len(rows) == len(built.rows) > 20
    assert {r["question_type"] for r in rows} >= set(QUESTION_TYPES) - {
        "obj_appearance_order",
        "object_counting",
    }
    assert built.summary["qa_counts"] == dict(Counter(r["question_type"] for r in rows))
    for split, ids in splits.items():
        vsi = read_jsonl(d / f"{split}_vsibench.jsonl")
        sft = read_jsonl(d / f"{split}_sft.jsonl")
        assert len(vsi) == len(sft) == sum(r["split"] == split for r in rows)
        assert {r["scene_name"] for r in vsi} <= set(ids)  # no scene leaks across splits
        for r in vsi:
            assert list(r) == list(VSIBENCH_FIELDS)
        for rec in sft:
            assert (d / rec["video"]).is_file()  # video paths are relative to the data folder
            assert rec["conversations"][0]["value"].startswith("<video>\n")


def test_rendered_scene_folders(built):
    for sid, folder in built.scene_dirs.items():
        scene, frames = load_rendered(folder)
        assert scene.scene_id == sid and (folder / "video.mp4").stat().st_size > 0
        assert frames.rgb.shape == (24, 48, 64, 3) and frames.fps == 2.0
        assert scene.video_path == f"synthetic/{sid}/video.mp4"
        ids = set(np.unique(frames.instance_ids)) - {0}
        assert ids <= {o.instance_id for o in scene.objects}


def test_meta_info_layouts(built):
    info = built.summary["meta_info"]
    assert info["scenes"] >= 1
    assert set(info["qa_counts"]) <= set(META_INFO_TYPES) and sum(info["qa_counts"].values()) > 0
    rows = read_jsonl(built.data_dir / "meta_info_vsibench.jsonl")
    assert len(rows) == sum(info["qa_counts"].values())
    assert all(r["dataset"] != "synthetic" for r in rows)


def test_build_is_deterministic(tmp_path):
    digests = []
    for k in range(2):
        res = build_datasets(_cfg(tmp_path / f"r{k}", num_scenes=2, num_frames=8))
        files = ["qa_rows.jsonl", "train_sft.jsonl", "splits.json"]
        files += [str(p.relative_to(res.data_dir)) for p in sorted((res.data_dir / "synthetic").rglob("*.*"))]
        digests.append({f: hashlib.sha256((res.data_dir / f).read_bytes()).hexdigest() for f in files})
    assert digests[0] == digests[1]


def test_split_scenes_partitions():
    ids = [f"s{i:02d}" for i in range(20)]
    s = split_scenes(ids, 0.7, 0.15, seed=1)
    assert [len(s[k]) for k in ("train", "val", "test")] == [14, 3, 3]
    assert sorted(sum(s.values(), [])) == ids
    assert s == split_scenes(list(reversed(ids)), 0.7, 0.15, seed=1)


def test_config_validation_and_params_files():
    with pytest.raises(ValueError, match="unknown question types"):
        DataConfig(question_types=["object_color"])
    with pytest.raises(ValueError, match="even"):
        DataConfig(width=113)
    with pytest.raises(ValueError, match="train_fraction"):
        DataConfig(train_fraction=0.9, val_fraction=0.2)
    tiny = load_params(ROOT / "params" / "tiny" / "01_data_construction.yaml")
    assert tiny == DataConfig()  # the dataclass defaults are the tiny preset
    paper = load_params(ROOT / "params" / "paper" / "01_data_construction.yaml")
    assert paper.max_area == 60.0 and not paper.meta_info_path.startswith("..")
    with pytest.raises(ConfigError, match="num_scene"):
        DataConfig.from_dict({"num_scene": 3})


def test_viz_figures(built, tmp_path):
    from spatial_mllm import viz

    scene, frames = load_rendered(next(iter(built.scene_dirs.values())))
    fig = viz.plot_floor_plan(scene, frames.extrinsics)
    assert len(fig.axes[0].patches) == 1 + len(scene.objects)  # floor + one footprint per object
    fig = viz.plot_frame_strip(frames.rgb, frames.depth, frames.instance_ids, [0, 5, 10], scene)
    assert len(fig.axes) == 9 + 1  # 3 x 3 panels + colour bar
    fig = viz.plot_option_balance(built.rows)
    heights = [p.get_height() for p in fig.axes[0].patches if p.get_height() > 0]
    assert heights and max(heights) <= 1.0
    path = viz.save_figure(viz.plot_numeric_answer_distributions(built.rows), tmp_path / "f" / "num.png")
    assert path.stat().st_size > 1000
