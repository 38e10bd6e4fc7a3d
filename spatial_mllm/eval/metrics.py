"""Answer parsing and metrics: VSI-Bench (accuracy, MRA) and ScanQA / SQA3D (EM, refined EM, BLEU, ROUGE-L,
CIDEr, METEOR).

VSI-Bench — the rules of lmms-eval's ``vsibench`` task (``lmms_eval/tasks/vsibench/utils.py``, identical in
EvolvingLMMs-Lab/lmms-eval and vision-x-nyu/thinking-in-space), followed to the character:

* **first token** (:func:`first_token`, lmms-eval's ``fuzzy_matching``): ``text.split(" ")[0]``, then strip
  trailing ``"."`` characters, then strip whitespace. The split is on the space character only, not on any
  whitespace: ``"B\\nbecause"`` keeps its newline and does not match, and ``"B.\\n"`` gives ``"B."`` (the
  dots are stripped before the newline is) — both score 0 in lmms-eval and here. A leading space gives
  an empty first token (``" B"`` → ``""`` → 0).
* **multiple choice** (:func:`mc_letter_match`, lmms-eval's ``exact_match``): the first token equals the
  ground-truth letter, case-insensitively (``"B."`` → ``B`` ✓, ``"b"`` ✓, ``"B. chair"`` ✓, ``"(B)"`` ✗).
* **numbers** (:func:`parse_number`): ``float(first token)``; anything ``float`` rejects scores 0
  (``"3m"`` → 0, ``"3 meters"`` → 3, ``""`` → 0, ``"2,000"`` → 0). Python's ``float`` also accepts
  ``"1e3"``, ``"3_000"``, ``"nan"``, ``"inf"`` (the last two then score 0 under MRA).
* **MRA** (:func:`mean_relative_accuracy`): mean over C ∈ {0.50, 0.55, …, 0.95} (``np.linspace(.5, .95,
  10)``, computed as lmms-eval computes it) of ``|pred - gt| / gt <= 1 - C``, in float64 — so a relative
  error of exactly 0.10 computed in floats may land on either side of a threshold exactly as it does in
  lmms-eval.
* **answer tags** (:func:`extract_answer`): content of the last ``<answer>…</answer>`` (stripped) when
  present, else the text unchanged — Spatial-MLLM's ``src/evaluation/vsibench/dataset_utils.py``
  (``_extract_answer``) for reasoning outputs. lmms-eval has no such step; use it only for ``think``
  prompts.

A second rule set, ``rule="spatial_mllm"`` (:func:`score_answer`), reproduces the Spatial-MLLM repository's
own scorer (``dataset_utils.py``: ``clean_text`` + ``vsi_reward``): last ``<answer>`` block, newlines to
spaces, whitespace collapsed, stripped, trailing dots removed, lower-cased; multiple choice is equality of
the whole cleaned string (``"b. chair"`` ✗); numbers drop commas before ``float``; MRA in float32 with a
strict ``<`` and ``|gt| + 1e-8`` in the denominator. It exists to compare with numbers produced by that
code; reported results use the lmms-eval rule.

ScanQA / SQA3D — the scorer of LLaVA-3D / Video-3D LLM (``calc_scanqa_score``), which cites LEO
(embodied-generalist ``data/data_utils.py::clean_answer`` and ``evaluator/scanqa_eval.py::answer_match``):

* :func:`clean_answer`: LEO's answer normalisation (lower-case, spaces, punctuation outside
  ``[a-z0-9,'\\s\\-:]`` removed, a list of typo fixes, digits 0-20 and 23 to words, ``none`` → ``zero``,
  trailing digits of words dropped, leading articles dropped, ``backwards`` → ``backward``);
* :func:`answer_match` → ``(EM, refined EM)``: EM when the cleaned prediction equals one cleaned answer;
  refined EM also when, with spaces removed, one contains the other (the LLaVA-3D variant, which checks
  exact equality against *all* answers first; LEO's loop returns the refined-only result when an earlier
  answer merely contains the prediction);
* captioning metrics on the cleaned strings after PTB tokenisation: BLEU-1..4 (corpus BLEU, "closest"
  reference length), METEOR 1.5, ROUGE-L (β = 1.2), CIDEr (CIDEr-D as pycocoevalcap computes it: n = 4,
  σ = 6, document frequencies from the evaluated references, ×10). Reported ×100 as in those papers.

:class:`CaptionScorer` uses the official ``pycocoevalcap`` package when it is importable and ``java`` is on
``PATH`` (PTB tokenizer and METEOR are Java programs). Otherwise it falls back to this module's own BLEU,
ROUGE-L and CIDEr (line-by-line the same arithmetic as pycocoevalcap 1.2, including its quirks: CIDEr's
length penalty counts bigrams, ROUGE-L splits on single spaces) with :func:`ptb_tokenize_approx` in place
of the Stanford tokenizer, and reports METEOR as ``None`` — METEOR needs WordNet synonyms and paraphrase
tables and is not re-implemented.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "MRA_THRESHOLDS",
    "first_token",
    "parse_number",
    "extract_answer",
    "mc_letter_match",
    "mean_relative_accuracy",
    "score_answer",
    "clean_answer",
    "answer_match",
    "sqa3d_question_type",
    "SQA3D_QUESTION_TYPES",
    "PTB_PUNCTUATION",
    "ptb_tokenize_approx",
    "bleu",
    "rouge_l",
    "cider_d",
    "CaptionScorer",
    "official_scorer_available",
]

# lmms-eval: num_pts = (end - start) / interval + 2; np.linspace(start, end, int(num_pts))  → 10 points
MRA_THRESHOLDS = np.linspace(0.5, 0.95, int((0.95 - 0.5) / 0.05 + 2))

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


# ---- VSI-Bench ----------------------------------------------------------------------------------------------
def first_token(text: str) -> str:
    """lmms-eval's ``fuzzy_matching``: first space-separated token, trailing dots stripped, then whitespace."""
    return text.split(" ")[0].rstrip(".").strip()


