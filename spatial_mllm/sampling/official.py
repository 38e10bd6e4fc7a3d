"""Reference: a faithful re-implementation of the official selection logic, for tests and the benchmark.

Spatial-MLLM's ``src/sampling/sa_sampling.py`` (an offline script) selects frames from VGGT's point map as
follows; this module redoes exactly that, step by step, with the same library calls and the same
arithmetic order, so that :func:`spatial_mllm.sampling.select_frames` can be checked against it and
timed beside it. It is *not* used by the sampler.

1. ``threshold = np.percentile(conf (host copy, all frames), 50)``;
   ``mask = (conf >= threshold) & (conf > 0.1)``.
2. Bounding box of the kept points (``min``/``max`` over dim 0); ``voxel = min(x, y, z extent) / 20``,
   read to Python floats and turned back into float32 tensors.
3. Per frame (a Python loop): kept points → ``floor((p - min) / voxel).long()`` → ``torch.unique(dim=0)``
   → a Python ``set`` of ``(i, j, k)`` tuples.
4. Greedy over Python sets: ``k`` rounds; loop over ``remaining = set(range(T))`` keeping the first strict
   maximum of ``len(voxels - covered)``; **stop early when the best gain is 0** (so it can return fewer
   than k frames); the result is sorted.

Known behaviours kept on purpose (they are what the comparison is about): the early stop (a short list),
the crash on an empty mask (``min`` of an empty tensor), NaN confidences turning the threshold into NaN.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["official_voxel_sets", "official_greedy", "official_select"]


def official_voxel_sets(world_points: torch.Tensor, conf: torch.Tensor,
                        conf_percentile: float = 50.0, conf_min: float = 0.1, divisor: float = 20.0
                        ) -> list[set[tuple[int, int, int]]]:
    """Steps 1-3. ``world_points [1, T, H, W, 3]`` or ``[T, H, W, 3]``, ``conf`` likewise without the 3."""
    if world_points.dim() == 4:
        world_points, conf = world_points[None], conf[None]
    dev = world_points.device
    flat_pts = world_points.reshape(-1, 3)  # [B, 3]
    flat_conf = conf.reshape(-1)  # [B]
    threshold = np.percentile(flat_conf.cpu().numpy(), conf_percentile)
    mask = (conf >= threshold) & (conf > conf_min)  # [1, T, H, W]
    flat_mask = (flat_conf >= threshold) & (flat_conf > conf_min)
    x_min, y_min, z_min = flat_pts[flat_mask].min(dim=0)[0]
    x_max, y_max, z_max = flat_pts[flat_mask].max(dim=0)[0]
    voxel = min(x_max - x_min, y_max - y_min, z_max - z_min) / divisor
    # the script passes .item() floats, which compute_voxel_sets turns back into float32 tensors
    offset = torch.tensor([x_min.item(), y_min.item(), z_min.item()], device=dev)
    voxel_t = torch.tensor(voxel.item(), device=dev)
    sets: list[set[tuple[int, int, int]]] = []
    for t in range(world_points.shape[1]):
        m = mask[0, t].flatten()  # [H*W]
        pts = world_points[0, t].reshape(-1, 3)[m]  # [N_t, 3]
        if pts.shape[0] == 0:
            sets.append(set())
            continue
        ijk = ((pts - offset) / voxel_t).floor().long()
        uniq = torch.unique(ijk, dim=0)
        sets.append(set(map(tuple, uniq.cpu().numpy().tolist())))
    return sets


def official_greedy(voxel_sets: list[set], k: int) -> list[int]:
    """Step 4, without the final sort: may return fewer than ``k`` frames."""
    selected: list[int] = []
    covered: set = set()
    remaining = set(range(len(voxel_sets)))
    for _ in range(k):
        if not remaining:
            break
        best, best_gain = None, -1
        for f in remaining:  # small ints: ascending order; first strict maximum wins
            gain = len(voxel_sets[f] - covered)
            if gain > best_gain:
                best, best_gain = f, gain
        if best is None or best_gain <= 0:
            break
        selected.append(best)
        covered |= voxel_sets[best]
        remaining.remove(best)
    return selected


def official_select(world_points: torch.Tensor, conf: torch.Tensor, k: int) -> list[int]:
    """The official selection: sorted indices, possibly fewer than ``k``."""
    return sorted(official_greedy(official_voxel_sets(world_points, conf), k))
