"""Shareable checkpoints (spatial_mllm.models.hub): the Hub-ready save (card, generation config, processor),
the official v1.1 export and its round trip back into our model, the official config's key set."""

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file

from spatial_mllm.cli import main as cli_main
from spatial_mllm.models.checkpoint_keys import detect_layout, list_checkpoint_keys, rename_key
from spatial_mllm.models.configuration import SpatialMLLMConfig
from spatial_mllm.models.export import official_key, official_v11_config, official_v11_state_dict
from spatial_mllm.models.hub import write_model_card
from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
from spatial_mllm.models.processing import SpatialMLLMProcessor
from spatial_mllm.models.tiny import qwen25_vl_3b_config, tiny_model
from spatial_mllm.models.vggt import VGGT, VGGTConfig

FIX = Path(__file__).parent / "fixtures"
# config.json of the official v1.1 release as the official class writes it; its "_source" says how it was made
OFFICIAL = json.loads((FIX / "official_v11_config.json").read_text())["config"]

RUN = {  # a run.json as spatial_mllm.config.RunRecord writes it (trimmed)
    "params": {"model_name_or_path": "Qwen/Qwen2.5-VL-3B-Instruct", "vggt_name_or_path": "facebook/VGGT-1B",
               "train_mix": ["spatial_mllm_mix_133k", "route_plan_scannet_2k"], "learning_rate": 7e-06,
               "mm_projector_lr": 2e-05, "global_batch_size": 48, "num_frames": 16},
    "seed": 0, "git_sha": "0123abc", "versions": {"spatial_mllm": "0.1.0", "transformers": "5.24.0"},
    "start_time": "2026-01-01T00:00:00+00:00", "end_time": "2026-01-02T00:00:00+00:00", "status": "ok",
    "stage": "sft",
}
SCORES = {"per_task": {"object_counting": 61.25, "route_planning": 33.5}, "overall_macro": 47.125,
          "overall_micro": 48.375, "num_questions": 5130}


def _batch(proc):
    rng = np.random.default_rng(3)
    video = list((rng.random((4, 56, 84, 3)) * 255).astype(np.uint8))
    return proc([proc.build_prompt("Where is the lamp?"), proc.build_prompt("How many chairs?")],
                videos=[video, video])


def _logits(model, batch):
    with torch.no_grad():
        return model.eval()(**batch).logits


def _keys(d: dict) -> dict:
    """Top-level keys → sorted sub-keys of nested mappings (None for plain values)."""
    return {k: sorted(v) if isinstance(v, dict) else None for k, v in d.items()}


@pytest.fixture(scope="module")
def saved(tok, proc, tmp_path_factory):
    """A tiny model saved with its processor, a run record and scores (the eval folder has its run.json)."""
    root = tmp_path_factory.mktemp("export")
    eval_dir = root / "eval" / "vsibench_sft"
    eval_dir.mkdir(parents=True)
    (eval_dir / "scores.json").write_text(json.dumps(SCORES))
    (eval_dir / "run.json").write_text(json.dumps({"params": {
        "benchmark": "vsibench", "source": "nyu-visionx/VSI-Bench", "num_frames": 16, "decoding": "official"}}))
    model = tiny_model(tok, seed=1)
    model.save_pretrained(root / "ours", processor=proc, run_info=RUN, scores={"VSI-Bench": eval_dir})
    return root, model


def test_save_pretrained_writes_a_hub_model_repo(saved, proc):
    root, model = saved
    folder = root / "ours"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "README.md", "tokenizer.json",
            "tokenizer_config.json"} <= names
    card = ModelCard.load(folder / "README.md")  # huggingface_hub parses the YAML front matter
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "video-text-to-text"
    assert meta["base_model"] == ["Qwen/Qwen2.5-VL-3B-Instruct", "facebook/VGGT-1B"]  # from run.json's params
    assert meta["license"] == "other" and "Qwen Research License" in card.text  # the base models' terms
    assert set(meta["datasets"]) == {"Diankun/Spatial-MLLM-Data", "nyu-visionx/VSI-Bench"}
    assert "spatial-mllm" in meta["tags"]
    text = card.text
    # the recipe from run.json, the scores from scores.json (and how they were scored), citations
    assert "## Training recipe" in text and "`learning_rate` | 7e-06" in text and "0123abc" in text
    assert "## Evaluation" in text and "| overall (question mean, the paper's style) | 48.38 |" in text
    assert "| object_counting | 61.25 |" in text and "decoding `official`" in text
    for cite in ("2505.23747", "2502.13923", "VGGT: Visual Geometry Grounded Transformer"):
        assert cite in text
    assert "spatial-mllm ask --model" in text and "SpatialMLLMProcessor.from_pretrained" in text


