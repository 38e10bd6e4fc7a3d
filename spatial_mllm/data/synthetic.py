"""Procedural indoor scenes with exact ground truth: rooms, furniture built from primitives, labels.

The paper trains on real scans (ScanNet / ARKitScenes / ScanNet++ videos with VSI-Bench style QA built
from their 3D boxes).  For the ``tiny`` preset, the tests, and the frame-sampling experiments we need
scenes whose every box, distance and camera pose is known exactly and which render in milliseconds;
this module makes them.  A scene is

* a room: rectangular or L-shaped floor polygon (counter-clockwise, metres, world z-up, floor at z = 0),
  floor area in ``[min_area, max_area]`` m², walls ``wall_height`` m high, a ceiling;
* furniture from :data:`CATALOG` (≥ 12 categories, VSI-Bench / ScanNet names), each object a few boxes
  and cylinders composed into a recognisable shape (a chair has legs, seat and back; a lamp a base, pole
  and shade), several instances per category, no two objects interpenetrating;
* every object stands on the floor (``floor`` / ``floor_wall`` placements) or hangs on a wall (``wall``:
  tv, window; a door stands on the floor in a wall), yaw-only rotations: wall-backed objects face into the
  room, free-standing ones are axis-aligned with probability ``1 - free_yaw_prob`` and free otherwise;
* the object's oriented bounding box (the tight box of its primitives in its own frame) is its
  :class:`~spatial_mllm.data.scene.ObjectBox`.

Object-local frame: origin at the box centre, x = width, y = depth with the object's *front* towards +y
(a chair's seat faces +y, its back is at -y), z up.  ``world = rotation @ local + centroid``.

Departures from the paper's data (it has no synthetic scenes; these are ours):
1. Geometry is primitive-based and textures are procedural; object classes are recognisable by shape and
   colour, not photo-real.
2. Wall-mounted objects (tv, window, door) are thin boxes just in front of the wall plane (walls have no
   thickness), so their boxes lie inside the room like ScanNet's annotated boxes do.
3. A door reserves a 0.8 m deep keep-out zone in front of it, and total furniture footprint is capped at
   ``max_footprint_fraction`` of the floor so a handheld camera path always exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spatial_mllm.data.scene import ObjectBox, SceneMeta
from spatial_mllm.geometry.boxes import boxes_overlap

__all__ = [
    "CATALOG",
    "CategorySpec",
    "SyntheticSceneConfig",
    "TriMesh",
    "SyntheticScene",
    "SURFACE_OBJECT",
    "SURFACE_FLOOR",
    "SURFACE_WALL",
    "SURFACE_CEILING",
    "make_room_polygon",
    "polygon_area",
    "point_in_polygon",
    "footprint_corners",
    "generate_scene",
    "generate_scenes",
]

# Per-triangle surface classes (walls/floor/ceiling have instance id 0 but their own colours).
SURFACE_OBJECT, SURFACE_FLOOR, SURFACE_WALL, SURFACE_CEILING = 0, 1, 2, 3

_FLOOR_RGB = (0.62, 0.50, 0.38)  # wooden floor
_WALL_RGB = (0.86, 0.84, 0.78)  # off-white paint
_CEILING_RGB = (0.95, 0.95, 0.95)


# ----------------------------------------------------------------------------------------------------
# Primitives (object-local coordinates, metres)
# ----------------------------------------------------------------------------------------------------

# A part is (vertices [V, 3], triangles [F, 3], rgb (3,)).
Part = tuple[np.ndarray, np.ndarray, tuple[float, float, float]]

_BOX_FACES = np.array(
    [
        [0, 2, 1],
        [0, 3, 2],
        [4, 5, 6],
        [4, 6, 7],
        [0, 1, 5],
        [0, 5, 4],
        [1, 2, 6],
        [1, 6, 5],
        [2, 3, 7],
        [2, 7, 6],
        [3, 0, 4],
        [3, 4, 7],
    ],
    dtype=np.int64,
)


def _box(lo, hi, rgb) -> Part:
    """Axis-aligned box from corner ``lo`` to corner ``hi`` (local frame, metres)."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    v = np.array(
        [
            [x0, y0, z0],
            [x1, y0, z0],
            [x1, y1, z0],
            [x0, y1, z0],
            [x0, y0, z1],
            [x1, y0, z1],
            [x1, y1, z1],
            [x0, y1, z1],
        ],
        dtype=np.float64,
    )
    return v, _BOX_FACES.copy(), tuple(rgb)


def _cyl(cx, cy, z0, z1, radius, rgb, segments: int = 14) -> Part:
    """Vertical closed cylinder (axis along local z) from ``z0`` to ``z1``; ``segments`` sides."""
    a = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([cx + radius * np.cos(a), cy + radius * np.sin(a)], axis=1)
    v = np.concatenate(
        [np.c_[ring, np.full(segments, z0)], np.c_[ring, np.full(segments, z1)], [[cx, cy, z0], [cx, cy, z1]]]
    )
    i = np.arange(segments)
    j = (i + 1) % segments
    bot, top = 2 * segments, 2 * segments + 1
    sides = np.concatenate([np.c_[i, j, j + segments], np.c_[i, j + segments, i + segments]])
    caps = np.concatenate(
        [np.c_[np.full(segments, bot), j, i], np.c_[np.full(segments, top), i + segments, j + segments]]
    )
    return v, np.concatenate([sides, caps]).astype(np.int64), tuple(rgb)


