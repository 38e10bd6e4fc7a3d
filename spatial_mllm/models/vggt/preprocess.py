"""VGGT's reference image preprocessing (``vggt/utils/load_fn.py::load_and_preprocess_images``).

Output: ``[N, 3, H, W]`` float32 RGB in [0, 1], H and W multiples of 14 — what ``VGGT.forward`` takes.

* ``mode="crop"`` (default): width → 518, height → ``round(h·518/w / 14)·14`` (Python's banker's rounding),
  PIL bicubic resize of the 8-bit image, then a centre crop of the rows to 518 if taller (no padding if
  shorter). 640×480 → 518×392; 1920×1080 → 518×294; portrait → 518×518.
* ``mode="pad"``: the longer side → 518, the other → ``round(·/14)·14``, then pad to 518×518 with 1.0
  (white), ``top = (518-h)//2``, ``left = (518-w)//2``.
* RGBA images are alpha-composited over white first; other modes are converted to RGB.
* ``rotate_portrait=True`` (off by default; Spatial-MLLM's ``src/sampling/sa_sampling.py`` does it before its
  crop): an image taller than wide is first rotated 90° clockwise (Pillow ``rotate(-90, expand=True)``), so a
  portrait frame is fed whole as a landscape one (W×H → H×W, then 518 wide) instead of centre-cropped to
  518×518.
* If the processed images differ in size, every one is padded with 1.0 to the largest (H, W) (centred the
  same way), as the reference does (it prints a warning; we log one).

Differences from the reference: inputs may be paths, PIL images or ``uint8`` ``[H, W, 3]`` arrays (video
frames), not only paths; ``target_size`` is a parameter (518 by default). No EXIF rotation is applied,
matching the reference tree (a later upstream revision adds ``ImageOps.exif_transpose``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["load_and_preprocess_images", "preprocess_image", "target_size_hw"]

logger = logging.getLogger(__name__)

ImageLike = str | os.PathLike | Image.Image | np.ndarray


def _to_pil_rgb(img: ImageLike) -> Image.Image:
    if isinstance(img, (str, os.PathLike)):
        img = Image.open(img)
        img.load()
    elif isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise TypeError(f"numpy frames must be uint8 [H, W, 3|4], got {img.dtype}")
        img = Image.fromarray(img)
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def target_size_hw(width: int, height: int, mode: str = "crop", target_size: int = 518,
                   patch: int = 14) -> tuple[int, int]:
    """Resized (H, W) before cropping/padding, exactly as the reference computes it."""
    if mode == "pad" and height > width:
        return target_size, round(width * (target_size / height) / patch) * patch
    return round(height * (target_size / width) / patch) * patch, target_size


def preprocess_image(img: ImageLike, mode: str = "crop", target_size: int = 518,
                     rotate_portrait: bool = False) -> torch.Tensor:
    """One image → ``[3, H, W]`` float32 in [0, 1] (before the batch-level padding); ``rotate_portrait``:
    a portrait image is turned 90° clockwise first (the Spatial-MLLM sampler's rule)."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    pil = _to_pil_rgb(img)
    if rotate_portrait and pil.height > pil.width:
        pil = pil.rotate(-90, expand=True)  # Pillow's angle is counter-clockwise: -90 = 90° clockwise
    width, height = pil.size
    new_h, new_w = target_size_hw(width, height, mode, target_size)
    pil = pil.resize((new_w, new_h), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.array(pil, dtype=np.uint8)).permute(2, 0, 1).float().div(255)  # [3, h, w]
    if mode == "crop" and new_h > target_size:
        start = (new_h - target_size) // 2
        x = x[:, start:start + target_size, :]
    if mode == "pad":
        dh, dw = target_size - x.shape[1], target_size - x.shape[2]
        if dh > 0 or dw > 0:
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="constant", value=1.0)
    return x


def load_and_preprocess_images(images: Sequence[ImageLike], mode: str = "crop", target_size: int = 518,
                               rotate_portrait: bool = False) -> torch.Tensor:
    """Images (paths, PIL, or uint8 arrays) → ``[N, 3, H, W]`` float32 in [0, 1] for VGGT."""
    if len(images) == 0:
        raise ValueError("at least one image is required")
    out = [preprocess_image(im, mode, target_size, rotate_portrait) for im in images]
    shapes = {tuple(x.shape[1:]) for x in out}
    if len(shapes) > 1:
        logger.warning("VGGT preprocessing: images of different sizes %s; padding to the largest", shapes)
        Hm = max(s[0] for s in shapes)
        Wm = max(s[1] for s in shapes)
        padded = []
        for x in out:
            dh, dw = Hm - x.shape[1], Wm - x.shape[2]
            if dh > 0 or dw > 0:
                x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="constant", value=1.0)
            padded.append(x)
        out = padded
    return torch.stack(out)  # [N, 3, H, W]
