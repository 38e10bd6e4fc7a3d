"""ScanNet reader on a tiny scene written in ScanNet's exact file formats."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from spatial_mllm.data.scannet import (
    load_scannet_scene,
    read_axis_alignment,
    read_ply,
    upright_box,
    write_ply,
)
from spatial_mllm.data.scene import ObjectBox
from spatial_mllm.geometry.cameras import look_at, unproject_depth

SID = "scene0999_00"
K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
H, W = 48, 64


def rot_z(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


# mesh → aligned: rotate 30° about z and shift, as ScanNet's axisAlignment does
ALIGN = np.eye(4)
ALIGN[:3, :3] = rot_z(30)
ALIGN[:3, 3] = [1.0, -2.0, 0.0]
TABLE = ObjectBox(
    category="table", centroid=[2.5, 1.0, 0.375], axes_lengths=[1.2, 0.6, 0.75], rotation=rot_z(20)
)
CHAIR = ObjectBox(category="chair", centroid=[1.0, 2.0, 0.45], axes_lengths=[0.5, 0.5, 0.9])
BOX_FACES = [
    [0, 1, 3],
    [0, 3, 2],
    [4, 6, 7],
    [4, 7, 5],
    [0, 4, 5],
    [0, 5, 1],
    [2, 3, 7],
    [2, 7, 6],
    [0, 2, 6],
    [0, 6, 4],
    [1, 5, 7],
    [1, 7, 3],
]


def quad(a, b, c, d):
    return [a, b, c, d], [[0, 1, 2], [0, 2, 3]]


def write_scene(root):
    """A 4 m × 3 m room (floor, 4 walls 2.5 m high), a rotated table and a chair; 2 exported frames."""
    parts = [quad([0, 0, 0], [4, 0, 0], [4, 3, 0], [0, 3, 0])]  # floor
    for (x0, y0), (x1, y1) in (((0, 0), (4, 0)), ((4, 0), (4, 3)), ((4, 3), (0, 3)), ((0, 3), (0, 0))):
        parts.append(quad([x0, y0, 0], [x1, y1, 0], [x1, y1, 2.5], [x0, y0, 2.5]))
    parts += [(TABLE.corners().tolist(), BOX_FACES), (CHAIR.corners().tolist(), BOX_FACES)]
    seg_of_part = [0, 1, 1, 1, 1, 2, 3]
    verts, faces, seg = [], [], []
    for (v, f), s in zip(parts, seg_of_part):
        faces += (np.asarray(f) + len(verts)).tolist()
        verts += v
        seg += [s] * len(v)
    aligned = np.asarray(verts, dtype=np.float64)
    inv = np.linalg.inv(ALIGN)
    mesh = aligned @ inv[:3, :3].T + inv[:3, 3]
    d = root / SID
    (d / "color").mkdir(parents=True)
    for sub in ("depth", "pose", "intrinsic"):
        (d / sub).mkdir()
    colors = np.random.default_rng(0).integers(0, 255, (len(mesh), 3))
    write_ply(d / f"{SID}_vh_clean_2.ply", mesh, faces, colors)
    (d / f"{SID}_vh_clean_2.0.010000.segs.json").write_text(
        json.dumps({"params": {"kThresh": "0.0001"}, "sceneId": SID, "segIndices": seg})
    )
    groups = [
        {"id": i, "objectId": i, "segments": [s], "label": lab}
        for i, (s, lab) in enumerate([(0, "floor"), (1, "wall"), (2, "table"), (3, "chair")])
    ]
    (d / f"{SID}.aggregation.json").write_text(
        json.dumps(
            {"sceneId": f"scannet.{SID}", "appId": "Aggregator.v2", "segGroups": groups, "segmentsFile": "x"}
        )
    )
    (d / f"{SID}.txt").write_text(
        "colorHeight = 48\naxisAlignment = "
        + " ".join(f"{x:.9f}" for x in ALIGN.ravel())
        + "\nsceneType = Office\n"
    )
    K4 = np.eye(4)
    K4[:3, :3] = K
    for name in ("intrinsic_color.txt", "intrinsic_depth.txt"):
        np.savetxt(d / "intrinsic" / name, K4, fmt="%f")
    # frame 0: looking at the floor; the depth is the exact floor-plane depth, in millimetres
    E = look_at([2.0, 0.5, 1.2], [2.0, 2.0, 0.0])
    c2w_aligned = np.linalg.inv(np.vstack([E, [0, 0, 0, 1]]))
    np.savetxt(d / "pose" / "0.txt", inv @ c2w_aligned, fmt="%.9f")
    R, t = E[:, :3], E[:, 3]
    v, u = np.mgrid[0:H, 0:W]
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    rays_w = rays_cam @ R  # Rᵀ @ ray
    cam = -R.T @ t
    z = -cam[2] / rays_w[..., 2]  # ray parameter = camera depth (ray z_cam = 1)
    Image.fromarray(np.round(z * 1000).astype(np.uint16)).save(d / "depth" / "0.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8) + 128).save(d / "color" / "0.jpg")
    # frame 1: lost tracking (ScanNet writes -inf)
    np.savetxt(d / "pose" / "1.txt", np.full((4, 4), -np.inf))
    Image.fromarray(np.zeros((H, W), np.uint16)).save(d / "depth" / "1.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(d / "color" / "1.jpg")
    return d, E


def test_ply_roundtrip(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.5]])
    p = write_ply(tmp_path / "m.ply", v, [[0, 1, 2]], [[255, 0, 0]] * 3)
    m = read_ply(p)
    np.testing.assert_allclose(m["vertices"], v)
    assert m["faces"].tolist() == [[0, 1, 2]] and m["colors"].shape == (3, 4)
    assert p.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n")


def test_upright_box_recovers_rotated_rectangle():
    c, ln, R = upright_box(TABLE.corners())
    np.testing.assert_allclose(sorted(ln[:2]), [0.6, 1.2], atol=1e-12)
    assert ln[2] == pytest.approx(0.75) and np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(c, TABLE.centroid, atol=1e-12)


def test_load_scene(tmp_path):
    d, E = write_scene(tmp_path)
    sc = load_scannet_scene(d)
    s = sc.scene
    assert s.scene_id == SID and s.dataset == "scannet"
    assert s.categories == ["table", "chair"]  # wall/floor are not objects
    assert [o.instance_id for o in s.objects] == [3, 4]
    np.testing.assert_allclose(sc.axis_alignment, ALIGN, atol=1e-8)
    for got, want in zip(s.objects, (TABLE, CHAIR)):
        # the same box: every expected corner has a recovered corner within float32 precision
        dist = np.linalg.norm(want.corners()[:, None] - got.corners()[None], axis=-1).min(axis=1)
        assert dist.max() < 1e-5
    # floor 12 m²; the 5 cm raster adds at most about a half cell along the perimeter
    assert 12.0 <= s.room_size <= 12.0 + 0.05 * 14 / 2 + 0.05
    np.testing.assert_allclose(s.room_center, [2.0, 1.5, 1.25], atol=1e-5)
    # cameras: aligned-world camera-from-world extrinsics; frame 1 is invalid
    assert sc.frame_ids == [0, 1]
    ext, valid = sc.extrinsics()
    assert valid.tolist() == [True, False] and np.isnan(ext[1]).all()
    np.testing.assert_allclose(ext[0], E, atol=1e-6)
    depth = sc.depth(0)
    assert depth.dtype == np.float32 and sc.color(0).shape == (H, W, 3)
    pts = unproject_depth(depth, sc.intrinsic_depth, ext[0])
    assert np.abs(pts[..., 2]).max() < 0.005  # every pixel lands on the floor plane (mm quantisation)


def test_missing_files_are_named(tmp_path):
    d, _ = write_scene(tmp_path)
    (d / f"{SID}.aggregation.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"scene0999_00\.aggregation\.json"):
        load_scannet_scene(d)
    shutil.rmtree(d / "intrinsic")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        load_scannet_scene(tmp_path / "nope")
    assert read_axis_alignment(d / f"{SID}.txt").shape == (4, 4)
    (d / f"{SID}.txt").write_text("sceneType = Office\n")
    assert read_axis_alignment(d / f"{SID}.txt") is None
