"""Geometry / semantic pretraining: VGGT's losses on hand-computed cases, target normalisation, metrics,
a few training steps, and checkpoints that the model loaders accept."""

from __future__ import annotations

import json
import math

import pytest
import torch

from spatial_mllm.models.vggt import VGGT
from spatial_mllm.models.vggt.pose_enc import quat_to_mat
from spatial_mllm.train.losses import camera_loss, gradient_loss, normalize_sequence, regression_loss
from spatial_mllm.train.pretrain import (
    SEMANTIC_CLASSES,
    GeometryPretrainConfig,
    SemanticPretrainConfig,
    build_tiny_vggt,
    depth_metrics,
    geometry_batch,
    geometry_loss,
    patch_centres,
    patch_labels,
    patch_presence,
    pretrain_vggt,
    pretrain_vit,
    relative_pose_errors,
    render_scans,
)


def _rot(axis: str, deg: float) -> torch.Tensor:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return {"z": torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]),
            "x": torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])}[axis]


def _random_cameras(S: int, gen) -> torch.Tensor:
    q = torch.randn(S, 4, generator=gen)
    return torch.cat([quat_to_mat(q / q.norm(dim=-1, keepdim=True)), torch.randn(S, 3, 1, generator=gen)], -1)


@pytest.fixture(scope="module")
def scans():
    return render_scans(2, 0, seed=3, width=42, height=28, num_frames=6)


# ------------------------------------------------------------------------------------------ normalisation
def test_normalisation_frame0_identity_unit_scale_and_scale_invariance(scans):
    b = geometry_batch(scans, [(0, 0), (1, 1)], seq_len=3, stride=2)
    E0 = b["extrinsics"][:, 0]
    assert torch.allclose(E0, torch.eye(3, 4).expand_as(E0), atol=1e-5)
    dist = b["world_points"].norm(dim=-1)
    m = b["mask"]
    for n in range(2):
        assert dist[n][m[n]].mean().item() == pytest.approx(1.0, rel=1e-4)
    # frame-0 points are frame-0 camera points: z equals the normalised depth
    assert torch.allclose(b["world_points"][:, 0, ..., 2][m[:, 0]], b["depth"][:, 0][m[:, 0]], atol=1e-4)

    # the same scene in another world frame and 3x larger gives identical normalised targets
    S_, s = scans[0], 3.0
    T = torch.eye(4)
    T[:3, :3], T[:3, 3] = _rot("z", 40.0), torch.tensor([1.0, -2.0, 0.5])  # new-world-from-old-world
    E = S_.extrinsics[:3][None]  # [1, 3, 3, 4]
    pts = S_.world_points[:3][None]
    E_h = torch.cat([E, torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(1, 3, 1, 4)], -2)
    E2 = (E_h @ torch.linalg.inv(T))[..., :3, :]
    E2[..., 3] *= s
    pts2 = (pts @ T[:3, :3].T + T[:3, 3]) * s
    a = normalize_sequence(E, S_.depth[:3][None], pts, S_.depth[:3][None] > 0)
    c = normalize_sequence(E2, S_.depth[:3][None] * s, pts2, S_.depth[:3][None] > 0)
    assert c["scale"].item() == pytest.approx(s * a["scale"].item(), rel=1e-4)
    for k in ("extrinsics", "depth", "world_points"):
        assert torch.allclose(a[k], c[k], atol=1e-4), k


# ------------------------------------------------------------------------------------------ losses
def test_camera_loss_hand_cases():
    gt = torch.randn(2, 3, 9)
    zero = camera_loss([gt.clone(), gt.clone()], gt)
    assert all(v.item() == 0.0 for v in zero.values())
    # translation off by 1 in all three components at both iterations; gamma 0.5: (0.5·1 + 1·1) / 2
    pred = gt.clone()
    pred[..., :3] += 1.0
    out = camera_loss([pred, pred], gt, gamma=0.5)
    assert out["loss_T"].item() == pytest.approx(0.75)
    assert out["loss_R"].item() == 0.0 and out["loss_camera"].item() == pytest.approx(0.75)
    # FoV off by 2 at the last iteration only: 1·2 / 2 = 1, weighted 0.5 in the total
    pred2 = gt.clone()
    pred2[..., 7:] += 2.0
    out2 = camera_loss([gt, pred2], gt, gamma=0.5)
    assert out2["loss_FL"].item() == pytest.approx(1.0) and out2["loss_camera"].item() == pytest.approx(0.5)
    # huber: 0.5·d² for |d| < 1
    pred3 = gt.clone()
    pred3[..., 3:7] += 0.5
    assert camera_loss([pred3], gt, loss_type="huber")["loss_R"].item() == pytest.approx(0.125)


