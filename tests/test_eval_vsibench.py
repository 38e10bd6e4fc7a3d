"""VSI-Bench pipeline: loading, lmms-eval prompts, baselines, sharding, resume, accelerate with 2 processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from spatial_mllm.config import ConfigError
from spatial_mllm.data import formats
from spatial_mllm.eval import loop
from spatial_mllm.eval.baselines import ChanceBaseline, FrequencyBaseline, format_number
from spatial_mllm.eval.vsibench import (
    FINGERPRINT_FIELDS,
    EvalConfig,
    build_items,
    evaluate_vsibench,
    load_vsibench,
    score,
)

FIXTURE = Path(__file__).parent / "fixtures" / "eval_vsibench_rows.jsonl"


@pytest.fixture(scope="module")
def rows():
    return load_vsibench(FIXTURE)


class LocalState:
    """One process, no accelerate (what PartialState gives in a plain process)."""

    process_index, num_processes, is_main_process = 0, 1, True

    def wait_for_everyone(self):
        pass


def _cfg(tmp_path, name, **kw):
    return EvalConfig(output_dir=str(tmp_path / name), source=str(FIXTURE), batch_size=2, **kw)


def test_load_local_files_in_every_format(rows, tmp_path):
    assert len(rows) == 12 and rows[4]["options"][1] == "B. table" and rows[0]["options"] is None
    assert all(isinstance(r["ground_truth"], str) for r in rows)
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    assert load_vsibench(tmp_path / "rows.json") == rows
    import pandas as pd

    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    assert load_vsibench(tmp_path / "rows.parquet") == rows
    # our synthetic benchmark rows, as data/formats writes them
    syn = [{**r, "dataset": "synthetic", "answer": None, "slots": {}} for r in rows]
    formats.write_vsibench_rows(syn, tmp_path / "syn.jsonl")
    assert [r["dataset"] for r in load_vsibench(tmp_path / "syn.jsonl")] == ["synthetic"] * 12


def test_load_through_datasets_local_clone_and_hub_arguments(rows, tmp_path, monkeypatch):
    clone = tmp_path / "VSI-Bench"
    clone.mkdir()
    formats.write_jsonl(rows, clone / "test.jsonl")
    assert load_vsibench(clone, cache_dir=tmp_path / "cache") == rows
    # the hub branch: same call with the id, subset, split and pinned revision
    import datasets

    seen = {}

    def fake_load_dataset(path, name=None, **kw):
        seen.update(path=path, name=name, **kw)
        return datasets.Dataset.from_list([{**r, "options": r["options"] or []} for r in rows])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    got = load_vsibench("nyu-visionx/VSI-Bench", subset="full", revision="abc123")
    assert got == rows
    assert seen == {"path": "nyu-visionx/VSI-Bench", "name": "full", "split": "test", "revision": "abc123",
                    "cache_dir": None}  # fmt: skip


def test_prompts_are_lmms_evals(rows):
    items = build_items(rows, num_frames=16)
    assert items[0]["prompt"] == (
        "These are frames of a video.\nHow many chair(s) are in this room?\n"
        "Please answer the question using a single word or phrase."
    )
    q = rows[5]["question"]
    assert items[5]["prompt"] == (
        f"These are frames of a video.\n{q}\nOptions:\nA. left\nB. right\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert items[5]["video"].endswith("scannet/scene0011_00.mp4")
    assert items[5]["num_frames"] == 16 and items[5]["frame_indices"] is None
    sft = build_items(rows, prompt_style="sft")
    assert sft[0]["prompt"] == items[0]["prompt"].removeprefix("These are frames of a video.\n")
    cached = build_items(rows, frames_cache={"arkitscenes/41069025": [0, 5, 9], "scannet/scene0011_00": [1, 2]})
    assert cached[0]["frame_indices"] == [0, 5, 9] and cached[0]["num_frames"] == 3
    with pytest.raises(KeyError, match="scannet/scene0011_00"):
        build_items(rows, frames_cache={"arkitscenes/41069025": [0]})


def test_config_validation():
    with pytest.raises(ValueError, match="extract_answer"):
        EvalConfig(prompt_style="think")
    with pytest.raises(ConfigError, match="prompt_styl"):
        EvalConfig.from_dict({"prompt_styl": "sft"})
    cfg = EvalConfig(prompt_style="think", extract_answer=True, max_new_tokens=1024)
    assert cfg.generation_kwargs() == {"max_new_tokens": 1024, "do_sample": False, "num_beams": 1}


def test_baselines_are_deterministic_and_hand_checkable(rows):
    base = FrequencyBaseline(rows)
    # object_rel_distance: B twice → B; counting: mean(4, 2) = 3; single-row types: their own answer
    assert base.letter["object_rel_distance"] == "B" and base.mean["object_counting"] == 3.0
    items = build_items(rows)
    preds = base(items)
    s = score([{**r, "prediction": p} for r, p in zip(rows, preds)])
    # counting: pred 3 vs 4 (25% → .6) and vs 2 (50% → .1): 35; every other type predicts its own answer
    assert s["per_type"]["object_counting"] == pytest.approx(35.0)
    assert s["overall_micro"] == pytest.approx(100 * (10 + 0.7) / 12)
    assert s["overall_macro"] == pytest.approx((35 + 7 * 100) / 8)
    chance = ChanceBaseline(seed=3, rows=rows)
    a = chance(items)
    assert a == chance(items[:5]) + chance(items[5:])  # batch-independent
    assert a[0] == "3" and all(p in "ABCD" for p, r in zip(a, rows) if r["options"])
    assert format_number(2.50) == "2.5" and format_number(94.0) == "94" and format_number(-0.00001) == "0"


def test_interrupted_evaluation_resumes_with_the_same_scores(rows, tmp_path):
    full = evaluate_vsibench(_cfg(tmp_path, "full"), FrequencyBaseline(rows), rows=rows, state=LocalState())
    calls = []

    def flaky(batch):
        calls.append([it["id"] for it in batch])
        if len(calls) == 3:
            raise KeyboardInterrupt  # the job is killed during the third batch
        return FrequencyBaseline(rows)(batch)

    cfg = _cfg(tmp_path, "resumed")
    with pytest.raises(KeyboardInterrupt):
        evaluate_vsibench(cfg, flaky, rows=rows, state=LocalState())
    shard_file = tmp_path / "resumed" / "predictions.shard0.jsonl"
    assert len(shard_file.read_text().splitlines()) == 4
    with open(shard_file, "a") as f:  # and a write was cut half-way
        f.write('{"key": "4", "fingerpr')
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["status"].startswith("failed")

    calls.clear()
    resumed = evaluate_vsibench(cfg, lambda b: (calls.append([it["id"] for it in b]), FrequencyBaseline(rows)(b))[1],
                                rows=rows, state=LocalState())  # fmt: skip
    assert sorted(i for c in calls for i in c) == list(range(4, 12))  # finished items are not re-run
    assert resumed == full
    merged = [json.loads(x) for x in (tmp_path / "resumed" / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in merged] == list(range(12))
    assert json.loads((tmp_path / "resumed" / "scores.json").read_text()) == full
    # resuming with another prompt would silently mix predictions: refused
    with pytest.raises(loop.StalePredictionsError):
        evaluate_vsibench(_cfg(tmp_path, "resumed", prompt_style="sft"), FrequencyBaseline(rows), rows=rows,
                          state=LocalState())  # fmt: skip


def test_two_simulated_shards_give_the_same_scores_as_one(rows, tmp_path):
    items = build_items(rows)
    pred = ChanceBaseline(seed=1, rows=rows)
    kw = dict(key=lambda it: it["id"], fingerprint_fields=FINGERPRINT_FIELDS,
              record_fields=("id", "question_type", "ground_truth"), batch_size=2)  # fmt: skip
    one = loop.predict_shard(items, pred, tmp_path / "one", **kw)
    done = loop.read_predictions(tmp_path / "two")  # both shards see the same (empty) state
    new = [loop.predict_shard(items, pred, tmp_path / "two", shard_index=i, num_shards=2, done=done, **kw)
           for i in (1, 0)]  # fmt: skip
    assert sorted(r["id"] for r in new[0]) == [1, 3, 5, 7, 9, 11]
    two = loop.collect_predictions(items, tmp_path / "two", key=kw["key"])
    assert score(two) == score(one)


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(rows, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "import json, sys\n"
        "from spatial_mllm.eval.baselines import ChanceBaseline\n"
        "from spatial_mllm.eval.vsibench import EvalConfig, evaluate_vsibench, load_vsibench\n"
        "rows = load_vsibench(sys.argv[1])\n"
        "cfg = EvalConfig(output_dir=sys.argv[2], source=sys.argv[1], batch_size=2)\n"
        "res = evaluate_vsibench(cfg, ChanceBaseline(1, rows), rows=rows)\n"
        "from accelerate import PartialState\n"
        "st = PartialState()\n"
        "out = {'rank': st.process_index, 'world': st.num_processes, 'scores': res}\n"
        "open(f'{sys.argv[2]}/result{st.process_index}.json', 'w').write(json.dumps(out))\n"
        "from spatial_mllm.errors import close_process_group\n"
        "close_process_group()\n"  # as the CLIs do on exit: no gloo threads left running at interpreter exit
    )
    with socket.socket() as sock:  # a free port: other test runs may share the machine
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
           str(script), str(FIXTURE), str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads((tmp_path / "out" / f"result{i}.json").read_text()) for i in (0, 1)]
    assert [(r["rank"], r["world"]) for r in results] == [(0, 2), (1, 2)]
    single = evaluate_vsibench(_cfg(tmp_path, "single"), ChanceBaseline(1, rows), rows=rows, state=LocalState())
    assert all(r["scores"] == single for r in results)
    assert len((tmp_path / "out" / "predictions.shard1.jsonl").read_text().splitlines()) == 6


def test_grouped_shards_take_whole_videos(rows, tmp_path):
    """A predictor with a group_key gets one group per call; shards take whole groups; the merged
    predictions equal the ungrouped run's."""
    items = build_items(rows)
    for i, it in enumerate(items):
        it["video"] = f"video{i % 3}"  # 3 videos, their questions interleaved in item order

    class Grouped:
        group_key = staticmethod(lambda it: it["video"])

        def __init__(self):
            self.calls = []

        def __call__(self, batch):
            self.calls.append([it["video"] for it in batch])
            return [f"{it['id']}" for it in batch]

    kw = dict(key=lambda it: it["id"], fingerprint_fields=FINGERPRINT_FIELDS,
              record_fields=("id", "question_type", "ground_truth"), batch_size=2)  # fmt: skip
    plain = Grouped()
    plain.group_key = None
    one = loop.predict_shard(items, plain, tmp_path / "one", **kw)
    done = loop.read_predictions(tmp_path / "two")
    preds = [Grouped(), Grouped()]
    for i in (0, 1):
        loop.predict_shard(items, preds[i], tmp_path / "two", shard_index=i, num_shards=2, done=done,
                           group_key=Grouped.group_key, **kw)
    assert [c[0] for c in preds[0].calls] == ["video0", "video2"] and [c[0] for c in preds[1].calls] == ["video1"]
    assert all(len(set(c)) == 1 for p in preds for c in p.calls)  # one video per call
    two = loop.collect_predictions(items, tmp_path / "two", key=kw["key"])
    assert [r["prediction"] for r in two] == [r["prediction"] for r in one]
