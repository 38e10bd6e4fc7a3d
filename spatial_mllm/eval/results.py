"""Result tables and figures from saved metrics only (notebook 06): nothing is trained or predicted here.

Inputs: every ``<output_dir>/eval/<run>/scores.json`` (written by :func:`~spatial_mllm.eval.vsibench.evaluate_vsibench`,
:func:`~spatial_mllm.eval.scanqa.evaluate_qa` and ``spatial-mllm evaluate``), its ``run.json`` (data source,
status, git sha), and notebook 05's ``<output_dir>/tables/05_ablations.csv`` when present.

* :func:`collect_scores` — a tidy frame, one row per (run, benchmark, metric, value);
* :func:`vsibench_table` — Table-1 style: one row per run, the 8 tasks in the paper's column order, then the
  task mean (``Avg. (macro)``, lmms-eval's "overall") and the question mean (``Avg. (micro)``), with the
  paper's reported rows beside ours in a ``source`` column;
* :func:`qa_table` — ScanQA / SQA3D, ours and reported;
* :func:`ablation_table` — 05's runs aggregated over seeds (mean, std, 95 % t-interval);
* :func:`markdown_table` / :func:`latex_table` — our own small writers (no ``tabulate``, no jinja2);
* :func:`plot_vsibench_bars` / :func:`plot_ablation_bars` / :func:`save_figure_formats` — PNG + PDF.

Reported numbers (:data:`REPORTED_VSIBENCH`, :data:`REPORTED_QA`) are typed in by hand, never computed here:

* the paper (Wu et al. 2025, arXiv 2505.23747), Table 1 (VSI-Bench: Spatial-MLLM-4B and the Qwen2.5-VL-3B
  baseline, per task in the column order Obj. Count, Abs. Dist., Obj. Size, Room Size, Rel. Dist., Rel. Dir.,
  Route Plan, Appr. Order — VSI-Bench's own, = :data:`~spatial_mllm.eval.vsibench.TASKS`) and Table 2
  (ScanQA val, SQA3D test). The paper's "Avg." is the mean over questions (micro): 48.4 and 30.6, while the
  means of the 8 task scores are 46.95 and 28.84; :data:`REPORTED_VSIBENCH` keeps the printed micro value,
  the macro is computed from the tasks, and ``tests/test_results.py`` checks that the question-weighted mean
  of the task scores (VSI-Bench's questions per task) gives the printed averages.
* the official repository's ``README.md`` on ``master`` (Spatial-MLLM v1.1, 16 frames, its own
  ``eval_vsibench.py``: v1.1 prompt, temperature 0.1 / top_p 0.001 sampling, its ``clean_text`` + ``vsi_reward``
  scoring, VSI-Bench's ``full`` config): micro and macro averages only ("All"; its macro is the mean of the 8
  tasks with the three relative-direction types merged first, as ours), uniform frames or "SA Sampling"
  (pre-sampled space-aware frames). These are not the paper's numbers: other checkpoints (trained on 135K or
  820K samples, SFT only), another evaluation script.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from spatial_mllm.config import StageConfig, register_params, resolve_path
from spatial_mllm.eval.vsibench import TASKS

__all__ = [
    "ResultsConfig",
    "TASK_LABELS",
    "QA_METRICS",
    "REPORTED_VSIBENCH",
    "REPORTED_QA",
    "REPORTED_NOTES",
    "PAPER_TABLE1",
    "README_V11",
    "reported_vsibench_macro",
    "reported_row_name",
    "collect_scores",
    "runs_summary",
    "vsibench_table",
    "qa_table",
    "load_ablations",
    "ablation_keys",
    "ablation_table",
    "markdown_table",
    "latex_table",
    "write_table",
    "plot_vsibench_bars",
    "plot_ablation_bars",
    "save_figure_formats",
    "ensure_baseline_scores",
]

# the paper's Table 1 column names, in its order (= vsibench.TASKS)
TASK_LABELS = {
    "object_counting": "Obj. Count", "object_abs_distance": "Abs. Dist.", "object_size_estimation": "Obj. Size",
    "room_size_estimation": "Room Size", "object_rel_distance": "Rel. Dist.", "object_rel_direction": "Rel. Dir.",
    "route_planning": "Route Plan", "obj_appearance_order": "Appr. Order",
}  # fmt: skip
assert tuple(TASK_LABELS) == TASKS
MACRO, MICRO = "Avg. (macro)", "Avg. (micro)"
# score_qa keys → the paper's Table 2 column names
QA_METRICS = {"BLEU-1": "BLEU-1", "BLEU-4": "BLEU-4", "METEOR": "METEOR", "ROUGE-L": "ROUGE-L", "CIDEr": "CIDEr",
              "EM": "EM-1", "EM_refined": "EM-R1"}

PAPER_TABLE1 = "reported (paper Table 1)"
README_V11 = "reported (official README, master)"
_README = ("reported: official repository README.md, master (v1.1), VSI-Bench 16 frames, "
           "src/evaluation/vsibench/eval_vsibench.py")
# rows: "label" (the table's source column), "source" (citation), "per_task" (when printed), "overall_micro",
# "overall_macro" (when printed without tasks; else the task mean), README rows also "micro_acc"/"micro_mra"/
# "macro_acc"/"macro_mra" (its Acc = multiple choice, MRA = numerical questions)
REPORTED_VSIBENCH: dict[str, dict] = {
    "Spatial-MLLM-4B": {
        "label": PAPER_TABLE1,
        "source": "reported: Wu et al. 2025, Table 1 (16 frames, space-aware sampling, SFT + GRPO)",
        "per_task": dict(zip(TASKS, (65.3, 34.8, 63.1, 45.1, 41.3, 46.2, 33.5, 46.3))),
        "overall_micro": 48.4,  # the paper's "Avg.": mean over the ~5k questions
    },
    "Qwen2.5-VL-3B": {
        "label": PAPER_TABLE1,
        "source": "reported: Wu et al. 2025, Table 1 (the base model, open-source baselines)",
        "per_task": dict(zip(TASKS, (24.3, 24.7, 31.7, 22.6, 38.3, 41.6, 26.3, 21.2))),
        "overall_micro": 30.6,  # "Avg.", per question as the Spatial-MLLM row
    },
    "Qwen2.5-VL-3B-Instruct": {
        "label": README_V11, "source": _README + " (the base model)",
        "overall_micro": 27.86, "overall_macro": 27.25,
        "micro_acc": 35.42, "micro_mra": 20.72, "macro_acc": 32.84, "macro_mra": 21.65,
    },
    "Qwen2.5-VL-3B-Instruct-135K": {
        "label": README_V11, "source": _README + " (the base model fine-tuned on the 135K data, no VGGT)",
        "overall_micro": 49.84, "overall_macro": 49.64,
        "micro_acc": 46.91, "micro_mra": 52.60, "macro_acc": 46.47, "macro_mra": 52.81,
    },
    "Spatial-MLLM-v1.1-Instruct-135K": {
        "label": README_V11, "source": _README + " (uniform frames)",
        "overall_micro": 51.13, "overall_macro": 50.48,
        "micro_acc": 49.28, "micro_mra": 52.88, "macro_acc": 47.07, "macro_mra": 53.88,
    },
    "Spatial-MLLM-v1.1-Instruct-135K + SA sampling": {
        "label": README_V11, "source": _README + " (space-aware frames)",
        "overall_micro": 52.75, "overall_macro": 51.81,
        "micro_acc": 52.13, "micro_mra": 53.33, "macro_acc": 49.15, "macro_mra": 54.46,
    },
    "Spatial-MLLM-v1.1-Instruct-820K": {
        "label": README_V11, "source": _README + " (uniform frames)",
        "overall_micro": 53.53, "overall_macro": 53.00,
        "micro_acc": 49.56, "micro_mra": 57.27, "macro_acc": 48.60, "macro_mra": 57.39,
    },
    "Spatial-MLLM-v1.1-Instruct-820K + SA sampling": {
        "label": README_V11, "source": _README + " (space-aware frames)",
        "overall_micro": 54.24, "overall_macro": 53.43,
        "micro_acc": 50.60, "micro_mra": 57.68, "macro_acc": 48.78, "macro_mra": 58.09,
    },
}
# Table 2 of the paper: ScanQA val (BLEU-1, BLEU-4, METEOR, ROUGE-L, CIDEr), SQA3D test (EM-1, EM-R1)
REPORTED_QA: dict[str, dict[str, dict[str, float]]] = {
    "scanqa": {"Spatial-MLLM-4B": {"BLEU-1": 44.4, "BLEU-4": 14.8, "METEOR": 18.4, "ROUGE-L": 45.0, "CIDEr": 91.8}},
    "sqa3d": {"Spatial-MLLM-4B": {"EM": 55.9, "EM_refined": 58.7}},
}
REPORTED_QA_SOURCE = "reported: Wu et al. 2025, Table 2 (ScanQA val, SQA3D test)"
REPORTED_NOTES = (
    "Rows marked (reported) are copied by hand, not reproduced here. Paper rows: Wu et al. 2025 (arXiv "
    "2505.23747), Table 1 (Spatial-MLLM-4B: 16 frames, space-aware sampling, SFT + GRPO; Qwen2.5-VL-3B: the "
    "base model); the paper's Avg. (48.4, 30.6) is the mean over questions (micro), the mean of the 8 task "
    "scores (46.95, 28.84) is the macro. Table 2: ScanQA val, SQA3D test. Rows marked (reported, official "
    "README) come from the official repository's README on master: the v1.1 checkpoints (SFT only, 135K or "
    "820K samples) and the base model scored by its own evaluation script at 16 frames, uniform or "
    "space-aware (SA) frames; it prints only the averages, no per-task scores."
)


def reported_row_name(name: str) -> str:
    """Row label of a reported VSI-Bench row: ``"<name> (reported)"`` for the paper's, ``"<name> (reported,
    official README)"`` for the v1.1 README's."""
    return f"{name} (reported)" if REPORTED_VSIBENCH[name]["label"] == PAPER_TABLE1 else \
        f"{name} (reported, official README)"


