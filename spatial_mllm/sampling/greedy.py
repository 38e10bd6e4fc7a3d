"""Greedy maximum coverage (the paper's frame selection) and its exact optimum for small instances.

Problem: given the incidence ``A [S, V]`` (frame ``i`` sees voxel ``v``) pick ``k`` frames whose union
covers the most voxels. Greedy — repeatedly take the frame with the largest *new* coverage — is a
``(1 - 1/e)`` approximation (Nemhauser, Wolsey & Fisher 1978); Spatial-MLLM uses it with k = 16 of 128.

Contract of :func:`greedy_max_coverage` (shared/DESIGN.md): exactly ``k`` distinct frames, always.

* Ties: among frames of equal gain the lowest index wins (what the official loop over a Python ``set``
  of small ints does, since it keeps the first strict maximum in ascending order).
* When no remaining frame adds a voxel (the official code stops there and returns fewer than k frames),
  the remaining picks are *filled* deterministically: each time the unchosen frame farthest in time
  from every chosen frame (max of min ``|i - j|``; ties → lowest index; with nothing chosen, frame 0).
  Filled frames are reported in :attr:`GreedyResult.filled` and a :class:`CoverageFillWarning` is
  issued, so a short selection is never silent.
* The returned order is the *selection* order (a prefix of length ``k' < k`` is the greedy answer for
  ``k'``); :func:`spatial_mllm.sampling.select_frames` sorts it.

Two evaluations give the same picks (tested): ``"lazy"`` (Minoux's lazy greedy: stale gains are upper
bounds kept in a heap; only the top is re-evaluated; CPU, numpy) and ``"dense"`` (all gains kept on the
device and updated with one mat-vec per pick: ``gain -= A @ newly_covered``; no host read until the
end; the GPU path). ``"auto"`` picks dense on CUDA, lazy elsewhere.

:func:`optimal_max_coverage` solves the same problem exactly as an integer program with
``scipy.optimize.milp`` (HiGHS), to measure greedy's approximation ratio on small instances.
"""

from __future__ import annotations

import heapq
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = [
    "CoverageFillWarning",
    "GreedyResult",
    "OptimalResult",
    "greedy_max_coverage",
    "greedy_cover",
    "coverage_of",
    "optimal_max_coverage",
]


class CoverageFillWarning(UserWarning):
    """Fewer than k frames add coverage; the rest were filled by the farthest-in-time rule."""


@dataclass
class GreedyResult:
    """Outcome of :func:`greedy_cover`.

    Attributes:
        order: the ``k`` chosen frames in selection order.
        gains: new voxels each pick added (0 for filled picks).
        filled: frames added by the fill rule (a subset of ``order``).
        covered: voxels covered by the ``k`` frames.
        total: voxels covered by all frames (the ceiling).
    """

    order: list[int]
    gains: list[int]
    filled: list[int]
    covered: int
    total: int

    @property
    def sorted(self) -> list[int]:
        return sorted(self.order)


@dataclass
class OptimalResult:
    """Outcome of :func:`optimal_max_coverage`: ``indices`` (sorted), ``value`` (voxels covered),
    ``optimal`` (HiGHS proved optimality), ``bound`` (upper bound on the optimum)."""

    indices: list[int]
    value: int
    optimal: bool
    bound: float


# --------------------------------------------------------------------------------------------------
# input normalisation
# --------------------------------------------------------------------------------------------------


def _is_scipy_sparse(x) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # scipy is a dependency; keep the import local
        return False
    return sp.issparse(x)


def _num_frames(incidence) -> int:
    return int(incidence.shape[0])


def _to_dense_tensor(incidence) -> torch.Tensor:
    """bool ``[S, V]`` tensor (keeps a tensor's device)."""
    if isinstance(incidence, torch.Tensor):
        if incidence.layout != torch.strided:
            incidence = incidence.to_dense()
        return incidence != 0
    if _is_scipy_sparse(incidence):
        return torch.from_numpy(np.asarray(incidence.toarray()) != 0)
    return torch.from_numpy(np.asarray(incidence) != 0)


def _to_csr(incidence) -> tuple[np.ndarray, np.ndarray, int]:
    """``(indptr [S+1], indices [nnz], V)`` of the incidence on the host (voxels of each frame)."""
    if _is_scipy_sparse(incidence):
        import scipy.sparse as sp

        m = sp.csr_matrix(incidence)
        m.eliminate_zeros()
        return m.indptr.astype(np.int64), m.indices.astype(np.int64), m.shape[1]
    if isinstance(incidence, torch.Tensor) and incidence.layout != torch.strided:
        t = incidence.coalesce() if incidence.layout == torch.sparse_coo else incidence.to_sparse_coo().coalesce()
        idx = t.indices().cpu().numpy()
        nz = t.values().cpu().numpy() != 0
        rows, cols = idx[0][nz], idx[1][nz]
        S, V = t.shape
    else:
        d = _to_dense_tensor(incidence).cpu().numpy()
        S, V = d.shape
        rows, cols = np.nonzero(d)  # row-major: rows ascending
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    indptr = np.zeros(S + 1, dtype=np.int64)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr), cols.astype(np.int64), V


