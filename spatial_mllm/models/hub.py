"""Shareable checkpoints: a Hub-ready save (model card, generation config, processor) and the export to the
official Spatial-MLLM v1.1 layout.

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

``export_checkpoint(src, dst, layout)`` (``spatial-mllm export --layout ours|official-v1.1 SRC DST``):

* ``ours`` — ``from_pretrained`` + ``save_pretrained`` (our names, ``save_original_format=False``): a plain copy
  with the card, the generation config and the processor of ``src``.
* ``official-v1.1`` — what the official master code (``src/qwenvl/model/spatial_mllm.py``, transformers 4.51.3)
  loads: tensor names inverted from :mod:`~spatial_mllm.models.checkpoint_keys` (the mapping the loader uses;
  no second table), ``config.json`` in transformers 4.51's layout with the official ``SpatialMLLMConfig`` keys,
  processor files in 4.51's layout (``preprocessor_config.json``; 4.51 cannot read transformers 5's nested
  ``processor_config.json``). What the file holds: the Qwen2.5-VL tensors (``visual.*``, ``model.*``,
  ``lm_head.weight`` unless tied), ``spatial_encoder.vggt_model.aggregator.*`` and ``connector.*`` — our VGGT
  runs lean, so VGGT's camera/depth/point heads are there only if the model's ``spatial_config`` enables them,
  and the track head never, unless ``vggt_heads=`` (``--vggt-heads facebook/VGGT-1B``) copies the head tensors
  from a VGGT checkpoint. The official checkpoint holds a whole VGGT-1B (all four heads). The official
  loader (transformers 4.51 ``from_pretrained``, non-strict) accepts the lean file and initialises the absent
  heads at random with a "newly initialized" warning; Spatial-MLLM's forward reads only the aggregator, so
  its outputs are unaffected. A strict load (``load_state_dict(strict=True)``) of the lean file fails on
  exactly those head tensors; with ``--vggt-heads`` the key set equals the official model's. Only the
  ``mlp_add`` connector (v1.1) and VGGT-1B's aggregator shape can be built by the official code: other VGGT
  sizes are exported (with their sizes as extra ``spatial_config`` keys, which our loader honours and the
  official one ignores) with a warning.

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

import argparse
import copy
import json
import logging
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ShareableCheckpointMixin",
    "LAYOUTS",
    "PAPER_BASE_MODELS",
    "paper_generation_config",
    "load_run_info",
    "load_scores",
    "model_card",
    "write_model_card",
    "official_key",
    "official_v11_config",
    "official_v11_state_dict",
    "save_official_v11",
    "export_checkpoint",
    "upload_checkpoint",
    "add_export_subparser",
    "run_export_command",
]

logger = logging.getLogger(__name__)

LAYOUTS = ("ours", "official-v1.1")
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
    ``src/evaluation/vsibench/eval_vsibench.py``), :data:`~spatial_mllm.models.ask.OFFICIAL_DECODING` and
    :data:`~spatial_mllm.models.ask.OFFICIAL_MAX_NEW_TOKENS`."""
    from transformers import GenerationConfig

    from spatial_mllm.models.ask import OFFICIAL_DECODING, OFFICIAL_MAX_NEW_TOKENS

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


# ================================================================================ official v1.1 layout
def _literal_prefix(pattern: str) -> str:
    """The literal prefix a rename pattern of :mod:`checkpoint_keys` matches: ``^model\\.(?!...)`` → ``model.``."""
    lit = re.sub(r"\(\?!.*\)$", "", pattern).removeprefix("^").replace("\\.", ".")
    if re.search(r"[\\^$*+?()\[\]{}|]", lit):
        raise ValueError(f"rename pattern {pattern!r} is not a plain prefix: cannot invert it")
    return lit