def reported_vsibench_macro(name: str = "Spatial-MLLM-4B") -> float:
    """Macro average of a reported row: the mean of its 8 task scores when printed (Spatial-MLLM-4B: 46.95;
    the paper's 48.4 is per question), else the printed macro (README rows)."""
    rep = REPORTED_VSIBENCH[name]
    if rep.get("per_task"):
        return float(np.mean(list(rep["per_task"].values())))
    return float(rep["overall_macro"])


@register_params("06_results")
@dataclass
class ResultsConfig(StageConfig):
    """Notebook 06: tables and figures from saved scores. Defaults are the ``tiny`` preset."""

    output_dir: str = field(default="outputs/tiny", metadata={"help": "run folder: reads eval/, writes figures/ and tables/"})
    seed: int = field(default=0, metadata={"help": "seed of the chance baseline (only when baselines are evaluated here)"})
    eval_dir: str | None = field(default=None, metadata={"help": "folder of <run>/scores.json; None = <output_dir>/eval"})
    table_runs: list[str] = field(
        default_factory=lambda: ["*"], metadata={"help": "run-name patterns (fnmatch) in the main tables"}
    )
    exclude_runs: list[str] = field(
        default_factory=lambda: ["05_*"],
        metadata={"help": "run-name patterns left out of the main tables (05's ablation grid has its own table)"},
    )
    include_reported: bool = field(default=True, metadata={"help": "put the paper's reported rows beside ours"})
    ablation_csv: str | None = field(
        default=None, metadata={"help": "notebook 05's per-run table; None = <output_dir>/tables/05_ablations.csv"}
    )
    baselines_if_empty: bool = field(
        default=True,
        metadata={"help": "no scores.json at all: evaluate the chance and frequency baselines on the synthetic "
                          "test rows (built with notebook 01's code if missing) so there is something to tabulate"},
    )  # fmt: skip
    baseline_eval_file: str = field(default="test_vsibench.jsonl", metadata={"help": "rows the baselines are scored on, in <output_dir>/data"})
    baseline_fit_file: str = field(default="train_vsibench.jsonl", metadata={"help": "rows the baselines are fitted on, in <output_dir>/data"})
    digits: int = field(default=1, metadata={"help": "decimals in the Markdown/LaTeX tables (the paper: 1)"})
    figure_formats: list[str] = field(default_factory=lambda: ["png", "pdf"], metadata={"help": "figure file types"})

    def __post_init__(self):
        if self.digits < 0:
            raise ValueError("digits must be >= 0")
        bad = [f for f in self.figure_formats if f not in ("png", "pdf", "svg")]
        if bad or not self.figure_formats:
            raise ValueError(f"figure_formats must be a non-empty subset of png, pdf, svg; got {self.figure_formats}")

    def resolved_eval_dir(self) -> Path:
        return resolve_path(self.eval_dir) if self.eval_dir else resolve_path(self.output_dir) / "eval"

    def resolved_ablation_csv(self) -> Path:
        return resolve_path(self.ablation_csv) if self.ablation_csv else \
            resolve_path(self.output_dir) / "tables" / "05_ablations.csv"