def _check_k(incidence, k: int) -> int:
    if getattr(incidence, "ndim", len(incidence.shape)) != 2:
        raise ValueError(f"incidence must be 2-D [frames, voxels], got shape {tuple(incidence.shape)}")
    S = _num_frames(incidence)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > S:
        raise ValueError(f"k={k} frames requested from only {S} candidates; pass k <= {S} (no short list is "
                         "returned silently)")
    return S


def _fill_pick(chosen: list[int], taken: np.ndarray) -> int:
    """Unchosen frame farthest in time from every chosen one; ties → lowest index; none chosen → 0."""
    S = taken.shape[0]
    if not chosen:
        return int(np.flatnonzero(~taken)[0])
    t = np.arange(S)
    dist = np.abs(t[:, None] - np.asarray(chosen)[None, :]).min(1)  # [S]
    dist[taken] = -1
    return int(np.argmax(dist))  # first maximum = lowest index


# --------------------------------------------------------------------------------------------------
# greedy
# --------------------------------------------------------------------------------------------------


def _lazy(incidence, k: int) -> tuple[list[int], list[int], int]:
    indptr, cols, V = _to_csr(incidence)
    S = indptr.shape[0] - 1
    covered = np.zeros(V, dtype=bool)
    taken = np.zeros(S, dtype=bool)
    sizes = np.diff(indptr)
    # heap of (-upper bound, frame, round the bound was computed in); ties pop the lowest frame first
    heap = [(-int(sizes[i]), i, 0) for i in range(S)]
    heapq.heapify(heap)
    order: list[int] = []
    gains: list[int] = []
    for r in range(k):
        pick, gain = -1, 0
        while heap:
            neg_ub, i, stamp = heap[0]
            if -neg_ub <= 0:
                break  # no frame adds anything: fill
            if stamp == r:  # fresh: exact gain >= every other upper bound (and wins ties by index)
                heapq.heappop(heap)
                pick, gain = i, -neg_ub
                break
            g = int(np.count_nonzero(~covered[cols[indptr[i]:indptr[i + 1]]]))
            heapq.heapreplace(heap, (-g, i, r))
        if pick < 0:
            pick = _fill_pick(order, taken)
            heap = [e for e in heap if e[1] != pick]
            heapq.heapify(heap)
        order.append(pick)
        gains.append(gain)
        taken[pick] = True
        covered[cols[indptr[pick]:indptr[pick + 1]]] = True
    total = int(np.unique(cols).size)
    return order, gains, total


def _dense(incidence, k: int) -> tuple[list[int], list[int], int]:
    A = _to_dense_tensor(incidence)  # [S, V] bool, on its device
    S, V = A.shape
    dev = A.device
    dt = torch.float32 if V < (1 << 24) else torch.float64  # counts stay exact
    Af = A.to(dt)  # [S, V]
    gains = Af.sum(1)  # [S] current marginal gains
    covered = torch.zeros(V, dtype=dt, device=dev)  # [V] 0/1
    taken = torch.zeros(S, dtype=torch.bool, device=dev)
    t = torch.arange(S, device=dev)
    mind = torch.full((S,), float("inf"), dtype=dt, device=dev)  # min |i - chosen| (fill rule)
    order = torch.empty(k, dtype=torch.long, device=dev)
    got = torch.empty(k, dtype=dt, device=dev)
    for r in range(k):
        g = gains.masked_fill(taken, -1)
        best = torch.argmax(g)  # first maximum → lowest index
        fill = torch.argmax(mind.masked_fill(taken, -1))
        pick = torch.where(g[best] > 0, best, fill)  # no host read: branch on device
        order[r] = pick
        got[r] = g[best].clamp(min=0)
        taken[pick] = True
        new = Af[pick] * (1 - covered)  # [V] voxels this pick adds
        covered = covered + new
        gains = gains - Af @ new  # [S]
        mind = torch.minimum(mind, (t - pick).abs().to(dt))
    total = int(A.any(0).sum())
    return order.tolist(), [int(x) for x in got.tolist()], total


