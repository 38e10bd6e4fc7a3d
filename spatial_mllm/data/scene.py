"""Scene model shared by every scene source: :class:`ObjectBox` and :class:`SceneMeta`.

A scene is a list of oriented 3D boxes with a category each, plus the room's floor area and centre. The
synthetic generator, the ScanNet reader and the VSI-Bench meta-info reader all produce a
:class:`SceneMeta`; the QA generators (:mod:`spatial_mllm.data.qa`) only read this model.

Frames and units
----------------
* world coordinates, **metres, z-up** (the VSI-Bench meta-info for ScanNet / ScanNet++ / ARKitScenes is
  z-up and in metres as well);
* a box's ``rotation`` ``R`` (3×3) maps box-local coordinates to world directions:
  ``x_world = R @ x_local + centroid``; i.e. the **columns** of ``R`` are the box's axes in world
  coordinates, and ``axes_lengths[i]`` is the box's full extent along column ``i``. The box occupies
  ``|x_local[i]| <= axes_lengths[i] / 2``.

VSI-Bench meta-info schema (``*_meta_info_val.json``)
-----------------------------------------------------
One entry per scene id::

    {"room_size": float m², "room_center": [x, y, z],
     "object_counts": {category: n, ...},
     "object_bbox": {category: [{"centroid": [3], "axesLengths": [3], "normalizedAxes": [9],
                                 "min": [3], "max": [3]}, ...]},
     "video_path": str, "dataset": "scannet" | "scannetpp" | "arkitscenes"}

``normalizedAxes`` is a 3×3 matrix flattened **row-major** whose **rows** are the box axes in world
coordinates (checked on all 288 validation scenes: the corners built that way reproduce the stored
``min``/``max`` to 1e-15 m, the column reading misses by up to 1.8 m). Hence::

    rotation = np.reshape(normalizedAxes, (3, 3)).T       # columns = axes
    normalizedAxes = rotation.T.reshape(-1).tolist()      # rows = axes

``min``/``max`` are the world-axis-aligned bounds of the oriented box (corner min / max).

``object_counts`` is kept verbatim in ``SceneMeta.annotated_counts``: in 11 of the 88 ScanNet scenes it
differs from the number of boxes (e.g. 1 "printer" with 2 boxes), and its key order differs from
``object_bbox``'s. Set ``annotated_counts = None`` after editing ``objects`` to count boxes instead.

Lossless round trip: the reader keeps each object's raw JSON record (``ObjectBox.source``), the scene's key
order and unknown keys (``SceneMeta.extra``). The writer emits a raw value whenever the current
value still equals it numerically, so ``0`` stays ``0`` (not ``0.0``) and read → write reproduces the real
files byte for byte with ``json.dumps(indent=4)``; edited values are written fresh as floats.
Instance ids of meta-info objects are 1, 2, … in file order (the meta-info has no instance ids).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ObjectBox",
    "SceneMeta",
    "load_vsibench_meta",
    "save_vsibench_meta",
    "scene_to_vsibench_entry",
    "scene_from_vsibench_entry",
    "save_scene",
    "load_scene",
]

# Unit-cube corner signs, ordered by (x, y, z) bits: corner k = (±½, ±½, ±½) with bit 2 → x, 1 → y, 0 → z.
_CORNER_SIGNS = np.array(
    [[sx, sy, sz] for sx in (-0.5, 0.5) for sy in (-0.5, 0.5) for sz in (-0.5, 0.5)], dtype=np.float64
)


def _vec(x, n: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    return a


@dataclass
class ObjectBox:
    """One object instance as an oriented box (world frame, metres, z-up)."""

    category: str  # object class name (VSI-Bench vocabulary, e.g. "chair", "trash bin")
    centroid: np.ndarray  # [3] box centre in world coordinates, metres
    axes_lengths: np.ndarray  # [3] full extents along the box's own axes (columns of rotation), metres
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # [3,3] world = R @ local + centroid
    instance_id: int = 0  # > 0: id in instance masks (0 is background); unique within a scene
    stored_min: np.ndarray | None = None  # [3] min read from a file (VSI-Bench "min"); None → computed
    stored_max: np.ndarray | None = None  # [3] max read from a file (VSI-Bench "max"); None → computed
    source: dict | None = field(default=None, repr=False, compare=False)  # raw JSON record, for lossless IO

    def __post_init__(self) -> None:
        self.centroid = _vec(self.centroid, 3, "centroid")
        self.axes_lengths = _vec(self.axes_lengths, 3, "axes_lengths")
        self.rotation = np.asarray(self.rotation, dtype=np.float64)
        if self.rotation.shape != (3, 3):
            raise ValueError(f"rotation must have shape (3, 3), got {self.rotation.shape}")
        if np.any(self.axes_lengths < 0):
            raise ValueError(f"axes_lengths must be >= 0, got {self.axes_lengths}")
        if self.stored_min is not None:
            self.stored_min = _vec(self.stored_min, 3, "stored_min")
        if self.stored_max is not None:
            self.stored_max = _vec(self.stored_max, 3, "stored_max")
        self.instance_id = int(self.instance_id)

    # ---- geometry -------------------------------------------------------------------------------------
    def corners(self) -> np.ndarray:
        """The 8 corners ``[8, 3]`` in world coordinates (metres); corner k has local signs
        ``(±½, ±½, ±½)`` with x from bit 2, y from bit 1, z from bit 0 of k."""
        local = _CORNER_SIGNS * self.axes_lengths  # [8, 3]
        return local @ self.rotation.T + self.centroid

    @property
    def min(self) -> np.ndarray:
        """World-axis-aligned lower bound ``[3]`` (the stored VSI-Bench value if read from a file)."""
        return self.stored_min if self.stored_min is not None else self.corners().min(axis=0)

    @property
    def max(self) -> np.ndarray:
        """World-axis-aligned upper bound ``[3]`` (the stored VSI-Bench value if read from a file)."""
        return self.stored_max if self.stored_max is not None else self.corners().max(axis=0)

    @property
    def normalized_axes(self) -> list[float]:
        """VSI-Bench ``normalizedAxes``: ``rotation.T`` flattened row-major (rows = box axes)."""
        return self.rotation.T.reshape(-1).tolist()

    @property
    def longest_side(self) -> float:
        """Longest box dimension, metres."""
        return float(np.max(self.axes_lengths))

    @property
    def volume(self) -> float:
        """Box volume, m³."""
        return float(np.prod(self.axes_lengths))

    def world_to_local(self, points) -> np.ndarray:
        """World points ``[..., 3]`` → box-local coordinates ``[..., 3]`` (metres)."""
        p = np.asarray(points, dtype=np.float64)
        return (p - self.centroid) @ self.rotation

    # ---- serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Our own ``scene.json`` record (plain lists; floats written by ``json`` round-trip exactly)."""
        d = {
            "category": self.category,
            "instance_id": self.instance_id,
            "centroid": self.centroid.tolist(),
            "axes_lengths": self.axes_lengths.tolist(),
            "rotation": self.rotation.tolist(),
        }
        if self.stored_min is not None:
            d["min"] = self.stored_min.tolist()
        if self.stored_max is not None:
            d["max"] = self.stored_max.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ObjectBox:
        return cls(
            category=d["category"],
            centroid=d["centroid"],
            axes_lengths=d["axes_lengths"],
            rotation=d["rotation"],
            instance_id=d["instance_id"],
            stored_min=d.get("min"),
            stored_max=d.get("max"),
        )


