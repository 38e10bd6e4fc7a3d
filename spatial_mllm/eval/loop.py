"""The model-agnostic evaluation loop: batches → ``predict`` → jsonl, data-parallel and resumable.

``predict(batch: list[dict]) -> list[str]`` is any callable (a model adapter, a baseline). Each item it gets
is a benchmark row plus what a model needs (``prompt``, ``video``, ``num_frames``, ``frame_indices``); it
returns one raw text per item. Decoding settings belong to the adapter
(:class:`~spatial_mllm.eval.model_predict.ModelPredictor`: the official decoding or greedy, ``EvalConfig.decoding``);
the items carry them (``generation``) so that they are part of the resume fingerprint.

Data parallel (accelerate, the way lmms-eval shards): items that still lack a prediction are sharded by
process index — process ``i`` of ``n`` takes ``todo[i::n]`` — and every process appends its records to
``<out_dir>/predictions.shard<i>.jsonl`` (flushed after each batch). At the end the records are gathered
(``accelerate.utils.gather_object``) and merged with those of earlier runs in item order into
``predictions.jsonl``. Scores are computed from that merged list, so they do not depend on the number of
processes.

Grouped by video: a predictor with a ``group_key`` attribute (``item -> hashable``, e.g.
:class:`~spatial_mllm.eval.model_predict.ModelPredictor`, whose key is the video and its frame choice) gets
one whole group per call — every remaining question about one video, so that it encodes the video and
prefills the shared prompt prefix once — and processes take whole groups (``groups[i::n]``, in order of first
appearance). Records are flushed after each group: a crash loses at most that video's questions.

Resume: on start every ``predictions*.jsonl`` in ``out_dir`` is read; items whose key has a record are
skipped. A record stores a fingerprint of its item (prompt, ground truth, frames, decoding); a record whose
fingerprint differs from the current item's raises ``StalePredictionsError`` instead of being reused. A
shard file whose last line was cut by an interruption is truncated to its last complete line before
anything is appended. ``out_dir`` must be on a filesystem every process sees (as for lmms-eval's outputs).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Predictor",
    "StalePredictionsError",
    "fingerprint",
    "shard",
    "predict_shard",
    "read_predictions",
    "collect_predictions",
    "run_predictions",
    "evaluate_items",
    "default_state",
    "MERGED_NAME",
]

MERGED_NAME = "predictions.jsonl"
_SHARD_GLOB = "predictions.shard*.jsonl"


class Predictor(Protocol):
    def __call__(self, batch: list[dict]) -> list[str]: ...


class StalePredictionsError(RuntimeError):
    """``out_dir`` holds predictions made for different items (another prompt, benchmark or frames)."""


def fingerprint(item: dict, fields: Sequence[str]) -> str:
    """crc32 (hex) of the JSON of ``item``'s ``fields`` — what must not change between a run and its resume."""
    blob = json.dumps({f: item.get(f) for f in fields}, sort_keys=True, ensure_ascii=False, default=str)
    return f"{zlib.crc32(blob.encode()):08x}"


def shard(items: Sequence, index: int, count: int) -> list:
    """Items of process ``index`` of ``count``: ``items[index::count]`` (lmms-eval's strided split)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} outside [0, {count})")
    return list(items[index::count])


def _repair(path: Path) -> None:
    """Drop a trailing partial line (an interrupted write) so that appends start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)


def read_predictions(out_dir: str | os.PathLike) -> dict[str, dict]:
    """All records in ``out_dir``'s ``predictions*.jsonl`` files, by key. An unparsable *last* line of a file
    (an interrupted write) is ignored; one anywhere else is an error naming the file and line."""
    out_dir = Path(out_dir)
    found: dict[str, dict] = {}
    paths = sorted(out_dir.glob(_SHARD_GLOB))
    if (out_dir / MERGED_NAME).is_file():
        paths.append(out_dir / MERGED_NAME)
    for path in paths:
        lines = path.read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                if i == len(lines) - 1:
                    continue
                raise ValueError(f"{path}:{i + 1}: invalid JSON ({e.msg})") from e
            found[str(rec["key"])] = rec
    return found


def _check_fresh(items: Sequence[dict], done: dict[str, dict], key: Callable, fields: Sequence[str]) -> None:
    for it in items:
        rec = done.get(str(key(it)))
        if rec is not None and rec.get("fingerprint") != fingerprint(it, fields):
            raise StalePredictionsError(
                f"a stored prediction for item {key(it)!r} was made for a different item or prompt "
                f"(fields {list(fields)}); use a new output folder or delete the old predictions"
            )


