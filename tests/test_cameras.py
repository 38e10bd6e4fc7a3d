"""Camera conventions: OpenCV axes, camera-from-world extrinsics, (un)projection round trips."""

import numpy as np
import torch

from spatial_mllm.geometry.cameras import (
    camera_centers,
    invert_rigid,
    look_at,
    pixel_grid,
    project_points,
    to_homogeneous,
    unproject_depth,
)


def _rand_rigid(gen, n):
    q = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64)).Q
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]  # proper rotations
    t = torch.randn(n, 3, 1, generator=gen, dtype=torch.float64)
    return torch.cat([q, t], dim=-1)  # [n, 3, 4]


def test_invert_rigid_is_the_inverse():
    E = _rand_rigid(torch.Generator().manual_seed(0), 5)
    I4 = to_homogeneous(E) @ to_homogeneous(invert_rigid(E))
    torch.testing.assert_close(I4, torch.eye(4, dtype=torch.float64).expand(5, 4, 4))
    assert invert_rigid(to_homogeneous(E)).shape == (5, 4, 4)


def test_look_at_is_opencv():
    # camera at 1.5 m looking north (+y) in a z-up world: x right = east (+x), y down = -z, z forward = +y
    E = look_at([0.0, 0.0, 1.5], [0.0, 5.0, 1.5])
    np.testing.assert_allclose(E[:, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(camera_centers(E), [0, 0, 1.5], atol=1e-12)
    # a point above and to the right of the view axis lands right (u > cx) and up (v < cy)
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    uv, z = project_points(np.array([[1.0, 5.0, 2.0]]), K, E)
    assert uv[0, 0] > 50 and uv[0, 1] < 40 and z[0] == 5.0


def test_unproject_known_plane_and_round_trip():
    # a fronto-parallel wall 3 m in front of a camera at the origin looking along +y
    E = torch.as_tensor(look_at([0.0, 0.0, 0.0], [0.0, 1.0, 0.0]))
    K = torch.tensor([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]], dtype=torch.float64)
    depth = torch.full((48, 64), 3.0, dtype=torch.float64)
    pts = unproject_depth(depth, K, E)  # [48, 64, 3]
    torch.testing.assert_close(pts[..., 1], torch.full((48, 64), 3.0, dtype=torch.float64))
    # principal point (31.5, 23.5) is between pixels; pixel (0,0) is left/up of it by 31.5/23.5 px
    torch.testing.assert_close(pts[0, 0], torch.tensor([-31.5 * 3 / 60, 3.0, 23.5 * 3 / 60], dtype=torch.float64))
    uv, z = project_points(pts.reshape(-1, 3), K, E)
    torch.testing.assert_close(uv.reshape(48, 64, 2), pixel_grid(48, 64, dtype=torch.float64))
    torch.testing.assert_close(z, torch.full_like(z, 3.0))


def test_batched_unprojection_matches_per_frame():
    gen = torch.Generator().manual_seed(1)
    E = _rand_rigid(gen, 3)
    K = torch.tensor([[50.0, 0, 20], [0, 55.0, 15], [0, 0, 1]], dtype=torch.float64).expand(3, 3, 3)
    depth = torch.rand(3, 30, 40, generator=gen, dtype=torch.float64) + 0.5
    batched = unproject_depth(depth, K, E)
    for i in range(3):
        torch.testing.assert_close(batched[i], unproject_depth(depth[i], K[i], E[i]))
    # numpy in, numpy out
    out = unproject_depth(depth[0].numpy(), K[0].numpy(), E[0].numpy())
    assert isinstance(out, np.ndarray) and out.shape == (30, 40, 3)
