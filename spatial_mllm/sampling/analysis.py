"""Notebook 02's analysis of frame sampling: how much of a room do k frames see, and which frames?

The paper's space-aware sampler (Wu et al. 2025, §3.2) picks Nk = 16 of Nm = 128 uniformly drawn
candidate frames by greedy maximum coverage of the voxels in VGGT's point maps. This module measures that
choice against the alternatives on synthetic scans whose geometry is known exactly:

* :func:`render_scans` — procedural rooms (:mod:`spatial_mllm.data.synthetic`) rendered as handheld scans
  (:mod:`spatial_mllm.data.render`); the Nm candidates are drawn from the T rendered frames with the
  official script's rule ``np.linspace(0, T - 1, Nm).astype(int)``, as :class:`SpaceAwareSampler` does.
* :func:`exact_incidence` — the candidates' exact depth + cameras → world points (metres) → the
  frames × voxels incidence (every valid pixel kept; relative voxel ``min extent / 20`` as the official
  rule, or a metric ``voxel_size``).
* :func:`coverage_curves` — voxels covered by k frames, for k = 1..Nk, by method: ``uniform``
  (``linspace`` rounded, Qwen's rule), ``random`` (mean ± std over draws), ``space_aware`` (greedy on the
  exact incidence; greedy is nested, so one run of Nk gives every prefix), ``optimal`` (the exact optimum
  by integer programming, at the ks listed in ``optimal_k``) and any extra greedy *orders* (the greedy on
  VGGT's point maps, scored on the exact voxels).
* :func:`covered_voxel_map` — a top-down map of the fraction of each (x, y) voxel column covered.
* :func:`vggt_selection` — the sampler's own path (VGGT point head → :func:`select_frames_detailed`) on a
  scan's candidates; ``vggt_model="tiny"`` is a random-init tiny VGGT whose point maps carry no geometry.
* tables: :func:`curves_table`, :func:`coverage_at_k_table`, :func:`ratio_table`,
  :func:`time_positions_table`, :func:`vggt_table`, :func:`benchmark_table`, written by
  :func:`save_table` as CSV + markdown.

Coverage is counted in voxels of the *exact* grid of each scan: a selection from VGGT point maps is scored
by which candidate frames it picked, not by VGGT's own voxels. Units: metres, seconds (``frame / fps``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spatial_mllm.config import StageConfig, register_params
from spatial_mllm.sampling.coverage import CoverageOptions, VoxelIncidence, points_from_depth, voxel_incidence
from spatial_mllm.sampling.greedy import GreedyResult, OptimalResult, greedy_cover, optimal_max_coverage
from spatial_mllm.sampling.select import Selection, select_frames_detailed

__all__ = [
    "SamplingAnalysisConfig",
    "ScanVideo",
    "CoverageCurve",
    "ScanAnalysis",
    "TopDownMap",
    "METHODS",
    "render_scans",
    "exact_point_maps",
    "exact_incidence",
    "coverage_curves",
    "analyse_scan",
    "covered_voxel_map",
    "scan_point_cloud",
    "make_vggt_sampler",
    "vggt_selection",
    "curves_table",
    "coverage_at_k_table",
    "ratio_table",
    "time_positions_table",
    "vggt_table",
    "benchmark_table",
    "markdown_table",
    "save_table",
]

#: methods in the order the tables and figures list them
METHODS = ("uniform", "random", "space_aware", "optimal", "space_aware_vggt")


@register_params("02_sampling_analysis")
@dataclass
class SamplingAnalysisConfig(StageConfig):
    """Parameters of notebook 02 (sampling analysis). Defaults are the ``tiny`` preset."""

    output_dir: str = field(default="outputs/tiny", metadata={"help": (
        "run folder; figures go to <output_dir>/figures/02_*.png, tables to <output_dir>/tables/02_*")})
    seed: int = field(default=0, metadata={"help": "seed of scenes, camera paths, random baselines, VGGT init"})
    num_scenes: int = field(default=3, metadata={"help": "synthetic rooms to render and analyse"})
    min_area: float = field(default=12.0, metadata={"help": "smallest room floor area, m²"})
    max_area: float = field(default=30.0, metadata={"help": "largest room floor area, m² (VSI-Bench: up to ~60)"})
    l_shape_prob: float = field(default=0.35, metadata={"help": "probability that a room is L-shaped"})
    width: int = field(default=112, metadata={"help": "rendered frame width, pixels (even)"})
    height: int = field(default=84, metadata={"help": "rendered frame height, pixels (even)"})
    num_frames: int = field(default=64, metadata={"help": "T: frames per rendered video"})
    fps: float = field(default=4.0, metadata={"help": "video frame rate; time of frame t is t / fps seconds"})
    render_threads: int = field(default=1, metadata={"help": "Embree threads per scene (0 = all cores)"})
    num_candidates: int = field(default=64, metadata={"help": (
        "Nm: uniform candidate frames the sampler chooses from (128 in the paper)")})
    num_selected: int = field(default=16, metadata={"help": "Nk: frames selected (16 in the paper)"})
    voxel_size: float | None = field(default=None, metadata={"help": (
        "metric voxel edge (m) for the exact-geometry grid; None = the official relative rule "
        "(min extent / voxel_divisor)")})
    voxel_divisor: float = field(default=20.0, metadata={"help": "relative rule divisor (20 in the official code)"})
    random_trials: int = field(default=20, metadata={"help": "random draws per k for the random baseline"})
    optimal_k: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": (
        "ks at which the exact optimum is solved (integer program, HiGHS); keep them small")})
    ilp_time_limit: float = field(default=10.0, metadata={"help": (
        "seconds per integer program; past it the best solution found is reported, flagged unproved")})
    vggt_model: str = field(default="tiny", metadata={"help": (
        "'tiny' = a random-init tiny VGGT (no geometry: a plumbing check); else a hub id or folder of a "
        "VGGT checkpoint, e.g. facebook/VGGT-1B (the paper's)")})
    vggt_target_size: int = field(default=112, metadata={"help": (
        "VGGT input width in pixels, a multiple of 14 (518 for VGGT-1B, as the official preprocessing)")})
    device: str = field(default="auto", metadata={"help": "'auto' (CUDA when available), 'cpu' or 'cuda'"})
    view_scene: int = field(default=0, metadata={"help": "scene shown in the maps and the 3D view"})
    view_width: int = field(default=720, metadata={"help": "3D view image width, pixels"})
    view_height: int = field(default=540, metadata={"help": "3D view image height, pixels"})
    bench_frames: int = field(default=32, metadata={"help": "benchmark: frames of the toy point maps"})
    bench_height: int = field(default=98, metadata={"help": "benchmark: point map height (392 at full size)"})
    bench_width: int = field(default=130, metadata={"help": "benchmark: point map width (518 at full size)"})
    bench_k: int = field(default=16, metadata={"help": "benchmark: frames selected"})
    bench_noise: float = field(default=0.02, metadata={"help": "benchmark: point noise std relative to depth"})
    bench_repeats: int = field(default=3, metadata={"help": "benchmark: timed calls of ours (median)"})
    bench_official_repeats: int = field(default=1, metadata={"help": "benchmark: timed calls of the official logic"})
    bench_fused: bool = field(default=False, metadata={"help": (
        "benchmark: also time fused=True (torch.compile; the first call compiles for tens of seconds)")})
    bench_threads: int = field(default=1, metadata={"help": "benchmark: torch CPU threads (1 = the issue's setting)"})
    bench_device: str = field(default="cpu", metadata={"help": "benchmark: 'cpu', 'cuda' or 'auto'"})

    def __post_init__(self):
        if self.num_scenes < 1:
            raise ValueError(f"num_scenes must be >= 1, got {self.num_scenes}")
        if not 1 <= self.num_selected <= self.num_candidates <= self.num_frames:
            raise ValueError("need 1 <= num_selected <= num_candidates <= num_frames, got "
                             f"{self.num_selected}, {self.num_candidates}, {self.num_frames}")
        bad = [k for k in self.optimal_k if not 1 <= k <= self.num_candidates]
        if bad:
            raise ValueError(f"optimal_k values must lie in [1, num_candidates={self.num_candidates}], got {bad}")
        if self.vggt_target_size % 14:
            raise ValueError(f"vggt_target_size must be a multiple of 14 (VGGT's patch), got {self.vggt_target_size}")
        if not 0 <= self.view_scene < self.num_scenes:
            raise ValueError(f"view_scene must index one of the {self.num_scenes} scenes, got {self.view_scene}")
        if not 1 <= self.bench_k <= self.bench_frames:
            raise ValueError(f"need 1 <= bench_k <= bench_frames, got {self.bench_k}, {self.bench_frames}")
        for name in ("device", "bench_device"):
            if getattr(self, name) not in ("auto", "cpu", "cuda"):
                raise ValueError(f"{name} must be 'auto', 'cpu' or 'cuda', got {getattr(self, name)!r}")

    def torch_device(self, which: str = "device") -> torch.device:
        """``device`` (or ``bench_device``) resolved: 'auto' → CUDA when available, else CPU."""
        d = getattr(self, which)
        return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if d == "auto" else d)

    def coverage_options(self) -> CoverageOptions:
        """Exact geometry: every valid point kept (no confidence), relative or metric voxels."""
        return CoverageOptions(conf_rule="none", voxel_size=self.voxel_size, voxel_divisor=self.voxel_divisor)


# --------------------------------------------------------------------------------------------------
# scans with exact geometry
# --------------------------------------------------------------------------------------------------


@dataclass
class ScanVideo:
    """A rendered scan and its Nm candidate frames.

    Attributes:
        scene: the :class:`~spatial_mllm.data.synthetic.SyntheticScene` (boxes, floor polygon, mesh).
        frames: :class:`~spatial_mllm.data.render.RenderedFrames` (T frames: RGB, z-depth in metres,
            intrinsics, camera-from-world extrinsics).
        candidates: ``[Nm]`` int64 frame indices into the video, increasing.
    """

    scene: object
    frames: object
    candidates: np.ndarray

    @property
    def scene_id(self) -> str:
        return self.scene.meta.scene_id

    @property
    def fps(self) -> float:
        return float(self.frames.fps)

    def seconds(self, candidate_indices: Sequence[int]) -> np.ndarray:
        """Video time in seconds of candidates ``candidate_indices`` (indices into :attr:`candidates`)."""
        return self.candidates[np.asarray(candidate_indices, dtype=np.int64)] / self.fps


def render_scans(cfg: SamplingAnalysisConfig) -> list[ScanVideo]:
    """Generate and render ``cfg.num_scenes`` rooms (deterministic in ``cfg.seed``); candidates by the
    official ``floor`` rule."""
    from spatial_mllm.data.render import RenderConfig, render_scene
    from spatial_mllm.data.synthetic import SyntheticSceneConfig, generate_scene
    from spatial_mllm.data.video import uniform_frame_indices

    scfg = SyntheticSceneConfig(seed=cfg.seed, min_area=cfg.min_area, max_area=cfg.max_area,
                                l_shape_prob=cfg.l_shape_prob)
    rcfg = RenderConfig(width=cfg.width, height=cfg.height, num_frames=cfg.num_frames, fps=cfg.fps,
                        nthreads=cfg.render_threads)
    scans = []
    for i in range(cfg.num_scenes):
        scene = generate_scene(scfg, i)
        frames = render_scene(scene, rcfg, seed=cfg.seed)
        cand = uniform_frame_indices(len(frames.rgb), cfg.num_candidates, "floor")
        scans.append(ScanVideo(scene=scene, frames=frames, candidates=cand))
    return scans


def exact_point_maps(scan: ScanVideo) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidates' exact world points ``[Nm, H, W, 3]`` (metres, world z-up) and ``valid [Nm, H, W]``
    (depth > 0), from rendered z-depth and camera-from-world extrinsics."""
    f, c = scan.frames, scan.candidates
    depth = torch.from_numpy(np.ascontiguousarray(f.depth[c]))  # [Nm, H, W]
    pts = points_from_depth(depth, torch.from_numpy(f.intrinsics[c]), torch.from_numpy(f.extrinsics[c]))
    return pts, depth > 0


