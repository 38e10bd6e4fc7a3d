"""VSI-Bench prompt sets, named, and the set each released checkpoint was evaluated with.

A *prompt set* turns one VSI-Bench row (``question``, ``question_type``, ``options``) into the user text that
follows the video in the chat turn. The sets, each reproduced to the character from its source:

* ``"v1.1"`` — Spatial-MLLM ``master`` (v1.1), ``src/evaluation/vsibench/eval_vsibench.py``
  (``SFT_TYPE_TEMPLATE`` + ``build_user_message``): multiple choice
  ``f"{question}\\nOptions:\\n{newline-joined options}\\nAnswer with the option's letter from the given choices
  directly."``, numbers ``f"{question}\\nPlease answer the question using a single word or phrase."``. The
  same script evaluates plain ``qwen2.5-vl`` models, so Qwen2.5-VL-3B-Instruct gets this set too.
* ``"sft"`` — our SFT training prompt (:func:`spatial_mllm.data.formats.build_prompt`, ``style="sft"``),
  character-identical to ``"v1.1"``. Kept as its own name so that configs written for training keep working;
  a run records which name it used (and does not resume predictions made under the other name).
* ``"v1.0"`` — Spatial-MLLM branch ``v1.0``, ``evaluate/eval_vsibench.py`` (``SFT_TYPE_TEMPLATE`` +
  ``prepare_single_message_eval``), the prompt of ``Diankun/Spatial-MLLM-subset-sft``: the answer goes inside
  ``<answer> </answer>`` tags. Multiple choice: ``question + "Options:\\n" + "".join(o + "\\n" for o in
  options) + " Please answer with the option's letter from the given choices (e.g., A, B, etc.) within the
  <answer> </answer> tags."`` (no newline before ``Options:``, one after every option, a space before the
  instruction); numbers: ``question + " Please answer with the only numerical value (e.g., 42, 3.14, etc.)
  within the <answer> </answer> tags."`` (v1.0 calls every numeric type ``"regression"``).
* ``"lmms_eval"`` — lmms-eval's ``vsibench_doc_to_text`` with the task's default kwargs
  (``lmms_eval/tasks/vsibench/utils.py``, ``_default_template_yaml``): the ``"v1.1"`` text with the
  pre-prompt ``"These are frames of a video.\\n"`` in front. Used only when asked for by name.
* ``"think"`` — the reasoning prompt of the GRPO stage, Video-R1's ``QUESTION_TEMPLATE`` + ``TYPE_TEMPLATE``
  (``src/r1-v/src/open_r1/grpo.py``); the answer goes inside ``<answer>`` tags after a ``<think>`` block.
* ``"auto"`` — not a set: the set of the checkpoint being evaluated (:data:`CHECKPOINT_PROMPT_SETS`,
  :func:`prompt_set_for`), resolved by :meth:`spatial_mllm.eval.vsibench.EvalConfig.for_checkpoint`.

Deviations from the official code:

1. The official v1.0 script reads its own annotation file (``evaluate/annotation/eval_vsibench.json``,
   ``problem`` / ``options`` / ``problem_type``); we build the same text from the VSI-Bench rows
   (``question`` / ``options`` / ``question_type``). Its 5,130 ``problem_id`` values are VSI-Bench's ids and its
   ``problem`` texts are VSI-Bench's questions, so the texts agree wherever the rows do.
2. ``"think"``: Video-R1 writes ``problem + "Options:\\n" + "".join(o + "\\n" ...)``; our GRPO rows put a
   newline between the question and ``Options:`` and none after the last option (the ``"v1.1"`` layout,
   :mod:`spatial_mllm.data.formats`). Numeric questions are character-identical.
3. The chat template around the text (system turn, the video placeholder before the text) is the
   processor's (:meth:`spatial_mllm.models.processing.SpatialMLLMProcessor.build_prompt`), as in both
   official scripts (``apply_chat_template`` of ``[video, text]``).
"""

