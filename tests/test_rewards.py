"""Reward functions on hand-written completions, malformed ones included."""

import math

import pytest

from spatial_mllm.train.rewards import (
    REWARDS,
    VIDEO_R1_LENGTH,
    completion_text,
    digit_fraction_reward,
    get_reward_funcs,
    is_malformed,
    levenshtein_similarity,
    make_length_reward,
    task_kind,
    task_reward,
)

MC = dict(question_type="object_rel_direction_hard", ground_truth="B",
          options=["A. front-left", "B. front-right", "C. back-left", "D. back-right"])
NUM = dict(question_type="object_abs_distance", ground_truth="2.0", options=None)
FREE = dict(question_type="scanqa", ground_truth="brown wooden chair", options=None)


def _call(name, completions, row):
    n = len(completions)
    kw = {k: [v] * n for k, v in row.items()}
    if name == "length":  # counts tokens: TRL's completion_ids (here: one id per character)
        kw["completion_ids"] = [list(range(len(completion_text(c)))) for c in completions]
    return REWARDS[name](completions, **kw)


MALFORMED = [
    "",  # empty
    "B",  # no tags
    "<think>hmm</think>",  # missing answer
    "<answer>B</answer>",  # missing think
    "<think>a</think><answer>B</answer><answer>C</answer>",  # two answers
    "<think>a</think><think>b</think><answer>B</answer>",  # two thinks
    "<answer>B</answer><think>a</think>",  # wrong order
    "<think>a</think> then <answer>B</answer>",  # text between
    "<think>a<answer>B</answer></think>",  # nested
    "<think>a</think><answer>B",  # unclosed
    "préface <think>a</think><answer>B</answer>",  # text before
    "<think>🤔 ünïcödé</think><answer>B</answer> ✓",  # text after
    "<THINK>a</THINK><ANSWER>B</ANSWER>",  # wrong case
]


def test_registry_contract():
    for name in ("format", "accuracy", "mra", "levenshtein"):
        assert callable(REWARDS[name])
    with pytest.raises(KeyError, match="unknown reward"):
        get_reward_funcs(["format", "acuracy"])


@pytest.mark.parametrize("text", [
    "<think>a</think><answer>B</answer>",
    "  <think>\nlet me think\n</think>\n\n<answer> B </answer>\n",
    "<think>🤔 ünïcödé 距离</think> <answer>B</answer>",
    "<think></think><answer></answer>",
])
def test_format_accepts_exactly_one_think_then_one_answer(text):
    assert _call("format", [text], MC) == [1.0]
    assert not is_malformed(text)


@pytest.mark.parametrize("text", MALFORMED)
def test_format_rejects_malformed(text):
    assert _call("format", [text], MC) == [0.0]
    assert is_malformed(text)


def test_accuracy_multiple_choice():
    comps = [
        "<think>x</think><answer>B</answer>",  # letter
        "<think>x</think><answer>b.</answer>",  # lower case + dot
        "<think>x</think><answer>B. front-right</answer>",  # letter + text
        "<think>x</think><answer>front-right</answer>",  # option text
        "<think>x</think><answer>Front-Right.</answer>",  # option text, case and dot
        "B",  # no tags: whole text
        "<think>x</think><answer>(B)</answer>",  # VSI-Bench rule: first token "(B)" ≠ "B"
        "<think>x</think><answer>A</answer>",  # wrong
        "<think>x</think><answer>front-left</answer>",  # wrong text
        "<think>B</think><answer>C</answer>",  # right letter only in the reasoning
        "<think>x</think><answer>A</answer><answer>B</answer>",  # malformed: the last answer is read
        "", "🙂", None, 42,  # empty, unicode, not strings
    ]
    assert _call("accuracy", comps, MC) == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    # not applicable to numeric or free-form questions
    assert _call("accuracy", comps[:2], NUM) == [None, None]
    assert _call("accuracy", comps[:2], FREE) == [None, None]


