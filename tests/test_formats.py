"""Writers/readers: VSI-Bench rows, training conversations, Video-R1 rows, <think>/<answer>."""

import json
from pathlib import Path

import pytest

from spatial_mllm.data.formats import (
    build_prompt,
    format_think_answer,
    parse_think_answer,
    read_jsonl,
    read_vsibench_rows,
    to_training_record,
    to_video_r1_row,
    to_vsibench_row,
    write_training_jsonl,
    write_vsibench_rows,
)
from spatial_mllm.data.qa import META_INFO_TYPES, generate_for_scenes
from spatial_mllm.data.scene import load_vsibench_meta

FIXTURE = Path(__file__).parent / "fixtures" / "meta_info_small.json"

MC = {
    "id": 7,
    "dataset": "scannet",
    "scene_name": "scene0000_00",
    "question_type": "object_rel_distance",
    "question": "Measuring from the closest point of each object, which of these objects (chair, tv, sofa, "
    "bed) is the closest to the table?",
    "ground_truth": "C",
    "options": ["A. chair", "B. tv", "C. sofa", "D. bed"],
    "answer": "sofa",
    "slots": {},
}
NA = {
    "id": 3,
    "dataset": "arkitscenes",
    "scene_name": "41069025",
    "question_type": "object_abs_distance",
    "question": "Measuring from the closest point of each object, what is the distance between the sofa and "
    "the stove (in meters)?",
    "ground_truth": "2.9",
    "options": None,
    "answer": 2.9,
    "slots": {},
}


def test_prompts_match_reference_wording():
    assert build_prompt(MC) == (
        MC["question"] + "\nOptions:\nA. chair\nB. tv\nC. sofa\nD. bed\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert build_prompt(NA) == NA["question"] + "\nPlease answer the question using a single word or phrase."
    assert build_prompt(NA, "lmms_eval").startswith("These are frames of a video.\n" + NA["question"])
    think = build_prompt(MC, "think")
    assert think.startswith(MC["question"] + "\nOptions:\nA. chair")
    assert "<think> </think>" in think and think.endswith(
        "Please provide only the single option letter (e.g., A, B, C, D, etc.) "
        "within the <answer> </answer> tags."
    )
    assert build_prompt(NA, "think").endswith("(e.g., 42 or 3.14) within the <answer> </answer> tags.")
    with pytest.raises(ValueError, match="style"):
        build_prompt(NA, "chatml")


def test_training_record_and_vsibench_row():
    rec = to_training_record(MC)
    assert rec["video"] == "scannet/scene0000_00.mp4"
    assert rec["conversations"][0] == {"from": "human", "value": "<video>\n" + build_prompt(MC)}
    assert rec["conversations"][1] == {"from": "gpt", "value": "C"}
    assert rec["ground_truth"] == "C" and rec["options"] == MC["options"]
    rec = to_training_record(NA, video="v.mp4", style="think", think="The sofa is about 3 m away.")
    assert (
        rec["conversations"][1]["value"] == "<think>The sofa is about 3 m away.</think><answer>2.9</answer>"
    )
    assert rec["options"] is None
    with pytest.raises(ValueError, match="think"):
        to_training_record(NA, style="think")
    row = to_vsibench_row(MC)
    assert list(row) == [
        "id",
        "dataset",
        "scene_name",
        "question_type",
        "question",
        "ground_truth",
        "options",
    ]
    r1 = to_video_r1_row(MC, think="hmm")
    assert r1["solution"] == "<answer>C</answer>" and r1["problem_type"] == "multiple choice"
    assert to_video_r1_row(NA)["problem_type"] == "numerical" and to_video_r1_row(NA)["options"] == []


def test_think_answer_parsing():
    assert parse_think_answer(format_think_answer("a", "B")) == ("a", "B")
    assert parse_think_answer("  <think>x\ny</think>\n<answer> 3.5 </answer> ") == ("x\ny", " 3.5 ")
    assert parse_think_answer("<answer>B</answer>") is None
    assert parse_think_answer("<think>a</think><answer>B</answer><answer>C</answer>") is None
    assert parse_think_answer("<think>a</think><think>b</think><answer>B</answer>") is None


def test_files_are_byte_identical_and_round_trip(tmp_path):
    rows, _ = generate_for_scenes(load_vsibench_meta(FIXTURE), META_INFO_TYPES, seed=0)
    a = write_vsibench_rows(rows, tmp_path / "a.jsonl")
    b = write_vsibench_rows(list(reversed(rows)), tmp_path / "b.jsonl")  # sorted by id
    assert a.read_bytes() == b.read_bytes()
    back = read_vsibench_rows(a)
    assert back == [to_vsibench_row(r) for r in rows]
    mc = [r for r in back if r["options"]]
    assert mc and all(r["ground_truth"] in "ABCD" and r["options"][0].startswith("A. ") for r in mc)
    na = [r for r in back if r["options"] is None]
    assert na and all(float(r["ground_truth"]) > 0 for r in na)
    t1 = write_training_jsonl(rows, tmp_path / "t1.jsonl")
    t2 = write_training_jsonl(rows, tmp_path / "t2.jsonl")
    assert t1.read_bytes() == t2.read_bytes()
    recs = read_jsonl(t1)
    assert len(recs) == len(rows) and all(
        r["conversations"][0]["value"].startswith("<video>\n") for r in recs
    )
    with pytest.raises(KeyError, match="no reasoning"):
        write_training_jsonl(rows, tmp_path / "t3.jsonl", style="think", thinks={})


def test_readers_report_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_jsonl(tmp_path / "missing.jsonl")
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n{not json}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_jsonl(p)
    q = tmp_path / "rows.json"
    q.write_text(json.dumps([{**to_vsibench_row(NA), "options": []}]))
    assert read_vsibench_rows(q)[0]["options"] is None