def test_regression_loss_perfect_conf_one_is_zero_and_alpha_log_term():
    gt = torch.rand(1, 2, 8, 8, 3) + 0.5
    mask = torch.ones(1, 2, 8, 8, dtype=torch.bool)
    out = regression_loss(gt.clone(), gt, mask, torch.ones(1, 2, 8, 8))
    assert all(v.item() == pytest.approx(0.0, abs=1e-7) for v in out.values())
    # perfect prediction with conf = e: only -alpha·log(conf) = -0.2 remains in the conf term
    out = regression_loss(gt.clone(), gt, mask, torch.full((1, 2, 8, 8), math.e), alpha=0.2, gradient=False)
    assert out["loss_conf"].item() == pytest.approx(-0.2, abs=1e-6) and out["loss_reg"].item() == 0.0


def test_regression_loss_constant_offset_has_no_gradient_term():
    gt = torch.rand(1, 1, 6, 6, 1)
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool)
    out = regression_loss(gt + 0.3, gt, mask, torch.full((1, 1, 6, 6), 2.0), alpha=0.0)
    assert out["loss_reg"].item() == pytest.approx(0.3, abs=1e-6)
    assert out["loss_conf"].item() == pytest.approx(0.6, abs=1e-6)  # gamma·0.3·conf 2
    assert out["loss_grad"].item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_loss_hand_case():
    pred = torch.tensor([0.0, 1.0, 3.0]).reshape(1, 1, 3, 1)  # a 1x3 image
    gt = torch.zeros_like(pred)
    mask = torch.ones(1, 1, 3, dtype=torch.bool)
    # diff = [0, 1, 3] → |Δx| = [1, 2], summed 3, over 3 valid pixels
    assert gradient_loss(pred, gt, mask).item() == pytest.approx(1.0)
    # conf 2, alpha 0: each |Δx| doubled
    assert gradient_loss(pred, gt, mask, torch.full((1, 1, 3), 2.0), alpha=0.0).item() == pytest.approx(2.0)
    # a masked middle pixel breaks both differences: 0
    mask2 = torch.tensor([[[True, False, True]]])
    assert gradient_loss(pred, gt, mask2).item() == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------ metrics
def test_depth_metrics():
    gt = torch.rand(3, 5, 7) + 0.5
    m = torch.ones_like(gt, dtype=torch.bool)
    assert depth_metrics(gt.clone(), gt, m) == {"abs_rel": pytest.approx(0.0, abs=1e-12), "delta1": 1.0}
    assert depth_metrics(2.7 * gt, gt, m)["abs_rel"] == pytest.approx(0.0, abs=1e-6)  # median scaling
    no = depth_metrics(2 * gt, gt, m, align=False)
    assert no["abs_rel"] == pytest.approx(1.0) and no["delta1"] == 0.0


def test_relative_pose_errors():
    gen = torch.Generator().manual_seed(0)
    E = _random_cameras(4, gen)
    rot, tra = relative_pose_errors(E, E)
    assert rot.shape == (6,) and rot.abs().max() < 1e-2 and tra.abs().max() < 1e-2
    # a different world frame and scale for the prediction changes nothing
    T = torch.eye(4)
    T[:3, :3], T[:3, 3] = _rot("x", 25.0), torch.tensor([0.3, 2.0, -1.0])
    E2 = torch.cat([E, torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(4, 1, 4)], -2) @ T
    E2 = E2[:, :3].clone()
    E2[:, :, 3] *= 0.2
    rot, tra = relative_pose_errors(E2, E)
    assert rot.abs().max() < 1e-2 and tra.abs().max() < 1e-2
    # rotating camera 1 by 10° about its own z axis: pairs (0,1), (1,2), (1,3) get 10° rotation error
    E3 = E.clone()
    E3[1, :, :3] = _rot("z", 10.0) @ E[1, :, :3]
    E3[1, :, 3] = _rot("z", 10.0) @ E[1, :, 3]  # same camera centre
    rot, _ = relative_pose_errors(E3, E)
    assert rot.tolist() == pytest.approx([10.0, 0.0, 0.0, 10.0, 10.0, 0.0], abs=1e-3)


