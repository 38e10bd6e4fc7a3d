"""Shareable checkpoints: a Hub-ready save (model card, generation config, processor); the export to the official
v1.1 layout is :mod:`spatial_mllm.models.export` (which imports the model; this module must not, since the model
class takes its ``save_pretrained`` from here).

``model.save_pretrained(dir, processor=..., run_info=..., scores=...)`` (through
:class:`ShareableCheckpointMixin`, a base of ``SpatialMLLMForConditionalGeneration``) writes what the Hub
expects of a model repo::

    config.json, model.safetensors (or shards + index)   transformers' save, our (transformers 5) names
    generation_config.json   the paper preset's decoding, i.e. the official evaluation's: do_sample, temperature
                             0.1, top_p 0.001, max_new_tokens 1024 (``spatial_mllm.models.ask``'s constants)
    README.md                model card: YAML front matter (license, library_name, pipeline_tag, base_model,
                             tags, datasets), what it is, how to load and ask, the recipe (run.json), the scores
                             (scores.json), license, citations
    tokenizer + processor files   when ``processor=`` is given (``SpatialMLLMProcessor.from_pretrained(dir)``)

``run_info`` is a run record (the dict of a ``run.json``: params, seed, git sha, versions, ...), a path to one
(or a folder holding ``run.json``, or an SFT checkpoint's ``sft_config.json`` + ``sft_result.json``);
``scores`` a ``scores.json`` dict or path (its folder's ``run.json`` says how it was scored), or
``{name: scores}`` for several. Without them, ``run.json`` / ``scores.json`` already in the folder are used; a
given run record is kept as ``run.json`` beside the weights (exports and re-saves carry it).

Sharing on the Hub (needs a token; not run in this project's tests)::

    model.push_to_hub("me/spatial-mllm-sft", processor=processor, run_info="outputs/paper/03_sft.run.json",
                      scores={"VSI-Bench": "outputs/paper/eval/03_sft_after/scores.json"})
    # or a folder already written (either layout):
    spatial-mllm export --layout official-v1.1 outputs/paper/checkpoints/sft exported/ --push-to-hub me/repo
    hf upload me/repo exported/            # huggingface_hub's CLI does the same

``push_to_hub`` here saves into a temporary folder with :meth:`ShareableCheckpointMixin.save_pretrained` and
uploads that folder (transformers' own ``push_to_hub`` would replace the card with a generic one).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "OFFICIAL_DECODING",
    "OFFICIAL_MAX_NEW_TOKENS",
    "ShareableCheckpointMixin",
    "PAPER_BASE_MODELS",
    "paper_generation_config",
    "load_run_info",
    "load_scores",
    "model_card",
    "write_model_card",
    "upload_checkpoint",
]

logger = logging.getLogger(__name__)

# the official evaluation's decoding (src/evaluation/vsibench/eval_vsibench.py:165-171 on master); ``ask`` and
# the saved generation_config.json use it
OFFICIAL_DECODING = {"do_sample": True, "temperature": 0.1, "top_p": 0.001}
# their max_new_tokens (VSI-Bench; spatial_mllm.eval.vsibench.OFFICIAL_MAX_NEW_TOKENS["vsibench"] is the same)
OFFICIAL_MAX_NEW_TOKENS = 1024

# the paper's starting weights (params/paper/03_sft.yaml)
PAPER_BASE_MODELS = ("Qwen/Qwen2.5-VL-3B-Instruct", "facebook/VGGT-1B")
# the official training annotations (official TRAINING.md: spatial_mllm_mix_133k / _203k live there)
OFFICIAL_TRAINING_DATA = "Diankun/Spatial-MLLM-Data"
BASE_MODEL_LICENSES = {
    "Qwen/Qwen2.5-VL-3B-Instruct": "Qwen Research License (non-commercial)",
    "facebook/VGGT-1B": "non-commercial (see the facebook/VGGT-1B model card; VGGT-1B-Commercial is the "
                        "commercial checkpoint)",
}
TAGS = ["spatial-mllm", "spatial-reasoning", "video-question-answering", "qwen2_5_vl", "vggt", "vsi-bench"]
PIPELINE_TAG = "video-text-to-text"
# transformers 4.51.3 (what the official code pins) writes config.json in this layout
OFFICIAL_TRANSFORMERS_VERSION = "4.51.3"

CITATIONS = """@article{wu2025spatialmllm,
  title   = {Spatial-MLLM: Boosting MLLM Capabilities in Visual-based Spatial Intelligence},
  author  = {Wu, Diankun and Liu, Fangfu and Hung, Yi-Hsin and Duan, Yueqi},
  journal = {arXiv preprint arXiv:2505.23747},
  year    = {2025}
}
@article{bai2025qwen25vl,
  title   = {Qwen2.5-VL Technical Report},
  author  = {Bai, Shuai and others},
  journal = {arXiv preprint arXiv:2502.13923},
  year    = {2025}
}
@inproceedings{wang2025vggt,
  title     = {VGGT: Visual Geometry Grounded Transformer},
  author    = {Wang, Jianyuan and Chen, Minghao and Karaev, Nikita and Vedaldi, Andrea and
               Rupprecht, Christian and Novotny, David},
  booktitle = {CVPR},
  year      = {2025}
}"""

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _is_hub_id(value: Any) -> bool:
    """``org/name`` that is not a local path (params may name either)."""
    return isinstance(value, str) and bool(_HUB_ID.match(value)) and not Path(value).exists()


# ================================================================================ generation config
def paper_generation_config(model):
    """The paper preset's decoding as a ``GenerationConfig``: the model's own (token ids, and whatever a
    loaded checkpoint carried) with ``do_sample=True, temperature=0.1, top_p=0.001`` and
    ``max_new_tokens=1024`` — the official evaluation's ``generate`` arguments (master
    ``src/evaluation/vsibench/eval_vsibench.py``), :data:`OFFICIAL_DECODING` and
    :data:`OFFICIAL_MAX_NEW_TOKENS`."""
    from transformers import GenerationConfig


    gen = getattr(model, "generation_config", None)
    gen = copy.deepcopy(gen) if gen is not None else GenerationConfig.from_model_config(model.config)
    gen.update(**OFFICIAL_DECODING, max_new_tokens=OFFICIAL_MAX_NEW_TOKENS)
    gen._from_model_config = False  # a deliberate setting: transformers must not rebuild it from config.json
    return gen


# ================================================================================ run info and scores
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def load_run_info(source) -> dict | None:
    """A run record from a dict (returned as is), a ``run.json`` path, or a folder holding ``run.json`` — or
    else an SFT checkpoint's ``sft_config.json`` (+ ``sft_result.json``, without its log history). ``None``
    when a folder has neither; a named file that does not exist is a ``FileNotFoundError``."""
    if source is None or isinstance(source, Mapping):
        return dict(source) if source is not None else None
    p = Path(source)
    if p.is_file():
        return _read_json(p)
    if not p.is_dir():
        raise FileNotFoundError(f"run record not found: {p}")
    if (p / "run.json").is_file():
        return _read_json(p / "run.json")
    if (p / "sft_config.json").is_file():
        info: dict = {"stage": "sft", "params": _read_json(p / "sft_config.json")}
        if (p / "sft_result.json").is_file():
            info["result"] = {k: v for k, v in _read_json(p / "sft_result.json").items() if k != "log_history"}
        return info
    return None


def _load_one_score(source) -> dict:
    """``{"scores": ..., "run": <the evaluation's run.json or None>}`` from a dict or a path."""
    if isinstance(source, Mapping):
        return {"scores": dict(source), "run": None}
    p = Path(source)
    if p.is_dir():
        p = p / "scores.json"
    if not p.is_file():
        raise FileNotFoundError(f"scores file not found: {p}")
    run = p.parent / "run.json"
    return {"scores": _read_json(p), "run": _read_json(run) if run.is_file() else None}


def _looks_like_scores(d: Mapping) -> bool:
    return any(k in d for k in ("per_task", "overall_macro", "overall_micro", "num_questions", "EM", "CIDEr"))


def load_scores(source) -> dict[str, dict] | None:
    """``{name: {"scores": dict, "run": dict | None}}`` from one scores dict/path or ``{name: dict or path}``."""
    if source is None:
        return None
    if isinstance(source, Mapping) and not _looks_like_scores(source):
        return {str(name): _load_one_score(s) for name, s in source.items()}
    one = _load_one_score(source)
    run_params = (one["run"] or {}).get("params") or {}
    name = run_params.get("benchmark") or one["scores"].get("benchmark") or "evaluation"
    return {str(name): one}


# ================================================================================ model card
def _config_numbers(config) -> dict[str, Any]:
    text = getattr(config, "text_config", config)
    sc = getattr(config, "spatial_config", None)
    cc = getattr(config, "connector_config", None) or {}
    return {
        "llm": f"{text.num_hidden_layers} layers × {text.hidden_size}",
        "vit": f"{config.vision_config.depth} blocks × {config.vision_config.hidden_size}",
        "vggt": f"aggregator {sc.depth} × 2 blocks × {sc.embed_dim} (patch {sc.patch_size}, img {sc.img_size})"
                if sc is not None and cc.get("type") != "none" else "none",
        "connector": cc.get("type", "?"),
        "layer": cc.get("spatial_embeds_layer_idx"),
    }


def _is_paper_shape(config) -> bool:
    text = getattr(config, "text_config", config)
    sc = getattr(config, "spatial_config", None)
    qwen3b = (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (2048, 36, 151936)
    vggt1b = sc is None or (sc.embed_dim, sc.depth) == (1024, 24)
    return qwen3b and vggt1b


def _base_models(config, run_info: dict | None) -> list[str]:
    params = (run_info or {}).get("params") or {}
    found = [params[k] for k in ("model_name_or_path", "vggt_name_or_path", "model") if _is_hub_id(params.get(k))]
    if found:
        return list(dict.fromkeys(found))
    if _is_paper_shape(config):
        conn = (getattr(config, "connector_config", None) or {}).get("type")
        return list(PAPER_BASE_MODELS) if conn != "none" else [PAPER_BASE_MODELS[0]]
    return []


def _datasets(run_info: dict | None, scores: dict | None) -> list[str]:
    out = []
    params = (run_info or {}).get("params") or {}
    if params.get("train_mix"):
        out.append(OFFICIAL_TRAINING_DATA)
    for k in ("train_file", "source", "data"):
        if _is_hub_id(params.get(k)):
            out.append(params[k])
    for entry in (scores or {}).values():
        src = ((entry.get("run") or {}).get("params") or {}).get("source")
        if _is_hub_id(src):
            out.append(src)
    return list(dict.fromkeys(out))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return "`" + json.dumps(v) + "`"
    return str(v).replace("|", "\\|")


def _recipe_section(run_info: dict) -> list[str]:
    lines = ["## Training recipe", ""]
    head = []
    for key, label in (("stage", "stage"), ("status", "status"), ("git_sha", "code (git sha)"),
                       ("start_time", "started"), ("end_time", "ended"), ("seed", "seed")):
        if run_info.get(key) is not None:
            head.append(f"- {label}: `{run_info[key]}`")
    versions = run_info.get("versions") or {}
    if versions:
        keep = {k: v for k, v in versions.items() if k in ("spatial_mllm", "torch", "transformers", "accelerate",
                                                            "peft", "python") and v}
        head.append("- versions: " + ", ".join(f"{k} {v}" for k, v in keep.items()))
    device = run_info.get("device") or {}
    if device:
        head.append(f"- device: {', '.join(device.get('gpus') or []) or 'CPU'} "
                    f"({device.get('cpu_count', '?')} CPU cores)")
    lines += head + ([""] if head else [])
    params = run_info.get("params") or {}
    if params:
        lines += ["Parameters of the run (`run.json`):", "", "| key | value |", "|---|---|"]
        lines += [f"| `{k}` | {_fmt(v)} |" for k, v in params.items() if v is not None]
        lines.append("")
    for extra in ("result", "cold_start", "metrics"):
        if isinstance(run_info.get(extra), Mapping) and run_info[extra]:
            lines += [f"Run {extra.replace('_', ' ')}:", "", "| key | value |", "|---|---|"]
            lines += [f"| `{k}` | {_fmt(v)} |" for k, v in run_info[extra].items() if not isinstance(v, list)]
            lines.append("")
    return lines


_VSI_TASKS = ("object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation",
              "object_rel_distance", "object_rel_direction", "route_planning", "obj_appearance_order")
_QA_METRICS = ("EM", "EM_refined", "BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _score_rows(s: dict) -> list[tuple[str, Any]]:
    if "per_task" in s or "overall_macro" in s:  # VSI-Bench (spatial_mllm.eval.vsibench.score)
        rows = [(t, (s.get("per_task") or {}).get(t)) for t in _VSI_TASKS]
        rows += [("overall (task mean, lmms-eval)", s.get("overall_macro")),
                 ("overall (question mean, the paper's style)", s.get("overall_micro"))]
    elif "EM" in s:  # ScanQA / SQA3D
        rows = [(m, s.get(m)) for m in _QA_METRICS]
    else:
        rows = [(k, v) for k, v in s.items() if isinstance(v, (int, float))]
    rows.append(("questions", s.get("num_questions")))
    return [(k, v) for k, v in rows if v is not None]


def _scores_section(scores: dict[str, dict]) -> list[str]:
    lines = ["## Evaluation", "", "Scores from `scores.json` (percent; written by `spatial-mllm evaluate`).", ""]
    for name, entry in scores.items():
        s, run = entry["scores"], entry.get("run") or {}
        lines += [f"### {name}", ""]
        p = run.get("params") or {}
        how = [f"{k} `{p[k]}`" for k in ("source", "revision", "num_frames", "decoding", "prompt_style",
                                          "max_new_tokens", "score_rule", "limit") if p.get(k) is not None]
        if how:
            lines += ["Scored with " + ", ".join(how) + ".", ""]
        lines += ["| metric | score |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in _score_rows(s)]
        lines.append("")
    return lines


def _license(base_models: list[str], license: str | None) -> tuple[dict, list[str]]:
    """Front matter entries and the body's license section."""
    restricted = [m for m in base_models if m in BASE_MODEL_LICENSES]
    if license is None:
        license = "other" if restricted else "apache-2.0"
    meta = {"license": license}
    if license == "other":
        meta["license_name"] = "base-model-licenses"
    body = ["## License", "",
            "The code that built these weights (`spatial_mllm`) is Apache-2.0."]
    if restricted:
        body.append("The weights derive from base models that keep their own terms:")
        body += [f"- `{m}`: {BASE_MODEL_LICENSES[m]}" for m in restricted]
    elif not base_models:
        body.append("These weights were not initialised from released checkpoints (random init or this "
                    "project's own pretraining), so only the code license applies.")
    else:
        body.append("The weights derive from " + ", ".join(f"`{m}`" for m in base_models) + ": check their terms.")
    return meta, body + [""]


def model_card(config, *, run_info: dict | None = None, scores: dict[str, dict] | None = None,
               layout: str = "ours", repo_id: str | None = None, processor=None, base_models: list[str] | None = None,
               license: str | None = None, datasets: list[str] | None = None, num_parameters: int | None = None,
               lean_heads: list[str] | None = None) -> str:
    """The model card (README.md) text. ``scores`` as :func:`load_scores` returns; ``run_info`` a run record."""
    import yaml

    base = list(base_models) if base_models is not None else _base_models(config, run_info)
    data = list(datasets) if datasets is not None else _datasets(run_info, scores)
    lic_meta, lic_body = _license(base, license)
    meta: dict[str, Any] = {**lic_meta, "library_name": "transformers", "pipeline_tag": PIPELINE_TAG}
    if base:
        meta["base_model"] = base
    meta["tags"] = list(TAGS)
    meta["datasets"] = data
    n = _config_numbers(config)
    where = repo_id or "PATH_OR_REPO_ID"
    stage = (run_info or {}).get("stage")
    title = f"Spatial-MLLM ({stage})" if stage else "Spatial-MLLM"
    size = f" of {num_parameters / 1e6:,.1f} M parameters" if num_parameters else ""
    lines = [f"# {title}", "",
             f"A checkpoint{size} of Spatial-MLLM (Wu et al., 2025, [arXiv 2505.23747](https://arxiv.org/abs/2505.23747)),"
             " a video multimodal LLM that answers spatial questions about an ordinary 2D video of a room. Qwen2.5-VL's "
             "ViT gives semantic tokens; the aggregator of VGGT gives 3D-structure tokens, merged 2 frames × 2×2 "
             "patches, mapped by an MLP connector and **added** to the video embeddings before the language model.",
             "",
             f"- language model: {n['llm']}; ViT: {n['vit']}",
             f"- spatial encoder (VGGT): {n['vggt']}; connector: `{n['connector']}` "
             f"(aggregator layer {n['layer']})",
             f"- base models: {', '.join(f'`{m}`' for m in base) if base else 'none (random init)'}",
             "- built with `spatial_mllm`, an independent implementation of the paper on transformers 5", ""]
    if layout == "official-v1.1":
        lines += ["## Files (official v1.1 layout)", "",
                  "Tensor names and `config.json` follow the official code (`diankun-wu/Spatial-MLLM` master, "
                  "`src/qwenvl/model/spatial_mllm.py`, transformers 4.51.3): `visual.*`, `model.*`, `lm_head.*`, "
                  "`spatial_encoder.vggt_model.*`, `connector.*`; processor files in 4.51's layout."]
        if lean_heads:
            lines.append("VGGT's " + ", ".join(lean_heads) + " are NOT in this file (the model runs only VGGT's "
                         "aggregator): the official loader initialises them at random with a warning and never "
                         "uses them; a strict `load_state_dict` would report them missing.")
        else:
            lines.append("The VGGT heads are included, so the key set is the official model's.")
        lines += ["", "```python",
                  "# the official code (transformers==4.51.3), from the root of diankun-wu/Spatial-MLLM",
                  "from src.qwenvl.model.spatial_mllm import SpatialMLLMConfig, SpatialMLLMForConditionalGeneration",
                  "from transformers import Qwen2_5_VLProcessor",
                  f'model = SpatialMLLMForConditionalGeneration.from_pretrained("{where}", '
                  f'config=SpatialMLLMConfig.from_pretrained("{where}"), torch_dtype="bfloat16")',
                  f'processor = Qwen2_5_VLProcessor.from_pretrained("{where}")', "```", ""]
    else:
        lines += ["## Files", "",
                  "`config.json` + safetensors in `spatial_mllm`'s layout (transformers 5), "
                  "`generation_config.json`, the processor files, this card. "
                  "`spatial-mllm export --layout official-v1.1` writes the official code's layout.", ""]
    proc_note = ""
    if processor is not None:
        proc_note = (f" This checkpoint's processor settings: {processor.num_frames} frames, pixel preset "
                     f"`{processor.pixel_preset or 'default'}`, {processor.min_pixels}-{processor.max_pixels} pixels "
                     "per frame (not stored in the processor files: pass them to from_pretrained).")
    lines += ["## Ask a question about a video", "",
              "With this project's package (`pip install -e .` in its repository):", "",
              "```bash",
              f'spatial-mllm ask --model {where} --video room.mp4 --frames 16 "How many chairs are in this room?"',
              f"spatial-mllm ask --model {where} --video room.mp4 --frames 16 --sampling space-aware "
              f'--vggt facebook/VGGT-1B "Is the lamp to my left when I stand by the bed facing the door?"',
              "```", "", "```python",
              "from spatial_mllm.models import SpatialMLLMForConditionalGeneration, SpatialMLLMProcessor, ask",
              f'model = SpatialMLLMForConditionalGeneration.from_pretrained("{where}").eval()',
              f'processor = SpatialMLLMProcessor.from_pretrained("{where}", pixel_preset="official_eval")',
              'print(ask((model, processor), "room.mp4", "How many chairs are in this room?", frames=16))',
              "```", "",
              "`generation_config.json` holds the official evaluation's decoding (`do_sample=True`, temperature 0.1, "
              "top_p 0.001, up to 1024 new tokens): greedy in all but exact ties and very flat distributions."
              + proc_note, ""]
    if run_info:
        lines += _recipe_section(run_info)
    if scores:
        lines += _scores_section(scores)
    lines += lic_body
    lines += ["## Citation", "", "```bibtex", CITATIONS, "```", ""]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(lines)


def write_model_card(folder, config=None, *, run_info=None, scores=None, **card_kwargs) -> Path:
    """Write ``<folder>/README.md``. ``config`` defaults to the folder's ``config.json``; ``run_info`` /
    ``scores`` default to the folder's ``run.json`` / ``scores.json`` when present (see :func:`load_run_info`).
    A given ``run_info`` is also kept as ``<folder>/run.json``, so that exports and re-saves carry the recipe
    (scores are not: give them again, e.g. ``spatial-mllm export --scores``)."""
    folder = Path(folder)
    if config is None:
        from spatial_mllm.models.configuration import SpatialMLLMConfig

        config = SpatialMLLMConfig.from_pretrained(folder)
    info = load_run_info(run_info if run_info is not None else (folder if (folder / "run.json").is_file() else None))
    if run_info is not None and info is not None:
        (folder / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    if scores is None and (folder / "scores.json").is_file():
        scores = folder / "scores.json"
    path = folder / "README.md"
    path.write_text(model_card(config, run_info=info, scores=load_scores(scores), **card_kwargs))
    return path


# ================================================================================ the mixin
class ShareableCheckpointMixin:
    """``save_pretrained`` that also writes the model card, the paper's generation config and the processor;
    ``push_to_hub`` that uploads exactly that folder. Put it before the transformers model class in the bases."""

    def save_pretrained(self, save_directory, *args, processor=None, run_info=None, scores=None,
                        model_card: bool = True, repo_id: str | None = None, **kwargs):
        """transformers' ``save_pretrained`` + ``generation_config.json`` (paper decoding), ``README.md`` (unless
        ``model_card=False``) and the processor files (when ``processor`` is given). ``run_info``/``scores``: see
        the module docstring. ``push_to_hub=True`` uploads the finished folder (to ``repo_id``, default the
        folder's name). Extra files are written only on the saving process (``is_main_process``)."""
        push = kwargs.pop("push_to_hub", False)
        hub_kwargs = {k: kwargs.pop(k) for k in ("commit_message", "private", "create_pr", "revision") if k in kwargs}
        token = kwargs.get("token")
        super().save_pretrained(save_directory, *args, **kwargs)
        main = kwargs.get("is_main_process", True)
        if hasattr(self, "should_save_on_this_rank"):
            main = self.should_save_on_this_rank(main)
        if not main:
            return
        folder = Path(save_directory)
        paper_generation_config(self).save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)
        if model_card:
            sd = kwargs.get("state_dict")  # given by Trainer/accelerate saves (under ZeRO-3 the parameters are shards)
            n = sum(v.numel() for v in (sd.values() if sd is not None else self.parameters()))
            write_model_card(folder, self.config, run_info=run_info, scores=scores, processor=processor,
                             repo_id=repo_id, num_parameters=n or None)
        if push:
            upload_checkpoint(folder, repo_id or folder.resolve().name, token=token, **hub_kwargs)

    def push_to_hub(self, repo_id: str, *, processor=None, run_info=None, scores=None, commit_message: str | None = None,
                    private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                    create_pr: bool = False, max_shard_size: str = "5GB", **kwargs) -> str:
        """Save (card, generation config, processor) into a temporary folder and upload it to ``repo_id``."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, processor=processor, run_info=run_info, scores=scores, repo_id=repo_id,
                                 max_shard_size=max_shard_size, **kwargs)
            return upload_checkpoint(tmp, repo_id, commit_message=commit_message, private=private, token=token,
                                     revision=revision, create_pr=create_pr)


def upload_checkpoint(folder, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                      token: str | bool | None = None, revision: str | None = None, create_pr: bool = False) -> str:
    """Create ``repo_id`` (if needed) and upload ``folder`` as it is (README.md included). Returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token if isinstance(token, str) else None)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision, create_pr=create_pr,
                             commit_message=commit_message or "Upload Spatial-MLLM checkpoint")
    return str(getattr(info, "commit_url", info))


