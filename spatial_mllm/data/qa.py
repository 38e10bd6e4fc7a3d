"""Spatial QA in VSI-Bench's eight task types (+ route planning): ground truth and generators.

VSI-Bench (Yang et al., 2024, "Thinking in Space") released questions but not its generators; Spatial-MLLM
trains on ~120k pairs built "following VSI-Bench". This module rebuilds them from a
:class:`~spatial_mllm.data.scene.SceneMeta` (world frame, metres, z-up).

* :func:`answer` ``(scene, question_type, **slots)`` — the ground truth of one question, exactly as
  VSI-Bench's ``ground_truth`` would hold the answer *text* (a number, or option text such as ``"left"``,
  ``"front-right"``, ``"chair"``, ``"door, table, basket, blanket"``, ``"Turn Left, Turn Right"``).
* :func:`generate_scene_qa` / :func:`generate_for_scenes` choose questions, build options (letters A-D,
  answer positions balanced per task type) and return rows ``(rows, skipped)``; ``skipped`` is a
  :class:`collections.Counter` keyed ``"<question_type>/<reason>"``. Same seed → identical rows (each
  scene/type draws from its own generator seeded by ``crc32(seed, scene_id, type)``, so results do not
  depend on scene order either).

Rows are VSI-Bench rows (``id, dataset, scene_name, question_type, question, ground_truth, options``; MC
``ground_truth`` is the option letter, numeric ``ground_truth`` a number string, ``options`` ``None`` for
numeric types) plus ``answer`` (the answer text, as :func:`answer` returns it) and ``slots`` (the objects
asked about). :mod:`spatial_mllm.data.formats` writes them to files.

Question wording is VSI-Bench's (checked against benchmark items and the official thinking-in-space
repository's templates). Rules (slots in brackets):

=============================  ===========================================================================
room_size_estimation           floor area, m², rounded to 0.1 (meta-info: its ``room_size``)
object_size_estimation         longest box side of a single-instance [category], cm, rounded to an integer
object_counting                instances of [category]; asked only for categories with >= 2 instances
object_abs_distance            closest-point distance of two single-instance objects [object_a, object_b],
                               metres, 0.1 (exact oriented-box distance, :mod:`spatial_mllm.geometry.boxes`)
object_rel_distance            which of 4 [choices] is closest to the single-instance [target]; min over a
                               choice's instances of the closest-point distance
object_rel_direction_easy/     floor-plane CCW angle θ from (standing→facing) to (standing→query), box
  medium/hard                  centres [positioning, orienting, querying]; hard: [0,90) front-left,
                               [90,180) back-left, [180,270) back-right, [270,360) front-right; medium:
                               θ<135 left, θ<225 back, else right; easy: θ<180 left else right
obj_appearance_order           order of first visibility (seconds) of 4 [choices] in a video
route_planning                 turns of a walk [start] facing [facing] → [route...] (synthetic scenes)
=============================  ===========================================================================

Deviations and choices not fixed by VSI-Bench's paper (documented here, on purpose):

1. Single instance means one box *and*, where the scene carries VSI-Bench's ``object_counts``, a count of
   1 (the two disagree for 11 ScanNet scenes); counting uses ``object_counts`` as VSI-Bench's answers do.
2. Relative distance: the target must be single-instance; a question is skipped when the nearest choice
   is < 0.15 m from the target or the two nearest choices are within 0.15 m of each other. Choices are 4
   distinct categories other than the target.
3. Relative direction: pairwise floor-plane *centre* distances of the three objects must lie in
   [0.3, 5] m and θ must be >= 10° from every class boundary (hard: 0/90/180/270; medium: 0/135/225;
   easy: 0/180, and easy also skips the back sector 135 < θ < 225 where "left/right of the orienting
   object" is unclear). VSI-Bench's thresholds are not published; these are ours.
4. Absolute distance: a pair whose rounded distance is 0.0 m is skipped (MRA divides by the ground
   truth).
5. Appearance order: a category is visible in a frame when one of its instances covers >= ``min_pixels``
   pixels of the instance mask; times are ``frame / fps`` seconds; the 4 first-appearance times must
   differ pairwise by > 1 s. Distractors are 3 other random permutations.
6. Route planning (not in VSI-Bench's public generator; its format is copied): straight legs between
   object centres, ignoring obstacles. A leg's turn is left for a CCW turn of 45-135°, right for
   -135..-45°, back beyond ±135°; routes with a turn within 10° of ±45°/±135° or a later leg needing no
   turn are skipped. The first leg needs no blank when it goes to the facing object. 1-3 blanks; options
   are the answer plus 3 (2 for a single blank) other turn sequences.
7. Numeric ground truths are written as VSI-Bench does: integers for counts and sizes (``"94"``), one
   decimal for metres and m² (``"2.9"``).
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from spatial_mllm.data.scene import ObjectBox, SceneMeta
from spatial_mllm.geometry.boxes import box_distance

__all__ = [
    "QUESTION_TYPES",
    "NUMERIC_TYPES",
    "CHOICE_TYPES",
    "TEMPLATES",
    "QAConfig",
    "UnknownCategoryError",
    "AmbiguousObjectError",
    "answer",
    "relative_direction_angle",
    "first_appearance_times",
    "generate_scene_qa",
    "generate_for_scenes",
    "format_number",
]

QUESTION_TYPES = (
    "object_counting",
    "object_size_estimation",
    "room_size_estimation",
    "object_abs_distance",
    "object_rel_distance",
    "object_rel_direction_easy",
    "object_rel_direction_medium",
    "object_rel_direction_hard",
    "obj_appearance_order",
    "route_planning",
)
NUMERIC_TYPES = ("object_counting", "object_size_estimation", "room_size_estimation", "object_abs_distance")
CHOICE_TYPES = tuple(t for t in QUESTION_TYPES if t not in NUMERIC_TYPES)
META_INFO_TYPES = tuple(t for t in QUESTION_TYPES if t not in ("obj_appearance_order", "route_planning"))

TEMPLATES = {
    "object_counting": "How many {category}(s) are in this room?",
    "object_size_estimation": (
        "What is the length of the longest dimension (length, width, or height) of the {category}, "
        "measured in centimeters?"
    ),
    "room_size_estimation": (
        "What is the size of this room (in square meters)? "
        "If multiple rooms are shown, estimate the size of the combined space."
    ),
    "object_abs_distance": (
        "Measuring from the closest point of each object, what is the distance between the {object_a} and "
        "the {object_b} (in meters)?"
    ),
    "object_rel_distance": (
        "Measuring from the closest point of each object, which of these objects ({choice_a}, {choice_b}, "
        "{choice_c}, {choice_d}) is the closest to the {target}?"
    ),
    "object_rel_direction_hard": (
        "If I am standing by the {positioning} and facing the {orienting}, is the {querying} to my "
        "front-left, front-right, back-left, or back-right?\n"
        "The directions refer to the quadrants of a Cartesian plane (if I am standing at the origin and "
        "facing along the positive y-axis)."
    ),
    "object_rel_direction_medium": (
        "If I am standing by the {positioning} and facing the {orienting}, is the {querying} to my left, "
        "right, or back?\n"
        "An object is to my back if I would have to turn at least 135 degrees in order to face it."
    ),
    "object_rel_direction_easy": (
        "If I am standing by the {positioning} and facing the {orienting}, is the {querying} to the left or "
        "the right of the {orienting}?"
    ),
    "obj_appearance_order": (
        "What will be the first-time appearance order of the following categories in the video: "
        "{choice_a}, {choice_b}, {choice_c}, {choice_d}?"
    ),
    "route_planning": (
        "You are a robot beginning at the {start} facing the {facing}. You want to navigate to the "
        "{destination}. You will perform the following actions (Note: for each [please fill in], choose "
        "either 'turn back,' 'turn left,' or 'turn right.'): {actions} "
        "You have reached the final destination."
    ),
}

DIRECTION_OPTIONS = {
    "object_rel_direction_hard": ("front-left", "front-right", "back-left", "back-right"),
    "object_rel_direction_medium": ("left", "right", "back"),
    "object_rel_direction_easy": ("left", "right"),
}
TURNS = ("Turn Left", "Turn Right", "Turn Back")
LETTERS = "ABCD"


class UnknownCategoryError(ValueError):
    """A slot names a category the scene does not contain."""


class AmbiguousObjectError(ValueError):
    """A slot that needs a single instance names a category with several (or a count that disagrees)."""


@dataclass
class QAConfig:
    """Generator limits and thresholds (defaults: module docstring; lengths in metres, angles in degrees)."""

    max_per_scene: dict[str, int] = field(
        default_factory=lambda: {
            "object_counting": 10**9,  # every category with >= 2 instances
            "object_size_estimation": 10**9,  # every single-instance category
            "room_size_estimation": 1,
            "object_abs_distance": 10,
            "object_rel_distance": 10,
            "object_rel_direction_easy": 10,
            "object_rel_direction_medium": 10,
            "object_rel_direction_hard": 10,
            "obj_appearance_order": 5,
            "route_planning": 5,
        },
        metadata={"help": "questions per scene and type, at most"},
    )
    min_count: int = 2  # counting: categories with at least this many instances
    rel_distance_min: float = 0.15  # m; skip when the nearest choice is closer than this to the target
    rel_distance_gap: float = 0.15  # m; skip when the two nearest choices are closer than this in distance
    direction_margin_deg: float = 10.0  # skip θ within this of a class boundary
    direction_min_dist: float = 0.3  # m; floor-plane centre distances of the three objects, at least
    direction_max_dist: float = 5.0  # m; … and at most
    appearance_min_gap_s: float = 1.0  # s; first-appearance times must differ by more than this
    appearance_min_pixels: int = 200  # pixels of one instance for it to count as visible in a frame
    route_max_blanks: int = 3  # route planning: at most this many [please fill in]
    route_margin_deg: float = 10.0  # skip turns within this of ±45° / ±135°
    max_tries: int = 200  # random draws per scene and type for rel-distance / appearance / route candidates

    def __post_init__(self) -> None:
        unknown = set(self.max_per_scene) - set(QUESTION_TYPES)
        if unknown:
            raise ValueError(f"max_per_scene has unknown question types {sorted(unknown)}")
        if self.direction_min_dist > self.direction_max_dist:
            raise ValueError("direction_min_dist must be <= direction_max_dist")
        if self.min_count < 1:
            raise ValueError("min_count must be >= 1")


# ---- helpers ----------------------------------------------------------------------------------------------
def format_number(question_type: str, value) -> str:
    """A numeric answer as VSI-Bench writes ``ground_truth``: ``"7"``, ``"94"``, ``"2.9"``, ``"35.9"``."""
    if question_type in ("object_counting", "object_size_estimation"):
        return str(int(value))
    return f"{float(value):.1f}"


def _check_category(scene: SceneMeta, category: str, slot: str) -> None:
    if category not in scene.object_counts and not scene.instances(category):
        raise UnknownCategoryError(
            f"scene {scene.scene_id!r}: unknown category {category!r} in slot {slot!r}; "
            f"categories present: {sorted(set(scene.categories) | set(scene.object_counts))}"
        )


def _single(scene: SceneMeta, category: str, slot: str) -> ObjectBox:
    _check_category(scene, category, slot)
    inst = scene.instances(category)
    n = scene.object_counts.get(category, len(inst))
    if len(inst) != 1 or n != 1:
        raise AmbiguousObjectError(
            f"scene {scene.scene_id!r}: slot {slot!r} needs a single-instance category, but {category!r} has "
            f"{len(inst)} boxes (count {n})"
        )
    return inst[0]


def _min_distance(scene: SceneMeta, box: ObjectBox, category: str) -> float:
    """Closest-point distance (m) from ``box`` to the nearest instance of ``category``."""
    return min(box_distance(box, o) for o in scene.instances(category))


def relative_direction_angle(positioning, orienting, querying) -> float:
    """Counter-clockwise angle (degrees, [0, 360)) in the floor plane from (positioning→orienting) to
    (positioning→querying), seen from above (z-up world). Arguments: boxes or [3] / [2] points."""
    p, o, q = (
        np.asarray(getattr(x, "centroid", x), dtype=np.float64)[:2]
        for x in (positioning, orienting, querying)
    )
    f, v = o - p, q - p
    ang = math.degrees(math.atan2(f[0] * v[1] - f[1] * v[0], f @ v))
    return ang % 360.0


def _direction_label(question_type: str, theta: float) -> str:
    if question_type == "object_rel_direction_hard":
        return ("front-left", "back-left", "back-right", "front-right")[int(theta // 90) % 4]
    if question_type == "object_rel_direction_medium":
        return "left" if theta < 135 else ("back" if theta < 225 else "right")
    if question_type == "object_rel_direction_easy":
        return "left" if theta < 180 else "right"
    raise ValueError(f"not a relative-direction question type: {question_type!r}")


_DIRECTION_BOUNDARIES = {
    "object_rel_direction_hard": (0.0, 90.0, 180.0, 270.0, 360.0),
    "object_rel_direction_medium": (0.0, 135.0, 225.0, 360.0),
    "object_rel_direction_easy": (0.0, 180.0, 360.0),
}


def first_appearance_times(scene: SceneMeta, instance_ids: np.ndarray, fps: float, min_pixels: int = 200):
    """First time (seconds) each category is visible in a video.

    Args:
        scene: the scene whose ``ObjectBox.instance_id`` values label the masks.
        instance_ids: ``int32 [T, H, W]`` instance masks (0 = background).
        fps: frames per second of the video the masks belong to.
        min_pixels: an instance is visible in a frame when it covers at least this many pixels.

    Returns:
        ``{category: seconds}`` for the categories seen at least once (first frame index / fps).
    """
    ids = np.asarray(instance_ids)
    if ids.ndim != 3:
        raise ValueError(f"instance_ids must be [T, H, W], got shape {ids.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    by_id = scene.by_instance_id
    unknown = set(np.unique(ids).tolist()) - set(by_id) - {0}
    if unknown:
        raise ValueError(f"scene {scene.scene_id!r}: instance ids {sorted(unknown)[:10]} not in the scene")
    first: dict[str, float] = {}
    for t in range(ids.shape[0]):
        counts = np.bincount(ids[t].ravel())
        for iid in np.nonzero(counts >= min_pixels)[0]:
            if iid == 0:
                continue
            cat = by_id[int(iid)].category
            if cat not in first:
                first[cat] = t / fps
    return first


def _turn(angle: float) -> str | None:
    """Signed heading change (degrees, CCW positive, (-180, 180]) → turn label; None = no turn needed."""
    if abs(angle) < 45:
        return None
    if abs(angle) > 135:
        return "Turn Back"
    return "Turn Left" if angle > 0 else "Turn Right"


def _signed_angle(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.atan2(a[0] * b[1] - a[1] * b[0], a @ b))


def _route_turns(scene: SceneMeta, start: str, facing: str, route: list[str]):
    """Turn labels and angles of a route; first leg to ``facing`` needs no turn (label None)."""
    s = _single(scene, start, "start")
    f = _single(scene, facing, "facing")
    stops = [_single(scene, c, f"route[{i}]") for i, c in enumerate(route)]
    heading = f.centroid[:2] - s.centroid[:2]
    pos = s.centroid[:2]
    labels, angles = [], []
    for stop in stops:
        leg = stop.centroid[:2] - pos
        ang = _signed_angle(heading, leg)
        angles.append(ang)
        labels.append(_turn(ang))
        heading, pos = leg, stop.centroid[:2]
    return labels, angles


# ---- ground truth ---------------------------------------------------------------------------------------
def answer(scene: SceneMeta, question_type: str, **slots):
    """Ground truth of one question, as VSI-Bench's answer text.

    Slots per type: ``category`` (counting, size); ``object_a, object_b`` (absolute distance);
    ``target, choices`` (relative distance: 4 categories); ``positioning, orienting, querying`` (relative
    direction); ``choices`` + either ``appearance_times`` ({category: s}) or ``instance_ids, fps``
    [, ``min_pixels``] (appearance order); ``start, facing, route`` (route planning; ``route`` lists the
    categories walked to, destination last). Room size takes none.

    Returns: ``int`` (counting, size in cm), ``float`` rounded to 0.1 (distance in m, room size in m²) or the
    option text. Raises :class:`UnknownCategoryError` for a category not in the scene,
    :class:`AmbiguousObjectError` where one instance is required, ``ValueError`` for other bad input.
    """
    qt = question_type
    if qt not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {qt!r}; expected one of {list(QUESTION_TYPES)}")
    if qt == "room_size_estimation":
        if scene.room_size is None:
            raise ValueError(f"scene {scene.scene_id!r} has no room_size")
        return round(float(scene.room_size), 1)
    if qt == "object_counting":
        cat = slots["category"]
        _check_category(scene, cat, "category")
        return int(scene.object_counts.get(cat, len(scene.instances(cat))))
    if qt == "object_size_estimation":
        box = _single(scene, slots["category"], "category")
        return int(round(box.longest_side * 100.0))
    if qt == "object_abs_distance":
        a = _single(scene, slots["object_a"], "object_a")
        b = _single(scene, slots["object_b"], "object_b")
        return round(box_distance(a, b), 1)
    if qt == "object_rel_distance":
        target = _single(scene, slots["target"], "target")
        choices = list(slots["choices"])
        for i, c in enumerate(choices):
            _check_category(scene, c, f"choices[{i}]")
        if slots["target"] in choices:
            raise ValueError(f"target {slots['target']!r} is also among the choices {choices}")
        dists = [_min_distance(scene, target, c) for c in choices]
        return choices[int(np.argmin(dists))]
    if qt.startswith("object_rel_direction"):
        p = _single(scene, slots["positioning"], "positioning")
        o = _single(scene, slots["orienting"], "orienting")
        q = _single(scene, slots["querying"], "querying")
        return _direction_label(qt, relative_direction_angle(p, o, q))
    if qt == "obj_appearance_order":
        choices = list(slots["choices"])
        times = slots.get("appearance_times")
        if times is None:
            times = first_appearance_times(
                scene,
                slots["instance_ids"],
                slots["fps"],
                slots.get("min_pixels", QAConfig.appearance_min_pixels),
            )
        for i, c in enumerate(choices):
            _check_category(scene, c, f"choices[{i}]")
            if c not in times:
                raise ValueError(f"scene {scene.scene_id!r}: category {c!r} never appears in the video")
        return ", ".join(sorted(choices, key=lambda c: times[c]))
    if qt == "route_planning":
        labels, _ = _route_turns(scene, slots["start"], slots["facing"], list(slots["route"]))
        turns = [lab for i, lab in enumerate(labels) if not (i == 0 and slots["route"][0] == slots["facing"])]
        if any(t is None for t in turns):
            raise ValueError("route has a leg that needs no turn; it has no [please fill in] answer")
        return ", ".join(turns)
    raise AssertionError(qt)  # pragma: no cover


# ---- generators -------------------------------------------------------------------------------------------
def _rng(seed: int, scene_id: str, question_type: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"{scene_id}|{question_type}".encode())])


def _place(
    rng: np.random.Generator, options: list[str], correct: str, letter_counts: Counter
) -> tuple[list, str]:
    """Order ``options`` so that ``correct`` lands on the least-used letter so far (ties: random); the others
    are shuffled. Returns ``(["A. x", ...], letter)``."""
    n = len(options)
    used = [letter_counts[LETTERS[i]] for i in range(n)]
    best = [i for i in range(n) if used[i] == min(used)]
    pos = int(best[rng.integers(len(best))])
    others = [o for o in options if o != correct]
    others = [others[i] for i in rng.permutation(len(others))]
    ordered = others[:pos] + [correct] + others[pos:]
    letter_counts[LETTERS[pos]] += 1
    return [f"{LETTERS[i]}. {o}" for i, o in enumerate(ordered)], LETTERS[pos]


def _row(scene, qt, question, answer_value, options=None, letter=None, slots=None) -> dict:
    gt = letter if qt in CHOICE_TYPES else format_number(qt, answer_value)
    return {
        "id": None,  # numbered by generate_for_scenes
        "dataset": scene.dataset,
        "scene_name": scene.scene_id,
        "question_type": qt,
        "question": question,
        "ground_truth": gt,
        "options": options,
        "answer": answer_value,
        "slots": slots or {},
    }


def _unique(scene: SceneMeta) -> list[str]:
    return scene.unique_categories()


def _gen_counting(scene, rng, cfg, skipped):
    qt = "object_counting"
    cats = [c for c, n in scene.object_counts.items() if n >= cfg.min_count and scene.instances(c)]
    if not cats:
        skipped[f"{qt}/no_category_with_{cfg.min_count}_instances"] += 1
        return []
    cats = [cats[i] for i in rng.permutation(len(cats))][: cfg.max_per_scene.get(qt, 0)]
    return [
        _row(
            scene, qt, TEMPLATES[qt].format(category=c), answer(scene, qt, category=c), slots={"category": c}
        )
        for c in cats
    ]


def _gen_size(scene, rng, cfg, skipped):
    qt = "object_size_estimation"
    cats = _unique(scene)
    if not cats:
        skipped[f"{qt}/no_single_instance_category"] += 1
        return []
    rows = []
    for c in [cats[i] for i in rng.permutation(len(cats))]:
        value = answer(scene, qt, category=c)
        if value <= 0:
            skipped[f"{qt}/zero_size"] += 1
            continue
        rows.append(_row(scene, qt, TEMPLATES[qt].format(category=c), value, slots={"category": c}))
        if len(rows) >= cfg.max_per_scene.get(qt, 0):
            break
    return rows


def _gen_room(scene, rng, cfg, skipped):
    qt = "room_size_estimation"
    if scene.room_size is None or scene.room_size <= 0:
        skipped[f"{qt}/no_room_size"] += 1
        return []
    return [_row(scene, qt, TEMPLATES[qt], answer(scene, qt))][: cfg.max_per_scene.get(qt, 0)]


def _gen_abs_distance(scene, rng, cfg, skipped):
    qt = "object_abs_distance"
    cats = _unique(scene)
    if len(cats) < 2:
        skipped[f"{qt}/fewer_than_2_single_instance_categories"] += 1
        return []
    pairs = list(itertools.combinations(cats, 2))
    rows = []
    for k in rng.permutation(len(pairs)):
        a, b = pairs[k]
        if rng.random() < 0.5:
            a, b = b, a
        value = answer(scene, qt, object_a=a, object_b=b)
        if value <= 0:
            skipped[f"{qt}/rounds_to_zero"] += 1
            continue
        rows.append(
            _row(
                scene,
                qt,
                TEMPLATES[qt].format(object_a=a, object_b=b),
                value,
                slots={"object_a": a, "object_b": b},
            )
        )
        if len(rows) >= cfg.max_per_scene.get(qt, 0):
            break
    return rows


def _gen_rel_distance(scene, rng, cfg, skipped, letters):
    qt = "object_rel_distance"
    targets = _unique(scene)
    cats = scene.categories
    if not targets or len(cats) < 5:
        skipped[f"{qt}/needs_a_single_instance_target_and_4_other_categories"] += 1
        return []
    rows, seen = [], set()
    for _ in range(cfg.max_tries):
        if len(rows) >= cfg.max_per_scene.get(qt, 0):
            break
        t = targets[rng.integers(len(targets))]
        others = [c for c in cats if c != t]
        if len(others) < 4:
            continue
        choice = [others[i] for i in rng.choice(len(others), 4, replace=False)]
        key = (t, frozenset(choice))
        if key in seen:
            continue
        seen.add(key)
        tbox = scene.instances(t)[0]
        d = np.array([_min_distance(scene, tbox, c) for c in choice])
        order = np.argsort(d, kind="stable")
        if d[order[0]] < cfg.rel_distance_min:
            skipped[f"{qt}/nearest_too_close"] += 1
            continue
        if d[order[1]] - d[order[0]] < cfg.rel_distance_gap:
            skipped[f"{qt}/ambiguous_nearest"] += 1
            continue
        correct = choice[int(order[0])]
        options, letter = _place(rng, choice, correct, letters)
        ordered = [o[3:] for o in options]  # question lists the choices in option order
        q = TEMPLATES[qt].format(
            choice_a=ordered[0], choice_b=ordered[1], choice_c=ordered[2], choice_d=ordered[3], target=t
        )
        rows.append(_row(scene, qt, q, correct, options, letter, slots={"target": t, "choices": ordered}))
    if not rows and not any(k.startswith(qt) for k in skipped):
        skipped[f"{qt}/no_valid_candidate"] += 1
    return rows


def _gen_direction(scene, rng, cfg, skipped, qt, letters):
    cats = _unique(scene)
    if len(cats) < 3:
        skipped[f"{qt}/fewer_than_3_single_instance_categories"] += 1
        return []
    triples = list(itertools.permutations(cats, 3))
    rows = []
    bounds = np.array(_DIRECTION_BOUNDARIES[qt])
    for k in rng.permutation(len(triples)):
        if len(rows) >= cfg.max_per_scene.get(qt, 0):
            break
        p, o, q = triples[k]
        bp, bo, bq = (scene.instances(c)[0] for c in (p, o, q))
        dists = [np.linalg.norm(x.centroid[:2] - y.centroid[:2]) for x, y in ((bp, bo), (bp, bq), (bo, bq))]
        if min(dists) < cfg.direction_min_dist or max(dists) > cfg.direction_max_dist:
            skipped[f"{qt}/distance_out_of_range"] += 1
            continue
        theta = relative_direction_angle(bp, bo, bq)
        if np.min(np.abs(bounds - theta)) < cfg.direction_margin_deg:
            skipped[f"{qt}/near_boundary"] += 1
            continue
        if qt == "object_rel_direction_easy" and 135.0 < theta < 225.0:
            skipped[f"{qt}/behind"] += 1
            continue
        correct = _direction_label(qt, theta)
        options, letter = _place(rng, list(DIRECTION_OPTIONS[qt]), correct, letters)
        question = TEMPLATES[qt].format(positioning=p, orienting=o, querying=q)
        rows.append(
            _row(
                scene,
                qt,
                question,
                correct,
                options,
                letter,
                slots={"positioning": p, "orienting": o, "querying": q},
            )
        )
    return rows


def _gen_appearance(scene, rng, cfg, skipped, letters, video):
    qt = "obj_appearance_order"
    if video is None:
        skipped[f"{qt}/no_video"] += 1
        return []
    instance_ids, fps = video
    times = first_appearance_times(scene, instance_ids, fps, cfg.appearance_min_pixels)
    cats = sorted(times, key=lambda c: (times[c], c))
    if len(cats) < 4:
        skipped[f"{qt}/fewer_than_4_visible_categories"] += 1
        return []
    rows, seen = [], set()
    for _ in range(cfg.max_tries):
        if len(rows) >= cfg.max_per_scene.get(qt, 0):
            break
        pick = [cats[i] for i in sorted(rng.choice(len(cats), 4, replace=False))]
        if frozenset(pick) in seen:
            continue
        seen.add(frozenset(pick))
        t = [times[c] for c in pick]
        if min(b - a for a, b in itertools.pairwise(t)) <= cfg.appearance_min_gap_s:
            skipped[f"{qt}/times_too_close"] += 1
            continue
        correct = ", ".join(pick)
        perms = [", ".join(p) for p in itertools.permutations(pick) if ", ".join(p) != correct]
        distract = [perms[i] for i in rng.choice(len(perms), 3, replace=False)]
        options, letter = _place(rng, [correct, *distract], correct, letters)
        asked = [pick[i] for i in rng.permutation(4)]
        q = TEMPLATES[qt].format(choice_a=asked[0], choice_b=asked[1], choice_c=asked[2], choice_d=asked[3])
        rows.append(_row(scene, qt, q, correct, options, letter, slots={"choices": asked}))
    if not rows and not any(k.startswith(qt) for k in skipped):
        skipped[f"{qt}/no_valid_candidate"] += 1
    return rows


def _gen_route(scene, rng, cfg, skipped, letters):
    qt = "route_planning"
    if scene.dataset != "synthetic":
        skipped[f"{qt}/not_synthetic"] += 1
        return []
    cats = _unique(scene)
    if len(cats) < 3:
        skipped[f"{qt}/fewer_than_3_single_instance_categories"] += 1
        return []
    rows, seen = [], set()
    m = cfg.route_margin_deg
    for _ in range(cfg.max_tries):
        if len(rows) >= cfg.max_per_scene.get(qt, 0):
            break
        n_stops = int(rng.integers(1, min(cfg.route_max_blanks, len(cats) - 2) + 1))  # start + facing + stops
        pick = [cats[i] for i in rng.choice(len(cats), n_stops + 2, replace=False)]
        start, facing, route = pick[0], pick[1], pick[2:]
        if rng.random() < 0.5:  # first leg goes to the facing object: "1. Go forward until the <facing>"
            route = [facing, *route]
        key = (start, facing, *route)
        if (len(route) < 2 and route[0] == facing) or key in seen:
            continue
        seen.add(key)
        labels, angles = _route_turns(scene, start, facing, route)
        first_free = route[0] == facing
        blanks = [
            (lab, ang) for i, (lab, ang) in enumerate(zip(labels, angles)) if not (i == 0 and first_free)
        ]
        if not blanks or len(blanks) > cfg.route_max_blanks:
            continue
        if any(lab is None for lab, _ in blanks):
            skipped[f"{qt}/leg_needs_no_turn"] += 1
            continue
        if any(min(abs(abs(a) - 45.0), abs(abs(a) - 135.0)) < m for _, a in blanks):
            skipped[f"{qt}/turn_near_boundary"] += 1
            continue
        legs = [s.centroid[:2] for s in (scene.instances(c)[0] for c in [start, *route])]
        if any(np.linalg.norm(b - a) < 0.3 for a, b in itertools.pairwise(legs)):
            skipped[f"{qt}/leg_too_short"] += 1
            continue
        turns = [lab for lab, _ in blanks]
        steps, k = [], 1
        for i, c in enumerate(route):
            if not (i == 0 and first_free):
                steps.append(f"{k}. [please fill in]")
                k += 1
            steps.append(f"{k}. Go forward until the {c}" + ("." if i == len(route) - 1 else ""))
            k += 1
        correct = ", ".join(turns)
        others = [
            ", ".join(s) for s in itertools.product(TURNS, repeat=len(turns)) if ", ".join(s) != correct
        ]
        distract = [others[i] for i in rng.choice(len(others), min(3, len(others)), replace=False)]
        options, letter = _place(rng, [correct, *distract], correct, letters)
        q = TEMPLATES[qt].format(start=start, facing=facing, destination=route[-1], actions=" ".join(steps))
        rows.append(
            _row(
                scene,
                qt,
                q,
                correct,
                options,
                letter,
                slots={"start": start, "facing": facing, "route": route},
            )
        )
    if not rows and not any(k.startswith(qt) for k in skipped):
        skipped[f"{qt}/no_valid_candidate"] += 1
    return rows


def generate_scene_qa(
    scene: SceneMeta,
    types: Iterable[str] | None = None,
    seed: int = 0,
    config: QAConfig | None = None,
    video: tuple[np.ndarray, float] | None = None,
    letter_counts: dict[str, Counter] | None = None,
) -> tuple[list[dict], Counter]:
    """Questions of the given ``types`` (default: all) for one scene.

    Args:
        video: ``(instance_ids int32 [T, H, W], fps)`` for appearance order; without it that type is skipped.
        letter_counts: per-type Counter of answer letters used so far (shared across scenes to balance
            answer positions); a fresh one when None.

    Returns: ``(rows, skipped)`` — rows as in the module docstring (``id`` None), skip reasons counted.
    """
    cfg = config or QAConfig()
    types = list(QUESTION_TYPES if types is None else types)
    bad = [t for t in types if t not in QUESTION_TYPES]
    if bad:
        raise ValueError(f"unknown question types {bad}; expected among {list(QUESTION_TYPES)}")
    letters = letter_counts if letter_counts is not None else {}
    skipped: Counter = Counter()
    rows: list[dict] = []
    for qt in types:
        rng = _rng(seed, scene.scene_id, qt)
        lc = letters.setdefault(qt, Counter())
        if qt == "object_counting":
            rows += _gen_counting(scene, rng, cfg, skipped)
        elif qt == "object_size_estimation":
            rows += _gen_size(scene, rng, cfg, skipped)
        elif qt == "room_size_estimation":
            rows += _gen_room(scene, rng, cfg, skipped)
        elif qt == "object_abs_distance":
            rows += _gen_abs_distance(scene, rng, cfg, skipped)
        elif qt == "object_rel_distance":
            rows += _gen_rel_distance(scene, rng, cfg, skipped, lc)
        elif qt.startswith("object_rel_direction"):
            rows += _gen_direction(scene, rng, cfg, skipped, qt, lc)
        elif qt == "obj_appearance_order":
            rows += _gen_appearance(scene, rng, cfg, skipped, lc, video)
        elif qt == "route_planning":
            rows += _gen_route(scene, rng, cfg, skipped, lc)
    return rows, skipped


def generate_for_scenes(
    scenes: Mapping[str, SceneMeta] | Iterable[SceneMeta],
    types: Iterable[str] | None = None,
    seed: int = 0,
    config: QAConfig | None = None,
    videos: Mapping[str, tuple[np.ndarray, float]] | None = None,
) -> tuple[list[dict], Counter]:
    """Questions for many scenes: ``(rows, skipped)``, rows numbered ``id`` 0, 1, … in (scene id, type
    order) order. Scenes are processed sorted by id, so the output does not depend on input order.

    Example (the 288 VSI-Bench validation scenes; appearance order needs videos, route planning synthetic
    scenes)::

        scenes = {}
        for f in sorted(Path("vsibench_meta_info").glob("*_meta_info_val.json")):
            scenes.update(load_vsibench_meta(f))
        rows, skipped = generate_for_scenes(scenes, META_INFO_TYPES, seed=0)
    """
    if isinstance(scenes, Mapping):
        scenes = list(scenes.values())
    scenes = sorted(scenes, key=lambda s: (s.dataset, s.scene_id))
    types = list(QUESTION_TYPES if types is None else types)
    videos = videos or {}
    letters: dict[str, Counter] = {}
    rows: list[dict] = []
    skipped: Counter = Counter()
    for scene in scenes:
        r, s = generate_scene_qa(scene, types, seed, config, videos.get(scene.scene_id), letters)
        rows += r
        skipped.update(s)
    for i, row in enumerate(rows):
        row["id"] = i
    return rows, skipped