def test_generation_config_is_the_paper_decoding(saved):
    from transformers import GenerationConfig

    from spatial_mllm.eval.vsibench import DECODINGS, OFFICIAL_MAX_NEW_TOKENS

    root, _ = saved
    gen = GenerationConfig.from_pretrained(root / "ours")
    # official evaluation (master eval_vsibench.py): do_sample, temperature 0.1, top_p 0.001, 1024 new tokens
    assert (gen.do_sample, gen.temperature, gen.top_p, gen.max_new_tokens) == (True, 0.1, 0.001, 1024)
    assert {k: getattr(gen, k) for k in DECODINGS["official"]} == DECODINGS["official"]
    assert gen.max_new_tokens == OFFICIAL_MAX_NEW_TOKENS["vsibench"]
    loaded = SpatialMLLMForConditionalGeneration.from_pretrained(root / "ours")
    assert loaded.generation_config.top_p == 0.001 and loaded.generation_config.do_sample


def test_processor_loads_back(saved, proc):
    root, _ = saved
    back = SpatialMLLMProcessor.from_pretrained(root / "ours", min_pixels=proc.min_pixels,
                                                max_pixels=proc.max_pixels, num_frames=proc.num_frames)
    a, b = _batch(proc), _batch(back)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])


def test_save_pretrained_without_run_info_still_works(tok, proc, tmp_path):
    model = tiny_model(tok, seed=2)
    model.save_pretrained(tmp_path)  # the plain transformers call (what Trainer.save_model does)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.license == "apache-2.0" and "base_model" not in card.data.to_dict()  # random init
    assert "## Training recipe" not in card.text and "## Evaluation" not in card.text
    loaded = SpatialMLLMForConditionalGeneration.from_pretrained(tmp_path)  # strict
    batch = _batch(proc)
    assert torch.equal(_logits(loaded, batch), _logits(model, batch))
    model.save_pretrained(tmp_path / "bare", model_card=False)
    assert not (tmp_path / "bare" / "README.md").exists()


def test_official_v11_export_round_trip_gives_identical_logits(saved, proc, tmp_path, capsys):
    root, model = saved
    dst = tmp_path / "official"
    scores = f"VSI-Bench={root / 'eval' / 'vsibench_sft'}"
    assert cli_main(["export", "--layout", "official-v1.1", str(root / "ours"), str(dst), "--scores", scores]) == 0
    assert "wrote official-v1.1 checkpoint" in capsys.readouterr().out
    keys = list_checkpoint_keys(dst)
    assert detect_layout(keys) == "v1.1"
    assert any(k.startswith("visual.") for k in keys) and any(k.startswith("model.layers.") for k in keys)
    assert not any(k.startswith(("model.visual.", "model.language_model.")) for k in keys)
    loaded = SpatialMLLMForConditionalGeneration.from_pretrained(dst)  # strict: any missing tensor raises
    batch = _batch(proc)
    assert torch.equal(_logits(loaded, batch), _logits(model, batch))
    # its processor (4.51's files: preprocessor_config.json, no nested processor_config.json) loads back
    assert (dst / "preprocessor_config.json").is_file() and not (dst / "processor_config.json").exists()
    back = SpatialMLLMProcessor.from_pretrained(dst, min_pixels=proc.min_pixels, max_pixels=proc.max_pixels,
                                                num_frames=proc.num_frames)
    assert torch.equal(_batch(back)["input_ids"], batch["input_ids"])
    card = ModelCard.load(dst / "README.md")
    assert "official v1.1 layout" in card.text and "track_head" in card.text  # says which heads are absent
    assert "## Training recipe" in card.text  # the source's run.json travels with it
    assert "| overall (question mean, the paper's style) | 48.38 |" in card.text  # --scores


def test_exported_config_has_the_official_keys(saved, tmp_path):
    from spatial_mllm.models.export import export_checkpoint

    root, _ = saved

    dst = export_checkpoint(root / "ours", tmp_path / "official", "official-v1.1")
    cfg = json.loads((dst / "config.json").read_text())
    ours, ref = _keys(cfg), _keys(OFFICIAL)
    assert set(ours) == set(ref)
    for k in ("vision_config", "connector_config", "rope_scaling"):
        assert ours[k] == ref[k], k
    # the tiny VGGT is not VGGT-1B: its sizes ride along as extra spatial_config keys (our loader reads them,
    # the official VGGTSpatialEncoderConfig ignores them); the official ones are all there
    assert set(ref["spatial_config"]) <= set(ours["spatial_config"])
    assert set(ours["spatial_config"]) - set(ref["spatial_config"]) <= set(VGGTConfig.field_help())
    assert cfg["model_type"] == "spatial-mllm" and cfg["architectures"] == ["SpatialMLLMForConditionalGeneration"]
    assert cfg["connector_config"] == {"connector_type": "mlp_add", "spatial_embeds_layer_idx": -1}


