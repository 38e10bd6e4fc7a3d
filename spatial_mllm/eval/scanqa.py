"""ScanQA and SQA3D evaluation from their public annotation files.

Files (public formats):

* ScanQA (Azuma et al., 2022) ``ScanQA_v1.0_val.json``: a list of ``{question_id, scene_id, question,
  answers[], object_ids[], object_names[]}`` (the test files lack ``answers``).
* SQA3D (Ma et al., 2023) ``v1_balanced_questions_<split>_scannetv2.json`` (``{"questions": [{question_id,
  scene_id, situation, question, alternative_situation[]}]}``) and
  ``v1_balanced_sqa_annotations_<split>_scannetv2.json`` (``{"annotations": [{question_id, scene_id,
  answers: [{answer, answer_confidence, answer_id}], answer_type, question_type, position, rotation}]}``),
  joined on ``question_id`` (SQA3D ``assets/dataset.md``).

Metrics (:func:`score_qa`, rules in :mod:`spatial_mllm.eval.metrics`): the LLaVA-3D / Video-3D LLM scorer
that Spatial-MLLM's comparison tables come from — predictions and answers normalised with LEO's
``clean_answer``; EM (``EM@1``) and refined EM; BLEU-1..4, METEOR, ROUGE-L, CIDEr on the cleaned strings
after PTB tokenisation; all ×100. For SQA3D the paper reports EM-1 and refined EM (EM-R1); per-type
scores use SQA3D's first-word types (what / is / how / can / which / others).

Prompts: ``"{question} Answer the question simply."`` (ScanQA) and ``"{situation} {question} Answer the
question simply."`` (SQA3D), the 3D-LLaVA / Video-3D LLM instruction. Spatial-MLLM evaluates on those
projects' converted annotation files, whose exact prompt text is not in the public sources we could read:
this prompt is our choice, written here so that it can be changed in one place. Videos:
``<video_root>/<scene_id>.mp4`` (Spatial-MLLM's ``eval_scanqa.py``: ``video_folder / f"{scene}.mp4"``),
32 uniform frames by default in that script.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from spatial_mllm.config import resolve_path
from spatial_mllm.eval.loop import Predictor, evaluate_items
from spatial_mllm.eval.metrics import (
    SQA3D_QUESTION_TYPES,
    CaptionScorer,
    answer_match,
    clean_answer,
    extract_answer,
    sqa3d_question_type,
)
from spatial_mllm.eval.vsibench import EvalConfig, load_frames_cache

__all__ = [
    "POST_PROMPT",
    "load_scanqa",
    "load_sqa3d",
    "build_qa_items",
    "score_qa",
    "evaluate_qa",
]

POST_PROMPT = "Answer the question simply."


def _read_json(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def load_scanqa(path: str | os.PathLike) -> list[dict]:
    """ScanQA rows ``{question_id, scene_id, question, answers, object_names}`` (answers required)."""
    data = _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of ScanQA items")
    rows = []
    for d in data:
        if not d.get("answers"):
            raise ValueError(f"{path}: item {d.get('question_id')} has no answers (a test split?)")
        rows.append({
            "question_id": str(d["question_id"]), "scene_id": d["scene_id"], "question": d["question"],
            "answers": [str(a) for a in d["answers"]], "object_names": list(d.get("object_names", [])),
        })  # fmt: skip
    return rows


def load_sqa3d(questions: str | os.PathLike, annotations: str | os.PathLike) -> list[dict]:
    """SQA3D rows ``{question_id, scene_id, situation, question, answers, question_type}`` (questions joined
    with annotations on ``question_id``; ``question_type`` is SQA3D's first-word type)."""
    qs = _read_json(questions)["questions"]
    anns = {a["question_id"]: a for a in _read_json(annotations)["annotations"]}
    rows = []
    for q in qs:
        a = anns.get(q["question_id"])
        if a is None:
            raise KeyError(f"{annotations}: no annotation for question {q['question_id']}")
        rows.append({
            "question_id": str(q["question_id"]), "scene_id": q["scene_id"], "situation": q["situation"],
            "question": q["question"], "answers": [str(x["answer"]) for x in a["answers"]],
            "question_type": sqa3d_question_type(q["question"]),
        })  # fmt: skip
    return rows


def build_qa_items(
    rows: Sequence[dict],
    *,
    video_root: str | os.PathLike | None = None,
    num_frames: int = 32,
    frames_cache: dict[str, list[int]] | None = None,
    generation: dict | None = None,
) -> list[dict]:
    """Rows + ``prompt``, ``video`` (``<root>/<scene_id>.mp4``), ``num_frames``, ``frame_indices`` (from a
    frames cache keyed by scene id, else None = uniform) and ``generation`` (the decoding settings, part of the
    resume fingerprint)."""
    root = Path(video_root) if video_root is not None else Path(".")
    items = []
    for r in rows:
        lead = f"{r['situation']} " if "situation" in r else ""
        idx = None
        if frames_cache is not None:
            if r["scene_id"] not in frames_cache:
                raise KeyError(f"frames cache has no entry for {r['scene_id']!r}")
            idx = frames_cache[r["scene_id"]]
        items.append({
            **r, "prompt": f"{lead}{r['question']} {POST_PROMPT}", "video": str(root / f"{r['scene_id']}.mp4"),
            "num_frames": len(idx) if idx is not None else num_frames, "frame_indices": idx,
            "generation": generation,
        })  # fmt: skip
    return items


def score_qa(
    rows: Sequence[dict],
    *,
    extract: bool = False,
    scorer: CaptionScorer | None = None,
    by_type: bool = False,
) -> dict:
    """ScanQA/SQA3D scores ×100 of rows with ``answers`` and ``prediction``: ``EM``, ``EM_refined``,
    ``BLEU-1..4``, ``METEOR`` (None without the official scorer), ``ROUGE-L``, ``CIDEr``, ``num_questions``,
    ``caption_backend``; with ``by_type`` also ``per_type`` {type: {EM, EM_refined, count}} (SQA3D)."""
    if not rows:
        raise ValueError("no rows to score")
    scorer = scorer or CaptionScorer()
    em, emr, refs, hyps = [], [], {}, {}
    for i, r in enumerate(rows):
        text = r["prediction"] if isinstance(r["prediction"], str) else ""
        pred = clean_answer(extract_answer(text) if extract else text)
        gts = [clean_answer(a) for a in r["answers"]]
        e, er = answer_match(pred, gts)
        em.append(e)
        emr.append(er)
        refs[str(i)] = [g.replace("\n", " ").strip() for g in gts]
        hyps[str(i)] = pred
    caps = scorer(refs, hyps)
    out: dict = {"EM": 100.0 * float(np.mean(em)), "EM_refined": 100.0 * float(np.mean(emr))}
    out.update({k: (None if v is None else 100.0 * v) for k, v in caps.items()})
    out["num_questions"] = len(rows)
    out["caption_backend"] = scorer.backend
    if by_type:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            groups[r.get("question_type") or sqa3d_question_type(r["question"])].append(i)
        out["per_type"] = {
            t: {"EM": 100.0 * float(np.mean([em[i] for i in groups[t]])),
                "EM_refined": 100.0 * float(np.mean([emr[i] for i in groups[t]])), "count": len(groups[t])}
            for t in SQA3D_QUESTION_TYPES if t in groups
        }  # fmt: skip
    return out


# the decoding is part of it: resuming with another decoding is refused, never mixed (as VSI-Bench's)
FINGERPRINT_FIELDS = ("question_id", "answers", "prompt", "num_frames", "frame_indices", "generation")
RECORD_FIELDS = ("question_id", "scene_id", "question", "question_type", "answers")


def evaluate_qa(
    cfg: EvalConfig,
    predict: Predictor | Callable[[list[dict]], list[str]],
    *,
    rows: Sequence[dict] | None = None,
    scorer: CaptionScorer | None = None,
    state=None,
    progress: bool = False,
) -> dict:
    """Predict and score ScanQA (``cfg.benchmark == "scanqa"``, ``cfg.source`` the annotation file) or SQA3D
    (``"sqa3d"``, ``cfg.source`` the questions file, ``cfg.annotations`` the answers); write
    ``predictions.jsonl``, ``scores.json``, ``run.json``; resume from predictions already there."""
    if cfg.benchmark not in ("scanqa", "sqa3d"):
        raise ValueError(f"evaluate_qa handles scanqa and sqa3d, got {cfg.benchmark!r}")
    if rows is None:
        if cfg.benchmark == "scanqa":
            rows = load_scanqa(resolve_path(cfg.source))
        else:
            rows = load_sqa3d(resolve_path(cfg.source), resolve_path(cfg.annotations))
    rows = list(rows)[: cfg.limit] if cfg.limit is not None else list(rows)
    items = build_qa_items(rows, video_root=resolve_path(cfg.video_root), num_frames=cfg.num_frames,
                           frames_cache=load_frames_cache(resolve_path(cfg.frames_cache)),
                           generation=cfg.generation_kwargs())  # fmt: skip

    def score_fn(recs):
        return score_qa(recs, extract=cfg.extract_answer, scorer=scorer, by_type=cfg.benchmark == "sqa3d")

    return evaluate_items(
        items, predict, resolve_path(cfg.output_dir), score_fn, key=lambda it: it["question_id"],
        fingerprint_fields=FINGERPRINT_FIELDS, record_fields=RECORD_FIELDS, batch_size=cfg.batch_size,
        params=cfg, seed=cfg.seed, state=state, progress=progress,
    )  # fmt: skip
