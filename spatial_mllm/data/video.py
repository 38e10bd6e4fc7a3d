"""Read videos (mp4 files or folders of frame images) and sample frames uniformly.

Uniform sampling convention. Spatial-MLLM's evaluation (``src/evaluation/vsibench/eval_vsibench.py``)
passes ``nframes`` to ``qwen_vl_utils.process_vision_info``, which picks
``torch.linspace(0, total - 1, nframes).round().long()`` — first and last frame included, evenly spaced,
rounded to the nearest index (ties to even). lmms-eval's video models instead use
``np.linspace(0, total - 1, n, dtype=int)``, which truncates. :func:`uniform_frame_indices` implements
both (``rounding="round"``, the default, or ``"floor"``); they differ by at most one frame.
Qwen's ``smart_nframes`` additionally rounds ``nframes`` to a multiple of 2 (``FRAME_FACTOR``); that rule
belongs to the model's processor, not here.

Backends: ``"pyav"`` (default; PyAV wheels bundle FFmpeg, so it installs everywhere), ``"decord"`` and
``"imageio"`` when those packages are importable (a clear ``ImportError`` otherwise). A folder of frames
is read with Pillow, in natural-sort order of the file names (``2.png`` before ``10.png``).

Errors: a missing path raises ``FileNotFoundError`` and an unreadable / corrupt video raises
:class:`VideoReadError`; both name the file.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "VideoClip",
    "VideoReadError",
    "uniform_frame_indices",
    "read_video",
    "read_frames_folder",
    "video_info",
    "available_backends",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class VideoReadError(RuntimeError):
    """A video file exists but cannot be decoded (corrupt, truncated, not a video)."""


@dataclass
class VideoClip:
    """Decoded frames of one video."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    fps: float  # frame rate of the source video (frames per second)
    timestamps: np.ndarray  # [T] float64 seconds of each returned frame in the source video
    indices: np.ndarray  # [T] int64 frame indices in the source video
    total_frames: int  # frames in the source video
    path: str  # where it was read from


def uniform_frame_indices(total: int, num: int, rounding: str = "round") -> np.ndarray:
    """``num`` evenly spaced frame indices in ``[0, total - 1]`` (first and last included).

    ``rounding="round"``: Qwen2.5-VL / Spatial-MLLM (``linspace(...).round()``); ``"floor"``: lmms-eval
    (``np.linspace(..., dtype=int)``). ``num >= total`` returns every frame once (no duplicates).
    """
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    if num <= 0:
        raise ValueError(f"num must be positive, got {num}")
    if num >= total:
        return np.arange(total, dtype=np.int64)
    x = np.linspace(0.0, total - 1, num)
    if rounding == "round":
        return np.round(x).astype(np.int64)
    if rounding == "floor":
        return x.astype(np.int64)
    raise ValueError(f"rounding must be 'round' or 'floor', got {rounding!r}")


def available_backends() -> list[str]:
    """Video backends importable here (``"pyav"`` is a hard dependency)."""
    out = []
    for name, module in (("pyav", "av"), ("decord", "decord"), ("imageio", "imageio")):
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _select(total: int, num_frames: int | None, indices, rounding: str) -> np.ndarray:
    if indices is not None:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= total):
            raise IndexError(f"frame indices must lie in [0, {total - 1}], got {idx.min()}..{idx.max()}")
        return idx
    if num_frames is None:
        return np.arange(total, dtype=np.int64)
    return uniform_frame_indices(total, num_frames, rounding)