def test_accuracy_with_ground_truth_as_option_text():
    row = dict(question_type="object_rel_direction_easy", ground_truth="right", options=["A. left", "B. right"])
    assert _call("accuracy", ["<answer>B</answer>", "<answer>right</answer>", "<answer>A</answer>"], row) \
        == [1.0, 1.0, 0.0]


def test_mra_numeric():
    comps = [
        "<think>x</think><answer>2.0</answer>",  # exact
        "<think>x</think><answer>2.25 meters</answer>",  # 12.5% off → passes C = 0.50..0.85
        "<think>x</think><answer>4</answer>",  # 100% off
        "<think>x</think><answer>2m</answer>",  # VSI-Bench: "2m" is not a number
        "<think>x</think><answer>two</answer>",  # non-numeric
        "<think>x</think><answer></answer>",  # empty answer
        "<think>x</think><answer>nan</answer>", "<answer>inf</answer>", "<answer>1e999</answer>",
        "<answer>-2</answer>",
        "2.0",  # no tags: whole text
        "<think>2.0</think><answer>9</answer>",  # the number in the reasoning does not count
        "", "２.０ ünïcödé", None,
    ]
    got = _call("mra", comps, NUM)
    assert got[0] == 1.0
    assert got[1] == pytest.approx(0.8)
    assert got[2] == 0.0
    assert got[3:10] == [0.0] * 7
    assert got[10] == 1.0
    assert got[11] == 0.0
    assert got[12] == 0.0 and got[14] == 0.0
    assert 0.0 <= got[13] <= 1.0  # python's float reads full-width digits; whatever it gives, no raise
    assert _call("mra", comps[:1], MC) == [None]


def test_mra_rejects_bad_ground_truth_not_model_text():
    with pytest.raises(ValueError, match="not a number"):
        _call("mra", ["<answer>1</answer>"], dict(NUM, ground_truth="two"))
    with pytest.raises(ValueError, match="ground truth 0"):
        _call("mra", ["<answer>1</answer>"], dict(NUM, ground_truth="0"))


def test_levenshtein_free_form():
    comps = ["<think>x</think><answer>brown wooden chair</answer>", "<answer>Brown  Wooden chair.</answer>",
             "<answer>brown chair</answer>", "<answer></answer>", "zzz", "🪑"]
    got = _call("levenshtein", comps, FREE)
    assert got[:2] == [1.0, 1.0]
    assert got[2] == pytest.approx(1 - 7 / 18)
    assert got[3] == 0.0
    assert all(0.0 <= g < 0.2 for g in got[4:])
    assert _call("levenshtein", comps[:1], MC) == [None]
    assert _call("levenshtein", comps[:1], NUM) == [None]
    assert levenshtein_similarity("", "") == 1.0
    assert levenshtein_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert levenshtein_similarity("a" * 100_000, "a") < 0.01  # long text: cut, bounded time


def test_values_in_unit_interval_on_junk():
    junk = ["<think>" * 50, "</answer>" * 30 + "<answer>", "\x00\x01\x02", "<answer>" + "9" * 400 + "</answer>",
            "<think>a</think><answer>B</answer>" * 3, "\n\n\t", "A" * 5000, "<answer>-0</answer>"]
    for row in (MC, NUM, FREE):
        for name in ("format", "accuracy", "mra", "levenshtein", "length", "digit_fraction"):
            for v in _call(name, junk, row):
                assert v is None or (0.0 <= v <= 1.0 and not math.isnan(v)), (name, row, v)


def test_task_kind_and_task_reward():
    assert task_kind("route_planning") == "mc"
    assert task_kind("object_counting") == "numeric"
    assert task_kind("sqa3d", ["A. yes", "B. no"]) == "mc"
    assert task_kind("scanqa", None) == "free"
    assert task_reward("<answer>4</answer>", "object_counting", "4") == 1.0


def _rows(row, n):
    return {k: [v] * n for k, v in row.items()}


