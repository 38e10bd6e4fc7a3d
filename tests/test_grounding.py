"""Grounding questions (spatial_mllm/data/grounding.py): answers follow exactly the pixels of the shown frames."""

import json

import numpy as np
import pytest

from spatial_mllm.data.grounding import (
    DEFAULT_TYPES,
    GROUNDING_TYPES,
    frame_categories,
    grounding_records,
    visible_instances,
    write_grounding_file,
)
from spatial_mllm.data.synthetic import CATALOG

CATS = {1: "chair", 2: "chair", 3: "lamp", 4: "table", 5: "bed", 6: "sofa", 7: "chair"}


def _scene(tmp_path, name="room"):
    """8 rendered frames of 10×10 px; shown frames (4 of 8, uniform round) are 0, 2, 5, 7.
    chair 1: frame 0 (40 px); chair 2: frame 5 (30 px); chair 7: only unshown frame 1 (100 px) and 29 px in frame 7;
    lamp 3: frame 2; table 4: frame 7; bed 5: frame 0 (12 px) and frame 5; sofa 6: never visible."""
    ids = np.zeros((8, 10, 10), np.int32)
    ids[0].flat[:40] = 1
    ids[0].flat[40:52] = 5
    ids[1].flat[:] = 7
    ids[2].flat[:50] = 3
    ids[5].flat[:30] = 2
    ids[5].flat[30:80] = 5
    ids[7].flat[:29] = 7
    ids[7].flat[29:90] = 4
    d = tmp_path / "synthetic" / name
    d.mkdir(parents=True)
    np.savez(d / "frames.npz", instance_ids=ids)
    objects = [{"instance_id": i, "category": c} for i, c in CATS.items()]
    (d / "scene.json").write_text(json.dumps({"objects": objects}))
    return d


def test_visible_instances_first_shown_frame_and_threshold():
    ids = np.zeros((3, 4, 4), np.int32)
    ids[0].flat[:5] = 1
    ids[1].flat[:3] = 1  # below the threshold in frame 1 does not matter: already seen
    ids[1].flat[3:9] = 2
    ids[2].flat[:2] = 3  # too small
    assert visible_instances(ids, np.array([0, 1, 2]), 4) == {1: 0, 2: 1}
    assert visible_instances(ids, np.array([2, 1]), 4) == {2: 1}  # positions follow the shown order


def test_records_follow_the_shown_pixels(tmp_path):
    d = _scene(tmp_path)
    recs = grounding_records(d, "synthetic/room/video.mp4", 4, np.random.default_rng(0), min_pixels=30,
                             max_per_type=6)
    by = {}
    for r in recs:
        q = r["conversations"][0]["value"]
        assert q.startswith("<video>\n") and r["conversations"][1]["value"] == r["ground_truth"]
        by.setdefault(r["question_type"], []).append((q, r["ground_truth"], r["options"]))
    counts = {q.split("How many ")[1].split("(s)")[0]: a for q, a, _ in by["visible_counting"]}
    # chairs 1 and 2 seen; chair 7 only in an unshown frame / below 30 px; bed 12 px in frame 0 but 50 in frame 5
    assert counts == {"chair": "2", "lamp": "1", "table": "1", "bed": "1"}
    (objects,) = by["visible_objects"]
    assert objects[1] == "bed 1, chair 2, lamp 1, table 1"
    pres = {q.split("Is there a ")[1].split(" in")[0]: a for q, a, _ in by["visible_presence"]}
    assert sum(a == "yes" for a in pres.values()) == sum(a == "no" for a in pres.values()) == 4
    assert {c for c, a in pres.items() if a == "yes"} == {"chair", "lamp", "table", "bed"}
    assert all(c in CATALOG and c not in {"chair", "lamp", "table", "bed"} for c, a in pres.items() if a == "no")
    # first seen: chair (shown position 0) < lamp (1) < bed (2: its frame-0 pixels are below 30) < table (3)
    (q, a, opts), = set((q, a, tuple(o)) for q, a, o in by["first_visible"])
    assert dict(o.split(". ") for o in opts)[a] == "chair" and len(opts) == 4
    assert "Options:\nA. " in q


def test_file_is_deterministic_and_errors_name_the_room(tmp_path):
    _scene(tmp_path, "a")
    _scene(tmp_path, "b")
    p1 = write_grounding_file(tmp_path, ["b", "a"], tmp_path / "g1.jsonl", 4, seed=3)
    p2 = write_grounding_file(tmp_path, ["a", "b"], tmp_path / "g2.jsonl", 4, seed=3)
    assert p1.read_bytes() == p2.read_bytes()
    p3 = write_grounding_file(tmp_path, ["a", "b"], tmp_path / "g3.jsonl", 4, seed=4)
    assert p3.read_bytes() != p1.read_bytes()  # the seed draws the questions and option order
    assert '"video": "synthetic/a/video.mp4"' in p1.read_text().splitlines()[0]
    (tmp_path / "synthetic" / "c").mkdir()
    with pytest.raises(ValueError, match="synthetic/c"):
        write_grounding_file(tmp_path, ["c"], tmp_path / "g4.jsonl", 4, seed=0)


