"""Our implementation of VGGT (facebookresearch/vggt), Spatial-MLLM's spatial encoder.

Modules: ``config`` (:class:`VGGTConfig`), ``layers`` (blocks, 2D RoPE), ``patch_embed`` (DINOv2 / conv),
``aggregator`` (alternating attention; ``keep_layers`` for memory-lean use), ``camera_head``,
``dpt_head`` (depth / point maps), ``pose_enc`` (absT_quaR_FoV ↔ extrinsics/intrinsics, unprojection),
``preprocess`` (reference image loading), ``model`` (:class:`VGGT`, ``from_pretrained``).

Typical uses::

    model = VGGT.from_pretrained("facebook/VGGT-1B").cuda()            # full model, track head dropped
    with torch.autocast("cuda", dtype=torch.bfloat16):
        preds = model(load_and_preprocess_images(paths).cuda())      # pose_enc, depth, world_points ...

    enc = VGGT.from_pretrained(path, enable_camera=False, enable_depth=False, enable_point=False)
    layers, patch_start_idx = enc.aggregator(images, keep_layers=[-1])  # layers[-1]: [B, S, 5+P, 2048]

Conventions: camera-from-world extrinsics, OpenCV axes (x right, y down, z forward), world = frame 0's
camera, lengths in VGGT's normalised (non-metric) scale.
"""

from spatial_mllm.models.vggt.aggregator import Aggregator
from spatial_mllm.models.vggt.camera_head import CameraHead
from spatial_mllm.models.vggt.config import VGGTConfig
from spatial_mllm.models.vggt.dpt_head import DPTHead
from spatial_mllm.models.vggt.model import VGGT, load_checkpoint_file
from spatial_mllm.models.vggt.pose_enc import (
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
    unproject_depth_map_to_point_map,
)
from spatial_mllm.models.vggt.preprocess import load_and_preprocess_images, preprocess_image

__all__ = [
    "VGGT",
    "VGGTConfig",
    "Aggregator",
    "CameraHead",
    "DPTHead",
    "load_checkpoint_file",
    "pose_encoding_to_extri_intri",
    "extri_intri_to_pose_encoding",
    "quat_to_mat",
    "mat_to_quat",
    "unproject_depth_map_to_point_map",
    "load_and_preprocess_images",
    "preprocess_image",
]