@dataclass
class SceneMeta:
    """A scene: its objects and room geometry (world frame, metres, z-up)."""

    scene_id: str  # unique id: ScanNet "scene0011_00", ARKitScenes "41069025", synthetic "syn_000012", …
    objects: list[ObjectBox] = field(default_factory=list)  # all annotated instances
    room_size: float | None = None  # floor area, m² (VSI-Bench "room_size")
    room_center: np.ndarray | None = None  # [3] room centre, metres (VSI-Bench "room_center")
    floor_polygon: np.ndarray | None = None  # [N, 2] floor outline (x, y), metres, counter-clockwise
    dataset: str = "synthetic"  # "synthetic" | "scannet" | "scannetpp" | "arkitscenes"
    video_path: str | None = None  # video of the scene, when one exists (VSI-Bench "video_path")
    annotated_counts: dict[str, int] | None = None  # "object_counts" as a file stored it; None → from boxes
    extra: dict = field(default_factory=dict, repr=False)  # unknown keys + key orders, for lossless IO

    def __post_init__(self) -> None:
        if self.room_center is not None:
            self.room_center = _vec(self.room_center, 3, "room_center")
        if self.floor_polygon is not None:
            fp = np.asarray(self.floor_polygon, dtype=np.float64)
            if fp.ndim != 2 or fp.shape[1] != 2:
                raise ValueError(f"floor_polygon must have shape (N, 2), got {fp.shape}")
            self.floor_polygon = fp
        if self.room_size is not None:
            self.room_size = float(self.room_size)
        ids = [o.instance_id for o in self.objects]
        if len(set(ids)) != len(ids):
            dup = sorted(k for k, n in Counter(ids).items() if n > 1)
            raise ValueError(f"scene {self.scene_id}: duplicate instance ids {dup}")

    # ---- convenience ----------------------------------------------------------------------------------
    @property
    def categories(self) -> list[str]:
        """Distinct categories in first-appearance order."""
        return list(dict.fromkeys(o.category for o in self.objects))

    @property
    def box_counts(self) -> dict[str, int]:
        """Boxes per category, in first-appearance order."""
        return dict(Counter(o.category for o in self.objects))

    @property
    def object_counts(self) -> dict[str, int]:
        """Instances per category: ``annotated_counts`` when set (a file's ``object_counts``), else the
        number of boxes per category. The two differ in 11 of the 88 ScanNet validation scenes (e.g.
        scene0378_01: "printer" counted 1 with 2 boxes); VSI-Bench's counting answers use the annotation."""
        if self.annotated_counts is not None:
            return dict(self.annotated_counts)
        return self.box_counts

    @property
    def by_instance_id(self) -> dict[int, ObjectBox]:
        return {o.instance_id: o for o in self.objects}

    def instances(self, category: str) -> list[ObjectBox]:
        """All boxes of ``category`` (empty list if none)."""
        return [o for o in self.objects if o.category == category]

    def unique_categories(self) -> list[str]:
        """Categories with exactly one instance — one box *and* (when annotated) a count of one; VSI-Bench's
        size/distance/direction questions use these. First-appearance order."""
        counts = self.object_counts
        return [c for c, n in self.box_counts.items() if n == 1 and counts.get(c, 0) == 1]

    # ---- our own scene.json ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "scene_id": self.scene_id,
            "dataset": self.dataset,
            "room_size": self.room_size,
            "room_center": None if self.room_center is None else self.room_center.tolist(),
            "floor_polygon": None if self.floor_polygon is None else self.floor_polygon.tolist(),
            "video_path": self.video_path,
            "annotated_counts": self.annotated_counts,
            "objects": [o.to_dict() for o in self.objects],
        }

    @classmethod
    def from_dict(cls, d: dict) -> SceneMeta:
        return cls(
            scene_id=d["scene_id"],
            objects=[ObjectBox.from_dict(o) for o in d["objects"]],
            room_size=d.get("room_size"),
            room_center=d.get("room_center"),
            floor_polygon=d.get("floor_polygon"),
            dataset=d.get("dataset", "synthetic"),
            video_path=d.get("video_path"),
            annotated_counts=d.get("annotated_counts"),
        )


