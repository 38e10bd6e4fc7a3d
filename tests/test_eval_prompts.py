"""VSI-Bench prompt sets against the official strings, and the prompt set chosen per checkpoint.

The expected values are the texts the official scripts build, written out by hand from their source:

* v1.1 — diankun-wu/Spatial-MLLM, branch ``master``, ``src/evaluation/vsibench/eval_vsibench.py``
  (``SFT_TYPE_TEMPLATE``, ``build_user_message``: ``f"{raw_question}\\n{options_text}\\n{mca}"``);
* v1.0 — diankun-wu/Spatial-MLLM, branch ``v1.0``, ``evaluate/eval_vsibench.py`` (``SFT_TYPE_TEMPLATE``,
  ``prepare_single_message_eval``: ``problem + "Options:\\n" + op + "\\n" ... + type template``);
* lmms_eval — EvolvingLMMs-Lab/lmms-eval, ``lmms_eval/tasks/vsibench/utils.py`` (``vsibench_doc_to_text``) with
  ``_default_template_yaml``'s default kwargs (empty pre_prompt → "These are frames of a video.");
* think — tulerfeng/Video-R1, ``src/r1-v/src/open_r1/grpo.py`` (``QUESTION_TEMPLATE``, ``TYPE_TEMPLATE``).

The rows are VSI-Bench's (question texts of ids 0 and 957 as the v1.0 annotation file holds them).
"""

import pytest

from spatial_mllm.config import ConfigError
from spatial_mllm.eval import prompts
from spatial_mllm.eval.cli import build_eval_config, build_parser
from spatial_mllm.eval.vsibench import EvalConfig, build_items

NA = {"id": 0, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_counting",
      "question": "How many table(s) are in this room?", "ground_truth": "4", "options": None}
MC = {"id": 957, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_rel_direction_hard",
      "question": "If I am standing by the stove and facing the sofa, is the tv to my front-left, front-right, "
                  "back-left, or back-right?\nThe directions refer to the quadrants of a Cartesian plane (if I am "
                  "standing at the origin and facing along the positive y-axis).",
      "ground_truth": "A", "options": ["A. front-left", "B. back-right", "C. back-left", "D. front-right"]}
Q_MC = MC["question"]

# ---- the official texts ---------------------------------------------------------------------------------------
V11_NA = "How many table(s) are in this room?\nPlease answer the question using a single word or phrase."
V11_MC = (Q_MC + "\nOptions:\nA. front-left\nB. back-right\nC. back-left\nD. front-right\n"
          "Answer with the option's letter from the given choices directly.")
V10_NA = ("How many table(s) are in this room? Please answer with the only numerical value (e.g., 42, 3.14, etc.) "
          "within the <answer> </answer> tags.")
V10_MC = (Q_MC + "Options:\nA. front-left\nB. back-right\nC. back-left\nD. front-right\n"
          " Please answer with the option's letter from the given choices (e.g., A, B, etc.) within the "
          "<answer> </answer> tags.")
LMMS_NA = ("These are frames of a video.\nHow many table(s) are in this room?\n"
           "Please answer the question using a single word or phrase.")
LMMS_MC = ("These are frames of a video.\n" + Q_MC + "\nOptions:\nA. front-left\nB. back-right\nC. back-left\n"
           "D. front-right\nAnswer with the option's letter from the given choices directly.")
R1_NA = (
    "How many table(s) are in this room?\n"
    "Please think about this question as if you were a human pondering deeply. "
    "Engage in an internal dialogue using expressions such as 'let me think', 'wait', 'Hmm', 'oh, I see', "
    "'let's break it down', etc, or other natural language thought expressions "
    "It's encouraged to include self-reflection or verification in the reasoning process. "
    "Provide your detailed reasoning between the <think> </think> tags, and then give your final answer between "
    "the <answer> </answer> tags."
    " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags."
)
R1_MC_TYPE = (" Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> </answer> "
              "tags.")


def test_v11_is_spatial_mllm_masters_eval_prompt():
    assert prompts.build_prompt(NA, "v1.1") == V11_NA
    assert prompts.build_prompt(MC, "v1.1") == V11_MC
    # our SFT training prompt is the same text under its own name
    assert prompts.build_prompt(NA, "sft") == V11_NA and prompts.build_prompt(MC, "sft") == V11_MC