def test_official_config_round_trips_through_ours():
    """official config.json → our SpatialMLLMConfig → official_v11_config: the same file, key for key and value
    for value, except sliding_window (transformers 5 drops it when sliding windows are off; 4.51 ignores it
    then). A 3B-shaped config of ours gives the official key set at every level."""
    cfg = SpatialMLLMConfig.from_dict(copy.deepcopy(OFFICIAL))  # from_dict edits nested dicts in place
    out = official_v11_config(cfg, dtype="bfloat16")
    assert {k for k in set(out) | set(OFFICIAL) if out.get(k) != OFFICIAL.get(k)} == {"sliding_window"}
    assert out["sliding_window"] is None and not out["use_sliding_window"]
    assert _keys(official_v11_config(qwen25_vl_3b_config())) == _keys(OFFICIAL)
    with pytest.raises(ValueError, match="mlp_add"):
        official_v11_config(qwen25_vl_3b_config(connector="mlp2_add"))


def test_official_names_invert_the_loaders_mapping(tok):
    model = tiny_model(tok)
    for k in model.state_dict():
        o = official_key(k)
        assert rename_key(o) == k  # the loader maps it back to exactly this tensor
        assert re.match(r"^(visual\.|model\.(?!visual\.|language_model\.)|lm_head\.|spatial_encoder\.vggt_model\."
                        r"|connector\.)", o), o
    assert official_key("model.language_model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert official_key("model.visual.merger.ln_q.weight") == "visual.merger.ln_q.weight"


def test_vggt_heads_complete_the_official_key_set(tok, proc, tmp_path):
    model = tiny_model(tok, seed=3)
    sd, missing = official_v11_state_dict(model)
    assert missing == ["camera_head", "depth_head", "point_head", "track_head"]  # lean: aggregator only
    full_cfg = {**model.config.spatial_config.to_dict(), "enable_camera": True, "enable_depth": True,
                "enable_point": True}
    full = VGGT(VGGTConfig.from_dict(full_cfg))
    heads = {k: v.contiguous() for k, v in full.state_dict().items() if not k.startswith("aggregator.")}
    heads["track_head.fnet.norm.weight"] = torch.ones(4)  # our VGGT has no track head; the official one has
    (tmp_path / "vggt").mkdir()
    save_file(heads, str(tmp_path / "vggt" / "model.safetensors"))
    sd, missing = official_v11_state_dict(model, vggt_heads=tmp_path / "vggt")
    assert missing == [] and "spatial_encoder.vggt_model.track_head.fnet.norm.weight" in sd
    from spatial_mllm.models.export import save_official_v11

    save_official_v11(model, tmp_path / "official", processor=proc, vggt_heads=tmp_path / "vggt")
    loaded = SpatialMLLMForConditionalGeneration.from_pretrained(tmp_path / "official")  # heads skipped, declared
    batch = _batch(proc)
    assert torch.equal(_logits(loaded, batch), _logits(model, batch))
    assert "The VGGT heads are included" in (tmp_path / "official" / "README.md").read_text()


def test_export_ours_layout_keeps_our_names(saved, tmp_path, capsys):
    root, model = saved
    official = tmp_path / "official"
    assert cli_main(["export", "--layout", "official-v1.1", str(root / "ours"), str(official)]) == 0
    back = tmp_path / "ours"
    assert cli_main(["export", str(official), str(back)]) == 0  # --layout ours: a plain save_pretrained
    assert detect_layout(list_checkpoint_keys(back)) == "ours"
    loaded = SpatialMLLMForConditionalGeneration.from_pretrained(back)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert (back / "README.md").is_file() and (back / "generation_config.json").is_file()


def test_model_card_defaults_from_the_folder(tok, tmp_path):
    tiny_model(tok).save_pretrained(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({**RUN, "params": {"learning_rate": 0.003, "model_name_or_path":
                                                                    "tiny"}}))
    (tmp_path / "scores.json").write_text(json.dumps({"EM": 21.5, "CIDEr": 60.25, "num_questions": 4}))
    text = write_model_card(tmp_path).read_text()
    assert "`learning_rate` | 0.003" in text and "| CIDEr | 60.25 |" in text
    assert "base_model" not in ModelCard(text).data.to_dict()  # "tiny" is not a hub id


def test_push_to_hub_uploads_the_saved_folder(tok, monkeypatch):
    """push_to_hub (not run against the Hub here): the uploaded folder holds the card and the generation config."""
    import huggingface_hub

    seen = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            seen["repo"] = repo_id
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, folder_path, repo_id, **kw):
            seen["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            seen["card"] = (Path(folder_path) / "README.md").read_text()
            return "https://huggingface.co/me/x/commit/0"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = tiny_model(tok).push_to_hub("me/x", run_info=RUN)
    assert url.endswith("/commit/0") and seen["repo"] == "me/x"
    assert {"README.md", "generation_config.json", "config.json", "model.safetensors"} <= set(seen["files"])
    assert "spatial-mllm ask --model me/x" in seen["card"] and "## Training recipe" in seen["card"]