def official_key(key: str) -> str:
    """Our tensor name → its official v1.1 name, the inverse of the loader's renames.

    Inverts ``checkpoint_keys.QWEN_451_RENAMES`` (the only renames a v1.1 checkpoint needs: its spatial branch
    already has our names) and checks the result with ``checkpoint_keys.rename_key``, the function the
    loader's mapping is made of, so export and load cannot drift apart."""
    from spatial_mllm.models.checkpoint_keys import QWEN_451_RENAMES, rename_key

    for src, dst in QWEN_451_RENAMES:
        if key.startswith(dst):
            cand = _literal_prefix(src) + key[len(dst):]
            if rename_key(cand) == key:
                return cand
    if rename_key(key) != key:
        raise ValueError(f"no official v1.1 name maps to {key!r}")
    return key


def official_v11_state_dict(model, vggt_heads=None) -> tuple[dict, list[str]]:
    """``({official name: tensor}, head prefixes still missing)``; tensors are shared with the model.

    ``vggt_heads``: a VGGT checkpoint (folder, file or hub id; official VGGT keys or a v1.1 checkpoint's
    ``spatial_encoder.vggt_model.*``) whose head tensors fill the heads our lean VGGT does not hold."""
    sd = {official_key(k): v for k, v in model.state_dict().items()}
    prefix = "spatial_encoder.vggt_model."
    if vggt_heads is not None and model.spatial_encoder is not None:
        dtype = model.spatial_encoder.vggt_model.aggregator.camera_token.dtype
        for k, v in _vggt_head_tensors(vggt_heads).items():
            sd.setdefault(prefix + k, v.to(dtype))
    heads = ("camera_head", "depth_head", "point_head", "track_head")
    missing = [h for h in heads if model.spatial_encoder is not None and not any(
        k.startswith(f"{prefix}{h}.") for k in sd)]
    return sd, missing


def _vggt_head_tensors(source) -> dict:
    """Head tensors (camera/depth/point/track) of a VGGT checkpoint, with VGGT's own names."""
    from spatial_mllm.models.vggt.model import WEIGHT_FILES, _resolve, load_checkpoint_file

    p = Path(source)
    if p.is_file():
        files = [p]
    elif p.is_dir() and (p / "model.safetensors.index.json").is_file():
        index = _read_json(p / "model.safetensors.index.json")
        files = [p / f for f in sorted(set(index["weight_map"].values()))]
    else:
        errors: list[str] = []
        files = [f for f in (_resolve(source, name, errors) for name in WEIGHT_FILES) if f is not None][:1]
        if not files:
            raise FileNotFoundError(f"no VGGT weights ({', '.join(WEIGHT_FILES)}) in {source}: " + "; ".join(errors))
    heads = ("camera_head.", "depth_head.", "point_head.", "track_head.")
    out = {}
    for f in files:
        for k, v in load_checkpoint_file(f).items():
            k = k.removeprefix("spatial_encoder.vggt_model.").removeprefix("vggt.")
            if k.startswith(heads):
                out[k] = v
    if not out:
        raise ValueError(f"{source}: no VGGT head tensors ({', '.join(h.rstrip('.') for h in heads)}) found")
    return out


# transformers 4.51.3 configuration_qwen2_5_vl.py: Qwen2_5_VLConfig.__init__ keeps the language model's fields
# at the top level (transformers 5 moved them to text_config); Qwen2_5_VLVisionConfig.__init__'s fields.
_QWEN451_TEXT_FIELDS = ("vocab_size", "max_position_embeddings", "hidden_size", "intermediate_size",
                        "num_hidden_layers", "num_attention_heads", "use_sliding_window", "sliding_window",
                        "max_window_layers", "num_key_value_heads", "hidden_act", "initializer_range", "rms_norm_eps",
                        "use_cache", "attention_dropout", "bos_token_id", "eos_token_id")
_QWEN451_VISION_FIELDS = ("depth", "hidden_size", "hidden_act", "intermediate_size", "num_heads", "in_channels",
                          "patch_size", "spatial_merge_size", "temporal_patch_size", "tokens_per_second",
                          "window_size", "out_hidden_size", "fullatt_block_indexes")
# keys Qwen/Qwen2.5-VL-*-Instruct's config.json carries beyond those (4.51 passes them through): name → source
_QWEN_LEGACY_VISION = {"in_chans": "in_channels", "spatial_patch_size": "patch_size"}
# the official VGGTSpatialEncoderConfig (src/qwenvl/model/spatial_encoder.py) has only these; it always builds
# VGGT(img_size, patch_size, embed_dim) with VGGT-1B's other sizes
_OFFICIAL_SPATIAL_FIELDS = ("img_size", "patch_size", "embed_dim")