def read_frames_folder(
    path: str | os.PathLike,
    num_frames: int | None = None,
    indices=None,
    fps: float = 1.0,
    rounding: str = "round",
) -> VideoClip:
    """Read a folder of frame images (natural-sorted). ``fps`` is the folder's frame rate, used for the
    timestamps (folders store none; 1.0 by default)."""
    from PIL import Image

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    files = sorted(
        (f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda f: _natural_key(f.name),
    )
    if not files:
        raise VideoReadError(f"no frame images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    idx = _select(len(files), num_frames, indices, rounding)
    frames = []
    for i in idx:
        try:
            with Image.open(files[i]) as im:
                frames.append(np.asarray(im.convert("RGB")))
        except OSError as e:
            raise VideoReadError(f"cannot read frame image {files[i]}: {e}") from e
        if frames[-1].shape != frames[0].shape:
            raise VideoReadError(
                f"frame {files[i]} is {frames[-1].shape[1]}x{frames[-1].shape[0]} (WxH), but "
                f"{files[idx[0]].name} is {frames[0].shape[1]}x{frames[0].shape[0]}: frames of a folder must share "
                f"one size"
            )
    return VideoClip(
        frames=np.stack(frames).astype(np.uint8),
        fps=float(fps),
        timestamps=idx / float(fps),
        indices=idx,
        total_frames=len(files),
        path=str(folder),
    )


def _open_av(path: Path):
    import av

    try:
        container = av.open(str(path))
        if not container.streams.video:
            container.close()
            raise VideoReadError(f"no video stream in {path}")
        return container
    except av.FFmpegError as e:  # FFmpeg's reason without its errno and repeated path
        reason = getattr(e, "strerror", None) or str(e)
        raise VideoReadError(f"cannot open video {path}: {reason} (corrupt, truncated or not a video file)") from e


def video_info(path: str | os.PathLike) -> tuple[int, float]:
    """``(total_frames, fps)`` of a video file via PyAV (packets are counted when the header has no count)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    with _open_av(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        total = int(stream.frames or 0)
        if total <= 0:
            try:
                total = sum(1 for p in container.demux(stream) if p.size > 0)
            except av.FFmpegError as e:
                raise VideoReadError(f"cannot read video {path}: {e}") from e
    if total <= 0:
        raise VideoReadError(f"video {path} has no frames")
    return total, fps


def _read_pyav(path: Path, num_frames, indices, rounding) -> VideoClip:
    import av

    total, fps = video_info(path)
    idx = _select(total, num_frames, indices, rounding)
    wanted: dict[int, list[int]] = {}
    for k, i in enumerate(idx):
        wanted.setdefault(int(i), []).append(k)
    frames: list[np.ndarray | None] = [None] * len(idx)
    stamps = np.zeros(len(idx))
    last = int(idx.max()) if len(idx) else -1
    decoded = 0
    with _open_av(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
                if i in wanted:
                    arr = frame.to_ndarray(format="rgb24")
                    t = float(frame.time) if frame.time is not None else i / fps
                    for k in wanted[i]:
                        frames[k] = arr
                        stamps[k] = t
                if i >= last:
                    break
        except av.FFmpegError as e:
            raise VideoReadError(f"cannot decode video {path}: {e}") from e
    missing = [int(idx[k]) for k, f in enumerate(frames) if f is None]
    if missing:
        raise VideoReadError(f"video {path}: decoded only {decoded} of {total} frames; missing {missing[:5]}")
    return VideoClip(np.stack(frames), fps, stamps, idx, total, str(path))


def _read_decord(path: Path, num_frames, indices, rounding) -> VideoClip:
    import decord

    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except decord.DECORDError as e:  # pragma: no cover - optional backend
        raise VideoReadError(f"cannot open video {path}: {e}") from e
    total, fps = len(vr), float(vr.get_avg_fps())
    idx = _select(total, num_frames, indices, rounding)
    frames = vr.get_batch(idx.tolist()).asnumpy()
    stamps = np.array([vr.get_frame_timestamp(int(i))[0] for i in idx], dtype=np.float64)
    return VideoClip(frames.astype(np.uint8), fps, stamps, idx, total, str(path))


def _read_imageio(path: Path, num_frames, indices, rounding) -> VideoClip:
    import imageio.v3 as iio

    try:
        all_frames = iio.imread(str(path), plugin="pyav")  # [T, H, W, 3]
        meta = iio.immeta(str(path), plugin="pyav")
    except Exception as e:  # pragma: no cover - optional backend; imageio raises many types
        raise VideoReadError(f"cannot read video {path}: {e}") from e
    fps = float(meta.get("fps", 0.0))
    idx = _select(len(all_frames), num_frames, indices, rounding)
    return VideoClip(
        all_frames[idx].astype(np.uint8), fps, idx / max(fps, 1e-9), idx, len(all_frames), str(path)
    )


_BACKENDS = {
    "pyav": ("av", _read_pyav),
    "decord": ("decord", _read_decord),
    "imageio": ("imageio", _read_imageio),
}


def read_video(
    path: str | os.PathLike,
    num_frames: int | None = None,
    indices=None,
    backend: str = "pyav",
    rounding: str = "round",
    folder_fps: float = 1.0,
) -> VideoClip:
    """Decode a video file or a folder of frames.

    Args:
        path: an mp4 (or any FFmpeg-readable) file, or a folder of frame images.
        num_frames: sample this many frames uniformly (:func:`uniform_frame_indices`); None → all frames.
        indices: explicit frame indices (overrides ``num_frames``), e.g. from a space-aware sampler.
        backend: ``"pyav"`` | ``"decord"`` | ``"imageio"`` for files.
        rounding: ``"round"`` (Qwen / Spatial-MLLM) or ``"floor"`` (lmms-eval) for uniform sampling.
        folder_fps: frame rate assumed for a folder of frames.

    Returns:
        :class:`VideoClip` with ``frames [T, H, W, 3] uint8``, ``fps``, ``timestamps [T]`` seconds.
    """
    p = Path(path)
    if p.is_dir():
        return read_frames_folder(p, num_frames, indices, fps=folder_fps, rounding=rounding)
    if not p.is_file():
        raise FileNotFoundError(f"video file not found: {p}")
    if backend not in _BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose from {sorted(_BACKENDS)}")
    module, fn = _BACKENDS[backend]
    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"video backend {backend!r} needs the {module!r} package, which is not installed; "
            f"available here: {available_backends()}"
        )
    return fn(p, num_frames, indices, rounding)