def predict_shard(
    items: Sequence[dict],
    predict: Predictor,
    out_dir: str | os.PathLike,
    *,
    key: Callable[[dict], Any],
    fingerprint_fields: Sequence[str],
    shard_index: int = 0,
    num_shards: int = 1,
    batch_size: int = 1,
    record_fields: Sequence[str] = (),
    done: dict[str, dict] | None = None,
    progress: bool = False,
    group_key: Callable[[dict], Any] | None = None,
) -> list[dict]:
    """Predict this shard's share of the items not yet in ``out_dir``; append records to its shard file.

    Returns the new records (``key``, ``fingerprint``, ``prediction`` and ``record_fields`` of the item).
    ``done``: records already read (else read from ``out_dir``) — all shards must see the same set.
    ``group_key``: one ``predict`` call per group of items with the same key (``batch_size`` is then the
    predictor's business), groups sharded whole over processes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if done is None:
        done = read_predictions(out_dir)
    _check_fresh(items, done, key, fingerprint_fields)
    todo = [it for it in items if str(key(it)) not in done]
    if group_key is None:
        mine = shard(todo, shard_index, num_shards)
        batches = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    else:
        groups: dict[Any, list[dict]] = {}
        for it in todo:
            groups.setdefault(group_key(it), []).append(it)
        batches = shard(list(groups.values()), shard_index, num_shards)
    path = out_dir / f"predictions.shard{shard_index}.jsonl"
    _repair(path)
    new: list[dict] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(b) for b in batches), unit="q",
                   desc=f"predict (shard {shard_index}/{num_shards})")
    with open(path, "a", encoding="utf-8", newline="\n") as f:
        for n_done, batch in enumerate(batches, 1):
            texts = predict(batch)
            if len(texts) != len(batch):
                raise ValueError(f"predict returned {len(texts)} texts for a batch of {len(batch)}")
            for it, text in zip(batch, texts):
                if not isinstance(text, str):
                    raise TypeError(f"predict must return strings, got {type(text).__name__} for {key(it)!r}")
                rec = {"key": str(key(it)), "fingerprint": fingerprint(it, fingerprint_fields)}
                rec.update({k: it.get(k) for k in record_fields})
                rec["prediction"] = text
                new.append(rec)
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            if bar is not None:
                bar.update(len(batch))
                if group_key is not None:
                    bar.set_postfix(videos=f"{n_done}/{len(batches)}")
    if bar is not None:
        bar.close()
    return new


def collect_predictions(
    items: Sequence[dict],
    out_dir: str | os.PathLike,
    *,
    key: Callable[[dict], Any],
    extra: Sequence[dict] = (),
    write: bool = True,
) -> list[dict]:
    """Records for ``items`` in their order, from ``out_dir`` plus ``extra`` (gathered records); raises
    ``KeyError`` naming the missing keys when some item has none. ``write``: also write ``predictions.jsonl``
    (atomically)."""
    found = read_predictions(out_dir)
    found.update({r["key"]: r for r in extra})
    missing = [key(it) for it in items if str(key(it)) not in found]
    if missing:
        raise KeyError(f"{len(missing)} items have no prediction in {out_dir}, e.g. {missing[:5]}")
    recs = [found[str(key(it))] for it in items]
    if write:
        path = Path(out_dir) / MERGED_NAME
        tmp = path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return recs


def default_state():
    """``accelerate.PartialState`` for this process: one process unless started by ``accelerate launch``;
    on a machine without CUDA the processes talk over gloo (``cpu=True`` — accelerate otherwise leaves a
    GPU-less ``--multi_gpu`` launch undistributed and every process believes it is rank 0)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def run_predictions(
    items: Sequence[dict],
    predict: Predictor,
    out_dir: str | os.PathLike,
    *,
    key: Callable[[dict], Any],
    fingerprint_fields: Sequence[str],
    record_fields: Sequence[str] = (),
    batch_size: int = 1,
    state=None,
    progress: bool = False,
) -> list[dict]:
    """Predict every item (data parallel over ``state``'s processes, resuming from ``out_dir``) and return
    all records in item order, on every process.

    ``state``: an ``accelerate.PartialState`` (default: :func:`default_state`). The main process repairs and merges files; the others wait at barriers.
    """
    state = state if state is not None else default_state()
    out_dir = Path(out_dir)
    if state.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        for p in out_dir.glob(_SHARD_GLOB):
            _repair(p)
    state.wait_for_everyone()
    done = read_predictions(out_dir)
    state.wait_for_everyone()  # every process has read `done` before any process appends to a shard file
    new = predict_shard(
        items, predict, out_dir, key=key, fingerprint_fields=fingerprint_fields, shard_index=state.process_index,
        num_shards=state.num_processes, batch_size=batch_size, record_fields=record_fields, done=done,
        progress=progress and state.is_main_process, group_key=getattr(predict, "group_key", None),
    )  # fmt: skip
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        new = gather_object(new)  # every process's new records, on every process
    state.wait_for_everyone()
    recs = collect_predictions(items, out_dir, key=key, extra=new, write=state.is_main_process)
    state.wait_for_everyone()
    return recs


def evaluate_items(
    items: Sequence[dict],
    predict: Predictor,
    out_dir: str | os.PathLike,
    scorer: Callable[[list[dict]], dict],
    *,
    key: Callable[[dict], Any],
    fingerprint_fields: Sequence[str],
    record_fields: Sequence[str] = (),
    batch_size: int = 1,
    params=None,
    seed: int | None = None,
    state=None,
    progress: bool = False,
) -> dict:
    """:func:`run_predictions`, then ``scorer(records)``; the main process writes ``scores.json`` and
    ``run.json`` (params, versions, git sha, status, the scores). Returns the scores on every process."""
    import contextlib

    from spatial_mllm.config import RunRecord

    state = state if state is not None else default_state()
    out_dir = Path(out_dir)
    ctx = RunRecord(out_dir, params=params, seed=seed) if state.is_main_process else contextlib.nullcontext()
    with ctx as rec:
        recs = run_predictions(
            items, predict, out_dir, key=key, fingerprint_fields=fingerprint_fields, record_fields=record_fields,
            batch_size=batch_size, state=state, progress=progress,
        )  # fmt: skip
        result = scorer(recs)
        if rec is not None:
            (out_dir / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
            rec["scores"] = result
            rec["num_processes"] = state.num_processes
    return result
