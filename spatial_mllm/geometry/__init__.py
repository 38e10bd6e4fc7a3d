"""Geometry shared by data, sampling and models: cameras (OpenCV, camera-from-world) and oriented boxes.

Submodules: :mod:`spatial_mllm.geometry.cameras` (pinhole cameras, rigid transforms, (un)projection) and
:mod:`spatial_mllm.geometry.boxes` (oriented 3D boxes, exact box-to-box distances).
"""

from spatial_mllm.geometry.cameras import (  # noqa: F401
    camera_centers,
    depth_to_camera_points,
    invert_rigid,
    look_at,
    pixel_grid,
    project_points,
    to_homogeneous,
    unproject_depth,
)
