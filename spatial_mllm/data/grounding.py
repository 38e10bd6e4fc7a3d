"""Grounding questions: what only the frames answer, from a synthetic room's exact per-pixel labels.

A small LLM trained from scratch on VSI-Bench-style questions learns the answer prior first (the most
frequent count, the mean room size) and can stay there: the mini study's blind control showed models that
score the same with another room's frames. These questions have no prior to fall back on — their answer is
decided by which objects are *visible in the frames the model is shown*, read from the renderer's
per-pixel instance ids (``frames.npz``), so a model only lowers its loss on them by reading its visual tokens.
They are the miniature of what a pretrained Qwen2.5-VL already knows (naming and counting what it sees)
before Spatial-MLLM's spatial SFT; :mod:`spatial_mllm.experiments.mini_study` trains on them first.

Question types (answers as in VSI-Bench: a number, a word, or an option letter):

* ``visible_counting`` — "How many {category}(s) can be seen in this video?": distinct instances of the
  category covering at least ``min_pixels`` pixels in at least one shown frame (1 … the room's count).
* ``visible_presence`` — "Is there a {category} in this video? Answer yes or no.": yes for a visible
  category, no for a catalog category not visible in the shown frames (present in the room but never in
  view counts as no: the frames decide); as many no as yes per video.
* ``first_visible`` — "Which of these objects is seen first in this video?" with 4 visible categories
  whose first shown frame differs; the answer is the option letter.
* ``visible_objects`` — "Which objects can be seen in this video, and how many of each?": every visible
  category with its count, by name ("bed 1, chair 2, lamp 1"); one per video. A dense target: each of its
  tokens is a decision only the frames settle.
* ``frame_objects`` — "Which objects can be seen in each frame of this video?": the categories each shown
  frame shows, frame by frame ("1: bed, chair. 2: chair. 3: nothing. ..."); one per video, not in the default
  set (``types``). Dense *and* temporal: it asks which frame shows what, the reading behind appearance order,
  counts over frames and which objects are seen together.

Answer priors: per video, presence is balanced, but not per category: a door is in nearly every room,
so "is there a door?" is "yes" from the text alone (on the mini study's rooms the category's majority answer
scores 58 % on presence and the category's most frequent count 65 % on visible counting). With
``balance`` (:func:`balance_answers`) a file has, per category, as many yes as no, and no count answer more
frequent than the category's next most frequent one; what the text alone gets right is then at most chance.

Frames: the ``num_frames`` uniformly spaced frames (Qwen's ``linspace(...).round()``,
:func:`spatial_mllm.data.video.uniform_frame_indices`) that SFT and evaluation show with uniform sampling,
and optionally ``random_subsets`` more draws of ``num_frames`` random frames per room (the records then
carry their ``frame_indices``, which :class:`spatial_mllm.data.collate.SFTDataset` honours): the labels are
those of exactly the pixels the model sees (rendered frames = decoded frames up to the H.264 coding), and
the random draws keep a small model from memorising one answer per room instead of reading the frames.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from spatial_mllm.data.formats import SFT_MCA_POST, SFT_NA_POST, write_jsonl
from spatial_mllm.data.synthetic import CATALOG
from spatial_mllm.data.video import uniform_frame_indices

__all__ = ["GROUNDING_TYPES", "DEFAULT_TYPES", "load_instance_labels", "frame_categories", "visible_instances", "grounding_records", "balance_answers", "write_grounding_file"]

GROUNDING_TYPES = ("visible_counting", "visible_presence", "first_visible", "visible_objects", "frame_objects")
DEFAULT_TYPES = GROUNDING_TYPES[:4]
_LETTERS = "ABCD"


def visible_instances(instance_ids: np.ndarray, frames: np.ndarray, min_pixels: int) -> dict[int, int]:
    """``{instance id: position of the first shown frame where it covers >= min_pixels}``.

    Args:
        instance_ids: ``[T, H, W]`` int, the renderer's per-pixel instance id (<= 0: room / nothing).
        frames: indices of the shown frames into ``T``, in display order.
        min_pixels: pixels an instance must cover in one frame to count as seen.
    """
    first: dict[int, int] = {}
    for pos, f in enumerate(frames):
        ids, counts = np.unique(instance_ids[int(f)], return_counts=True)
        for iid in ids[(counts >= min_pixels) & (ids > 0)]:
            first.setdefault(int(iid), pos)
    return first


def load_instance_labels(scene_dir: str | os.PathLike) -> tuple[np.ndarray, dict[int, str]]:
    """A rendered room's per-pixel instance ids ``[T, H, W]`` (``frames.npz``) and ``{instance id: category}``
    (``scene.json``); a clear error names the folder when either cannot be read."""
    scene_dir = Path(scene_dir)
    try:
        with np.load(scene_dir / "frames.npz") as z:
            ids = z["instance_ids"]  # [T, H, W]
        objects = json.loads((scene_dir / "scene.json").read_text())["objects"]
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{scene_dir}: cannot read frames.npz instance_ids / scene.json objects ({e})") from e
    return ids, {int(o["instance_id"]): o["category"] for o in objects}


def frame_categories(instance_ids: np.ndarray, frames: np.ndarray, category: dict[int, str],
                     min_pixels: int) -> list[list[str]]:
    """Per shown frame (display order), the sorted distinct categories whose instances cover >= ``min_pixels``
    pixels in it (each instance on its own, as :func:`visible_instances` counts)."""
    out = []
    for f in frames:
        ids, counts = np.unique(instance_ids[int(f)], return_counts=True)
        out.append(sorted({category[int(i)] for i in ids[(counts >= min_pixels) & (ids > 0)] if int(i) in category}))
    return out


def _record(video: str, frame_indices: list[int] | None, question: str, answer: str, qtype: str,
            options: list[str] | None = None) -> dict:
    post = SFT_MCA_POST if options else SFT_NA_POST
    text = question + ("\nOptions:\n" + "\n".join(options) if options else "")
    rec = {"video": video, "conversations": [{"from": "human", "value": f"<video>\n{text}\n{post}"},
                                             {"from": "gpt", "value": answer}],
           "question_type": qtype, "ground_truth": answer, "options": options}
    return rec if frame_indices is None else {**rec, "frame_indices": frame_indices}


def grounding_records(scene_dir: str | os.PathLike, video: str, num_frames: int, rng: np.random.Generator, *,
                      min_pixels: int = 30, max_per_type: int = 6, random_subsets: int = 0,
                      balance: bool = False, types: tuple[str, ...] = DEFAULT_TYPES,
                      clip_frames: int | None = None) -> list[dict]:
    """The grounding questions of one rendered room (SFT records, ``train_sft.jsonl``'s format).

    Args:
        scene_dir: folder with ``frames.npz`` (``instance_ids [T,H,W]``) and ``scene.json`` (objects with
            ``instance_id`` and ``category``).
        video: the records' ``video`` path (relative to the video root).
        num_frames: frames the model is shown (uniform sampling of the ``T`` rendered frames).
        rng: draws which categories are asked and the option order.
        min_pixels: pixels an instance must cover in one shown frame to count as seen.
        max_per_type: cap per type (presence: this many yes and as many no).
        random_subsets: also this many draws of ``num_frames`` random frames (sorted), each with its own
            questions; their records carry ``frame_indices``.
        balance: presence asks every catalog category (yes: seen; no: not one pixel in the shown frames),
            for :func:`balance_answers` to balance per category over many rooms.
        types: the question types to write (of ``GROUNDING_TYPES``); the draws of the others do not depend
            on it, so adding ``frame_objects`` leaves the other records as they were.
        clip_frames: instead of the whole uniform video, ask about each run of ``clip_frames`` consecutive
            uniform frames as a video of its own (``num_frames / clip_frames`` clips, records with
            ``frame_indices``): with ``clip_frames=2`` each clip is exactly one temporal group (one block of
            visual tokens) of the ``num_frames``-frame video — short contexts for a curriculum. ``first_visible``
            needs 4 distinct first frames, so clips of fewer than 4 frames have none.
    """
    unknown = sorted(set(types) - set(GROUNDING_TYPES))
    if unknown or not types:
        raise ValueError(f"grounding types {unknown or list(types)}: expected a non-empty subset of {GROUNDING_TYPES}")
    ids, category = load_instance_labels(scene_dir)
    uniform = uniform_frame_indices(len(ids), num_frames)
    if clip_frames is not None:
        if clip_frames < 1 or num_frames % clip_frames or random_subsets:
            raise ValueError(f"clip_frames={clip_frames} must be >= 1 and divide num_frames={num_frames}, and "
                             f"comes without random_subsets (got {random_subsets})")
        out = []
        for k in range(0, num_frames, clip_frames):
            clip = np.asarray(uniform[k:k + clip_frames])
            out += _questions(ids, category, clip, [int(f) for f in clip], video, rng, min_pixels, max_per_type,
                              balance, types)
        return out
    out = _questions(ids, category, uniform, None, video, rng, min_pixels,
                     max_per_type, balance, types)
    for _ in range(random_subsets):
        frames = np.sort(rng.choice(len(ids), size=min(num_frames, len(ids)), replace=False))
        out += _questions(ids, category, frames, [int(f) for f in frames], video, rng, min_pixels, max_per_type,
                          balance, types)
    return out


def _questions(ids, category, frames, frame_indices, video, rng, min_pixels, max_per_type, balance,
               types) -> list[dict]:
    seen = {i: pos for i, pos in visible_instances(ids, frames, min_pixels).items() if i in category}
    per_cat: dict[str, list[int]] = {}
    for iid, pos in seen.items():
        per_cat.setdefault(category[iid], []).append(pos)
    cats = sorted(per_cat)
    out = []
    # counting what is seen
    for c in rng.permutation(cats)[:max_per_type]:
        out.append(_record(video, frame_indices, f"How many {c}(s) can be seen in this video?", str(len(per_cat[c])),
                           "visible_counting"))
    # everything seen, with counts
    if cats:
        out.append(_record(video, frame_indices, "Which objects can be seen in this video, and how many of each?",
                           ", ".join(f"{c} {len(per_cat[c])}" for c in cats), "visible_objects"))
    # presence: balanced per video, or every category (balanced per category over the file)
    if balance:
        glimpsed = {category[i] for i in visible_instances(ids, frames, 1) if i in category}
        asked = [(c, "yes" if c in per_cat else "no") for c in CATALOG if c in per_cat or c not in glimpsed]
    else:
        absent = sorted(set(CATALOG) - set(cats))
        k = min(max_per_type, len(cats), len(absent))
        asked = [pair for c, a in zip(rng.permutation(cats)[:k], rng.permutation(absent)[:k])
                 for pair in ((str(c), "yes"), (str(a), "no"))]
    for name, ans in asked:
        out.append(_record(video, frame_indices, f"Is there a {name} in this video? Answer yes or no.", ans,
                           "visible_presence"))
    # which is seen first (4 categories with distinct first frames)
    first = {c: min(p) for c, p in per_cat.items()}
    asked: set[frozenset] = set()
    for _ in range(3 * max_per_type):  # distinct sets of 4 categories, up to max_per_type of them
        if len(asked) == max_per_type:
            break
        pick, used = [], set()
        for c in rng.permutation(cats):
            if first[c] not in used:
                pick.append(str(c))
                used.add(first[c])
            if len(pick) == 4:
                break
        if len(pick) < 4:
            break
        if frozenset(pick) in asked:
            continue
        asked.add(frozenset(pick))
        answer = min(pick, key=lambda c: first[c])
        options = [f"{_LETTERS[j]}. {c}" for j, c in enumerate(pick)]
        out.append(_record(video, frame_indices, "Which of these objects is seen first in this video?",
                           _LETTERS[pick.index(answer)], "first_visible", options))
    # what each frame shows, frame by frame
    per_frame = frame_categories(ids, frames, category, min_pixels)
    out.append(_record(video, frame_indices, "Which objects can be seen in each frame of this video?",
                       " ".join(f"{k + 1}: {', '.join(c) if c else 'nothing'}." for k, c in enumerate(per_frame)),
                       "frame_objects"))
    return [r for r in out if r["question_type"] in types]


def _asked_category(record: dict) -> str:
    q = record["conversations"][0]["value"]
    return q.split("Is there a ")[1].split(" in this video")[0] if record["question_type"] == "visible_presence" \
        else q.split("How many ")[1].split("(s) can be seen")[0]


def balance_answers(records: list[dict], rng: np.random.Generator) -> list[dict]:
    """Drop questions so that the category asked does not tell the answer: per category, presence keeps as
    many yes as no (a random subset of the larger side) and visible counting keeps of each answer at most as
    many as of the category's second most frequent answer (a category always seen once loses its counting
    questions). Other types and the records' order are kept."""
    groups: dict[tuple[str, str], dict[str, list[int]]] = {}
    for i, r in enumerate(records):
        if r["question_type"] in ("visible_presence", "visible_counting"):
            key = (r["question_type"], _asked_category(r))
            groups.setdefault(key, {}).setdefault(r["ground_truth"], []).append(i)
    drop: set[int] = set()
    for (qtype, _), by_answer in sorted(groups.items()):
        sizes = sorted((len(v) for v in by_answer.values()), reverse=True)
        if qtype == "visible_presence":
            keep = sizes[-1] if len(sizes) == 2 else 0
        else:
            keep = sizes[1] if len(sizes) > 1 else 0
        for answer in sorted(by_answer):
            idx = by_answer[answer]
            if len(idx) > keep:
                drop.update(int(j) for j in rng.permutation(idx)[keep:])
    return [r for i, r in enumerate(records) if i not in drop]


