"""Rollout plumbing shared by GRPO and the cold start: rows, the policy, prompt encoding, and sampling G
completions per prompt (:func:`generate_completions` → :class:`Rollout`).

Both :mod:`spatial_mllm.train.grpo` (the policy's rollouts) and :mod:`spatial_mllm.train.cold_start` (the
teacher's samples) import it; it imports neither, so the two trainers do not import each other. The algorithm
(rewards, advantages, loss, the trainer) is in :mod:`spatial_mllm.train.grpo`, whose docstring numbers the
departures from the paper that concern sampling (7, 9, 10).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from spatial_mllm.config import resolve_path
from spatial_mllm.data import formats

__all__ = ["Rollout", "SampledLogProbs", "attach_trunks", "collate_visual", "encode_prompts", "generate_completions",
           "load_policy", "load_rows", "suppressed_ids", "toy_rows"]


def _body_from_conversation(value: str, question_type: str) -> str:
    text = value.removeprefix("<video>\n").removeprefix("<video>")
    for post in (formats.SFT_MCA_POST, formats.SFT_NA_POST):
        text = text.removesuffix("\n" + post)
    return text.removeprefix(formats.LMMS_EVAL_PRE + "\n")


def _think_prompt(body: str, question_type: str, options) -> str:
    mc = question_type in formats.MCA_TYPES or (question_type not in formats.NA_TYPES and bool(options))
    return (formats.R1_QUESTION_TEMPLATE.format(Question=body)
            + formats.R1_TYPE_TEMPLATE["multiple choice" if mc else "numerical"])


def load_rows(path: str | os.PathLike, video_root: str | os.PathLike | None = None,
              limit: int | None = None) -> list[dict]:
    """GRPO rows ``{prompt, video, question_type, ground_truth, options}`` from a jsonl file.

    Accepts training conversations (``<split>_sft.jsonl``: the question is taken from the human turn and
    put in the reasoning prompt, Video-R1's template), QA rows (``qa_rows.jsonl``: ``question`` +
    ``scene_name``; synthetic videos at ``synthetic/<scene>/video.mp4``) and rows that already have a
    ``prompt``. Video paths are made absolute against ``video_root`` (default: the file's folder).
    """
    path = resolve_path(path)
    root = resolve_path(video_root) if video_root is not None else path.parent
    out = []
    for r in formats.read_jsonl(path):
        qt, options = r.get("question_type"), r.get("options")
        if "prompt" in r:
            prompt = r["prompt"]
        elif "conversations" in r:
            prompt = _think_prompt(_body_from_conversation(r["conversations"][0]["value"], qt), qt, options)
        elif "question" in r:
            body = r["question"] + ("\nOptions:\n" + "\n".join(options) if options else "")
            prompt = _think_prompt(body, qt, options)
        else:
            raise ValueError(f"{path}: a row has none of prompt / conversations / question: {sorted(r)}")
        video = r.get("video")
        if video is None and r.get("dataset") == "synthetic" and "scene_name" in r:
            video = f"synthetic/{r['scene_name']}/video.mp4"
        if video is not None and not os.path.isabs(video):
            video = str(root / video)
        out.append({"prompt": prompt, "video": video, "question_type": qt,
                    "ground_truth": str(r["ground_truth"]), "options": options})
        if limit is not None and len(out) >= limit:
            break
    return out


def toy_rows(n: int = 8) -> list[dict]:
    """The verifiable toy task: text-only prompts asking for digits; reward ``digit_fraction``."""
    return [{"prompt": f"Write digits only. Task {i}:", "video": None, "question_type": "toy_digits",
             "ground_truth": "0", "options": None} for i in range(n)]


def load_policy(cfg, source: str | None = None):
    """``(model, processor, source)``: ``source`` (default ``cfg.model``) resolved — ``auto`` picks notebook
    03's SFT checkpoint when present, else a fresh tiny model (and says so)."""
    from spatial_mllm.models.processing import SpatialMLLMProcessor
    from spatial_mllm.models.tiny import tiny_model, tiny_tokenizer

    pix = dict(num_frames=cfg.num_frames, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
               pixel_preset=cfg.pixel_preset, second_per_grid_t=cfg.second_per_grid_t)
    source = source or cfg.model
    if source == "auto":
        sft = resolve_path(cfg.output_dir) / "checkpoints" / "sft"
        found = sft if (sft / "config.json").is_file() else None
        if found is None and sft.is_dir():  # a trainer may save into a sub-folder (final/, checkpoint-N/)
            cands = sorted(p.parent for p in sft.glob("*/config.json"))
            found = cands[-1] if cands else None
        if found is None:
            print(f"[grpo] no SFT checkpoint under {sft}: starting from a freshly built tiny model")
            source = "tiny"
        else:
            source = str(found)
    if source == "tiny":
        tok = tiny_tokenizer()
        return tiny_model(tok, seed=cfg.seed), SpatialMLLMProcessor.build(tok, **pix), "tiny"
    from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration

    dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else None
    model = SpatialMLLMForConditionalGeneration.from_pretrained(source, dtype=dtype)
    try:
        proc = SpatialMLLMProcessor.from_pretrained(source, **pix)
    except (OSError, ValueError, TypeError) as e:
        if model.config.text_config.vocab_size != len(tiny_tokenizer()):
            raise
        print(f"[grpo] {source} has no processor files ({type(e).__name__}); using the tiny processor")
        proc = SpatialMLLMProcessor.build(tiny_tokenizer(), **pix)
    return model, proc, str(source)


_VISUAL = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def encode_prompts(processor, rows: list[dict]) -> tuple[dict, list[dict | None]]:
    """Tokenise the rows' chat prompts (left padding) and split the video inputs per row.

    Returns ``({"input_ids", "attention_mask"}, [per-row visual dict or None])``.
    """
    texts = [processor.build_prompt(r["prompt"], num_videos=1 if r["video"] else 0) for r in rows]
    videos = [r["video"] for r in rows if r["video"]]
    batch = processor(texts, videos=videos or None)
    visual: list[dict | None] = [None] * len(rows)
    if videos:
        grids = batch["video_grid_thw"]
        patches = torch.split(batch["pixel_values_videos"], [int(g.prod()) for g in grids])
        with_video = [i for i, r in enumerate(rows) if r["video"]]
        for k, i in enumerate(with_video):
            visual[i] = {"pixel_values_videos": patches[k], "video_grid_thw": grids[k:k + 1],
                         "second_per_grid_ts": batch["second_per_grid_ts"][k:k + 1],
                         "spatial_pixel_values_videos": batch["spatial_pixel_values_videos"][k]}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, visual


def collate_visual(visual: list[dict | None], device) -> dict:
    """Concatenate per-row visual inputs (rows without a video contribute nothing) in row order: the raw
    pixels + spatial frames, or ``video_trunks`` when the rows carry their frozen encoders' outputs
    (:func:`attach_trunks`)."""
    present = [v for v in visual if v is not None]
    if not present:
        return {}
    if all("video_trunk" in v for v in present):
        out = {k: torch.cat([v[k] for v in present]).to(device) for k in _VISUAL if k != "pixel_values_videos"}
        out["video_trunks"] = [v["video_trunk"] for v in present]
        return out
    out = {k: torch.cat([v[k] for v in present]).to(device) for k in _VISUAL}
    out["spatial_pixel_values_videos"] = [v["spatial_pixel_values_videos"].to(device) for v in present]
    return out


def attach_trunks(rows: list[dict], visual: list[dict | None], processor, trunk_cache) -> None:
    """Add each video row's frozen encoders' outputs (``visual[i]["video_trunk"]``, a
    :class:`~spatial_mllm.models.modeling.VisualTrunk`) from ``trunk_cache`` (computed on a miss)."""
    from spatial_mllm.models.feature_cache import processor_settings

    settings = processor_settings(processor)
    for r, vis in zip(rows, visual):
        if vis is not None:
            vis["video_trunk"] = trunk_cache.video_trunk(r["video"], vis, settings)


def _generation_visual(model, visual: list[dict | None], device) -> dict:
    """``generate`` inputs for rows' videos: raw pixels, or (rows with trunks) the fused features as
    ``mm_encoder_outputs`` (``generate`` takes no trunks: it would re-fuse them at every decoding step)."""
    vis = collate_visual(visual, device)
    if "video_trunks" in vis:
        with torch.no_grad():
            vis["mm_encoder_outputs"] = {"video": model.fuse_visual_trunks(vis.pop("video_trunks"),
                                                                           vis["video_grid_thw"])}
    return vis


@dataclass
class Rollout:
    """One generation round on one process: N = prompts · G completions, groups contiguous."""

    rows: list[dict]  # [N] the row of each completion
    prompt_ids: torch.Tensor  # [N, P] left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, C] right-padded
    completion_mask: torch.Tensor  # [N, C] 1 up to and including the first EOS
    visual: list[dict | None]  # [N]
    texts: list[str]  # [N] decoded completions
    rewards_per_func: torch.Tensor | None = None  # [N, F], NaN = not applicable
    rewards: torch.Tensor | None = None  # [N]
    advantages: torch.Tensor | None = None  # [N]
    old_logps: torch.Tensor | None = None  # [N, C]
    ref_logps: torch.Tensor | None = None  # [N, C]
    sample_logps: torch.Tensor | None = None  # [N, C] log-probs recorded while sampling (see generate_completions)

    def model_inputs(self, idx: list[int], device, share_visual: bool = False) -> dict:
        """Forward inputs of rows ``idx`` (prompt + completion). ``share_visual``: each distinct video once
        + ``video_index`` (the model encodes a prompt's video once for its G completions)."""
        ids = torch.cat([self.prompt_ids[idx], self.completion_ids[idx]], dim=1).to(device)
        mask = torch.cat([self.prompt_mask[idx], self.completion_mask[idx]], dim=1).to(device)
        visual = [self.visual[i] for i in idx]
        if not share_visual or all(v is None for v in visual):
            return {"input_ids": ids, "attention_mask": mask, **collate_visual(visual, device)}
        distinct: dict[int, int] = {}
        index = [distinct.setdefault(id(v), len(distinct)) for v in visual if v is not None]
        unique = list({id(v): v for v in visual if v is not None}.values())
        return {"input_ids": ids, "attention_mask": mask, **collate_visual(unique, device), "video_index": index}


def _completion_mask(ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    is_eos = torch.isin(ids, torch.tensor(eos_ids, device=ids.device))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(ids[:, 0], ids.shape[1]))
    pos = torch.arange(ids.shape[1], device=ids.device)[None, :]
    return (pos <= first[:, None]).long()


def _eos_ids(tokenizer) -> list[int]:
    return sorted({tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")})


VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


def suppressed_ids(tokenizer) -> list[int]:
    """Vision placeholder tokens: never sampled in a completion (the model would look for their features)."""
    return sorted({tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS})


class SampledLogProbs:
    """A logits processor that records ``log p(token)`` of every sampled token under the policy's sampling
    distribution as the loss defines it (:func:`per_token_logps`): ``log_softmax((logits / temperature)``
    with the ``suppress`` ids at -inf``). transformers puts custom processors after its own processors
    (suppression) and BEFORE its warpers (temperature, top-k, top-p), so this one divides by the temperature
    itself; with ``top_p < 1`` the tokens are drawn from the truncated distribution but their log-probs here
    (as in the loss, and in TRL) are those of the untruncated one. Memory: one ``[N, V]`` row of scores at a
    time, ``[N]`` per step kept.

    Step ``t``'s token is only known at step ``t + 1`` (it is then the last of ``input_ids``), so the last
    step is read by :meth:`result` from the final sequences.
    """

    def __init__(self, temperature: float = 1.0, suppress: list[int] | None = None):
        self.temperature = temperature
        self.suppress = list(suppress or [])
        self.steps: list[torch.Tensor] = []  # [N] per finished step
        self._pending: torch.Tensor | None = None  # [N, V] log-probs of the step whose token is not known yet

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._pending is not None:
            self.steps.append(self._pending.gather(-1, input_ids[:, -1:]).squeeze(-1))
        logits = scores.float() / self.temperature
        if self.suppress:
            logits = logits.index_fill(-1, torch.tensor(self.suppress, device=logits.device), float("-inf"))
        self._pending = logits.log_softmax(-1)
        return scores

    def result(self, sequences: torch.LongTensor) -> torch.Tensor:
        """``[N, C]`` log-probs of the ``C`` generated tokens (``sequences`` = prompt + completion)."""
        steps = list(self.steps)
        if self._pending is not None:
            steps.append(self._pending.gather(-1, sequences[:, -1:]).squeeze(-1))
        return torch.stack(steps, dim=1)


@torch.no_grad()
def generate_completions(model, processor, rows: list[dict], num_generations: int, *, temperature: float = 1.0,
                         top_p: float = 1.0, max_new_tokens: int = 32, device=None,
                         share_prefix: bool = False, trunk_cache=None) -> Rollout:
    """Sample ``num_generations`` completions per row (groups contiguous) → a :class:`Rollout` without
    rewards. Used by GRPO (the policy) and the cold start (the teacher).

    ``share_prefix``: each row's G completions are sampled from ONE prefill of its prompt's video prefix
    (:mod:`spatial_mllm.models.prefix`: the video encoded once, the prefix's KV cache repeated to G rows)
    instead of G full prefills; rows without a video take the plain path. The same distribution (tested:
    the recorded log-probs equal the loss forward's); the random draws come in another order.

    ``trunk_cache`` (an :class:`~spatial_mllm.models.feature_cache.EncoderTrunkCache`): the rows' frozen
    encoders' outputs are taken from it (or computed once) and kept in ``Rollout.visual``, so the reference
    and loss forwards of this round reuse them (``video_trunks``).

    Generation goes through the model's ``generate`` (ViT + connector(VGGT) fused before prefill, see
    :mod:`spatial_mllm.models.modeling`); ``Rollout.sample_logps`` holds the log-prob of each sampled token
    as it was sampled (:class:`SampledLogProbs`) — equal to the loss forward's log-probs up to float error
    when ``top_p = 1`` (tested; logged as ``sampling_logp_max_diff``).
    """
    from transformers import LogitsProcessorList
    device = device or next(model.parameters()).device
    tok = processor.tokenizer
    eos_ids, pad_id = _eos_ids(tok), tok.pad_token_id
    enc, visual = encode_prompts(processor, rows)
    if trunk_cache is not None:
        attach_trunks(rows, visual, processor, trunk_cache)
    G = num_generations
    prompt_ids = enc["input_ids"].repeat_interleave(G, dim=0)
    prompt_mask = enc["attention_mask"].repeat_interleave(G, dim=0)
    visual_n = [v for v in visual for _ in range(G)]
    rows_n = [r for r in rows for _ in range(G)]
    was_training = model.training
    model.eval()
    gen = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max_new_tokens,
               eos_token_id=eos_ids, pad_token_id=pad_id, suppress_tokens=suppressed_ids(tok), use_cache=True)
    if share_prefix and all(v is not None for v in visual):
        completion_ids, sample_logps = _sample_from_shared_prefixes(model, processor, rows, enc, visual, G, gen,
                                                                    device)
    else:
        recorder = SampledLogProbs(temperature, suppressed_ids(tok))
        out = model.generate(input_ids=prompt_ids.to(device), attention_mask=prompt_mask.to(device),
                             **_generation_visual(model, visual_n, device), **gen,
                             logits_processor=LogitsProcessorList([recorder]))
        completion_ids = out[:, prompt_ids.shape[1]:].cpu()
        sample_logps = recorder.result(out).cpu()
    model.train(was_training)
    completion_mask = _completion_mask(completion_ids, eos_ids)
    completion_ids = torch.where(completion_mask.bool(), completion_ids, torch.full_like(completion_ids, pad_id))
    sample_logps = sample_logps * completion_mask  # 0 after each completion's end
    texts = processor.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(rows_n, prompt_ids, prompt_mask, completion_ids, completion_mask, visual_n, texts,
                   sample_logps=sample_logps)


def _sample_from_shared_prefixes(model, processor, rows, enc, visual, G, gen, device):
    """``(completion_ids [N, C], sample_logps [N, C])`` (right-padded with the pad id / 0): per row, G samples
    continuing one prefill of its video prefix."""
    from transformers import LogitsProcessorList

    from spatial_mllm.models.prefix import VISION_END, generate_from_prefix, prefill_prefix, split_prompt

    tok = processor.tokenizer
    vision_end = tok.convert_tokens_to_ids(VISION_END)
    pieces = []
    for r, ids, mask, vis in zip(rows, enc["input_ids"], enc["attention_mask"], visual):
        prompt = processor.build_prompt(r["prompt"], num_videos=1)
        ids = ids[mask.bool()]  # the row's prompt without its left padding
        P = int((ids == vision_end).nonzero()[-1]) + 1
        grid, sgt = vis["video_grid_thw"].to(device), vis["second_per_grid_ts"].to(device)
        if "video_trunk" in vis:  # the frozen encoders' outputs, computed once (attach_trunks)
            features = {"video": model.fuse_visual_trunks([vis["video_trunk"]], grid)}
        else:
            features = model.encode_visual_inputs(
                pixel_values_videos=vis["pixel_values_videos"].to(device), video_grid_thw=grid,
                spatial_pixel_values_videos=[vis["spatial_pixel_values_videos"].to(device)])
        prefix = prefill_prefix(model, ids[:P].to(device), grid, sgt, features, split_prompt(prompt)[0])
        recorder = SampledLogProbs(gen["temperature"], gen["suppress_tokens"])
        new = torch.stack(generate_from_prefix(model, processor, prefix, [prompt] * G, **gen,
                                               logits_processor=LogitsProcessorList([recorder])))
        pieces.append((new.cpu(), recorder.result(new).cpu()))
    C = max(p[0].shape[1] for p in pieces)
    ids_out = torch.full((len(rows) * G, C), gen["pad_token_id"], dtype=torch.long)
    logps_out = torch.zeros((len(rows) * G, C))
    for i, (new, lp) in enumerate(pieces):
        ids_out[i * G:(i + 1) * G, :new.shape[1]] = new
        logps_out[i * G:(i + 1) * G, :new.shape[1]] = lp
    return ids_out, logps_out