def test_patch_labels_majority():
    lab = torch.zeros(1, 28, 56, dtype=torch.long)
    lab[0, :, :20] = 3  # left block: 20 of 28 columns are class 3
    lab[0, :10, 28:] = 5  # right block: 10 of 28 rows are class 5 → background wins
    assert patch_labels(lab).tolist() == [[[3, 0]]]


def test_patch_presence_counts_small_objects_per_block():
    """Unlike the majority label, 'presence' marks every category covering >= min_pixels of a block."""
    lab = torch.zeros(1, 28, 56, dtype=torch.long)
    lab[0, :, :20] = 3  # left block: class 3 (560 px) and a 4x4 class-7 object
    lab[0, :4, 24:28] = 7
    lab[0, :10, 28:] = 5  # right block: 280 px of class 5, background is the majority
    lab[0, 27, 55] = 2  # 1 px of class 2: under the threshold
    pres = patch_presence(lab, min_pixels=16)
    assert pres.shape == (1, 1, 2, len(SEMANTIC_CLASSES) - 1)
    assert torch.nonzero(pres[0, 0, 0]).flatten().tolist() == [2, 6]  # classes 3 and 7 (background dropped)
    assert torch.nonzero(pres[0, 0, 1]).flatten().tolist() == [4]
    assert patch_presence(lab, min_pixels=17)[0, 0, 0].nonzero().flatten().tolist() == [2]
    assert patch_labels(lab).tolist() == [[[3, 0]]]


def test_patch_centres_give_each_visible_instance_one_block():
    """Two chairs side by side light the same presence blocks as one wide chair; their centres mark one block
    each, so the marked blocks count the instances; an instance under centre_min_pixels marks none."""
    ids = torch.zeros(2, 28, 84, dtype=torch.long)
    ids[0, :, 0:20] = 1  # frame 0: chair 1 in block 0, chair 2 centred in block 1 (cols 21..48, mean 34.5)
    ids[0, :, 21:49] = 2
    ids[0, 0:4, 80:84] = 3  # 16 px lamp: under 30 px
    ids[1, :, 0:49] = 1  # frame 1: one wide chair over the same blocks (mean column 24 -> block 0)
    cat = {1: 3, 2: 3, 3: 5}
    labels = torch.zeros_like(ids)
    for i, c in cat.items():
        labels[ids == i] = c
    cen = patch_centres(ids, labels, min_pixels=30)
    assert cen.shape == (2, 1, 3, len(SEMANTIC_CLASSES) - 1)
    assert cen[0, 0, :, 2].tolist() == [1.0, 1.0, 0.0] and cen[1, 0, :, 2].tolist() == [1.0, 0.0, 0.0]
    assert cen[..., 4].sum() == 0  # the lamp is too small
    assert patch_centres(ids, labels, min_pixels=10)[0, 0, 2, 4] == 1.0
    # presence cannot tell the two frames apart: chair in blocks 0 and 1 both times
    assert torch.equal(patch_presence(labels, 16)[0, ..., 2], patch_presence(labels, 16)[1, ..., 2])
    assert cen.sum((1, 2))[:, 2].tolist() == [2.0, 1.0]  # per frame: instances of the category


