"""Metric rules on hand-computed cases: VSI-Bench (lmms-eval rules), ScanQA/SQA3D (LEO / LLaVA-3D rules)."""

import math

import numpy as np
import pytest

from spatial_mllm.eval import metrics as M
from spatial_mllm.eval.vsibench import score

# ---- VSI-Bench -------------------------------------------------------------------------------------------------


def test_mra_thresholds_are_lmms_evals_ten_points():
    assert len(M.MRA_THRESHOLDS) == 10
    np.testing.assert_allclose(M.MRA_THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        (3.0, 3.0, 1.0),  # exact
        (2.9, 3.0, 1.0),  # 3.3% error <= every 1-C (smallest 0.05)
        (1.25, 1.0, 0.6),  # 25% error <= 1-C for C = .50 .55 .60 .65 .70 .75
        (1.5, 1.0, 0.1),  # 50% error: only C = .50
        (0.0, 1.0, 0.0),  # 100% error
        (-1.0, 4.0, 0.0),
        # 10% error in floats is 0.10000000000000009; linspace's 0.9 is 0.8999999999999999, so 1 - C is the
        # same float and C = .9 counts: 9/10 — what lmms-eval's numpy computes too
        (4.4, 4.0, 0.9),
    ],
)
def test_mean_relative_accuracy_hand_cases(pred, gt, expected):
    assert M.mean_relative_accuracy(pred, gt) == pytest.approx(expected)


def test_mra_zero_ground_truth_is_an_error():
    with pytest.raises(ValueError, match="ground truth of 0"):
        M.mean_relative_accuracy(1.0, 0.0)


@pytest.mark.parametrize(
    "text, expected",
    [("3 meters", 3.0), ("3m", None), ("3.", 3.0), ("", None), ("2,000", None), (" 3", None), ("1e3", 1000.0),
     ("4.5 square meters.", 4.5), ("12\n", 12.0), ("3\nmeters", None), ("abc", None)],
)  # fmt: skip
def test_parse_number_follows_first_token_then_float(text, expected):
    assert M.parse_number(text) == expected


@pytest.mark.parametrize(
    "pred, ok",
    [("B", 1), ("B.", 1), ("b", 1), ("B. table", 1), ("B\n", 1), ("B...", 1), ("(B)", 0), ("B.\n", 0), (" B", 0),
     ("", 0), ("C", 0), ("Bb", 0), ("The answer is B", 0)],
)  # fmt: skip
def test_mc_letter_match_is_lmms_eval_exact_match(pred, ok):
    assert M.mc_letter_match(pred, "B") == ok


def test_numeric_answers_score_zero_when_unparsable_and_mra_otherwise():
    assert M.score_answer("object_counting", "3m", "3") == 0.0
    assert M.score_answer("object_counting", "3 meters", "3") == 1.0
    assert M.score_answer("object_abs_distance", "", "1.5") == 0.0
    assert M.score_answer("room_size_estimation", "nan", "20") == 0.0
    assert M.score_answer("object_size_estimation", "150", "120") == pytest.approx(0.6)  # 25% error
    assert M.score_answer("route_planning", "B.", "B") == 1.0


def test_extract_answer():
    assert M.extract_answer("<think>hmm</think><answer> B </answer>") == "B"
    assert M.extract_answer("<answer>1</answer> then <answer>2.5</answer>") == "2.5"
    assert M.extract_answer("B. chair") == "B. chair"
    assert M.score_answer("object_counting", "<think>x</think><answer>4</answer>", "4", extract=True) == 1.0
    assert M.score_answer("object_counting", "<think>x</think><answer>4</answer>", "4") == 0.0  # lmms-eval


def test_spatial_mllm_repo_rule_differs_where_documented():
    # whole cleaned string must equal the letter; commas dropped from numbers; <answer> always read
    assert M.score_answer("object_rel_distance", "B. table", "B", rule="spatial_mllm") == 0.0
    assert M.score_answer("object_rel_distance", "<answer>b.</answer>", "B", rule="spatial_mllm") == 1.0
    assert M.score_answer("object_size_estimation", "2,000", "2000", rule="spatial_mllm") == 1.0
    assert M.score_answer("object_size_estimation", "2,000", "2000") == 0.0
    # strict < : a 50% error scores 0 there (lmms-eval: 0.1)
    assert M.score_answer("object_counting", "6", "4", rule="spatial_mllm") == 0.0
    assert M.score_answer("object_counting", "6", "4") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown scoring rule"):
        M.score_answer("object_counting", "6", "4", rule="nope")


def test_score_macro_and_micro_on_a_hand_built_set():
    rows = [
        ("object_counting", "4", "4"),  # 1.0
        ("object_counting", "4", "2"),  # 50% error → 0.1
        ("object_rel_direction_easy", "A", "A"),  # 1
        ("object_rel_direction_medium", "B", "C"),  # 0
        ("object_rel_direction_medium", "B", "B."),  # 1
        ("object_rel_direction_hard", "C", "D"),  # 0
        ("route_planning", "A", "a."),  # 1
    ]
    s = score([{"question_type": t, "ground_truth": g, "prediction": p} for t, g, p in rows])
    assert s["per_type"] == pytest.approx({
        "object_counting": 55.0, "object_rel_direction_easy": 100.0, "object_rel_direction_medium": 50.0,
        "object_rel_direction_hard": 0.0, "route_planning": 100.0,
    })  # fmt: skip
    assert s["per_task"] == pytest.approx({"object_counting": 55.0, "object_rel_direction": 50.0, "route_planning": 100.0})
    assert s["overall_macro"] == pytest.approx((55 + 50 + 100) / 3)
    assert s["overall_micro"] == pytest.approx(100 * 4.1 / 7)
    assert s["counts"]["object_counting"] == 2


