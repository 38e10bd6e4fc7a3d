"""`spatial-mllm evaluate`: score a model or a baseline on VSI-Bench, ScanQA or SQA3D from the command line.

    spatial-mllm evaluate vsibench --model PATH_OR_ID|tiny|chance|frequency \\
        --data nyu-visionx/VSI-Bench|rows.jsonl|rows.parquet|clone/ --video-root DIR \\
        [--frames 16] [--frames-cache cache.json] [--out outputs/eval/NAME] [--limit N] \\
        [--decoding official|greedy] [--prompt-style auto|v1.1|v1.0|sft|lmms_eval|think] \\
        [--params eval.yaml] [--set key=value ...]
    spatial-mllm evaluate scanqa --model ... --annotations ScanQA_v1.0_val.json --video-root DIR
    spatial-mllm evaluate sqa3d  --model ... --data v1_balanced_questions_test_scannetv2.json \\
        --annotations v1_balanced_sqa_annotations_test_scannetv2.json --video-root DIR

The arguments fill an :class:`~spatial_mllm.eval.vsibench.EvalConfig`; precedence, lowest first: the
dataclass defaults, ``--params`` (a YAML of EvalConfig keys), the flags given on the command line, ``--set``.
The run goes through the resumable, sharded loop (:mod:`spatial_mllm.eval.loop`): rerunning the same command
predicts only what is missing, and ``accelerate launch -m spatial_mllm.eval.cli vsibench ...`` (or
``-m spatial_mllm.cli evaluate ...``) splits the questions over the processes. The folder gets
``predictions.jsonl``, ``scores.json``, ``run.json`` and ``predictor.json`` (which model or baseline made the
predictions: the loop's resume check covers the questions, not the weights, so a rerun with another
``--model`` into the same folder is refused unless ``--overwrite`` is given).

Predictors (``--model``):

* a checkpoint folder or hub id (official Spatial-MLLM checkpoints and our saves), or ``tiny`` (the
  random-init CPU preset): :class:`~spatial_mllm.eval.model_predict.ModelPredictor`, decoding as
  ``--decoding`` says (default greedy, lmms-eval's; ``official`` = Spatial-MLLM's evaluation scripts: sampling
  with temperature 0.1 and top_p 0.001, 1024 new tokens on VSI-Bench, seeded with ``--seed``). Released
  checkpoints are scored as their authors did with ``--decoding official --prompt-style auto`` (``auto``: the
  ``<answer>``-tag v1.0 prompt for ``Diankun/Spatial-MLLM-subset-sft``, the v1.1 prompt for the v1.1 models
  and Qwen2.5-VL-3B-Instruct; :mod:`spatial_mllm.eval.prompts`); baselines ignore the prompt (``auto`` →
  ``v1.1``);
* ``frequency``: VSI-Bench's "Chance Level (Frequency)" — most frequent letter / mean number per question
  type — fitted on ``--fit`` rows, by default on the evaluated benchmark itself (as the VSI-Bench paper
  does); for ScanQA/SQA3D the most frequent answer per first question word;
* ``chance``: VSI-Bench's "Chance Level (Random)" — a seeded random letter; numeric questions get an empty
  answer (scored 0; the paper leaves them blank) unless ``--fit`` rows are given (then their mean).
  Not defined for the open-ended ScanQA/SQA3D.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from spatial_mllm.config import ConfigError, parse_overrides, read_yaml, resolve_path

__all__ = ["add_evaluate_subparser", "run_evaluate_command", "build_eval_config", "build_predictor", "main"]

BASELINES = ("chance", "frequency")

# flag name on the command line → EvalConfig field
_FLAG_FIELDS = {
    "data": "source", "annotations": "annotations", "video_root": "video_root", "frames": "num_frames",
    "frames_cache": "frames_cache", "out": "output_dir", "limit": "limit", "batch_size": "batch_size",
    "max_new_tokens": "max_new_tokens", "prompt_style": "prompt_style", "decoding": "decoding", "split": "split",
    "subset": "subset",
    "revision": "revision", "seed": "seed", "score_rule": "score_rule", "extract_answer": "extract_answer",
}  # fmt: skip


def add_evaluate_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``evaluate`` on an ``argparse`` subparsers object (``spatial_mllm/cli.py`` wires it)."""
    p = subparsers.add_parser(
        "evaluate", help="score a model or a baseline on VSI-Bench, ScanQA or SQA3D (resumable, data parallel)",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    _add_arguments(p)
    p.set_defaults(func=run_evaluate_command)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("benchmark", choices=["vsibench", "scanqa", "sqa3d"], help="which benchmark")
    p.add_argument("--model", required=True,
                   help="checkpoint folder or hub id, 'tiny' (random-init CPU model), or a baseline: chance, frequency")
    p.add_argument("--data", default=None,
                   help="VSI-Bench: hub id (default nyu-visionx/VSI-Bench), local clone, or rows file "
                        "(.jsonl/.json/.parquet); SQA3D: the questions file; ScanQA: the annotation file")
    p.add_argument("--annotations", default=None,
                   help="ScanQA: ScanQA_v1.0_val.json (same as --data); SQA3D: the answers file "
                        "v1_balanced_sqa_annotations_<split>_scannetv2.json")
    p.add_argument("--video-root", default=None,
                   help="VSI-Bench: <root>/<dataset>/<scene>.mp4 (or our <root>/<dataset>/<scene>/video.mp4); "
                        "ScanQA/SQA3D: <root>/<scene_id>.mp4")
    p.add_argument("--frames", type=int, default=None, help="uniform frames per video (paper: 16)")
    p.add_argument("--frames-cache", default=None,
                   help="JSON {'<dataset>/<scene>': [frame indices]} from the space-aware sampler")
    p.add_argument("--out", default=None, help="output folder (default outputs/eval/<benchmark>_<model>)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N questions")
    p.add_argument("--batch-size", type=int, default=None, help="questions per predict call")
    p.add_argument("--decoding", choices=["official", "greedy"], default=None,
                   help="official: Spatial-MLLM's eval scripts (sampling, temperature 0.1, top_p 0.001, seeded); "
                        "greedy: lmms-eval's (default)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="token budget (default: official 1024 on VSI-Bench, 256 on ScanQA/SQA3D; greedy 16, "
                        "1024 for the v1.0/think prompts)")
    p.add_argument("--prompt-style", choices=["auto", "v1.1", "v1.0", "sft", "lmms_eval", "think"], default=None,
                   help="VSI-Bench prompt set (default v1.1; auto = the checkpoint's own, see "
                        "spatial_mllm.eval.prompts)")
    p.add_argument("--extract-answer", action="store_true", default=None,
                   help="score the <answer>…</answer> content (reasoning outputs)")
    p.add_argument("--score-rule", choices=["lmms_eval", "spatial_mllm"], default=None,
                   help="VSI-Bench answer parsing rules (default lmms_eval)")
    p.add_argument("--split", default=None, help="dataset split for hub/clone sources (default test)")
    p.add_argument("--subset", default=None, help="hub config name (newer VSI-Bench revisions)")
    p.add_argument("--revision", default=None, help="hub commit to pin (recorded in run.json)")
    p.add_argument("--seed", type=int, default=None, help="seed of the chance baseline and of sampled decoding")
    p.add_argument("--fit", default=None,
                   help="baselines: rows to fit on (VSI-Bench rows file, or a ScanQA annotation file); "
                        "default: the evaluated rows (frequency), none (chance)")
    p.add_argument("--params", default=None, help="YAML of EvalConfig keys (flags and --set win over it)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override an EvalConfig key (value parsed as YAML); repeatable")
    p.add_argument("--device", default=None, help="cuda / cpu (default: this process's accelerate device)")
    p.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--caption-backend", choices=["auto", "official", "builtin"], default="auto",
                   help="ScanQA/SQA3D BLEU/METEOR/ROUGE/CIDEr: pycocoevalcap (official) or our builtin scorer")
    p.add_argument("--no-meteor", action="store_true", help="ScanQA/SQA3D: skip METEOR (its JVM is slow to start)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete earlier predictions in the output folder first (default: resume from them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _slug(text: str) -> str:
    name = Path(text.rstrip("/")).name or text
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def build_eval_config(args: argparse.Namespace):
    """The :class:`~spatial_mllm.eval.vsibench.EvalConfig` of parsed ``evaluate`` arguments, with
    ``prompt_style: auto`` resolved for ``--model`` (:meth:`~spatial_mllm.eval.vsibench.EvalConfig.for_checkpoint`;
    a baseline gets ``v1.1``, whose prompts it never reads).

    Raises :class:`~spatial_mllm.config.ConfigError` naming a bad key or value."""
    from spatial_mllm.eval.vsibench import VSIBENCH_HUB_ID, EvalConfig

    data: dict = dict(read_yaml(args.params)) if args.params else {}
    src = str(args.params) if args.params else "command line"
    for flag, key in _FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            data[key] = value
    data["benchmark"] = args.benchmark
    if args.benchmark == "scanqa" and args.data is None and args.annotations is not None:
        data["source"] = data.pop("annotations")  # ScanQA's one file holds questions and answers
    if "source" not in data:
        if args.benchmark != "vsibench":
            raise ConfigError(f"{args.benchmark}: give the annotation file (--annotations, or --data for SQA3D's "
                              "questions)")
        data["source"] = VSIBENCH_HUB_ID
    if "output_dir" not in data:
        data["output_dir"] = f"outputs/eval/{args.benchmark}_{_slug(args.model)}"
    if args.model in BASELINES:
        data["predictor"] = args.model
    data.update(parse_overrides(args.set or [], "--set"))
    cfg = EvalConfig.from_dict(data, source=src)
    if cfg.prompt_style == "auto" and args.model in BASELINES:
        return cfg.replace(prompt_style="v1.1")
    try:
        return cfg.for_checkpoint(args.model)
    except ValueError as e:
        raise ConfigError(f"{src}: {e}") from e


def load_rows(cfg) -> list[dict]:
    """The benchmark rows ``cfg`` names (VSI-Bench rows, ScanQA or SQA3D rows)."""
    from spatial_mllm.eval.scanqa import load_scanqa, load_sqa3d
    from spatial_mllm.eval.vsibench import load_vsibench

    if cfg.benchmark == "scanqa":
        return load_scanqa(resolve_path(cfg.source))
    if cfg.benchmark == "sqa3d":
        return load_sqa3d(resolve_path(cfg.source), resolve_path(cfg.annotations))
    local = resolve_path(cfg.source)
    return load_vsibench(local if local.exists() else cfg.source, split=cfg.split, subset=cfg.subset,
                         revision=cfg.revision)


def build_predictor(model: str, cfg, rows: list[dict], *, fit: str | None = None, device: str | None = None,
                    dtype: str | None = None):
    """``(predict, description)``: a baseline fitted as the module docstring says, or a
    :class:`~spatial_mllm.eval.model_predict.ModelPredictor` of ``model`` (path, hub id or ``tiny``)."""
    from spatial_mllm.eval.baselines import ChanceBaseline, FrequencyBaseline, MostFrequentAnswer

    if model in BASELINES:
        if fit is not None and cfg.benchmark == "sqa3d":
            raise ValueError("--fit is not supported for SQA3D (its rows need a questions and an answers file)")
        fit_rows = load_rows(cfg.replace(source=fit)) if fit is not None else None
        desc = {"model": model, "fit": fit or ("evaluated rows" if model == "frequency" else None)}
        if cfg.benchmark != "vsibench":
            if model == "chance":
                raise ValueError(f"the chance baseline picks an option letter; {cfg.benchmark} is open-ended "
                                 "(use --model frequency)")
            return MostFrequentAnswer(fit_rows or rows), desc
        if model == "frequency":
            return FrequencyBaseline(fit_rows or rows), desc
        return ChanceBaseline(cfg.seed, fit_rows), {**desc, "seed": cfg.seed}
    from spatial_mllm.eval.model_predict import ModelPredictor
    from spatial_mllm.models.ask import load_model_and_processor

    m, processor = load_model_and_processor(model, device, dtype)
    processor.num_frames = cfg.num_frames
    return ModelPredictor(m, processor, cfg.generation_kwargs(), seed=cfg.seed, batch_size=cfg.batch_size,
                          share_prefix=cfg.share_prefix, feature_cache=cfg.feature_cache_dir), {"model": model,
                                                                                  "dtype": str(m.dtype)}


def _check_predictor(out: Path, desc: dict, overwrite: bool) -> None:
    """Refuse to resume predictions that another predictor made; with ``overwrite`` start afresh."""
    record = out / "predictor.json"
    if overwrite and out.is_dir():
        for f in out.glob("predictions*.jsonl"):
            f.unlink()
        record.unlink(missing_ok=True)
    if record.is_file():
        old = json.loads(record.read_text())
        if old != desc:
            raise ValueError(f"{out} holds predictions of {old}, not {desc}: pass --overwrite or another --out")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(desc, indent=2) + "\n")


def _print_scores(cfg, scores: dict, name: str, out: Path, new: int, reused: int) -> None:
    print(f"\n{cfg.benchmark} — {name}: {scores.get('num_questions')} questions "
          f"({new} predicted now, {reused} resumed from {out})")
    if cfg.benchmark == "vsibench":
        from spatial_mllm.eval.model_predict import markdown_table, scores_table

        print(markdown_table(scores_table({name: scores}).round(1)), end="")
    else:
        keys = ["EM", "EM_refined", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
        print("| metric | " + name + " |\n|---|---|")
        for k in keys:
            v = scores.get(k)
            print(f"| {k} | {'–' if v is None else f'{v:.1f}'} |")
        for t, s in (scores.get("per_type") or {}).items():
            print(f"| EM ({t}, {s['count']}) | {s['EM']:.1f} |")
    print(f"scores: {out / 'scores.json'}\npredictions: {out / 'predictions.jsonl'}\nrun record: {out / 'run.json'}")


def run_evaluate_command(args: argparse.Namespace) -> int:
    """Run ``evaluate`` from parsed arguments: build config and predictor, run the loop, print the table."""
    import torch

    from spatial_mllm.eval.loop import default_state, read_predictions
    from spatial_mllm.eval.metrics import CaptionScorer
    from spatial_mllm.eval.scanqa import evaluate_qa
    from spatial_mllm.eval.vsibench import evaluate_vsibench

    # errors (a bad key, a missing file, a refused folder) are reported by spatial_mllm.errors.run_command
    cfg = build_eval_config(args)
    rows = load_rows(cfg)
    state = default_state()
    out = resolve_path(cfg.output_dir)
    predict, desc = build_predictor(args.model, cfg, rows, fit=args.fit, device=args.device or str(state.device),
                                    dtype=args.dtype)
    if state.is_main_process:
        _check_predictor(out, desc, args.overwrite)
    state.wait_for_everyone()
    before = set(read_predictions(out)) if out.is_dir() else set()
    progress = not args.no_progress
    with torch.no_grad():
        if cfg.benchmark == "vsibench":
            scores = evaluate_vsibench(cfg, predict, rows=rows, state=state, progress=progress)
        else:
            scorer = CaptionScorer(args.caption_backend, meteor=not args.no_meteor)
            scores = evaluate_qa(cfg, predict, rows=rows, scorer=scorer, state=state, progress=progress)
    if state.is_main_process:
        after = set(read_predictions(out))
        _print_scores(cfg, scores, _slug(args.model), out, len(after - before), scores["num_questions"]
                      - len(after - before))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser (``python -m spatial_mllm.eval.cli`` — what ``accelerate launch -m`` runs)."""
    p = argparse.ArgumentParser(prog="spatial-mllm evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``accelerate launch -m spatial_mllm.eval.cli``), with the errors policy of
    :mod:`spatial_mllm.errors` (one line, ``--debug`` for the traceback)."""
    from spatial_mllm.errors import run_command

    p = build_parser()
    p.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    args = p.parse_args(argv)
    return run_command(run_evaluate_command, args, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