def test_presence_target_trains_a_per_slot_multilabel_head(tmp_path):
    """target='presence': the head has one logit per object category and temporal slot, trains on video
    pairs and still frames, and the run reports presence precision / recall against the all-absent chance."""
    from safetensors.torch import load_file

    with pytest.raises(ValueError, match="target"):
        SemanticPretrainConfig(target="soft")
    with pytest.raises(ValueError, match="presence_min_pixels"):
        SemanticPretrainConfig(presence_min_pixels=0)
    for pairs in (0, 1):
        scfg = SemanticPretrainConfig(out_dir=str(tmp_path / f"q{pairs}"), steps=3, batch_size=2,
                                      num_train_scenes=1, num_eval_scenes=1, frames_per_scene=2, width=56,
                                      height=56, log_every=1, video_pairs=pairs, target="presence")
        out = pretrain_vit(scfg, log=None)
        head = load_file(str(out / "semantic_head.safetensors"))
        assert head["weight"].shape[0] == 2 * (len(SEMANTIC_CLASSES) - 1)
        held = json.loads((out / "run.json").read_text())["metrics"]["held_out"]
        assert {"accuracy", "chance_absent", "precision", "recall", "f1"} <= held.keys()
        assert 0.0 <= held["accuracy"] <= 1.0 and 0.5 < held["chance_absent"] <= 1.0
        hist = json.loads((out / "history.json").read_text())
        assert hist[-1]["loss"] < hist[0]["loss"]
    with pytest.raises(ValueError, match="centre_min_pixels"):
        SemanticPretrainConfig(centre_min_pixels=0)
    scfg = SemanticPretrainConfig(out_dir=str(tmp_path / "qc"), steps=3, batch_size=2, num_train_scenes=1,
                                  num_eval_scenes=1, frames_per_scene=2, width=56, height=56, log_every=1,
                                  video_pairs=1, target="presence_centres")
    out = pretrain_vit(scfg, log=None)
    assert load_file(str(out / "semantic_head.safetensors"))["weight"].shape[0] == 4 * (len(SEMANTIC_CLASSES) - 1)
    held = json.loads((out / "run.json").read_text())["metrics"]["held_out"]
    assert {"f1", "centres", "frame_count_accuracy", "frame_count_chance"} <= held.keys()
    assert 0.0 <= held["frame_count_accuracy"] <= 1.0 and {"precision", "recall"} <= held["centres"].keys()


def test_config_validation():
    with pytest.raises(ValueError, match="multiples of 14"):
        GeometryPretrainConfig(width=80)
    with pytest.raises(ValueError, match="spans"):
        GeometryPretrainConfig(frames_per_scene=4, seq_len=4, frame_stride=2)
    with pytest.raises(ValueError, match="every head"):
        GeometryPretrainConfig(vggt_overrides={"enable_depth": False})
    with pytest.raises(ValueError, match="multiples of 28"):
        SemanticPretrainConfig(width=84, height=42)