def test_random_subsets_carry_their_frames_and_sft_reads_them(tmp_path):
    from spatial_mllm.data.collate import BadRowError, SFTDataset
    from spatial_mllm.data.formats import write_jsonl

    d = _scene(tmp_path)
    recs = grounding_records(d, "synthetic/room/video.mp4", 4, np.random.default_rng(1), min_pixels=30,
                             random_subsets=3)
    own = [r for r in recs if "frame_indices" in r]
    assert {r.get("frame_indices") is None for r in recs} == {True, False}
    subsets = {tuple(r["frame_indices"]) for r in own}
    assert 1 <= len(subsets) <= 3 and all(len(s) == 4 and list(s) == sorted(set(s)) for s in subsets)
    ids = np.load(d / "frames.npz")["instance_ids"]
    for r in own:  # each subset's counts follow its own frames
        if r["question_type"] == "visible_counting" and "chair" in r["conversations"][0]["value"]:
            seen = visible_instances(ids, np.array(r["frame_indices"]), 30)
            assert r["ground_truth"] == str(sum(CATS[i] == "chair" for i in seen))
    # SFTDataset uses a row's own frames (before a frames cache) and names a bad list
    (tmp_path / "synthetic" / "room" / "video.mp4").write_bytes(b"")
    write_jsonl(own[:2], tmp_path / "rows.jsonl")
    ds = SFTDataset(tmp_path / "rows.jsonl", tmp_path, num_frames=4, check_videos=False,
                    frames_cache={"synthetic/room/video.mp4": [0, 1, 2, 3]})
    assert ds[0]["frame_indices"] == own[0]["frame_indices"]
    write_jsonl([{**own[0], "frame_indices": [1, -2]}], tmp_path / "bad.jsonl")
    with pytest.raises(BadRowError, match="bad.jsonl:1: frame_indices"):
        SFTDataset(tmp_path / "bad.jsonl", tmp_path, num_frames=4, check_videos=False)


def test_balanced_file_leaves_the_category_no_answer_prior(tmp_path):
    from spatial_mllm.data.grounding import balance_answers

    d = _scene(tmp_path)
    recs = grounding_records(d, "synthetic/room/video.mp4", 4, np.random.default_rng(0), min_pixels=30,
                             balance=True)
    pres = {q["conversations"][0]["value"].split("Is there a ")[1].split(" in")[0]: q["ground_truth"]
            for q in recs if q["question_type"] == "visible_presence"}
    # every catalog category is asked; chair 7 and bed's 12 px do not matter (chair and bed are seen), sofa never
    # shows, so "no"; nothing is glimpsed below 30 px without also being seen
    assert {c for c, a in pres.items() if a == "yes"} == {"chair", "lamp", "table", "bed"}
    assert set(pres) == set(CATALOG)
    # a category glimpsed below min_pixels in the shown frames is not asked (neither yes nor no)
    recs = grounding_records(d, "synthetic/room/video.mp4", 4, np.random.default_rng(0), min_pixels=45,
                             balance=True)
    asked = {q["conversations"][0]["value"].split("Is there a ")[1].split(" in")[0]: q["ground_truth"]
             for q in recs if q["question_type"] == "visible_presence"}
    assert "chair" not in asked and "bed" in asked and asked["lamp"] == "yes"  # chairs 40 / 30 px < 45

    def row(qtype, cat, answer):
        q = f"Is there a {cat} in this video? Answer yes or no." if qtype == "visible_presence" else \
            f"How many {cat}(s) can be seen in this video?"
        return {"question_type": qtype, "ground_truth": answer, "conversations": [{"value": "<video>\n" + q}]}

    rows = ([row("visible_presence", "door", "yes")] * 9 + [row("visible_presence", "door", "no")] * 2
            + [row("visible_presence", "bed", "yes")] * 3
            + [row("visible_counting", "chair", "1")] * 7 + [row("visible_counting", "chair", "2")] * 3
            + [row("visible_counting", "chair", "3")] * 1 + [row("visible_counting", "bed", "1")] * 5
            + [row("first_visible", "x", "A")] * 4)
    rows = [{**r, "i": i} for i, r in enumerate(rows)]
    out = balance_answers(rows, np.random.default_rng(0))
    got = {}
    for r in out:
        words = r["conversations"][0]["value"].split()
        key = (r["question_type"], words[4] if r["question_type"] == "visible_presence" else words[3])
        got.setdefault(key, []).append(r["ground_truth"])
    assert sorted(got[("visible_presence", "door")]) == ["no", "no", "yes", "yes"]
    assert ("visible_presence", "bed") not in got  # only ever "yes": its questions tell nothing but the prior
    assert sorted(got[("visible_counting", "chair(s)")]) == ["1", "1", "1", "2", "2", "2", "3"]
    assert ("visible_counting", "bed(s)") not in got
    assert len(got[("first_visible", "x(s)")]) == 4
    assert [r["i"] for r in out] == sorted(r["i"] for r in out)  # order kept
    # the file: balanced per category, deterministic
    _scene(tmp_path, "a")
    p1 = write_grounding_file(tmp_path, ["a", "room"], tmp_path / "b1.jsonl", 4, seed=0, balance=True)
    p2 = write_grounding_file(tmp_path, ["room", "a"], tmp_path / "b2.jsonl", 4, seed=0, balance=True)
    assert p1.read_bytes() == p2.read_bytes()
    # both rooms are the same scene: every category has one answer in both, so presence/counting all go
    kinds = {json.loads(line)["question_type"] for line in p1.read_text().splitlines()}
    assert kinds == {"visible_objects", "first_visible"}