def _shade(rgb, f: float) -> tuple[float, float, float]:
    return tuple(float(np.clip(c * f, 0.0, 1.0)) for c in rgb)


# ----------------------------------------------------------------------------------------------------
# Furniture builders: (size [w, d, h], main rgb, rng) -> parts inside [-w/2, w/2] x [-d/2, d/2] x [-h/2, h/2]
# ----------------------------------------------------------------------------------------------------


def _chair(s, c, rng) -> list[Part]:
    w, d, h = s
    z0, seat = -h / 2, 0.0  # seat at half the chair's height
    leg, dark = 0.04, _shade(c, 0.6)
    parts = [
        _box((x - leg / 2, y - leg / 2, z0), (x + leg / 2, y + leg / 2, seat), dark)
        for x in (-w / 2 + leg / 2, w / 2 - leg / 2)
        for y in (-d / 2 + leg / 2, d / 2 - leg / 2)
    ]
    parts.append(_box((-w / 2, -d / 2, seat), (w / 2, d / 2, seat + 0.05), c))
    parts.append(_box((-w / 2, -d / 2, seat + 0.05), (w / 2, -d / 2 + 0.05, h / 2), c))  # back at -y
    return parts


def _stool(s, c, rng) -> list[Part]:
    w, d, h = s
    r = min(w, d) / 2
    return [
        _cyl(0, 0, -h / 2, h / 2 - 0.04, 0.25 * r, _shade(c, 0.6)),
        _cyl(0, 0, -h / 2, -h / 2 + 0.03, 0.8 * r, _shade(c, 0.6)),
        _cyl(0, 0, h / 2 - 0.04, h / 2, r, c),
    ]


def _table(s, c, rng) -> list[Part]:
    w, d, h = s
    leg, dark = 0.06, _shade(c, 0.7)
    top = h / 2 - 0.04
    parts = [
        _box((x - leg / 2, y - leg / 2, -h / 2), (x + leg / 2, y + leg / 2, top), dark)
        for x in (-w / 2 + 0.05, w / 2 - 0.05)
        for y in (-d / 2 + 0.05, d / 2 - 0.05)
    ]
    parts.append(_box((-w / 2, -d / 2, top), (w / 2, d / 2, h / 2), c))
    return parts


def _sofa(s, c, rng) -> list[Part]:
    w, d, h = s
    arm, back, seat = 0.18, 0.22, -h / 2 + 0.42
    return [
        _box((-w / 2, -d / 2, -h / 2), (w / 2, d / 2, seat), c),
        _box((-w / 2, -d / 2, seat), (w / 2, -d / 2 + back, h / 2), _shade(c, 0.9)),
        _box((-w / 2, -d / 2 + back, seat), (-w / 2 + arm, d / 2, seat + 0.2), _shade(c, 0.85)),
        _box((w / 2 - arm, -d / 2 + back, seat), (w / 2, d / 2, seat + 0.2), _shade(c, 0.85)),
        _box((-w / 2 + arm, -d / 2 + back, seat), (w / 2 - arm, d / 2 - 0.04, seat + 0.1), _shade(c, 1.15)),
    ]


def _bed(s, c, rng) -> list[Part]:
    w, d, h = s
    frame, mattress = -h / 2 + 0.3, -h / 2 + 0.52
    white = (0.93, 0.93, 0.9)
    return [
        _box((-w / 2, -d / 2, -h / 2), (w / 2, d / 2, frame), _shade(c, 0.7)),
        _box((-w / 2 + 0.03, -d / 2 + 0.08, frame), (w / 2 - 0.03, d / 2 - 0.03, mattress), white),
        _box((-w / 2, -d / 2, -h / 2), (w / 2, -d / 2 + 0.08, h / 2), c),  # headboard at -y
        _box((-w / 2 + 0.1, -d / 2 + 0.12, mattress), (-0.05, -d / 2 + 0.5, mattress + 0.12), white),
        _box((0.05, -d / 2 + 0.12, mattress), (w / 2 - 0.1, -d / 2 + 0.5, mattress + 0.12), white),
        _box((-w / 2 + 0.03, -d / 2 + 0.9, mattress), (w / 2 - 0.03, d / 2 - 0.03, mattress + 0.04), c),
    ]


def _tv(s, c, rng) -> list[Part]:
    w, d, h = s
    return [
        _box((-w / 2, -d / 2, -h / 2), (w / 2, d / 2 - 0.01, h / 2), (0.12, 0.12, 0.13)),
        _box((-w / 2 + 0.03, d / 2 - 0.01, -h / 2 + 0.03), (w / 2 - 0.03, d / 2, h / 2 - 0.03), c),
    ]


