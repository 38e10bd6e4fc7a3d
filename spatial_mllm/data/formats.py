"""Dataset files for QA rows: VSI-Bench rows, Qwen/Spatial-MLLM training conversations, Video-R1 rows.

Input everywhere is a QA row as :mod:`spatial_mllm.data.qa` makes it (VSI-Bench fields ``id, dataset,
scene_name, question_type, question, ground_truth, options`` plus ``answer``, ``slots``).

Formats
-------
* **VSI-Bench rows** (:func:`to_vsibench_row`): exactly the benchmark's columns. Multiple-choice
  ``ground_truth`` is the option letter (``"B"``) and ``options`` are ``"A. chair"`` strings; numeric
  ``ground_truth`` is a number string (``"2.9"``) and ``options`` is ``None``.
* **Training conversations** (:func:`to_training_record`), the Qwen2.5-VL fine-tuning layout Spatial-MLLM's
  ``TRAINING.md`` points to::

      {"video": "scannet/scene0000_00.mp4",
       "conversations": [{"from": "human", "value": "<video>\\n<prompt>"}, {"from": "gpt", "value": "B"}],
       "question_type": ..., "ground_truth": ..., "options": ...}

  ``<prompt>`` follows Spatial-MLLM's VSI-Bench evaluation (``src/evaluation/vsibench/eval_vsibench.py``):
  ``question + "\\nOptions:\\n" + "\\n".join(options) + "\\nAnswer with the option's letter from the given
  choices directly."`` for multiple choice and ``question + "\\nPlease answer the question using a single
  word or phrase."`` for numbers. ``style="lmms_eval"`` prefixes lmms-eval's ``"These are frames of a
  video.\\n"``; ``style="think"`` uses Video-R1's reasoning prompt (below).
* **Reasoning** (``style="think"``, :func:`to_video_r1_row`): Video-R1's ``QUESTION_TEMPLATE`` +
  ``TYPE_TEMPLATE`` ("multiple choice" / "numerical"), and the target
  ``<think>…</think><answer>…</answer>`` (:func:`format_think_answer`, :func:`parse_think_answer`).
  Video-R1 rows carry ``problem_id, problem, data_type, problem_type, options, process, solution, path,
  data_source``.

Deviation: Video-R1 appends ``"Options:\\n"`` right after the problem text; we put a newline between them
(the same text as the SFT prompt).

Determinism: writers emit one ``json.dumps(..., ensure_ascii=False)`` line per record in the given
order (or sorted by ``sort_by``), keys in a fixed order, floats as Python's shortest round-trip repr,
``\\n`` line endings, UTF-8 — the same input gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "VSIBENCH_FIELDS",
    "SFT_MCA_POST",
    "SFT_NA_POST",
    "LMMS_EVAL_PRE",
    "R1_QUESTION_TEMPLATE",
    "R1_TYPE_TEMPLATE",
    "is_multiple_choice",
    "build_prompt",
    "default_video_path",
    "to_vsibench_row",
    "to_training_record",
    "to_video_r1_row",
    "format_think_answer",
    "parse_think_answer",
    "write_jsonl",
    "read_jsonl",
    "read_vsibench_rows",
    "write_vsibench_rows",
    "write_training_jsonl",
]

VSIBENCH_FIELDS = ("id", "dataset", "scene_name", "question_type", "question", "ground_truth", "options")
MCA_TYPES = (
    "object_rel_direction_easy",
    "object_rel_direction_medium",
    "object_rel_direction_hard",
    "object_rel_distance",
    "route_planning",
    "obj_appearance_order",
)
NA_TYPES = ("object_abs_distance", "object_counting", "object_size_estimation", "room_size_estimation")

SFT_MCA_POST = "Answer with the option's letter from the given choices directly."
SFT_NA_POST = "Please answer the question using a single word or phrase."
LMMS_EVAL_PRE = "These are frames of a video."
R1_QUESTION_TEMPLATE = (
    "{Question}\n"
    "Please think about this question as if you were a human pondering deeply. "
    "Engage in an internal dialogue using expressions such as 'let me think', 'wait', 'Hmm', 'oh, I see', "
    "'let's break it down', etc, or other natural language thought expressions "
    "It's encouraged to include self-reflection or verification in the reasoning process. "
    "Provide your detailed reasoning between the <think> </think> tags, and then give your final answer "
    "between the <answer> </answer> tags."
)
R1_TYPE_TEMPLATE = {
    "multiple choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the "
    "<answer> </answer> tags.",
    "numerical": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
}
_THINK_RE = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.DOTALL)


def is_multiple_choice(question_type: str) -> bool:
    """True for VSI-Bench's multiple-choice types, False for numeric ones; raises for unknown types."""
    if question_type in MCA_TYPES:
        return True
    if question_type in NA_TYPES:
        return False
    raise ValueError(f"unknown question type {question_type!r}")


def _question_with_options(row: dict) -> str:
    if is_multiple_choice(row["question_type"]):
        if not row.get("options"):
            raise ValueError(f"multiple-choice row {row.get('id')} has no options")
        return row["question"] + "\nOptions:\n" + "\n".join(row["options"])
    return row["question"]


def build_prompt(row: dict, style: str = "sft") -> str:
    """The user text (without ``<video>``) for one row; ``style`` ∈ {"sft", "lmms_eval", "think"}."""
    mc = is_multiple_choice(row["question_type"])
    body = _question_with_options(row)
    if style == "sft":
        return body + "\n" + (SFT_MCA_POST if mc else SFT_NA_POST)
    if style == "lmms_eval":
        return LMMS_EVAL_PRE + "\n" + body + "\n" + (SFT_MCA_POST if mc else SFT_NA_POST)
    if style == "think":
        return (
            R1_QUESTION_TEMPLATE.format(Question=body)
            + R1_TYPE_TEMPLATE["multiple choice" if mc else "numerical"]
        )
    raise ValueError(f"unknown prompt style {style!r}; expected 'sft', 'lmms_eval' or 'think'")


