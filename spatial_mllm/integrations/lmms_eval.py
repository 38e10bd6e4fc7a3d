"""Spatial-MLLM as an lmms-eval model: ``lmms-eval --model spatial_mllm --model_args pretrained=...``.

``pip install -e '.[lmms-eval]'`` registers the model through the ``lmms_eval.models`` entry point (no fork
or copy of lmms-eval); then::

    lmms-eval --model spatial_mllm \\
        --model_args pretrained=Diankun/Spatial-MLLM-v1.1-Instruct-135K,nframes=16,sampling=space_aware \\
        --tasks vsibench --batch_size 8 --log_samples --output_path outputs/lmms_eval

:class:`SpatialMLLMLmms` is a CHAT model: it reads each request's ``doc_to_messages`` (one user turn with one
video and the question text) and answers with the project's own pieces, never a second generation loop:

* frames: our :class:`~spatial_mllm.models.processing.SpatialMLLMProcessor` (``pixel_preset="official_eval"``
  by default, what the official evaluation feeds), ``nframes`` uniform frames or the space-aware sampler's
  choice (:class:`~spatial_mllm.sampling.sampler.SpaceAwareSampler`: ``candidates`` uniform candidates →
  VGGT point maps → greedy voxel coverage; its per-video JSON cache with ``sampler_cache_dir``);
* decoding: :class:`~spatial_mllm.eval.model_predict.ModelPredictor`, i.e. the model's ``generate`` (which
  fuses ViT + connector(VGGT)) from one shared prefix per video (:mod:`spatial_mllm.models.prefix`: the
  video is encoded and the ~3,000 prompt tokens before the question are prefilled once for all its
  questions) and the fused-feature cache (:mod:`spatial_mllm.models.feature_cache`; in memory, on disk with
  ``feature_cache_dir``). Requests are grouped by video (then by generation settings), so the questions of
  one video share the encoded video; answers go back in lmms-eval's order.

Checkpoints: anything :meth:`SpatialMLLMForConditionalGeneration.from_pretrained` loads — official v1.1 /
v1.0 checkpoints, our saves, and a plain Qwen2.5-VL checkpoint (recognised from its tensor names; it runs
with connector ``none``, the 2D-only model) — or ``tiny`` (random weights, offline; smoke runs).

Model arguments (``--model_args key=value,...``; :class:`LmmsEvalModelArgs`; an unknown key or a bad value
is an error naming the key): ``pretrained``, ``nframes`` (16), ``sampling`` (``uniform`` | ``space_aware``),
``vggt`` (``facebook/VGGT-1B``), ``candidates`` (128), ``vggt_image_size`` (518), ``sampler_cache_dir``,
``pixel_preset`` (``official_eval`` | ``official_train`` | ``none``), ``min_pixels``, ``max_pixels``,
``device``, ``dtype``, ``attn_implementation``, ``revision``, ``batch_size``, ``share_prefix``,
``feature_cache_dir``, ``seed``. ``--batch_size N`` is the number of one video's questions per ``generate``
call (all of them share one prefill either way).

Generation settings (the task's ``generation_kwargs``, overridden by ``--gen_kwargs``): ``max_new_tokens``
(default 128, as lmms-eval's Qwen2.5-VL chat model), ``temperature`` (0 = greedy; > 0 samples, seeded per
question from ``seed`` and the request's task/doc id, see ModelPredictor), ``top_p``, ``top_k``,
``num_beams``, ``repetition_penalty``, ``length_penalty``, ``no_repeat_ngram_size``, ``min_new_tokens``;
``until``: the answer is cut before the first occurrence of each stop string, except ``"\\n\\n"`` — lmms-eval's
default when a task names none — which is dropped, both as lmms-eval's simple Qwen2.5-VL model does (its chat
model ignores ``until`` altogether). ``do_sample`` is ignored (the temperature decides, as lmms-eval's
Qwen2.5-VL chat model does); other keys are ignored with a warning.

Facts about lmms-eval 0.7.3 this module relies on (files of the ``lmms_eval`` wheel, 0.7.3):

1. Discovery: ``models/__init__.py:224-235`` builds the registry at import and calls
   ``registry.load_entrypoint_manifests(overwrite=True)`` (line 231); a failing entry point is only logged
   as a warning (lines 232-233). ``models/registry_v2.py:139-158`` loads every entry point of the group
   ``"lmms_eval.models"``; the payload may be a ``ModelManifest``, an iterable of them or a callable
   returning either (lines 147-150, 241-253; ours is :func:`spatial_mllm.integrations.lmms_eval_manifests`).
2. Resolution: ``registry_v2.py:82-104`` prefers ``chat_class_path`` unless ``force_simple``; lines 121-137
   require a subclass of ``lmms_eval.api.model.lmms`` whose ``is_simple`` is False for a chat path.
3. The interface (``api/model.py``): ``class lmms`` (line 15) with ``is_simple = True`` (line 16) and three
   abstract methods, ``loglikelihood`` (56), ``generate_until`` (84), ``generate_until_multi_round`` (103).
   Chat models in lmms-eval that cannot score raise ``NotImplementedError`` from ``loglikelihood``
   (``models/chat/huggingface.py:176``, ``internvl_hf.py:352``, ``nanovlm.py:211``); so does this one.
4. Construction: ``evaluator.py:518-525`` calls ``create_from_arg_string(model_args, {"batch_size": ...,
   "max_batch_size": ..., "device": ...})``; ``api/model.py:131-145`` parses ``key=value,...`` with
   ``utils.simple_parse_args_string`` (``utils.py:207-222``; values through ``handle_arg_string``,
   ``utils.py:83-93``: ``true``/``false`` → bool, digits → int, else float, else str) and calls
   ``cls(**args, **extra)`` with the ``None`` extras dropped. The CLI's ``--batch_size`` is a string
   (``__main__.py:186-193``, default 1).
5. Chat requests: ``api/task.py:1863``: ``Instance.args = (ctx, doc_to_messages, generation_kwargs, doc_id,
   task, split)`` (the model guide's table lists 5 elements without ``ctx``; we read the last five). The
   document is ``self.task_dict[task][split][doc_id]`` (``evaluator.py:578`` stores each task's dataset on
   the model). ``doc_to_messages(doc)`` returns ``[{"role": "user", "content": [{"type": "video", "url":
   path}, {"type": "text", "text": prompt}]}]`` for VSI-Bench (``tasks/vsibench/utils.py:148-158``);
   without a task-level ``doc_to_messages`` it is built from ``doc_to_visual`` + ``doc_to_text``
   (``api/task.py:1801-1840``). ``protocol.py:17-62`` validates messages (``ChatMessages``).
6. Generation settings: ``api/task.py:183-193``: ``temperature`` is made a float and ``until`` defaults to
   ``[fewshot_delimiter]`` = ``["\\n\\n"]`` (line 133); ``evaluator.py:579-581`` merges ``--gen_kwargs``
   into the task's (``update=True``). VSI-Bench asks ``max_new_tokens: 16, temperature: 0, top_p: 1.0,
   num_beams: 1, do_sample: false`` (``tasks/vsibench/_default_template_yaml``). lmms-eval's Qwen2.5-VL chat
   model samples iff ``temperature > 0`` (``models/chat/qwen2_5_vl.py:120-137``, default
   ``max_new_tokens`` 128) and ignores ``until``; its simple model drops ``"\\n\\n"`` from ``until``
   ("to prevent truncation", ``models/simple/qwen2_5_vl.py:213-214``) and cuts at each other string
   (lines 352-356).
7. Results: ``evaluator.py:1229`` calls ``getattr(lm, reqtype)(requests)``; each output may be ``str``
   (``api/instance.py:44-71``). ``evaluator.py:1249`` then calls ``lm.clean()``, which deletes the model's
   ``nn.Module`` attributes (``api/model.py:164-174``): an instance evaluates once.
8. Scores: VSI-Bench's ``vsibench_process_results`` (``tasks/vsibench/utils.py:260-284``) reads numbers
   with ``extract_number`` (the first number or number word ANYWHERE in the answer, lines 201-257), where
   :func:`spatial_mllm.eval.metrics.parse_number` takes ``float`` of the first space-separated token (the
   earlier lmms-eval rule): ``"3m"`` or ``"about 3"`` score 3 in lmms-eval 0.7.3 and 0 in our scorer.
   Multiple choice is the same rule in both (first token, case-insensitive).

Departures from lmms-eval's Qwen2.5-VL models and from the official evaluation:

1. One video per request, video before the text, no system message, no images: anything else raises a
   ``ValueError`` naming the request (VSI-Bench's messages are of this form). The prompt is Qwen's chat
   template around the request's text, as :meth:`SpatialMLLMProcessor.build_prompt` writes it (the default
   system prompt, as the official scripts and lmms-eval's Qwen2.5-VL model).
2. Frames follow our processor's ``pixel_preset`` (default ``official_eval``: Spatial-MLLM's evaluation
   frames, ``nframes`` uniform, ``linspace(...).round()``), not lmms-eval's ``max_num_frames`` +
   ``max_pixels`` rule; videos are decoded with PyAV.
3. Answers are stripped of surrounding whitespace before the ``until`` cut (ModelPredictor strips); the
   ``until`` strings never stop generation early (``max_new_tokens`` and EOS bound it).
4. ``loglikelihood`` and ``generate_until_multi_round`` raise ``NotImplementedError``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

try:  # this module is imported by lmms-eval itself; the package never imports it
    from lmms_eval.api.instance import Instance
    from lmms_eval.api.model import lmms
except ImportError as e:  # pragma: no cover - only without the extra
    raise ImportError("spatial_mllm.integrations.lmms_eval needs lmms-eval: pip install -e '.[lmms-eval]'") from e

from spatial_mllm.config import ConfigError, StageConfig

__all__ = ["LmmsEvalModelArgs", "SpatialMLLMLmms", "generation_settings", "cut_at_stop_strings", "parse_messages"]

# keys of lmms-eval's generation_kwargs handed to ``generate`` as they are (when not None)
PASSED_GENERATION_KEYS = ("top_k", "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "min_new_tokens")
# keys read here: the budget, the decoding, the stop strings; ``do_sample`` is decided by the temperature
READ_GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "num_beams", "until", "do_sample")
DEFAULT_MAX_NEW_TOKENS = 128  # lmms-eval models/chat/qwen2_5_vl.py:122 (VSI-Bench always sets 16)
QWEN_DROPPED_STOP = "\n\n"  # lmms-eval's default `until` (api/task.py:133, 187); models/simple/qwen2_5_vl.py:214


@dataclass
class LmmsEvalModelArgs(StageConfig):
    """``--model_args`` of ``lmms-eval --model spatial_mllm`` (and ``batch_size``/``device`` from its CLI)."""

    pretrained: str = field(default="", metadata={"help": "checkpoint folder or hub id (official Spatial-MLLM "
                            "v1.1/v1.0, our saves, plain Qwen2.5-VL = connector none), or 'tiny' (random, offline)"})
    nframes: int = field(default=16, metadata={"help": "frames per video (paper: 16)"})
    sampling: Literal["uniform", "space_aware"] = field(
        default="uniform", metadata={"help": "uniform frames, or the paper's space-aware frames (VGGT point maps "
                                             "of `candidates` uniform frames → greedy voxel coverage)"})
    vggt: str = field(default="facebook/VGGT-1B", metadata={"help": "space_aware: VGGT checkpoint with a point head"})
    candidates: int = field(default=128, metadata={"help": "space_aware: uniform candidate frames (paper: 128)"})
    vggt_image_size: int = field(default=518, metadata={"help": "space_aware: VGGT input width (official: 518)"})
    sampler_cache_dir: str | None = field(
        default=None, metadata={"help": "space_aware: folder of the sampler's per-video JSON cache (reused by later "
                                        "runs); none = selections kept for this run only"})
    pixel_preset: Literal["official_eval", "official_train"] | None = field(
        default="official_eval", metadata={"help": "processor frame/pixel rule (models/processing.py): official_eval "
                                                   "= the official evaluation's; none = qwen-vl-utils' rule with "
                                                   "min_pixels/max_pixels"})
    min_pixels: int | None = field(default=None, metadata={"help": "per-frame pixel floor (default: the preset's)"})
    max_pixels: int | None = field(default=None, metadata={"help": "per-frame pixel cap (default: the preset's)"})
    device: str | None = field(default=None, metadata={"help": "cuda / cuda:N / cpu (default: cuda if available; "
                                                               "cuda:<local rank> under several processes)"})
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(
        default="auto", metadata={"help": "weights dtype; auto = bfloat16 on CUDA, float32 on CPU"})
    attn_implementation: str | None = field(default=None, metadata={"help": "transformers attention (sdpa, "
                                                                            "flash_attention_2, eager)"})
    revision: str | None = field(default=None, metadata={"help": "hub revision of `pretrained` (pin it for reported "
                                                                 "numbers)"})
    batch_size: int = field(default=1, metadata={"help": "questions of one video per generate call (lmms-eval's "
                                                         "--batch_size); all share one prefill"})
    share_prefix: bool = field(default=True, metadata={"help": "encode each video and prefill its prompt prefix "
                                                               "once for all its questions (same answers, tested)"})
    feature_cache_dir: str | None = field(default=None, metadata={"help": "folder of cached fused visual features "
                                                                          "(a second run skips the encoders)"})
    seed: int = field(default=0, metadata={"help": "seed of sampled decoding (temperature > 0)"})

    def __post_init__(self):
        if not self.pretrained:
            raise ValueError("pretrained is required: a checkpoint folder, a hub id or 'tiny'")
        for name in ("nframes", "candidates", "vggt_image_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sampling == "space_aware" and self.candidates < self.nframes:
            raise ValueError(f"candidates ({self.candidates}) must be >= nframes ({self.nframes}) for space_aware "
                             "sampling")

    @classmethod
    def from_model_args(cls, args: dict) -> LmmsEvalModelArgs:
        """From lmms-eval's parsed ``--model_args`` (+ ``batch_size``/``max_batch_size``/``device``): ``none``/
        ``null`` strings mean None where a field allows it, ``space-aware`` means ``space_aware``, and a
        numeric string ``batch_size`` (the CLI passes it unparsed) becomes an int. Raises ``ConfigError``
        naming an unknown key or a bad value."""
        args = dict(args)
        if args.pop("max_batch_size", None) is not None:
            warnings.warn("spatial_mllm ignores max_batch_size (no automatic batch size)", stacklevel=3)
        optional = {f.name for f in dataclasses.fields(cls) if "None" in str(f.type)}
        for k, v in list(args.items()):
            if k in optional and isinstance(v, str) and v.lower() in ("none", "null"):
                args[k] = None
        if args.get("sampling") == "space-aware":
            args["sampling"] = "space_aware"
        bs = args.get("batch_size")
        if isinstance(bs, str) and bs.strip().isdigit():
            args["batch_size"] = int(bs)
        elif isinstance(bs, str):
            raise ConfigError(f"--model spatial_mllm: key 'batch_size': expected an integer, got {bs!r} "
                              "('auto' is not supported)")
        for k in ("sampler_cache_dir", "feature_cache_dir", "pretrained", "vggt", "revision"):  # paths parsed as numbers
            if isinstance(args.get(k), (int, float)) and not isinstance(args.get(k), bool):
                args[k] = str(args[k])
        return cls.from_dict(args, source="--model spatial_mllm --model_args")


def generation_settings(gen_kwargs: dict | None) -> tuple[dict, list[str]]:
    """lmms-eval's ``generation_kwargs`` → (``ModelPredictor`` generation settings, stop strings).

    ``temperature`` 0 (or absent) is greedy (``do_sample=False``, no temperature/top_p); above 0 it samples
    with that temperature and ``top_p`` (when given). ``max_new_tokens`` defaults to 128. The stop strings
    are ``until`` without ``"\\n\\n"`` (module docstring). Unknown keys are ignored with a warning."""
    gen_kwargs = dict(gen_kwargs or {})
    unknown = sorted(set(gen_kwargs) - set(READ_GENERATION_KEYS) - set(PASSED_GENERATION_KEYS))
    if unknown:
        warnings.warn(f"spatial_mllm ignores generation_kwargs {unknown}", stacklevel=2)
    until = gen_kwargs.get("until")
    if until is None:
        until = []
    elif isinstance(until, str):
        until = [until]
    elif not isinstance(until, (list, tuple)):
        raise ValueError(f"generation_kwargs 'until' must be a string or a list of strings, got {until!r}")
    max_new = gen_kwargs.get("max_new_tokens")
    temperature = float(gen_kwargs.get("temperature") or 0.0)
    out: dict = {"max_new_tokens": int(max_new) if max_new is not None else DEFAULT_MAX_NEW_TOKENS}
    if temperature > 0:
        out.update(do_sample=True, temperature=temperature)
        if gen_kwargs.get("top_p") is not None:
            out["top_p"] = float(gen_kwargs["top_p"])
    else:
        out["do_sample"] = False
    num_beams = gen_kwargs.get("num_beams")
    out["num_beams"] = int(num_beams) if num_beams is not None else 1
    for k in PASSED_GENERATION_KEYS:
        if gen_kwargs.get(k) is not None:
            out[k] = gen_kwargs[k]
    return out, [s for s in until if s and s != QWEN_DROPPED_STOP]


def cut_at_stop_strings(text: str, until: list[str]) -> str:
    """``text`` up to the first occurrence of each stop string in turn (lmms-eval's simple Qwen2.5-VL rule)."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def parse_messages(messages) -> tuple[str, str]:
    """``(video path, question text)`` of a chat request: one user turn holding one video, then text parts
    (joined without separator, as Qwen's chat template joins them). Raises ``ValueError`` otherwise."""
    from lmms_eval.protocol import ChatMessages

    msgs = messages.messages if isinstance(messages, ChatMessages) else ChatMessages(messages=messages).messages
    if len(msgs) != 1 or msgs[0].role != "user":
        raise ValueError(f"spatial_mllm answers one user turn; got roles {[m.role for m in msgs]}")
    videos, texts = [], []
    for part in msgs[0].content:
        if part.type == "video":
            if texts:
                raise ValueError("spatial_mllm puts the video before the question; this request has text first")
            if part.start_time is not None or part.end_time is not None:
                raise ValueError("spatial_mllm does not cut videos (start_time/end_time given)")
            videos.append(part.url)
        elif part.type == "text":
            texts.append(part.text)
        else:
            raise ValueError(f"spatial_mllm reads one video and text, got a {part.type!r} part")
    if len(videos) != 1:
        raise ValueError(f"spatial_mllm reads exactly one video per request, got {len(videos)}")
    if not isinstance(videos[0], (str, os.PathLike)):
        raise ValueError(f"spatial_mllm reads videos from files; got a {type(videos[0]).__name__}")
    return str(videos[0]), "".join(texts)


class SpatialMLLMLmms(lmms):
    """lmms-eval chat model around a Spatial-MLLM checkpoint (module docstring); keyword arguments are the
    fields of :class:`LmmsEvalModelArgs`."""

    is_simple = False

    def __init__(self, **model_args):
        super().__init__()
        self.args = LmmsEvalModelArgs.from_model_args(model_args)
        a = self.args
        from accelerate import Accelerator

        # several processes (accelerate launch): lmms-eval shards the documents by rank; each rank runs its own
        # copy of the model on cuda:<local rank> unless a device with an index is given
        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        if a.device in (None, "cuda") and torch.cuda.is_available():
            self._device = torch.device(f"cuda:{self.accelerator.local_process_index}")
        else:
            self._device = torch.device(a.device or "cpu")
        self.model, self.processor = self._load(a, self._device)
        from spatial_mllm.models.feature_cache import VisualFeatureCache

        # in memory for the videos shared by several tasks of one run; on disk across runs when a folder is given
        self.feature_cache = VisualFeatureCache(self.model, a.feature_cache_dir, memory_items=4)
        self._sampler = None
        self.video_frames: OrderedDict[str, list[int] | None] = OrderedDict()  # frame choice per video used

    # ---- loading ------------------------------------------------------------------------------------------
    @staticmethod
    def _load(a: LmmsEvalModelArgs, device: torch.device):
        from spatial_mllm.models.modeling import SpatialMLLMForConditionalGeneration
        from spatial_mllm.models.processing import SpatialMLLMProcessor

        pix = dict(num_frames=a.nframes, min_pixels=a.min_pixels, max_pixels=a.max_pixels, pixel_preset=a.pixel_preset)
        if a.pretrained == "tiny":
            from spatial_mllm.models.tiny import tiny_model, tiny_tokenizer

            tok = tiny_tokenizer()
            return tiny_model(tok).to(device).eval(), SpatialMLLMProcessor.build(tok, **pix)
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
                 "auto": torch.bfloat16 if device.type == "cuda" else torch.float32}[a.dtype]
        hub = {"revision": a.revision} if a.revision is not None else {}
        extra = {"attn_implementation": a.attn_implementation} if a.attn_implementation else {}
        model = SpatialMLLMForConditionalGeneration.from_pretrained(a.pretrained, dtype=dtype, **hub, **extra)
        return model.to(device).eval(), SpatialMLLMProcessor.from_pretrained(a.pretrained, **hub, **pix)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.args.batch_size

    # ---- frames -------------------------------------------------------------------------------------------
    def _frames_of(self, video: str) -> list[int] | None:
        """Source frame indices for ``video``: None (the processor's uniform ``nframes``) or the space-aware
        sampler's choice (cached per video for this run, and in ``sampler_cache_dir`` when set)."""
        if video in self.video_frames:
            return self.video_frames[video]
        idx = None
        if self.args.sampling == "space_aware":
            if self._sampler is None:
                from spatial_mllm.sampling.sampler import SpaceAwareSampler, SpaceAwareSamplerConfig

                self._sampler = SpaceAwareSampler(
                    model_path=self.args.vggt, device=self.device, cache_dir=self.args.sampler_cache_dir,
                    config=SpaceAwareSamplerConfig(num_candidates=self.args.candidates,
                                                   target_size=self.args.vggt_image_size))
            p = Path(video)
            # <dataset>__<scene> for VSI-Bench's <root>/<dataset>/<scene>.mp4 (as experiments/ablations.py names them)
            idx = self._sampler.sample(video, self.args.nframes, name=f"{p.parent.name}__{p.stem}").indices
        self.video_frames[video] = idx
        return idx

    # ---- lmms-eval interface ------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers to chat requests, grouped by (video, generation settings); returned in request order."""
        from tqdm import tqdm

        from spatial_mllm.eval.model_predict import ModelPredictor

        # video → generation settings (json) → request positions; videos in order of first appearance
        groups: OrderedDict[str, OrderedDict[str, list[int]]] = OrderedDict()
        items, settings = [], {}
        for i, req in enumerate(requests):
            *_, doc_to_messages, gen_kwargs, doc_id, task, split = req.args
            doc = self.task_dict[task][split][doc_id]
            try:
                video, text = parse_messages(doc_to_messages(doc))
            except ValueError as e:
                raise ValueError(f"request {task}/{split}/{doc_id}: {e}") from e
            gen, until = generation_settings(gen_kwargs)
            key = json.dumps(gen, sort_keys=True)
            settings[key] = gen
            items.append({"id": f"{task}/{split}/{doc_id}", "video": video, "prompt": text, "until": until,
                          "num_frames": self.args.nframes})
            groups.setdefault(video, OrderedDict()).setdefault(key, []).append(i)
        answers: list[str | None] = [None] * len(requests)
        pbar = tqdm(total=len(requests), disable=self.rank != 0, desc="spatial_mllm")
        with torch.no_grad():
            for video, by_settings in groups.items():
                frame_indices = self._frames_of(video)
                for key, members in by_settings.items():
                    gen = settings[key]
                    shared = self.args.share_prefix and gen["num_beams"] == 1  # the prefix path decodes 1 row each
                    predict = ModelPredictor(self.model, self.processor, gen, seed=self.args.seed,
                                             share_prefix=shared, batch_size=self.args.batch_size,
                                             feature_cache=self.feature_cache)
                    # the shared path chunks one video's questions itself; the per-question path takes
                    # batch_size rows per generate call
                    step = len(members) if shared else self.args.batch_size
                    for s in range(0, len(members), step):
                        chunk = members[s:s + step]
                        batch = [{**items[i], "frame_indices": frame_indices} for i in chunk]
                        for i, text in zip(chunk, predict(batch)):
                            answers[i] = cut_at_stop_strings(text, items[i]["until"])
                        pbar.update(len(chunk))
        pbar.close()
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError("Loglikelihood is not implemented for spatial_mllm (generation tasks only)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("Multi-round generation is not implemented for spatial_mllm")
