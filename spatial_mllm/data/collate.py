"""Training rows → model inputs: :class:`SFTDataset` over a training jsonl and :class:`SFTCollator`.

Rows are the training conversations of :func:`spatial_mllm.data.formats.to_training_record`::

    {"video": "synthetic/<scene>/video.mp4", "conversations": [{"from": "human", "value": "<video>\\n<prompt>"},
     {"from": "gpt", "value": "B"}], "question_type": ..., "ground_truth": ..., "options": ...}

**Dataset.** Video paths are resolved against ``video_root`` (relative paths) and checked once, when the
dataset is built: a missing file, an unreadable file or a video with fewer frames than asked for raises
:class:`BadRowError` naming the file, the line and the video — or, with ``on_bad_video="skip"``, the row
is dropped and counted in ``dataset.skipped`` (reason → rows). Frames are chosen uniformly
(``num_frames``, Qwen's ``linspace(...).round()``) or read from the space-aware sampler's frame choice:
a JSON ``{"<key>": [frame indices]}`` whose key is the row's video path, the path without its
extension, or — for ``<dir>/video.mp4`` — the folder (``"synthetic/<scene>"``, the VSI-Bench key
``"<dataset>/<scene_name>"`` that :mod:`spatial_mllm.eval.vsibench` reads from the same file).

**Collator.** Each row becomes ``prompt + answer + "<|im_end|>" + "\\n"`` where the prompt is the
processor's chat template (default system message, the video, the question, ``<|im_start|>assistant\\n``),
exactly what :mod:`spatial_mllm.models.ask` and the evaluation feed the model. The prompt and the target
are tokenised separately and concatenated (as the official Qwen2.5-VL fine-tuning code tokenises each
turn), so the boundary never merges tokens. Labels are ``-100`` everywhere except the answer tokens and the
closing ``<|im_end|>`` (the model must learn to stop). A batch is right-padded (``pad_token_id``, mask 0,
label -100); the videos' patches are concatenated in row order (``pixel_values_videos``,
``video_grid_thw``, ``second_per_grid_ts``) and their [0, 1] frames stay a list
(``spatial_pixel_values_videos``), so videos of different sizes share a batch.

**Truncation.** A sample longer than ``max_length`` is cut on the right (the official collator's
``input_ids[:, :model_max_length]``) and counted in ``collator.stats["truncated"]``; one whose answer
was cut away entirely is counted in ``stats["truncated_no_labels"]`` (it carries no loss). A cut inside
the video's tokens is an error naming the row (the model could not pair tokens and patches).

Departures from the official fine-tuning code (``qwen-vl-finetune``'s ``data_qwen.py``):

1. The ``<video>`` placeholder and the newline after it are replaced by the chat template's video block
   (``<|vision_start|><|video_pad|>…<|vision_end|>`` followed directly by the question), the same prompt as
   the official evaluation and :func:`spatial_mllm.models.ask.ask`; the official training code keeps the
   newline after ``<|vision_end|>``.
2. The newline after the assistant's ``<|im_end|>`` carries no label (officially it does).
3. Only single-turn conversations (one human turn with one ``<video>``, one gpt turn); others are errors
   naming the row.
4. Bad videos are found before training (and skipped on request) instead of crashing a worker mid-epoch.
"""

from __future__ import annotations

import json
import os
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "IGNORE_INDEX",
    "BadRowError",
    "BadVideoError",
    "SFTDataset",
    "SFTCollator",
    "load_frames_cache",
    "frames_cache_keys",
    "describe_example",
]

IGNORE_INDEX = -100  # label value the loss ignores (torch's cross_entropy default)
VIDEO_PLACEHOLDER = "<video>"
ANSWER_END = "<|im_end|>"  # closes the assistant turn; labelled
TURN_SUFFIX = "\n"  # what the chat template writes after <|im_end|>; not labelled