def official_v11_config(config, *, dtype: str = "bfloat16", vision_token_id: int | None = None) -> dict:
    """``config.json`` of the official v1.1 release for ``config``: transformers 4.51.3's layout of the
    official ``SpatialMLLMConfig`` (master ``src/qwenvl/model/spatial_mllm.py``), as its training script
    builds it from Qwen2.5-VL-3B-Instruct's config (``train_qwen.py`` ``get_model``).

    Not representable (raises ``ValueError``): a connector other than ``mlp_add``. Kept beyond the official
    keys: ``spatial_config`` sizes that differ from VGGT-1B's (our loader reads them, the official one ignores
    them: it can only build VGGT-1B). Left out: ``pad_token_id`` (the official config has none; 4.51 uses it
    only as the embedding's ``padding_idx``; it is in ``generation_config.json``). ``sliding_window`` is
    written as this config holds it (transformers 5 keeps ``null`` when sliding windows are off; 4.51 reads
    it only when ``use_sliding_window`` is true)."""
    from spatial_mllm.models.configuration import LEAN_SPATIAL_OVERRIDES
    from spatial_mllm.models.vggt import VGGTConfig

    cc = config.connector_config
    if cc["type"] != "mlp_add":
        raise ValueError(f"the official v1.1 layout has the mlp_add connector only; this checkpoint's connector is "
                         f"{cc['type']!r} (export it with --layout ours)")
    text = config.text_config
    out: dict[str, Any] = {}
    for k in _QWEN451_TEXT_FIELDS:
        v = getattr(text, k, None)
        out[k] = v if v is not None or k == "sliding_window" else getattr(config, k, None)
    rope = dict(getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {})
    out["rope_theta"] = rope.pop("rope_theta", getattr(text, "rope_theta", None))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    out["rope_scaling"] = {**{k: v for k, v in rope.items() if k not in ("type", "rope_type")},
                           "rope_type": rope_type, "type": rope_type}
    vc = config.vision_config
    vision = {k: getattr(vc, k) for k in _QWEN451_VISION_FIELDS}
    vision.update({k: getattr(vc, k, None) or getattr(vc, src) for k, src in _QWEN_LEGACY_VISION.items()})
    vision["model_type"] = "qwen2_5_vl"
    out["vision_config"] = vision
    for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        out[k] = getattr(config, k)
    out["vision_token_id"] = getattr(config, "vision_token_id", None) if vision_token_id is None else vision_token_id
    out["tie_word_embeddings"] = bool(getattr(config, "tie_word_embeddings", False))
    sc = config.spatial_config.to_dict()
    default = VGGTConfig(**LEAN_SPATIAL_OVERRIDES).to_dict()
    known = set(VGGTConfig.field_help())
    spatial = {k: sc[k] for k in _OFFICIAL_SPATIAL_FIELDS}
    extra = {k: sc[k] for k in sorted(known - set(_OFFICIAL_SPATIAL_FIELDS)) if k in sc and sc[k] != default.get(k)}
    if extra:
        logger.warning("official-v1.1 export: this VGGT differs from VGGT-1B (%s); the official code builds "
                       "VGGT-1B's aggregator from img_size/patch_size/embed_dim alone and cannot load it (this "
                       "package can: the sizes are kept in spatial_config)", ", ".join(f"{k}={v}" for k, v in extra.items()))
    out["spatial_config"] = {**spatial, **extra, "model_type": "vggt_spatial_encoder"}
    out["connector_config"] = {"connector_type": "mlp_add", "spatial_embeds_layer_idx": cc["spatial_embeds_layer_idx"]}
    out.update(architectures=["SpatialMLLMForConditionalGeneration"], model_type="spatial-mllm", torch_dtype=dtype,
               transformers_version=OFFICIAL_TRANSFORMERS_VERSION)
    return dict(sorted(out.items()))


