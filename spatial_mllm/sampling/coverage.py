"""Point maps (+ confidence) → voxel incidence: which voxels each candidate frame sees.

This is the geometric half of the paper's space-aware frame sampling (Wu et al. 2025, §3.2): every
candidate frame's 3D points are dropped into a voxel grid, and frame ``i`` *covers* voxel ``v`` when one
of its kept points falls into ``v``. :func:`spatial_mllm.sampling.greedy.greedy_max_coverage` then picks
the frames whose union covers the most voxels.

Units and frames
----------------
* ``world_points [S, H, W, 3]`` are in one world frame shared by all frames: VGGT's normalised
  (non-metric) scale, world = camera of frame 0 for the point head; metres for ground-truth depth + poses.
* ``conf [S, H, W]`` is VGGT's ``world_points_conf`` (``1 + exp(x)``, unitless, ≥ 1), or ``None`` for
  ground truth (every finite point is kept).
* The default voxel size is *relative*: ``min(x, y, z extent of the kept points) / voxel_divisor`` in the
  points' own units (the official rule, divisor 20). ``voxel_size=<float>`` gives a metric voxel size
  (in the points' units, metres for ground truth).
* Voxel ``(i, j, k)`` holds the points with ``floor((p - origin) / voxel_size) == (i, j, k)``, where
  ``origin`` is the per-axis minimum of the kept points (as the official code).

The official rule (``conf_rule="official"``, the default): keep a point when its confidence is
``≥`` the 50th percentile (linear interpolation, as ``np.percentile``) of *all* confidences *and*
``> 0.1``. Arithmetic is float32 and is done in the same order as the official code, so the voxel ids
are bit-for-bit the official ones on the same device.

How it runs: everything is torch on the tensors' device (CUDA when there is one). No Python loop over
frames or points, no per-frame ``torch.unique``: the kept points get a linear voxel key, and an
occupancy table ``[S, G]`` (``G`` = voxels in the bounding grid) is filled with one scatter; when
``S·G`` exceeds ``max_dense_cells`` a sort-based ``unique`` over ``frame·G + key`` is used instead. The
host reads a handful of scalars (the number of finite confidences, the grid size, the number of kept
points and of occupied voxels) because tensor sizes depend on them; nothing per frame or per point.

Bad input: NaN/inf coordinates or confidences are dropped before the percentile (``nonfinite="drop"``,
the default; the count is reported in :attr:`VoxelIncidence.num_nonfinite`) or rejected
(``nonfinite="raise"``). No kept point, or a degenerate extent (all kept points on a plane, so the
relative voxel size is 0), raises :class:`ValueError` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import torch

__all__ = [
    "CoverageOptions",
    "VoxelIncidence",
    "voxel_incidence",
    "points_from_depth",
    "official_conf_threshold",
]

ConfRule = Literal["official", "min", "none"]


@dataclass(frozen=True)
class CoverageOptions:
    """How points become voxels. Defaults = the official Spatial-MLLM rule (``src/sampling/sa_sampling.py``)."""

    conf_rule: ConfRule = field(default="official", metadata={"help": (
        "'official': conf >= conf_percentile-th percentile of all conf AND conf > conf_min; 'min': only "
        "conf > conf_min; 'none': keep every finite point (ground truth)")})
    conf_percentile: float = field(default=50.0, metadata={"help": "percentile of the official rule (50)"})
    conf_min: float = field(default=0.1, metadata={"help": "absolute confidence floor (0.1 in the official code)"})
    voxel_size: float | None = field(default=None, metadata={"help": (
        "metric voxel edge in the points' units (metres for ground truth); None = relative rule")})
    voxel_divisor: float = field(default=20.0, metadata={"help": (
        "relative rule: voxel = min(x, y, z extent of kept points) / voxel_divisor (20 in the paper's code)")})
    stride: int = field(default=1, metadata={"help": "use every stride-th pixel in rows and columns (1 = all)"})
    nonfinite: Literal["drop", "raise"] = field(default="drop", metadata={"help": (
        "NaN/inf points or conf: 'drop' them before the percentile, or 'raise' ValueError")})
    fused: bool = field(default=False, metadata={"help": (
        "torch.compile the two passes over the points into one fused kernel each (C++ on CPU, Triton on "
        "CUDA); the first call per shape compiles (seconds to a minute), later calls are several x faster")})
    max_dense_cells: int = field(default=1 << 28, metadata={"help": (
        "largest frames x grid-voxels occupancy table (bytes) before the sort-based path is used")})
    chunk_points: int | None = field(default=None, metadata={"help": (
        "points per block of whole frames; None = 2**20 on CPU (temporaries stay in the allocator's "
        "reused memory, no page faults), everything at once on CUDA")})

    def __post_init__(self):
        if self.conf_rule not in ("official", "min", "none"):
            raise ValueError(f"conf_rule must be 'official', 'min' or 'none', got {self.conf_rule!r}")
        if not 0.0 <= self.conf_percentile <= 100.0:
            raise ValueError(f"conf_percentile must lie in [0, 100], got {self.conf_percentile}")
        if self.voxel_size is not None and not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0 (or None for the relative rule), got {self.voxel_size}")
        if not self.voxel_divisor > 0:
            raise ValueError(f"voxel_divisor must be > 0, got {self.voxel_divisor}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.chunk_points is not None and self.chunk_points < 1:
            raise ValueError(f"chunk_points must be >= 1 or None, got {self.chunk_points}")
        if self.nonfinite not in ("drop", "raise"):
            raise ValueError(f"nonfinite must be 'drop' or 'raise', got {self.nonfinite!r}")

    @classmethod
    def from_kwargs(cls, **opts) -> CoverageOptions:
        """Build from keyword options; an unknown name is an error that lists the known ones."""
        known = {f.name for f in fields(cls)}
        bad = sorted(set(opts) - known)
        if bad:
            raise TypeError(f"unknown coverage option(s) {bad}; known: {sorted(known)}")
        return cls(**opts)


@dataclass
class VoxelIncidence:
    """Which occupied voxel each frame sees, plus the grid that defines the voxels.

    Attributes:
        incidence: ``[S, V]`` bool, ``incidence[i, v]`` = frame ``i`` has a kept point in voxel ``v``;
            only occupied voxels are columns, sorted by linear grid key.
        voxel_coords: ``[V, 3]`` int64 integer grid coordinates ``(i, j, k)`` of the columns.
        origin: ``[3]`` float32 world position of the grid corner (min of the kept points).
        voxel_size: ``[]`` float32 voxel edge, in the points' units.
        threshold: ``[]`` float32 confidence threshold applied (``-inf`` when no rule applies).
        conf_min: the absolute confidence floor applied (``-inf`` when none).
        stride: pixel stride used.
        num_nonfinite: points dropped for NaN/inf coordinates or confidence.
    """

    incidence: torch.Tensor  # [S, V] bool
    voxel_coords: torch.Tensor  # [V, 3] int64
    origin: torch.Tensor  # [3]
    voxel_size: torch.Tensor  # []
    threshold: torch.Tensor  # []
    conf_min: float = float("-inf")
    stride: int = 1
    num_nonfinite: int = 0

    def kept_mask(self, conf: torch.Tensor) -> torch.Tensor:
        """``[S, h, w]`` bool: which points of ``conf [S, H, W]`` the rule kept (before the finite check)."""
        c = conf[..., ::self.stride, ::self.stride]
        return (c >= self.threshold.to(c.device)) & (c > self.conf_min)

    @property
    def num_frames(self) -> int:
        return self.incidence.shape[0]

    @property
    def num_voxels(self) -> int:
        return self.incidence.shape[1]

    def frame_counts(self) -> torch.Tensor:
        """``[S]`` int64 number of voxels each frame sees."""
        return self.incidence.sum(1)

    def voxel_centers(self) -> torch.Tensor:
        """``[V, 3]`` world coordinates of the occupied voxels' centres."""
        return self.origin + (self.voxel_coords.to(self.origin.dtype) + 0.5) * self.voxel_size

    def coverage(self, indices) -> int:
        """Number of voxels covered by the union of ``indices``."""
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.incidence.device)
        if idx.numel() == 0:
            return 0
        return int(self.incidence[idx].any(0).sum())


