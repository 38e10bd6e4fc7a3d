"""Deterministic predictors without a model: VSI-Bench's chance-level baselines, and one for ScanQA/SQA3D.

They follow the ``predict(batch) -> list[str]`` contract of :mod:`spatial_mllm.eval.loop`, so the whole
evaluation pipeline (prompts, sharding, resume, scoring) runs end to end on real numbers without weights.

* :class:`ChanceBaseline` — VSI-Bench's "Chance Level (Random)": a uniformly random option letter per
  question, seeded per question id (the same answer in any process or batch). The paper leaves numeric
  tasks blank for this row; here numbers get the mean of the fitted rows (as :class:`FrequencyBaseline`), or
  an empty answer (scored 0) when nothing was fitted.
* :class:`FrequencyBaseline` — VSI-Bench's "Chance Level (Frequency)": per question type, the most frequent
  ground-truth letter of the fitted rows (ties: first letter) and, for numbers, their mean (the paper says
  "the most frequent answer for each task"; for MRA the mean is the sensible constant — our reading).
  The paper fits it on the benchmark itself; pass training rows to avoid that.
* :class:`MostFrequentAnswer` — ScanQA/SQA3D: the most frequent answer of the fitted rows per first
  question word ("what", "where", ...), else overall.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from spatial_mllm.data.formats import is_multiple_choice

__all__ = ["ChanceBaseline", "FrequencyBaseline", "MostFrequentAnswer", "format_number"]


def format_number(x: float) -> str:
    """A number as a model would write it: up to 4 decimals, no trailing zeros (``2.5``, ``94``)."""
    s = f"{x:.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _letters(row: dict) -> list[str]:
    return [str(o).split(".", 1)[0].strip() for o in row["options"]]


class FrequencyBaseline:
    """Most frequent letter (choices) / mean ground truth (numbers) per question type of the fitted rows."""

    def __init__(self, rows: Iterable[dict] | None = None):
        self.letter: dict[str, str] = {}
        self.mean: dict[str, float] = {}
        if rows is not None:
            self.fit(rows)

    def fit(self, rows: Iterable[dict]) -> FrequencyBaseline:
        letters: dict[str, Counter] = defaultdict(Counter)
        numbers: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            qt = r["question_type"]
            if is_multiple_choice(qt):
                letters[qt][str(r["ground_truth"])] += 1
            else:
                numbers[qt].append(float(r["ground_truth"]))
        # ties broken by the letter (A before B), so the fit does not depend on row order
        self.letter = {qt: min(c, key=lambda k: (-c[k], k)) for qt, c in letters.items()}
        self.mean = {qt: float(np.mean(v)) for qt, v in numbers.items()}
        return self

    def answer(self, item: dict) -> str:
        qt = item["question_type"]
        if is_multiple_choice(qt):
            if qt in self.letter and self.letter[qt] in _letters(item):
                return self.letter[qt]
            return _letters(item)[0]
        return format_number(self.mean[qt]) if qt in self.mean else ""

    def __call__(self, batch: list[dict]) -> list[str]:
        return [self.answer(it) for it in batch]


class ChanceBaseline:
    """Uniformly random option letter per question (seeded by ``seed`` and the question id)."""

    def __init__(self, seed: int = 0, rows: Iterable[dict] | None = None):
        self.seed = seed
        self.numbers = FrequencyBaseline(rows) if rows is not None else None

    def answer(self, item: dict) -> str:
        if is_multiple_choice(item["question_type"]):
            letters = _letters(item)
            h = zlib.crc32(f"{self.seed}|{item['id']}".encode())
            return letters[h % len(letters)]
        return self.numbers.answer(item) if self.numbers is not None else ""

    def __call__(self, batch: list[dict]) -> list[str]:
        return [self.answer(it) for it in batch]


class MostFrequentAnswer:
    """ScanQA/SQA3D: most frequent (first) answer per first question word of the fitted rows."""

    def __init__(self, rows: Sequence[dict]):
        by_word: dict[str, Counter] = defaultdict(Counter)
        overall: Counter = Counter()
        for r in rows:
            a = r["answers"][0]
            by_word[self._word(r["question"])][a] += 1
            overall[a] += 1
        if not overall:
            raise ValueError("MostFrequentAnswer needs rows with answers")
        pick = lambda c: min(c, key=lambda k: (-c[k], k))
        self.by_word = {w: pick(c) for w, c in by_word.items()}
        self.overall = pick(overall)

    @staticmethod
    def _word(question: str) -> str:
        parts = question.strip().lower().split()
        return parts[0] if parts else ""

    def __call__(self, batch: list[dict]) -> list[str]:
        return [self.by_word.get(self._word(it["question"]), self.overall) for it in batch]