def _save_processor_official(processor, folder: Path) -> None:
    """The processor in transformers 4.51's files: ``preprocessor_config.json`` (the image processor, with
    4.51's ``min_pixels``/``max_pixels``), ``video_preprocessor_config.json`` (read by transformers 5 only), the
    tokenizer with a class name 4.51 knows, the chat template."""
    processor.save_pretrained(folder)
    nested = folder / "processor_config.json"
    if nested.is_file():
        d = _read_json(nested)
        cls = d.pop("processor_class", "Qwen2_5_VLProcessor")
        for key, name in (("image_processor", "preprocessor_config.json"),
                          ("video_processor", "video_preprocessor_config.json")):
            sub = d.pop(key, None)
            if sub is None:
                continue
            sub["processor_class"] = cls
            size = sub.get("size") or {}
            if key == "image_processor" and "shortest_edge" in size:
                sub.setdefault("min_pixels", size["shortest_edge"])
                sub.setdefault("max_pixels", size["longest_edge"])
            (folder / name).write_text(json.dumps(sub, indent=2, sort_keys=True) + "\n")
        if d:  # processor-level settings 4.51 passes to the processor's __init__
            nested.write_text(json.dumps({**d, "processor_class": cls}, indent=2, sort_keys=True) + "\n")
        else:
            nested.unlink()
    tok_cfg = folder / "tokenizer_config.json"
    if tok_cfg.is_file():
        d = _read_json(tok_cfg)
        if d.get("tokenizer_class") in (None, "TokenizersBackend", "PreTrainedTokenizerFast"):
            d["tokenizer_class"] = "Qwen2Tokenizer"  # 4.51's processor loads Qwen2TokenizerFast from tokenizer.json
        tok_cfg.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def save_official_v11(model, folder, *, processor=None, vggt_heads=None, max_shard_size: str = "5GB",
                      run_info=None, scores=None, model_card: bool = True, repo_id: str | None = None) -> list[str]:
    """Write ``model`` in the official v1.1 layout (see the module docstring). Returns the VGGT heads that the
    file does not hold (empty when the key set equals the official model's)."""
    from huggingface_hub import save_torch_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd, missing = official_v11_state_dict(model, vggt_heads)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    vision_token_id = None
    if processor is not None and "<|vision_pad|>" in processor.tokenizer.get_vocab():
        vision_token_id = processor.tokenizer.convert_tokens_to_ids("<|vision_pad|>")
    cfg = official_v11_config(model.config, dtype=dtype, vision_token_id=vision_token_id)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    save_torch_state_dict(sd, folder, max_shard_size=max_shard_size, metadata={"format": "pt"},
                          shared_tensors_to_discard=["lm_head.weight"])  # tied to the embeddings: 4.51 re-ties
    paper_generation_config(model).save_pretrained(folder)
    if processor is not None:
        _save_processor_official(processor, folder)
    if model_card:
        write_model_card(folder, model.config, run_info=run_info, scores=scores, layout="official-v1.1",
                         processor=processor, repo_id=repo_id, lean_heads=missing,
                         num_parameters=sum(v.numel() for v in sd.values()))
    if missing:
        logger.warning("official-v1.1 export: no %s tensors (the model runs VGGT's aggregator only); the official "
                       "loader initialises them at random and never uses them; pass vggt_heads (e.g. "
                       "facebook/VGGT-1B) for the official key set", ", ".join(missing))
    return missing


