"""Space-aware frame sampling (Wu et al. 2025, §3.2): voxel coverage and greedy maximum coverage.

* :mod:`~spatial_mllm.sampling.coverage` — point maps (+ confidence) → frames × voxels incidence (torch,
  any device);
* :mod:`~spatial_mllm.sampling.greedy` — greedy / lazy greedy max coverage (exactly k frames) and the
  exact ILP optimum for small instances;
* :mod:`~spatial_mllm.sampling.select` — :func:`select_frames`, the two wired together;
* :mod:`~spatial_mllm.sampling.official` — a faithful re-implementation of the official script's logic,
  the reference for tests and the benchmark;
* :mod:`~spatial_mllm.sampling.toy` — analytic box rooms with exact point maps (tests, benchmark);
* :mod:`~spatial_mllm.sampling.benchmark` — the official logic vs ours, timed on the same point maps;
* :mod:`~spatial_mllm.sampling.analysis` / :mod:`~spatial_mllm.sampling.plots` — notebook 02: coverage vs
  k by method (uniform, random, greedy, ILP optimum), time positions, top-down voxel maps, 3D view.
"""

from spatial_mllm.sampling.analysis import SamplingAnalysisConfig
from spatial_mllm.sampling.coverage import CoverageOptions, VoxelIncidence, points_from_depth, voxel_incidence
from spatial_mllm.sampling.greedy import (
    CoverageFillWarning,
    GreedyResult,
    OptimalResult,
    coverage_of,
    greedy_cover,
    greedy_max_coverage,
    optimal_max_coverage,
)
from spatial_mllm.sampling.select import (
    Selection,
    select_frames,
    select_frames_detailed,
    select_frames_from_depth,
)

__all__ = [
    "CoverageOptions",
    "VoxelIncidence",
    "voxel_incidence",
    "points_from_depth",
    "CoverageFillWarning",
    "GreedyResult",
    "OptimalResult",
    "greedy_cover",
    "greedy_max_coverage",
    "coverage_of",
    "optimal_max_coverage",
    "Selection",
    "select_frames",
    "select_frames_detailed",
    "select_frames_from_depth",
    "SamplingAnalysisConfig",
]
