"""The ``spatial-mllm`` command.

    spatial-mllm run-notebooks --preset tiny [--only 03 04] [--set key=value ...]
    spatial-mllm ask --model PATH_OR_ID --video v.mp4 [--frames 16] [--sampling uniform|space-aware] "question"
    spatial-mllm evaluate vsibench|scanqa|sqa3d --model PATH_OR_ID|tiny|chance|frequency --data ... [--out DIR]
    spatial-mllm export [--layout ours|official-v1.1] SRC DST [--vggt-heads facebook/VGGT-1B] [--push-to-hub REPO]

Errors: a known error (a missing or corrupt file, a bad checkpoint, a bad params key, ...) is one line on
stderr, ``error: ...``, naming the file or key, exit code 2; anything else is one line plus "run with --debug
for the traceback", exit code 1. ``--debug`` (before or after the subcommand) prints the full traceback.
The policy lives in :mod:`spatial_mllm.errors`; no subcommand catches errors of its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_run_notebooks(args: argparse.Namespace) -> int:
    from spatial_mllm.config import parse_overrides
    from spatial_mllm.runner import NotebookFailed, run_notebooks

    overrides = parse_overrides(args.set or [], "--set")
    try:
        results = run_notebooks(
            args.preset, args.only, root=args.root, output_root=args.output_root, kernel=args.kernel,
            overrides=overrides or None, progress=not args.no_progress,
        )
    except NotebookFailed as e:  # the failing cell's source and error: a report of its own, by design
        print(f"\nFAILED: {e}", file=sys.stderr)
        if e.executed_path is not None:
            print(f"(the partly executed notebook is {e.executed_path})", file=sys.stderr)
        return 1
    out = Path(args.root or ".").resolve() / args.output_root / args.preset
    print(f"\nRan {len(results)} notebook(s) on preset {args.preset!r}:")
    for r in results:
        print(f"  {r.stem:<28} {r.seconds:7.1f} s   {r.executed}")
    print(f"Executed notebooks and run.json files: {out}")
    print(f"Figures: {out / 'figures'}")
    print(f"Result tables: {out / 'tables'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spatial-mllm", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    rn = sub.add_parser("run-notebooks", help="execute notebooks/NN_*.ipynb on a preset with papermill")
    rn.add_argument("--preset", default="tiny", help="params/<preset>/ to use (tiny | paper | ...)")
    rn.add_argument("--only", nargs="+", help="run only these notebooks (number like 03, or stem)")
    rn.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a parameter in every notebook (value parsed as YAML)")
    rn.add_argument("--root", default=None, help="project root (default: current directory)")
    rn.add_argument("--output-root", default="outputs", help="executed copies go to <this>/<preset>/")
    rn.add_argument("--kernel", default="spatial-mllm", help="Jupyter kernel name")
    rn.add_argument("--no-progress", action="store_true", help="no progress bar")
    rn.set_defaults(func=_cmd_run_notebooks)

    from spatial_mllm.models.ask import add_ask_subparser  # cheap: transformers loads only when it runs

    add_ask_subparser(sub)

    from spatial_mllm.eval.cli import add_evaluate_subparser

    add_evaluate_subparser(sub)

    from spatial_mllm.models.export import add_export_subparser

    add_export_subparser(sub)

    debug_help = "print the full traceback of an error (default: one line naming the file or key)"
    p.add_argument("--debug", action="store_true", help=debug_help)
    for sp in sub.choices.values():  # also accepted after the subcommand
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand under :func:`spatial_mllm.errors.run_command`."""
    from spatial_mllm.errors import run_command

    args = build_parser().parse_args(argv)
    return run_command(args.func, args, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