class BadRowError(ValueError):
    """A training row cannot be used (missing/unreadable video, malformed conversation, over-long prompt)."""


class BadVideoError(BadRowError):
    """A row's video is missing, unreadable or too short."""


def load_frames_cache(path: str | os.PathLike | None) -> dict[str, list[int]] | None:
    """The sampler's frame choice: JSON ``{"<key>": [frame indices]}`` (None → uniform sampling)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"frames cache not found: {p}")
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a frames cache maps video keys to lists of frame indices")
    return {str(k): [int(i) for i in v] for k, v in data.items()}


def frames_cache_keys(video: str) -> list[str]:
    """Keys under which a frames cache may list ``video`` (its path as written in the row), most specific
    first: the path, the path without extension, and the folder for ``<folder>/video.<ext>``."""
    v = video.replace(os.sep, "/")
    stem, _ = os.path.splitext(v)
    keys = [v, stem]
    head, name = os.path.split(v)
    if head and os.path.splitext(name)[0] == "video":
        keys.append(head)
    return list(dict.fromkeys(keys))


def _split_conversation(rec: dict, where: str) -> tuple[str, str]:
    conv = rec.get("conversations")
    if not isinstance(conv, list) or len(conv) != 2:
        raise BadRowError(f"{where}: expected one human and one gpt turn in 'conversations', got "
                          f"{len(conv) if isinstance(conv, list) else type(conv).__name__}")
    (h, g) = conv
    if h.get("from") != "human" or g.get("from") != "gpt":
        raise BadRowError(f"{where}: turns must be human then gpt, got {h.get('from')!r}, {g.get('from')!r}")
    text = str(h.get("value", ""))
    if text.count(VIDEO_PLACEHOLDER) != 1:
        raise BadRowError(f"{where}: the human turn must hold exactly one {VIDEO_PLACEHOLDER} placeholder")
    prompt = text.replace(VIDEO_PLACEHOLDER + "\n", "", 1).replace(VIDEO_PLACEHOLDER, "", 1).strip()
    answer = str(g.get("value", ""))
    if not answer:
        raise BadRowError(f"{where}: empty answer")
    return prompt, answer


class SFTDataset(torch.utils.data.Dataset):
    """Training conversations with resolved, checked videos and their frame choice.

    Args:
        rows: a training jsonl path, or a list of records (already read).
        video_root: folder the rows' relative video paths start from (default: the jsonl's folder).
        num_frames: frames per video when sampling uniformly (videos with fewer frames are bad rows, unless
            ``short_videos="all_frames"``).
        frames_cache: a frames-cache JSON path or dict (see the module docstring); None = uniform. A row with
            its own ``frame_indices`` (a list of frame numbers) uses those instead.
        on_bad_video: ``"raise"`` (:class:`BadRowError` naming the row) or ``"skip"`` (dropped, counted in
            :attr:`skipped`, their sources in :attr:`skipped_rows`).
        check_videos: open every distinct video once now (header only) to find bad rows early.
        short_videos: a video with fewer frames than ``num_frames`` (uniform sampling) is a bad row
            (``"bad"``, default) or uses every frame once (``"all_frames"``: the official training rule,
            ``np.unique(np.linspace(...))`` in ``data_qwen.py``; what the processor's ``official_train`` preset
            does).

    Items are dicts: ``index`` (0-based row), ``source`` (``"<file>:<line>"``), ``video`` (absolute
    path), ``prompt`` (the question text, no placeholder), ``answer``, ``frame_indices`` (list or None),
    ``question_type``.
    """

    def __init__(self, rows: str | os.PathLike | Sequence[dict], video_root: str | os.PathLike | None = None, *,
                 num_frames: int = 16, frames_cache: str | os.PathLike | dict | None = None,
                 on_bad_video: str = "raise", check_videos: bool = True, short_videos: str = "bad"):
        if on_bad_video not in ("raise", "skip"):
            raise ValueError(f"on_bad_video must be 'raise' or 'skip', got {on_bad_video!r}")
        if short_videos not in ("bad", "all_frames"):
            raise ValueError(f"short_videos must be 'bad' or 'all_frames', got {short_videos!r}")
        if isinstance(rows, (str, os.PathLike)):
            from spatial_mllm.data.formats import read_jsonl

            path = Path(rows)
            records = read_jsonl(path)
            name = str(path)
            root = Path(video_root) if video_root is not None else path.parent
        else:
            records, name = list(rows), "<rows>"
            root = Path(video_root) if video_root is not None else Path(".")
        cache = frames_cache if isinstance(frames_cache, dict) or frames_cache is None \
            else load_frames_cache(frames_cache)
        self.num_frames = num_frames
        self.on_bad_video = on_bad_video
        self.skipped: Counter = Counter()
        self.skipped_rows: list[str] = []
        self.items: list[dict[str, Any]] = []
        checked: dict[str, tuple[int | None, str | None]] = {}  # video → (total frames, error)
        for i, rec in enumerate(records):
            where = f"{name}:{i + 1}" if name != "<rows>" else f"row {i}"
            prompt, answer = _split_conversation(rec, where)
            if "video" not in rec:
                raise BadRowError(f"{where}: no 'video' field")
            rel = str(rec["video"])
            video = Path(rel) if Path(rel).is_absolute() else root / rel
            idx = None
            if rec.get("frame_indices") is not None:  # the row names its own frames (wins over a frames cache)
                idx = rec["frame_indices"]
                if not isinstance(idx, list) or not idx or not all(isinstance(j, int) and j >= 0 for j in idx):
                    raise BadRowError(f"{where}: frame_indices must be a non-empty list of frame numbers >= 0, "
                                      f"got {idx!r}")
            elif cache is not None:
                hit = next((k for k in frames_cache_keys(rel) if k in cache), None)
                if hit is None:
                    raise BadRowError(f"{where}: the frames cache has no entry for video {rel!r} "
                                      f"(tried keys {frames_cache_keys(rel)})")
                idx = cache[hit]
            if check_videos:
                if str(video) not in checked:
                    checked[str(video)] = self._probe(video)
                total, err = checked[str(video)]
                need = (max(idx) + 1) if idx else (1 if short_videos == "all_frames" else num_frames)
                if err is None and total < need:
                    err = f"too_few_frames: {total} frames, {need} needed"
                if err is not None:
                    reason, _, detail = err.partition(": ")
                    if on_bad_video == "raise":
                        raise BadVideoError(f"{where}: video {video}: {reason.replace('_', ' ')}: {detail} (set "
                                            f"on_bad_video: skip to drop such rows)")
                    self.skipped[reason] += 1
                    self.skipped_rows.append(where)
                    continue
            self.items.append({"index": i, "source": where, "video": str(video), "prompt": prompt,
                               "answer": answer, "frame_indices": idx,
                               "question_type": rec.get("question_type")})
        if not self.items:
            raise BadRowError(f"{name}: no usable rows ({dict(self.skipped)} skipped)")

    @staticmethod
    def _probe(video: Path) -> tuple[int | None, str | None]:
        """(total frames, None) or (None, "<reason>: <message>") for one video file or frame folder."""
        from spatial_mllm.data.video import IMAGE_EXTENSIONS, VideoReadError, video_info

        if video.is_dir():
            n = sum(1 for f in video.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            return (n, None) if n else (None, f"unreadable: no frame images in {video}")
        if not video.is_file():
            return None, f"missing: file not found ({video})"
        try:
            total, _ = video_info(video)
        except (VideoReadError, OSError) as e:
            return None, f"unreadable: {e}"
        return total, None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class SFTCollator:
    """Rows of :class:`SFTDataset` → one padded batch of model inputs with answer-only labels.

    Args:
        processor: a :class:`~spatial_mllm.models.processing.SpatialMLLMProcessor`.
        num_frames: frames per video when a row has no cached frame indices.
        max_length: longest sequence in tokens (longer samples are truncated on the right and counted).
        on_bad_video: ``"raise"`` or ``"skip"`` for a video that fails to decode here (after the dataset's
            header check); a skipped row is counted in ``stats["skipped_bad_video"]``.
        video_cache_size: keep this many decoded, resized videos (keyed by path and frame choice) in memory;
            0 = decode every time. Worth it when many rows share a video and frames are few (the tiny
            preset: 4 frames of 84×112 ≈ 0.5 MB each); at the paper's 16 frames of 476×644 a video is ~60 MB.
        video_keys: add ``video_keys`` (one string per row: video path, frame choice, frame count) to each
            batch, for :class:`spatial_mllm.train.sft.EncoderTrunkMemo` (SFT's ``encoder_cache``); the trainer
            takes them out before the forward.

    ``stats`` (a ``Counter``) counts ``samples``, ``truncated``, ``truncated_no_labels`` and
    ``skipped_bad_video`` over every call (per process).
    """

    model_input_names = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "pixel_values_videos",
                         "video_grid_thw", "second_per_grid_ts", "spatial_pixel_values_videos")

    def __init__(self, processor, *, num_frames: int = 16, max_length: int = 8192, on_bad_video: str = "raise",
                 video_cache_size: int = 0, video_keys: bool = False):
        if on_bad_video not in ("raise", "skip"):
            raise ValueError(f"on_bad_video must be 'raise' or 'skip', got {on_bad_video!r}")
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.num_frames = num_frames
        self.max_length = max_length
        self.on_bad_video = on_bad_video
        self.pad_token_id = self.tokenizer.pad_token_id
        self.vision_end_id = self.tokenizer.convert_tokens_to_ids("<|vision_end|>")
        self.stats: Counter = Counter()
        self.video_cache_size = video_cache_size
        self.video_keys = video_keys
        self._videos: OrderedDict = OrderedDict()  # (path, indices, num_frames) → VideoInput, LRU order

    def _video_key(self, item: dict) -> tuple:
        """What decides a row's frames within a run: video path, frame choice, frame count."""
        idx = item.get("frame_indices")
        return str(item["video"]), tuple(idx) if idx is not None else None, self.num_frames

    def _load_video(self, item: dict):
        idx = item.get("frame_indices")
        key = self._video_key(item)
        if key in self._videos:
            self._videos.move_to_end(key)
            return self._videos[key]
        video = self.processor.load_video(item["video"], frame_indices=idx, num_frames=self.num_frames)
        if self.video_cache_size > 0:
            self._videos[key] = video
            while len(self._videos) > self.video_cache_size:
                self._videos.popitem(last=False)
        return video

    def encode(self, item: dict) -> dict[str, Any]:
        """One row → ``input_ids [L]``, ``labels [L]`` and its video's processor outputs (unbatched)."""
        proc = self.processor
        try:
            video = self._load_video(item)
        except (OSError, ValueError, RuntimeError, IndexError) as e:
            raise BadVideoError(f"{item.get('source', item.get('index'))}: video {item['video']}: {e}") from e
        feats = proc(proc.build_prompt(item["prompt"]), videos=[video])
        prompt_ids = feats["input_ids"][0]  # [Lp]
        tok = self.tokenizer
        target = tok(item["answer"] + ANSWER_END, add_special_tokens=False)["input_ids"]
        suffix = tok(TURN_SUFFIX, add_special_tokens=False)["input_ids"]
        input_ids = torch.cat([prompt_ids, torch.tensor(target + suffix, dtype=prompt_ids.dtype)])  # [L]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        labels[len(prompt_ids): len(prompt_ids) + len(target)] = torch.tensor(target)
        if len(input_ids) > self.max_length:
            vision_end = int((prompt_ids == self.vision_end_id).nonzero().max()) + 1
            if self.max_length < vision_end:
                raise BadRowError(
                    f"{item.get('source', item.get('index'))}: max_length {self.max_length} cuts into the video "
                    f"tokens (they end at token {vision_end}); raise max_length or use fewer/smaller frames")
            input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
            self.stats["truncated"] += 1
            if not (labels != IGNORE_INDEX).any():
                self.stats["truncated_no_labels"] += 1
        return {
            "input_ids": input_ids,
            "labels": labels,
            "pixel_values_videos": feats["pixel_values_videos"],  # [t·h·w patches, C·tp·p·p]
            "video_grid_thw": feats["video_grid_thw"],  # [1, 3]
            "second_per_grid_ts": feats["second_per_grid_ts"],  # [1]
            "spatial_pixel_values_videos": feats["spatial_pixel_values_videos"],  # [[S, 3, H, W]] in [0, 1]
        }

    def __call__(self, items: list[dict]) -> dict[str, Any]:
        encoded = []
        for it in items:
            try:
                encoded.append({**self.encode(it), "video_key": json.dumps(self._video_key(it))})
            except BadVideoError:
                if self.on_bad_video == "raise":
                    raise
                self.stats["skipped_bad_video"] += 1
        if not encoded:
            raise BadRowError(f"every row of a batch was bad: {[it.get('source') for it in items]}")
        self.stats["samples"] += len(encoded)
        L = max(len(e["input_ids"]) for e in encoded)
        B = len(encoded)
        input_ids = torch.full((B, L), self.pad_token_id, dtype=torch.long)  # [B, L] right padding
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)  # [B, L]
        attention_mask = torch.zeros((B, L), dtype=torch.long)  # [B, L]
        for b, e in enumerate(encoded):
            n = len(e["input_ids"])
            input_ids[b, :n] = e["input_ids"]
            labels[b, :n] = e["labels"]
            attention_mask[b, :n] = 1
        proc = self.processor
        mm = torch.zeros((B, L), dtype=torch.int32)  # [B, L] 0 text, 1 image, 2 video placeholder
        mm[(input_ids == proc.image_token_id) & attention_mask.bool()] = 1
        mm[(input_ids == proc.video_token_id) & attention_mask.bool()] = 2
        keys = {"video_keys": [e["video_key"] for e in encoded]} if self.video_keys else {}
        return {
            **keys,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "mm_token_type_ids": mm,
            "pixel_values_videos": torch.cat([e["pixel_values_videos"] for e in encoded]),  # [ΣN, D]
            "video_grid_thw": torch.cat([e["video_grid_thw"] for e in encoded]),  # [B, 3]
            "second_per_grid_ts": torch.cat([e["second_per_grid_ts"] for e in encoded]),  # [B]
            "spatial_pixel_values_videos": [v for e in encoded for v in e["spatial_pixel_values_videos"]],
        }


def describe_example(batch: dict, tokenizer, row: int = 0) -> dict[str, Any]:
    """One row of a collated batch in words: the model's input text (runs of ``<|video_pad|>`` shown once
    with their count), the labelled text, and token counts — to check the label mask by eye."""
    mask = batch["attention_mask"][row].bool()
    ids, labels = batch["input_ids"][row][mask], batch["labels"][row][mask]
    video_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    n_video = int((ids == video_id).sum())
    text = tokenizer.decode(ids, skip_special_tokens=False)
    pad = "<|video_pad|>"
    shown = text.replace(pad * n_video, f"{pad}×{n_video}") if n_video else text
    labelled = labels != IGNORE_INDEX
    return {
        "input_text": shown,
        "labelled_text": tokenizer.decode(ids[labelled], skip_special_tokens=False),
        "tokens": int(len(ids)),
        "video_tokens": n_video,
        "labelled_tokens": int(labelled.sum()),
    }
