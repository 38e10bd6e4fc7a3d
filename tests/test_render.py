"""Renderer: exact z-depth, unprojection onto surfaces, instance masks vs boxes, camera path, determinism."""

import hashlib

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from spatial_mllm.data.render import (
    RenderConfig,
    Renderer,
    camera_path,
    camera_rays,
    free_space_grid,
    intrinsics_from_fov,
    render_scene,
    save_rendered,
)
from spatial_mllm.data.scene import load_scene
from spatial_mllm.data.synthetic import (
    SURFACE_WALL,
    SyntheticSceneConfig,
    TriMesh,
    generate_scene,
    point_in_polygon,
)
from spatial_mllm.geometry.cameras import look_at, project_points, unproject_depth

W, H = 64, 48
SMALL = SyntheticSceneConfig(seed=3, min_area=14.0, max_area=20.0)


def _plane_mesh(normal, offset, size=40.0) -> tuple[TriMesh, np.ndarray]:
    """A big square of the plane ``n·x = offset`` (a wall, instance 0)."""
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    a = np.cross(n, [0.3, 0.2, 0.9])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    c = n * offset
    v = np.array([c + size * (sa * a + sb * b) for sa, sb in [(-1, -1), (1, -1), (1, 1), (-1, 1)]])
    mesh = TriMesh(
        v,
        np.array([[0, 1, 2], [0, 2, 3]], np.int32),
        np.zeros(2, np.int32),
        np.full((2, 3), 0.5, np.float32),
        np.full(2, SURFACE_WALL, np.int8),
    )
    return mesh, n


def test_plane_depth_is_analytic_z_and_unprojects_onto_plane():
    mesh, n = _plane_mesh([0.2, -1.0, 0.3], offset=2.5)
    K = intrinsics_from_fov(W, H, 75.0)
    E = np.stack([look_at([0.1, 0.2, 1.4], [0.6, -3.0, 0.4]), look_at([-0.3, 0.0, 1.0], [0.0, -3.0, 2.0])])
    rgb, depth, inst = Renderer(mesh, RenderConfig(width=W, height=H)).render(K, E, W, H)
    assert rgb.shape == (2, H, W, 3) and rgb.dtype == np.uint8
    assert np.all(inst == 0) and np.all(depth > 0)
    # analytic: ray x(t) = C + t R^T K^-1 [u, v, 1], whose camera z is t; plane n·x = offset
    for i in range(2):
        R, t = E[i, :, :3], E[i, :, 3]
        C = -R.T @ t
        v, u = np.mgrid[0:H, 0:W].astype(float)
        d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
        d_world = d_cam @ R
        z = (2.5 - n @ C) / (d_world @ n)
        np.testing.assert_allclose(depth[i], z, atol=1e-4, rtol=0)
    pts = unproject_depth(depth, np.stack([K, K]), E)  # [2, H, W, 3]
    assert np.abs(pts @ n - 2.5).max() <= 1e-4


def test_rays_use_integer_pixel_centres():
    K = intrinsics_from_fov(W, H, 60.0)
    E = look_at([0.0, 0.0, 1.0], [0.0, 5.0, 1.0])
    rays = camera_rays(K, E[None], W, H)[0]
    # pixel (u, v) direction must project back to exactly (u, v)
    pts = rays[..., :3] + 2.0 * rays[..., 3:]
    uv, z = project_points(pts.reshape(-1, 3).astype(np.float64), K, E)
    v, u = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(uv, np.stack([u.ravel(), v.ravel()], 1), atol=1e-4)
    np.testing.assert_allclose(z, 2.0, atol=1e-5)


@pytest.fixture(scope="module")
def small_render():
    scene = generate_scene(SMALL, 0)
    cfg = RenderConfig(width=112, height=84, num_frames=12)
    return scene, cfg, render_scene(scene, cfg, seed=0)


def test_unprojected_depth_lies_on_the_mesh(small_render):
    import open3d as o3d
    import open3d.core as o3c

    scene, cfg, fr = small_render
    pts = unproject_depth(fr.depth, fr.intrinsics, fr.extrinsics).reshape(-1, 3)
    rs = o3d.t.geometry.RaycastingScene()
    rs.add_triangles(
        o3c.Tensor(scene.mesh.vertices.astype(np.float32)), o3c.Tensor(scene.mesh.triangles.astype(np.uint32))
    )
    dist = rs.compute_distance(o3c.Tensor(pts.astype(np.float32))).numpy()
    assert np.all(fr.depth > 0)
    assert np.quantile(dist, 0.999) < 1e-4 and dist.max() < 1e-3


