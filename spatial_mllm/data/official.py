"""The official Spatial-MLLM v1.1 SFT data: registry, row schema, lossless conversion to our rows and back.

Where the facts come from (``diankun-wu/Spatial-MLLM``, branch ``master`` = v1.1; the ``v1.0`` branch has no
training code): ``TRAINING.md``, ``src/qwenvl/data/__init__.py`` (the dataset registry), ``src/qwenvl/data/
data_qwen.py`` (how rows are read), ``scripts/preprocess/preprocess_vsi_590k.py`` and
``scripts/training/spatial_mllm_train_demo.sh`` (the recipe; see :data:`RECIPES`).

Registry (``data_dict`` in ``src/qwenvl/data/__init__.py``)
---------------------------------------------------------
Every dataset is an annotation file under ``datasets/annotations/`` whose media paths are relative to
``datasets/visuals`` (the registry's ``data_path``, the same folder for all six):

======================== ================================== ===============================================
name                     annotation file                    content (``TRAINING.md``)
======================== ================================== ===============================================
``spatial_mllm_mix_133k`` ``spatial-mllm-mix-133k.jsonl``     the authors' spatial QA + ScanQA/SQA3D (hub
                                                             ``Diankun/Spatial-MLLM-Data``, ``annotation/``)
``spatial_mllm_mix_203k`` ``spatial-mllm-mix-203k.jsonl``     the larger mixture (same hub folder)
``route_plan_scannet_2k`` ``routeplan-2k.jsonl``              VLM-3R route plans, ~2k ScanNet rows
``route_plan_4k``         ``routeplan-4k.jsonl``              VLM-3R route plans
``vsi_590k``              ``vsi-590k-processed.jsonl``        Cambrian-S VSI-590K after
                                                             ``preprocess_vsi_590k.py`` (:func:`preprocess_vsi_590k`)
``mindcube_21k``          ``mindcube-processed.jsonl``        MindCube 21k, converted by the user (no
                                                             official script)
======================== ================================== ===============================================

A name in ``--dataset_use`` (comma-separated; our ``SFTConfig.train_mix`` list) may end in ``%N``: keep
``int(len(rows) · N / 100)`` rows, drawn with ``random.sample`` from Python's global generator, seeded once with
``random.seed(42)`` before the first dataset and consumed dataset by dataset in the listed order; ``%N`` with
N ≥ 100 (or no suffix) keeps every row. The loader then shuffles the concatenation (``random.shuffle``).

Row schema (what ``LazySupervisedDataset`` / ``preprocess_qwen_2_visual`` read)
-----------------------------------------------------------------------------
One JSON object per line (``.jsonl``) or a JSON list (any other suffix). Fields, all others ignored by the loader:

* ``conversations`` (required): a list of turns, each ``{"from": "human" | "gpt", "value": str}`` (the loader
  also accepts ``{"role", "content"}`` turns); a conversation whose first turn is not ``human`` loses that turn.
  Each ``<video>`` (``<image>``) in a human turn is replaced, in order, by ``<|vision_start|>``, one
  ``<|video_pad|>`` (``<|image_pad|>``) per merged patch and ``<|vision_end|>``. Turns are templated as
  ``<|im_start|>{role}\\n{value}<|im_end|>\\n`` after the system turn ``"You are a helpful assistant."``;
  assistant turns are labelled except their first 3 tokens (``<|im_start|>assistant\\n``), user/system turns
  are not. Several human/gpt pairs are allowed (multi-turn).
* ``video``: a path (str) or a list of paths relative to ``data_path`` — a list of one is one video; or
* ``image``: a path or a list of paths (MindCube's multi-view rows, VSI-590K's image rows). A row with
  neither is text-only.
* ``num_tokens`` (optional): a pre-computed length (``pre_calculated_length``).
* ``data_path``: set by the loader from the registry; never in the files.

Dataset-specific facts:

* **VSI-590K** (``preprocess_vsi_590k.py``): the Cambrian-S file ``vsi_590k.jsonl`` holds ``conversations``
  (read also as ``conversation``), ``video`` or ``image`` (str) and further fields kept as they are (a
  third-party loader documents ``question_type``; not checked here). The script replaces ``<image>`` by
  ``<video>`` in the *human* turns of rows whose ``video`` is a string, prefixes ``video`` and ``image``
  paths with ``vsi-590k/`` (after stripping leading ``/``; paths already starting with ``vsi-590k/`` stay),
  and writes ``json.dumps(row)`` lines (ASCII escapes) in the input order.
* **Spatial-MLLM mixes, route plans, MindCube**: the code fixes only the fields above; the exact extra
  fields of the released annotation files could not be read from here (the hub is unreachable). The
  fixtures in ``tests/fixtures/official_data`` use plausible extras (``id``, ``question_type``,
  ``data_source``) to exercise the conversion; they are not copies of the released files.

Frames (not a row field; for the record): ``video_min_frames = video_max_frames = 16`` in the demo script, so
every video gives ``np.linspace(0, total - 1, 16, dtype=int)`` (floor, then ``np.unique``), with
``second_per_grid_ts = 2 / video_frame_fps = 2 / 4 = 0.5`` for every video whatever its real frame rate.

Our rows (lossless)
-------------------
:func:`from_official` turns an official row into our training row — the layout of
:func:`spatial_mllm.data.formats.to_training_record` that :class:`spatial_mllm.data.collate.SFTDataset`
reads — and :func:`to_official` gives the official row back, equal as JSON *and* in key order (so
``json.dumps`` writes the same line)::

    {"video": "scannet/scene0011_00.mp4",          # as in the row (str or list); "image" likewise
     "conversations": [{"from": "human", "value": "<video>\\n..."}, {"from": "gpt", "value": "4"}],
     "question_type": "object_counting",           # only when the row has it
     "official": {"dataset": "spatial_mllm_mix_133k", "line": 12,
                  "keys": ["id", "video", "conversations", "question_type", "data_source"],
                  "extra": {"id": "...", "data_source": "scannet"}}}

``video``/``image``/``conversations``/``question_type`` keep their values unchanged (the human turn's
``<video>\\n<prompt>`` is already our convention); ``official.keys`` is the original key order (a raw
``conversation`` key is remembered there); ``official.extra`` holds every other field verbatim. Nothing is
derived or dropped. :func:`sft_rows` picks the rows our SFT collator can read — one video, one human turn with
one ``<video>``, one gpt turn — and says why each other row cannot be read.

Departures from the official loader (also listed in ``spatial_mllm/train/sft.py``):

1. Our SFT collator reads single-video, single-turn rows only: image rows (VSI-590K's image rows, all of
   MindCube), text-only rows, multi-video and multi-turn rows are an error naming the dataset and line, or
   with ``on_bad_video: skip`` dropped and counted (``skipped_unsupported_<reason>``). The v1.1-135K mix is
   (as far as the code shows) video QA; the v1.1-820K mix is therefore NOT reproduced in full.
2. ``%N`` must satisfy 0 < N ≤ 100 (officially N > 100 silently means 100). The selection of rows is the
   official one (same generator, seed 42, same order of calls); the final shuffle is not reproduced — the
   trainer shuffles with its own seed.
3. Frames are chosen by our collator (Qwen's rounded ``linspace`` or the space-aware cache) with the video's
   real sampled frame rate, not the official floor ``linspace`` with a fixed ``second_per_grid_ts`` of 0.5.
4. ``{"role", "content"}`` turns and a leading non-human turn are kept in our row (lossless) but count as
   unsupported for SFT instead of being reinterpreted/dropped.
5. No hub download: the annotation files must be placed by hand (``TRAINING.md``'s layout), the hub is not
   reachable from where this was written.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spatial_mllm.data.formats import read_jsonl

__all__ = [
    "OfficialDataset",
    "REGISTRY",
    "RECIPES",
    "HUB_DATASET",
    "ANNOTATIONS_SUBDIR",
    "VISUALS_SUBDIR",
    "SAMPLING_SEED",
    "parse_mix_entry",
    "annotation_path",
    "read_official_annotations",
    "from_official",
    "to_official",
    "write_official_jsonl",
    "load_official_mix",
    "unsupported_reason",
    "sft_rows",
    "vsibench_typed_rows",
    "preprocess_vsi_590k",
]

HUB_DATASET = "Diankun/Spatial-MLLM-Data"  # annotation/ holds the two Spatial-MLLM mixes (TRAINING.md)
ANNOTATIONS_SUBDIR = "annotations"  # official: datasets/annotations/<file>
VISUALS_SUBDIR = "visuals"  # official data_path: datasets/visuals
SAMPLING_SEED = 42  # random.seed(42) in LazySupervisedDataset.__init__
MAPPED_KEYS = ("video", "image", "conversations", "question_type")  # top-level in our rows, values unchanged
_MIX_RE = re.compile(r"^(?P<name>[A-Za-z0-9_]+)(?:%(?P<pct>\d+))?$")


@dataclass(frozen=True)
class OfficialDataset:
    """One entry of the official registry (``data_dict``)."""

    name: str
    annotation: str  # file name under <root>/annotations
    source: str  # where the rows come from (TRAINING.md)
    media: str  # what the rows point at


REGISTRY: dict[str, OfficialDataset] = {d.name: d for d in (
    OfficialDataset("spatial_mllm_mix_133k", "spatial-mllm-mix-133k.jsonl",
                    "Spatial-MLLM's own QA + ScanQA/SQA3D (hub Diankun/Spatial-MLLM-Data, annotation/)",
                    "videos of ScanNet, ScanNet++ and ARKitScenes under visuals/"),
    OfficialDataset("spatial_mllm_mix_203k", "spatial-mllm-mix-203k.jsonl",
                    "Spatial-MLLM's own QA + ScanQA/SQA3D, larger mix (hub Diankun/Spatial-MLLM-Data, annotation/)",
                    "videos of ScanNet, ScanNet++ and ARKitScenes under visuals/"),
    OfficialDataset("route_plan_scannet_2k", "routeplan-2k.jsonl",
                    "VLM-3R route planning, ScanNet subset (converted to this schema by the user)", "ScanNet videos"),
    OfficialDataset("route_plan_4k", "routeplan-4k.jsonl",
                    "VLM-3R route planning (converted to this schema by the user)", "ScanNet/ScanNet++/ARKitScenes videos"),
    OfficialDataset("vsi_590k", "vsi-590k-processed.jsonl",
                    "Cambrian-S VSI-590K (nyu-visionx/VSI-590K) through preprocess_vsi_590k.py",
                    "vsi-590k/ videos and images"),
    OfficialDataset("mindcube_21k", "mindcube-processed.jsonl",
                    "MindCube 21k (converted to this schema by the user; no official script)", "multi-view images"),
)}

#: the two released v1.1 recipes: dataset mixes of TRAINING.md (135K: also the demo script's
#: ``datasets="spatial_mllm_mix_133k,route_plan_scannet_2k"``)
RECIPES: dict[str, tuple[str, ...]] = {
    "v1.1-135k": ("spatial_mllm_mix_133k", "route_plan_scannet_2k"),
    "v1.1-820k": ("spatial_mllm_mix_203k", "route_plan_4k", "vsi_590k", "mindcube_21k"),
}


# ---- the mix ------------------------------------------------------------------------------------------
def parse_mix_entry(entry: str) -> tuple[str, float]:
    """``"name"`` → ``(name, 1.0)``; ``"name%25"`` → ``(name, 0.25)``. Unknown names and N outside
    (0, 100] are errors naming the registry."""
    m = _MIX_RE.match(str(entry).strip())
    if m is None:
        raise ValueError(f"train_mix entry {entry!r} is not '<name>' or '<name>%<N>'")
    name, pct = m.group("name"), m.group("pct")
    if name not in REGISTRY:
        raise ValueError(f"train_mix: unknown official dataset {name!r}; registered: {sorted(REGISTRY)}")
    if pct is None:
        return name, 1.0
    n = int(pct)
    if not 0 < n <= 100:
        raise ValueError(f"train_mix entry {entry!r}: N in '%N' must lie in 1..100")
    return name, n / 100.0


def annotation_path(root: str | os.PathLike, name: str) -> Path:
    """``<root>/annotations/<file>`` of a registered dataset (``root`` = the official ``datasets/``)."""
    return Path(root) / ANNOTATIONS_SUBDIR / REGISTRY[name].annotation


def read_official_annotations(path: str | os.PathLike) -> list[dict]:
    """Rows of an official annotation file: ``.jsonl`` (blank lines ignored) or a JSON list (other suffixes),
    as the official loader; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official annotation file not found: {path}")
    if path.suffix != ".jsonl":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: a .json annotation file holds a list of rows")
        return rows
    return read_jsonl(path)


