"""Procedural scenes: room sizes, non-interpenetration, support (floor / walls), categories, determinism."""

import itertools

import numpy as np
import pytest

from spatial_mllm.data.scene import SceneMeta
from spatial_mllm.data.synthetic import (
    CATALOG,
    SURFACE_OBJECT,
    SyntheticSceneConfig,
    footprint_corners,
    generate_scene,
    point_in_polygon,
    polygon_area,
)
from spatial_mllm.geometry.boxes import boxes_overlap

CFG = SyntheticSceneConfig(seed=7)
N_SCENES = 12


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(CFG, i) for i in range(N_SCENES)]


def _edge_distance(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance of 2-D points ``[M, 2]`` to the nearest polygon edge."""
    a, b = poly, np.roll(poly, -1, axis=0)
    ab = b - a
    t = np.clip(np.einsum("mnk,nk->mn", pts[:, None] - a[None], ab) / (ab * ab).sum(1), 0, 1)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(pts[:, None] - closest, axis=-1).min(axis=1)


def test_rooms_have_valid_size_and_shape(scenes):
    shapes = set()
    for sc in scenes:
        poly = sc.meta.floor_polygon
        area = polygon_area(poly)
        assert area > 0, "floor polygon must be counter-clockwise"
        assert 8.0 <= sc.meta.room_size <= 60.0
        assert sc.meta.room_size == pytest.approx(area, rel=1e-9)
        shapes.add(len(poly))
        extent = poly.max(0) - poly.min(0)
        assert extent.min() >= CFG.min_room_width - 1e-9
    assert shapes == {4, 6}, "expected both rectangular and L-shaped rooms"


def test_no_two_objects_interpenetrate(scenes):
    checked = 0
    for sc in scenes:
        for a, b in itertools.combinations(sc.meta.objects, 2):
            assert not boxes_overlap(a, b), (sc.meta.scene_id, a.category, b.category)
            assert not boxes_overlap(a, b, margin=0.99 * CFG.min_gap), (
                sc.meta.scene_id,
                a.category,
                b.category,
            )
            checked += 1
    assert checked > 500


def test_objects_rest_on_floor_or_against_walls(scenes):
    n_wall = 0
    for sc in scenes:
        poly = sc.meta.floor_polygon
        for o in sc.meta.objects:
            spec = CATALOG[o.category]
            corners = o.corners()
            zmin, zmax = corners[:, 2].min(), corners[:, 2].max()
            assert zmax <= sc.wall_height, o.category
            fp = footprint_corners(o.centroid, o.axes_lengths, o.rotation)
            inner = fp.mean(0) + 0.999 * (fp - fp.mean(0))
            assert point_in_polygon(inner, poly).all(), (sc.meta.scene_id, o.category)
            if spec.placement in ("floor", "floor_wall") or o.category == "door":
                assert abs(zmin) < 1e-9, (o.category, zmin)  # standing on the floor
            if spec.placement in ("floor_wall", "wall"):
                # the back edge (local -y side: corners 0 and 1 of the footprint) touches a wall
                back = fp[:2]
                assert _edge_distance(back, poly).max() < 0.03, (sc.meta.scene_id, o.category)
                n_wall += 1
            if spec.placement == "wall" and o.category != "door":
                assert zmin > 0.5, (o.category, zmin)  # hung on the wall
    assert n_wall > 10


def test_yaws_mostly_axis_aligned_some_free(scenes):
    yaws = np.array(
        [np.arctan2(o.rotation[1, 0], o.rotation[0, 0]) for sc in scenes for o in sc.meta.objects]
    )
    for sc in scenes:
        for o in sc.meta.objects:  # yaw-only rotations
            np.testing.assert_allclose(o.rotation[:, 2], [0, 0, 1], atol=1e-12)
    off_axis = np.abs(((yaws + np.pi / 4) % (np.pi / 2)) - np.pi / 4) > 1e-6
    assert 0.05 < off_axis.mean() < 0.5


def test_categories_and_instances(scenes):
    assert len(CATALOG) >= 12
    seen = {}
    for sc in scenes:
        for cat, n in sc.meta.box_counts.items():
            seen[cat] = max(seen.get(cat, 0), n)
    assert len(seen) >= 12, sorted(seen)
    assert sum(n >= 2 for n in seen.values()) >= 4, seen  # several instances of a category occur
    assert all(sc.meta.categories for sc in scenes)


def test_mesh_matches_boxes(scenes):
    sc = scenes[0]
    m = sc.mesh
    assert m.triangles.max() < len(m.vertices)
    ids = {o.instance_id for o in sc.meta.objects}
    assert set(np.unique(m.instance_ids[m.surface == SURFACE_OBJECT])) == ids
    assert np.all(m.instance_ids[m.surface != SURFACE_OBJECT] == 0)
    for o in sc.meta.objects:
        v = m.vertices[np.unique(m.triangles[m.instance_ids == o.instance_id])]
        local = o.world_to_local(v)
        half = o.axes_lengths / 2
        assert np.all(np.abs(local) <= half + 1e-9), o.category  # primitives inside the box
        span = local.max(0) - local.min(0)
        assert np.all(span >= 0.9 * o.axes_lengths), (o.category, span, o.axes_lengths)  # and it is tight


def test_same_seed_same_scene_and_different_seed_differs():
    a = generate_scene(CFG, 3)
    b = generate_scene(CFG, 3)
    assert a.meta.to_dict() == b.meta.to_dict()
    np.testing.assert_array_equal(a.mesh.vertices, b.mesh.vertices)
    np.testing.assert_array_equal(a.mesh.albedo, b.mesh.albedo)
    c = generate_scene(SyntheticSceneConfig(seed=8), 3)
    assert c.meta.to_dict() != a.meta.to_dict()
    assert isinstance(a.meta, SceneMeta) and a.meta.dataset == "synthetic"
    assert SceneMeta.from_dict(a.meta.to_dict()).to_dict() == a.meta.to_dict()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown categories"):
        SyntheticSceneConfig(categories=("spaceship",))
    with pytest.raises(ValueError, match="min_area"):
        SyntheticSceneConfig(min_area=30.0, max_area=10.0)


def test_instance_counts_make_counting_truths_vary():
    from spatial_mllm.data.synthetic import SyntheticSceneConfig, generate_scene

    def repeats(cfg):
        return [n for i in range(40) for n in generate_scene(cfg, i).meta.box_counts.values() if n >= 2]

    base = repeats(SyntheticSceneConfig(seed=3, max_area=30.0))
    varied = repeats(SyntheticSceneConfig(seed=3, max_area=30.0, instance_counts=(1, 2, 3, 4, 5, 6), max_instances=6))
    assert max(base) <= 4 and max(varied) >= 5
    assert np.mean(np.array(varied) == 2) < np.mean(np.array(base) == 2)  # "2" is no longer the usual truth
    with pytest.raises(ValueError, match="instance_counts"):
        SyntheticSceneConfig(instance_counts=(0, 2))
