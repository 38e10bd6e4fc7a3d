"""What the shown frames can tell: a predictor that reads the exact instance masks of the frames a model is shown.

The mini study's blind control asks whether a fine-tuned model scores better with its room's frames than with
another room's. :class:`VisibleReader` says how large that gap *could* be for a reader of 2D content: it sees
exactly what the model is shown — the same frames (uniform, space-aware or another room's), as the renderer's
per-pixel instance ids (``frames.npz`` beside each rendered ``video.mp4``) — and nothing of the 3D scene, and
answers from a few features that a perfect 2D recogniser could extract:

* ``object_counting``: the number of distinct instances of the category seen (>= ``min_pixels`` in one shown
  frame), mapped to the median true count of training questions with that visible count;
* ``obj_appearance_order``: the option whose order agrees best (pairwise) with the first shown frame of each
  category (unseen categories last);
* ``object_rel_distance``: the option seen together with the target in the most shown frames (co-visibility:
  objects in one view tend to be near each other);
* ``room_size_estimation``: a least-squares line (fitted on training rooms) on the number of distinct
  instances seen (more furniture in larger rooms);
* every other type (absolute distance, object size, relative direction, route planning): the frequency
  baseline's answer (:class:`spatial_mllm.eval.baselines.FrequencyBaseline`) — same with any frames.

With no training counting question the count is the visible count itself; with fewer than two distinct
training rooms' instance counts the room size is the training mean.

Ties between options go to the frequency baseline's letter when it is among them, else to the first. It is a
lower bound on what the frames tell (a learner could use more, e.g. where in the frame objects are), fitted
on training rows only, and deterministic. Synthetic rooms only (it needs the instance masks).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from spatial_mllm.data.grounding import frame_categories, load_instance_labels, visible_instances
from spatial_mllm.data.video import uniform_frame_indices
from spatial_mllm.eval.baselines import FrequencyBaseline, _letters, format_number

__all__ = ["READ_TYPES", "VisibleReader", "frame_content"]

#: the question types the reader answers from the frames (the others: the frequency answer)
READ_TYPES = ("object_counting", "obj_appearance_order", "object_rel_distance", "room_size_estimation")


def frame_content(scene_dir: str | Path, frames: Iterable[int] | None, num_frames: int, min_pixels: int) -> dict:
    """What the shown frames of a rendered room show, per category.

    Args:
        scene_dir: folder with ``frames.npz`` (``instance_ids [T, H, W]``) and ``scene.json``.
        frames: shown frame indices into ``T`` in display order (None: ``num_frames`` uniform, as Qwen samples).
        min_pixels: pixels an instance must cover in one shown frame to count as seen.
    Returns:
        ``{"count": {category: instances seen}, "first": {category: first shown position},
        "frames": {category: set of shown positions}, "instances": distinct instances seen}``.
    """
    ids, category = load_instance_labels(scene_dir)  # [T, H, W], {instance id: category}
    shown = uniform_frame_indices(len(ids), num_frames) if frames is None else np.asarray(list(frames))
    if len(shown) and (shown.min() < 0 or shown.max() >= len(ids)):
        raise ValueError(f"{scene_dir}: frame indices {shown.tolist()} outside its {len(ids)} frames")
    count: dict[str, int] = defaultdict(int)
    first: dict[str, int] = {}
    for iid, pos in visible_instances(ids, shown, min_pixels).items():
        if iid in category:
            c = category[iid]
            count[c] += 1
            first[c] = min(first.get(c, pos), pos)
    in_frames: dict[str, set[int]] = defaultdict(set)
    for pos, cats in enumerate(frame_categories(ids, shown, category, min_pixels)):
        for c in cats:
            in_frames[c].add(pos)
    return {"count": dict(count), "first": first, "frames": dict(in_frames), "instances": int(sum(count.values()))}


def _counted(question: str) -> str:
    return question.split("How many ")[1].split("(s)")[0]


def _target(question: str) -> str:
    return question.rsplit("closest to the ", 1)[1].rstrip("?").strip()


def _option(option: str) -> str:
    return str(option).split(".", 1)[1].strip()


class VisibleReader:
    """Answers VSI-Bench-style questions from the instance masks of the shown frames (see the module doc).

    Args:
        train_items: training questions with ``video`` (the rendered room's ``video.mp4``; ``frames.npz`` sits
            beside it), ``frame_indices`` (None: uniform) and ``num_frames`` — :func:`spatial_mllm.eval.
            vsibench.build_items` rows — to fit the count map, the room-size line and the frequency answers.
        min_pixels: pixels an instance must cover in one shown frame to count as seen.
    """

    def __init__(self, train_items: list[dict], min_pixels: int = 30):
        self.min_pixels = min_pixels
        self._cache: dict[tuple, dict] = {}
        self.prior = FrequencyBaseline(train_items)
        by_visible: dict[int, list[float]] = defaultdict(list)
        sizes: dict[str, tuple[int, float]] = {}
        for it in train_items:
            if it["question_type"] == "object_counting":
                seen = self.content(it)["count"].get(_counted(it["question"]), 0)
                by_visible[seen].append(float(it["ground_truth"]))
            elif it["question_type"] == "room_size_estimation":
                sizes[it["video"]] = (self.content(it)["instances"], float(it["ground_truth"]))
        # visible count -> median true count; without training counting questions, the visible count itself
        self.count_map = {v: float(np.median(t)) for v, t in sorted(by_visible.items())}
        # (slope, intercept): m² per instance seen; with fewer than 2 distinct rooms' counts, the mean size
        x, y = np.array(list(sizes.values()) or [(0, 0.0)], dtype=np.float64).T
        self.size_line = tuple(float(c) for c in np.polyfit(x, y, 1)) if len(set(x)) > 1 else (0.0, float(y.mean()))

    def content(self, item: dict) -> dict:
        """:func:`frame_content` of an item's shown frames (cached per video and frames)."""
        frames = item.get("frame_indices")
        key = (item["video"], None if frames is None else tuple(frames), item["num_frames"])
        if key not in self._cache:
            self._cache[key] = frame_content(Path(item["video"]).parent, frames, item["num_frames"],
                                             self.min_pixels)
        return self._cache[key]

    def _pick(self, item: dict, scores: list[float]) -> str:
        letters = _letters(item)
        best = max(scores)
        tied = [letter for letter, s in zip(letters, scores) if s == best]
        prior = self.prior.answer(item)
        return prior if prior in tied else tied[0]

    def answer(self, item: dict) -> str:
        qt, q = item["question_type"], item["question"]
        if qt not in READ_TYPES:
            return self.prior.answer(item)
        seen = self.content(item)
        if qt == "object_counting":
            v = seen["count"].get(_counted(q), 0)
            if not self.count_map:
                return format_number(v)
            near = min(self.count_map, key=lambda k: (abs(k - v), k))
            return format_number(self.count_map[near])
        if qt == "room_size_estimation":
            slope, intercept = self.size_line
            return format_number(round(slope * seen["instances"] + intercept, 1))
        if qt == "obj_appearance_order":
            scores = []
            for opt in item["options"]:
                order = [c.strip() for c in _option(opt).split(",")]
                f = [seen["first"].get(c, len(seen["first"]) + 99) for c in order]
                scores.append(sum(np.sign(f[j] - f[i]) for i in range(len(f)) for j in range(i + 1, len(f))))
            return self._pick(item, scores)
        together = seen["frames"].get(_target(q), set())
        return self._pick(item, [len(together & seen["frames"].get(_option(o), set())) for o in item["options"]])

    def __call__(self, batch: list[dict]) -> list[str]:
        return [self.answer(it) for it in batch]