def _lamp(s, c, rng) -> list[Part]:
    w, d, h = s
    r = min(w, d) / 2
    metal = (0.35, 0.35, 0.38)
    return [
        _cyl(0, 0, -h / 2, -h / 2 + 0.03, 0.6 * r, metal),
        _cyl(0, 0, -h / 2 + 0.03, h / 2 - 0.3, 0.025, metal),
        _cyl(0, 0, h / 2 - 0.3, h / 2, r, c),
    ]


def _cabinet(s, c, rng) -> list[Part]:
    w, d, h = s
    handle = (0.8, 0.8, 0.82)
    parts = [
        _box((-w / 2, -d / 2, -h / 2), (w / 2, d / 2 - 0.02, h / 2), c),
        _box((-w / 2 + 0.02, d / 2 - 0.02, -h / 2 + 0.08), (-0.01, d / 2, h / 2 - 0.02), _shade(c, 1.1)),
        _box((0.01, d / 2 - 0.02, -h / 2 + 0.08), (w / 2 - 0.02, d / 2, h / 2 - 0.02), _shade(c, 1.1)),
    ]
    for x in (-0.05, 0.03):
        parts.append(_box((x, d / 2 - 0.02, -0.08), (x + 0.02, d / 2, 0.08), handle))
    return parts


def _trash_bin(s, c, rng) -> list[Part]:
    w, d, h = s
    r = min(w, d) / 2
    return [_cyl(0, 0, -h / 2, h / 2 - 0.02, 0.9 * r, c), _cyl(0, 0, h / 2 - 0.02, h / 2, r, _shade(c, 0.7))]


def _toilet(s, c, rng) -> list[Part]:
    w, d, h = s
    seat = -h / 2 + 0.42
    return [
        _box((-0.12, -d / 2 + 0.15, -h / 2), (0.12, d / 2 - 0.2, seat - 0.05), c),
        _cyl(0, d / 2 - w / 2, seat - 0.15, seat, w / 2, c),
        _box((-w / 2, -d / 2 + 0.12, seat - 0.15), (w / 2, d / 2 - w / 2, seat), c),
        _box((-w / 2, -d / 2, seat - 0.02), (w / 2, -d / 2 + 0.18, h / 2), _shade(c, 0.95)),
    ]


def _sink(s, c, rng) -> list[Part]:
    w, d, h = s
    wood, steel = (0.55, 0.42, 0.3), (0.75, 0.76, 0.78)
    top = h / 2 - 0.06
    return [
        _box((-w / 2, -d / 2, -h / 2), (w / 2, d / 2, top), wood),
        _box((-w / 2, -d / 2, top), (w / 2, d / 2, h / 2 - 0.03), c),
        _cyl(0, 0.03, h / 2 - 0.03, h / 2 - 0.025, 0.32 * min(w, d), steel),
        _cyl(0, -d / 2 + 0.06, h / 2 - 0.03, h / 2, 0.02, steel),
    ]


def _plant(s, c, rng) -> list[Part]:
    w, d, h = s
    r = min(w, d) / 2
    pot = min(0.35, 0.35 * h)
    parts = [_cyl(0, 0, -h / 2, -h / 2 + pot, 0.5 * r, (0.6, 0.33, 0.2))]
    # foliage: a few stacked green cylinders of varying radius
    levels = 3
    zs = np.linspace(-h / 2 + pot, h / 2, levels + 1)
    for k in range(levels):
        rk = r * (1.0 - 0.25 * k)  # widest at the bottom, so the box is tight
        parts.append(_cyl(0, 0, zs[k], zs[k + 1], rk, _shade(c, 1.0 - 0.12 * k), segments=10))
    return parts


def _door(s, c, rng) -> list[Part]:
    w, d, h = s
    frame = (0.9, 0.9, 0.88)
    return [
        _box((-w / 2, -d / 2, -h / 2), (w / 2, d / 2 - 0.015, h / 2), frame),
        _box((-w / 2 + 0.05, d / 2 - 0.015, -h / 2), (w / 2 - 0.05, d / 2, h / 2 - 0.05), c),
        _box((w / 2 - 0.17, d / 2 - 0.015, -0.05), (w / 2 - 0.09, d / 2, -0.02), (0.8, 0.75, 0.4)),
    ]


def _window(s, c, rng) -> list[Part]:
    w, d, h = s
    frame = (0.95, 0.95, 0.95)
    glass = c
    return [
        _box((-w / 2, -d / 2, -h / 2), (w / 2, d / 2 - 0.02, h / 2), frame),
        _box((-w / 2 + 0.05, d / 2 - 0.02, -h / 2 + 0.05), (-0.02, d / 2 - 0.01, h / 2 - 0.05), glass),
        _box((0.02, d / 2 - 0.02, -h / 2 + 0.05), (w / 2 - 0.05, d / 2 - 0.01, h / 2 - 0.05), glass),
        _box((-w / 2, -d / 2, -h / 2), (w / 2, d / 2, -h / 2 + 0.04), frame),
    ]


