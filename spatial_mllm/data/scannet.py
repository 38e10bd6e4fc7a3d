"""ScanNet scene folders → :class:`~spatial_mllm.data.scene.SceneMeta`, frames and camera poses.

Expected layout (ScanNet v2 release + the SensReader exporter), for a scene ``<sid>``::

    <sid>_vh_clean_2.ply                  binary little-endian mesh: vertex x y z (float) red green blue
                                          alpha (uchar); face "list uchar int vertex_indices"
    <sid>_vh_clean_2.0.010000.segs.json   {"segIndices": [segment id per vertex], ...}
    <sid>.aggregation.json                {"segGroups": [{"objectId", "label", "segments": [...]}, ...]}
    <sid>.txt                             "axisAlignment = m00 m01 … m33" (16 numbers, row-major 4×4)
    color/<N>.jpg  depth/<N>.png (uint16, millimetres; 0 = no depth)  pose/<N>.txt (4×4 camera-to-world)
    intrinsic/intrinsic_color.txt  intrinsic/intrinsic_depth.txt   (4×4, the 3×3 K in the top-left)

Frames and conventions
----------------------
* The world is ScanNet's **axis-aligned** frame: ``x_aligned = A @ x_mesh`` with ``A`` the
  ``axisAlignment`` matrix (z up, walls roughly along x / y, metres) — the frame VSI-Bench's ScanNet
  boxes are in. A scene file without ``axisAlignment`` (ScanNet's test split) gets ``A = I`` and a
  warning.
* ScanNet's poses are camera-to-world with OpenCV camera axes (x right, y down, z forward). We return
  **camera-from-world** extrinsics in the aligned world: ``E = inverse(A @ P)[:3, :4]``
  (:func:`spatial_mllm.geometry.cameras.invert_rigid`). Frames whose pose holds ``inf``/``nan`` (ScanNet
  marks lost tracking that way) are reported invalid.
* Depth is returned in metres (``uint16 / 1000``), ``0`` where the sensor had none.

Objects
-------
One :class:`ObjectBox` per ``segGroup`` (``instance_id = objectId + 1``; 0 stays background), from the
aligned vertices of its segments. The box is **upright**: in the floor plane, the minimum-area rectangle
around the vertices' (x, y) convex hull (rotating calipers over hull edges, exact); along z the vertex
extent. ``rotation`` columns are (u, v, z) with u the rectangle side found, right-handed. VSI-Bench's
boxes for ScanNet are free 3D orientations (their ``normalizedAxes`` are tilted); for furniture standing on
a floor an upright box is the natural choice and keeps "footprint" meaningful.

Categories are ScanNet's raw labels (``segGroups[*].label``) unchanged, except that the structural
labels ``wall``, ``floor``, ``ceiling`` are not objects (``exclude_labels``). A ``label_map`` may rename
labels (e.g. :data:`VSIBENCH_LABEL_MAP`, ours, for names VSI-Bench spells differently); unmapped labels
pass through.

Room size (floor area, m²)
--------------------------
The scan's footprint in the floor plane: the (x, y) of the mesh's floor triangles (segments labelled
``floor``, else triangles within 0.10 m of the lowest 1 % of vertex heights), sampled densely, together with
every vertex of the mesh (walls and furniture bound the room), rasterised on a 5 cm grid, closed by one
cell and hole-filled (furniture hides floor); area = cells × 0.05². For a single scanned room this is
the floor area up to the wall thickness and the raster (12.01 m² for the 4 m × 3 m test room); where
the scanner looked through a door the footprint grows.
``room_center`` is the centre of the aligned mesh's bounding box; ``floor_polygon`` is left ``None``
(the footprint is a raster, not a polygon).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatial_mllm.data.scene import ObjectBox, SceneMeta
from spatial_mllm.geometry.boxes import convex_hull_2d
from spatial_mllm.geometry.cameras import invert_rigid

__all__ = [
    "STRUCTURE_LABELS",
    "VSIBENCH_LABEL_MAP",
    "ScanNetScene",
    "load_scannet_scene",
    "read_ply",
    "write_ply",
    "read_axis_alignment",
    "upright_box",
    "floor_area",
]

STRUCTURE_LABELS = ("wall", "floor", "ceiling")
# Optional renames toward VSI-Bench's category names (ours; VSI-Bench did not publish its mapping).
VSIBENCH_LABEL_MAP = {
    "trash can": "trash bin",
    "couch": "sofa",
    "television": "tv",
    "bookshelves": "bookshelf",
    "night stand": "nightstand",
    "fridge": "refrigerator",
    "mouse": "computer mouse",
}

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"ScanNet file not found: {path}")
    return path


# ---- mesh I/O ---------------------------------------------------------------------------------------------
def read_ply(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a binary little-endian PLY as ScanNet writes it.

    Returns ``{"vertices": float64 [V, 3], "colors": uint8 [V, 3 or 4] (if present), "faces": int64 [F, 3]}``;
    faces must be triangles.
    """
    path = _need(Path(path))
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file")
        elements: list[tuple[str, int, list]] = []
        fmt = None
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: PLY header has no end_header")
            tok = line.decode("ascii", "replace").split()
            if not tok or tok[0] in ("comment", "obj_info"):
                continue
            if tok[0] == "format":
                fmt = tok[1]
            elif tok[0] == "element":
                elements.append((tok[1], int(tok[2]), []))
            elif tok[0] == "property":
                elements[-1][2].append(tok[1:])
            elif tok[0] == "end_header":
                break
        if fmt != "binary_little_endian":
            raise ValueError(f"{path}: PLY format {fmt!r} not supported (ScanNet uses binary_little_endian)")
        out: dict[str, np.ndarray] = {}
        for name, count, props in elements:
            if name == "vertex":
                dt = np.dtype([(p[1], "<" + _PLY_TYPES[p[0]]) for p in props])
                v = np.frombuffer(f.read(dt.itemsize * count), dtype=dt, count=count)
                out["vertices"] = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
                cols = [c for c in ("red", "green", "blue", "alpha") if c in v.dtype.names]
                if cols:
                    out["colors"] = np.stack([v[c] for c in cols], axis=1).astype(np.uint8)
            elif name == "face":
                p = props[0]
                if p[0] != "list":
                    raise ValueError(f"{path}: face element must be a list property")
                ct, it = "<" + _PLY_TYPES[p[1]], "<" + _PLY_TYPES[p[2]]
                dt = np.dtype([("n", ct), ("idx", it, (3,))])
                faces = np.frombuffer(f.read(dt.itemsize * count), dtype=dt, count=count)
                if count and np.any(faces["n"] != 3):
                    raise ValueError(f"{path}: only triangle faces are supported")
                out["faces"] = faces["idx"].astype(np.int64)
            else:
                raise ValueError(f"{path}: unexpected PLY element {name!r}")
    if "vertices" not in out:
        raise ValueError(f"{path}: PLY has no vertex element")
    out.setdefault("faces", np.zeros((0, 3), dtype=np.int64))
    return out


