"""The visible-instance reader (spatial_mllm/experiments/visible_reader.py): answers follow the shown frames' masks."""

import json

import numpy as np
import pytest

from spatial_mllm.experiments.visible_reader import VisibleReader, frame_content

CATS = {1: "chair", 2: "chair", 3: "lamp", 4: "table", 5: "bed", 6: "sofa"}


def _room(tmp_path, name, frames):
    """A rendered room of len(frames) 10×10 frames; ``frames[t]`` = {instance id: pixels} (laid out in order)."""
    ids = np.zeros((len(frames), 10, 10), np.int32)
    for t, content in enumerate(frames):
        k = 0
        for iid, n in content.items():
            ids[t].flat[k:k + n] = iid
            k += n
    d = tmp_path / "synthetic" / name
    d.mkdir(parents=True)
    np.savez(d / "frames.npz", instance_ids=ids)
    (d / "scene.json").write_text(json.dumps({"objects": [{"instance_id": i, "category": c} for i, c in CATS.items()]}))
    return str(d / "video.mp4")


def _item(video, qtype, question, gt, options=None, frames=None, num_frames=4):
    return {"id": 0, "video": video, "question_type": qtype, "question": question, "ground_truth": gt,
            "options": options, "frame_indices": frames, "num_frames": num_frames}


def _rooms(tmp_path):
    # room a, shown frames (uniform 4 of 4): chair 1 | lamp + chair 2 | table + lamp | bed (12 px: too small)
    a = _room(tmp_path, "a", [{1: 40}, {3: 30, 2: 30}, {4: 50, 3: 30}, {5: 12}])
    # room b: only a sofa in every frame, and a bed
    b = _room(tmp_path, "b", [{6: 40}, {6: 40, 5: 40}, {6: 40}, {6: 40}])
    return a, b


def test_frame_content_counts_first_frames_and_threshold(tmp_path):
    a, _ = _rooms(tmp_path)
    seen = frame_content(tmp_path / "synthetic" / "a", None, 4, 30)
    assert seen["count"] == {"chair": 2, "lamp": 1, "table": 1}  # bed: 12 px < 30
    assert seen["first"] == {"chair": 0, "lamp": 1, "table": 2}
    assert seen["frames"] == {"chair": {0, 1}, "lamp": {1, 2}, "table": {2}} and seen["instances"] == 4
    assert frame_content(tmp_path / "synthetic" / "a", [3, 2], 2, 10)["first"] == {"bed": 0, "table": 1, "lamp": 1}
    with pytest.raises(ValueError, match="outside its 4 frames"):
        frame_content(tmp_path / "synthetic" / "a", [0, 4], 2, 10)
    with pytest.raises(ValueError, match="synthetic/c"):
        frame_content(tmp_path / "synthetic" / "c", None, 2, 10)


def test_answers_follow_the_shown_frames_and_change_with_them(tmp_path):
    a, b = _rooms(tmp_path)
    train = [_item(a, "object_counting", "How many chair(s) are in this room?", "3"),
             _item(b, "object_counting", "How many chair(s) are in this room?", "2"),
             _item(a, "room_size_estimation", "What is the size of this room?", "20"),
             _item(b, "room_size_estimation", "What is the size of this room?", "14"),
             _item(a, "object_abs_distance", "distance?", "2.5"),
             _item(a, "route_planning", "route?", "B", ["A. Turn Left", "B. Turn Right"])]
    reader = VisibleReader(train, min_pixels=30)
    assert reader.count_map == {0: 2.0, 2: 3.0}  # visible count -> median true count of the training questions
    assert reader.size_line == pytest.approx((3.0, 8.0))  # a: 4 instances seen, 20 m²; b: 2 (sofa, bed), 14 m²

    count = _item(a, "object_counting", "How many chair(s) are in this room?", "2")
    order = _item(a, "obj_appearance_order", "What will be the first-time appearance order of the following "
                  "categories in the video: table, chair, lamp?", "B",
                  ["A. table, chair, lamp", "B. chair, lamp, table", "C. lamp, table, chair"])
    near = _item(a, "object_rel_distance", "which of these objects (table, bed) is the closest to the chair?", "A",
                 ["A. table", "B. lamp"])
    size = _item(a, "room_size_estimation", "What is the size of this room?", "20")
    prior = _item(a, "object_abs_distance", "distance?", "1")
    route = _item(a, "route_planning", "route?", "A", ["A. Turn Left", "B. Turn Right"])
    assert reader([count, order, near, size, prior, route]) == ["3", "B", "B", "20", "2.5", "B"]
    # the same questions with another room's frames: nothing of it is seen there
    other = [{**it, "video": b} for it in (count, order, near, size)]
    assert reader(other) == ["2", "A", "A", "14"]  # ties in order/near: the first option (no prior letter there)
    # with other frames of the same room (frame 2 only: table + lamp), the reading follows them
    only2 = [{**it, "frame_indices": [2], "num_frames": 1} for it in (count, order, near, size)]
    assert reader(only2) == ["2", "C", "A", "14"]


def test_without_counting_or_size_training_rows_it_reads_the_visible_count(tmp_path):
    a, _ = _rooms(tmp_path)
    reader = VisibleReader([_item(a, "route_planning", "route?", "A", ["A. x", "B. y"])], min_pixels=30)
    assert reader.count_map == {} and reader.size_line == (0.0, 0.0)
    assert reader([_item(a, "object_counting", "How many chair(s) are in this room?", "2")]) == ["2"]
