"""Run the project's notebooks on a preset with papermill, in order, and keep the executed copies.

``spatial-mllm run-notebooks --preset tiny [--only 03 ...]`` (and ``make demo``) call :func:`run_notebooks`:

* notebooks are ``notebooks/NN_<name>.ipynb``, run in the order of ``NN``;
* parameters come from ``params/<preset>/NN_<name>.yaml``; a preset may cover only some notebooks (``mini``
  has only notebook 07): the others are skipped with a note, unless named with ``only`` (then an error); when a config dataclass is registered for the
  stem (:func:`spatial_mllm.config.params_schema`) the file is validated first, so an unknown key stops
  the run before anything executes; ``output_dir`` is always set to ``<output_root>/<preset>``;
* executed copies go to ``<output_root>/<preset>/NN_<name>.ipynb`` beside ``NN_<name>.run.json``;
  nothing in ``notebooks/`` is modified;
* the kernel is ``spatial-mllm`` (registered by ``make setup``); notebooks run with the working
  directory and ``$SPATIAL_MLLM_ROOT`` set to the project root, so relative params paths resolve there;
* the first failing notebook stops the run with :class:`NotebookFailed`, whose message holds the
  failing cell's number, source and error.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatial_mllm.config import (
    ROOT_ENV,
    ConfigError,
    RunRecord,
    load_params,
    params_schema,
    read_yaml,
)

__all__ = ["NotebookFailed", "NotebookResult", "discover_notebooks", "run_notebooks", "DEFAULT_KERNEL"]

DEFAULT_KERNEL = "spatial-mllm"
_NB_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the error."""

    def __init__(self, notebook: str, message: str, executed_path: Path | None = None):
        super().__init__(message)
        self.notebook = notebook
        self.executed_path = executed_path


@dataclass
class NotebookResult:
    stem: str
    executed: Path  # the executed copy
    run_json: Path
    seconds: float


def discover_notebooks(notebooks_dir: Path, only: list[str] | None = None) -> list[Path]:
    """``NN_<name>.ipynb`` files sorted by number; ``only`` filters by number ("03") or stem."""
    paths = sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if _NB_RE.match(p.name))
    if only:
        wanted = {str(o).removesuffix(".ipynb") for o in only}
        sel = [p for p in paths if p.stem in wanted or p.stem[:2] in wanted]
        missing = [w for w in wanted if not any(p.stem == w or p.stem[:2] == w for p in sel)]
        if missing:
            raise FileNotFoundError(
                f"--only {', '.join(sorted(missing))}: no such notebook in {notebooks_dir} "
                f"(have: {', '.join(p.stem for p in paths) or 'none'})"
            )
        paths = sel
    return paths


def _kernel_available(name: str) -> bool:
    from jupyter_client.kernelspec import KernelSpecManager

    return name in KernelSpecManager().find_kernel_specs()


def _failure_message(stem: str, err: Exception) -> str:
    cell = getattr(err, "exec_count", None)
    idx = getattr(err, "cell_index", None)
    source = getattr(err, "source", None)
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    where = f"cell {idx}" if idx is not None else "a cell"
    if cell is not None:
        where += f" (execution count {cell})"
    lines = [f"notebook {stem} failed in {where}: {ename}: {evalue}"]
    if source:
        lines += ["--- cell source ---", str(source).rstrip(), "-------------------"]
    return "\n".join(lines)


def run_notebooks(
    preset: str = "tiny",
    only: list[str] | None = None,
    *,
    root: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike = "notebooks",
    params_dir: str | os.PathLike = "params",
    output_root: str | os.PathLike = "outputs",
    kernel: str = DEFAULT_KERNEL,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    timeout_per_cell: int | None = None,
) -> list[NotebookResult]:
    """Execute the notebooks of ``notebooks_dir`` with the ``preset``'s params; see the module docstring.

    Relative ``notebooks_dir``, ``params_dir`` and ``output_root`` are taken from ``root`` (default: the
    current directory). ``overrides`` are applied to every notebook's parameters (keys must exist in its
    params file). Returns one :class:`NotebookResult` per executed notebook.
    """
    import papermill as pm
    from tqdm.auto import tqdm

    root = Path(root or os.getcwd()).resolve()
    nb_dir = root / notebooks_dir
    p_dir = root / params_dir / preset
    out_dir = (root / output_root / preset).resolve()
    if not p_dir.is_dir():
        raise FileNotFoundError(f"no params for preset {preset!r}: {p_dir} does not exist")
    notebooks = discover_notebooks(nb_dir, only)
    if not notebooks:  # a fresh project: nothing to run is not an error
        print(f"run-notebooks: no notebooks NN_<name>.ipynb in {nb_dir}; nothing to run")
        return []
    if not _kernel_available(kernel):
        raise RuntimeError(
            f"Jupyter kernel {kernel!r} is not registered; run `make setup` (it registers it), or "
            f"`python -m ipykernel install --user --name {kernel}`"
        )

    # A preset may cover only some notebooks (``mini`` has only the study): without --only, notebooks
    # that have no params file in this preset are skipped, said plainly; with --only it is an error.
    if not only:
        skipped = [nb.stem for nb in notebooks if not (p_dir / f"{nb.stem}.yaml").is_file()]
        if skipped:
            print(f"run-notebooks: preset {preset!r} has no params for {', '.join(skipped)}; skipping them")
        notebooks = [nb for nb in notebooks if nb.stem not in skipped]
        if not notebooks:
            raise FileNotFoundError(f"preset {preset!r}: no params/{preset}/NN_<name>.yaml matches a notebook "
                                    f"in {nb_dir}")

    # Validate every params file before executing anything.
    plan: list[tuple[Path, dict[str, Any]]] = []
    for nb in notebooks:
        pfile = p_dir / f"{nb.stem}.yaml"
        if not pfile.is_file():
            raise FileNotFoundError(f"notebook {nb.name} has no params file {pfile}")
        params = read_yaml(pfile)
        for k in overrides or {}:
            if k not in params:
                raise ConfigError(f"{pfile} (overrides): unknown key {k!r}; known: {', '.join(params)}")
        params.update(overrides or {})
        params["output_dir"] = str(out_dir)
        if params_schema(nb.stem) is not None:
            load_params(pfile, overrides={**(overrides or {}), "output_dir": str(out_dir)})
        plan.append((nb, params))

    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ[ROOT_ENV] = str(root)
    results: list[NotebookResult] = []
    bar = tqdm(plan, desc=f"notebooks ({preset})", unit="nb", disable=not progress)
    for nb, params in bar:
        bar.set_postfix_str(nb.stem)
        executed = out_dir / nb.name
        t0 = time.perf_counter()
        with RunRecord(out_dir, params=params, name=f"{nb.stem}.run.json", notebook=nb.name,
                       preset=preset, executed=str(executed)) as rec:
            try:
                pm.execute_notebook(
                    str(nb), str(executed), parameters=params, kernel_name=kernel, cwd=str(root),
                    progress_bar=False, log_output=False, execution_timeout=timeout_per_cell,
                )
            except pm.PapermillExecutionError as e:
                rec["seconds"] = time.perf_counter() - t0
                raise NotebookFailed(nb.stem, _failure_message(nb.stem, e), executed) from None
            rec["seconds"] = time.perf_counter() - t0
        results.append(NotebookResult(nb.stem, executed, rec.path, time.perf_counter() - t0))
    return results