def _bookshelf(s, c, rng) -> list[Part]:
    w, d, h = s
    t = 0.03
    parts = [
        _box((-w / 2, -d / 2, -h / 2), (-w / 2 + t, d / 2, h / 2), c),
        _box((w / 2 - t, -d / 2, -h / 2), (w / 2, d / 2, h / 2), c),
        _box((-w / 2, -d / 2, -h / 2), (w / 2, -d / 2 + t, h / 2), _shade(c, 0.8)),
    ]
    n_shelves = max(2, int(h / 0.38))
    book_colours = [(0.7, 0.2, 0.2), (0.2, 0.35, 0.7), (0.85, 0.75, 0.3), (0.25, 0.55, 0.3)]
    for k, z in enumerate(np.linspace(-h / 2, h / 2 - t, n_shelves + 1)):
        parts.append(_box((-w / 2 + t, -d / 2 + t, z), (w / 2 - t, d / 2, z + t), c))
        if k < n_shelves:  # a row of books on each shelf
            bw = (w - 2 * t) * rng.uniform(0.4, 0.8)
            bh = min(0.25, (h - t) / n_shelves - t - 0.03)
            col = book_colours[int(rng.integers(len(book_colours)))]
            parts.append(
                _box((-w / 2 + t, -d / 2 + t, z + t), (-w / 2 + t + bw, d / 2 - 0.05, z + t + bh), col)
            )
    return parts


def _refrigerator(s, c, rng) -> list[Part]:
    w, d, h = s
    split = h / 2 - 0.4 * h
    handle = (0.3, 0.3, 0.32)
    return [
        _box((-w / 2, -d / 2, -h / 2), (w / 2, d / 2 - 0.02, h / 2), c),
        _box(
            (-w / 2 + 0.01, d / 2 - 0.02, -h / 2 + 0.02), (w / 2 - 0.01, d / 2, split - 0.01), _shade(c, 1.03)
        ),
        _box(
            (-w / 2 + 0.01, d / 2 - 0.02, split + 0.01), (w / 2 - 0.01, d / 2, h / 2 - 0.02), _shade(c, 1.03)
        ),
        _box((w / 2 - 0.08, d / 2 - 0.02, split + 0.05), (w / 2 - 0.06, d / 2, split + 0.35), handle),
    ]


def _nightstand(s, c, rng) -> list[Part]:
    w, d, h = s
    return [
        _box((-w / 2, -d / 2, -h / 2), (w / 2, d / 2 - 0.02, h / 2), c),
        _box((-w / 2 + 0.02, d / 2 - 0.02, 0.0), (w / 2 - 0.02, d / 2, h / 2 - 0.03), _shade(c, 1.12)),
        _box((-0.04, d / 2 - 0.02, h / 4 - 0.01), (0.04, d / 2, h / 4 + 0.01), (0.8, 0.8, 0.8)),
    ]


@dataclass(frozen=True)
class CategorySpec:
    """How one furniture category looks and where it goes."""

    name: str  # VSI-Bench / ScanNet category name
    builder: Callable  # (size [w, d, h], rgb, rng) -> list of parts in the object's local frame
    size_lo: tuple[float, float, float]  # min (width x, depth y, height z) in metres
    size_hi: tuple[float, float, float]  # max (width, depth, height) in metres
    placement: str  # "floor" (free-standing), "floor_wall" (back to a wall), "wall" (mounted, z from mount_z)
    rgb: tuple[float, float, float]  # main albedo in [0, 1]
    counts: tuple[int, ...] = (1,)  # instance counts to draw from (uniformly) when the category is chosen
    mount_z: tuple[float, float] = (0.0, 0.0)  # "wall": range of the box's bottom height in metres
    square: bool = False  # width == depth (round objects)


