"""Command-line errors a person can read: one line on stderr, the traceback only with ``--debug``.

Every ``spatial-mllm`` subcommand runs through :func:`run_command` (from ``spatial_mllm.cli.main``; the
stand-alone ``python -m spatial_mllm.eval.cli`` uses it too), so no command catches errors of its own.

Policy (exit codes):

* **2 — a known error**: something the person can fix, reported as ``error: <message>``. Known are the
  project's own error types (any exception class defined in ``spatial_mllm``: ``ConfigError``,
  ``VideoReadError``, ``BadRowError``, ...) and ``OSError`` (``FileNotFoundError``, permissions, corrupt or
  unreadable files, hub lookups), ``ValueError``, ``KeyError`` and ``ImportError`` (a missing optional
  package). Their raising sites write messages that name the file, the key or the argument (a missing video,
  a corrupt mp4, a checkpoint folder without weights or with a corrupt safetensors file, a tensor missing
  from a checkpoint, a params key that does not exist). Code 2 is also argparse's for a bad command line.
* **1 — anything else** (a bug, or a failure nobody foresaw): ``error: <Type>: <message> (run with --debug for
  the traceback)``. A failed notebook in ``run-notebooks`` also exits 1, with its cell and error printed by
  that command (its report is more than one line by design).
* **130** — interrupted (Ctrl-C).

With ``--debug`` (before or after the subcommand) the full traceback is printed as well; the exit code is
the same. A message is printed on one line: line breaks inside it are folded into spaces.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

__all__ = ["KNOWN_BUILTIN_ERRORS", "is_known", "one_line", "run_command", "EXIT_KNOWN", "EXIT_UNKNOWN",
           "EXIT_INTERRUPTED"]

EXIT_KNOWN = 2
EXIT_UNKNOWN = 1
EXIT_INTERRUPTED = 130
KNOWN_BUILTIN_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, ImportError)
DEBUG_HINT = "(run with --debug for the traceback)"


def is_known(exc: BaseException) -> bool:
    """A project error type (defined in ``spatial_mllm``) or one of :data:`KNOWN_BUILTIN_ERRORS`."""
    return isinstance(exc, KNOWN_BUILTIN_ERRORS) or any(
        c.__module__.split(".")[0] == "spatial_mllm" for c in type(exc).__mro__)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (``KeyError``'s without the repr quotes)."""
    msg = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    text = " ".join(part.strip() for part in str(msg).splitlines() if part.strip())
    return text or type(exc).__name__


def run_command(func: Callable[..., int], *args, debug: bool = False, stream=None) -> int:
    """``func(*args)`` with the policy of the module docstring; returns the exit code."""
    stream = stream if stream is not None else sys.stderr
    try:
        code = int(func(*args) or 0)
        close_process_group()  # after a finished run only: a failed rank's peers may still wait on it
        return code
    except KeyboardInterrupt:
        print("error: interrupted", file=stream)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place that turns any error into a readable exit
        if debug:
            traceback.print_exc(file=stream)
        if is_known(exc):
            print(f"error: {one_line(exc)}", file=stream)
            return EXIT_KNOWN
        hint = "" if debug else f" {DEBUG_HINT}"
        print(f"error: {type(exc).__name__}: {one_line(exc)}{hint}", file=stream)
        return EXIT_UNKNOWN


def close_process_group() -> None:
    """Tear down the ``torch.distributed`` process group a command started (``accelerate launch``), if any:
    gloo's threads still running at interpreter exit can abort a rank after its work is done ("terminate
    called without an active exception", seen under load), which turns a finished run into a failed exit."""
    dist = sys.modules.get("torch.distributed")  # never imports torch for a command that did not
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