def save_scene(scene: SceneMeta, path: str | os.PathLike) -> Path:
    """Write our ``scene.json`` (deterministic: fixed key order, ``indent=2``, exact float repr)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scene.to_dict(), indent=2) + "\n")
    return path


def load_scene(path: str | os.PathLike) -> SceneMeta:
    """Read a ``scene.json`` written by :func:`save_scene`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene file not found: {path}")
    return SceneMeta.from_dict(json.loads(path.read_text()))


# ---- VSI-Bench meta-info ------------------------------------------------------------------------------
_BOX_KEYS = ("centroid", "axesLengths", "normalizedAxes", "min", "max")
_SCENE_KEYS = ("room_size", "room_center", "object_counts", "object_bbox", "video_path", "dataset")


def scene_from_vsibench_entry(scene_id: str, entry: dict, dataset: str | None = None) -> SceneMeta:
    """One meta-info entry → :class:`SceneMeta` (instance ids 1, 2, … in file order)."""
    missing = [k for k in ("room_size", "object_bbox") if k not in entry]
    if missing:
        raise KeyError(f"meta-info scene {scene_id!r} lacks keys {missing}")
    objects = []
    for category, boxes in entry["object_bbox"].items():
        for b in boxes:
            absent = [k for k in ("centroid", "axesLengths", "normalizedAxes") if k not in b]
            if absent:
                raise KeyError(f"meta-info scene {scene_id!r}, {category!r}: box lacks keys {absent}")
            objects.append(
                ObjectBox(
                    category=category,
                    centroid=b["centroid"],
                    axes_lengths=b["axesLengths"],
                    rotation=np.asarray(b["normalizedAxes"], dtype=np.float64).reshape(3, 3).T,
                    instance_id=len(objects) + 1,
                    stored_min=b.get("min"),
                    stored_max=b.get("max"),
                    source=b,
                )
            )
    extra = {k: v for k, v in entry.items() if k not in _SCENE_KEYS}
    extra["_key_order"] = list(entry.keys())
    extra["_has_dataset_key"] = "dataset" in entry
    if "room_size" in entry:
        extra["_room_size_raw"] = entry["room_size"]
    if entry.get("room_center") is not None:
        extra["_room_center_raw"] = entry["room_center"]
    return SceneMeta(
        scene_id=scene_id,
        objects=objects,
        room_size=entry["room_size"],
        room_center=entry.get("room_center"),
        floor_polygon=None,
        dataset=entry.get("dataset", dataset or "unknown"),
        video_path=entry.get("video_path"),
        annotated_counts=dict(entry["object_counts"]) if "object_counts" in entry else None,
        extra=extra,
    )