CATALOG: dict[str, CategorySpec] = {
    s.name: s
    for s in [
        CategorySpec(
            "chair", _chair, (0.42, 0.45, 0.80), (0.55, 0.58, 1.0), "floor", (0.70, 0.25, 0.20), (1, 2, 3, 4)
        ),
        CategorySpec(
            "stool",
            _stool,
            (0.32, 0.32, 0.45),
            (0.45, 0.45, 0.75),
            "floor",
            (0.85, 0.6, 0.2),
            (1, 2, 3),
            square=True,
        ),
        CategorySpec(
            "table", _table, (0.8, 0.6, 0.70), (1.8, 1.0, 0.78), "floor", (0.60, 0.42, 0.25), (1, 1, 2)
        ),
        CategorySpec("sofa", _sofa, (1.6, 0.8, 0.75), (2.3, 1.0, 0.90), "floor_wall", (0.25, 0.35, 0.60)),
        CategorySpec("bed", _bed, (1.4, 2.0, 0.9), (1.9, 2.2, 1.2), "floor_wall", (0.45, 0.3, 0.5)),
        CategorySpec(
            "tv", _tv, (0.9, 0.06, 0.55), (1.5, 0.10, 0.85), "wall", (0.05, 0.08, 0.12), mount_z=(0.9, 1.2)
        ),
        CategorySpec(
            "lamp", _lamp, (0.3, 0.3, 1.4), (0.45, 0.45, 1.7), "floor", (0.98, 0.92, 0.6), (1, 2), square=True
        ),
        CategorySpec(
            "cabinet", _cabinet, (0.6, 0.4, 0.7), (1.2, 0.6, 1.9), "floor_wall", (0.75, 0.62, 0.45), (1, 2, 3)
        ),
        CategorySpec(
            "trash bin",
            _trash_bin,
            (0.25, 0.25, 0.35),
            (0.4, 0.4, 0.6),
            "floor",
            (0.3, 0.55, 0.35),
            (1, 2),
            square=True,
        ),
        CategorySpec(
            "toilet", _toilet, (0.38, 0.65, 0.75), (0.45, 0.75, 0.85), "floor_wall", (0.97, 0.97, 0.97)
        ),
        CategorySpec("sink", _sink, (0.5, 0.45, 0.85), (0.9, 0.55, 0.95), "floor_wall", (0.9, 0.9, 0.92)),
        CategorySpec(
            "plant",
            _plant,
            (0.3, 0.3, 0.5),
            (0.6, 0.6, 1.5),
            "floor",
            (0.2, 0.6, 0.2),
            (1, 2, 3),
            square=True,
        ),
        CategorySpec("door", _door, (0.8, 0.05, 2.0), (0.95, 0.06, 2.1), "wall", (0.55, 0.35, 0.2)),
        CategorySpec(
            "window",
            _window,
            (0.8, 0.06, 1.0),
            (1.6, 0.08, 1.3),
            "wall",
            (0.55, 0.75, 0.9),
            (1, 2),
            mount_z=(0.8, 1.0),
        ),
        CategorySpec(
            "bookshelf", _bookshelf, (0.6, 0.3, 1.2), (1.2, 0.4, 2.0), "floor_wall", (0.5, 0.35, 0.22), (1, 2)
        ),
        CategorySpec(
            "refrigerator", _refrigerator, (0.6, 0.6, 1.5), (0.8, 0.75, 1.9), "floor_wall", (0.88, 0.9, 0.92)
        ),
        CategorySpec(
            "nightstand",
            _nightstand,
            (0.4, 0.35, 0.45),
            (0.6, 0.45, 0.65),
            "floor_wall",
            (0.65, 0.5, 0.35),
            (1, 2),
        ),
    ]
}


# ----------------------------------------------------------------------------------------------------
# Config and outputs
# ----------------------------------------------------------------------------------------------------


@dataclass
class SyntheticSceneConfig:
    """Knobs of the procedural scene generator (all lengths in metres, areas in m²)."""

    seed: int = 0  # scene i of a batch uses seed (seed, i): same seed → identical scene
    min_area: float = 8.0  # floor area range; VSI-Bench rooms (ScanNet/ARKitScenes) are mostly 8-60 m²
    max_area: float = 60.0
    wall_height: float = 2.6
    l_shape_prob: float = 0.35  # probability of an L-shaped room (else rectangular)
    min_room_width: float = 2.2  # no room (or arm of an L) narrower than this
    categories: tuple[str, ...] = tuple(CATALOG)  # categories the generator may use
    objects_per_m2: float = 0.55  # target object count ≈ area × this, clipped to [min_objects, max_objects]
    min_objects: int = 5
    max_objects: int = 30
    max_instances: int = 4  # cap on instances of one category
    # instance counts drawn uniformly for every category whose catalog allows several instances (None = the
    # catalog's own, mostly 1-2); e.g. (1, ..., 8) with max_instances 8 makes counting questions vary
    instance_counts: tuple[int, ...] | None = None
    free_yaw_prob: float = 0.3  # free-standing objects get a free yaw with this probability, else k·90°
    min_gap: float = 0.05  # minimum clearance between object boxes
    door_clearance: float = 0.8  # keep-out depth in front of a door
    max_footprint_fraction: float = 0.4  # stop adding floor furniture beyond this fraction of the floor
    max_tries: int = 60  # placement attempts per object before it is skipped

    def __post_init__(self):
        if not 0 < self.min_area <= self.max_area:
            raise ValueError(f"need 0 < min_area <= max_area, got {self.min_area}, {self.max_area}")
        unknown = [c for c in self.categories if c not in CATALOG]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {sorted(CATALOG)}")
        if self.instance_counts is not None and (not self.instance_counts or min(self.instance_counts) < 1):
            raise ValueError(f"instance_counts must be positive ints, got {self.instance_counts}")
        if self.min_room_width**2 > self.min_area * 1.0001 and self.min_room_width * 2 > self.max_area:
            raise ValueError("min_room_width is too large for the area range")


