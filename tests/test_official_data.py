"""Official Spatial-MLLM SFT data (spatial_mllm.data.official) on fixture files in the official schemas: the
registry and the ``%N`` subset, the lossless round trip, the VSI-590K preprocessing, and converted rows through
the SFT dataset + collator with the tiny processor (directly and through SFTConfig.train_mix)."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from spatial_mllm.config import ConfigError, load_params
from spatial_mllm.data import official
from spatial_mllm.data.collate import IGNORE_INDEX, BadRowError, SFTCollator, SFTDataset
from spatial_mllm.data.render import write_mp4
from spatial_mllm.train.sft import SFTConfig, build_dataset_and_collator, ensure_training_data, training_rows

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "official_data"
ANN = FIX / "annotations"


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _media_root(tmp_path: Path) -> Path:
    """``tmp/datasets`` in the official layout: the fixture annotations and a tiny mp4 for every video."""
    root = tmp_path / "datasets"
    shutil.copytree(ANN, root / "annotations")
    rng = np.random.default_rng(0)
    videos = set()
    for f in ANN.glob("*.jsonl"):
        for row in official.read_official_annotations(f):
            v = row.get("video")
            videos.update(v if isinstance(v, list) else [v] if v else [])
    for v in sorted(videos):
        write_mp4(root / "visuals" / v, (rng.random((6, 56, 56, 3)) * 255).astype(np.uint8), fps=2.0)
    return root


def test_registry_and_recipes_match_the_official_code():
    # master src/qwenvl/data/__init__.py data_dict, TRAINING.md, spatial_mllm_train_demo.sh
    assert {n: d.annotation for n, d in official.REGISTRY.items()} == {
        "spatial_mllm_mix_133k": "spatial-mllm-mix-133k.jsonl", "spatial_mllm_mix_203k": "spatial-mllm-mix-203k.jsonl",
        "route_plan_scannet_2k": "routeplan-2k.jsonl", "route_plan_4k": "routeplan-4k.jsonl",
        "vsi_590k": "vsi-590k-processed.jsonl", "mindcube_21k": "mindcube-processed.jsonl"}
    assert official.RECIPES["v1.1-135k"] == ("spatial_mllm_mix_133k", "route_plan_scannet_2k")
    assert official.RECIPES["v1.1-820k"] == ("spatial_mllm_mix_203k", "route_plan_4k", "vsi_590k", "mindcube_21k")
    assert official.parse_mix_entry("vsi_590k") == ("vsi_590k", 1.0)
    assert official.parse_mix_entry("vsi_590k%25") == ("vsi_590k", 0.25)
    for bad, msg in (("vsi_590k%0", "1..100"), ("vsi_590k%150", "1..100"), ("scanqa", "unknown official dataset"),
                     ("vsi 590k", "is not")):
        with pytest.raises(ValueError, match=msg):
            official.parse_mix_entry(bad)


@pytest.mark.parametrize("path", sorted(ANN.glob("*.jsonl")), ids=lambda p: p.name)
def test_round_trip_is_lossless(path):
    for i, (line, row) in enumerate(zip(_lines(path), official.read_official_annotations(path)), 1):
        ours = official.from_official(row, "x", i)
        json.dumps(ours)  # plain JSON
        back = official.to_official(ours)
        assert back == row and list(back) == list(row)  # same JSON, same key order
        assert json.dumps(back) == line  # byte-identical line (the fixtures are json.dumps lines)
        for k in ("video", "image", "conversations", "question_type"):
            if k in row:
                assert ours[k] == row[k]
        assert set(ours["official"]["extra"]) == set(row) - {"video", "image", "conversations", "conversation",
                                                             "question_type"}


def test_round_trip_through_files(tmp_path):
    root = tmp_path / "d"
    shutil.copytree(ANN, root / "annotations")
    rows = official.load_official_mix(list(official.RECIPES["v1.1-820k"]), root)
    by = {}
    for r in rows:
        by.setdefault(r["official"]["dataset"], []).append(r)
    for name, rs in by.items():
        out = official.write_official_jsonl(rs, tmp_path / "back" / official.REGISTRY[name].annotation)
        assert out.read_bytes() == (ANN / official.REGISTRY[name].annotation).read_bytes(), name


def test_raw_conversation_key_and_unmapped_fields_survive():
    row = {"conversation": [{"from": "human", "value": "<video>\nq"}, {"from": "gpt", "value": "A"}],
           "video": "a.mp4", "official": {"nested": [1, 2]}, "id": 3}
    ours = official.from_official(row, "vsi_590k", 7)
    assert ours["conversations"] == row["conversation"] and ours["official"]["extra"] == {"official": {"nested": [1, 2]},
                                                                                         "id": 3}
    assert list(official.to_official(ours)) == ["conversation", "video", "official", "id"]
    with pytest.raises(ValueError, match="both"):
        official.from_official({**row, "conversations": []})
    with pytest.raises(ValueError, match="not a row converted"):
        official.to_official({"video": "a.mp4", "conversations": []})


def test_preprocess_vsi_590k_is_the_official_script():
    raw = official.read_official_annotations(FIX / "raw" / "vsi_590k.jsonl")
    before = json.dumps(raw)
    rows, counts = official.preprocess_vsi_590k(raw)
    assert json.dumps(raw) == before  # input untouched
    assert rows == official.read_official_annotations(ANN / "vsi-590k-processed.jsonl")
    # <image> → <video> in the two video rows; the first video and the image path get the prefix (the third
    # row's video already has it); the image row keeps its <image>
    assert counts == {"replacements": 2, "video_updates": 1, "image_updates": 1}


def test_mix_subset_is_the_official_draw(tmp_path):
    root = tmp_path / "d"
    (root / "annotations").mkdir(parents=True)
    for name, n in (("spatial_mllm_mix_133k", 40), ("route_plan_scannet_2k", 30)):
        rows = [{"video": f"{name}/{i}.mp4", "conversations": [{"from": "human", "value": "<video>\nq"},
                                                                 {"from": "gpt", "value": str(i)}]} for i in range(n)]
        (root / "annotations" / official.REGISTRY[name].annotation).write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    got = official.load_official_mix(["spatial_mllm_mix_133k%25", "route_plan_scannet_2k%50"], root)
    # the official loader: random.seed(42), then random.sample per dataset in order
    random.seed(42)
    a = random.sample(official.read_official_annotations(root / "annotations" / "spatial-mllm-mix-133k.jsonl"), 10)
    b = random.sample(official.read_official_annotations(root / "annotations" / "routeplan-2k.jsonl"), 15)
    assert [official.to_official(r) for r in got] == a + b
    assert [r["official"]["line"] for r in got[:3]] == [int(r["video"].split("/")[1][:-4]) + 1 for r in a[:3]]
    with pytest.raises(ValueError, match="twice"):
        official.load_official_mix(["route_plan_4k", "route_plan_4k%50"], root)
    with pytest.raises(FileNotFoundError, match="routeplan-4k.jsonl"):
        official.load_official_mix(["route_plan_4k"], root)


def test_supported_rows_and_reasons():
    rows = official.load_official_mix(list(official.RECIPES["v1.1-820k"]), FIX)
    usable, skipped, where = official.sft_rows(rows)
    assert skipped == {"image": 2, "text_only": 1}  # VSI-590K's image row, MindCube's image and chat rows
    assert where == ["vsi_590k:2 (image)", "mindcube_21k:1 (image)", "mindcube_21k:2 (text_only)"]
    assert all(isinstance(r["video"], str) for r in usable) and len(usable) == len(rows) - 3
    assert official.unsupported_reason({"video": ["a.mp4", "b.mp4"], "conversations": []}) == "multi_video"
    turns = [{"from": "human", "value": "<video>\nq"}, {"from": "gpt", "value": "A"}]
    assert official.unsupported_reason({"video": "a.mp4", "conversations": turns * 2}) == "multi_turn"
    assert official.unsupported_reason({"video": "a.mp4", "conversations": [
        {"role": "user", "content": "<video>q"}, {"role": "assistant", "content": "A"}]}) == "role_content_turns"
    assert official.unsupported_reason({"video": ["a.mp4"], "conversations": turns}) is None
    typed = official.vsibench_typed_rows(rows)
    assert [(r["question_type"], r["ground_truth"]) for r in typed] == [
        ("object_counting", "4"), ("object_rel_direction_easy", "B"), ("room_size_estimation", "21.5"),
        ("route_planning", "C")]


def test_converted_rows_feed_the_sft_collator(tmp_path, proc):
    root = _media_root(tmp_path)
    rows = official.load_official_mix(list(official.RECIPES["v1.1-135k"]), root)
    usable, skipped, _ = official.sft_rows(rows)
    assert not skipped and len(usable) == 6  # 4 mix rows (one with a one-video list) + 2 route plans
    ds = SFTDataset(usable, root / "visuals", num_frames=4)
    assert [it["answer"] for it in ds] == ["4", "B", "a brown bowl", "203", "C", "A"]
    assert ds[2]["prompt"].startswith("What is on the café table") and ds[0]["question_type"] == "object_counting"
    batch = SFTCollator(proc, num_frames=4)([ds[i] for i in range(len(ds))])
    assert batch["input_ids"].shape[0] == 6 and batch["video_grid_thw"].shape == (6, 3)
    tok = proc.tokenizer
    for b, answer in enumerate(["4", "B", "a brown bowl", "203", "C", "A"]):
        labelled = batch["labels"][b][batch["labels"][b] != IGNORE_INDEX]
        assert tok.decode(labelled, skip_special_tokens=False) == answer + "<|im_end|>"
    assert torch.isfinite(batch["pixel_values_videos"]).all()


def test_sft_config_train_mix(tmp_path, proc):
    root = _media_root(tmp_path)
    base = dict(output_dir=str(tmp_path / "out"), official_data_root=str(root), num_frames=4,
                build_data_if_missing=False)
    cfg = SFTConfig(train_mix=["spatial_mllm_mix_133k", "route_plan_scannet_2k%50"], **base)
    assert ensure_training_data(cfg) == cfg.resolved_data_dir()  # nothing built, files checked
    assert cfg.training_video_root() == root / "visuals" and cfg.resolved_video_root() == cfg.resolved_data_dir()
    ds, col = build_dataset_and_collator(cfg, proc)
    assert len(ds) == 5 and len(training_rows(cfg)) == 5
    assert col([ds[0], ds[4]])["input_ids"].shape[0] == 2
    # the 820K mix has image / text-only rows: an error naming them, or skipped and counted
    mix = ["spatial_mllm_mix_203k", "route_plan_4k", "vsi_590k", "mindcube_21k"]
    with pytest.raises(BadRowError, match=r"vsi_590k:2 \(image\)"):
        build_dataset_and_collator(SFTConfig(train_mix=mix, **base), proc)
    ds, _ = build_dataset_and_collator(SFTConfig(train_mix=mix, on_bad_video="skip", **base), proc)
    assert len(ds) == 6 and ds.skipped == {"unsupported_image": 2, "unsupported_text_only": 1}
    with pytest.raises(FileNotFoundError, match="routeplan-2k.jsonl"):
        ensure_training_data(SFTConfig(train_mix=["route_plan_scannet_2k"], output_dir=str(tmp_path),
                                       official_data_root=str(tmp_path / "nowhere")))
    for kw, msg in (({"train_mix": ["nope"]}, "unknown official dataset"), ({"train_mix": []}, "empty"),
                    ({"train_mix": ["route_plan_4k"]}, "needs official_data_root"),
                    ({"official_data_root": "datasets"}, "only read with train_mix"),
                    ({"train_mix": ["route_plan_4k", "route_plan_4k%10"], "official_data_root": "d"}, "twice")):
        with pytest.raises(ValueError, match=msg):
            SFTConfig(**kw)


def test_paper_presets_are_the_official_recipes():
    paper = load_params(ROOT / "params/paper/03_sft.yaml", schema=SFTConfig)
    assert paper.train_mix == list(official.RECIPES["v1.1-135k"]) and paper.official_data_root == "datasets"
    assert (paper.num_frames, paper.learning_rate, paper.mm_projector_lr, paper.weight_decay, paper.warmup_ratio,
            paper.lr_scheduler_type, paper.num_train_epochs, paper.max_steps, paper.max_length, paper.max_grad_norm,
            paper.global_batch_size, paper.per_device_train_batch_size, paper.num_processes) == (
        16, 7e-6, 2e-5, 0.1, 0.03, "cosine", 1.0, -1, 8192, 1.0, 48, 1, 6)
    assert paper.gradient_accumulation_steps(6) == 8  # 6 GPUs × 1 × 8, the official script
    assert (paper.min_pixels, paper.max_pixels) == (293216, 324576)
    assert (paper.train_vision, paper.train_spatial, paper.train_merger, paper.train_connector, paper.train_llm) == (
        False, False, True, True, True)
    # the 820K file: the same recipe with the 820K mix; only these keys differ
    alt_raw = yaml.safe_load((ROOT / "params/paper_820k/03_sft.yaml").read_text())
    raw = yaml.safe_load((ROOT / "params/paper/03_sft.yaml").read_text())
    assert list(alt_raw) == list(raw)
    assert {k for k in raw if raw[k] != alt_raw[k]} == {"output_dir", "data_dir", "video_root", "train_mix",
                                                        "on_bad_video"}
    alt = load_params(ROOT / "params/paper_820k/03_sft.yaml")
    assert alt.train_mix == list(official.RECIPES["v1.1-820k"]) and alt.on_bad_video == "skip"
    # the tiny preset keeps its own data
    tiny = load_params(ROOT / "params/tiny/03_sft.yaml", schema=SFTConfig)
    assert tiny.train_mix is None and tiny.official_data_root is None
    with pytest.raises(ConfigError, match="unknown official dataset"):
        load_params(ROOT / "params/paper/03_sft.yaml", ["train_mix=[spatial_mllm_mix_999k]"])


def test_one_sft_step_on_the_official_mix(tmp_path):
    from spatial_mllm.train.sft import train_sft

    root = _media_root(tmp_path)
    cfg = SFTConfig(output_dir=str(tmp_path / "out"), official_data_root=str(root), num_frames=4, max_steps=1,
                    train_mix=list(official.RECIPES["v1.1-820k"]), on_bad_video="skip", logging_steps=1,
                    save_steps=1000, per_device_train_batch_size=2, global_batch_size=2, max_pixels=56 * 56)
    res = train_sft(cfg)
    assert res.global_step == 1 and res.train_loss is not None and np.isfinite(res.train_loss)
    assert res.stats["rows"] == 6 and res.stats["skipped_unsupported_image"] == 2
    assert res.stats["skipped_unsupported_text_only"] == 1
