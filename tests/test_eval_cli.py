"""`spatial-mllm evaluate`: config from flags/params/--set, the tiny model and baselines end to end on our
synthetic benchmark, resume, predictor guard, ScanQA/SQA3D, and two accelerate processes."""

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from spatial_mllm.config import ConfigError
from spatial_mllm.data.build import DataConfig, build_datasets
from spatial_mllm.eval.baselines import FrequencyBaseline
from spatial_mllm.eval.cli import (
    add_evaluate_subparser,
    build_eval_config,
    build_parser,
    main,
    run_evaluate_command,
)
from spatial_mllm.eval.vsibench import EvalConfig, evaluate_vsibench, load_vsibench

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"


class LocalState:
    process_index, num_processes, is_main_process = 0, 1, True

    def wait_for_everyone(self):
        pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two small synthetic rooms (one train, one test), ~3 s."""
    out = tmp_path_factory.mktemp("evalcli")
    cfg = DataConfig(output_dir=str(out), num_scenes=2, width=64, height=48, num_frames=16, max_area=20.0,
                     train_fraction=0.5, val_fraction=0.0, max_questions_per_type=3)
    return build_datasets(cfg).data_dir


def _run(capsys, *argv):
    rc = main([str(a) for a in argv] + ["--no-progress"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_subparser_registers_evaluate():
    p = argparse.ArgumentParser()
    add_evaluate_subparser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["evaluate", "vsibench", "--model", "tiny", "--frames", "4", "--limit", "3"])
    assert args.func is run_evaluate_command and args.frames == 4 and args.limit == 3


def test_config_precedence_params_flags_set(tmp_path):
    params = tmp_path / "eval.yaml"
    params.write_text("num_frames: 8\nbatch_size: 4\nprompt_style: sft\nlimit: 50\n")
    args = build_parser().parse_args(["vsibench", "--model", "chance", "--params", str(params), "--frames", "16",
                                      "--set", "limit=7", "--data", "rows.jsonl"])
    cfg = build_eval_config(args)
    assert isinstance(cfg, EvalConfig)
    # defaults < params < flags < --set
    assert (cfg.num_frames, cfg.batch_size, cfg.prompt_style, cfg.limit) == (16, 4, "sft", 7)
    assert cfg.source == "rows.jsonl" and cfg.predictor == "chance" and cfg.benchmark == "vsibench"
    assert cfg.output_dir == "outputs/eval/vsibench_chance"
    hub = build_eval_config(build_parser().parse_args(["vsibench", "--model", "org/ckpt-1"]))
    assert hub.source == "nyu-visionx/VSI-Bench" and hub.output_dir == "outputs/eval/vsibench_ckpt-1"
    scanqa = build_eval_config(build_parser().parse_args(["scanqa", "--model", "x", "--annotations", "a.json"]))
    assert scanqa.source == "a.json" and scanqa.annotations is None
    with pytest.raises(ConfigError, match="num_frame"):
        build_eval_config(build_parser().parse_args(["vsibench", "--model", "x", "--set", "num_frame=3"]))
    with pytest.raises(ConfigError, match="annotation"):
        build_eval_config(build_parser().parse_args(["scanqa", "--model", "x"]))


def test_bad_key_is_an_error_exit(capsys, tmp_path):
    rc, _, err = _run(capsys, "vsibench", "--model", "chance", "--data", FIX / "eval_vsibench_rows.jsonl",
                      "--out", tmp_path / "o", "--set", "batchsize=2")
    assert rc == 2 and "batchsize" in err and "batch_size" in err


def test_tiny_model_on_synthetic_rows_and_resume(capsys, data, tmp_path):
    out = tmp_path / "tiny"
    argv = ["vsibench", "--model", "tiny", "--data", data / "test_vsibench.jsonl", "--video-root", data,
            "--frames", "4", "--limit", "5", "--batch-size", "3", "--out", out]
    rc, text, err = _run(capsys, *argv)
    assert rc == 0, err
    assert "5 predicted now, 0 resumed" in text and "| overall (micro) |" in text
    assert str(out / "scores.json") in text
    scores = json.loads((out / "scores.json").read_text())
    assert scores["num_questions"] == 5 and 0.0 <= scores["overall_micro"] <= 100.0
    recs = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(recs) == 5 and all(isinstance(r["prediction"], str) for r in recs)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and run["params"]["num_frames"] == 4
    assert json.loads((out / "predictor.json").read_text())["model"] == "tiny"
    shard = (out / "predictions.shard0.jsonl").read_bytes()
    # the same command again: nothing new is predicted, the same scores come back
    rc, text, _ = _run(capsys, *argv)
    assert rc == 0 and "0 predicted now, 5 resumed" in text
    assert (out / "predictions.shard0.jsonl").read_bytes() == shard
    assert json.loads((out / "scores.json").read_text()) == scores


def test_frequency_baseline_matches_the_library_and_guards_the_folder(capsys, data, tmp_path):
    src = data / "test_vsibench.jsonl"
    out = tmp_path / "freq"
    rc, text, err = _run(capsys, "vsibench", "--model", "frequency", "--data", src, "--fit",
                         data / "train_vsibench.jsonl", "--out", out)
    assert rc == 0, err
    rows = load_vsibench(src)
    direct = evaluate_vsibench(EvalConfig(output_dir=str(tmp_path / "direct"), source=str(src)),
                               FrequencyBaseline(load_vsibench(data / "train_vsibench.jsonl")), state=LocalState())
    assert json.loads((out / "scores.json").read_text()) == direct
    assert f"{len(rows)} predicted now" in text
    # another predictor into the same folder is refused, --overwrite starts afresh
    rc, _, err = _run(capsys, "vsibench", "--model", "chance", "--data", src, "--out", out)
    assert rc == 2 and "--overwrite" in err
    rc, text, _ = _run(capsys, "vsibench", "--model", "chance", "--data", src, "--out", out, "--overwrite")
    assert rc == 0 and f"{len(rows)} predicted now, 0 resumed" in text
    assert json.loads((out / "predictor.json").read_text()) == {"model": "chance", "fit": None, "seed": 0}


def test_scanqa_and_sqa3d(capsys, tmp_path):
    rc, text, err = _run(capsys, "scanqa", "--model", "frequency", "--annotations", FIX / "eval_scanqa_val.json",
                         "--out", tmp_path / "scanqa", "--caption-backend", "builtin")
    assert rc == 0, err
    s = json.loads((tmp_path / "scanqa" / "scores.json").read_text())
    assert s["num_questions"] == 4 and "| CIDEr |" in text and "| EM |" in text
    rc, text, err = _run(capsys, "sqa3d", "--model", "frequency", "--data", FIX / "eval_sqa3d_questions.json",
                         "--annotations", FIX / "eval_sqa3d_annotations.json", "--out", tmp_path / "sqa3d",
                         "--caption-backend", "builtin")
    assert rc == 0, err
    assert "per_type" in json.loads((tmp_path / "sqa3d" / "scores.json").read_text())
    rc, _, err = _run(capsys, "scanqa", "--model", "chance", "--annotations", FIX / "eval_scanqa_val.json",
                      "--out", tmp_path / "c")
    assert rc == 2 and "open-ended" in err


@pytest.mark.slow
def test_accelerate_launch_two_processes_equals_one(data, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    src = data / "test_vsibench.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
           "-m", "spatial_mllm.eval.cli", "vsibench", "--model", "chance", "--data", str(src),
           "--out", str(tmp_path / "two"), "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("predicted now") == 1  # only the main process prints
    assert (tmp_path / "two" / "predictions.shard1.jsonl").is_file()
    one = main(["vsibench", "--model", "chance", "--data", str(src), "--out", str(tmp_path / "one"), "--no-progress"])
    assert one == 0
    assert json.loads((tmp_path / "two" / "scores.json").read_text()) == \
        json.loads((tmp_path / "one" / "scores.json").read_text())