# ================================================================================ export
def export_checkpoint(src, dst, layout: str = "ours", *, run_info=None, scores=None, vggt_heads=None,
                      dtype: str = "auto", max_shard_size: str = "5GB", repo_id: str | None = None) -> Path:
    """Load ``src`` (our save or an official checkpoint: folder or hub id) and write it to ``dst`` in ``layout``
    (``"ours"`` or ``"official-v1.1"``) with its processor (when ``src`` has one), the paper generation config
    and a model card. ``run_info``/``scores`` default to ``src``'s ``run.json`` (or SFT records) and
    ``scores.json``."""
    import torch

    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
    from spatial_mllm.models.processing import SpatialMLLMProcessor

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    src_path = Path(src)
    if not src_path.exists() and not _is_hub_id(str(src)):
        raise FileNotFoundError(f"checkpoint folder not found: {src}")
    dst = Path(dst)
    if dst.exists() and dst.resolve() == src_path.resolve():
        raise ValueError(f"export {src} onto itself: give another destination folder")
    torch_dtype = dtype if dtype == "auto" else getattr(torch, str(dtype), None)
    if not isinstance(torch_dtype, (str, torch.dtype)):
        raise ValueError(f"--dtype {dtype!r} is not a torch dtype (auto, bfloat16, float16, float32)")
    model = SpatialMLLMForConditionalGeneration.from_pretrained(src, dtype=torch_dtype).eval()
    try:
        processor = SpatialMLLMProcessor.from_pretrained(src)
    except (OSError, ValueError, TypeError) as e:  # a checkpoint without processor files: export the model alone
        logger.warning("no processor in %s (%s): exporting the model without tokenizer/processor files", src, e)
        processor = None
    if run_info is None and src_path.is_dir():
        run_info = load_run_info(src_path)
    if scores is None and (src_path / "scores.json").is_file():
        scores = src_path / "scores.json"
    if layout == "ours":
        model.save_pretrained(dst, processor=processor, run_info=run_info, scores=scores, repo_id=repo_id,
                              max_shard_size=max_shard_size, save_original_format=False)
    else:
        save_official_v11(model, dst, processor=processor, vggt_heads=vggt_heads, max_shard_size=max_shard_size,
                          run_info=run_info, scores=scores, repo_id=repo_id)
    return dst


def add_export_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``export`` on an ``argparse`` subparsers object (``spatial_mllm/cli.py`` wires it)."""
    what = "write a checkpoint as a Hub-ready folder (model card, generation config, processor), in our layout or " \
           "the official v1.1 one"
    p = subparsers.add_parser("export", help=what, description=what)
    p.add_argument("src", help="checkpoint folder or hub id (our save or an official checkpoint)")
    p.add_argument("dst", help="output folder")
    p.add_argument("--layout", choices=LAYOUTS, default="ours",
                   help="ours: our names (transformers 5); official-v1.1: what the official master code loads")
    p.add_argument("--run-info", default=None, help="run.json (or its folder) whose recipe goes into the card "
                                                    "(default: SRC/run.json, or SRC's sft_config.json)")
    p.add_argument("--scores", action="append", default=None, metavar="[NAME=]PATH",
                   help="scores.json (or its eval folder) for the card; repeatable (default: SRC/scores.json)")
    p.add_argument("--vggt-heads", default=None, metavar="VGGT_CKPT",
                   help="official-v1.1: copy VGGT's camera/depth/point/track heads from this VGGT checkpoint "
                        "(e.g. facebook/VGGT-1B) so that the key set equals the official model's")
    p.add_argument("--dtype", default="auto",
                   help="tensor dtype written (auto = as stored; bfloat16 = as the official releases)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="upload the written folder to this Hub repo (needs a token: hf auth login)")
    p.set_defaults(func=run_export_command)
    return p


def _parse_scores(items: list[str] | None):
    if not items:
        return None
    named = {}
    for i, item in enumerate(items):
        name, sep, path = item.partition("=")
        if not sep:
            name, path = (Path(item).parent.name or f"scores {i + 1}"), item
        named[name] = path
    return named


def run_export_command(args: argparse.Namespace) -> int:
    """``spatial-mllm export``: write the folder, then (``--push-to-hub``) upload it."""
    dst = export_checkpoint(args.src, args.dst, args.layout, run_info=args.run_info, scores=_parse_scores(args.scores),
                            vggt_heads=args.vggt_heads, dtype=args.dtype, max_shard_size=args.max_shard_size,
                            repo_id=args.push_to_hub)
    print(f"wrote {args.layout} checkpoint: {dst} ({', '.join(sorted(f.name for f in dst.iterdir()))})")
    if args.push_to_hub:
        print(f"uploaded: {upload_checkpoint(dst, args.push_to_hub)}")
    return 0