def default_video_path(row: dict) -> str:
    """VSI-Bench's layout: ``<dataset>/<scene_name>.mp4`` (relative to the video root)."""
    return f"{row['dataset']}/{row['scene_name']}.mp4"


def to_vsibench_row(row: dict) -> dict:
    """The 7 VSI-Bench columns, in the benchmark's order."""
    missing = [k for k in VSIBENCH_FIELDS if k not in row]
    if missing:
        raise KeyError(f"row lacks VSI-Bench fields {missing}")
    out = {k: row[k] for k in VSIBENCH_FIELDS}
    out["ground_truth"] = str(out["ground_truth"])
    if not is_multiple_choice(row["question_type"]):
        out["options"] = None
    return out


def format_think_answer(think: str, answer: str) -> str:
    """``<think>{think}</think><answer>{answer}</answer>`` (no whitespace added)."""
    return f"<think>{think}</think><answer>{answer}</answer>"


def parse_think_answer(text: str) -> tuple[str, str] | None:
    """``(think, answer)`` from exactly one ``<think>…</think>`` followed by one ``<answer>…</answer>``
    (whitespace around allowed); None otherwise."""
    m = _THINK_RE.match(text)
    if m is None or "<think>" in m.group(1) or "<answer>" in m.group(2):
        return None
    return m.group(1), m.group(2)


def to_training_record(
    row: dict,
    video: str | None = None,
    style: str = "sft",
    think: str | None = None,
) -> dict:
    """One training conversation. The assistant turn is the ground truth (letter or number string); with
    ``style="think"`` it is ``<think>{think}</think><answer>{ground truth}</answer>`` and ``think`` is
    required."""
    gt = str(row["ground_truth"])
    if style == "think":
        if think is None:
            raise ValueError("style='think' needs the reasoning text (think=...)")
        target = format_think_answer(think, gt)
    else:
        target = gt
    return {
        "video": video if video is not None else default_video_path(row),
        "conversations": [
            {"from": "human", "value": "<video>\n" + build_prompt(row, style)},
            {"from": "gpt", "value": target},
        ],
        "question_type": row["question_type"],
        "ground_truth": gt,
        "options": row["options"] if is_multiple_choice(row["question_type"]) else None,
    }


def to_video_r1_row(row: dict, video: str | None = None, think: str = "") -> dict:
    """A Video-R1-style row (SFT cold start with ``think``, or GRPO where only ``solution`` is scored)."""
    mc = is_multiple_choice(row["question_type"])
    return {
        "problem_id": row["id"],
        "problem": row["question"],
        "data_type": "video",
        "problem_type": "multiple choice" if mc else "numerical",
        "options": list(row["options"]) if mc else [],
        "process": f"<think>{think}</think>",
        "solution": f"<answer>{row['ground_truth']}</answer>",
        "path": video if video is not None else default_video_path(row),
        "data_source": row["dataset"],
        "question_type": row["question_type"],
    }


# ---- files ------------------------------------------------------------------------------------------------
def write_jsonl(records: Iterable[dict], path: str | os.PathLike, sort_by: Callable | None = None) -> Path:
    """One JSON object per line (UTF-8, ``\\n``); ``sort_by`` a key function to sort records first."""
    records = list(records)
    if sort_by is not None:
        records = sorted(records, key=sort_by)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a jsonl file (blank lines ignored); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"jsonl file not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: invalid JSON ({e.msg})") from e
    return out


def write_vsibench_rows(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """VSI-Bench rows as jsonl, sorted by ``id``."""
    return write_jsonl([to_vsibench_row(r) for r in rows], path, sort_by=lambda r: r["id"])


def read_vsibench_rows(path: str | os.PathLike) -> list[dict]:
    """VSI-Bench rows from ``.jsonl``, ``.json`` (a list) or ``.parquet`` (the Hugging Face release);
    ``options`` normalised to a list or None."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VSI-Bench rows file not found: {path}")
    if path.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path).to_dict(orient="records")
    elif path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
    else:
        rows = read_jsonl(path)
    out = []
    for r in rows:
        missing = [k for k in VSIBENCH_FIELDS if k not in r]
        if missing:
            raise KeyError(f"{path}: row {r.get('id')} lacks fields {missing}")
        o = {k: r[k] for k in VSIBENCH_FIELDS}
        opts = o["options"]
        o["options"] = None if opts is None or len(opts) == 0 else [str(x) for x in opts]
        o["id"] = int(o["id"])
        o["ground_truth"] = str(o["ground_truth"])
        out.append(o)
    return out


def write_training_jsonl(
    rows: Iterable[dict],
    path: str | os.PathLike,
    style: str = "sft",
    video_path: Callable[[dict], str] = default_video_path,
    thinks: dict | None = None,
) -> Path:
    """Training conversations for ``rows`` (sorted by ``id``); ``thinks`` maps row id → reasoning text
    (required for ``style="think"``)."""
    rows = sorted(rows, key=lambda r: r["id"])
    recs = []
    for r in rows:
        think = None
        if style == "think":
            if thinks is None or r["id"] not in thinks:
                raise KeyError(f"style='think' but no reasoning for row {r['id']}")
            think = thinks[r["id"]]
        recs.append(to_training_record(r, video_path(r), style, think))
    return write_jsonl(recs, path)