def _to_float(s: str) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError, OverflowError):
        return None


def parse_number(text: str) -> float | None:
    """The number VSI-Bench reads from a prediction: ``float(first_token(text))``, or None if unparsable.

    >>> parse_number("3 meters"), parse_number("3m"), parse_number("2.5."), parse_number("")
    (3.0, None, 2.5, None)
    """
    if not isinstance(text, str):
        return None
    return _to_float(first_token(text))


def extract_answer(text: str) -> str:
    """Content of the last ``<answer>…</answer>`` block, stripped; the text unchanged when there is none."""
    found = _ANSWER_RE.findall(text)
    return found[-1].strip() if found else text


def mc_letter_match(pred: str, gt_letter: str) -> float:
    """1.0 when the prediction's first token equals the ground-truth letter (case-insensitive), else 0.0."""
    if not isinstance(pred, str):
        return 0.0
    return 1.0 if first_token(pred).lower() == str(gt_letter).lower() else 0.0


def mean_relative_accuracy(pred: float, gt: float) -> float:
    """VSI-Bench MRA: mean over C = 0.50:0.05:0.95 of ``abs(pred - gt) / gt <= 1 - C``, in [0, 1].

    Raises ``ValueError`` for ``gt == 0`` (lmms-eval divides by the ground truth and would raise
    ``ZeroDivisionError``; VSI-Bench has no zero ground truth).
    """
    pred, gt = float(pred), float(gt)
    if gt == 0:
        raise ValueError("MRA is undefined for a ground truth of 0 (it divides by the ground truth)")
    rel = abs(pred - gt) / gt
    return float(np.mean(rel <= 1 - MRA_THRESHOLDS))


def _clean_spatial_mllm(text: str) -> str:
    text = extract_answer_raw(text).replace("\n", " ").replace("\r", " ")
    return re.sub(r"\s+", " ", text).strip().rstrip(".").lower()


