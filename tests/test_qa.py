"""QA ground truth (analytic scenes) and generators (determinism, skips, balance) on VSI-Bench rules."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from spatial_mllm.data.qa import (
    CHOICE_TYPES,
    META_INFO_TYPES,
    NUMERIC_TYPES,
    QUESTION_TYPES,
    TEMPLATES,
    AmbiguousObjectError,
    QAConfig,
    UnknownCategoryError,
    answer,
    first_appearance_times,
    generate_for_scenes,
    generate_scene_qa,
    relative_direction_angle,
)
from spatial_mllm.data.scene import ObjectBox, SceneMeta, load_vsibench_meta

FIXTURE = Path(__file__).parent / "fixtures" / "meta_info_small.json"


def box(cat, xy, size=(0.5, 0.5, 0.8), iid=0, z=None):
    return ObjectBox(
        category=cat,
        centroid=[xy[0], xy[1], size[2] / 2 if z is None else z],
        axes_lengths=size,
        instance_id=iid,
    )


def make_scene(dataset="synthetic"):
    """Standing at the bed (origin) facing the tv (+y): sofa front-left, desk back-right, lamp left-back…"""
    objs = [
        box("bed", (0, 0), (2.0, 1.6, 0.6)),
        box("tv", (0, 3), (1.2, 0.2, 0.7)),
        box("sofa", (-2, 2), (2.0, 0.9, 0.8)),  # θ = 45° → front-left
        box("desk", (2, -1), (1.4, 0.7, 0.75)),  # θ = 243.4° → back-right
        box("lamp", (-1.5, -1.5), (0.3, 0.3, 1.5)),  # θ = 135°: a boundary
        box("chair", (3, 3)),
        box("chair", (3.8, 3)),
        box("chair", (3, 3.8)),
        box("plant", (-3, -0.2), (0.4, 0.4, 1.0)),  # θ ≈ 93.8° → back-left
    ]
    for i, o in enumerate(objs, 1):
        o.instance_id = i
    return SceneMeta(
        scene_id="syn_test",
        objects=objs,
        room_size=31.46,
        room_center=[0, 1, 1.3],
        floor_polygon=[[-4, -3], [5, -3], [5, 5], [-4, 5]],
        dataset=dataset,
    )


def test_numeric_answers():
    s = make_scene()
    assert answer(s, "room_size_estimation") == 31.5
    assert answer(s, "object_counting", category="chair") == 3
    assert answer(s, "object_size_estimation", category="plant") == 100
    assert answer(s, "object_size_estimation", category="bed") == 200
    # bed spans y ∈ [-0.8, 0.8], tv y ∈ [2.9, 3.1]: closest points 2.1 m apart
    assert answer(s, "object_abs_distance", object_a="bed", object_b="tv") == 2.1
    # sofa x ∈ [-3, -1], y ∈ [1.55, 2.45]; bed x ∈ [-1, 1], y ∈ [-0.8, 0.8]: gap only in y: 0.75
    assert answer(s, "object_abs_distance", object_a="sofa", object_b="bed") == 0.8


def test_rel_distance_min_over_instances():
    s = make_scene()
    # chairs at (3,3): closest instance to the tv is 1.8 - ... (x gap 3-0.25-0.6 = 2.15); desk is farther
    ans = answer(s, "object_rel_distance", target="tv", choices=["chair", "desk", "plant", "lamp"])
    assert ans == "chair"
    assert answer(s, "object_rel_distance", target="bed", choices=["chair", "desk", "plant", "tv"]) == "desk"


@pytest.mark.parametrize(
    "query, theta, hard, medium, easy",
    [
        ("sofa", 45.0, "front-left", "left", "left"),
        ("desk", 243.43, "back-right", "right", "right"),
        ("plant", 93.81, "back-left", "left", "left"),
    ],
)
def test_relative_direction(query, theta, hard, medium, easy):
    s = make_scene()
    slots = dict(positioning="bed", orienting="tv", querying=query)
    assert relative_direction_angle(*(s.instances(c)[0] for c in ("bed", "tv", query))) == pytest.approx(
        theta, abs=0.01
    )
    assert answer(s, "object_rel_direction_hard", **slots) == hard
    assert answer(s, "object_rel_direction_medium", **slots) == medium
    assert answer(s, "object_rel_direction_easy", **slots) == easy


def test_direction_quadrant_conventions():
    # facing +y from the origin: +x is to the right (CW), -x to the left (CCW)
    assert relative_direction_angle([0, 0], [0, 1], [-1, 0.5]) == pytest.approx(63.43, abs=0.01)
    assert relative_direction_angle([0, 0], [0, 1], [1, 0.5]) == pytest.approx(360 - 63.43, abs=0.01)


def test_unknown_and_ambiguous_categories():
    s = make_scene()
    with pytest.raises(UnknownCategoryError, match=r"'piano'.*categories present: \[.*'bed'"):
        answer(s, "object_counting", category="piano")
    with pytest.raises(UnknownCategoryError, match="piano"):
        answer(s, "object_rel_distance", target="bed", choices=["piano", "tv", "sofa", "desk"])
    with pytest.raises(AmbiguousObjectError, match="chair"):
        answer(s, "object_size_estimation", category="chair")
    with pytest.raises(ValueError, match="unknown question type"):
        answer(s, "object_height")


def test_appearance_order_from_masks():
    s = make_scene()
    T, H, W = 50, 8, 8
    ids = np.zeros((T, H, W), np.int32)
    by = {o.category: o.instance_id for o in s.objects if o.category != "chair"}
    ids[5:, :2, :2] = by["tv"]  # 4 px from frame 5
    ids[12:, 2:4, :] = by["sofa"]  # 16 px from frame 12
    ids[30:, 4:6, :] = by["desk"]
    ids[40:, 6:, :] = by["bed"]
    ids[2, 6:, :1] = by["bed"]  # 2 px at frame 2: below min_pixels
    times = first_appearance_times(s, ids, fps=10.0, min_pixels=4)
    assert times == {"tv": 0.5, "sofa": 1.2, "desk": 3.0, "bed": 4.0}
    ans = answer(
        s,
        "obj_appearance_order",
        choices=["bed", "desk", "tv", "sofa"],
        instance_ids=ids,
        fps=10.0,
        min_pixels=4,
    )
    assert ans == "tv, sofa, desk, bed"
    rows, skipped = generate_scene_qa(
        s, ["obj_appearance_order"], seed=1, video=(ids, 10.0), config=QAConfig(appearance_min_pixels=4)
    )
    # tv and sofa are only 0.7 s apart → no valid 4-tuple among these 4 categories
    assert rows == [] and skipped["obj_appearance_order/times_too_close"] == 1
    ids[:17, 2:4, :] = 0  # the sofa now appears at 1.7 s and the bed at 4.2 s: all gaps > 1 s
    ids[40:42, 6:, :] = 0
    rows, _ = generate_scene_qa(
        s, ["obj_appearance_order"], seed=1, video=(ids, 10.0), config=QAConfig(appearance_min_pixels=4)
    )
    assert len(rows) == 1 and rows[0]["answer"] == "tv, sofa, desk, bed"
    assert rows[0]["options"][ord(rows[0]["ground_truth"]) - 65][3:] == "tv, sofa, desk, bed"
    assert len(set(rows[0]["options"])) == 4
    with pytest.raises(ValueError, match="not in the scene"):
        first_appearance_times(s, np.full((1, 2, 2), 99, np.int32), fps=1.0)


def test_route_planning_answer_and_generation():
    s = make_scene()
    # at the bed facing the tv; bed→tv needs no turn; tv→desk: heading +y, leg (2,-4) → -153.4° → back
    assert answer(s, "route_planning", start="bed", facing="tv", route=["tv", "desk"]) == "Turn Back"
    assert (
        answer(s, "route_planning", start="bed", facing="tv", route=["tv", "sofa"]) == "Turn Left"
    )  # +116.6°
    # tv→desk: -153.4° (back); desk→plant: heading (2,-4), leg (-5, 0.8): -125.6° (right)
    assert (
        answer(s, "route_planning", start="bed", facing="tv", route=["tv", "desk", "plant"])
        == "Turn Back, Turn Right"
    )
    # not starting toward the facing object: the first leg needs a turn too (bed→desk: -116.6°)
    assert answer(s, "route_planning", start="bed", facing="tv", route=["desk"]) == "Turn Right"
    rows, skipped = generate_scene_qa(s, ["route_planning"], seed=0)
    assert rows, skipped
    for r in rows:
        assert "[please fill in]" in r["question"] and r["question"].endswith(
            "You have reached the final destination."
        )
        n = r["question"].count("[please fill in]") - 1  # the instruction names it once
        assert len(r["answer"].split(", ")) == n
        assert r["answer"] == answer(s, "route_planning", **r["slots"])
        assert r["options"][ord(r["ground_truth"]) - 65][3:] == r["answer"]
    # exactly 3 single-instance objects: start, facing and one stop; never more stops than objects
    small = SceneMeta(
        scene_id="s3",
        objects=[box("bed", (0, 0), iid=1), box("tv", (0, 3), iid=2), box("desk", (-3, 1), iid=3)],
        room_size=20.0,
    )
    for seed in range(5):
        small_rows, _ = generate_scene_qa(small, ["route_planning"], seed=seed)
        assert all(r["answer"] == answer(small, "route_planning", **r["slots"]) for r in small_rows)
    scannet_rows, sk = generate_scene_qa(make_scene("scannet"), ["route_planning"], seed=0)
    assert scannet_rows == [] and sk["route_planning/not_synthetic"] == 1


def test_generator_rows_are_consistent_and_deterministic():
    s = make_scene()
    types = [t for t in QUESTION_TYPES if t != "obj_appearance_order"]
    rows, skipped = generate_scene_qa(s, types, seed=3)
    rows2, skipped2 = generate_scene_qa(s, types, seed=3)
    assert rows == rows2 and skipped == skipped2
    got = Counter(r["question_type"] for r in rows)
    assert got["room_size_estimation"] == 1 and got["object_counting"] == 1
    assert got["object_size_estimation"] == 6  # every single-instance category
    for r in rows:
        qt = r["question_type"]
        assert r["answer"] == answer(s, qt, **r["slots"])
        if qt in NUMERIC_TYPES:
            assert r["options"] is None and float(r["ground_truth"]) == pytest.approx(r["answer"])
        else:
            assert r["options"][ord(r["ground_truth"]) - 65] == f"{r['ground_truth']}. {r['answer']}"
    # the lamp sits at θ = 135°, a medium boundary: never asked as a medium query from bed facing tv
    assert not any(
        r["slots"] == {"positioning": "bed", "orienting": "tv", "querying": "lamp"}
        for r in rows
        if r["question_type"] == "object_rel_direction_medium"
    )
    q = next(r for r in rows if r["question_type"] == "object_counting")["question"]
    assert q == "How many chair(s) are in this room?"


def test_empty_and_poor_scenes_are_skipped_not_crashing():
    empty = SceneMeta(scene_id="empty", objects=[], room_size=None, dataset="synthetic")
    rows, skipped = generate_scene_qa(empty, seed=0)
    assert rows == []
    assert skipped["room_size_estimation/no_room_size"] == 1
    assert skipped["object_counting/no_category_with_2_instances"] == 1
    assert skipped["object_rel_direction_hard/fewer_than_3_single_instance_categories"] == 1
    assert skipped["obj_appearance_order/no_video"] == 1
    assert all(v > 0 for v in skipped.values())


def test_generate_for_scenes_on_meta_info_fixture():
    scenes = load_vsibench_meta(FIXTURE)
    rows, skipped = generate_for_scenes(scenes, META_INFO_TYPES, seed=0)
    rows_rev, _ = generate_for_scenes(dict(reversed(list(scenes.items()))), META_INFO_TYPES, seed=0)
    assert rows == rows_rev  # independent of scene order
    assert [r["id"] for r in rows] == list(range(len(rows)))
    c = Counter(r["question_type"] for r in rows)
    assert c["room_size_estimation"] == 3
    # scene0378_01: chair (4) and table (3) counted; printer (1 annotated, 2 boxes) and bookshelf (2) too
    counted = {
        r["slots"]["category"]: r["answer"]
        for r in rows
        if r["question_type"] == "object_counting" and r["scene_name"] == "scene0378_01"
    }
    assert counted == {"chair": 4, "bookshelf": 2, "table": 3}
    for r in rows:
        scene = scenes[r["scene_name"]]
        assert r["answer"] == answer(scene, r["question_type"], **r["slots"])
        assert r["dataset"] == scene.dataset
    room = next(
        r for r in rows if r["question_type"] == "room_size_estimation" and r["scene_name"] == "45663164"
    )
    assert room["ground_truth"] == f"{scenes['45663164'].room_size:.1f}"
    assert room["question"] == TEMPLATES["room_size_estimation"]
    assert sum(skipped.values()) > 0


def test_answer_letters_are_balanced():
    scenes = {f"s{i}": make_scene() for i in range(6)}
    for i, s in enumerate(scenes.values()):
        s.scene_id = f"s{i}"
    rows, _ = generate_for_scenes(scenes, ["object_rel_direction_hard", "object_rel_direction_easy"], seed=0)
    for qt, n_opt in (("object_rel_direction_hard", 4), ("object_rel_direction_easy", 2)):
        letters = Counter(r["ground_truth"] for r in rows if r["question_type"] == qt)
        assert set(letters) <= set("ABCD"[:n_opt])
        assert max(letters.values()) - min(letters.values()) <= 1, letters
    assert set(CHOICE_TYPES) | set(NUMERIC_TYPES) == set(QUESTION_TYPES)
