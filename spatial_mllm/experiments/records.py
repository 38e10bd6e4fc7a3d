"""Resume safety shared by the studies: a finished piece is reused only when it was made with the settings asked now.

A study (the ablation grid, the mini study) skips what it finished before, so that an interrupted run resumes. A
finished piece made with other settings must never stand in for the one asked: :func:`check_same_settings` compares
the settings recorded beside it with the ones the config gives now and raises an error that names the keys.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["check_same_settings"]

_PATHS_OF_THE_PIECE = frozenset({"out_dir", "output_dir"})


def check_same_settings(path: Path, expected: dict, what: str, key: str | None = "params",
                        added_later: dict | None = None) -> None:
    """The record at ``path`` (a JSON file; its ``key`` entry, or the whole file with ``key=None``) must equal
    ``expected`` apart from the piece's own folder (``out_dir``, ``output_dir``). A setting in ``added_later``
    that the record lacks is read as that value (what older pieces were made with). A record without ``key`` is
    refused: nothing says how the piece was made. Raises ``ValueError`` naming the keys that differ, both values,
    and the folder to delete."""
    got = json.loads(Path(path).read_text())
    if key is not None:
        if key not in got:
            raise ValueError(f"{path} has no record of its {what} settings ('{key}'), so the finished piece in "
                             f"{Path(path).parent} cannot be reused safely; delete it to redo it")
        got = got[key]
    got = {**{k: v for k, v in (added_later or {}).items() if k not in got and k in expected}, **got}
    diff = sorted(k for k in set(got) | set(expected) if k not in _PATHS_OF_THE_PIECE and got.get(k) != expected.get(k))
    if diff:
        raise ValueError(f"{path} was made with other {what} settings ({', '.join(diff)}: "
                         f"{ {k: got.get(k) for k in diff} } vs now { {k: expected.get(k) for k in diff} }); "
                         f"use another output_dir or delete {Path(path).parent} to redo it")