def extract_answer_raw(text: str) -> str:
    """Like :func:`extract_answer` but without stripping (the Spatial-MLLM repository's ``_extract_answer``)."""
    found = _ANSWER_RE.findall(text)
    return found[-1] if found else text


def _mra_spatial_mllm(pred: float, gt: float) -> float:
    import torch

    p = torch.as_tensor(pred, dtype=torch.float32)
    g = torch.as_tensor(gt, dtype=torch.float32)
    rel = torch.abs(p - g) / (torch.abs(g) + 1e-8)
    thr = torch.arange(0.5, 0.95 + 0.05 / 2, 0.05, dtype=torch.float32)
    return float((rel < (1 - thr)).float().mean().item())


def score_answer(
    question_type: str, prediction: str, ground_truth: str, *, rule: str = "lmms_eval", extract: bool = False
) -> float:
    """Score in [0, 1] of one VSI-Bench answer: accuracy for multiple choice, MRA for numbers.

    ``rule="lmms_eval"`` (default): the module docstring's rules; with ``extract=True`` the ``<answer>``
    content is scored instead of the whole text. ``rule="spatial_mllm"``: the Spatial-MLLM repository's
    ``vsi_reward`` (it always extracts). Never raises on model text; raises ``ValueError`` for an unknown
    question type or rule.
    """
    from spatial_mllm.data.formats import is_multiple_choice

    mc = is_multiple_choice(question_type)
    if not isinstance(prediction, str):
        prediction = ""
    ground_truth = str(ground_truth)
    if rule == "lmms_eval":
        text = extract_answer(prediction) if extract else prediction
        if mc:
            return mc_letter_match(text, ground_truth)
        pred = parse_number(text)
        gt = _to_float(ground_truth)
        if gt is None:
            raise ValueError(f"numeric ground truth {ground_truth!r} is not a number")
        return 0.0 if pred is None else mean_relative_accuracy(pred, gt)
    if rule == "spatial_mllm":
        pred_s, gt_s = _clean_spatial_mllm(prediction), _clean_spatial_mllm(ground_truth)
        if mc:
            return 1.0 if pred_s.strip() == gt_s.strip() else 0.0
        pred = _to_float(pred_s.replace(",", ""))
        gt = _to_float(gt_s.replace(",", ""))
        if pred is None or gt is None:
            return 0.0
        return _mra_spatial_mllm(pred, gt)
    raise ValueError(f"unknown scoring rule {rule!r}; expected 'lmms_eval' or 'spatial_mllm'")


# ---- ScanQA / SQA3D answer normalisation ----------------------------------------------------------------------
# LEO's clean_answer, in its order: whitespace, punctuation, typo fixes, numbers, articles.
_TYPOS = (
    ("letf", "left"), ("let", "left"), ("tehre", "there"), ("rigth", "right"), ("rght", "right"),
    ("behine", "behind"), ("tv", "TV"), ("chai", "chair"), ("wasing", "washing"), ("waslked", "walked"),
    ("oclock", "o'clock"),
)  # fmt: skip
_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)  # fmt: skip


def clean_answer(text: str) -> str:
    """LEO's ScanQA/SQA3D answer normalisation (embodied-generalist ``data/data_utils.py``), same steps in the
    same order. Note that it upper-cases ``tv`` to ``TV`` after lower-casing (kept: both sides get it)."""
    s = text.lower()
    s = re.sub(r"[ ]+$", "", s)
    s = re.sub(r"^[ ]+", "", s)
    s = re.sub(r" {2,}", " ", s)
    s = re.sub(r"\.[ ]{2,}", ". ", s)
    s = re.sub(r"[^a-zA-Z0-9,'\s\-:]+", "", s)
    s = s.replace("ç", "c").replace("’", "'")  # no-ops after the filter above, kept for the order
    for wrong, right in _TYPOS:
        s = re.sub(rf"\b{wrong}\b", right, s)
    s = re.sub(r"\bo'[ ]+clock\b", "o'clock", s)
    s = re.sub(r"\b0\b", "zero", s)
    s = re.sub(r"\bnone\b", "zero", s)
    for n, word in enumerate(_NUMBER_WORDS[1:], start=1):
        s = re.sub(rf"\b{n}\b", word, s)
    s = re.sub(r"\b23\b", "twenty-three", s)
    s = re.sub(r"\b([a-zA-Z]+)([0-9])\b", r"\g<1>", s)  # "no1", "mat2"
    for article in ("a", "an", "the"):
        s = re.sub(rf"\b{article}\b ([a-zA-Z]+)", r"\g<1>", s)
    return re.sub(r"\bbackwards\b", "backward", s)


