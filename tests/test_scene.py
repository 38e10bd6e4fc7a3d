"""Scene model: ObjectBox geometry, scene.json and lossless VSI-Bench meta-info I/O."""

import json
from pathlib import Path

import numpy as np
import pytest

from spatial_mllm.data.scene import (
    ObjectBox,
    SceneMeta,
    load_scene,
    load_vsibench_meta,
    save_scene,
    save_vsibench_meta,
)

FIXTURE = Path(__file__).parent / "fixtures" / "meta_info_small.json"


def _rot_z(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_object_box_corners_min_max_and_normalized_axes():
    box = ObjectBox(
        category="table", centroid=[1, 2, 0.5], axes_lengths=[2, 1, 1], rotation=_rot_z(90), instance_id=3
    )
    k = box.corners()
    assert k.shape == (8, 3)
    # rotated 90°: the 2 m side runs along world y
    np.testing.assert_allclose(box.min, [0.5, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(box.max, [1.5, 3.0, 1.0], atol=1e-12)
    # normalizedAxes rows are the box axes: first row = local x axis in world = +y
    np.testing.assert_allclose(box.normalized_axes[:3], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(box.world_to_local(box.centroid + [0, 1, 0]), [1, 0, 0], atol=1e-12)
    assert box.longest_side == 2.0 and box.volume == pytest.approx(2.0)


def test_object_box_rejects_bad_shapes():
    with pytest.raises(ValueError, match="centroid"):
        ObjectBox(category="x", centroid=[0, 0], axes_lengths=[1, 1, 1])
    with pytest.raises(ValueError, match="axes_lengths"):
        ObjectBox(category="x", centroid=[0, 0, 0], axes_lengths=[1, -1, 1])


def test_scene_convenience_and_duplicate_ids():
    objs = [
        ObjectBox(category="chair", centroid=[0, 0, 0], axes_lengths=[1, 1, 1], instance_id=1),
        ObjectBox(category="chair", centroid=[2, 0, 0], axes_lengths=[1, 1, 1], instance_id=2),
        ObjectBox(category="sofa", centroid=[4, 0, 0], axes_lengths=[2, 1, 1], instance_id=5),
    ]
    s = SceneMeta(
        scene_id="s",
        objects=objs,
        room_size=20.0,
        room_center=[0, 0, 1],
        floor_polygon=[[0, 0], [5, 0], [5, 4], [0, 4]],
        dataset="synthetic",
    )
    assert s.categories == ["chair", "sofa"]
    assert s.object_counts == {"chair": 2, "sofa": 1}
    assert s.unique_categories() == ["sofa"]
    assert [o.instance_id for o in s.instances("chair")] == [1, 2]
    assert s.by_instance_id[5].category == "sofa"
    assert s.instances("bed") == []
    with pytest.raises(ValueError, match="duplicate instance ids"):
        SceneMeta(scene_id="d", objects=objs + [objs[0]])


def test_scene_json_roundtrip(tmp_path):
    s = SceneMeta(
        scene_id="syn_0001",
        objects=[
            ObjectBox(
                category="bed",
                centroid=[1.1, 2.2, 0.3],
                axes_lengths=[2.0, 1.6, 0.6],
                rotation=_rot_z(33.3),
                instance_id=7,
            )
        ],
        room_size=12.5,
        room_center=[1, 1, 1.25],
        floor_polygon=[[0, 0], [4, 0], [4, 3], [0, 3]],
        dataset="synthetic",
        video_path="videos/syn_0001.mp4",
    )
    p = save_scene(s, tmp_path / "scene.json")
    s2 = load_scene(p)
    assert s2.to_dict() == s.to_dict()
    np.testing.assert_array_equal(s2.objects[0].rotation, s.objects[0].rotation)  # exact floats
    save_scene(s2, tmp_path / "scene2.json")
    assert (tmp_path / "scene2.json").read_bytes() == p.read_bytes()
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_scene(tmp_path / "nope.json")


def test_load_vsibench_meta_schema():
    scenes = load_vsibench_meta(FIXTURE)
    assert list(scenes) == ["45663164", "scene0378_01", "5ee7c22ba0"]
    raw = json.loads(FIXTURE.read_text())
    s = scenes["scene0378_01"]
    assert s.dataset == "scannet" and s.room_size == raw["scene0378_01"]["room_size"]
    # rotation columns = rows of normalizedAxes; corners reproduce the stored min/max
    for o in s.objects:
        np.testing.assert_allclose(o.corners().min(0), o.min, atol=1e-9)
        np.testing.assert_allclose(o.corners().max(0), o.max, atol=1e-9)
        np.testing.assert_allclose(o.rotation.T @ o.rotation, np.eye(3), atol=1e-9)
    # object_counts kept as annotated (printer: 1 counted, 2 boxes)
    assert s.object_counts["printer"] == 1 and s.box_counts["printer"] == 2
    assert "printer" not in s.unique_categories()


def test_vsibench_meta_roundtrip_is_byte_identical(tmp_path):
    scenes = load_vsibench_meta(FIXTURE)
    out = save_vsibench_meta(scenes, tmp_path / "rt_meta_info_val.json")
    assert out.read_bytes() == FIXTURE.read_bytes()
    again = load_vsibench_meta(out)
    assert {k: v.to_dict() for k, v in again.items()} == {k: v.to_dict() for k, v in scenes.items()}


def test_vsibench_writer_for_new_and_edited_scenes(tmp_path):
    scenes = load_vsibench_meta(FIXTURE)
    s = scenes["45663164"]
    s.objects[0].centroid = s.objects[0].centroid + 1.0  # edited value is written fresh
    s2 = SceneMeta(
        scene_id="syn_1",
        objects=[
            ObjectBox(
                category="bed",
                centroid=[0, 0, 0.3],
                axes_lengths=[2, 1.5, 0.6],
                rotation=_rot_z(20),
                instance_id=1,
            )
        ],
        room_size=10.0,
        room_center=[0, 0, 1],
        dataset="synthetic",
    )
    p = save_vsibench_meta([s, s2], tmp_path / "x_meta_info_val.json")
    back = load_vsibench_meta(p)
    np.testing.assert_allclose(back["45663164"].objects[0].centroid, s.objects[0].centroid)
    b = back["syn_1"].objects[0]
    np.testing.assert_allclose(b.rotation, _rot_z(20), atol=1e-15)
    np.testing.assert_allclose(b.min, s2.objects[0].min)
    assert back["syn_1"].object_counts == {"bed": 1} and back["syn_1"].dataset == "synthetic"


def test_load_vsibench_meta_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_meta_info_val.json"):
        load_vsibench_meta(tmp_path / "missing_meta_info_val.json")
    bad = tmp_path / "bad_meta_info_val.json"
    bad.write_text(json.dumps({"s1": {"object_bbox": {}}}))
    with pytest.raises(KeyError, match="room_size"):
        load_vsibench_meta(bad)


# ../shared beside the project root (present on the developers' and CI machines, absent in a user's clone)
SHARED = [Path(__file__).resolve().parents[2] / "shared/data/vsibench_meta_info"]


@pytest.mark.parametrize("name", ["arkitscenes", "scannet", "scannetpp"])
def test_real_meta_info_roundtrip_if_present(tmp_path, name):
    root = next((p for p in SHARED if (p / f"{name}_meta_info_val.json").is_file()), None)
    if root is None:
        pytest.skip("VSI-Bench meta-info not available (../shared)")
    src = root / f"{name}_meta_info_val.json"
    out = save_vsibench_meta(load_vsibench_meta(src), tmp_path / src.name)
    assert out.read_bytes() == src.read_bytes()