def test_instance_masks_inside_projected_boxes(small_render):
    scene, cfg, fr = small_render
    checked = 0
    for t in range(len(fr.depth)):
        ids = np.unique(fr.instance_ids[t])
        for o in scene.meta.objects:
            if o.instance_id not in ids:
                continue
            uv, z = project_points(
                o.corners(), fr.intrinsics[t].astype(np.float64), fr.extrinsics[t].astype(np.float64)
            )
            if np.any(z <= 0.05):
                continue  # box crosses the camera plane: its projection is not the corners' hull
            hull = ConvexHull(uv)
            vv, uu = np.nonzero(fr.instance_ids[t] == o.instance_id)
            pix = np.stack([uu, vv], 1).astype(float)
            # hull.equations: a·x + b <= 0 inside; allow 1 px for float32 cameras and rasterisation
            slack = (pix @ hull.equations[:, :2].T + hull.equations[:, 2]).max()
            assert slack <= 1.0, (o.category, t, slack)
            checked += 1
    assert checked >= 10
    seen = {i for i in np.unique(fr.instance_ids) if i}
    assert len(seen) >= 0.6 * len(scene.meta.objects)  # the scan sees most objects


def test_box_in_open_view_labels_its_centre_pixel():
    cfg = SyntheticSceneConfig(
        seed=1, categories=("table",), min_objects=1, max_objects=1, min_area=12, max_area=14
    )
    scene = generate_scene(cfg, 0)
    (table,) = scene.meta.objects
    K = intrinsics_from_fov(W, H, 60.0)
    eye = table.centroid + np.array([0.3, 0.2, 1.3])
    E = look_at(eye, table.centroid)
    _, depth, inst = Renderer(scene.mesh, RenderConfig(width=W, height=H)).render(K, E[None], W, H)
    uv, z = project_points(table.centroid[None], K, E)
    u, v = np.round(uv[0]).astype(int)
    assert inst[0, v, u] == table.instance_id
    top = table.centroid[2] + table.axes_lengths[2] / 2  # the ray hits the table top first
    hit = unproject_depth(depth[0], K, E)[v, u]
    assert hit[2] == pytest.approx(top, abs=1e-4)


def test_camera_path_stays_in_free_space(small_render):
    scene, cfg, fr = small_render
    E = camera_path(scene.meta, RenderConfig(num_frames=40), np.random.default_rng(5))
    C = -np.einsum("tji,tj->ti", E[:, :, :3], E[:, :, 3])
    assert np.all((C[:, 2] >= 1.2 - 1e-9) & (C[:, 2] <= 1.7 + 1e-9))
    assert point_in_polygon(C[:, :2], scene.meta.floor_polygon).all()
    _, origin, dist = free_space_grid(scene.meta, 0.02, 0.0)
    cell = np.floor((C[:, :2] - origin) / 0.02).astype(int)
    assert dist[cell[:, 1], cell[:, 0]].min() >= 0.2  # ≥ 20 cm from walls and furniture everywhere
    R = E[:, :, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    assert np.ptp(C[:, :2], axis=0).max() > 1.0  # it walks
    down = R[:, 1, 2]  # world z of the camera's y (down) axis: roll/pitch are small
    assert np.all(down < -0.9)


def test_outputs_are_byte_identical_for_the_same_seed(tmp_path):
    scene = generate_scene(SMALL, 1)
    cfg = RenderConfig(width=W, height=H, num_frames=6)
    digests = []
    for k in range(2):
        folder = save_rendered(
            tmp_path / f"run{k}", generate_scene(SMALL, 1).meta, render_scene(scene, cfg, seed=4)
        )
        digests.append({f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())})
    assert set(digests[0]) == {"video.mp4", "frames.npz", "scene.json"}
    assert digests[0] == digests[1]
    data = np.load(folder / "frames.npz")
    assert data["depth"].dtype == np.float32 and data["depth"].shape == (6, H, W)
    assert data["instance_ids"].dtype == np.int32 and data["rgb"].shape == (6, H, W, 3)
    assert data["intrinsics"].shape == (6, 3, 3) and data["extrinsics"].shape == (6, 3, 4)
    assert float(data["fps"]) == cfg.fps
    assert load_scene(folder / "scene.json").to_dict() == scene.meta.to_dict()
    other = render_scene(scene, cfg, seed=5)
    assert not np.array_equal(other.extrinsics, data["extrinsics"])


def test_render_config_validation():
    with pytest.raises(ValueError, match="even"):
        RenderConfig(width=63)