def test_length_reward_is_video_r1s():
    # Video-R1 grpo_trainer.py (len_control): +0.2 for a correct completion of 320..512 tokens, only when more
    # than one completion of the batch is correct; correct = accuracy reward > 0.1
    assert VIDEO_R1_LENGTH == {"min_tokens": 320, "max_tokens": 512, "correct_above": 0.1, "weight": 0.2}
    f = REWARDS["length"]
    right, wrong = "<think>a</think><answer>B</answer>", "<think>a</think><answer>A</answer>"
    texts = [right, right, right, wrong, right]
    ids = [[0] * n for n in (320, 512, 513, 400, 319)]  # token counts decide, not the text
    assert f(texts, completion_ids=ids, **_rows(MC, 5)) == [1.0, 1.0, 0.0, 0.0, 0.0]
    # a single correct completion gets no bonus (len(selected_indices) > 1)
    assert f([right, wrong, wrong], completion_ids=[[0] * 400] * 3, **_rows(MC, 3)) == [0.0, 0.0, 0.0]
    # correct = task reward > 0.1; numbers: MRA (1.5 for 2.0 is 25 % off: MRA 0.6; 9 for 2.0: MRA 0)
    num = ["<answer>2.0</answer>", "<answer>1.9</answer>", "<answer>1.5</answer>", "<answer>9</answer>"]
    assert f(num, completion_ids=[[0] * 330] * 4, **_rows(NUM, 4)) == [1.0, 1.0, 1.0, 0.0]
    # no format needed (Video-R1 checks accuracy only); a plain "B" is correct
    assert f(["B", "B"], completion_ids=[[0] * 320] * 2, **_rows(MC, 2)) == [1.0, 1.0]
    # per group when group_size is set: group 2 has one correct completion only
    g = make_length_reward(group_size=2)
    assert g([right, right, right, wrong], completion_ids=[[0] * 400] * 4, **_rows(MC, 4)) == [1.0, 1.0, 0.0, 0.0]


class _CharTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text)}


def test_length_reward_counts_tokens_not_words():
    right = "<think>" + "x" * 300 + "</think><answer>B</answer>"  # ONE word; 333 characters (+ EOS = 334 tokens)
    n = len(right) + 1  # the re-tokenised text + the EOS that decoding dropped
    f = make_length_reward(tokenizer=_CharTokenizer())
    assert n == 334 and f([right, right], **_rows(MC, 2)) == [1.0, 1.0]
    at = make_length_reward(min_tokens=n, max_tokens=n, tokenizer=_CharTokenizer())
    assert at([right, right], **_rows(MC, 2)) == [1.0, 1.0]
    above = make_length_reward(min_tokens=n + 1, tokenizer=_CharTokenizer())
    assert above([right, right], **_rows(MC, 2)) == [0.0, 0.0]
    with pytest.raises(ValueError, match="counts completion tokens"):
        REWARDS["length"]([right], **_rows(MC, 1))  # neither completion_ids nor a tokenizer: a plumbing error
    with pytest.raises(ValueError, match="'completion_ids' has 1 values for 2"):
        REWARDS["length"]([right, right], completion_ids=[[1]], **_rows(MC, 2))
    with pytest.raises(ValueError, match="groups of 3"):
        make_length_reward(group_size=3)([right, right], completion_ids=[[1], [1]], **_rows(MC, 2))
    with pytest.raises(ValueError):
        make_length_reward(5, 3)


def test_conversational_completions_and_toy_reward():
    conv = [[{"role": "assistant", "content": "<think>a</think><answer>B</answer>"}]]
    assert _call("format", conv, MC) == [1.0]
    assert _call("accuracy", conv, MC) == [1.0]
    assert digit_fraction_reward(["12ab", "", "  ", "٣"]) == [0.5, 0.0, 0.0, 0.0]


def test_kwargs_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="has 1 values for 2 completions"):
        REWARDS["accuracy"](["a", "b"], question_type=["route_planning"], ground_truth=["A", "A"])