def greedy_cover(incidence, k: int, *, method: Literal["auto", "lazy", "dense"] = "auto",
                 warn: bool = True) -> GreedyResult:
    """Greedy maximum coverage with the fill rule; see the module docstring.

    Args:
        incidence: ``[S, V]`` bool/0-1: torch (dense or sparse, any device), numpy, or scipy.sparse.
        k: frames to pick, ``1 ≤ k ≤ S``.
        method: ``"lazy"`` (CPU heap), ``"dense"`` (device mat-vec updates), ``"auto"``.
        warn: issue :class:`CoverageFillWarning` when the fill rule was used.

    Raises:
        ValueError: ``k > S`` or ``k < 1`` or incidence not 2-D.
    """
    S = _check_k(incidence, k)
    if method == "auto":
        on_cuda = isinstance(incidence, torch.Tensor) and incidence.is_cuda and incidence.layout == torch.strided
        method = "dense" if on_cuda else "lazy"
    if method == "lazy":
        order, gains, total = _lazy(incidence, k)
    elif method == "dense":
        order, gains, total = _dense(incidence, k)
    else:
        raise ValueError(f"method must be 'auto', 'lazy' or 'dense', got {method!r}")
    filled = [i for i, g in zip(order, gains) if g == 0]
    if filled and warn:
        warnings.warn(
            f"only {k - len(filled)} of {k} frames add voxel coverage (of {S} candidates); filled "
            f"{filled} by the farthest-in-time rule", CoverageFillWarning, stacklevel=2)
    return GreedyResult(order=order, gains=gains, filled=filled, covered=int(sum(gains)), total=total)


def greedy_max_coverage(incidence, k: int) -> list[int]:
    """Exactly ``k`` distinct frame indices in greedy selection order (public contract, shared/DESIGN.md).

    Args:
        incidence: bool/sparse ``[frames, voxels]`` (torch dense/sparse on any device, numpy, scipy.sparse).
        k: ``1 ≤ k ≤ frames``.
    """
    return greedy_cover(incidence, k).order


def coverage_of(incidence, indices) -> int:
    """Voxels covered by the union of the frames ``indices``."""
    A = _to_dense_tensor(incidence)
    idx = torch.as_tensor(list(indices), dtype=torch.long, device=A.device)
    return int(A[idx].any(0).sum()) if idx.numel() else 0


# --------------------------------------------------------------------------------------------------
# exact optimum
# --------------------------------------------------------------------------------------------------


def optimal_max_coverage(incidence, k: int, *, time_limit: float = 60.0) -> OptimalResult:
    """Exact maximum coverage by integer programming (``scipy.optimize.milp``, HiGHS).

    ``max Σ_u w_u y_u  s.t.  y_u ≤ Σ_{i sees u} x_i,  Σ_i x_i = k,  x ∈ {0,1}^S,  y ∈ [0,1]^U`` where
    voxels seen by the same set of frames are merged into one column ``u`` of weight ``w_u``. Meant for
    small instances (tens of frames); ``time_limit`` seconds, after which the best solution found is
    returned with ``optimal=False``.
    """
    import scipy.sparse as sp
    from scipy.optimize import Bounds, LinearConstraint, milp

    S = _check_k(incidence, k)
    A = _to_dense_tensor(incidence).cpu().numpy()  # [S, V]
    A = A[:, A.any(0)]
    if A.shape[1] == 0:
        return OptimalResult(indices=list(range(k)), value=0, optimal=True, bound=0.0)
    cols, w = np.unique(A.T, axis=0, return_counts=True)  # [U, S], [U]
    U = cols.shape[0]
    # variables: x_0..x_{S-1}, y_0..y_{U-1}; minimise -w·y
    c = np.concatenate([np.zeros(S), -w.astype(float)])
    cover = sp.hstack([-sp.csr_matrix(cols.astype(float)), sp.identity(U, format="csr")])  # y_u - Σ x_i ≤ 0
    card = sp.csr_matrix(np.concatenate([np.ones(S), np.zeros(U)])[None, :])
    cons = [LinearConstraint(cover, -np.inf, 0.0), LinearConstraint(card, k, k)]
    integrality = np.concatenate([np.ones(S), np.zeros(U)])
    res = milp(c, constraints=cons, integrality=integrality, bounds=Bounds(0, 1),
               options={"time_limit": float(time_limit), "disp": False})
    if res.x is None:
        raise RuntimeError(f"milp found no solution: {res.message}")
    x = res.x[:S] > 0.5
    idx = sorted(np.flatnonzero(x).tolist())
    value = int(A[idx].any(0).sum())
    dual = getattr(res, "mip_dual_bound", None)  # of the minimisation, so -dual bounds the coverage
    bound = float(-dual) if dual is not None else float(value)
    return OptimalResult(indices=idx, value=value, optimal=res.status == 0, bound=bound)