def test_frame_objects_lists_each_shown_frame_and_leaves_the_other_types_as_they_were(tmp_path):
    d = _scene(tmp_path)
    kw = dict(min_pixels=30, max_per_type=6, random_subsets=1)
    base = grounding_records(d, "synthetic/room/video.mp4", 4, np.random.default_rng(5), **kw)
    full = grounding_records(d, "synthetic/room/video.mp4", 4, np.random.default_rng(5), **kw,
                             types=GROUNDING_TYPES)
    frames = [r for r in full if r["question_type"] == "frame_objects"]
    assert [r for r in full if r["question_type"] != "frame_objects"] == base  # the same draws, in the same order
    assert len(frames) == 2 and {r["question_type"] for r in base} == set(DEFAULT_TYPES)
    # shown frames 0, 2, 5, 7: chair 40 px (bed 12 px is below 30); lamp; chair 30 px + bed; table (chair 7: 29 px)
    assert frames[0]["ground_truth"] == "1: chair. 2: lamp. 3: bed, chair. 4: table."
    assert frames[0]["conversations"][1]["value"] == frames[0]["ground_truth"]
    assert "frame_indices" not in frames[0] and len(frames[1]["frame_indices"]) == 4
    ids = np.zeros((2, 4, 4), np.int32)
    ids[1].flat[:] = 1
    assert frame_categories(ids, np.array([1, 0]), {1: "sofa"}, 16) == [["sofa"], []]
    only = grounding_records(d, "synthetic/room/video.mp4", 4, np.random.default_rng(5), types=("frame_objects",))
    assert [r["question_type"] for r in only] == ["frame_objects"]
    assert "3: nothing." not in only[0]["ground_truth"]
    with pytest.raises(ValueError, match="counting"):
        grounding_records(d, "synthetic/room/video.mp4", 4, np.random.default_rng(5), types=("counting",))


def test_clips_ask_about_each_run_of_consecutive_shown_frames(tmp_path):
    """clip_frames=2 on 4 shown frames (0, 2, 5, 7): two clips, (0, 2) and (5, 7), each a video of its own whose
    answers are those of its own pixels; no first_visible (it needs 4 distinct first frames)."""
    d = _scene(tmp_path)
    recs = grounding_records(d, "synthetic/room/video.mp4", 4, np.random.default_rng(0), min_pixels=30,
                             max_per_type=6, types=GROUNDING_TYPES, clip_frames=2)
    assert {tuple(r["frame_indices"]) for r in recs} == {(0, 2), (5, 7)}
    assert "first_visible" not in {r["question_type"] for r in recs}
    objects = {tuple(r["frame_indices"]): r["ground_truth"] for r in recs if r["question_type"] == "visible_objects"}
    # clip (0, 2): chair 1 (40 px), lamp 3; the bed's 12 px in frame 0 are below 30. Clip (5, 7): chair 2, bed 5,
    # table 4; chair 7's 29 px in frame 7 are below 30
    assert objects == {(0, 2): "chair 1, lamp 1", (5, 7): "bed 1, chair 1, table 1"}
    frames = {tuple(r["frame_indices"]): r["ground_truth"] for r in recs if r["question_type"] == "frame_objects"}
    assert frames == {(0, 2): "1: chair. 2: lamp.", (5, 7): "1: bed, chair. 2: table."}
    counts = [(tuple(r["frame_indices"]), r["ground_truth"]) for r in recs
              if r["question_type"] == "visible_counting" and "chair" in r["conversations"][0]["value"]]
    assert sorted(counts) == [((0, 2), "1"), ((5, 7), "1")]  # the whole video sees 2 chairs; each clip one
    whole = grounding_records(d, "synthetic/room/video.mp4", 4, np.random.default_rng(0), min_pixels=30,
                              max_per_type=6, types=GROUNDING_TYPES)
    assert all("frame_indices" not in r for r in whole)  # without clips: the uniform video, as before
    p = write_grounding_file(tmp_path, ["room"], tmp_path / "clips.jsonl", 4, seed=0, clip_frames=2)
    assert {tuple(json.loads(line)["frame_indices"]) for line in p.read_text().splitlines()} == {(0, 2), (5, 7)}
    for bad in (3, 0):
        with pytest.raises(ValueError, match=f"clip_frames={bad}"):
            grounding_records(d, "v.mp4", 4, np.random.default_rng(0), clip_frames=bad)
    with pytest.raises(ValueError, match="random_subsets"):
        grounding_records(d, "v.mp4", 4, np.random.default_rng(0), clip_frames=2, random_subsets=1)