@dataclass
class TriMesh:
    """A triangle soup with per-triangle labels (world frame, metres)."""

    vertices: np.ndarray  # [V, 3] float64 world coordinates
    triangles: np.ndarray  # [F, 3] int32 vertex indices
    instance_ids: np.ndarray  # [F] int32, 0 = room (floor / walls / ceiling), else ObjectBox.instance_id
    albedo: np.ndarray  # [F, 3] float32 RGB in [0, 1]
    surface: np.ndarray  # [F] int8 SURFACE_* class

    @staticmethod
    def concatenate(meshes: list[TriMesh]) -> TriMesh:
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
        return TriMesh(
            vertices=np.concatenate([m.vertices for m in meshes]),
            triangles=np.concatenate([m.triangles + o for m, o in zip(meshes, offsets)]).astype(np.int32),
            instance_ids=np.concatenate([m.instance_ids for m in meshes]).astype(np.int32),
            albedo=np.concatenate([m.albedo for m in meshes]).astype(np.float32),
            surface=np.concatenate([m.surface for m in meshes]).astype(np.int8),
        )

    def to_open3d(self):
        """Legacy ``open3d.geometry.TriangleMesh`` with vertex colours (for viewers; labels dropped)."""
        import open3d as o3d

        v = self.vertices[self.triangles.reshape(-1)]  # un-share vertices so colours stay per triangle
        m = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(np.arange(len(v)).reshape(-1, 3))
        )
        m.vertex_colors = o3d.utility.Vector3dVector(np.repeat(self.albedo.astype(np.float64), 3, axis=0))
        return m


@dataclass
class SyntheticScene:
    """One generated scene: labels (``meta``), geometry (``mesh``) and what could not be placed."""

    meta: SceneMeta  # objects as oriented boxes, room size / centre / floor polygon
    mesh: TriMesh  # room + furniture triangles with instance ids and albedo
    wall_height: float  # metres
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (category, reason) of unplaced objects


# ----------------------------------------------------------------------------------------------------
# Room geometry
# ----------------------------------------------------------------------------------------------------