def exact_incidence(scan: ScanVideo, options: CoverageOptions | None = None) -> VoxelIncidence:
    """Candidates × occupied voxels of the exact geometry (default: every valid point, relative voxels)."""
    pts, valid = exact_point_maps(scan)
    return voxel_incidence(pts, None, valid=valid, options=options or CoverageOptions(conf_rule="none"))


def scan_point_cloud(scan: ScanVideo, stride: int | None = None, max_points: int = 1_000_000
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coloured exact point cloud of the candidates, every ``stride``-th pixel in rows and columns
    (``None``: the smallest stride that keeps at most about ``max_points`` pixels).

    Returns:
        ``points [N, 3]`` (metres, world), ``colors [N, 3]`` (RGB in [0, 1], the rendered colours) and
        ``to_camera [N, 3]``: for each point, the vector to the centre of the camera that saw it (a stand-in
        for the surface's facing side, used to cull back faces in the 3D view).
    """
    from spatial_mllm.geometry.cameras import camera_centers

    pts, valid = exact_point_maps(scan)
    if stride is None:
        stride = max(1, int(np.ceil(np.sqrt(valid.numel() / max_points))))
    pts, valid = pts[:, ::stride, ::stride], valid[:, ::stride, ::stride]
    rgb = torch.from_numpy(scan.frames.rgb[scan.candidates][:, ::stride, ::stride]).float() / 255.0
    centres = camera_centers(torch.from_numpy(scan.frames.extrinsics[scan.candidates]))  # [Nm, 3]
    to_cam = centres[:, None, None, :] - pts  # [Nm, h, w, 3]
    m = valid
    return pts[m].numpy(), rgb[m].numpy(), to_cam[m].numpy()


# --------------------------------------------------------------------------------------------------
# coverage curves
# --------------------------------------------------------------------------------------------------


@dataclass
class CoverageCurve:
    """Voxels covered by k frames for one method.

    Attributes:
        method: one of :data:`METHODS` (or an extra order's name).
        k: ``[n]`` int numbers of frames.
        covered: ``[n]`` float voxels covered (mean over draws for ``random``).
        std: ``[n]`` float std over draws (0 for deterministic methods).
        total: voxels seen by all candidates (the ceiling).
        proved: ``[n]`` bool, the value is a proved optimum (``optimal`` only; True elsewhere).
    """

    method: str
    k: np.ndarray
    covered: np.ndarray
    std: np.ndarray
    total: int
    proved: np.ndarray

    @property
    def fraction(self) -> np.ndarray:
        return self.covered / max(self.total, 1)

    def at(self, k: int) -> float | None:
        """Voxels covered at ``k`` (None when this curve has no value there)."""
        hit = np.flatnonzero(self.k == k)
        return float(self.covered[hit[0]]) if hit.size else None


def _cover(A: np.ndarray, idx: Sequence[int]) -> int:
    """Voxels covered by the union of rows ``idx`` of the bool incidence ``A [S, V]`` (numpy: one thread,
    microseconds for the small instances here)."""
    idx = list(idx)
    return int(np.count_nonzero(A[idx].any(0))) if idx else 0


def _optimum(A: np.ndarray, k: int, time_limit: float) -> OptimalResult:
    """:func:`optimal_max_coverage`, except k = 1, whose optimum is the largest row (no solver needed)."""
    if k == 1:
        counts = A.sum(1)
        best = int(np.argmax(counts))
        return OptimalResult(indices=[best], value=int(counts[best]), optimal=True, bound=float(counts[best]))
    return optimal_max_coverage(A, k, time_limit=time_limit)


def _curve(method, ks, covered, total, std=None, proved=None) -> CoverageCurve:
    n = len(ks)
    return CoverageCurve(method=method, k=np.asarray(ks, dtype=np.int64), covered=np.asarray(covered, float),
                         std=np.zeros(n) if std is None else np.asarray(std, float), total=int(total),
                         proved=np.ones(n, bool) if proved is None else np.asarray(proved, bool))


def coverage_curves(incidence, ks: Sequence[int], *, random_trials: int = 20, seed: int = 0,
                    optimal_k: Sequence[int] = (), ilp_time_limit: float = 10.0,
                    orders: Mapping[str, Sequence[int]] | None = None
                    ) -> tuple[dict[str, CoverageCurve], dict[str, dict[int, list[int]]], GreedyResult,
                               dict[int, OptimalResult]]:
    """Coverage vs k for every method on one incidence.

    Args:
        incidence: ``[Nm, V]`` bool (torch on any device, or numpy) — candidates × voxels.
        ks: numbers of frames, each in ``[1, Nm]``.
        random_trials: draws per k for ``random`` (rng seeded by ``seed``).
        optimal_k: ks at which the integer program is solved (those also in ``ks``).
        ilp_time_limit: seconds per integer program.
        orders: extra greedy orders ``{name: candidate indices in selection order}`` (e.g. the greedy on
            VGGT's point maps); the prefix of length k is that method's k-frame selection.

    Returns:
        ``(curves, selections, greedy, optimal)``: curves by method; ``selections[method][k]`` sorted
        candidate indices (``random``: the first draw); the greedy trace for ``max(ks)``; the integer
        programs' results by k.
    """
    from spatial_mllm.data.video import uniform_frame_indices

    A = incidence.cpu().numpy() if isinstance(incidence, torch.Tensor) else np.asarray(incidence)
    A = A != 0  # [Nm, V] bool
    S = A.shape[0]
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1 or max(ks) > S:
        raise ValueError(f"ks must be non-empty and lie in [1, {S}], got {ks}")
    total = int(np.count_nonzero(A.any(0)))
    curves: dict[str, CoverageCurve] = {}
    sel: dict[str, dict[int, list[int]]] = {m: {} for m in ("uniform", "random", "space_aware")}

    # uniform: linspace rounded (Qwen); not nested, so not monotone in k in general
    cov = []
    for k in ks:
        sel["uniform"][k] = [int(i) for i in uniform_frame_indices(S, k, "round")]
        cov.append(_cover(A, sel["uniform"][k]))
    curves["uniform"] = _curve("uniform", ks, cov, total)

    rng = np.random.default_rng(seed)
    mean, std = [], []
    for k in ks:
        draws = [sorted(int(i) for i in rng.choice(S, size=k, replace=False)) for _ in range(random_trials)]
        sel["random"][k] = draws[0]
        vals = [_cover(A, d) for d in draws]
        mean.append(float(np.mean(vals)))
        std.append(float(np.std(vals)))
    curves["random"] = _curve("random", ks, mean, total, std)

    greedy = greedy_cover(A, max(ks), warn=False)
    for k in ks:
        sel["space_aware"][k] = sorted(greedy.order[:k])
    curves["space_aware"] = _curve("space_aware", ks, [_cover(A, greedy.order[:k]) for k in ks], total)

    optimal: dict[int, OptimalResult] = {}
    opt_ks = [k for k in ks if k in set(int(x) for x in optimal_k)]
    if opt_ks:
        sel["optimal"] = {}
        for k in opt_ks:
            optimal[k] = _optimum(A, k, ilp_time_limit)
            sel["optimal"][k] = optimal[k].indices
        curves["optimal"] = _curve("optimal", opt_ks, [optimal[k].value for k in opt_ks], total,
                                   proved=[optimal[k].optimal for k in opt_ks])

    for name, order in (orders or {}).items():
        order = [int(i) for i in order]
        usable = [k for k in ks if k <= len(order)]
        sel[name] = {k: sorted(order[:k]) for k in usable}
        curves[name] = _curve(name, usable, [_cover(A, order[:k]) for k in usable], total)
    return curves, sel, greedy, optimal


@dataclass
class ScanAnalysis:
    """Everything measured on one scan (see :func:`analyse_scan`)."""

    scene_id: str
    incidence: VoxelIncidence
    curves: dict[str, CoverageCurve]
    selections: dict[str, dict[int, list[int]]]  # method → k → sorted candidate indices
    greedy: GreedyResult
    optimal: dict[int, OptimalResult]
    vggt: Selection | None = None  # the greedy on VGGT's point maps, when given


def analyse_scan(scan: ScanVideo, cfg: SamplingAnalysisConfig, vggt: Selection | None = None) -> ScanAnalysis:
    """Exact incidence + coverage curves for k = 1..Nk (+ the VGGT-driven greedy order, when given)."""
    inc = exact_incidence(scan, cfg.coverage_options())
    orders = {"space_aware_vggt": vggt.greedy.order} if vggt is not None else None
    curves, sel, greedy, opt = coverage_curves(
        inc.incidence, range(1, cfg.num_selected + 1), random_trials=cfg.random_trials, seed=cfg.seed,
        optimal_k=cfg.optimal_k, ilp_time_limit=cfg.ilp_time_limit, orders=orders)
    return ScanAnalysis(scene_id=scan.scene_id, incidence=inc, curves=curves, selections=sel, greedy=greedy,
                        optimal=opt, vggt=vggt)


# --------------------------------------------------------------------------------------------------
# top-down maps
# --------------------------------------------------------------------------------------------------


@dataclass
class TopDownMap:
    """Fraction of each (x, y) voxel column's occupied voxels that a selection covers.

    Attributes:
        fraction: ``[nx, ny]`` float in [0, 1]; NaN where the column has no occupied voxel.
        extent: ``(x_min, x_max, y_min, y_max)`` metres, the grid's outer edges (``imshow(fraction.T,
            origin="lower", extent=extent)``).
        covered: voxels covered by the selection. total: occupied voxels.
    """

    fraction: np.ndarray
    extent: tuple[float, float, float, float]
    covered: int
    total: int


def covered_voxel_map(inc: VoxelIncidence, indices: Sequence[int]) -> TopDownMap:
    """Top-down map of what ``indices`` (candidate indices) cover, per voxel column."""
    A = inc.incidence.cpu()
    ij = inc.voxel_coords[:, :2].cpu().numpy()  # [V, 2]
    lo = ij.min(0)
    ij = ij - lo
    shape = tuple(int(s) + 1 for s in ij.max(0))
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    cov = A[idx].any(0).numpy() if idx.numel() else np.zeros(A.shape[1], bool)  # [V]
    seen = np.zeros(shape)
    hit = np.zeros(shape)
    np.add.at(seen, (ij[:, 0], ij[:, 1]), 1.0)
    np.add.at(hit, (ij[:, 0], ij[:, 1]), cov.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(seen > 0, hit / seen, np.nan)
    o = inc.origin.cpu().numpy().astype(float)
    v = float(inc.voxel_size)
    extent = (o[0] + lo[0] * v, o[0] + (lo[0] + shape[0]) * v, o[1] + lo[1] * v, o[1] + (lo[1] + shape[1]) * v)
    return TopDownMap(fraction=frac, extent=extent, covered=int(cov.sum()), total=int(A.shape[1]))


# --------------------------------------------------------------------------------------------------
# VGGT point maps
# --------------------------------------------------------------------------------------------------


def make_vggt_sampler(cfg: SamplingAnalysisConfig):
    """The :class:`~spatial_mllm.sampling.sampler.SpaceAwareSampler` of the preset: ``vggt_model="tiny"``
    builds a random-init ``VGGTConfig.tiny()`` (seeded by ``cfg.seed``), anything else loads that checkpoint.
    Candidates: Nm by the official floor rule; input width ``vggt_target_size``."""
    from spatial_mllm.sampling.sampler import SpaceAwareSampler, SpaceAwareSamplerConfig

    scfg = SpaceAwareSamplerConfig(num_candidates=cfg.num_candidates, target_size=cfg.vggt_target_size)
    device = cfg.torch_device()
    if cfg.vggt_model == "tiny":
        from spatial_mllm.models.vggt import VGGT, VGGTConfig  # lazy: sampling sits above models

        vcfg = VGGTConfig.tiny(enable_camera=False, enable_depth=False)
        torch.manual_seed(cfg.seed)
        return SpaceAwareSampler(VGGT(vcfg), device=device, config=scfg)
    return SpaceAwareSampler(model_path=cfg.vggt_model, device=device, config=scfg)


def vggt_selection(sampler, scan: ScanVideo, k: int) -> tuple[Selection, torch.Tensor, torch.Tensor]:
    """The sampler's path on a scan's candidates, keeping the greedy order and the point maps.

    Same result as ``sampler.sample(scan.frames.rgb, k).selected_candidates`` (tested), but returns the
    :class:`Selection` (greedy order, gains, VGGT-grid incidence) and the point maps ``world_points
    [Nm, h, w, 3]`` (frame 0's camera frame, VGGT's normalised scale) and ``conf [Nm, h, w]`` on the CPU.
    """
    from spatial_mllm.models.vggt.preprocess import load_and_preprocess_images

    if list(scan.candidates) != _sampler_candidates(sampler, len(scan.frames.rgb)):
        raise ValueError("the scan's candidates differ from the sampler's (num_candidates / rounding)")
    images = load_and_preprocess_images(list(scan.frames.rgb[scan.candidates]), sampler.config.preprocess_mode,
                                        sampler.config.target_size)  # [Nm, 3, h, w] in [0, 1]
    pts, conf = sampler.point_maps(images)
    sel = select_frames_detailed(pts, conf, k, method=sampler.config.greedy_method, options=sampler.coverage,
                                 warn=False)
    return sel, pts.cpu(), conf.cpu()


def _sampler_candidates(sampler, total: int) -> list[int]:
    from spatial_mllm.data.video import uniform_frame_indices

    return uniform_frame_indices(total, min(sampler.config.num_candidates, total),
                                 sampler.config.candidate_rounding).tolist()


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------


def _methods(analyses: Sequence[ScanAnalysis]) -> list[str]:
    present = {m for a in analyses for m in a.curves}
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def curves_table(analyses: Sequence[ScanAnalysis]):
    """Long table: scene, method, k, covered (voxels), std, total, fraction, proved."""
    import pandas as pd

    rows = []
    for a in analyses:
        for m in _methods([a]):
            c = a.curves[m]
            for i, k in enumerate(c.k):
                rows.append({"scene": a.scene_id, "method": m, "k": int(k), "covered": c.covered[i],
                             "std": c.std[i], "total": c.total, "fraction": c.fraction[i],
                             "proved": bool(c.proved[i])})
    return pd.DataFrame(rows)


def coverage_at_k_table(analyses: Sequence[ScanAnalysis], k: int):
    """Per scene and method at ``k``: covered fraction of the candidates' voxels, and the ratio to the
    optimum (when solved at ``k``) — plus a ``mean`` row over scenes."""
    import pandas as pd

    methods = _methods(analyses)
    rows = []
    for a in analyses:
        row = {"scene": a.scene_id, "voxels": a.curves["space_aware"].total}
        opt = a.curves["optimal"].at(k) if "optimal" in a.curves else None
        for m in methods:
            v = a.curves[m].at(k)
            row[m] = np.nan if v is None else v / a.curves[m].total
            if opt and m != "optimal":
                row[f"{m}/optimal"] = np.nan if v is None else v / opt
        rows.append(row)
    df = pd.DataFrame(rows)
    mean = df.drop(columns=["scene"]).mean(numeric_only=True).to_dict()
    return pd.concat([df, pd.DataFrame([{"scene": "mean", **mean}])], ignore_index=True)


def ratio_table(analyses: Sequence[ScanAnalysis]):
    """Greedy vs the exact optimum at each solved k: scene, k, greedy, optimal (voxels), ratio, proved.
    The greedy guarantee is ratio ≥ 1 - 1/e ≈ 0.632."""
    import pandas as pd

    rows = []
    for a in analyses:
        for k, res in sorted(a.optimal.items()):
            g = a.curves["space_aware"].at(k)
            rows.append({"scene": a.scene_id, "k": k, "greedy": g, "optimal": res.value,
                         "ratio": g / res.value if res.value else np.nan, "proved": res.optimal})
    return pd.DataFrame(rows)


def time_positions_table(analyses: Sequence[ScanAnalysis], scans: Sequence[ScanVideo], k: int):
    """Where in time the k chosen frames lie: per scene and method the video frames, their times (s),
    the largest gap between consecutive chosen frames (s, video ends included) and the mean gap."""
    import pandas as pd

    rows = []
    for a, s in zip(analyses, scans):
        duration = len(s.frames.rgb) / s.fps
        for m in _methods([a]):
            idx = a.selections.get(m, {}).get(k)
            if idx is None:
                continue
            t = s.seconds(idx)
            edges = np.concatenate([[0.0], t, [duration]])
            rows.append({"scene": a.scene_id, "method": m, "frames": [int(f) for f in s.candidates[idx]],
                         "seconds": [round(float(x), 2) for x in t], "largest_gap_s": float(np.diff(edges).max()),
                         "mean_gap_s": float(np.diff(t).mean()) if len(t) > 1 else np.nan})
    return pd.DataFrame(rows)


def vggt_table(analyses: Sequence[ScanAnalysis], scans: Sequence[ScanVideo], k: int):
    """The VGGT-driven selection per scene: its video frames, how many voxels VGGT's own grid has and
    what fraction the selection covers there, and what the same frames cover of the *exact* grid beside
    the exact-geometry greedy's k frames."""
    import pandas as pd

    rows = []
    for a, s in zip(analyses, scans):
        if a.vggt is None:
            continue
        idx = sorted(a.vggt.greedy.order[:k])
        g = a.vggt.greedy
        rows.append({"scene": a.scene_id, "frames": [int(f) for f in s.candidates[idx]],
                     "vggt_grid_voxels": g.total, "vggt_grid_fraction": sum(g.gains[:k]) / max(g.total, 1),
                     "filled": len([i for i in g.filled if i in idx]),
                     "exact_fraction": a.curves["space_aware_vggt"].at(k) / a.curves["space_aware_vggt"].total,
                     "exact_greedy_fraction": a.curves["space_aware"].at(k) / a.curves["space_aware"].total})
    return pd.DataFrame(rows)


def benchmark_table(rows: Mapping[str, Mapping]):
    """:func:`spatial_mllm.sampling.benchmark.compare_selection`'s rows → method, seconds, peak MiB,
    frames returned, speed-up over official, same selection as official."""
    import pandas as pd

    out = []
    for name, r in rows.items():
        out.append({"method": name, "seconds": r["seconds"], "peak_MiB": r["peak_bytes"] / 2**20,
                    "frames": len(r["indices"]), "speedup_vs_official": r.get("speedup_vs_official", np.nan),
                    "same_selection_as_official": r.get("agrees_with_official", name == "official")})
    return pd.DataFrame(out)


def _fmt(v, floatfmt: str) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else format(float(v), floatfmt)
    return str(v)


def markdown_table(df, floatfmt: str = ".3g") -> str:
    """A pandas DataFrame as a GitHub markdown table (index dropped); floats with ``floatfmt``."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, floatfmt) for v in row) + " |")
    return "\n".join(lines) + "\n"


def save_table(df, folder: str | Path, stem: str, floatfmt: str = ".3g") -> Path:
    """Write ``<folder>/<stem>.csv`` and ``<folder>/<stem>.md``; returns the CSV path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / f"{stem}.csv", index=False)
    (folder / f"{stem}.md").write_text(markdown_table(df, floatfmt))
    return folder / f"{stem}.csv"
