"""Oriented-box geometry: exact distances (analytic cases + a QP cross-check), overlap, footprints."""

import numpy as np
import pytest
from scipy.optimize import minimize

from spatial_mllm.data.scene import ObjectBox
from spatial_mllm.geometry.boxes import (
    box_corners,
    box_distance,
    boxes_intersect,
    boxes_overlap,
    closest_point_on_box,
    convex_hull_2d,
    footprint_polygon,
    point_box_distance,
    polygon_area,
    segment_segment_distance,
)


def rot_z(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def rot_x(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


UNIT = ([0, 0, 0], [1, 1, 1], np.eye(3))


def test_point_box_distance_analytic():
    b = ([0, 0, 0], [2, 2, 2], rot_z(45))
    # along the rotated x axis, 3 m from the centre: 2 m outside the face
    d = point_box_distance(np.array([3 / np.sqrt(2), 3 / np.sqrt(2), 0]), b)
    assert d == pytest.approx(2.0)
    assert point_box_distance([0.1, 0.2, 0.3], b) == 0.0
    # off a corner of an axis-aligned box: Euclidean to the corner
    assert point_box_distance([2, 2, 2], UNIT) == pytest.approx(np.sqrt(3) * 1.5)
    np.testing.assert_allclose(closest_point_on_box([2, 0, 0], UNIT), [0.5, 0, 0])


def test_box_distance_known_gap_and_contact():
    a = ObjectBox(category="a", centroid=[0, 0, 0], axes_lengths=[1, 1, 1])
    b = ObjectBox(category="b", centroid=[1.8, 0.3, 0.1], axes_lengths=[1, 1, 1])  # faces 0.8 m apart
    assert box_distance(a, b) == pytest.approx(0.8, abs=1e-12)
    d, pa, pb = box_distance(a, b, return_points=True)
    assert pa[0] == pytest.approx(0.5) and pb[0] == pytest.approx(1.3)
    touching = ObjectBox(category="c", centroid=[1.0, 0, 0], axes_lengths=[1, 1, 1])
    assert box_distance(a, touching) == 0.0
    assert boxes_intersect(a, touching) and not boxes_overlap(a, touching)
    diag = ([2, 2, 2], [1, 1, 1], np.eye(3))  # corner to corner: sqrt(3)
    assert box_distance(UNIT, diag) == pytest.approx(np.sqrt(3))


def test_rotated_corner_approaching_a_face():
    # a unit cube rotated 45° about z: its corner reaches sqrt(2)/2 from its centre along x
    r = np.sqrt(2) / 2
    for gap in (0.5, 0.05, 1e-4):
        b = ([0.5 + r + gap, 0.0, 0.0], [1, 1, 1], rot_z(45))
        assert box_distance(UNIT, b) == pytest.approx(gap, abs=1e-12)
        assert not boxes_overlap(UNIT, b)
    b = ([0.5 + r - 0.01, 0.0, 0.0], [1, 1, 1], rot_z(45))  # corner 1 cm inside
    assert box_distance(UNIT, b) == 0.0 and boxes_overlap(UNIT, b)


def test_edge_edge_case():
    # two long bars crossing at right angles, one above the other: an edge-edge closest pair
    a = ([0, 0, 0], [4, 0.2, 0.2], np.eye(3))
    b = ([0, 0, 1.0], [4, 0.2, 0.2], rot_z(90) @ rot_x(45))
    h = 0.1 * np.sqrt(2)  # the 45°-rolled bar's lower edge sits h below its axis
    assert box_distance(a, b) == pytest.approx(1.0 - 0.1 - h, abs=1e-12)
    # crossing in the same plane: intersecting although no corner lies inside the other box
    c = ([0, 0, 0], [4, 0.2, 0.2], rot_z(90))
    assert box_distance(a, c) == 0.0 and boxes_overlap(a, c)


def test_box_distance_matches_qp_on_random_boxes():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    for k in range(25):
        A = (rng.normal(size=3) * 2, rng.uniform(0.1, 2, 3), Rotation.random(random_state=k).as_matrix())
        B = (
            rng.normal(size=3) * 2,
            rng.uniform(0.1, 2, 3),
            Rotation.random(random_state=100 + k).as_matrix(),
        )
        d, pa, pb = box_distance(A, B, return_points=True)
        assert point_box_distance(pa, A) < 1e-9 and point_box_distance(pb, B) < 1e-9
        assert np.linalg.norm(pa - pb) == pytest.approx(d, abs=1e-9)

        def f(x, A=A, B=B):
            pa = (x[:3] * A[1]) @ A[2].T + A[0]
            pb = (x[3:] * B[1]) @ B[2].T + B[0]
            return np.sum((pa - pb) ** 2)

        best = min(
            minimize(
                f,
                rng.uniform(-0.5, 0.5, 6),
                bounds=[(-0.5, 0.5)] * 6,
                method="L-BFGS-B",
                options={"ftol": 1e-15, "gtol": 1e-12},
            ).fun
            for _ in range(3)
        )
        assert d <= np.sqrt(max(best, 0.0)) + 1e-6  # never worse than a local QP solver
        assert d >= np.sqrt(max(best, 0.0)) - 1e-3  # and the QP agrees


def test_overlap_margin_and_inputs():
    a = {"centroid": [0, 0, 0], "axes_lengths": [1, 1, 1], "rotation": np.eye(3)}
    b = ([1.1, 0, 0], [1, 1, 1], np.eye(3))  # 0.1 m apart
    assert not boxes_overlap(a, b)
    assert boxes_overlap(a, b, margin=0.15) and not boxes_overlap(a, b, margin=0.05)
    with pytest.raises(ValueError, match="margin"):
        boxes_overlap(a, b, margin=-1)


def test_segment_segment_parallel_and_degenerate():
    d, _, _ = segment_segment_distance([0, 0, 0], [1, 0, 0], [0.5, 1, 0], [2, 1, 0])
    assert d == pytest.approx(1.0)
    d, c1, c2 = segment_segment_distance([0, 0, 0], [0, 0, 0], [1, -1, 0], [1, 1, 0])
    assert d == pytest.approx(1.0) and np.allclose(c2, [1, 0, 0])


def test_footprint_and_polygons():
    fp = footprint_polygon(([1, 1, 0.5], [2, 1, 1], rot_z(30)))
    assert len(fp) == 4 and polygon_area(fp) == pytest.approx(2.0)
    tilted = footprint_polygon(([0, 0, 0], [1, 1, 1], rot_x(30)))
    assert polygon_area(tilted) == pytest.approx(np.cos(np.radians(30)) + np.sin(np.radians(30)))
    hull = convex_hull_2d([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [1, 0.5]])
    assert len(hull) == 4 and polygon_area(hull) == pytest.approx(1.0)  # counter-clockwise → positive
    assert box_corners(UNIT).shape == (8, 3)