# ---- conversion ---------------------------------------------------------------------------------------
def from_official(row: dict, dataset: str | None = None, line: int | None = None) -> dict:
    """An official row → our training row (see the module docstring); lossless: :func:`to_official` gives
    the row back, key order included. ``dataset``/``line`` say where it came from (kept in ``official``)."""
    if not isinstance(row, dict):
        raise TypeError(f"an official row is a JSON object, got {type(row).__name__}")
    if "conversation" in row and "conversations" in row:
        raise ValueError(f"{dataset}:{line}: row has both 'conversation' and 'conversations'")
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in row.items():
        if k in MAPPED_KEYS:
            out[k] = copy.deepcopy(v)
        elif k == "conversation":  # VSI-590K's raw key, read by its preprocessing script
            out["conversations"] = copy.deepcopy(v)
        else:
            extra[k] = copy.deepcopy(v)
    out["official"] = {"dataset": dataset, "line": line, "keys": list(row), "extra": extra}
    return out


def to_official(row: dict) -> dict:
    """Our row made by :func:`from_official` → the official row, in its original key order."""
    meta = row.get("official")
    if not isinstance(meta, dict) or "keys" not in meta:
        raise ValueError("not a row converted from the official data (no 'official' block with the key order)")
    extra = meta.get("extra", {})
    out: dict[str, Any] = {}
    for k in meta["keys"]:
        if k == "conversation":
            out[k] = copy.deepcopy(row["conversations"])
        elif k in MAPPED_KEYS:
            out[k] = copy.deepcopy(row[k])
        else:
            out[k] = copy.deepcopy(extra[k])
    return out