def test_score_reports_rows_with_a_zero_ground_truth():
    with pytest.raises(ValueError, match="row 7"):
        score([{"id": 7, "question_type": "object_counting", "ground_truth": "0", "prediction": "1"}])


# ---- ScanQA / SQA3D ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, clean",
    [("The Brown Table.", "brown table"), ("2 chairs", "two chairs"), ("letf of the tv", "left of TV"),
     ("None", "zero"), ("walking backwards", "walking backward"), ("mat2 near no1", "mat near no"),
     ("  a  big   lamp ", "big lamp"), ("23", "twenty-three"), ("10 o' clock", "ten o'clock")],
)  # fmt: skip
def test_clean_answer_leo_rules(raw, clean):
    assert M.clean_answer(raw) == clean


def test_answer_match_em_and_refined():
    assert M.answer_match("brown table", ["brown table"]) == (1, 1)
    assert M.answer_match("table", ["brown table"]) == (0, 1)
    assert M.answer_match("brown wooden table", ["brown table", "wooden table"]) == (0, 1)
    assert M.answer_match("chair", ["table"]) == (0, 0)
    # exact match anywhere in the answers wins (LLaVA-3D); LEO's loop would return (0, 1) here
    assert M.answer_match("table", ["brown table", "table"]) == (1, 1)
    assert M.sqa3d_question_type("  Is the door open?") == "is"
    assert M.sqa3d_question_type("Where is it?") == "others"


def test_bleu_rouge_cider_hand_computed():
    refs = {"a": ["brown wooden table"]}
    hyps = {"a": ["brown table"]}
    b, per = M.bleu(refs, hyps)
    # unigram precision 2/2, brevity penalty exp(1 - 3/2)
    assert b[0] == pytest.approx(math.exp(-0.5), rel=1e-8)
    assert b[1] < 1e-6  # no matching bigram
    assert per[0][0] == pytest.approx(math.exp(-0.5), rel=1e-8)
    # ROUGE-L: LCS 2, P = 1, R = 2/3, beta = 1.2
    p, r = 1.0, 2 / 3
    assert M.rouge_l(refs, hyps)[0] == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))
    # CIDEr-D on two items: idf = log(2) for every n-gram, identical uni/bigram vectors → cosine 1 for n=1,2,
    # n=3,4 empty → 0; mean over n = 0.5, ×10 → 5 per perfect item
    refs2 = {"a": ["red chair"], "b": ["blue table"]}
    assert M.cider_d(refs2, {"a": ["red chair"], "b": ["blue table"]})[0] == pytest.approx(5.0)
    assert M.cider_d(refs2, {"a": ["red chair"], "b": ["green sofa"]})[0] == pytest.approx(2.5)
    # a one-item corpus has idf log(1) = 0 everywhere: CIDEr 0 (pycocoevalcap behaves the same)
    assert M.cider_d({"a": ["red chair"]}, {"a": ["red chair"]})[0] == 0.0
    # perfect 4-gram match → BLEU-4 = 1
    assert M.bleu({"a": ["on left side of bed"]}, {"a": ["on left side of bed"]})[0][3] == pytest.approx(1.0)


def test_ptb_approx_tokenizer_on_cleaned_answers():
    assert M.ptb_tokenize_approx("black, white") == "black white"
    assert M.ptb_tokenize_approx("person's chair") == "person 's chair"
    assert M.ptb_tokenize_approx("twenty-three chairs") == "twenty-three chairs"
    assert M.ptb_tokenize_approx("left - right") == "left right"
    assert M.ptb_tokenize_approx("TV stand") == "tv stand"


def test_caption_scorer_builtin_backend():
    sc = M.CaptionScorer("builtin")
    out = sc({"0": ["red chair"], "1": ["blue table"]}, {"0": "red chair", "1": "green sofa"})
    assert out["CIDEr"] == pytest.approx(2.5)
    assert out["METEOR"] is None
    assert out["BLEU-1"] == pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError):
        M.CaptionScorer("java")


@pytest.mark.skipif(not M.official_scorer_available(), reason="pycocoevalcap and java not installed")
def test_builtin_scorers_equal_pycocoevalcap():
    import random

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    rng = random.Random(0)
    words = "the table chair left right of on brown white two near wall door bed".split()
    refs = {i: [" ".join(rng.choices(words, k=rng.randint(1, 5))) for _ in range(rng.randint(1, 3))] for i in range(50)}
    hyps = {i: [" ".join(rng.choices(words, k=rng.randint(1, 5)))] for i in range(50)}
    assert M.bleu(refs, hyps)[0] == pytest.approx(Bleu(4).compute_score(refs, hyps, verbose=0)[0], rel=1e-12)
    assert M.rouge_l(refs, hyps)[0] == pytest.approx(Rouge().compute_score(refs, hyps)[0], rel=1e-12)
    assert M.cider_d(refs, hyps)[0] == pytest.approx(Cider().compute_score(refs, hyps)[0], rel=1e-12)