def _keep_raw(raw, value: np.ndarray):
    """The raw JSON list if it still equals ``value`` numerically (keeps ints as ints), else floats."""
    if raw is not None and np.asarray(raw, dtype=np.float64).shape == value.shape:
        if np.array_equal(np.asarray(raw, dtype=np.float64), value):
            return raw
    return [float(x) for x in np.asarray(value, dtype=np.float64).reshape(-1)]


def scene_to_vsibench_entry(scene: SceneMeta) -> dict:
    """:class:`SceneMeta` → one meta-info entry (the schema above; lossless for scenes read from a file)."""
    object_bbox: dict[str, list[dict]] = {}
    for o in scene.objects:
        src = o.source or {}
        rec = {
            "centroid": _keep_raw(src.get("centroid"), o.centroid),
            "axesLengths": _keep_raw(src.get("axesLengths"), o.axes_lengths),
            "normalizedAxes": _keep_raw(src.get("normalizedAxes"), o.rotation.T.reshape(-1)),
            "min": _keep_raw(src.get("min"), np.asarray(o.min)),
            "max": _keep_raw(src.get("max"), np.asarray(o.max)),
        }
        object_bbox.setdefault(o.category, []).append(rec)
    counts = scene.object_counts  # annotated counts (file order) when present
    values = {
        "room_size": scene.room_size,
        "room_center": None,
        "object_counts": counts,
        "object_bbox": object_bbox,
        "video_path": scene.video_path,
        "dataset": scene.dataset,
    }
    raw_rs = scene.extra.get("_room_size_raw")
    if raw_rs is not None and scene.room_size is not None and float(raw_rs) == scene.room_size:
        values["room_size"] = raw_rs
    if scene.room_center is not None:
        values["room_center"] = _keep_raw(scene.extra.get("_room_center_raw"), scene.room_center)
    order = scene.extra.get("_key_order")
    if order is None:  # a scene that was not read from a file: the ARKitScenes file's order
        order = ["video_path", "room_size", "room_center", "object_counts", "object_bbox", "dataset"]
    entry = {}
    for k in order:
        if k in values:
            if values[k] is not None or k in ("room_size",):
                entry[k] = values[k]
        elif k in scene.extra:
            entry[k] = scene.extra[k]
    for k, v in scene.extra.items():  # unknown keys not in the recorded order
        if not k.startswith("_") and k not in entry:
            entry[k] = v
    if not scene.extra.get("_has_dataset_key", True):
        entry.pop("dataset", None)
    return entry


def load_vsibench_meta(path: str | os.PathLike) -> dict[str, SceneMeta]:
    """Read a VSI-Bench ``*_meta_info_val.json`` → ``{scene_id: SceneMeta}`` in file order.

    The dataset name comes from each entry's ``dataset`` key, else from the file name
    (``scannet_meta_info_val.json`` → ``"scannet"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VSI-Bench meta-info file not found: {path}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by scene id, got {type(data).__name__}")
    fallback = path.name.split("_meta_info")[0] if "_meta_info" in path.name else None
    return {sid: scene_from_vsibench_entry(sid, e, dataset=fallback) for sid, e in data.items()}


def save_vsibench_meta(scenes, path: str | os.PathLike) -> Path:
    """Write scenes (a ``{scene_id: SceneMeta}`` dict or an iterable) in the meta-info schema, formatted
    as the released files are (``json.dumps(indent=4)``, no trailing newline)."""
    if isinstance(scenes, dict):
        scenes = list(scenes.values())
    data = {s.scene_id: scene_to_vsibench_entry(s) for s in scenes}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4))
    return path