def write_official_jsonl(rows: Iterable[dict], path: str | os.PathLike, ensure_ascii: bool = True) -> Path:
    """Official rows (or our converted rows, turned back with :func:`to_official`) as ``json.dumps`` lines —
    the official preprocessing script's writer (ASCII escapes by default)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(to_official(r) if "official" in r and "keys" in r["official"] else r,
                               ensure_ascii=ensure_ascii) + "\n")
    return path


def load_official_mix(entries: Sequence[str], root: str | os.PathLike) -> list[dict]:
    """Our rows of a dataset mix (``["spatial_mllm_mix_133k", "route_plan_scannet_2k%50", ...]``) read from
    ``<root>/annotations``, datasets in the given order; ``%N`` draws the official subset (one
    ``random.Random(42)`` consumed dataset by dataset, as the official global ``random.seed(42)``)."""
    parsed = [parse_mix_entry(e) for e in entries]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"train_mix names a dataset twice: {list(entries)}")
    missing = [str(annotation_path(root, n)) for n in names if not annotation_path(root, n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"official annotation file(s) not found: {missing}. Place them as in the official TRAINING.md: the "
            f"Spatial-MLLM mixes from the hub dataset {HUB_DATASET} (annotation/), the route plans from VLM-3R, "
            f"vsi-590k-processed.jsonl from nyu-visionx/VSI-590K's vsi_590k.jsonl through "
            f"spatial_mllm.data.official.preprocess_vsi_590k, MindCube converted to the same schema")
    rng = random.Random(SAMPLING_SEED)
    out: list[dict] = []
    for name, rate in parsed:
        path = annotation_path(root, name)
        rows = read_official_annotations(path)
        numbered = list(enumerate(rows, 1))
        if rate < 1.0:
            numbered = rng.sample(numbered, int(len(numbered) * rate))  # the official random.sample call
        out += [from_official(r, name, i) for i, r in numbered]
    return out


# ---- what our SFT collator can read ---------------------------------------------------------------------
def unsupported_reason(row: dict) -> str | None:
    """None when :class:`~spatial_mllm.data.collate.SFTDataset` can read the row (one video, one human turn
    with one ``<video>``, one gpt turn, ``from``/``value`` turns); else a short reason (a counter key)."""
    if "image" in row:  # the official loader tests "image" first
        return "image"
    video = row.get("video")
    if video is None:
        return "text_only"
    if isinstance(video, list):
        if len(video) != 1:
            return "multi_video" if video else "text_only"
        video = video[0]
    if not isinstance(video, str):
        return "bad_video_field"
    conv = row.get("conversations")
    if not isinstance(conv, list) or not all(isinstance(t, dict) for t in conv):
        return "bad_conversations"
    if any("from" not in t or "value" not in t for t in conv):
        return "role_content_turns"
    if len(conv) != 2 or conv[0]["from"] != "human" or conv[1]["from"] != "gpt":
        return "multi_turn"
    if str(conv[0]["value"]).count("<video>") != 1:
        return "video_placeholders"
    return None


def sft_rows(rows: Iterable[dict]) -> tuple[list[dict], Counter, list[str]]:
    """``(usable, skipped, where)``: the rows our SFT collator reads (a one-element ``video`` list becomes its
    path; the ``official`` block stays), a counter of the others by reason, and ``"<dataset>:<line>
    (<reason>)"`` for each of them."""
    usable, skipped, where = [], Counter(), []
    for r in rows:
        reason = unsupported_reason(r)
        if reason is None:
            if isinstance(r.get("video"), list):
                r = {**r, "video": r["video"][0]}
            usable.append(r)
        else:
            skipped[reason] += 1
            meta = r.get("official", {})
            where.append(f"{meta.get('dataset')}:{meta.get('line')} ({reason})")
    return usable, skipped, where


