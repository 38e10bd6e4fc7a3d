"""The notebook runner: order, params, run.json, failure reporting, notebooks left untouched."""

import json

import nbformat
import pytest

from spatial_mllm.cli import main as cli_main
from spatial_mllm.config import ConfigError
from spatial_mllm.runner import DEFAULT_KERNEL, NotebookFailed, _kernel_available, run_notebooks

KERNEL = DEFAULT_KERNEL if _kernel_available(DEFAULT_KERNEL) else "python3"


def _notebook(path, param_src, body_srcs):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# test notebook"))
    pc = nbformat.v4.new_code_cell(param_src)
    pc.metadata["tags"] = ["parameters"]
    nb.cells.append(pc)
    nb.cells += [nbformat.v4.new_code_cell(s) for s in body_srcs]
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": KERNEL, "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "tiny").mkdir(parents=True)
    return tmp_path


def _params(project, stem, text):
    (project / "params" / "tiny" / f"{stem}.yaml").write_text(text)


def test_passing_run_writes_outputs_and_run_json(project):
    _notebook(project / "notebooks" / "02_second.ipynb", "output_dir = 'x'\nk = 1",
              ["import pathlib\npathlib.Path(output_dir, 'second.txt').write_text(str(k))"])
    _notebook(project / "notebooks" / "01_first.ipynb", "output_dir = 'x'\nk = 1",
              ["import pathlib\npathlib.Path(output_dir, 'first.txt').write_text(str(k * 10))"])
    _params(project, "01_first", "output_dir: outputs/tiny\nk: 4\n")
    _params(project, "02_second", "output_dir: outputs/tiny\nk: 5\n")
    before = {p.name: p.read_bytes() for p in (project / "notebooks").iterdir()}

    res = run_notebooks("tiny", root=project, kernel=KERNEL, progress=False)

    assert [r.stem for r in res] == ["01_first", "02_second"]  # numeric order
    out = project / "outputs" / "tiny"
    assert (out / "first.txt").read_text() == "40" and (out / "second.txt").read_text() == "5"
    for r in res:
        meta = json.loads(r.run_json.read_text())
        assert meta["status"] == "ok" and meta["preset"] == "tiny" and meta["end_time"]
        assert meta["params"]["output_dir"] == str(out)
        assert r.executed.is_file()
        executed = nbformat.read(r.executed, as_version=4)
        assert any(c.get("outputs") is not None and c.get("execution_count") for c in executed.cells
                   if c.cell_type == "code")
    after = {p.name: p.read_bytes() for p in (project / "notebooks").iterdir()}
    assert before == after  # nothing in notebooks/ modified

    res = run_notebooks("tiny", ["02"], root=project, kernel=KERNEL, progress=False)
    assert [r.stem for r in res] == ["02_second"]


def test_failing_notebook_stops_the_run_with_the_cells_error(project):
    _notebook(project / "notebooks" / "01_ok.ipynb", "output_dir = 'x'", ["a = 1"])
    _notebook(project / "notebooks" / "02_bad.ipynb", "output_dir = 'x'",
              ["b = 2", "raise ValueError('scene 7 has no chairs')"])
    _notebook(project / "notebooks" / "03_never.ipynb", "output_dir = 'x'",
              ["import pathlib\npathlib.Path(output_dir, 'ran.txt').write_text('y')"])
    for s in ("01_ok", "02_bad", "03_never"):
        _params(project, s, "output_dir: outputs/tiny\n")

    with pytest.raises(NotebookFailed) as e:
        run_notebooks("tiny", root=project, kernel=KERNEL, progress=False)
    msg = str(e.value)
    assert "02_bad" in msg and "ValueError" in msg and "scene 7 has no chairs" in msg
    assert "raise ValueError('scene 7 has no chairs')" in msg  # the failing cell's source
    assert not (project / "outputs" / "tiny" / "ran.txt").exists()  # stopped at the first failure
    meta = json.loads((project / "outputs" / "tiny" / "02_bad.run.json").read_text())
    assert meta["status"].startswith("failed")

    # the CLI reports it and exits non-zero
    rc = cli_main(["run-notebooks", "--root", str(project), "--kernel", KERNEL, "--no-progress"])
    assert rc == 1


def test_missing_params_and_unknown_override(project):
    _notebook(project / "notebooks" / "01_a.ipynb", "output_dir = 'x'\nk = 1", ["pass"])
    with pytest.raises(FileNotFoundError, match="no params/tiny/NN_<name>.yaml matches"):
        run_notebooks("tiny", root=project, kernel=KERNEL, progress=False)
    with pytest.raises(FileNotFoundError, match="01_a.yaml"):
        run_notebooks("tiny", ["01"], root=project, kernel=KERNEL, progress=False)
    _params(project, "01_a", "output_dir: o\nk: 1\n")
    with pytest.raises(ConfigError, match="'kk'"):
        run_notebooks("tiny", root=project, kernel=KERNEL, progress=False, overrides={"kk": 2})
    with pytest.raises(FileNotFoundError, match="--only 07"):
        run_notebooks("tiny", ["07"], root=project, kernel=KERNEL, progress=False)
    with pytest.raises(FileNotFoundError, match="preset 'paper'"):
        run_notebooks("paper", root=project, kernel=KERNEL, progress=False)


def test_a_preset_may_cover_only_some_notebooks(project, capsys):
    # the mini preset has params for the study notebook only: the others are skipped with a note
    _notebook(project / "notebooks" / "01_a.ipynb", "output_dir = 'x'", ["pass"])
    _notebook(project / "notebooks" / "07_b.ipynb", "output_dir = 'x'", ["pass"])
    (project / "params" / "mini").mkdir()
    (project / "params" / "mini" / "07_b.yaml").write_text("output_dir: o\n")
    results = run_notebooks("mini", root=project, kernel=KERNEL, progress=False)
    assert [r.stem for r in results] == ["07_b"]
    assert "no params for 01_a; skipping" in capsys.readouterr().out
    assert not (project / "outputs" / "mini" / "01_a.ipynb").exists()
