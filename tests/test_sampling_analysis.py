"""Notebook 02's analysis and plots: coverage curves, top-down maps, VGGT selection, benchmark, figures."""

from pathlib import Path

import numpy as np
import pytest

from spatial_mllm.config import ConfigError, load_params
from spatial_mllm.sampling import analysis as A
from spatial_mllm.sampling import voxel_incidence
from spatial_mllm.sampling.benchmark import compare_selection
from spatial_mllm.sampling.toy import toy_point_maps

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy_incidence():
    d = toy_point_maps(n_frames=20, height=24, width=32, seed=1)
    return voxel_incidence(d["world_points"], None, conf_rule="none").incidence  # [20, V]


@pytest.fixture(scope="module")
def cfg():
    return A.SamplingAnalysisConfig(num_scenes=1, width=56, height=42, num_frames=30, num_candidates=24,
                                    num_selected=6, optimal_k=[1, 2, 4, 6], random_trials=5,
                                    vggt_target_size=56, view_width=160, view_height=120)


@pytest.fixture(scope="module")
def scan(cfg):
    return A.render_scans(cfg)[0]


def test_params_files_validate_and_bad_values_are_rejected():
    tiny = load_params(ROOT / "params/tiny/02_sampling_analysis.yaml")
    assert tiny == A.SamplingAnalysisConfig()  # the parameters cell's defaults are the tiny preset
    paper = load_params(ROOT / "params/paper/02_sampling_analysis.yaml")
    assert (paper.num_candidates, paper.num_selected, paper.vggt_model) == (128, 16, "facebook/VGGT-1B")
    with pytest.raises(ConfigError, match="num_selected"):
        A.SamplingAnalysisConfig.from_dict({"num_selected": 80})
    with pytest.raises(ConfigError, match="multiple of 14"):
        A.SamplingAnalysisConfig.from_dict({"vggt_target_size": 100})
    with pytest.raises(ConfigError, match="optimal_k"):
        A.SamplingAnalysisConfig.from_dict({"optimal_k": [0, 4]})


def test_coverage_curves_monotone_and_ordered(toy_incidence):
    ks = list(range(1, 9))
    curves, sel, greedy, opt = A.coverage_curves(toy_incidence, ks, random_trials=8, seed=0,
                                                 optimal_k=[1, 3, 5, 8], orders={"reverse": list(range(19, -1, -1))})
    total = int(toy_incidence.any(0).sum())
    assert set(curves) == {"uniform", "random", "space_aware", "optimal", "reverse"}
    for c in curves.values():
        assert c.k.shape == c.covered.shape == c.std.shape == c.proved.shape and c.total == total
        assert np.all(c.covered <= total)
    # greedy and the optimum are non-decreasing in k (uniform sets are not nested, so no such claim)
    for m in ("space_aware", "optimal", "reverse"):
        assert np.all(np.diff(curves[m].covered) >= 0), m
    assert curves["random"].std.max() > 0 and curves["uniform"].std.max() == 0
    # optimum >= greedy >= (1 - 1/e) optimum at each solved k; greedy >= uniform and random on this room
    for i, k in enumerate(curves["optimal"].k):
        assert opt[k].optimal and curves["optimal"].proved[i]
        g = curves["space_aware"].at(k)
        assert opt[k].value >= g >= (1 - 1 / np.e) * opt[k].value
    assert np.all(curves["space_aware"].covered >= curves["uniform"].covered)
    assert np.all(curves["space_aware"].covered >= curves["random"].covered)
    assert curves["space_aware"].at(1) == curves["optimal"].at(1)  # one frame: greedy is exact
    # selections: exactly k sorted distinct candidates, greedy prefixes, scored as the curves say
    for m, by_k in sel.items():
        for k, idx in by_k.items():
            assert len(idx) == k and idx == sorted(set(idx)), (m, k)
    assert sel["space_aware"][8] == sorted(greedy.order[:8])
    assert sel["reverse"][3] == [17, 18, 19]
    assert curves["reverse"].at(3) == int(toy_incidence[[17, 18, 19]].any(0).sum())
    with pytest.raises(ValueError, match="ks"):
        A.coverage_curves(toy_incidence, [0, 3])


def test_covered_voxel_map_and_time_positions(scan, cfg):
    inc = A.exact_incidence(scan, cfg.coverage_options())
    everything = A.covered_voxel_map(inc, range(len(scan.candidates)))
    occupied = ~np.isnan(everything.fraction)
    assert everything.covered == everything.total == inc.num_voxels
    assert np.allclose(everything.fraction[occupied], 1.0)
    nothing = A.covered_voxel_map(inc, [])
    assert nothing.covered == 0 and np.allclose(nothing.fraction[occupied], 0.0)
    one = A.covered_voxel_map(inc, [3])
    assert one.covered == int(inc.incidence[3].sum()) and one.fraction.shape == everything.fraction.shape
    # the map's extent (metres) holds every voxel centre
    c = inc.voxel_centers().numpy()
    x0, x1, y0, y1 = everything.extent
    assert (c[:, 0] > x0).all() and (c[:, 0] < x1).all() and (c[:, 1] > y0).all() and (c[:, 1] < y1).all()
    # candidates follow the official floor rule; times are frame / fps
    assert scan.candidates.tolist() == np.linspace(0, cfg.num_frames - 1, cfg.num_candidates).astype(int).tolist()
    assert np.allclose(scan.seconds([0, 5]), scan.candidates[[0, 5]] / cfg.fps)