# ------------------------------------------------------------------------------------------ training
def test_few_steps_lower_the_loss_on_a_fixed_batch(scans):
    torch.manual_seed(0)
    cfg = GeometryPretrainConfig(seq_len=3, frame_stride=2, frames_per_scene=6, width=42, height=28)
    vggt = build_tiny_vggt(seed=0).train()
    batch = geometry_batch(scans, [(0, 0), (1, 0)], 3, 2)
    opt = torch.optim.AdamW(vggt.parameters(), lr=2e-3)
    before = {k: p.detach().clone() for k, p in vggt.named_parameters()}
    losses = []
    for _ in range(8):
        loss = geometry_loss(vggt(batch["images"]), batch, cfg)["objective"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    for head in ("camera_head", "depth_head", "point_head", "aggregator"):
        assert any(not torch.equal(p, before[k]) for k, p in vggt.named_parameters() if k.startswith(head)), head


def test_checkpoints_reload_and_fit_the_model_loader(tmp_path):
    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration

    gcfg = GeometryPretrainConfig(out_dir=str(tmp_path / "vggt"), steps=2, batch_size=1, num_train_scenes=1,
                                  num_eval_scenes=1, frames_per_scene=4, seq_len=2, frame_stride=1, width=42,
                                  height=28, eval_sequences_per_scene=1, log_every=1)
    vdir = pretrain_vggt(gcfg, log=None)
    assert (vdir / "run.json").exists()
    trained = VGGT.from_pretrained(vdir)
    x = torch.rand(1, 2, 3, 28, 42)
    ref = build_tiny_vggt().eval()  # random init differs from the trained weights
    out, out_ref = trained(x), ref(x)
    assert not torch.allclose(out["depth"], out_ref["depth"])
    again = VGGT.from_pretrained(vdir)(x)
    for k in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"):
        assert torch.equal(out[k], again[k]), k

    scfg = SemanticPretrainConfig(out_dir=str(tmp_path / "qwen"), steps=2, batch_size=2, num_train_scenes=1,
                                  num_eval_scenes=1, frames_per_scene=2, width=56, height=56, log_every=1)
    qdir = pretrain_vit(scfg, log=None)
    assert (qdir / "semantic_head.safetensors").exists()
    run = json.loads((qdir / "run.json").read_text())
    assert run["classes"] == list(SEMANTIC_CLASSES)
    assert 0.0 <= run["metrics"]["held_out"]["accuracy"] <= 1.0
    model = SpatialMLLMForConditionalGeneration.from_qwen_and_vggt(qdir, vdir)
    vis = dict(model.model.visual.state_dict())
    from transformers import Qwen2_5_VLForConditionalGeneration

    q = Qwen2_5_VLForConditionalGeneration.from_pretrained(qdir)
    assert all(torch.equal(v, q.model.visual.state_dict()[k]) for k, v in vis.items())
    agg = trained.aggregator.state_dict()
    loaded = model.spatial_encoder.vggt_model.aggregator.state_dict()
    assert agg.keys() == loaded.keys() and all(torch.equal(agg[k], loaded[k]) for k in agg)


def test_video_pairs_match_qwen_video_patches_and_train_a_wider_vit(tmp_path):
    """The ViT's video tokens mix two different frames per temporal patch: pretraining on frame pairs builds
    exactly the patches Qwen's video processor makes, and vision_overrides size the ViT."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLVideoProcessor

    from spatial_mllm.train.pretrain import _qwen_pixels, _video_pair

    a, b = torch.rand(1, 3, 56, 84), torch.rand(1, 3, 56, 84)
    (pa, grid), (pb, _) = _qwen_pixels(a), _qwen_pixels(b)
    frames = torch.cat([(a * 255).round(), (b * 255).round()]).to(torch.uint8)  # [2, 3, H, W]
    ref = Qwen2VLVideoProcessor()(videos=[frames], return_tensors="pt", do_resize=False, do_sample_frames=False)
    assert torch.equal(ref["video_grid_thw"], grid)
    torch.testing.assert_close(_video_pair(pa, pb), ref["pixel_values_videos"], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="video_pairs"):
        SemanticPretrainConfig(frames_per_scene=4, video_pairs=4)
    scfg = SemanticPretrainConfig(out_dir=str(tmp_path / "qwen"), steps=2, batch_size=2, num_train_scenes=1,
                                  num_eval_scenes=1, frames_per_scene=3, width=56, height=56, log_every=1,
                                  video_pairs=2, vision_overrides={"hidden_size": 48, "depth": 3})
    q = Qwen2_5_VLForConditionalGeneration.from_pretrained(pretrain_vit(scfg, log=None))
    assert q.config.vision_config.hidden_size == 48 and q.config.vision_config.depth == 3
    assert q.config.vision_config.out_hidden_size == q.config.text_config.hidden_size


def test_llm_init_travels_with_the_vit_checkpoint(tmp_path):
    """llm_init='width_scaled' sets the init of the untrained LLM saved with the pretrained ViT, and the
    mini study's per-seed copies re-draw that LLM with the same init (the ViT copied unchanged)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from spatial_mllm.experiments.mini_study import _qwen_for_seed

    with pytest.raises(ValueError, match="llm_init"):
        SemanticPretrainConfig(llm_init="xavier")
    scfg = SemanticPretrainConfig(out_dir=str(tmp_path / "qwen"), steps=1, batch_size=2, num_train_scenes=1,
                                  num_eval_scenes=0, frames_per_scene=2, width=56, height=56, log_every=1,
                                  llm_init="width_scaled")
    src = pretrain_vit(scfg, log=None)
    _qwen_for_seed(src, tmp_path / "s5", 5, {}, {}, llm_init="width_scaled")
    a = Qwen2_5_VLForConditionalGeneration.from_pretrained(src)
    b = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "s5")
    for m in (a, b):
        assert abs(float(m.get_input_embeddings().weight.std()) - 1.0) < 0.05
    assert not torch.equal(a.get_input_embeddings().weight, b.get_input_embeddings().weight)
    va, vb = a.model.visual.state_dict(), b.model.visual.state_dict()
    assert all(torch.equal(va[k], vb[k]) for k in va)