def polygon_area(poly: np.ndarray) -> float:
    """Signed shoelace area of a 2-D polygon ``[N, 2]`` (positive for counter-clockwise), m²."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def point_in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: ``pts [M, 2]`` inside polygon ``[N, 2]`` → bool ``[M]``."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < xint)).sum(axis=1) % 2 == 1


def make_room_polygon(rng: np.random.Generator, cfg: SyntheticSceneConfig) -> np.ndarray:
    """Counter-clockwise floor polygon ``[N, 2]`` (rectangle or L), bounding box centred on the origin.

    The area is drawn uniformly in ``[min_area, max_area]`` and met exactly; an L whose arms would be
    narrower than ``min_room_width`` falls back to a rectangle.
    """
    area = rng.uniform(cfg.min_area, cfg.max_area)
    aspect = rng.uniform(1.0, 1.8)
    want_l = rng.random() < cfg.l_shape_prob
    cut_x, cut_y = rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.5)  # cut-out corner as fractions of W, D
    if want_l:
        full = area / (1.0 - cut_x * cut_y)  # W * D of the bounding rectangle
        W, D = math.sqrt(full * aspect), math.sqrt(full / aspect)
        if min(W * (1 - cut_x), D * (1 - cut_y)) >= cfg.min_room_width:
            cw, cd = W * cut_x, D * cut_y
            x0, y0, x1, y1 = -W / 2, -D / 2, W / 2, D / 2
            # remove the top-right corner: CCW from bottom-left
            return np.array([[x0, y0], [x1, y0], [x1, y1 - cd], [x1 - cw, y1 - cd], [x1 - cw, y1], [x0, y1]])
    W = math.sqrt(area * aspect)
    D = area / W
    if D < cfg.min_room_width:  # keep the area, relax the aspect
        D = min(cfg.min_room_width, math.sqrt(area))
        W = area / D
    return np.array([[-W / 2, -D / 2], [W / 2, -D / 2], [W / 2, D / 2], [-W / 2, D / 2]])


def _room_mesh(poly: np.ndarray, height: float) -> TriMesh:
    """Floor, ceiling (fan from the polygon's reflex vertex, or vertex 0 if convex) and wall quads."""
    n = len(poly)
    # An L-shaped hexagon is star-shaped from its reflex vertex, so a fan from it triangulates it.
    e_prev = poly - np.roll(poly, 1, axis=0)
    e_next = np.roll(poly, -1, axis=0) - poly
    cross = e_prev[:, 0] * e_next[:, 1] - e_prev[:, 1] * e_next[:, 0]
    apex = int(np.argmin(cross)) if cross.min() < 0 else 0
    order = [(apex + k) % n for k in range(n)]
    fan = np.array([[order[0], order[k], order[k + 1]] for k in range(1, n - 1)])
    floor_v = np.c_[poly, np.zeros(n)]
    ceil_v = np.c_[poly, np.full(n, height)]
    wall_v, wall_f = [], []
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        b = 4 * i
        wall_v += [[p[0], p[1], 0.0], [q[0], q[1], 0.0], [q[0], q[1], height], [p[0], p[1], height]]
        wall_f += [[b, b + 1, b + 2], [b, b + 2, b + 3]]
    verts = np.concatenate([floor_v, ceil_v, np.array(wall_v)])
    tris = np.concatenate([fan, fan[:, ::-1] + n, np.array(wall_f) + 2 * n])
    surface = np.r_[
        np.full(len(fan), SURFACE_FLOOR),
        np.full(len(fan), SURFACE_CEILING),
        np.full(len(wall_f), SURFACE_WALL),
    ]
    albedo = np.array([_FLOOR_RGB, _CEILING_RGB, _WALL_RGB], dtype=np.float32)[surface - 1]
    return TriMesh(
        verts, tris.astype(np.int32), np.zeros(len(tris), np.int32), albedo, surface.astype(np.int8)
    )


# ----------------------------------------------------------------------------------------------------
# Placement
# ----------------------------------------------------------------------------------------------------


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def footprint_corners(centroid: np.ndarray, size: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """The 4 floor-plan corners ``[4, 2]`` (counter-clockwise) of an oriented box (x, y only)."""
    hx, hy = size[0] / 2, size[1] / 2
    local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
    return local @ rotation[:2, :2].T + centroid[:2]


def _segments_cross(a0, a1, b0, b1) -> bool:
    """Proper intersection of 2-D segments a0a1 and b0b1 (touching at endpoints does not count)."""

    def orient(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    d1, d2 = orient(b0, b1, a0), orient(b0, b1, a1)
    d3, d4 = orient(a0, a1, b0), orient(a0, a1, b1)
    return d1 * d2 < 0 and d3 * d4 < 0


def _footprint_inside(corners: np.ndarray, poly: np.ndarray, shrink: float = 1e-3) -> bool:
    """A convex footprint lies inside a simple polygon iff its corners do and no edges cross."""
    c = corners.mean(axis=0)
    pts = c + (corners - c) * (1 - shrink / max(np.linalg.norm(corners - c, axis=1).max(), 1e-9))
    if not point_in_polygon(pts, poly).all():
        return False
    for i in range(4):
        for j in range(len(poly)):
            if _segments_cross(pts[i], pts[(i + 1) % 4], poly[j], poly[(j + 1) % len(poly)]):
                return False
    return True


@dataclass
class _Placed:
    category: str
    centroid: np.ndarray  # [3] world
    size: np.ndarray  # [3] full extents (w, d, h)
    rotation: np.ndarray  # [3, 3] world-from-local
    keep_out: bool = False  # a clearance zone, not an object


def _aabb(p: _Placed) -> tuple[np.ndarray, np.ndarray]:
    half = np.abs(p.rotation) @ (np.asarray(p.size) / 2)  # world half-extents of the oriented box
    return p.centroid - half, p.centroid + half


def _overlaps(cand: _Placed, placed: list[_Placed], gap: float) -> bool:
    """Whether ``cand`` comes closer than ``gap`` metres to any placed box (exact oriented-box test,
    after a cheap axis-aligned rejection)."""
    lo, hi = _aabb(cand)
    box = _as_box(cand)
    for p in placed:
        plo, phi = _aabb(p)
        if np.any(lo - gap >= phi) or np.any(plo >= hi + gap):
            continue
        if boxes_overlap(box, _as_box(p), margin=gap):
            return True
    return False


def _as_box(p: _Placed, instance_id: int = -1) -> ObjectBox:
    return ObjectBox(
        category=p.category,
        centroid=np.asarray(p.centroid, dtype=np.float64),
        axes_lengths=np.asarray(p.size, dtype=np.float64),
        rotation=np.asarray(p.rotation, dtype=np.float64),
        instance_id=instance_id,
    )


def _wall_pose(poly, spec: CategorySpec, size, rng, wall_gap: float):
    """Pick a wall edge long enough and a position on it; the object's back (-y) faces the wall."""
    n = len(poly)
    lengths = np.linalg.norm(np.roll(poly, -1, axis=0) - poly, axis=1)
    ok = np.flatnonzero(lengths > size[0] + 0.2)
    if len(ok) == 0:
        return None
    i = int(rng.choice(ok, p=lengths[ok] / lengths[ok].sum()))
    p, q = poly[i], poly[(i + 1) % n]
    t = (q - p) / lengths[i]
    inward = np.array([-t[1], t[0]])  # left normal of a CCW polygon edge points into the room
    s = rng.uniform(size[0] / 2 + 0.05, lengths[i] - size[0] / 2 - 0.05)
    xy = p + t * s + inward * (size[1] / 2 + wall_gap)
    yaw = math.atan2(inward[1], inward[0]) - math.pi / 2  # local +y (front) → inward normal
    if spec.placement == "wall":
        z_bottom = rng.uniform(*spec.mount_z)
    else:
        z_bottom = 0.0
    return np.array([xy[0], xy[1], z_bottom + size[2] / 2]), _rot_z(yaw), inward


def _sample_size(spec: CategorySpec, rng) -> np.ndarray:
    size = rng.uniform(spec.size_lo, spec.size_hi)
    if spec.square:
        size[1] = size[0]
    return size


def _choose_objects(rng, cfg: SyntheticSceneConfig, area: float) -> list[str]:
    """The list of categories (with repeats for instances) to try to place, big items first."""
    target = int(np.clip(round(area * cfg.objects_per_m2), cfg.min_objects, cfg.max_objects))
    cats = [c for c in cfg.categories]
    chosen: list[str] = []
    if "door" in cats:  # every room has a door
        chosen.append("door")
    pool = [c for c in cats if c != "door"]
    rng.shuffle(pool)
    for c in pool:
        if len(chosen) >= target:
            break
        counts = CATALOG[c].counts
        if cfg.instance_counts is not None and max(counts) > 1:
            counts = cfg.instance_counts
        k = min(int(rng.choice(counts)), cfg.max_instances, target - len(chosen))
        chosen += [c] * k
    # big floor items first, wall items next, small ones last: placement succeeds more often
    order = {"floor_wall": 0, "wall": 1, "floor": 2}
    vol = {c: float(np.prod(CATALOG[c].size_hi)) for c in cats}
    chosen.sort(key=lambda c: (order[CATALOG[c].placement], -vol[c]))
    return chosen


def generate_scene(cfg: SyntheticSceneConfig, index: int = 0, scene_id: str | None = None) -> SyntheticScene:
    """Generate scene ``index`` of the batch defined by ``cfg`` (deterministic in ``(cfg.seed, index)``)."""
    rng = np.random.default_rng([cfg.seed, index])
    poly = make_room_polygon(rng, cfg)
    area = polygon_area(poly)
    floor_budget = cfg.max_footprint_fraction * area
    used_floor = 0.0
    placed: list[_Placed] = []
    skipped: list[tuple[str, str]] = []
    for cat in _choose_objects(rng, cfg, area):
        spec = CATALOG[cat]
        if spec.placement != "wall" and used_floor >= floor_budget:
            skipped.append((cat, "floor budget"))
            continue
        ok = False
        for _ in range(cfg.max_tries):
            size = _sample_size(spec, rng)
            if spec.placement == "floor":
                lo, hi = poly.min(axis=0), poly.max(axis=0)
                xy = rng.uniform(lo, hi)
                if rng.random() < cfg.free_yaw_prob:
                    yaw = rng.uniform(-math.pi, math.pi)
                else:
                    yaw = rng.integers(4) * math.pi / 2
                cand = _Placed(cat, np.array([xy[0], xy[1], size[2] / 2]), size, _rot_z(yaw))
                inward = None
            else:
                pose = _wall_pose(poly, spec, size, rng, wall_gap=0.005 if spec.placement == "wall" else 0.02)
                if pose is None:
                    break
                centroid, R, inward = pose
                cand = _Placed(cat, centroid, size, R)
            if not _footprint_inside(footprint_corners(cand.centroid, size, cand.rotation), poly):
                continue
            if cand.centroid[2] + size[2] / 2 > cfg.wall_height - 0.05:
                continue
            if _overlaps(cand, placed, cfg.min_gap):
                continue
            placed.append(cand)
            if cat == "door":  # keep-out zone in front of the door
                depth = cfg.door_clearance
                c = cand.centroid.copy()
                c[:2] = c[:2] + inward * (size[1] / 2 + depth / 2)
                placed.append(
                    _Placed("<door clearance>", c, np.array([size[0], depth, size[2]]), R, keep_out=True)
                )
            if spec.placement != "wall":
                used_floor += size[0] * size[1]
            ok = True
            break
        if not ok:
            skipped.append((cat, "no free spot"))

    objects = [p for p in placed if not p.keep_out]
    boxes = [_as_box(p, instance_id=i + 1) for i, p in enumerate(objects)]
    meshes = [_room_mesh(poly, cfg.wall_height)]
    for p, box in zip(objects, boxes):
        spec = CATALOG[p.category]
        # per-instance colour jitter so instances of a category are not identical
        rgb = tuple(np.clip(np.asarray(spec.rgb) * rng.uniform(0.85, 1.15), 0, 1))
        for v, f, col in spec.builder(p.size, rgb, rng):
            meshes.append(
                TriMesh(
                    vertices=v @ p.rotation.T + p.centroid,
                    triangles=f.astype(np.int32),
                    instance_ids=np.full(len(f), box.instance_id, np.int32),
                    albedo=np.tile(np.asarray(col, np.float32), (len(f), 1)),
                    surface=np.full(len(f), SURFACE_OBJECT, np.int8),
                )
            )
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    meta = SceneMeta(
        scene_id=scene_id if scene_id is not None else f"synthetic_{cfg.seed:04d}_{index:05d}",
        objects=boxes,
        room_size=float(area),
        room_center=np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, cfg.wall_height / 2]),
        floor_polygon=poly.astype(np.float64),
        dataset="synthetic",
    )
    return SyntheticScene(
        meta=meta, mesh=TriMesh.concatenate(meshes), wall_height=cfg.wall_height, skipped=skipped
    )


def generate_scenes(cfg: SyntheticSceneConfig, n: int) -> list[SyntheticScene]:
    """``n`` scenes ``generate_scene(cfg, i)`` for ``i = 0..n-1``."""
    return [generate_scene(cfg, i) for i in range(n)]
