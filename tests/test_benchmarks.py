"""The benchmark scripts' task generators say what they claim (the benchmarks' numbers rest on them)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_count_task_answers_the_number_of_the_asked_categorys_tokens():
    from spatial_mllm.data.synthetic import CATALOG
    from spatial_mllm.models.tiny import tiny_tokenizer

    bench = _load("bench_llm_lookup")
    tok = tiny_tokenizer(words=CATALOG)
    filler = tok(" room", add_special_tokens=False)["input_ids"][-1]
    digit = {tok(f" {k}", add_special_tokens=False)["input_ids"][0]: k for k in range(1, 7)}
    for sink in (False, True):
        ids, mask, y = bench.count_batch(tok, random.Random(0), 64, sink=sink)
        assert ids.shape == (64, 1 + 48 + 7 if sink else 48 + 7) and bool(mask.all())
        counts = []
        for row, ans in zip(ids.tolist(), y.tolist()):
            asked = row[-2]  # " How many <category>?": the category's token before "?"
            context = row[1:49] if sink else row[:48]
            assert asked in context and digit[ans] == context.count(asked)
            assert sum(t != filler for t in context) == 12  # 12 category tokens among filler
            counts.append(digit[ans])
        assert set(counts) == set(range(1, 7))  # every count 1-6 is asked
        if sink:
            assert (ids[:, 0] == tok.convert_tokens_to_ids("<|im_start|>")).all()
    assert torch.equal(bench.TASKS["count"](tok, random.Random(3), 4)[2], bench.count_batch(tok, random.Random(3), 4)[2])
