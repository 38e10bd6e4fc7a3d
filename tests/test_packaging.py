"""The install story: pyproject and environment.yml agree; the two README commands exist; CI calls them."""

import re
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = proj["optional-dependencies"]
    # what `make setup` installs: dev + the lmms-eval plugin's and DeepSpeed's extras
    wanted = {_name(r): r.replace(" ", "") for r in proj["dependencies"] + extras["dev"] + extras["lmms-eval"]
              + extras["deepspeed"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    have = {_name(r): r.replace(" ", "") for r in pip_section if not r.startswith("-e")}
    assert set(have) == set(wanted), f"only in env: {set(have) - set(wanted)}, only in pyproject: {set(wanted) - set(have)}"
    for n in wanted:
        assert have[n] == wanted[n], f"{n}: environment.yml says {have[n]}, pyproject says {wanted[n]}"
    assert "python=3.11" in env["dependencies"]


def test_readme_commands_exist_in_makefile_and_ci():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("setup", "demo", "test", "lint", "lab"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile lacks target {target}"
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_console_script_is_declared():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert proj["scripts"]["spatial-mllm"] == "spatial_mllm.cli:main"