def write_grounding_file(data_dir: str | os.PathLike, scene_names: list[str], path: str | os.PathLike,
                         num_frames: int, seed: int, *, min_pixels: int = 30, max_per_type: int = 6,
                         random_subsets: int = 0, balance: bool = False,
                         types: tuple[str, ...] = DEFAULT_TYPES, clip_frames: int | None = None) -> Path:
    """Grounding records of ``scene_names`` (``<data_dir>/synthetic/<scene>``) to ``path`` (JSONL), in
    scene order; deterministic in ``seed`` (each room draws from ``(seed, its position)``); with ``balance``
    balanced per category over all the rooms (:func:`balance_answers`, drawn from ``(seed, 2**31)``);
    ``clip_frames``: questions about short clips of the uniform frames (:func:`grounding_records`)."""
    data_dir = Path(data_dir)
    records = []
    for i, name in enumerate(sorted(scene_names)):
        rng = np.random.default_rng([seed, i])
        records += grounding_records(data_dir / "synthetic" / name, f"synthetic/{name}/video.mp4", num_frames,
                                     rng, min_pixels=min_pixels, max_per_type=max_per_type,
                                     random_subsets=random_subsets, balance=balance, types=tuple(types),
                                     clip_frames=clip_frames)
    if balance:
        records = balance_answers(records, np.random.default_rng([seed, 2**31]))
    if not records:
        raise ValueError(f"no grounding questions from {len(scene_names)} rooms under {data_dir}")
    return write_jsonl(records, path)
