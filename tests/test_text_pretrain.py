"""Text pretraining of the tiny LLM (counting / lookup in its context): the task's answers, what trains, the record."""

import json
import random
import re

import pytest
import torch

from spatial_mllm.data.synthetic import CATALOG
from spatial_mllm.train.text_pretrain import (
    TEXT_POSTFIX,
    TextPretrainConfig,
    counting_text_examples,
    pretrain_llm_text,
)


def _count(context: str, category: str) -> int:
    return len(re.findall(rf"(?<![a-z]){re.escape(category)}(?![a-z])", context))


def test_counting_text_answers_are_the_contexts_counts():
    cfg = TextPretrainConfig(slots=30, filled=10, max_count=5, count_share=0.6)
    cats = list(CATALOG)
    ex = counting_text_examples(random.Random(3), 2000, cats, cfg)
    assert ex == counting_text_examples(random.Random(3), 2000, cats, cfg)  # seeded
    assert ex != counting_text_examples(random.Random(4), 2000, cats, cfg)
    counts, looks = [e for e in ex if e["kind"] == "count"], [e for e in ex if e["kind"] == "lookup"]
    assert 0.55 < len(counts) / len(ex) < 0.65
    for e in ex:
        context, question, post = e["text"].split("\n")
        assert post == TEXT_POSTFIX and e["category"] in question
        assert context.split(" ").count("room") == cfg.slots - cfg.filled
        # every filled slot is a category: their counts add up to the filled slots
        assert sum(_count(context, c) for c in cats) == cfg.filled
        n = _count(context, e["category"])
        if e["kind"] == "count":
            assert question == f"How many {e['category']}(s) are there?" and e["answer"] == str(n)
        else:
            assert e["answer"] == ("yes" if n else "no") and n in (0, 1)
    assert {e["answer"] for e in counts} == {str(k) for k in range(1, 6)}
    assert 0.4 < sum(e["answer"] == "yes" for e in looks) / len(looks) < 0.6
    with pytest.raises(ValueError, match="max_count"):
        TextPretrainConfig(max_count=10, filled=12)
    with pytest.raises(ValueError, match="two categories"):
        counting_text_examples(random.Random(0), 1, ["chair"], cfg)


def test_text_pretraining_trains_the_llm_only_and_records_held_out_accuracy(tmp_path, tok):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from spatial_mllm.models.tiny import tiny_model
    from spatial_mllm.train.pretrain import save_qwen_part

    torch.set_num_threads(1)
    src = save_qwen_part(tiny_model(tok, seed=0, text_overrides={"num_hidden_layers": 1}), tmp_path / "src", tok)
    cfg = TextPretrainConfig(steps=3, batch_size=4, eval_size=16, log_every=2, lr=1e-2)
    rec = pretrain_llm_text(src, tmp_path / "dst", cfg, log=None)
    on_disk = json.loads((tmp_path / "dst" / "run.json").read_text())
    assert on_disk == rec and rec["params"] == cfg.to_dict()
    m = rec["metrics"]
    assert [c["step"] for c in m["curve"]] == [2, 3] and m["after"] == m["curve"][-1]
    assert m["chance"] == {"count": 1 / 6, "lookup": 0.5}
    assert set(m["before"]) == {"count", "lookup"} and all(0 <= v <= 1 for v in m["before"].values())
    a = Qwen2_5_VLForConditionalGeneration.from_pretrained(src).state_dict()
    b = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "dst").state_dict()
    assert a.keys() == b.keys()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith(("model.language_model.", "lm_head.")) for k in changed)
    assert not any(k.startswith("model.visual.") for k in changed)  # the ViT and its merger stay as they were
    assert {f.name for f in src.iterdir()} - {"model.safetensors"} <= {f.name for f in (tmp_path / "dst").iterdir()}
    # the same settings give the same weights (seeded examples and init)
    pretrain_llm_text(src, tmp_path / "again", cfg)
    c = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "again").state_dict()
    assert all(torch.equal(b[k], c[k]) for k in b)
    with pytest.raises(ValueError, match="steps = 0"):
        pretrain_llm_text(src, tmp_path / "none", TextPretrainConfig())


def test_a_curriculum_asks_the_same_questions_over_short_contexts_first(tmp_path, tok):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from spatial_mllm.models.tiny import tiny_model
    from spatial_mllm.train.pretrain import save_qwen_part

    cfg = TextPretrainConfig(steps=4, short_steps=2, short_slots=9, short_filled=7, max_count=6)
    short = cfg.short_config()
    assert (short.slots, short.filled, short.short_steps) == (9, 7, 0)
    assert {**short.to_dict(), "slots": 48, "filled": 12, "short_steps": 2} == cfg.to_dict()  # nothing else moves
    for e in counting_text_examples(random.Random(0), 200, list(CATALOG), short):
        context = e["text"].split("\n")[0]
        assert context.split(" ").count("room") == 2 and sum(_count(context, c) for c in CATALOG) == 7
    with pytest.raises(ValueError, match="short_steps"):
        TextPretrainConfig(steps=2, short_steps=3)
    with pytest.raises(ValueError, match="short_filled"):
        TextPretrainConfig(steps=4, short_steps=2, short_filled=5)  # fewer category words than max_count (6)
    # training: the curve says which contexts each logged step saw; the curriculum changes the weights
    torch.set_num_threads(1)
    src = save_qwen_part(tiny_model(tok, seed=0, text_overrides={"num_hidden_layers": 1}), tmp_path / "src", tok)
    run = dict(steps=4, batch_size=4, eval_size=16, log_every=1, lr=1e-2)
    rec = pretrain_llm_text(src, tmp_path / "cur", TextPretrainConfig(**run, short_steps=2, short_slots=9,
                                                                       short_filled=7))
    assert [c["slots"] for c in rec["metrics"]["curve"]] == [9, 9, 48, 48]
    pretrain_llm_text(src, tmp_path / "flat", TextPretrainConfig(**run))
    a = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "cur").state_dict()
    b = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "flat").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