def points_from_depth(depth: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """Depth ``[S, H, W]`` + ``K [S, 3, 3]`` (pixels) + camera-from-world ``[S, 3, 4]`` (OpenCV) → world
    points ``[S, H, W, 3]``; a thin wrapper of :func:`spatial_mllm.geometry.cameras.unproject_depth`.

    Works for VGGT's depth head + camera head (normalised scale) and for ground-truth depth + poses
    (metres). Pixels with depth ≤ 0 unproject to the camera centre; pass ``valid=depth > 0`` to
    :func:`voxel_incidence` to drop them.
    """
    from spatial_mllm.geometry.cameras import unproject_depth

    if depth.dim() == 4 and depth.shape[-1] == 1:  # VGGT's [S, H, W, 1]
        depth = depth[..., 0]
    return unproject_depth(depth, intrinsics, extrinsics)  # [S, H, W, 3]


def _order_stats_bracket(flat: torch.Tensor, r0: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ``r0``-th and ``(r0+1)``-th smallest (0-based) of ``flat`` without sorting it: a fixed-seed
    sample brackets them, chunked passes count the values below the bracket and gather those inside
    (small), which are then sorted. ``None`` when the bracket misses (the caller falls back to kthvalue)."""
    n = flat.numel()
    g = torch.Generator(device="cpu").manual_seed(0)
    m = 1 << 16
    samp = flat[torch.randint(0, n, (m,), generator=g).to(flat.device)].sort().values  # [m]
    q = r0 / max(n - 1, 1)
    a = samp[max(int(q * (m - 1)) - 640, 0)]  # ±640 sample ranks ≈ ±5 standard deviations at the median
    b = samp[min(int(q * (m - 1)) + 640, m - 1)]
    below = torch.zeros((), dtype=torch.long, device=flat.device)
    inside = []
    chunk = chunk or n
    for s0 in range(0, n, chunk):
        x = flat[s0:s0 + chunk]
        below += (x < a).sum()
        inside.append(x[(x >= a) & (x <= b)])
    nb = int(below)
    ins = torch.cat(inside)  # [n_in] the values inside the bracket, a few % of all
    if nb > r0 or nb + ins.numel() < r0 + 2:
        return None
    if flat.is_cuda:  # CUDA kthvalue is one thread block per slice: sort the small bracket instead
        srt = ins.sort().values
        return srt[r0 - nb], srt[r0 + 1 - nb]
    return torch.kthvalue(ins, r0 - nb + 1).values, torch.kthvalue(ins, r0 - nb + 2).values


def official_conf_threshold(conf_flat: torch.Tensor, percentile: float = 50.0,
                            chunk: int | None = None) -> torch.Tensor:
    """``np.percentile(conf, percentile)`` (linear interpolation, float32 arithmetic as numpy does on
    float32 data), computed on the tensor's device without sorting everything.

    Args:
        conf_flat: ``[N]`` float32, N ≥ 1, all finite.
        chunk: block size of the bracketing passes (None: the whole tensor in one pass).
    Returns:
        ``[]`` float32 threshold.
    """
    n = conf_flat.numel()
    pos = (n - 1) * (percentile / 100.0)
    r0 = int(pos)  # floor; pos ≥ 0
    frac = pos - r0
    if r0 + 1 >= n:
        frac = 0.0
    # small inputs: kthvalue; large ones: a sample brackets the two order statistics (kthvalue is slow on
    # CPU for tens of millions of values and single-block on CUDA)
    pair = _order_stats_bracket(conf_flat, r0, chunk) if (n > (1 << 16) and r0 + 1 < n) else None
    if pair is None:
        lo = torch.kthvalue(conf_flat, r0 + 1).values  # [] the (r0+1)-th smallest
        if frac == 0.0:
            return lo
        # the next order statistic: lo again if it repeats, else the smallest value above lo
        n_le = (conf_flat <= lo).sum()
        above = torch.where(conf_flat > lo, conf_flat, torch.full_like(conf_flat, float("inf"))).amin()
        hi = torch.where(n_le >= r0 + 2, lo, above)
    else:
        lo, hi = pair
        if frac == 0.0:
            return lo
    # numpy's _lerp in the data dtype: a + (b-a)*t for t < 0.5, b - (b-a)*(1-t) for t >= 0.5
    diff = hi - lo
    t = torch.tensor(frac, dtype=conf_flat.dtype, device=conf_flat.device)
    if frac >= 0.5:
        return hi - diff * (1 - t)
    return lo + diff * t


def _squeeze_batch(x: torch.Tensor, tail: int, name: str) -> torch.Tensor:
    """Accept VGGT's ``[1, S, ...]`` as well as ``[S, ...]``."""
    if x.dim() == tail + 2:
        if x.shape[0] != 1:
            raise ValueError(f"{name}: a batch of {x.shape[0]} videos; pass one video [S, ...] at a time")
        x = x[0]
    if x.dim() != tail + 1:
        raise ValueError(f"{name}: expected [S, ...] with {tail + 1} dims (or [1, S, ...]), got {tuple(x.shape)}")
    return x


def _frame_blocks(S: int, P: int, chunk_points: int | None) -> list[slice]:
    """Slices of whole frames holding about ``chunk_points`` points each (one block when None)."""
    if not chunk_points:
        return [slice(0, S)]
    f = max(1, chunk_points // max(P, 1))
    return [slice(s0, min(s0 + f, S)) for s0 in range(0, S, f)]


# ---- the two passes over the points; plain torch, also compiled whole by torch.compile (fused=True) -------


def _keep_mask(c: torch.Tensor | None, thr: torch.Tensor, conf_min: float,
               consider: torch.Tensor | None) -> torch.Tensor | None:
    """``[S, P]`` bool kept points (None = all): ``conf >= thr & conf > conf_min & consider``."""
    keep = None if c is None else (c >= thr) & (c > conf_min)
    if consider is not None:
        keep = consider if keep is None else keep & consider
    return keep


def _bounds(pts: torch.Tensor, c: torch.Tensor | None, thr: torch.Tensor, conf_min: float,
            consider: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis min and max ``[3]`` of the kept points of ``pts [S, P, 3]`` (+inf / -inf when none)."""
    keep = _keep_mask(c, thr, conf_min, consider)
    inf = float("inf")
    if keep is None:
        return (torch.stack([pts[..., a].amin() for a in range(3)]),
                torch.stack([pts[..., a].amax() for a in range(3)]))
    # one axis at a time: same-shape where + contiguous reduction is far faster than a [..., 3] broadcast
    lo = torch.stack([torch.where(keep, pts[..., a], inf).amin() for a in range(3)])
    hi = torch.stack([torch.where(keep, pts[..., a], -inf).amax() for a in range(3)])
    return lo, hi


def _occupancy(pts: torch.Tensor, c: torch.Tensor | None, thr: torch.Tensor, conf_min: float,
               consider: torch.Tensor | None, lo: torch.Tensor, voxel: torch.Tensor, w: torch.Tensor,
               G: int) -> torch.Tensor:
    """``[S, G+1]`` bool: frame ``s`` has a kept point with linear voxel key ``g``; column ``G`` collects
    the points that are not kept."""
    keep = _keep_mask(c, thr, conf_min, consider)
    q = ((pts - lo) / voxel).floor().to(w.dtype)  # [S, P, 3] integer voxel coords, the official's ops
    key = q[..., 0] * w[0] + q[..., 1] * w[1] + q[..., 2] * w[2]  # [S, P] exact (w.dtype chosen for it)
    if keep is not None:
        key = torch.where(keep, key, G)
    occ = torch.zeros(pts.shape[0], G + 1, dtype=torch.bool, device=pts.device)
    occ.scatter_(1, key.long(), True)
    return occ


_COMPILED: dict[str, object] = {}


def _compiled(name: str):
    """``torch.compile``'d :func:`_bounds` / :func:`_occupancy` (one fused kernel each: C++ on CPU, Triton
    on CUDA), built on first use."""
    if name not in _COMPILED:
        fn = {"bounds": _bounds, "occupancy": _occupancy}[name]
        _COMPILED[name] = torch.compile(fn, dynamic=False)
    return _COMPILED[name]


def voxel_incidence(
    world_points: torch.Tensor,
    conf: torch.Tensor | None = None,
    *,
    valid: torch.Tensor | None = None,
    options: CoverageOptions | None = None,
    **opts,
) -> VoxelIncidence:
    """Frames × occupied voxels incidence from point maps, on the tensors' device.

    Args:
        world_points: ``[S, H, W, 3]`` (or ``[1, S, H, W, 3]``) world points; any float dtype (computed
            in float32).
        conf: ``[S, H, W]`` (or ``[1, S, H, W]``) confidence, or ``None`` (ground truth: keep every finite
            point, whatever ``conf_rule`` says).
        valid: optional ``[S, H, W]`` bool, points to consider at all (e.g. ``depth > 0``); invalid
            points take no part in the percentile either.
        options: :class:`CoverageOptions`; or pass its fields as keyword ``opts``.

    Returns:
        :class:`VoxelIncidence` on the input's device.

    Raises:
        ValueError: non-finite values with ``nonfinite="raise"``; no point kept; zero extent along an
            axis under the relative rule; a grid too large to index.
    """
    if options is None:
        options = CoverageOptions.from_kwargs(**opts)
    elif opts:
        raise TypeError("pass either options= or keyword options, not both")
    o = options

    pts = _squeeze_batch(world_points, 3, "world_points")  # [S, H, W, 3]
    if pts.shape[-1] != 3:
        raise ValueError(f"world_points: last dim must be 3, got {tuple(pts.shape)}")
    S, H, W = pts.shape[:3]
    dev = pts.device
    if S == 0:
        raise ValueError("world_points: no frames")
    st = o.stride
    pts = pts[:, ::st, ::st].float()  # [S, h, w, 3]
    P = pts.shape[1] * pts.shape[2]
    pts = pts.reshape(S, P, 3)  # [S, P, 3] (a view when stride == 1 and contiguous)
    c = None
    if conf is not None:
        c = _squeeze_batch(conf, 2, "conf")
        if tuple(c.shape) != (S, H, W):
            raise ValueError(f"conf {tuple(conf.shape)} does not match world_points {tuple(world_points.shape)}")
        c = c[:, ::st, ::st].float().reshape(S, P)  # [S, P]
    rule = o.conf_rule if c is not None else "none"
    chunk = o.chunk_points if o.chunk_points is not None else (None if dev.type == "cuda" else 1 << 20)

    # ---- non-finite values: a cheap whole-tensor sum decides whether the per-point check is needed --------
    total = pts.sum() + (c.sum() if c is not None else 0)
    consider = None  # [S, P] bool or None (= every point)
    num_nonfinite = 0
    if not bool(torch.isfinite(total)):  # host read; the per-point check below is the rare path
        finite = torch.isfinite(pts).all(-1)
        if c is not None:
            finite &= torch.isfinite(c)
        num_nonfinite = int(finite.numel() - finite.sum())
        if num_nonfinite:
            if o.nonfinite == "raise":
                raise ValueError(f"{num_nonfinite} of {finite.numel()} points have NaN/inf coordinates or "
                                 "confidence (nonfinite='raise'); pass nonfinite='drop' to ignore them")
            consider = finite
    if valid is not None:
        v = _squeeze_batch(valid, 2, "valid")
        if tuple(v.shape) != (S, H, W):
            raise ValueError(f"valid {tuple(valid.shape)} does not match world_points {tuple(world_points.shape)}")
        v = v[:, ::st, ::st].to(device=dev, dtype=torch.bool).reshape(S, P)
        consider = v if consider is None else consider & v

    # ---- confidence threshold ------------------------------------------------------------------------
    thr = torch.tensor(float("-inf"), device=dev)
    cmin = o.conf_min if rule in ("official", "min") else float("-inf")
    if rule == "official":
        pool = c.reshape(-1) if consider is None else c[consider]  # [N] finite confidences
        if pool.numel() == 0:
            raise ValueError("no finite confidence value: nothing to threshold")
        thr = official_conf_threshold(pool, o.conf_percentile, chunk)
        del pool
    cc = c if rule in ("official", "min") else None

    fused = o.fused
    blocks = [slice(0, S)] if fused else _frame_blocks(S, P, chunk)

    def part(x, b):
        return None if x is None else x[b]

    # ---- pass 1: bounding box of the kept points --------------------------------------------------------
    bounds = _compiled("bounds") if fused else _bounds
    parts = [bounds(pts[b], part(cc, b), thr, cmin, part(consider, b)) for b in blocks]
    lo = torch.stack([p[0] for p in parts]).amin(0)  # [3] grid origin = per-axis min of the kept points
    hi = torch.stack([p[1] for p in parts]).amax(0)  # [3]
    if not bool(torch.isfinite(lo).all()):  # host read
        raise ValueError(
            f"no point passes the confidence rule {rule!r} (threshold {float(thr):.4g}, conf_min {o.conf_min}):"
            " empty mask, nothing to cover")
    if o.voxel_size is None:
        voxel = (hi - lo).amin() / o.voxel_divisor  # [] float32, as official: min(extents) / 20
        if not float(voxel) > 0:
            raise ValueError(
                f"degenerate point cloud: extent {(hi - lo).tolist()} has a zero axis, so the relative voxel "
                f"size min(extent)/{o.voxel_divisor} is 0; pass a metric voxel_size=")
    else:
        voxel = torch.tensor(o.voxel_size, dtype=torch.float32, device=dev)
    # the farthest kept point has the largest index on each axis (floor of monotone float ops)
    dims = ((hi - lo) / voxel).floor().long() + 1  # [3]
    d0, d1, d2 = (int(d) for d in dims.tolist())  # host read: grid size
    G = d0 * d1 * d2
    if G * S >= 1 << 62:
        raise ValueError(f"voxel grid {d0}x{d1}x{d2} x {S} frames is too large to index; use a larger voxel")
    # linear key i*d1*d2 + j*d2 + k; float32 is exact while every value stays below 2**24
    w = torch.tensor([d1 * d2, d2, 1], dtype=torch.float32 if G < (1 << 24) else torch.float64, device=dev)

    # ---- pass 2: voxel keys scattered into the frames x grid occupancy -------------------------------------
    if S * (G + 1) <= o.max_dense_cells:
        occupancy = _compiled("occupancy") if fused else _occupancy
        if len(blocks) == 1:
            occ = occupancy(pts, cc, thr, cmin, consider, lo, voxel, w, G)  # [S, G+1]
        else:
            occ = torch.empty(S, G + 1, dtype=torch.bool, device=dev)
            for b in blocks:
                occ[b] = occupancy(pts[b], part(cc, b), thr, cmin, part(consider, b), lo, voxel, w, G)
        occ = occ[:, :G]
        cols = occ.any(0).nonzero().squeeze(1)  # [V] occupied keys, ascending
        incidence = occ[:, cols]  # [S, V]
    else:  # grid too large for a table: unique (frame, key) pairs, block by block
        pairs = []
        for b in _frame_blocks(S, P, chunk or (1 << 22)):
            keep = _keep_mask(part(cc, b), thr, cmin, part(consider, b))
            q = ((pts[b] - lo) / voxel).floor().to(w.dtype)
            key = (q @ w).long()  # [s, P]
            key = key + torch.arange(b.start, b.stop, device=dev)[:, None] * G
            pairs.append(torch.unique(key if keep is None else key[keep]))
        pair = torch.cat(pairs)  # [P'] unique (frame, voxel) pairs
        f, vk = pair // G, pair % G
        cols, col_of = torch.unique(vk, return_inverse=True)  # [V], [P']
        incidence = torch.zeros(S, cols.numel(), dtype=torch.bool, device=dev)
        incidence[f, col_of] = True
    coords = torch.stack([cols // (d1 * d2), (cols // d2) % d1, cols % d2], dim=1)  # [V, 3]
    return VoxelIncidence(incidence=incidence, voxel_coords=coords, origin=lo, voxel_size=voxel,
                          threshold=thr, conf_min=cmin, stride=st, num_nonfinite=num_nonfinite)