def answer_match(pred: str, gts: Sequence[str]) -> tuple[int, int]:
    """``(EM, refined EM)`` of a cleaned prediction against cleaned answers (LLaVA-3D / Video-3D LLM)."""
    if pred in gts:
        return 1, 1
    p = "".join(pred.split())
    for gt in gts:
        g = "".join(gt.split())
        if p in g or g in p:
            return 0, 1
    return 0, 0


SQA3D_QUESTION_TYPES = ("what", "is", "how", "can", "which", "others")


def sqa3d_question_type(question: str) -> str:
    """SQA3D's question-type split (LEO ``get_sqa_question_type``): by the question's first word."""
    q = question.lstrip().lower()
    for name in ("what", "is", "how", "can", "which"):
        if q.startswith(name):
            return name
    return "others"


# ---- captioning metrics (pycocoevalcap 1.2 arithmetic) -------------------------------------------------------
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
_CLITIC_RE = re.compile(r"(?i)(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_PUNCT_RE = re.compile(r"(\.\.\.|--|[,;!?()\[\]{}\"])|(?<!\d)[.:](?!\d)|[.:]$")


def ptb_tokenize_approx(text: str) -> str:
    """Stand-in for pycocoevalcap's Stanford PTB tokenizer (``-preserveLines -lowerCase`` + punctuation
    removal) on short answers: lower-case, split clitics (``n't``, ``'s``, …) and punctuation off words,
    drop the punctuation tokens. Agrees with the Java tokenizer on text that went through
    :func:`clean_answer` (letters, digits, ``,'-:`` and spaces); it is not a full PTB tokenizer."""
    s = text.replace("\n", " ").lower()
    s = _CLITIC_RE.sub(r"\1 \2", s)
    s = _PUNCT_RE.sub(lambda m: f" {m.group(0)} ", s)
    s = re.sub(r"(?<=[a-z]):(?=\d)", " :", s)  # PTB: "ten:30" → "ten :30"
    toks = []
    for t in s.split():
        if t in PTB_PUNCTUATION:
            continue
        if len(t) > 1 and t[0] in "'-" and t not in ("'s", "'re", "'ve", "'ll", "'d", "'m"):
            t = t.lstrip("'-")
        if len(t) > 1 and t[-1] in "'-":
            t = t.rstrip("'-")
        if t and t not in PTB_PUNCTUATION:
            toks.append(t)
    return " ".join(toks)


def _ngrams(words: list[str], n: int) -> Counter:
    c: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            c[tuple(words[i : i + k])] += 1
    return c


def bleu(refs: Mapping, hyps: Mapping, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """pycocoevalcap ``Bleu(n)``: corpus BLEU-1..n with the "closest" reference length, plus per-item scores.

    ``refs``/``hyps``: key → list of tokenised strings (exactly one hypothesis per key)."""
    tiny, small = 1e-15, 1e-9
    keys = _check_keys(refs, hyps)
    tot_guess, tot_correct = [0] * n, [0] * n
    tot_test = tot_ref = 0
    per_item: list[list[float]] = [[] for _ in range(n)]
    for k in keys:
        hyp = hyps[k][0].split()
        max_ref: dict = {}
        ref_lens = []
        for r in refs[k]:
            w = r.split()
            ref_lens.append(len(w))
            for g, c in _ngrams(w, n).items():
                max_ref[g] = max(max_ref.get(g, 0), c)
        testlen = len(hyp)
        reflen = min((abs(rl - testlen), rl) for rl in ref_lens)[1]
        guess = [max(0, testlen - j + 1) for j in range(1, n + 1)]
        correct = [0] * n
        for g, c in _ngrams(hyp, n).items():
            correct[len(g) - 1] += min(max_ref.get(g, 0), c)
        tot_test += testlen
        tot_ref += reflen
        prod = 1.0
        for j in range(n):
            tot_guess[j] += guess[j]
            tot_correct[j] += correct[j]
            prod *= (correct[j] + tiny) / (guess[j] + small)
            per_item[j].append(prod ** (1.0 / (j + 1)))
        ratio = (testlen + tiny) / (reflen + small)
        if ratio < 1:
            for j in range(n):
                per_item[j][-1] *= math.exp(1 - 1 / ratio)
    scores, prod = [], 1.0
    for j in range(n):
        prod *= (tot_correct[j] + tiny) / (tot_guess[j] + small)
        scores.append(prod ** (1.0 / (j + 1)))
    ratio = (tot_test + tiny) / (tot_ref + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores, per_item


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(refs: Mapping, hyps: Mapping, beta: float = 1.2) -> tuple[float, np.ndarray]:
    """pycocoevalcap ``Rouge``: per item, F_β of the best LCS precision and best LCS recall over the
    references (tokens from ``split(" ")``); the mean over items."""
    keys = _check_keys(refs, hyps)
    out = []
    for k in keys:
        cand = hyps[k][0].split(" ")
        prec, rec = [], []
        for r in refs[k]:
            ref = r.split(" ")
            lcs = _lcs(ref, cand)
            prec.append(lcs / len(cand))
            rec.append(lcs / len(ref))
        p, r_ = max(prec), max(rec)
        out.append((1 + beta**2) * p * r_ / (r_ + beta**2 * p) if p != 0 and r_ != 0 else 0.0)
    arr = np.array(out)
    return float(arr.mean()), arr


def cider_d(refs: Mapping, hyps: Mapping, n: int = 4, sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """pycocoevalcap ``Cider`` (CIDEr-D): tf-idf n-gram cosine similarity (n = 1..4, clipped by the
    reference weights), Gaussian length penalty σ = 6, mean over n-gram orders and references, ×10.
    Document frequencies come from the evaluated items' references, so scores depend on the whole set."""
    keys = _check_keys(refs, hyps)
    crefs = [[_ngrams(r.split(), n) for r in refs[k]] for k in keys]
    ctest = [_ngrams(hyps[k][0].split(), n) for k in keys]
    df: dict = defaultdict(float)
    for rs in crefs:
        for g in {g for r in rs for g in r}:
            df[g] += 1
    log_n = np.log(float(len(crefs)))

    def vec(cnts):
        v = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in cnts.items():
            o = len(g) - 1
            v[o][g] = float(tf) * (log_n - np.log(max(1.0, df[g])))
            norm[o] += v[o][g] ** 2
            if o == 1:  # pycocoevalcap counts bigrams as the "length" (a known quirk, kept)
                length += tf
        return v, [np.sqrt(x) for x in norm], length

    scores = []
    for test, rs in zip(ctest, crefs):
        vh, nh, lh = vec(test)
        acc = np.zeros(n)
        for r in rs:
            vr, nr, lr = vec(r)
            val = np.zeros(n)
            for o in range(n):
                for g in vh[o]:
                    val[o] += min(vh[o][g], vr[o][g]) * vr[o][g]
                if nh[o] != 0 and nr[o] != 0:
                    val[o] /= nh[o] * nr[o]
                val[o] *= np.e ** (-(float(lh - lr) ** 2) / (2 * sigma**2))
            acc += val
        scores.append(float(np.mean(acc)) / len(rs) * 10.0)
    arr = np.array(scores)
    return float(arr.mean()), arr


def _check_keys(refs: Mapping, hyps: Mapping) -> list:
    if set(refs) != set(hyps):
        raise ValueError("references and hypotheses must have the same keys")
    for k in refs:
        if len(hyps[k]) != 1 or len(refs[k]) < 1:
            raise ValueError(f"item {k!r}: need exactly one hypothesis and at least one reference")
    return list(refs)


def official_scorer_available() -> bool:
    """True when ``pycocoevalcap`` imports and ``java`` is on ``PATH``."""
    import importlib.util

    return importlib.util.find_spec("pycocoevalcap") is not None and shutil.which("java") is not None


class CaptionScorer:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr of cleaned predictions against cleaned answers.

    ``backend``: ``"auto"`` (official when :func:`official_scorer_available`, else builtin), ``"official"``
    (pycocoevalcap's PTB tokenizer + scorers; raises if unavailable) or ``"builtin"`` (this module's
    BLEU/ROUGE-L/CIDEr on :func:`ptb_tokenize_approx`, METEOR ``None``). ``meteor=False`` skips METEOR
    (its JVM takes seconds to start).
    """

    def __init__(self, backend: str = "auto", meteor: bool = True):
        if backend not in ("auto", "official", "builtin"):
            raise ValueError(f"backend must be 'auto', 'official' or 'builtin', got {backend!r}")
        if backend == "official" and not official_scorer_available():
            raise RuntimeError("backend='official' needs `pip install pycocoevalcap` and a Java runtime on PATH")
        self.backend = "official" if backend == "auto" and official_scorer_available() else backend
        self.backend = "builtin" if self.backend == "auto" else self.backend
        self.meteor = meteor

    def __call__(self, refs: Mapping[str, list[str]], hyps: Mapping[str, str]) -> dict[str, float | None]:
        """``refs``: key → answers, ``hyps``: key → prediction (both already cleaned). Returns fractions in
        [0, 1] (CIDEr in [0, 10]) under ``BLEU-1..4``, ``METEOR``, ``ROUGE-L``, ``CIDEr``."""
        keys = list(refs)
        if self.backend == "official":
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

            tok = PTBTokenizer()
            r = tok.tokenize({i: [{"caption": a} for a in refs[k]] for i, k in enumerate(keys)})
            h = tok.tokenize({i: [{"caption": hyps[k]}] for i, k in enumerate(keys)})
        else:
            r = {i: [ptb_tokenize_approx(a) for a in refs[k]] for i, k in enumerate(keys)}
            h = {i: [ptb_tokenize_approx(hyps[k])] for i, k in enumerate(keys)}
        return self.score_tokenized(r, h)

    def score_tokenized(self, r: Mapping, h: Mapping) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        if self.backend == "official":
            from pycocoevalcap.bleu.bleu import Bleu
            from pycocoevalcap.cider.cider import Cider
            from pycocoevalcap.rouge.rouge import Rouge

            b = Bleu(4).compute_score(r, h, verbose=0)[0]
            out.update({f"BLEU-{i + 1}": float(b[i]) for i in range(4)})
            out["ROUGE-L"] = float(Rouge().compute_score(r, h)[0])
            out["CIDEr"] = float(Cider().compute_score(r, h)[0])
            if self.meteor:
                from pycocoevalcap.meteor.meteor import Meteor

                m = Meteor()  # one JVM; its __del__ closes the pipe
                out["METEOR"] = float(m.compute_score(r, h)[0])
                del m
            else:
                out["METEOR"] = None
        else:
            b = bleu(r, h)[0]
            out.update({f"BLEU-{i + 1}": b[i] for i in range(4)})
            out["ROUGE-L"] = rouge_l(r, h)[0]
            out["CIDEr"] = cider_d(r, h)[0]
            out["METEOR"] = None
        return out