def test_vggt_selection_is_the_samplers(scan, cfg):
    sampler = A.make_vggt_sampler(cfg)
    sel, pts, conf = A.vggt_selection(sampler, scan, cfg.num_selected)
    assert pts.shape[:1] == conf.shape[:1] == (cfg.num_candidates,) and pts.shape[-1] == 3
    res = sampler.sample(scan.frames.rgb, cfg.num_selected)
    assert res.selected_candidates == sel.indices and res.candidates == scan.candidates.tolist()
    assert sorted(sel.greedy.order) == sel.indices


def test_analysis_tables_and_figures_are_written(scan, cfg, tmp_path):
    from spatial_mllm import viz
    from spatial_mllm.sampling import plots as P

    sampler = A.make_vggt_sampler(cfg)
    vg, vpts, _ = A.vggt_selection(sampler, scan, cfg.num_selected)
    an = A.analyse_scan(scan, cfg, vg)
    k = cfg.num_selected
    assert set(an.curves) == set(A.METHODS) and an.curves["optimal"].at(k) >= an.curves["space_aware"].at(k)
    curves = A.curves_table([an])
    assert len(curves) == 4 * k + len(cfg.optimal_k)
    at_k = A.coverage_at_k_table([an], k)
    assert list(at_k["scene"]) == [scan.scene_id, "mean"]
    assert at_k.loc[0, "space_aware/optimal"] <= 1.0 and at_k.loc[0, "optimal"] <= 1.0
    ratios = A.ratio_table([an])
    assert (ratios["ratio"] >= 1 - 1 / np.e).all() and (ratios["ratio"] <= 1).all()
    vt = A.vggt_table([an], [scan], k)
    assert len(vt) == 1 and len(vt.loc[0, "frames"]) == k and 0 < vt.loc[0, "exact_fraction"] <= 1
    assert vt.loc[0, "exact_greedy_fraction"] == an.curves["space_aware"].at(k) / an.curves["space_aware"].total
    times = A.time_positions_table([an], [scan], k)
    assert set(times["method"]) == set(A.METHODS) and all(len(f) == k for f in times["frames"])
    csv = A.save_table(at_k, tmp_path / "tables", "02_at_k")
    md = (tmp_path / "tables" / "02_at_k.md").read_text()
    assert csv.is_file() and md.startswith("| scene | voxels |") and md.count("\n") == 2 + len(at_k)

    pts, cols, to_cam = A.scan_point_cloud(scan, stride=2)
    assert pts.shape == cols.shape == to_cam.shape and (cols >= 0).all() and (cols <= 1).all()
    exact, _ = A.exact_point_maps(scan)
    chosen = an.selections["space_aware"][k]
    figs = {
        "02_coverage_vs_k": P.plot_coverage_vs_k(curves, k),
        "02_time_positions": P.plot_time_positions([an], [scan], k),
        "02_covered_voxels": P.plot_covered_voxel_maps(an, scan, k),
        "02_scene_3d": P.plot_scene_3d(pts, cols, scan.frames.extrinsics[scan.candidates],
                                       scan.frames.intrinsics[0], (cfg.width, cfg.height), chosen,
                                       to_camera=to_cam, frame_labels=scan.candidates[chosen],
                                       width=cfg.view_width, height=cfg.view_height),
        "02_point_maps": P.plot_point_maps_topdown(exact.numpy(), vpts.numpy(), [0, 12]),
    }
    for name, fig in figs.items():
        path = viz.save_figure(fig, tmp_path / "figures" / f"{name}.png")
        assert path.stat().st_size > 5000, name


def test_render_points_z_buffer():
    from spatial_mllm.sampling.plots import render_points

    K = np.array([[10.0, 0, 4.5], [0, 10.0, 4.5], [0, 0, 1]])
    E = np.concatenate([np.eye(3), np.zeros((3, 1))], 1)  # camera at the origin looking down +z
    pts = np.array([[0.0, 0, 2.0], [0.0, 0, 1.0], [0.0, 0, -1.0]])  # far red, near green, behind blue
    cols = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    img, depth = render_points(pts, cols, K, E, 10, 10, radius=0)
    assert np.allclose(img[4, 4], [0, 1, 0]) and depth[4, 4] == 1.0  # nearest wins; pixel (4.5 → 4)
    assert np.isinf(depth).sum() == 99 and np.allclose(img[0, 0], 1.0)  # background elsewhere


def test_compare_selection_small():
    d = toy_point_maps(n_frames=10, height=24, width=32, seed=0, noise=0.02)
    lines = []
    rows = compare_selection(d["world_points"], d["conf"], 4, repeats=1, official_repeats=1, log=lines.append)
    assert set(rows) == {"official", "ours"} and rows["ours"]["agrees_with_official"]
    assert rows["ours"]["indices"] == rows["official"]["indices"] and rows["ours"]["speedup_vs_official"] > 0
    assert any("same selection as official: True" in s for s in lines)
    table = A.benchmark_table(rows)
    assert list(table["method"]) == ["official", "ours"] and table["same_selection_as_official"].all()
