"""`spatial-mllm` errors a person can read (spatial_mllm.errors): a known error is one line on stderr naming the
file or key, exit code 2; an unknown one is one line with the --debug hint, exit code 1; --debug (before or
after the subcommand) adds the traceback."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from spatial_mllm.cli import main
from spatial_mllm.runner import DEFAULT_KERNEL, _kernel_available


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tok):
    """A corrupt mp4, a tiny checkpoint, the same with a corrupt and with a missing safetensors file."""
    root = tmp_path_factory.mktemp("cli_errors")
    (root / "x.mp4").write_bytes(b"this is not a video \x00\x01\x02" * 10)
    from spatial_mllm.models.tiny import tiny_model

    tiny_model(tok).save_pretrained(root / "ckpt", model_card=False)
    corrupt = root / "ckpt_corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((root / "ckpt" / "config.json").read_text())
    (corrupt / "model.safetensors").write_bytes((root / "ckpt" / "model.safetensors").read_bytes()[:500])
    empty = root / "ckpt_noweights"
    empty.mkdir()
    (empty / "config.json").write_text((root / "ckpt" / "config.json").read_text())
    return root


def test_missing_video(capsys, files):
    rc, _, err = _run(capsys, "ask", "--model", "tiny", "--video", files / "missing.mp4", "--frames", "4", "How many?")
    assert rc == 2 and _one_error_line(err) == f"error: video file not found: {files / 'missing.mp4'}"


def test_corrupt_video(capsys, files):
    rc, _, err = _run(capsys, "ask", "--model", "tiny", "--video", files / "x.mp4", "--frames", "4", "How many?")
    line = _one_error_line(err)
    assert rc == 2 and str(files / "x.mp4") in line and "cannot open video" in line and "corrupt" in line


def test_missing_checkpoint_folder(capsys, files):
    rc, _, err = _run(capsys, "ask", "--model", files / "no_such_ckpt", "--video", files / "x.mp4", "How many?")
    line = _one_error_line(err)
    assert rc == 2 and str(files / "no_such_ckpt") in line and "does not exist" in line


@pytest.mark.parametrize("folder, named, says", [("ckpt_corrupt", "ckpt_corrupt/model.safetensors", "corrupt"),
                                                  ("ckpt_noweights", "ckpt_noweights", "no model.safetensors")])
def test_bad_checkpoint(capsys, files, folder, named, says):
    rc, _, err = _run(capsys, "ask", "--model", files / folder, "--video", files / "x.mp4", "How many?")
    line = _one_error_line(err)
    assert rc == 2 and named in line and says in line
    rc, _, err = _run(capsys, "export", files / folder, files / "out")  # the same through export
    assert rc == 2 and named in _one_error_line(err)


def test_bad_params_key(capsys, tmp_path):
    """run-notebooks validates --set keys against every notebook's params file before running anything."""
    kernel = DEFAULT_KERNEL if _kernel_available(DEFAULT_KERNEL) else "python3"
    if not _kernel_available(kernel):
        pytest.skip("no Jupyter kernel registered (the runner checks the kernel before the params)")
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("seed = 0", metadata={"tags": ["parameters"]})]
    nbformat.write(nb, tmp_path / "notebooks" / "01_a.ipynb")
    (tmp_path / "params" / "tiny").mkdir(parents=True)
    (tmp_path / "params" / "tiny" / "01_a.yaml").write_text("seed: 0\n")
    rc, _, err = _run(capsys, "run-notebooks", "--root", tmp_path, "--kernel", kernel, "--no-progress",
                      "--set", "nonexistent_key=1")
    line = _one_error_line(err)
    assert rc == 2 and "'nonexistent_key'" in line and "01_a.yaml" in line
    rc, _, err = _run(capsys, "run-notebooks", "--root", tmp_path, "--set", "seed")  # not key=value
    assert rc == 2 and "'seed' is not of the form key=value" in _one_error_line(err)
    rc, _, err = _run(capsys, "run-notebooks", "--root", tmp_path, "--preset", "nope")
    assert rc == 2 and str(tmp_path / "params" / "nope") in _one_error_line(err)
    assert not (tmp_path / "outputs").exists()  # nothing ran


def test_bad_evaluate_key(capsys, tmp_path):
    rows = Path(__file__).parent / "fixtures" / "eval_vsibench_rows.jsonl"
    rc, _, err = _run(capsys, "evaluate", "vsibench", "--model", "chance", "--data", rows, "--out", tmp_path / "o",
                      "--set", "batchsize=2", "--no-progress")
    line = _one_error_line(err)
    assert rc == 2 and "batchsize" in line and "batch_size" in line  # names the key and the close match


def test_unknown_error_is_one_line_with_the_debug_hint(capsys, monkeypatch):
    import spatial_mllm.models.export as export

    def boom(*args, **kwargs):
        raise RuntimeError("unforeseen\nsecond line")

    monkeypatch.setattr(export, "export_checkpoint", boom)
    rc, _, err = _run(capsys, "export", "a", "b")
    assert rc == 1
    assert _one_error_line(err) == "error: RuntimeError: unforeseen second line (run with --debug for the traceback)"
    rc, _, err = _run(capsys, "--debug", "export", "a", "b")
    assert rc == 1 and "Traceback (most recent call last)" in err and "in boom" in err
    assert "run with --debug" not in err


def test_debug_shows_the_traceback_before_or_after_the_subcommand(capsys, files):
    for argv in (["--debug", "ask"], ["ask", "--debug"]):
        rc, _, err = _run(capsys, *argv, "--model", "tiny", "--video", files / "missing.mp4", "--frames", "4", "Q?")
        assert rc == 2 and "Traceback (most recent call last)" in err and "FileNotFoundError" in err
        assert err.rstrip().splitlines()[-1] == f"error: video file not found: {files / 'missing.mp4'}"


def test_console_entry_point_corrupt_video(files):
    """The installed `spatial-mllm` script, as a person runs it."""
    exe = Path(sys.executable).parent / "spatial-mllm"
    if not exe.is_file():
        pytest.skip(f"console script not installed next to {sys.executable}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(exe), "ask", "--model", "tiny", "--video", str(files / "x.mp4"), "--frames", "4",
                           "How many chairs?"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.rstrip().splitlines()[-1].startswith(f"error: cannot open video {files / 'x.mp4'}: ")


def test_a_finished_command_closes_its_process_group(tmp_path):
    """A command started by ``accelerate launch`` ends with its gloo process group torn down (left running, its
    threads can abort the rank at exit); a failed one leaves it, so its peers are not torn down mid-wait. Run in a
    fresh interpreter (a process group is process-wide)."""
    code = (
        "import torch.distributed as dist\n"
        "from spatial_mllm.errors import run_command\n"
        "def boom():\n"
        "    raise RuntimeError('x')\n"
        f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'pg'}', rank=0, world_size=1)\n"
        "rc = run_command(boom, stream=open('/dev/null', 'w'))\n"
        "print(rc, dist.is_initialized())\n"
        "rc = run_command(lambda: 0)\n"
        "print(rc, dist.is_initialized())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["1", "True", "0", "False"]
