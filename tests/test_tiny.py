"""Tiny preset: offline tokenizer with Qwen's special tokens and chat template; `ask` and its CLI parser."""

import argparse

import numpy as np
import pytest
import torch

from spatial_mllm.data.render import write_mp4
from spatial_mllm.models.ask import add_ask_subparser, answer_batch, ask, space_aware_indices
from spatial_mllm.models.tiny import (
    QWEN_SPECIAL_TOKENS,
    tiny_config,
    tiny_model,
    tiny_processor,
)
from spatial_mllm.models.vggt import VGGT, VGGTConfig


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "room.mp4"
    frames = (np.random.default_rng(0).random((10, 56, 84, 3)) * 255).astype(np.uint8)
    return write_mp4(path, frames, fps=5.0)


def test_tokenizer_special_tokens_and_chat_template(tok):
    ids = [tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS]
    assert len(set(ids)) == len(QWEN_SPECIAL_TOKENS) and min(ids) >= 512
    text = tok.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Hi?"}]}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|video_pad|><|vision_end|>Hi?<|im_end|>\n<|im_start|>assistant\n")
    enc = tok(text)["input_ids"]
    assert enc.count(tok.convert_tokens_to_ids("<|video_pad|>")) == 1
    assert tok.decode(tok("How many chairs? 3.5 m")["input_ids"]) == "How many chairs? 3.5 m"
    cfg = tiny_config(tok)
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.text_config.vocab_size == len(tok)


def test_tokenizer_words_become_whole_tokens(tok):
    """``words`` make each category one token after a space (a two-word name one per word); the default
    tokenizer is unchanged, and the vocabulary size stays."""
    from spatial_mllm.data.synthetic import CATALOG
    from spatial_mllm.models.tiny import tiny_tokenizer

    assert tok.tokenize(" stool") == ["Ġs", "t", "o", "o", "l"]  # the historical tokenizer (default words=())
    wtok = tiny_tokenizer(words=CATALOG)
    assert len(wtok) == len(tok)
    for name in CATALOG:
        assert wtok.tokenize(" " + name) == ["Ġ" + w for w in name.split()], name
    q = "How many stools are in this room? Is there a trash bin in this video?"
    assert wtok.decode(wtok(q)["input_ids"]) == q


def test_ask_and_batch_helper(tok, mp4):
    model, proc = tiny_model(tok), tiny_processor(tok)
    a = ask((model, proc), mp4, "How many chairs?", frames=4, max_new_tokens=5)
    assert isinstance(a, str)
    answers = answer_batch(model, proc, [mp4, mp4], ["How many chairs?", "How big is the room?"], max_new_tokens=5)
    assert answers[0] == a and len(answers) == 2


def test_space_aware_sampling_with_a_point_head(tok, mp4):
    torch.manual_seed(0)
    vggt = VGGT(VGGTConfig.tiny(enable_camera=False, enable_depth=False)).eval()
    idx = space_aware_indices(mp4, 4, vggt=vggt, candidates=8)
    assert len(idx) == 4 and idx == sorted(idx) and len(set(idx)) == 4 and max(idx) < 10
    model, proc = tiny_model(tok), tiny_processor(tok)
    assert isinstance(ask((model, proc), mp4, "q", frames=4, sampling="space-aware", vggt=vggt, candidates=8,
                          max_new_tokens=2), str)
    with pytest.raises(ValueError, match="point head"):
        ask((model, proc), mp4, "q", frames=4, sampling="space-aware")


def test_cli_parser(mp4, capsys):
    parser = argparse.ArgumentParser(prog="spatial-mllm")
    add_ask_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ask", "--model", "tiny", "--video", str(mp4), "--frames", "4",
                              "--max-new-tokens", "3", "How many chairs?"])
    assert args.sampling == "uniform" and args.frames == 4
    assert args.func(args) == 0
    assert capsys.readouterr().out.endswith("\n")  # the answer was printed (a random model may say little)


def test_width_scaled_llm_init(tok):
    """llm_init='width_scaled': embeddings N(0, 1), LLM matrices and lm_head N(0, 1/fan_in), biases/norms as
    Qwen's init; the ViT and connector are the 'qwen' model's (same seed), and the init is seeded."""
    text = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2}
    q = tiny_model(tok, seed=3, text_overrides=text)
    w = tiny_model(tok, seed=3, llm_init="width_scaled", text_overrides=text)
    lm = w.model.language_model
    assert abs(float(lm.embed_tokens.weight.std()) - 1.0) < 0.05
    for name, fan_in in (("self_attn.q_proj", 128), ("mlp.down_proj", 256)):
        std = float(lm.layers[0].get_submodule(name).weight.std())
        assert abs(std * fan_in ** 0.5 - 1.0) < 0.1, (name, std)
    assert abs(float(w.lm_head.weight.std()) * 128 ** 0.5 - 1.0) < 0.1
    assert float(q.lm_head.weight.std()) < 0.03  # Qwen's initializer_range 0.02
    assert torch.equal(lm.layers[0].self_attn.q_proj.bias, torch.zeros(128))
    assert torch.equal(lm.norm.weight, torch.ones(128))
    for part in ("model.visual", "connector", "spatial_encoder"):
        a, b = q.get_submodule(part).state_dict(), w.get_submodule(part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    again = tiny_model(tok, seed=3, llm_init="width_scaled", text_overrides=text)
    assert torch.equal(again.lm_head.weight, w.lm_head.weight)
    assert not torch.equal(tiny_model(tok, seed=4, llm_init="width_scaled", text_overrides=text).lm_head.weight,
                           w.lm_head.weight)
    with pytest.raises(ValueError, match="llm_init"):
        tiny_model(tok, llm_init="xavier")