def test_v10_is_the_answer_tag_prompt_of_the_v10_branch():
    assert prompts.build_prompt(NA, "v1.0") == V10_NA
    assert prompts.build_prompt(MC, "v1.0") == V10_MC
    # every numeric type gets the "regression" template in v1.0
    for qt in ("object_abs_distance", "object_size_estimation", "room_size_estimation"):
        assert prompts.build_prompt({**NA, "question_type": qt}, "v1.0") == V10_NA
    assert prompts.uses_answer_tags("v1.0") and not prompts.uses_answer_tags("v1.1")
    with pytest.raises(ValueError, match="options"):
        prompts.build_prompt({**MC, "options": None}, "v1.0")


def test_lmms_eval_prompt_only_by_name():
    assert prompts.build_prompt(NA, "lmms_eval") == LMMS_NA
    assert prompts.build_prompt(MC, "lmms_eval") == LMMS_MC
    assert EvalConfig().prompt_style == "v1.1"  # the default is Spatial-MLLM's prompt, not lmms-eval's


def test_think_is_video_r1s_grpo_prompt():
    assert prompts.build_prompt(NA, "think") == R1_NA
    got = prompts.build_prompt(MC, "think")
    # documented deviation: Video-R1 writes question + "Options:\n" + "o\n"...; we keep the v1.1 option layout
    assert got.startswith(Q_MC + "\nOptions:\nA. front-left\nB. back-right\nC. back-left\nD. front-right\n"
                                 "Please think about this question")
    assert got.endswith(R1_MC_TYPE) and prompts.uses_answer_tags("think")


def test_unknown_prompt_set_is_an_error():
    with pytest.raises(ValueError, match="unknown prompt set"):
        prompts.build_prompt(NA, "v2")
    with pytest.raises(ConfigError, match="prompt_style"):
        EvalConfig.from_dict({"prompt_style": "v2"})


@pytest.mark.parametrize("checkpoint, expected", [
    ("Diankun/Spatial-MLLM-subset-sft", "v1.0"),
    ("Diankun/Spatial-MLLM-v1.1-Instruct-135K", "v1.1"),
    ("Diankun/Spatial-MLLM-v1.1-Instruct-820K", "v1.1"),
    ("Qwen/Qwen2.5-VL-3B-Instruct", "v1.1"),
    ("/data/checkpoints/Spatial-MLLM-subset-sft/", "v1.0"),  # a local download, as the official README makes
    ("checkpoints/Spatial-MLLM-v1.1-Instruct-135K", "v1.1"),
])  # fmt: skip
def test_prompt_set_per_checkpoint(checkpoint, expected):
    assert prompts.prompt_set_for(checkpoint) == expected


def test_auto_resolves_per_checkpoint_and_refuses_unknown_models():
    cfg = EvalConfig(prompt_style="auto")
    v10 = cfg.for_checkpoint("Diankun/Spatial-MLLM-subset-sft")
    assert (v10.prompt_style, v10.extract_answer) == ("v1.0", True)  # tags are scored by their content
    v11 = cfg.for_checkpoint("Diankun/Spatial-MLLM-v1.1-Instruct-135K")
    assert (v11.prompt_style, v11.extract_answer) == ("v1.1", False)
    assert EvalConfig(prompt_style="lmms_eval").for_checkpoint("anything").prompt_style == "lmms_eval"
    with pytest.raises(ValueError, match="prompt_style"):
        cfg.for_checkpoint("outputs/paper/sft/final")
    with pytest.raises(ValueError, match="resolved"):
        build_items([NA], prompt_style="auto")


def test_items_carry_the_prompt_set():
    items = build_items([NA, MC], prompt_style="v1.0")
    assert [it["prompt"] for it in items] == [V10_NA, V10_MC]
    assert {it["prompt_set"] for it in items} == {"v1.0"}


def test_cli_resolves_auto_for_the_model():
    def cfg(*argv):
        return build_eval_config(build_parser().parse_args(["vsibench", *argv, "--data", "rows.jsonl"]))

    assert cfg("--model", "Diankun/Spatial-MLLM-subset-sft", "--prompt-style", "auto").prompt_style == "v1.0"
    assert cfg("--model", "Diankun/Spatial-MLLM-v1.1-Instruct-820K", "--prompt-style", "auto").prompt_style == "v1.1"
    assert cfg("--model", "frequency", "--prompt-style", "auto").prompt_style == "v1.1"  # baselines: unused
    assert cfg("--model", "tiny").prompt_style == "v1.1"
    with pytest.raises(ConfigError, match="prompt_style"):
        cfg("--model", "tiny", "--prompt-style", "auto")
