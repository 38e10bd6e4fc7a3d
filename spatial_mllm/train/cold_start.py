"""Stage 2: cold start — sample reasoning from a teacher, keep what the task reward accepts, fine-tune on it.

The paper (following Video-R1) generates chain-of-thought answers with a large model (Qwen2.5-VL-72B),
keeps those whose answer is right, and fine-tunes the SFT model on them before GRPO, so that GRPO starts
from a policy that already writes ``<think>…</think><answer>…</answer>``. Here:

1. **Sample** ``cold_start_k`` completions per question (Video-R1's reasoning prompt,
   :func:`spatial_mllm.train.rollouts.load_rows`) from ``cold_start_teacher``: a checkpoint path / hub id, the
   starting policy (``"policy"``), or ``"template"`` — a scripted CPU stand-in (:func:`template_teacher`)
   that writes a short reasoning and an answer that is right with probability 0.6 (wrong letter / a number
   off by up to ±60 % otherwise) and breaks the format one time in ten, so the filter has something to do.
2. **Filter**: keep a completion when it is well-formed (``format`` reward 1) and its task reward
   (:func:`spatial_mllm.train.rewards.task_reward`: accuracy, MRA or Levenshtein) is at least the threshold of
   its ``question_type`` or, failing that, of its kind (``mc`` / ``numeric`` / ``free``). Distinct passing
   completions of a question are all kept. kept/total per task type → ``<output_dir>/tables/04_cold_start_kept.csv``.
3. **Fine-tune** on the kept conversations with the SFT trainer (:func:`spatial_mllm.train.sft.train_sft`;
   no second trainer): ``cold_start_steps`` steps at ``cold_start_lr``, batch ``cold_start_batch_size``,
   the SFT stage's other defaults (cosine schedule, 3 % warm-up, weight decay 0.1, answer-only labels).

Departures from the paper / Video-R1:

1. The teacher is any model (default ``"template"`` on the tiny preset; the paper: Qwen2.5-VL-72B); its
   sampling runs on the main process only, the other processes wait (a 72B teacher belongs on its own node:
   write its completions with :func:`sample_teacher` there, then fine-tune).
2. The filter is the task reward with a per-type threshold (Video-R1 filters by answer correctness and
   rule-based checks); numbers need MRA ≥ 0.5 by default, not an exact match.
3. The SFT trainer's checkpoint folder is fixed to ``<its output_dir>/checkpoints/sft``; the cold start
   therefore runs it with ``output_dir = <output_dir>/cold_start`` and its model lands in
   ``<output_dir>/cold_start/checkpoints/sft`` (the kept data beside it, in ``cold_start/data/``).
4. With no kept completion the fine-tuning is skipped (said in the output) and GRPO starts from the
   starting policy.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spatial_mllm.config import resolve_path
from spatial_mllm.data.formats import read_jsonl, write_jsonl
from spatial_mllm.train.rewards import completion_text, is_malformed, task_kind, task_reward

__all__ = ["template_teacher", "sample_teacher", "filter_completions", "kept_table", "run_cold_start"]

_P_CORRECT, _P_MALFORMED = 0.6, 0.1


def template_teacher(rows: list[dict], k: int, seed: int = 0) -> list[list[str]]:
    """A scripted stand-in teacher (CPU presets): ``k`` reasoning completions per row, right with
    probability 0.6, malformed with probability 0.1."""
    rng = np.random.default_rng(seed)
    out = []
    for r in rows:
        kind = task_kind(r["question_type"], r["options"])
        comps = []
        for _ in range(k):
            right = rng.random() < _P_CORRECT
            if kind == "mc":
                letters = [str(o).split(".")[0].strip() for o in (r["options"] or [])] or ["A", "B"]
                gt = str(r["ground_truth"])
                answer = gt if right or len(letters) < 2 else str(rng.choice([x for x in letters if x != gt]))
            elif kind == "numeric":
                gt = float(r["ground_truth"])
                err = 0.0 if right else float(rng.uniform(-0.6, 0.6))
                answer = f"{gt * (1 + err):.1f}" if gt % 1 or err else f"{gt:.0f}"
            else:
                answer = str(r["ground_truth"]) if right else "not sure"
            what = str(r["question_type"]).replace("_", " ")
            think = f"{what}: so {answer}"  # short: the tiny preset has to learn it in a few steps
            text = f"<think>{think}</think><answer>{answer}</answer>"
            if rng.random() < _P_MALFORMED:
                text = text.replace("</think>", "")
            comps.append(text)
        out.append(comps)
    return out


def sample_teacher(cfg, rows: list[dict], policy=None, processor=None) -> list[list[str]]:
    """``cfg.cold_start_k`` completions per row from ``cfg.cold_start_teacher`` (see the module docstring)."""
    from spatial_mllm.train.rollouts import generate_completions, load_policy

    teacher = cfg.cold_start_teacher
    if teacher == "template":
        return template_teacher(rows, cfg.cold_start_k, cfg.seed)
    if teacher == "policy":
        model, proc = policy, processor
    else:
        model, proc, _ = load_policy(cfg, teacher)
        model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    out: list[list[str]] = []
    batch = max(1, cfg.prompts_per_step)
    for i in range(0, len(rows), batch):
        ro = generate_completions(model, proc, rows[i:i + batch], cfg.cold_start_k,
                                  temperature=cfg.cold_start_temperature, max_new_tokens=cfg.max_new_tokens)
        out += [ro.texts[j:j + cfg.cold_start_k] for j in range(0, len(ro.texts), cfg.cold_start_k)]
    return out


def _threshold(thresholds: dict[str, float], row: dict) -> float:
    if row["question_type"] in thresholds:
        return thresholds[row["question_type"]]
    return thresholds.get(task_kind(row["question_type"], row["options"]), 1.0)


def filter_completions(rows: list[dict], completions: list[list[str]], thresholds: dict[str, float]
                       ) -> tuple[list[tuple[dict, str]], list[dict]]:
    """Kept ``(row, completion)`` pairs and one record per sampled completion (type, score, format, kept)."""
    kept, records = [], []
    for r, comps in zip(rows, completions):
        seen = set()
        for c in comps:
            text = completion_text(c)
            well_formed = not is_malformed(text)
            score = task_reward(text, r["question_type"], r["ground_truth"], r["options"])
            ok = well_formed and score >= _threshold(thresholds, r) and text not in seen
            if ok:
                seen.add(text)
                kept.append((r, text))
            records.append({"question_type": r["question_type"], "score": score, "format": well_formed,
                            "kept": ok})
    return kept, records


def kept_table(records: list[dict]) -> list[dict]:
    """kept / total per question type (+ an ``all`` row)."""
    tot, kept = Counter(), Counter()
    for rec in records:
        tot[rec["question_type"]] += 1
        kept[rec["question_type"]] += int(rec["kept"])
    rows = [{"question_type": qt, "kept": kept[qt], "total": tot[qt], "kept_frac": kept[qt] / tot[qt]}
            for qt in sorted(tot)]
    n = sum(tot.values())
    rows.append({"question_type": "all", "kept": sum(kept.values()), "total": n,
                 "kept_frac": sum(kept.values()) / n if n else 0.0})
    return rows


def run_cold_start(cfg, model, processor, source: str) -> dict[str, Any]:
    """Sample → filter → fine-tune with ``train_sft``. Returns ``{"model", "checkpoint", "table", "kept"}``;
    ``model`` is the fine-tuned policy (or the starting one when nothing was kept)."""
    from accelerate import PartialState

    from spatial_mllm.train.rollouts import load_rows
    from spatial_mllm.train.sft import SFTConfig, load_sft_checkpoint, train_sft

    state = PartialState()
    base = resolve_path(cfg.output_dir)
    run_dir = base / "cold_start"
    data_file = run_dir / "data" / "cold_start_sft.jsonl"
    table_file = base / "tables" / "04_cold_start_kept.csv"
    ckpt = run_dir / "checkpoints" / "sft"
    if cfg.task == "toy":
        print("[cold start] the toy task has no videos or reasoning: skipped")
        return {"model": model, "checkpoint": source, "table": [], "kept": 0}

    # ---- 1-2: teacher samples and the filter (main process; the others wait for the file)
    if state.is_main_process and not data_file.is_file():
        train_file = cfg.train_file or str(base / "data" / "train_sft.jsonl")
        records = read_jsonl(resolve_path(train_file))[:cfg.cold_start_rows]
        rows = load_rows(train_file, cfg.video_root, cfg.cold_start_rows)
        completions = sample_teacher(cfg, rows, model, processor)
        kept, recs = filter_completions(rows, completions, cfg.cold_start_thresholds)
        table = kept_table(recs)
        by_prompt = {r["prompt"]: (r, rec) for r, rec in zip(rows, records)}
        convs = []
        for r, text in kept:
            _, rec = by_prompt[r["prompt"]]
            convs.append({"video": r["video"], "conversations": [
                {"from": "human", "value": "<video>\n" + r["prompt"]}, {"from": "gpt", "value": text}],
                "question_type": r["question_type"], "ground_truth": r["ground_truth"], "options": r["options"]})
        table_file.parent.mkdir(parents=True, exist_ok=True)
        with open(table_file, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["question_type", "kept", "total", "kept_frac"])
            w.writeheader()
            w.writerows(table)
        (run_dir / "data").mkdir(parents=True, exist_ok=True)
        (run_dir / "kept_table.json").write_text(json.dumps(table, indent=1))
        write_jsonl(convs, data_file)
    state.wait_for_everyone()
    table = json.loads((run_dir / "kept_table.json").read_text())
    n_kept = table[-1]["kept"] if table else 0
    print(f"[cold start] kept {n_kept}/{table[-1]['total'] if table else 0} teacher completions "
          f"(teacher: {cfg.cold_start_teacher})")
    if n_kept == 0:
        print("[cold start] nothing passed the filter: fine-tuning skipped, GRPO starts from the starting policy")
        return {"model": model, "checkpoint": source, "table": table, "kept": 0}

    # ---- 3: fine-tune with the SFT trainer
    sft_cfg = SFTConfig(
        output_dir=str(run_dir), seed=cfg.seed, data_dir=str(run_dir / "data"), train_file=data_file.name,
        build_data_if_missing=False, num_frames=cfg.num_frames, min_pixels=cfg.min_pixels,
        max_pixels=cfg.max_pixels, pixel_preset=cfg.pixel_preset, second_per_grid_t=cfg.second_per_grid_t,
        learning_rate=cfg.cold_start_lr, mm_projector_lr=cfg.cold_start_lr,
        max_steps=cfg.cold_start_steps, global_batch_size=cfg.cold_start_batch_size * state.num_processes,
        per_device_train_batch_size=cfg.cold_start_batch_size, save_steps=max(1, cfg.cold_start_steps),
        logging_steps=max(1, min(5, cfg.cold_start_steps)), train_merger="merger" in cfg.trainable,
        train_connector="connector" in cfg.trainable, train_llm="llm" in cfg.trainable,
        train_vision="vision" in cfg.trainable, train_spatial="spatial" in cfg.trainable,
        gradient_checkpointing=cfg.gradient_checkpointing)
    if not (ckpt / "sft_result.json").is_file():
        result = train_sft(sft_cfg, model=model, processor=processor)
        log = result.log_history
        if state.is_main_process:  # the model card says what this fine-tune was: a cold start on teacher samples
            from spatial_mllm.models.hub import write_model_card
            from spatial_mllm.train.sft import sft_run_record

            teacher = {"teacher": cfg.cold_start_teacher, "questions": cfg.cold_start_rows,
                       "samples_per_question": cfg.cold_start_k, "temperature": cfg.cold_start_temperature,
                       "thresholds": cfg.cold_start_thresholds, "kept": n_kept, "started_from": source}
            write_model_card(ckpt, run_info=sft_run_record(sft_cfg, result, stage="cold_start", cold_start=teacher),
                             processor=processor)
    else:
        log = json.loads((ckpt / "sft_result.json").read_text())["log_history"]
        print(f"[cold start] found a finished cold start in {ckpt}: reused")
    trained, _ = load_sft_checkpoint(ckpt)
    return {"model": trained, "checkpoint": str(ckpt), "table": table, "kept": n_kept, "log_history": log}


def cold_start_log(path: str | Path) -> list[dict]:
    """The SFT trainer's log history of a finished cold start (``sft_result.json``)."""
    return json.loads((Path(path) / "sft_result.json").read_text())["log_history"]