# ---- collecting -----------------------------------------------------------------------------------------------
def _benchmark(scores: dict, params: dict) -> str:
    if params.get("benchmark") in ("vsibench", "scanqa", "sqa3d"):
        return params["benchmark"]
    if "per_task" in scores:
        return "vsibench"
    return "sqa3d" if "per_type" in scores else "scanqa"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from e


def collect_scores(eval_dir: str | Path) -> pd.DataFrame:
    """Every ``<eval_dir>/<run>/scores.json`` as a tidy frame: ``run``, ``benchmark``, ``metric``, ``value``
    (percentages; VSI-Bench metrics are the 8 task keys, ``overall_macro``, ``overall_micro`` and
    ``num_questions``; ScanQA/SQA3D the :func:`~spatial_mllm.eval.scanqa.score_qa` keys). Runs sorted by name;
    an empty frame when there are none."""
    recs = []
    for path in sorted(Path(eval_dir).glob("*/scores.json")):
        scores = _read_json(path)
        run_json = path.parent / "run.json"
        params = (_read_json(run_json).get("params") or {}) if run_json.is_file() else {}
        bench = _benchmark(scores, params)
        if bench == "vsibench":
            values = {**scores["per_task"], "overall_macro": scores["overall_macro"],
                      "overall_micro": scores["overall_micro"]}
            values["num_questions"] = scores.get("num_questions", sum(scores.get("counts", {}).values()))
        else:
            values = {k: v for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for metric, value in values.items():
            recs.append({"run": path.parent.name, "benchmark": bench, "metric": metric,
                         "value": float("nan") if value is None else float(value)})
    return pd.DataFrame(recs, columns=["run", "benchmark", "metric", "value"])


def runs_summary(eval_dir: str | Path) -> pd.DataFrame:
    """One row per run: benchmark, questions, data source, frames, prompt, status, git sha, end time (from
    ``run.json``) — where each number of the tables comes from."""
    rows = []
    for path in sorted(Path(eval_dir).glob("*/scores.json")):
        scores = _read_json(path)
        run_json = path.parent / "run.json"
        run = _read_json(run_json) if run_json.is_file() else {}
        params = run.get("params") or {}
        pred = path.parent / "predictor.json"
        rows.append({
            "run": path.parent.name, "benchmark": _benchmark(scores, params),
            "questions": scores.get("num_questions"), "data": params.get("source"),
            "frames": params.get("num_frames"), "prompt": params.get("prompt_style"),
            "decoding": params.get("decoding", "greedy" if params.get("benchmark") else None),
            "predictor": json.loads(pred.read_text()).get("model") if pred.is_file() else None,
            "status": run.get("status"), "git_sha": (run.get("git_sha") or "")[:12] or None,
            "end_time": run.get("end_time"),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def _select(runs, include=("*",), exclude=()) -> list[str]:
    return [r for r in runs if any(fnmatch.fnmatch(r, p) for p in include)
            and not any(fnmatch.fnmatch(r, p) for p in exclude)]


def vsibench_table(tidy: pd.DataFrame, *, include=("*",), exclude=(), reported: bool = True) -> pd.DataFrame:
    """Table-1 style: rows = our VSI-Bench runs (then the reported rows: the paper's Table 1, then the official
    v1.1 README's), columns = the 8 tasks in the paper's order, ``Avg. (macro)``, ``Avg. (micro)``,
    ``questions`` and ``source`` ("ours" or where the reported row comes from). A task a run did not have,
    or a reported row did not print, is NaN."""
    vsi = tidy[tidy["benchmark"] == "vsibench"]
    rows = {}
    for run in _select(list(dict.fromkeys(vsi["run"])), include, exclude):
        m = vsi[vsi["run"] == run].set_index("metric")["value"]
        row = {TASK_LABELS[t]: m.get(t, np.nan) for t in TASKS}
        row.update({MACRO: m["overall_macro"], MICRO: m["overall_micro"], "questions": m.get("num_questions"),
                    "source": "ours"})
        rows[run] = row
    if reported:
        for name, rep in REPORTED_VSIBENCH.items():
            per_task = rep.get("per_task") or {}
            row = {TASK_LABELS[t]: per_task.get(t, np.nan) for t in TASKS}
            row.update({MACRO: reported_vsibench_macro(name), MICRO: rep["overall_micro"], "questions": np.nan,
                        "source": rep["label"]})
            rows[reported_row_name(name)] = row
    cols = [*TASK_LABELS.values(), MACRO, MICRO, "questions", "source"]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    table["questions"] = table["questions"].astype("Int64")
    table.index.name = "model / run"
    return table


def qa_table(tidy: pd.DataFrame, benchmark: str, *, include=("*",), exclude=(), reported: bool = True) -> pd.DataFrame:
    """ScanQA or SQA3D: rows = our runs (then the reported rows), columns = the paper's Table 2 metrics that are
    present (BLEU-1, BLEU-4, METEOR, ROUGE-L, CIDEr, EM-1, EM-R1), ``questions``, ``source``. Empty (no
    rows) when there is neither a run nor a reported row."""
    part = tidy[tidy["benchmark"] == benchmark]
    rows = {}
    for run in _select(list(dict.fromkeys(part["run"])), include, exclude):
        m = part[part["run"] == run].set_index("metric")["value"]
        rows[run] = {**{label: m.get(k, np.nan) for k, label in QA_METRICS.items()},
                     "questions": m.get("num_questions"), "source": "ours"}
    if reported:
        for name, vals in REPORTED_QA.get(benchmark, {}).items():
            rows[f"{name} (reported)"] = {**{label: vals.get(k, np.nan) for k, label in QA_METRICS.items()},
                                          "questions": np.nan, "source": "reported (paper Table 2)"}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[*QA_METRICS.values(), "questions", "source"])
    table = table.dropna(axis=1, how="all")
    if "questions" in table:
        table["questions"] = table["questions"].astype("Int64")
    table.index.name = "model / run"
    return table


# ---- ablations (notebook 05) ----------------------------------------------------------------------------------
ABLATION_KEYS = ("connector", "sampling", "frames")  # 05's csv may add "model" (evaluate mode: one per checkpoint)


def load_ablations(path: str | Path) -> pd.DataFrame | None:
    """Notebook 05's per-run csv (``[model,] connector, sampling, frames, seed, overall_micro, overall_macro,
    <tasks>``), or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    missing = [c for c in (*ABLATION_KEYS, "seed", "overall_micro") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: lacks columns {missing}")
    return df


def _t95(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def ablation_keys(df: pd.DataFrame) -> list[str]:
    """The grouping columns of a 05 table: ``model`` (when present), connector, sampling, frames."""
    return (["model"] if "model" in df.columns else []) + list(ABLATION_KEYS)


def ablation_table(df: pd.DataFrame, metric: str = "overall_micro") -> pd.DataFrame:
    """05's runs aggregated over seeds per (``model``,) connector, sampling, frames: ``mean``, ``std``, ``n``,
    ``ci95`` (half-width of the Student-t 95 % interval of the mean; NaN with one seed)."""
    keys = ablation_keys(df)
    g = df.groupby(keys, dropna=False, sort=False)[metric]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.size()})
    out["ci95"] = [_t95(n) * s / math.sqrt(n) if n > 1 else float("nan") for n, s in zip(out["n"], out["std"])]
    return out.reset_index()


# ---- writers --------------------------------------------------------------------------------------------------
def _cell(v, digits: int, empty: str) -> str:
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return empty
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


def markdown_table(df: pd.DataFrame, digits: int = 1, index: bool = True) -> str:
    """A GitHub pipe table; floats rounded to ``digits``, missing values ``–``, ``|`` in text escaped."""
    header = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for idx, row in zip(df.index, df.itertuples(index=False, name=None)):  # itertuples keeps each column's dtype
        cells = ([str(idx)] if index else []) + [_cell(v, digits, "–") for v in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(df: pd.DataFrame, digits: int = 1, caption: str | None = None, label: str | None = None,
                index: bool = True) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``); numbers right-aligned, text
    escaped, missing values ``--``."""
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    align = ("l" if index else "") + "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{_tex(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
    for idx, row in zip(df.index, df.itertuples(index=False, name=None)):
        cells = ([_tex(idx)] if index else []) + [_tex(_cell(v, digits, "--")) for v in row]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: str | Path, *, digits: int = 1, caption: str | None = None,
                label: str | None = None, notes: str | None = None, index: bool = True) -> list[Path]:
    """``<stem>.csv`` (full precision), ``<stem>.md`` and ``<stem>.tex`` (``notes`` below the Markdown table
    and as ``%`` comments under the LaTeX one; ``index``: write the row labels); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    df.to_csv(paths[0], index=index)
    md, tex = markdown_table(df, digits, index=index), latex_table(df, digits, caption=caption, label=label, index=index)
    if notes:
        md += "\n" + notes.strip() + "\n"
        tex += "".join(f"% {line}\n" for line in notes.strip().splitlines())
    paths[1].write_text(md, encoding="utf-8")
    paths[2].write_text(tex, encoding="utf-8")
    return paths


# ---- figures --------------------------------------------------------------------------------------------------
def save_figure_formats(fig, stem: str | Path, formats=("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``<stem>.<fmt>`` for every format (parent folders created); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    return paths


def plot_vsibench_bars(table: pd.DataFrame, metric_cols=None, title: str | None = None):
    """Grouped bars per task (and the two averages): one bar per row of :func:`vsibench_table`; reported rows
    hatched and named as such. Returns the figure."""
    import matplotlib.pyplot as plt

    cols = list(metric_cols or [*TASK_LABELS.values(), MACRO, MICRO])
    n = len(table)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.1 * len(cols) + 0.3 * n), 4.2))
    width = 0.8 / max(n, 1)
    x = np.arange(len(cols))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, row) in enumerate(table.iterrows()):
        is_reported = str(row.get("source", "ours")) != "ours"
        vals = pd.to_numeric(row[cols], errors="coerce").to_numpy(dtype=float)
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(vals), width, label=str(name),
               color=colors[i % len(colors)], hatch="//" if is_reported else None,
               edgecolor="black" if is_reported else None, linewidth=0.5)
    ax.set_xticks(x, cols, rotation=30, ha="right")
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.axvline(len(TASK_LABELS) - 0.5, color="grey", lw=0.8, ls=":")
    ax.set_title(title or "VSI-Bench per task: ours vs. reported (hatched)")
    ax.legend(fontsize=8, loc="upper right", ncol=1 if n < 5 else 2)
    fig.tight_layout()
    return fig


def plot_ablation_bars(agg: pd.DataFrame, title: str | None = None):
    """Bars of :func:`ablation_table` (mean over seeds, 95 % interval as error bars): one group per frame
    count, one bar per (model,) connector, sampling. Returns the figure."""
    import matplotlib.pyplot as plt

    frames = sorted(agg["frames"].unique())
    series = [k for k in ablation_keys(agg) if k != "frames"]
    combos = list(dict.fromkeys(agg[series].astype(str).itertuples(index=False, name=None)))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(frames) + 0.4 * len(combos)), 4.0))
    width = 0.8 / max(len(combos), 1)
    x = np.arange(len(frames))
    for i, combo in enumerate(combos):
        mask = (agg[series].astype(str) == list(combo)).all(axis=1)
        part = agg[mask].set_index("frames").reindex(frames)
        ax.bar(x - 0.4 + width * (i + 0.5), part["mean"].fillna(0), width, yerr=part["ci95"].fillna(0),
               capsize=3, label=" / ".join(combo))
    ax.set_xticks(x, [f"{f} frames" for f in frames])
    ax.set_ylabel("VSI-Bench metric (%, mean over seeds)")
    ax.set_title(title or "ablations (notebook 05): connector × sampling × frames")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---- a fresh checkout: something real to tabulate -------------------------------------------------------------
def ensure_baseline_scores(cfg: ResultsConfig, progress: bool = False) -> list[str]:
    """When no ``scores.json`` exists under the eval folder (and ``cfg.baselines_if_empty``), score the chance
    and frequency baselines (fitted on ``baseline_fit_file``) on ``baseline_eval_file`` of
    ``<output_dir>/data``, building notebook 01's tiny synthetic dataset there first if it is missing
    (~15 s). Returns the names of the runs it wrote (``06_baseline_chance``, ``06_baseline_frequency``), or
    ``[]`` when scores already existed."""
    from spatial_mllm.eval.baselines import ChanceBaseline, FrequencyBaseline
    from spatial_mllm.eval.vsibench import EvalConfig, evaluate_vsibench, load_vsibench

    eval_dir = cfg.resolved_eval_dir()
    if any(eval_dir.glob("*/scores.json")) or not cfg.baselines_if_empty:
        return []
    out = resolve_path(cfg.output_dir)
    data_dir = out / "data"
    if not (data_dir / cfg.baseline_eval_file).is_file():
        from spatial_mllm.data.build import DataConfig, build_datasets

        build_datasets(DataConfig(output_dir=str(out), seed=cfg.seed), progress=progress)
    fit_rows = load_vsibench(data_dir / cfg.baseline_fit_file)
    names = []
    for name, predict in (("chance", ChanceBaseline(cfg.seed, fit_rows)), ("frequency", FrequencyBaseline(fit_rows))):
        run = f"06_baseline_{name}"
        ecfg = EvalConfig(output_dir=str(eval_dir / run), source=str(data_dir / cfg.baseline_eval_file),
                          video_root=str(data_dir), seed=cfg.seed, predictor=name)
        evaluate_vsibench(ecfg, predict)
        names.append(run)
    return names
