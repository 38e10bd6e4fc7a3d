"""VGGT: checkpoint layout, config, forward contract, lean modes, precision, loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spatial_mllm.models.vggt import VGGT, Aggregator, VGGTConfig
from spatial_mllm.models.vggt.aggregator import expand_frame_slots

torch.set_num_threads(1)

FIXTURE = Path(__file__).parent / "fixtures" / "vggt_1b_state_dict.tsv"


def read_listing() -> dict[str, tuple[list[int], str]]:
    rows = FIXTURE.read_text().splitlines()
    assert rows[0].split("\t") == ["key", "shape", "dtype"]
    out = {}
    for line in rows[1:]:
        key, shape, dtype = line.split("\t")
        out[key] = (json.loads(shape), dtype)
    return out


def numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@pytest.fixture(scope="module")
def tiny_model() -> VGGT:
    torch.manual_seed(0)
    model = VGGT(VGGTConfig.tiny()).eval()
    with torch.no_grad():  # trained-like special tokens: the two slots clearly differ (init is ~1e-6)
        model.aggregator.camera_token.normal_()
        model.aggregator.register_token.normal_()
    return model


def rand_images(B=1, S=3, H=28, W=42, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, S, 3, H, W, generator=g)


# ---------------------------------------------------------------------------------------- checkpoint
def test_meta_state_dict_matches_official_listing():
    listing = read_listing()
    assert len(listing) == 1797
    assert sum(numel(s) for s, _ in listing.values()) == 1_256_537_516
    assert {d for _, d in listing.values()} == {"float32"}
    ours_expected = {k: s for k, (s, _) in listing.items() if not k.startswith("track_head.")}
    assert len(listing) - len(ours_expected) == 394  # the track head, not implemented
    prefixes = {}
    for k in ours_expected:
        prefixes[k.split(".")[0]] = prefixes.get(k.split(".")[0], 0) + 1
    assert prefixes == {"aggregator": 1210, "camera_head": 69, "depth_head": 62, "point_head": 62}

    with torch.device("meta"):
        model = VGGT(VGGTConfig())
    sd = model.state_dict()
    assert sorted(sd) == sorted(ours_expected)
    assert {k: list(v.shape) for k, v in sd.items()} == ours_expected
    assert len(sd) == 1403
    assert sum(v.numel() for v in sd.values()) == sum(numel(s) for s in ours_expected.values()) == 1_190_596_120
    assert all(v.dtype == torch.float32 for v in sd.values())
    assert not dict(model.named_buffers())  # no buffers: the checkpoint stores none


def test_aggregator_only_state_dict_is_the_aggregator_subset():
    with torch.device("meta"):
        model = VGGT(VGGTConfig(enable_camera=False, enable_depth=False, enable_point=False))
    expected = {k for k in read_listing() if k.startswith("aggregator.")}
    assert set(model.state_dict()) == expected


# -------------------------------------------------------------------------------------------- config
def test_config_round_trip_and_validation():
    for cfg in (VGGTConfig(), VGGTConfig.tiny(), VGGTConfig.tiny(patch_embed="conv", enable_depth=False)):
        d = cfg.to_dict()
        assert VGGTConfig.from_dict(d).to_dict() == d
        assert VGGTConfig.from_dict(json.loads(cfg.to_json_string())).to_dict() == d
    cfg = VGGTConfig()
    assert (cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads) == (518, 14, 1024, 24, 16)
    assert cfg.dpt_intermediate_layer_idx == [4, 11, 17, 23] and cfg.patch_start_idx == 5
    assert set(VGGTConfig.field_help()) >= {"aa_order", "dpt_features", "enable_point", "rope_freq"}
    with pytest.raises(ValueError, match="patch_embed"):
        VGGTConfig(patch_embed="dinov2_vitx")
    with pytest.raises(ValueError, match="aa_block_size"):
        VGGTConfig(depth=24, aa_block_size=5)
    with pytest.raises(ValueError, match="out of range"):
        VGGTConfig.tiny(dpt_intermediate_layer_idx=[0, 1, 2, 9])


# ------------------------------------------------------------------------------------------- forward
def test_forward_shapes_and_value_ranges(tiny_model):
    images = rand_images(B=2, S=3)
    with torch.no_grad():
        out = tiny_model(images)
    B, S, H, W = 2, 3, 28, 42
    assert out["pose_enc"].shape == (B, S, 9)
    assert len(out["pose_enc_list"]) == 4 and all(p.shape == (B, S, 9) for p in out["pose_enc_list"])
    assert torch.equal(out["pose_enc"], out["pose_enc_list"][-1])
    assert out["depth"].shape == (B, S, H, W, 1) and out["depth_conf"].shape == (B, S, H, W)
    assert out["world_points"].shape == (B, S, H, W, 3) and out["world_points_conf"].shape == (B, S, H, W)
    assert torch.equal(out["images"], images)
    assert (out["depth"] > 0).all()  # exp activation
    assert (out["depth_conf"] > 1).all() and (out["world_points_conf"] > 1).all()  # expp1
    assert (out["pose_enc"][..., 7:] >= 0).all()  # ReLU on FoV
    # 4-D input = one sequence; train mode drops "images"
    with torch.no_grad():
        out4 = tiny_model(images[0])
    assert out4["depth"].shape == (1, S, H, W, 1)
    torch.testing.assert_close(out4["depth"][0], out["depth"][0], rtol=1e-5, atol=1e-6)
    tiny_model.train()
    try:
        with torch.no_grad():
            assert "images" not in tiny_model(images[:1])
    finally:
        tiny_model.eval()


def test_aggregator_tokens_layout(tiny_model):
    agg = tiny_model.aggregator
    with torch.no_grad():
        layers, psi = agg(rand_images(B=2, S=2, H=28, W=56))
    assert psi == 5 and len(layers) == 4
    assert all(t.shape == (2, 2, 5 + 2 * 4, 128) for t in layers)  # T = 5 + (28/14)(56/14), 2C = 128


def test_frame_zero_alone_gets_slot_zero(tiny_model):
    p = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    e = expand_frame_slots(p, B=2, S=4).reshape(2, 4, 3, 4)
    for b in range(2):
        assert torch.equal(e[b, 0], p[0, 0])
        for s in range(1, 4):
            assert torch.equal(e[b, s], p[0, 1])
    # end to end: identical frames → frames 1..S-1 agree exactly, frame 0 differs (it has slot 0)
    frame = rand_images(B=1, S=1)
    images = frame.expand(1, 3, 3, 28, 42).clone()
    with torch.no_grad():
        last = tiny_model.aggregator(images, keep_layers=[-1])[0][-1]  # [1, 3, T, 2C]
    torch.testing.assert_close(last[0, 1], last[0, 2], rtol=1e-5, atol=1e-5)
    assert (last[0, 0] - last[0, 1]).abs().max() > 1e-3
    # with slot 0 == slot 1 every frame is the same
    model = VGGT(VGGTConfig.tiny()).eval()
    model.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        model.aggregator.camera_token[:, 0] = model.aggregator.camera_token[:, 1]
        model.aggregator.register_token[:, 0] = model.aggregator.register_token[:, 1]
        last = model.aggregator(images, keep_layers=[-1])[0][-1]
    torch.testing.assert_close(last[0, 0], last[0, 1], rtol=1e-5, atol=1e-5)


def test_keep_layers_returns_the_same_tensors(tiny_model):
    images = rand_images(B=1, S=3)
    with torch.no_grad():
        full, _ = tiny_model.aggregator(images)
        lean, _ = tiny_model.aggregator(images, keep_layers=[1, -1])
    assert [t is None for t in lean] == [True, False, True, False]
    assert torch.equal(lean[1], full[1]) and torch.equal(lean[3], full[3])
    with pytest.raises(IndexError):
        tiny_model.aggregator(images, keep_layers=[4])
    # the model's lean path (only the layers heads read) equals heads run on all layers
    cfg = VGGTConfig.tiny(dpt_intermediate_layer_idx=[0, 1, 1, 2])
    model = VGGT(cfg).eval()
    assert model.needed_layers() == [0, 1, 2, 3]
    with torch.no_grad():
        out = model(images)
        layers, _ = model.aggregator(images)
        depth, _ = model.depth_head(layers, (28, 42))
        pose = model.camera_head(layers)[-1]
    assert torch.equal(out["depth"], depth) and torch.equal(out["pose_enc"], pose)


def test_bf16_autocast_agrees_with_fp32(tiny_model):
    images = rand_images(B=1, S=2)
    with torch.no_grad():
        ref, _ = tiny_model.aggregator(images, keep_layers=[-1])
        out_ref = tiny_model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lean, _ = tiny_model.aggregator(images, keep_layers=[-1])
            kept32, _ = tiny_model.aggregator(images, keep_layers=[-1], output_dtype=None)
            out_bf = tiny_model(images)
    assert lean[-1].dtype == torch.bfloat16  # lean storage in the compute dtype
    assert kept32[-1].dtype == torch.float32  # the reference's fp32 outputs on request
    rel = (lean[-1].float() - ref[-1]).norm() / ref[-1].norm()
    assert rel < 3e-2
    for key in ("depth", "world_points", "pose_enc"):
        assert out_bf[key].dtype == torch.float32  # heads run in fp32
        r = (out_bf[key] - out_ref[key]).norm() / out_ref[key].norm()
        assert r < 5e-2, key


def test_frame_chunked_dpt_equals_unchunked(tiny_model):
    images = rand_images(B=2, S=5)
    with torch.no_grad():
        layers, _ = tiny_model.aggregator(images)
        for head in (tiny_model.depth_head, tiny_model.point_head):
            v_all, c_all = head(layers, (28, 42), frames_chunk_size=None)
            v_ch, c_ch = head(layers, (28, 42), frames_chunk_size=2)
            torch.testing.assert_close(v_ch, v_all, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(c_ch, c_all, rtol=1e-5, atol=1e-6)


def test_conv_patch_embed_and_no_rope_variants():
    for cfg in (VGGTConfig.tiny(patch_embed="conv"), VGGTConfig.tiny(rope_freq=0, qk_norm=False)):
        model = VGGT(cfg).eval()
        with torch.no_grad():
            out = model(rand_images(S=2, H=28, W=28))
        assert out["world_points"].shape == (1, 2, 28, 28, 3)
    sd = VGGT(VGGTConfig.tiny(patch_embed="conv")).state_dict()
    assert {k for k in sd if k.startswith("aggregator.patch_embed.")} == {
        "aggregator.patch_embed.proj.weight", "aggregator.patch_embed.proj.bias"}


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = VGGT(VGGTConfig.tiny(enable_depth=False, enable_point=False)).train()
    images = rand_images(S=2)

    def grads():
        model.zero_grad()
        model(images)["pose_enc"].square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    ckpt = grads()
    model.gradient_checkpointing_disable()
    assert plain.keys() == ckpt.keys() and len(plain) > 50
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-4, atol=1e-6)
    assert "aggregator.patch_embed.mask_token" not in plain  # frozen, as upstream


# ------------------------------------------------------------------------------------------- loading
def _fake_official(model: VGGT) -> dict[str, torch.Tensor]:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["track_head.tracker.virual_tracks"] = torch.zeros(1, 4, 1, 8)
    sd["track_head.feature_extractor.norm.weight"] = torch.ones(8)
    return sd


def test_from_pretrained_local_folder(tmp_path, tiny_model):
    from safetensors.torch import save_file

    sd = _fake_official(tiny_model)
    cfg = tiny_model.config
    # our own save_pretrained round trip
    folder = tiny_model.save_pretrained(tmp_path / "ours")
    loaded = VGGT.from_pretrained(folder)
    assert loaded.config.to_dict() == cfg.to_dict() and not loaded.training
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    images = rand_images(S=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images)["world_points"], tiny_model(images)["world_points"])

    # an "official" folder: safetensors with track_head tensors and a hub-mixin style config.json
    off = tmp_path / "official"
    off.mkdir()
    save_file(sd, str(off / "model.safetensors"))
    (off / "config.json").write_text(json.dumps({"img_size": 28, "patch_size": 14, "embed_dim": 64}))
    m = VGGT.from_pretrained(off, config=cfg)
    assert torch.equal(m.aggregator.camera_token, tiny_model.aggregator.camera_token)
    # the hub-mixin config.json alone gives the right small fields when overrides complete it
    m2 = VGGT.from_pretrained(off, **{k: v for k, v in cfg.to_dict().items() if k in VGGTConfig.field_help()})
    assert m2.config.embed_dim == 64

    # model.pt (weights_only) fallback; aggregator-only build drops head keys
    pt = tmp_path / "pt"
    pt.mkdir()
    torch.save(sd, pt / "model.pt")
    enc = VGGT.from_pretrained(pt, config=cfg, enable_camera=False, enable_depth=False, enable_point=False)
    assert enc.camera_head is None and enc.depth_head is None and enc.point_head is None
    with torch.no_grad():
        layers, psi = enc.aggregator(images, keep_layers=[-1])
        ref, _ = tiny_model.aggregator(images, keep_layers=[-1])
    assert psi == 5 and torch.equal(layers[-1], ref[-1])

    # a prefixed checkpoint (Spatial-MLLM v1.1 layout)
    dropped = VGGT(cfg).load_official_state_dict(
        {f"spatial_encoder.vggt_model.{k}": v for k, v in sd.items()} | {"connector.x": torch.zeros(1)},
        prefix="spatial_encoder.vggt_model.")
    assert dropped == ["track_head.feature_extractor.norm.weight", "track_head.tracker.virual_tracks"]


def test_loading_is_strict_and_names_keys(tiny_model):
    sd = _fake_official(tiny_model)
    model = VGGT(tiny_model.config)
    missing = {k: v for k, v in sd.items() if k != "camera_head.embed_pose.weight"}
    with pytest.raises(KeyError, match=r"missing keys \[camera_head\.embed_pose\.weight\]"):
        model.load_official_state_dict(missing)
    extra = dict(sd, **{"aggregator.pose_token": torch.zeros(1)})  # the old internal variant's name
    with pytest.raises(KeyError, match=r"unexpected keys \[aggregator\.pose_token\]"):
        model.load_official_state_dict(extra)
    bad = dict(sd, **{"aggregator.camera_token": torch.zeros(1, 2, 1, 32)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_official_state_dict(bad)
    with pytest.raises(FileNotFoundError):
        VGGT.from_pretrained(Path(__file__).parent / "fixtures", config=tiny_model.config)


def test_aggregator_class_builds_alone():
    agg = Aggregator(VGGTConfig.tiny())
    layers, psi = agg(rand_images(S=2)[0], keep_layers=[-1])  # 4-D input
    assert layers[-1].shape == (1, 2, 5 + 6, 128) and psi == 5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_lean_memory_and_agreement(tiny_model):
    model = VGGT(tiny_model.config).cuda().eval()
    model.load_state_dict(tiny_model.state_dict())
    images = rand_images(B=1, S=6, H=56, W=70).cuda()
    with torch.no_grad():
        ref = model(images)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(images)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            lean, _ = model.aggregator(images, keep_layers=[-1])
            lean_peak = torch.cuda.max_memory_allocated() - base
            del lean
            torch.cuda.reset_peak_memory_stats()
            full, _ = model.aggregator(images, keep_layers=None, output_dtype=torch.float32)
            full_peak = torch.cuda.max_memory_allocated() - base
    assert all(t.dtype == torch.float32 for t in full) and lean_peak < full_peak
    for key in ("depth", "world_points", "pose_enc"):
        assert out[key].dtype == torch.float32
        r = (out[key] - ref[key]).norm() / ref[key].norm()
        assert r < 5e-2, key


def test_from_pretrained_hub_falls_back_to_model_pt(tmp_path, tiny_model, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    torch.save(_fake_official(tiny_model), tmp_path / "model.pt")
    asked = []

    def fake_download(repo_id, filename, **kwargs):  # the hub, offline: only model.pt exists
        asked.append(filename)
        if filename != "model.pt":
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    m = VGGT.from_pretrained("facebook/VGGT-1B", config=tiny_model.config)
    assert asked == ["model.safetensors", "model.pt"]
    assert not m.aggregator.patch_embed.mask_token.requires_grad
    assert all(p.device.type == "cpu" for p in m.parameters())
    assert torch.equal(m.point_head.norm.weight, tiny_model.point_head.norm.weight)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo_id, filename, **kw: (_ for _ in ()).throw(EntryNotFoundError("offline")))
    with pytest.raises(FileNotFoundError, match="offline"):
        VGGT.from_pretrained("facebook/VGGT-1B", config=tiny_model.config)
