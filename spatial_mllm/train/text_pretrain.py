"""Text pretraining of a tiny LLM: counting and lookup over the words of its context, before it sees video.

Why: the mini study's LLM (4 layers × 128, random init) is asked to count objects in its visual tokens, but a
random-init LLM of that size needs ~6000 dedicated steps before it starts to count anything in its context
(``benchmarks/bench_llm_lookup.py --task count``), far more than the grounding stage's share of counting rows.
The paper starts from Qwen2.5-VL, whose LLM counts and looks things up from pretraining; this stage gives the tiny
LLM that skill on text alone, so that the later stages only have to teach it where the objects are.

The task (:func:`counting_text_examples`): a context of ``slots`` words, all the filler word ``"room"`` except
``filled`` random slots that hold category names (``spatial_mllm.data.synthetic.CATALOG``); then, with probability
``count_share``, "How many <cat>(s) are there?" with 1..``max_count`` slots of the asked category (answer: the
count), else "Is there a <cat>? Answer yes or no." (answer: yes / no, half each; a present category fills one
slot). The prompt is the model's chat template around the user text (no video), ending in the generation
prompt; the loss is the cross entropy of the answer's first token at the last position (every answer begins with
a different token: counts 1-9 are single tokens of the tiny tokenizer, yes / no differ in their first; checked). Only the LLM (embeddings, layers, final norm) and ``lm_head`` train; the
ViT and its merger are untouched (tested). Held-out accuracy per kind on a fixed set (drawn with ``seed + 1``)
goes to ``run.json``, with chance (1 / ``max_count``, 0.5), always on the full-length task.

A curriculum (``short_steps`` > 0): the first ``short_steps`` steps ask the same questions over contexts of
``short_slots`` words (``short_filled`` of them categories), the rest over ``slots``. Measured (2026-12-02, the mini
preset's LLM, lr 1e-3, batch 16, 1 thread with both cores busy; held-out 48-word questions): straight on 48 words the
LLM counts at chance for ~9000 steps and reaches 0.37 (lookup 0.59) after 12000 steps (47.5 min); 3000 steps on 12
words then 1500 on 48 reached **count 0.68, lookup 0.89** (13 min) in a throw-away run, and the stage itself with
3000 + 2000 steps 0.53 / 0.74 (17 min; the same schedule and seeds, yet a different trajectory — not investigated).
On 12 words alone counting is learnt in ~3000 steps (0.58) but does not carry to 48 words (0.23) until the long
contexts follow.

Not in the paper (its LLM is Qwen2.5-VL's, pretrained at scale): a stand-in for the language pretraining a tiny
LLM lacks, stated as such in the mini study's docstring and the README.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from spatial_mllm.config import StageConfig

__all__ = ["TextPretrainConfig", "counting_text_examples", "pretrain_llm_text", "TEXT_POSTFIX"]

TEXT_POSTFIX = "Please answer the question using a single word or phrase."


@dataclass
class TextPretrainConfig(StageConfig):
    """Settings of :func:`pretrain_llm_text` (``steps`` = 0: the stage is off)."""

    steps: int = field(default=0, metadata={"help": "optimizer steps (0 = no text pretraining)"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW lr, constant (weight decay 0.1 on every LLM tensor)"})
    batch_size: int = field(default=16, metadata={"help": "examples per step"})
    count_share: float = field(default=0.7, metadata={"help": "share of counting questions (the rest: lookup)"})
    slots: int = field(default=48, metadata={"help": "words in the context"})
    filled: int = field(default=12, metadata={"help": "context slots holding a category name (the rest: 'room')"})
    max_count: int = field(default=6, metadata={"help": "counting answers are 1..max_count"})
    eval_size: int = field(default=256, metadata={"help": "held-out examples (drawn with seed + 1)"})
    log_every: int = field(default=1000, metadata={"help": "held-out accuracy every N steps"})
    seed: int = field(default=0, metadata={"help": "seed of the examples and of torch"})
    short_steps: int = field(default=0, metadata={
        "help": "curriculum: the first short_steps of the steps use contexts of short_slots words (0 = none)"})
    short_slots: int = field(default=12, metadata={"help": "words in the context during the first short_steps"})
    short_filled: int = field(default=8, metadata={"help": "category words in those short contexts"})

    def __post_init__(self):
        if self.steps < 0 or self.lr <= 0 or self.batch_size < 1 or self.eval_size < 1 or self.log_every < 1:
            raise ValueError("need steps >= 0, lr > 0, batch_size >= 1, eval_size >= 1, log_every >= 1")
        if not 0 <= self.count_share <= 1:
            raise ValueError(f"count_share {self.count_share} must be in [0, 1]")
        if not 1 <= self.max_count <= min(9, self.filled) or self.filled > self.slots:
            raise ValueError(f"need 1 <= max_count ({self.max_count}) <= min(9, filled ({self.filled})) and "
                             f"filled <= slots ({self.slots}); answers are single digits")
        if not 0 <= self.short_steps <= self.steps:  # steps >= 0 checked above
            raise ValueError(f"short_steps {self.short_steps} must be in [0, steps ({self.steps})]")
        if self.short_steps and not self.max_count <= self.short_filled <= self.short_slots:
            raise ValueError(f"need max_count ({self.max_count}) <= short_filled ({self.short_filled}) <= "
                             f"short_slots ({self.short_slots}) for the curriculum's short contexts")

    def short_config(self) -> TextPretrainConfig:
        """The settings of the curriculum's first ``short_steps`` steps: the same task over ``short_slots`` words
        with ``short_filled`` category words (no curriculum of its own)."""
        return dataclasses.replace(self, slots=self.short_slots, filled=self.short_filled, short_steps=0)


def counting_text_examples(rng: random.Random, n: int, categories: list[str], cfg: TextPretrainConfig) -> list[dict]:
    """``n`` examples ``{"text", "answer", "kind", "category"}`` (kind ``count`` or ``lookup``): ``text`` is the
    context line, the question and :data:`TEXT_POSTFIX` on three lines; the asked category fills exactly
    ``answer`` slots (count) or one / no slot (lookup yes / no); the other filled slots hold 1-5 other categories."""
    if len(categories) < 2:
        raise ValueError(f"need at least two categories, got {categories}")
    out = []
    for _ in range(n):
        asked, *others = rng.sample(categories, rng.randint(2, min(6, len(categories))))
        slots = ["room"] * cfg.slots
        pos = rng.sample(range(cfg.slots), cfg.filled)
        if rng.random() < cfg.count_share:
            k = rng.randint(1, cfg.max_count)
            for j, p in enumerate(pos):
                slots[p] = asked if j < k else rng.choice(others)
            question, answer, kind = f"How many {asked}(s) are there?", str(k), "count"
        else:
            present = rng.random() < 0.5
            for j, p in enumerate(pos):
                slots[p] = asked if (present and j == 0) else rng.choice(others)
            question, answer, kind = f"Is there a {asked}? Answer yes or no.", "yes" if present else "no", "lookup"
        out.append({"text": " ".join(slots) + "\n" + question + "\n" + TEXT_POSTFIX, "answer": answer, "kind": kind,
                    "category": asked})
    return out


def _encode(tokenizer, examples: list[dict]):
    """Left-padded prompt ids [n, L], attention mask [n, L] and the answers' first token ids [n]."""
    import torch

    rows = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": e["text"]}],
                                                    add_generation_prompt=True, tokenize=False),
                      add_special_tokens=False)["input_ids"] for e in examples]
    answers = [tokenizer(e["answer"], add_special_tokens=False)["input_ids"][0] for e in examples]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])  # [n, L]
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])  # [n, L]
    return ids, mask, torch.tensor(answers)