def write_ply(path: str | os.PathLike, vertices, faces, colors=None) -> Path:
    """Write a mesh in ScanNet's PLY layout (binary little-endian; x y z float, red green blue alpha uchar;
    faces ``list uchar int vertex_indices``)."""
    v = np.asarray(vertices, dtype="<f4").reshape(-1, 3)
    fc = np.asarray(faces, dtype="<i4").reshape(-1, 3)
    c = np.full((len(v), 4), 255, dtype=np.uint8) if colors is None else np.asarray(colors, dtype=np.uint8)
    if c.shape[1] == 3:
        c = np.concatenate([c, np.full((len(v), 1), 255, np.uint8)], axis=1)
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
        f"element face {len(fc)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    vdt = np.dtype([("xyz", "<f4", (3,)), ("rgba", "u1", (4,))])
    va = np.empty(len(v), dtype=vdt)
    va["xyz"], va["rgba"] = v, c
    fdt = np.dtype([("n", "u1"), ("idx", "<i4", (3,))])
    fa = np.empty(len(fc), dtype=fdt)
    fa["n"], fa["idx"] = 3, fc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(va.tobytes())
        f.write(fa.tobytes())
    return path


def read_axis_alignment(path: str | os.PathLike) -> np.ndarray | None:
    """The 4×4 ``axisAlignment`` of ``<sid>.txt`` (row-major), or None when the file has none."""
    text = _need(Path(path)).read_text()
    m = re.search(r"^\s*axisAlignment\s*=\s*(.+)$", text, re.MULTILINE)
    if m is None:
        return None
    vals = [float(x) for x in m.group(1).split()]
    if len(vals) != 16:
        raise ValueError(f"{path}: axisAlignment has {len(vals)} numbers, expected 16")
    return np.array(vals, dtype=np.float64).reshape(4, 4)