def vsibench_typed_rows(rows: Iterable[dict]) -> list[dict]:
    """Rows with a VSI-Bench ``question_type`` and a ground truth usable by
    :class:`spatial_mllm.eval.baselines.FrequencyBaseline`: our rows as they are; converted official rows
    get ``ground_truth`` = their single gpt answer (letter for choices, a number otherwise; others left out)."""
    from spatial_mllm.data.formats import MCA_TYPES, NA_TYPES

    out = []
    for r in rows:
        qt = r.get("question_type")
        if qt not in MCA_TYPES and qt not in NA_TYPES:
            continue
        gt = r.get("ground_truth")
        if gt is None:
            conv = r.get("conversations") or []
            if len(conv) != 2 or not isinstance(conv[-1], dict):
                continue
            gt = str(conv[-1].get("value", "")).strip()
        gt = str(gt)
        if qt in MCA_TYPES:
            if not (len(gt) == 1 and gt.isalpha()):
                continue
        else:
            try:
                float(gt)
            except ValueError:
                continue
        out.append({**r, "ground_truth": gt})
    return out


# ---- the official preprocessing of VSI-590K -------------------------------------------------------------
def preprocess_vsi_590k(rows: Iterable[dict]) -> tuple[list[dict], dict[str, int]]:
    """Cambrian-S ``vsi_590k.jsonl`` rows → ``vsi-590k-processed.jsonl`` rows, the transformation of the
    official ``scripts/preprocess/preprocess_vsi_590k.py`` (rows are copied, not changed in place): in rows
    whose ``video`` is a string, ``<image>`` → ``<video>`` in every human turn of ``conversations`` (or
    ``conversation``); ``video``/``image`` strings get the ``vsi-590k/`` prefix (leading ``/`` stripped)
    unless they have it. Returns the rows and the script's counters (``replacements``, ``video_updates``,
    ``image_updates``)."""
    out, counts = [], {"replacements": 0, "video_updates": 0, "image_updates": 0}
    for row in rows:
        rec = copy.deepcopy(row)
        conv = rec.get("conversations") or rec.get("conversation")
        video, image = rec.get("video"), rec.get("image")
        if isinstance(conv, list):
            for msg in conv:
                if not isinstance(msg, dict) or msg.get("from") != "human":
                    continue
                value = msg.get("value")
                if isinstance(value, str) and "<image>" in value and isinstance(video, str):
                    msg["value"] = value.replace("<image>", "<video>")
                    counts["replacements"] += 1
        for key, val in (("video", video), ("image", image)):
            if isinstance(val, str) and not val.startswith("vsi-590k/"):
                rec[key] = "vsi-590k/" + val.lstrip("/")
                counts[f"{key}_updates"] += 1
        out.append(rec)
    return out, counts