def _last_logits(model, ids, mask):
    """Next-token logits at the last position [n, vocab] (text only: the LLM and lm_head)."""
    hidden = model.model.language_model(input_ids=ids, attention_mask=mask).last_hidden_state  # [n, L, d]
    return model.lm_head(hidden[:, -1])


def _accuracy(model, tokenizer, examples: list[dict], batch_size: int = 128) -> dict[str, float]:
    import torch

    hits: dict[str, list[bool]] = {}
    with torch.no_grad():
        for k in range(0, len(examples), batch_size):
            chunk = examples[k:k + batch_size]
            ids, mask, y = _encode(tokenizer, chunk)
            for e, ok in zip(chunk, (_last_logits(model, ids, mask).argmax(-1) == y).tolist()):
                hits.setdefault(e["kind"], []).append(ok)
    return {kind: sum(v) / len(v) for kind, v in sorted(hits.items())}


def pretrain_llm_text(src: str | Path, dst: str | Path, cfg: TextPretrainConfig, log=None) -> dict:
    """Train the LLM and ``lm_head`` of the Qwen2.5-VL checkpoint ``src`` for ``cfg.steps`` steps on
    :func:`counting_text_examples` and save it (with ``src``'s tokenizer and processor files) to ``dst``, with
    ``run.json`` = ``{"params", "metrics": {"before", "after", "chance", "curve"}, "train_s"}`` (held-out accuracy
    per kind). Returns that record. ``log``: a callable for progress lines, or None."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from spatial_mllm.data.synthetic import CATALOG

    src, dst = Path(src), Path(dst)
    if cfg.steps < 1:
        raise ValueError(f"text pretraining of {src}: steps = {cfg.steps}, nothing to do")
    torch.manual_seed(cfg.seed)
    rng, held_rng = random.Random(cfg.seed), random.Random(cfg.seed + 1)
    categories = list(CATALOG)
    tokenizer = AutoTokenizer.from_pretrained(src)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(src, dtype=torch.float32)
    held = counting_text_examples(held_rng, cfg.eval_size, categories, cfg)
    answers = [str(k) for k in range(1, cfg.max_count + 1)] + ["yes", "no"]
    firsts = [tokenizer(a, add_special_tokens=False)["input_ids"][0] for a in answers]
    if len(set(firsts)) != len(answers):
        raise ValueError(f"{src}: the answers {answers} do not all begin with different tokens ({firsts}); the "
                         "stage supervises the answer's first token")
    model.eval()
    before = _accuracy(model, tokenizer, held)
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith(("model.language_model.", "lm_head.")))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.1)
    curve, t0 = [], time.perf_counter()
    short = cfg.short_config() if cfg.short_steps else cfg
    model.train()
    for step in range(1, cfg.steps + 1):
        task = short if step <= cfg.short_steps else cfg  # the curriculum's short contexts first
        ids, mask, y = _encode(tokenizer, counting_text_examples(rng, cfg.batch_size, categories, task))
        loss = F.cross_entropy(_last_logits(model, ids, mask), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            model.eval()
            acc = _accuracy(model, tokenizer, held)
            model.train()
            curve.append({"step": step, "slots": task.slots, "loss": round(loss.item(), 4), **acc})
            if log:
                log(f"text pretraining step {step}/{cfg.steps}: loss {loss.item():.3f}, held-out "
                    + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()) + f" ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    for f in src.iterdir():  # tokenizer, chat template, processor; not the weights, config or src's records
        if f.is_file() and f.suffix != ".safetensors" and f.name not in ("config.json", "generation_config.json",
                                                                           "run.json"):
            shutil.copy(f, dst / f.name)
    record = {"params": cfg.to_dict(), "source": str(src), "train_s": round(time.perf_counter() - t0, 1),
              "metrics": {"before": before, "after": curve[-1], "curve": curve,
                          "chance": {"count": 1 / cfg.max_count, "lookup": 0.5}}}
    (dst / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    return record
