"""``select_frames``: point maps → k frame indices (coverage + greedy), the sampler's core on tensors.

Public contract (shared/DESIGN.md): ``select_frames(world_points, conf, k, **opts) -> list[int]``, sorted
indices, exactly ``k`` of them; the official rule (conf ≥ median and > 0.1, voxel = min extent / 20) is
the default. Options are the fields of :class:`~spatial_mllm.sampling.coverage.CoverageOptions`
(``conf_rule``, ``conf_percentile``, ``conf_min``, ``voxel_size``, ``voxel_divisor``, ``stride``,
``nonfinite``, ``max_dense_cells``) plus ``method`` (greedy evaluation) and ``valid`` (a point mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spatial_mllm.sampling.coverage import CoverageOptions, VoxelIncidence, points_from_depth, voxel_incidence
from spatial_mllm.sampling.greedy import GreedyResult, greedy_cover

__all__ = ["Selection", "select_frames", "select_frames_detailed", "select_frames_from_depth"]


@dataclass
class Selection:
    """Sorted ``indices`` plus how they were found (the incidence and the greedy trace)."""

    indices: list[int]
    greedy: GreedyResult
    coverage: VoxelIncidence


def select_frames_detailed(world_points: torch.Tensor, conf: torch.Tensor | None, k: int, *,
                           method: str = "auto", valid: torch.Tensor | None = None, warn: bool = True,
                           options: CoverageOptions | None = None, **opts) -> Selection:
    """Like :func:`select_frames` but returns the :class:`Selection` (incidence, gains, fill); coverage
    options come as ``options=`` or as keywords."""
    n_frames = world_points.shape[-4]
    if k > n_frames:
        raise ValueError(f"k={k} frames requested from only {n_frames} candidates; pass k <= {n_frames}")
    if options is None:
        options = CoverageOptions.from_kwargs(**opts)
    elif opts:
        raise TypeError("pass either options= or keyword coverage options, not both")
    cov = voxel_incidence(world_points, conf, valid=valid, options=options)
    res = greedy_cover(cov.incidence, k, method=method, warn=warn)
    return Selection(indices=sorted(res.order), greedy=res, coverage=cov)


def select_frames(world_points: torch.Tensor, conf: torch.Tensor | None, k: int, **opts) -> list[int]:
    """Space-aware selection of ``k`` frames from point maps.

    Args:
        world_points: ``[S, H, W, 3]`` (or VGGT's ``[1, S, H, W, 3]``) points in one world frame.
        conf: ``[S, H, W]`` (or ``[1, S, H, W]``) confidence, or ``None`` for ground truth.
        k: frames to select, ``1 ≤ k ≤ S``.
        **opts: coverage options (see module docstring), ``method``, ``valid``, ``warn``.

    Returns:
        ``k`` sorted distinct indices into the ``S`` candidates.
    """
    return select_frames_detailed(world_points, conf, k, **opts).indices


def select_frames_from_depth(depth: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor, k: int,
                             conf: torch.Tensor | None = None, **opts) -> list[int]:
    """Selection from depth + cameras instead of the point head: VGGT's depth head with its camera head
    (normalised units), or ground-truth depth + poses (metres; pass ``voxel_size=`` for a metric grid).

    Args:
        depth: ``[S, H, W]`` (or ``[S, H, W, 1]``) z-depth; pixels with depth ≤ 0 are ignored.
        intrinsics: ``[S, 3, 3]`` pixels. extrinsics: ``[S, 3, 4]`` camera-from-world, OpenCV.
        conf: optional ``[S, H, W]`` depth confidence (the official percentile rule applies to it).
    """
    if depth.dim() == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    pts = points_from_depth(depth, intrinsics, extrinsics)  # [S, H, W, 3]
    return select_frames(pts, conf, k, valid=depth > 0, **opts)
