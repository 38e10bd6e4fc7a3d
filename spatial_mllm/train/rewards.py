"""Reward functions for the cold-start filter and GRPO, with TRL's contract.

Every function is ``f(completions, **kwargs) -> list[float | None]``: ``completions`` is a list of model
texts (or TRL's conversational form, a list of ``{"role", "content"}`` messages, whose last content is
used); dataset columns arrive as kwargs holding one value per completion — ``question_type``,
``ground_truth``, ``options`` (and whatever else the rows carry). Values are in [0, 1]; ``None`` means the
function does not apply to that question (TRL then leaves it out of the weighted sum). Registry:
:data:`REWARDS`; weights come from ``GRPOConfig.reward_weights``.

* ``format`` — 1 for exactly one ``<think>…</think>`` followed by exactly one ``<answer>…</answer>``,
  whitespace allowed around and between them and nothing else (:func:`spatial_mllm.data.formats.
  parse_think_answer`); else 0. Applies to every question.
* ``accuracy`` — multiple choice. The answer text is the last ``<answer>`` block's content when present,
  else the whole completion (:func:`spatial_mllm.eval.metrics.extract_answer`), then VSI-Bench's rule:
  its first space-separated token (trailing dots stripped) equals the ground-truth letter,
  case-insensitively (``"B"``, ``"b."``, ``"B. chair"`` ✓; ``"(B)"`` ✗). In addition the option's text is
  accepted (``"chair"`` for ``"B. chair"``; whole answer, case-insensitive, trailing dots stripped) — a
  reasoning model often answers with the words. A ground truth given as option text (``"left"``, what
  :func:`spatial_mllm.data.qa.answer` returns) is matched against its letter and its text.
* ``mra`` — numeric questions: VSI-Bench's mean relative accuracy of ``float(first token)`` of the answer
  text; an unparsable answer (``"3m"``, ``"three"``, ``""``) scores 0.
* ``levenshtein`` — free-form questions (neither a VSI-Bench multiple-choice/numeric type nor a row with
  options): ``1 - edit_distance / max(len)`` between the lower-cased, whitespace-collapsed answer text and
  ground truth (both empty → 1). Texts are cut at :data:`LEVENSHTEIN_MAX_CHARS` characters so that a
  runaway completion costs bounded time.
* ``length`` (optional, off by default) — Video-R1's length reward (Feng et al. 2025; ``tulerfeng/Video-R1``,
  ``src/r1-v/src/open_r1/trainer/grpo_trainer.py``, ``len_control``): when MORE THAN ONE completion of the
  call is correct — Video-R1: its first reward (accuracy) ``> 0.1``; here the task reward (:func:`task_reward`)
  ``> 0.1`` — each correct completion whose length is 320..512 **tokens** (both included) gets 1.0, every other
  completion 0.0. Video-R1 adds ``+0.2`` to the summed reward: give ``length`` the weight 0.2
  (``reward_weights``). The length is Video-R1's ``completion_mask.sum(1)``: the completion's tokens up to and
  including the first EOS, read from the TRL reward kwarg ``completion_ids`` (one token-id list per
  completion); without it the function needs a tokenizer (``make_length_reward(tokenizer=...)``: the
  re-tokenised text + 1 for the EOS) and otherwise raises ``ValueError`` — a plumbing error, not model text.
  Departures: (1) Video-R1 counts correct completions over a process's whole generation batch (one prompt ×
  G in its script, ``per_device_train_batch_size 1``); here over the completions of one call — the same when
  a call holds one prompt's group (the paper preset: ``prompts_per_step: 1``) or with ``group_size`` set
  (then per group of ``group_size`` consecutive completions); (2) "correct" is the task reward (accuracy,
  MRA or Levenshtein similarity, on the ``<answer>`` content or else the whole text) where Video-R1 uses its
  own accuracy reward (``src/r1-v/src/open_r1/grpo.py``: ``<answer>`` content only; "numerical" = equal after
  rounding to 2 decimals, "regression" = 1 − relative error, free-form = ROUGE).
* ``digit_fraction`` — a TOY reward (not a spatial one): the fraction of non-space characters that are
  ASCII digits. It exists for the verifiable toy task that checks GRPO learns at all
  (:func:`spatial_mllm.train.grpo.toy_rows`); dense, so a random-init tiny model gets a signal.

Malformed text never raises: a completion that is not a string counts as ``""``; any text is scored
(0 when it cannot be parsed). :func:`is_malformed` says whether a completion breaks the format, and the
GRPO loop logs the malformed fraction. A bad *dataset* row (a numeric ground truth that is not a number,
or 0, which MRA divides by) raises ``ValueError`` naming the value — that is a data bug, not model text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from spatial_mllm.data.formats import MCA_TYPES, NA_TYPES, parse_think_answer
from spatial_mllm.eval.metrics import extract_answer, mc_letter_match, mean_relative_accuracy, parse_number

__all__ = [
    "REWARDS",
    "LEVENSHTEIN_MAX_CHARS",
    "completion_text",
    "task_kind",
    "is_malformed",
    "format_reward",
    "accuracy_reward",
    "mra_reward",
    "levenshtein_reward",
    "levenshtein_similarity",
    "make_length_reward",
    "VIDEO_R1_LENGTH",
    "digit_fraction_reward",
    "task_reward",
    "get_reward_funcs",
]

LEVENSHTEIN_MAX_CHARS = 1000
_LETTER_RE = re.compile(r"^\s*([A-Za-z])\s*[.):]\s*(.*)$", re.DOTALL)


# ---- helpers ----------------------------------------------------------------------------------------------
def completion_text(c: Any) -> str:
    """The text of one completion: a string as is; TRL's conversational form → its last ``content``;
    anything else → ``""``."""
    if isinstance(c, str):
        return c
    if isinstance(c, (list, tuple)) and c and isinstance(c[-1], dict):
        content = c[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def task_kind(question_type: str | None, options: Sequence[str] | None = None) -> str:
    """``"mc"`` (multiple choice), ``"numeric"`` or ``"free"`` for a question.

    VSI-Bench's types decide (route planning is multiple choice); another type is multiple choice when it
    has options, else free-form.
    """
    if question_type in MCA_TYPES:
        return "mc"
    if question_type in NA_TYPES:
        return "numeric"
    return "mc" if options else "free"


def is_malformed(completion: Any) -> bool:
    """True when the completion is not exactly ``<think>…</think> <answer>…</answer>``."""
    return parse_think_answer(completion_text(completion)) is None


def _column(kwargs: dict, name: str, n: int) -> list:
    col = kwargs.get(name)
    if col is None:
        return [None] * n
    col = list(col)
    if len(col) != n:
        raise ValueError(f"reward kwargs {name!r} has {len(col)} values for {n} completions")
    return col


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().rstrip(".").strip().lower()


def _split_option(opt: str) -> tuple[str | None, str]:
    """``"B. chair"`` → ``("B", "chair")``; an option without a letter → ``(None, text)``."""
    m = _LETTER_RE.match(str(opt))
    return (m.group(1).upper(), m.group(2)) if m else (None, str(opt))


# ---- the task rewards -------------------------------------------------------------------------------------
def _mc_score(answer: str, ground_truth: Any, options: Sequence[str] | None) -> float:
    gt = str(ground_truth).strip()
    parsed = [_split_option(o) for o in (options or [])]
    letters = {letter: text for letter, text in parsed if letter is not None}
    if gt.upper() in letters or (len(gt) == 1 and gt.isalpha()):
        gt_letter, gt_text = gt.upper(), letters.get(gt.upper())
    else:  # ground truth given as option text
        gt_text = gt
        gt_letter = next((letter for letter, text in parsed if _norm(text) == _norm(gt)), None)
    if gt_letter is not None and mc_letter_match(answer, gt_letter):
        return 1.0
    a = _norm(answer)
    if gt_text is not None and a and (a == _norm(gt_text) or (gt_letter is not None and a == _norm(
            f"{gt_letter}. {gt_text}"))):
        return 1.0
    return 0.0


def _numeric_gt(ground_truth: Any) -> float:
    try:
        gt = float(ground_truth)
    except (TypeError, ValueError):
        raise ValueError(f"numeric ground truth {ground_truth!r} is not a number") from None
    if gt == 0:
        raise ValueError("numeric ground truth 0: MRA divides by the ground truth (no VSI-Bench row has 0)")
    return gt


def _mra_score(answer: str, ground_truth: Any) -> float:
    gt = _numeric_gt(ground_truth)
    pred = parse_number(answer)
    return 0.0 if pred is None else mean_relative_accuracy(pred, gt)


def levenshtein_similarity(a: str, b: str) -> float:
    """``1 - edit_distance(a, b) / max(len(a), len(b))`` in [0, 1]; both empty → 1."""
    a, b = a[:LEVENSHTEIN_MAX_CHARS], b[:LEVENSHTEIN_MAX_CHARS]
    if not a and not b:
        return 1.0
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


def task_reward(completion: Any, question_type: str | None, ground_truth: Any,
                options: Sequence[str] | None = None) -> float:
    """The task score in [0, 1] of one completion: accuracy (choices), MRA (numbers) or Levenshtein
    similarity (free form), each on the ``<answer>`` content when present. Used by the cold-start filter
    and the per-task-type accuracy logs."""
    answer = extract_answer(completion_text(completion))
    kind = task_kind(question_type, options)
    if kind == "mc":
        return _mc_score(answer, ground_truth, options)
    if kind == "numeric":
        return _mra_score(answer, ground_truth)
    return levenshtein_similarity(_norm(answer), _norm(str(ground_truth)))


# ---- registry functions (TRL contract) --------------------------------------------------------------------
def format_reward(completions: list, **kwargs) -> list[float | None]:
    """1.0 for exactly one ``<think>…</think>`` then one ``<answer>…</answer>`` (whitespace allowed), else 0."""
    return [0.0 if is_malformed(c) else 1.0 for c in completions]


def _per_kind(completions: list, kwargs: dict, kind: str) -> list[float | None]:
    n = len(completions)
    qtypes, gts, opts = (_column(kwargs, k, n) for k in ("question_type", "ground_truth", "options"))
    out: list[float | None] = []
    for c, qt, gt, op in zip(completions, qtypes, gts, opts):
        out.append(task_reward(c, qt, gt, op) if task_kind(qt, op) == kind else None)
    return out


def accuracy_reward(completions: list, **kwargs) -> list[float | None]:
    """Multiple choice: 1.0 when the answer's letter (VSI-Bench rule) or option text is right; None for
    other question types."""
    return _per_kind(completions, kwargs, "mc")


def mra_reward(completions: list, **kwargs) -> list[float | None]:
    """Numeric questions: VSI-Bench mean relative accuracy of the answer; None for other question types."""
    return _per_kind(completions, kwargs, "numeric")


def levenshtein_reward(completions: list, **kwargs) -> list[float | None]:
    """Free-form questions: normalised Levenshtein similarity of answer and ground truth; None otherwise."""
    return _per_kind(completions, kwargs, "free")


VIDEO_R1_LENGTH = {"min_tokens": 320, "max_tokens": 512, "correct_above": 0.1, "weight": 0.2}  # grpo_trainer.py


def _token_lengths(completions: list, kwargs: dict, tokenizer) -> list[int]:
    n = len(completions)
    ids = kwargs.get("completion_ids")
    if ids is not None:
        ids = list(ids)
        if len(ids) != n:
            raise ValueError(f"reward kwargs 'completion_ids' has {len(ids)} values for {n} completions")
        return [len(x) for x in ids]
    if tokenizer is None:
        raise ValueError("the length reward counts completion tokens (Video-R1): pass completion_ids (one token-id "
                         "list per completion, TRL's reward kwarg) or build it with make_length_reward(tokenizer=...)")
    # decoded text lost the EOS token that Video-R1's completion mask counts: add it back
    return [len(tokenizer(completion_text(c), add_special_tokens=False)["input_ids"]) + 1 for c in completions]


def make_length_reward(min_tokens: int = 320, max_tokens: int = 512, correct_above: float = 0.1,
                       tokenizer=None, group_size: int | None = None) -> Callable[..., list[float | None]]:
    """Video-R1's length reward (module docstring): 1.0 for a correct completion (task reward >
    ``correct_above``) of ``min_tokens``..``max_tokens`` tokens when more than one completion of its group is
    correct, else 0.0. ``group_size`` None = the whole call is one group (Video-R1's per-process batch)."""
    if not 0 <= min_tokens <= max_tokens:
        raise ValueError(f"need 0 <= min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    if group_size is not None and group_size < 1:
        raise ValueError(f"group_size must be >= 1 or None, got {group_size}")

    def length_reward(completions: list, **kwargs) -> list[float | None]:
        n = len(completions)
        qtypes, gts, opts = (_column(kwargs, k, n) for k in ("question_type", "ground_truth", "options"))
        lengths = _token_lengths(completions, kwargs, tokenizer)
        correct = [task_reward(c, qt, gt, op) > correct_above for c, qt, gt, op in zip(completions, qtypes, gts, opts)]
        size = group_size or max(n, 1)
        if n % size:
            raise ValueError(f"{n} completions do not form groups of {size}")
        out: list[float | None] = []
        for start in range(0, n, size):
            group = range(start, start + size)
            enough = sum(correct[i] for i in group) > 1  # Video-R1: len(selected_indices) > 1
            out += [1.0 if enough and correct[i] and min_tokens <= lengths[i] <= max_tokens else 0.0 for i in group]
        return out

    length_reward.__name__ = "length_reward"
    return length_reward


def digit_fraction_reward(completions: list, **kwargs) -> list[float | None]:
    """TOY reward: fraction of the non-space characters that are ASCII digits (0 for an empty text)."""
    out: list[float | None] = []
    for c in completions:
        chars = [ch for ch in completion_text(c) if not ch.isspace()]
        out.append(sum(ch in "0123456789" for ch in chars) / len(chars) if chars else 0.0)
    return out


REWARDS: dict[str, Callable[..., list[float | None]]] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "mra": mra_reward,
    "levenshtein": levenshtein_reward,
    "length": make_length_reward(),
    "digit_fraction": digit_fraction_reward,
}


def get_reward_funcs(names: Sequence[str]) -> list[Callable[..., list[float | None]]]:
    """The registered functions for ``names``; an unknown name is an error listing the known ones."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise KeyError(f"unknown reward function(s) {unknown}; registered: {sorted(REWARDS)}")
    return [REWARDS[n] for n in names]