def _read_matrix(path: Path, shape=(4, 4)) -> np.ndarray:
    a = np.loadtxt(_need(path), dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{path}: expected a {shape} matrix, got {a.shape}")
    return a


# ---- geometry ---------------------------------------------------------------------------------------------
def upright_box(points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upright oriented box of points ``[N, 3]`` (metres, z-up): minimum-area rectangle of the (x, y)
    convex hull × z extent. Returns ``(centroid [3], axes_lengths [3], rotation [3, 3])``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(p) == 0:
        raise ValueError("upright_box: no points")
    hull = convex_hull_2d(p[:, :2])
    best = (np.inf, np.array([1.0, 0.0]))
    if len(hull) >= 3:
        for i in range(len(hull)):
            e = hull[(i + 1) % len(hull)] - hull[i]
            n = np.linalg.norm(e)
            if n < 1e-12:
                continue
            u = e / n
            v = np.array([-u[1], u[0]])
            a = np.ptp(hull @ u) * np.ptp(hull @ v)
            if a < best[0] - 1e-12:
                best = (a, u)
    elif len(hull) == 2:
        e = hull[1] - hull[0]
        best = (0.0, e / np.linalg.norm(e))
    u = best[1]
    if u[0] < 0 or (u[0] == 0 and u[1] < 0):  # canonical sign: u points to +x
        u = -u
    v = np.array([-u[1], u[0]])
    pu, pv = p[:, :2] @ u, p[:, :2] @ v
    lo = np.array([pu.min(), pv.min(), p[:, 2].min()])
    hi = np.array([pu.max(), pv.max(), p[:, 2].max()])
    mid = (lo + hi) / 2
    R = np.array([[u[0], v[0], 0.0], [u[1], v[1], 0.0], [0.0, 0.0, 1.0]])  # columns u, v, z; det = +1
    centroid = R @ mid
    return centroid, hi - lo, R


def _sample_triangles_xy(tri: np.ndarray, cell: float, rng: np.random.Generator) -> np.ndarray:
    """Points covering triangles ``[F, 3, 2]`` densely enough for a ``cell`` grid (≈ 4 per cell)."""
    if len(tri) == 0:
        return np.zeros((0, 2))
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    n = np.ceil(area / cell**2 * 4).astype(int) + 1
    idx = np.repeat(np.arange(len(tri)), n)
    r1, r2 = rng.random(len(idx)), rng.random(len(idx))
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    return tri[idx, 0] + r1[:, None] * e1[idx] + r2[:, None] * e2[idx]


def floor_area(vertices, faces, floor_vertex_mask=None, cell: float = 0.05, band: float = 0.10) -> float:
    """Floor area (m²) of an aligned (z-up, metres) room mesh; method in the module docstring."""
    from scipy import ndimage

    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if floor_vertex_mask is None or not np.any(floor_vertex_mask):
        z0 = np.percentile(v[:, 2], 1.0)
        floor_vertex_mask = v[:, 2] < z0 + band
    floor_faces = f[np.all(floor_vertex_mask[f], axis=1)] if len(f) else f
    rng = np.random.default_rng(0)  # fixed: the area is deterministic
    pts = np.concatenate([v[:, :2], _sample_triangles_xy(v[floor_faces][:, :, :2], cell, rng)])
    lo = pts.min(axis=0) - 2 * cell
    ij = np.floor((pts - lo) / cell).astype(int)
    grid = np.zeros(ij.max(axis=0) + 3, dtype=bool)
    grid[ij[:, 0], ij[:, 1]] = True
    grid = ndimage.binary_closing(grid, structure=np.ones((3, 3), bool))
    grid = ndimage.binary_fill_holes(grid)
    return float(grid.sum() * cell * cell)


# ---- scene ------------------------------------------------------------------------------------------------
@dataclass
class ScanNetScene:
    """A loaded ScanNet scene: objects, alignment, intrinsics and the exported frames (lazy image I/O)."""

    scene: SceneMeta  # objects and room in the aligned world frame (metres, z-up)
    folder: Path  # the scene folder
    axis_alignment: np.ndarray  # [4, 4] mesh → aligned world
    frame_ids: list[int] = field(default_factory=list)  # exported frame numbers N (color/N.jpg), sorted
    intrinsic_color: np.ndarray | None = None  # [3, 3] pixels, colour camera
    intrinsic_depth: np.ndarray | None = None  # [3, 3] pixels, depth camera

    def pose_c2w_raw(self, frame_id: int) -> np.ndarray:
        """ScanNet's pose/<N>.txt: [4, 4] camera-to-world in the *unaligned* mesh frame."""
        return _read_matrix(self.folder / "pose" / f"{frame_id}.txt")

    def extrinsics(self, frame_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """Camera-from-world extrinsics in the aligned world, ``[N, 3, 4]`` (OpenCV), and a validity mask
        ``[N]`` (False where ScanNet's pose is non-finite; those rows are NaN)."""
        ids = self.frame_ids if frame_ids is None else list(frame_ids)
        E = np.full((len(ids), 3, 4), np.nan)
        valid = np.zeros(len(ids), dtype=bool)
        for k, fid in enumerate(ids):
            P = self.pose_c2w_raw(fid)
            if not np.all(np.isfinite(P)):
                continue
            E[k] = invert_rigid(self.axis_alignment @ P)[:3, :4]
            valid[k] = True
        return E, valid

    def color(self, frame_id: int) -> np.ndarray:
        """``uint8 [H, W, 3]`` RGB of color/<N>.jpg."""
        from PIL import Image

        with Image.open(_need(self.folder / "color" / f"{frame_id}.jpg")) as im:
            return np.asarray(im.convert("RGB"))

    def depth(self, frame_id: int) -> np.ndarray:
        """``float32 [H, W]`` depth in metres from depth/<N>.png (uint16 mm); 0 = no measurement."""
        from PIL import Image

        with Image.open(_need(self.folder / "depth" / f"{frame_id}.png")) as im:
            d = np.asarray(im)
        if d.dtype not in (np.uint16, np.int32, np.uint32, np.int16):
            raise ValueError(f"depth/{frame_id}.png: expected 16-bit depth, got {d.dtype}")
        return d.astype(np.float32) / 1000.0


def load_scannet_scene(
    folder: str | os.PathLike,
    scene_id: str | None = None,
    label_map: dict[str, str] | None = None,
    exclude_labels=STRUCTURE_LABELS,
    with_frames: bool = True,
) -> ScanNetScene:
    """Read a ScanNet scene folder (layout in the module docstring). ``scene_id`` defaults to the folder
    name. Frames (color/, pose/, intrinsic/) are required when ``with_frames``; any missing file raises
    ``FileNotFoundError`` naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"ScanNet scene folder not found: {folder}")
    sid = scene_id or folder.name
    mesh = read_ply(folder / f"{sid}_vh_clean_2.ply")
    segs = json.loads(_need(folder / f"{sid}_vh_clean_2.0.010000.segs.json").read_text())
    agg = json.loads(_need(folder / f"{sid}.aggregation.json").read_text())
    A = read_axis_alignment(folder / f"{sid}.txt")
    if A is None:
        warnings.warn(f"{folder / f'{sid}.txt'}: no axisAlignment; using the identity", stacklevel=2)
        A = np.eye(4)
    seg_idx = np.asarray(segs["segIndices"], dtype=np.int64)
    if len(seg_idx) != len(mesh["vertices"]):
        raise ValueError(f"{sid}: segIndices has {len(seg_idx)} entries for {len(mesh['vertices'])} vertices")
    v = mesh["vertices"] @ A[:3, :3].T + A[:3, 3]  # aligned world, metres

    objects, floor_mask = [], np.zeros(len(v), dtype=bool)
    label_map = label_map or {}
    for g in sorted(agg.get("segGroups", []), key=lambda g: g["objectId"]):
        mask = np.isin(seg_idx, np.asarray(g["segments"], dtype=np.int64))
        raw = g["label"]
        if raw == "floor":
            floor_mask |= mask
        if raw in exclude_labels:
            continue
        if not np.any(mask):
            warnings.warn(f"{sid}: object {g['objectId']} ({raw!r}) has no vertices; skipped", stacklevel=2)
            continue
        c, ln, R = upright_box(v[mask])
        objects.append(
            ObjectBox(
                category=label_map.get(raw, raw),
                centroid=c,
                axes_lengths=ln,
                rotation=R,
                instance_id=int(g["objectId"]) + 1,
            )
        )
    scene = SceneMeta(
        scene_id=sid,
        objects=objects,
        room_size=floor_area(v, mesh["faces"], floor_mask if floor_mask.any() else None),
        room_center=(v.min(axis=0) + v.max(axis=0)) / 2,
        floor_polygon=None,
        dataset="scannet",
    )
    out = ScanNetScene(scene=scene, folder=folder, axis_alignment=A)
    if with_frames:
        color_dir = folder / "color"
        if not color_dir.is_dir():
            raise FileNotFoundError(f"ScanNet frames folder not found: {color_dir}")
        out.frame_ids = sorted(int(p.stem) for p in color_dir.glob("*.jpg") if p.stem.isdigit())
        out.intrinsic_color = _read_matrix(folder / "intrinsic" / "intrinsic_color.txt")[:3, :3]
        out.intrinsic_depth = _read_matrix(folder / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
    return out