from __future__ import annotations

from pathlib import PurePath

from spatial_mllm.data import formats

__all__ = [
    "PROMPT_SETS",
    "TAGGED_PROMPT_SETS",
    "CHECKPOINT_PROMPT_SETS",
    "V10_MCA_POST",
    "V10_NA_POST",
    "build_prompt",
    "uses_answer_tags",
    "prompt_set_for",
]

PROMPT_SETS = ("v1.1", "sft", "v1.0", "lmms_eval", "think")
# sets whose answer sits inside <answer>…</answer> (score with extract_answer; give the model room to write)
TAGGED_PROMPT_SETS = ("v1.0", "think")

# v1.0 branch, evaluate/eval_vsibench.py, SFT_TYPE_TEMPLATE["multiple choice"] and ["regression"]
V10_MCA_POST = (" Please answer with the option's letter from the given choices (e.g., A, B, etc.) within the "
                "<answer> </answer> tags.")
V10_NA_POST = " Please answer with the only numerical value (e.g., 42, 3.14, etc.) within the <answer> </answer> tags."

# released checkpoint → the prompt set its authors evaluated it with
CHECKPOINT_PROMPT_SETS: dict[str, str] = {
    "Diankun/Spatial-MLLM-subset-sft": "v1.0",  # v1.0 branch: scripts/evaluate_vsibench.sh
    "Diankun/Spatial-MLLM-v1.1-Instruct-135K": "v1.1",  # master: scripts/evaluation/evaluate_vsibench_*.sh
    "Diankun/Spatial-MLLM-v1.1-Instruct-820K": "v1.1",
    "Qwen/Qwen2.5-VL-3B-Instruct": "v1.1",  # master's eval_vsibench.py, model_type qwen2.5-vl, same prompts
}


def uses_answer_tags(prompt_set: str) -> bool:
    """True for the sets whose answer is inside ``<answer>`` tags (``v1.0``, ``think``)."""
    _check(prompt_set)
    return prompt_set in TAGGED_PROMPT_SETS


def _check(prompt_set: str) -> None:
    if prompt_set not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {prompt_set!r}; expected one of {list(PROMPT_SETS)}")


def build_prompt(row: dict, prompt_set: str) -> str:
    """The user text (without the video) of one VSI-Bench row in ``prompt_set`` (module docstring)."""
    _check(prompt_set)
    if prompt_set == "v1.0":
        if formats.is_multiple_choice(row["question_type"]):
            if not row.get("options"):
                raise ValueError(f"multiple-choice row {row.get('id')} has no options")
            return row["question"] + "Options:\n" + "".join(f"{o}\n" for o in row["options"]) + V10_MCA_POST
        return row["question"] + V10_NA_POST
    return formats.build_prompt(row, "sft" if prompt_set == "v1.1" else prompt_set)


def prompt_set_for(checkpoint: str | None) -> str:
    """The prompt set of a released checkpoint: its hub id (:data:`CHECKPOINT_PROMPT_SETS`), or a local folder
    whose name is the id's last part (``checkpoints/Spatial-MLLM-subset-sft``, as the official READMEs
    download them). Raises ``ValueError`` naming ``prompt_style`` for any other model."""
    name = str(checkpoint or "").rstrip("/\\")
    if name in CHECKPOINT_PROMPT_SETS:
        return CHECKPOINT_PROMPT_SETS[name]
    tail = PurePath(name).name.lower()
    for hub_id, prompt_set in CHECKPOINT_PROMPT_SETS.items():
        if tail and tail == hub_id.split("/")[-1].lower():
            return prompt_set
    raise ValueError(f"prompt_style 'auto' knows the prompt set of {sorted(CHECKPOINT_PROMPT_SETS)} only, not of "
                     f"{checkpoint!r}: set prompt_style to one of {list(PROMPT_SETS)}")
