"""ScanQA / SQA3D: loading the public annotation formats, prompts, EM / refined EM and the pipeline."""

from pathlib import Path

import pytest

from spatial_mllm.eval.baselines import MostFrequentAnswer
from spatial_mllm.eval.metrics import CaptionScorer
from spatial_mllm.eval.scanqa import build_qa_items, evaluate_qa, load_scanqa, load_sqa3d, score_qa
from spatial_mllm.eval.vsibench import EvalConfig

FIX = Path(__file__).parent / "fixtures"


class LocalState:
    process_index, num_processes, is_main_process = 0, 1, True

    def wait_for_everyone(self):
        pass


def test_load_scanqa_and_sqa3d():
    sq = load_scanqa(FIX / "eval_scanqa_val.json")
    assert [r["question_id"] for r in sq][:2] == ["val-scene0011-0", "val-scene0011-1"]
    assert sq[1]["answers"] == ["2", "two chairs"]
    s3 = load_sqa3d(FIX / "eval_sqa3d_questions.json", FIX / "eval_sqa3d_annotations.json")
    assert [r["question_type"] for r in s3] == ["what", "is", "how"]
    assert s3[2]["answers"] == ["3"] and s3[0]["question_id"] == "220602000000"
    items = build_qa_items(s3, video_root="/videos")
    assert items[1]["prompt"] == "I am sitting on the bed. Is the door behind me? Answer the question simply."
    assert items[1]["video"] == "/videos/scene0380_00.mp4" and items[1]["num_frames"] == 32


def test_score_qa_hand_computed():
    rows = [
        {"answers": ["brown wooden table"], "prediction": "The brown wooden table."},  # EM (after cleaning)
        {"answers": ["2", "two chairs"], "prediction": "two"},  # "2" → "two": EM
        {"answers": ["on left side of bed"], "prediction": "left side"},  # contained: refined only
        {"answers": ["black tv"], "prediction": "a lamp"},  # neither
    ]
    s = score_qa(rows, scorer=CaptionScorer("builtin"))
    assert s["EM"] == pytest.approx(50.0)
    assert s["EM_refined"] == pytest.approx(75.0)
    assert s["num_questions"] == 4 and s["caption_backend"] == "builtin" and s["METEOR"] is None
    # BLEU-1 by hand: hyps "brown wooden table"(3, 3 correct), "two"(1, 1), "left side"(2, 2), "lamp"(1, 0);
    # closest ref lengths 3, 1 ("two"), 5, 2 → precision 6/7, brevity exp(1 - 11/7)
    import math

    assert s["BLEU-1"] == pytest.approx(100 * 6 / 7 * math.exp(1 - 11 / 7), rel=1e-6)
    with_tags = [{**r, "prediction": f"<think>x</think><answer>{r['prediction']}</answer>"} for r in rows]
    assert score_qa(with_tags, extract=True, scorer=CaptionScorer("builtin"))["EM"] == pytest.approx(50.0)


def test_sqa3d_pipeline_end_to_end_with_a_baseline(tmp_path):
    rows = load_sqa3d(FIX / "eval_sqa3d_questions.json", FIX / "eval_sqa3d_annotations.json")
    cfg = EvalConfig(benchmark="sqa3d", source=str(FIX / "eval_sqa3d_questions.json"),
                     annotations=str(FIX / "eval_sqa3d_annotations.json"), output_dir=str(tmp_path / "sqa3d"))  # fmt: skip
    pred = MostFrequentAnswer(rows)  # fitted on the same rows: each first word has one answer
    s = evaluate_qa(cfg, pred, scorer=CaptionScorer("builtin"), state=LocalState())
    assert s["EM"] == pytest.approx(100.0)  # "3" and "three" clean to the same string
    assert s["per_type"]["is"] == {"EM": 100.0, "EM_refined": 100.0, "count": 1}
    assert (tmp_path / "sqa3d" / "predictions.jsonl").is_file()
    with pytest.raises(ValueError, match="annotations"):
        EvalConfig(benchmark="sqa3d")


def test_scanqa_pipeline(tmp_path):
    cfg = EvalConfig(benchmark="scanqa", source=str(FIX / "eval_scanqa_val.json"), output_dir=str(tmp_path / "sq"))
    s = evaluate_qa(cfg, lambda b: ["table"] * len(b), scorer=CaptionScorer("builtin"), state=LocalState())
    # "table" is contained in "brown wooden table" only
    assert (s["EM"], s["EM_refined"]) == (0.0, 25.0)
    assert "per_type" not in s


def test_scanqa_resume_refuses_predictions_made_with_another_decoding(tmp_path):
    from spatial_mllm.eval import loop

    def cfg(**kw):
        return EvalConfig(benchmark="scanqa", source=str(FIX / "eval_scanqa_val.json"), output_dir=str(tmp_path / "sq"),
                          **kw)

    first = evaluate_qa(cfg(decoding="official"), lambda b: ["table"] * len(b), scorer=CaptionScorer("builtin"),
                        state=LocalState())
    again = evaluate_qa(cfg(decoding="official"), lambda b: ["chair"] * len(b), scorer=CaptionScorer("builtin"),
                        state=LocalState())
    assert again == first  # resumed: nothing predicted again
    with pytest.raises(loop.StalePredictionsError):
        evaluate_qa(cfg(decoding="greedy"), lambda b: ["table"] * len(b), scorer=CaptionScorer("builtin"),
                    state=LocalState())
