"""SFT data: answer-only labels, padding of videos of different sizes, frames cache, bad rows, truncation."""

import json

import numpy as np
import pytest
import torch

from spatial_mllm.data import formats
from spatial_mllm.data.collate import (
    IGNORE_INDEX,
    BadRowError,
    BadVideoError,
    SFTCollator,
    SFTDataset,
    frames_cache_keys,
)
from spatial_mllm.data.render import write_mp4
from spatial_mllm.models.tiny import tiny_model

QA = [  # (question_type, question, ground truth, options)
    ("object_counting", "How many chair(s) are in this room?", "2", None),
    ("object_rel_distance", "Which of these objects (sofa, bed) is the closest to the tv?", "B",
     ["A. sofa", "B. bed"]),
    ("object_size_estimation", "What is the length of the longest dimension of the table, in centimeters?",
     "150", None),
    ("room_size_estimation", "What is the size of this room (in square meters)?", "21.5", None),
]


def make_videos_and_rows(root, sizes=((8, 56, 56), (8, 84, 112), (6, 56, 84)), rows_per_video=2):
    """Small noise mp4s under ``root/videos`` and a training jsonl ``root/train.jsonl``."""
    rng = np.random.default_rng(0)
    recs = []
    for v, (t, h, w) in enumerate(sizes):
        write_mp4(root / "videos" / f"v{v}.mp4", (rng.random((t, h, w, 3)) * 255).astype(np.uint8), fps=2.0)
        for k in range(rows_per_video):
            qt, q, gt, opts = QA[(v * rows_per_video + k) % len(QA)]
            row = {"id": len(recs), "dataset": "synthetic", "scene_name": f"v{v}", "question_type": qt,
                   "question": q, "ground_truth": gt, "options": opts}
            recs.append(formats.to_training_record(row, video=f"videos/v{v}.mp4"))
    formats.write_jsonl(recs, root / "train.jsonl")
    return root / "train.jsonl", recs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sftdata")
    path, recs = make_videos_and_rows(root)
    return root, path, recs


def test_only_answer_tokens_carry_labels(proc, data):
    _, path, recs = data
    ds = SFTDataset(path, num_frames=4)
    batch = SFTCollator(proc, num_frames=4)([ds[1]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    labelled = labels != IGNORE_INDEX
    # the labelled tokens are one contiguous run at the end: the answer and the closing <|im_end|>
    pos = labelled.nonzero().flatten()
    assert torch.equal(pos, torch.arange(pos[0], pos[-1] + 1))
    assert torch.equal(labels[labelled], ids[labelled])
    assert proc.tokenizer.decode(ids[labelled]) == recs[1]["conversations"][1]["value"] + "<|im_end|>" == "B<|im_end|>"
    prompt = proc.tokenizer.decode(ids[: pos[0]])
    assert prompt.endswith("<|im_start|>assistant\n") and "Options:\nA. sofa\nB. bed" in prompt
    assert "<video>" not in prompt and (ids == proc.video_token_id).sum() > 0
    assert proc.tokenizer.decode(ids[pos[-1] + 1:]) == "\n"  # template's newline after <|im_end|>, unlabelled


def test_batch_of_different_video_sizes_matches_single_rows(tok, proc, data):
    _, path, _ = data
    ds = SFTDataset(path, num_frames=4)
    col = SFTCollator(proc, num_frames=4)
    items = [ds[0], ds[2], ds[4]]  # three videos of three sizes
    batch = col(items)
    assert batch["video_grid_thw"].shape == (3, 3) and len({tuple(g) for g in batch["video_grid_thw"].tolist()}) == 3
    assert batch["pixel_values_videos"].shape[0] == int(batch["video_grid_thw"].prod(-1).sum())
    lengths = batch["attention_mask"].sum(-1)
    for b in range(3):  # right padding: ones then zeros, pads carry no label and no modality
        assert batch["attention_mask"][b, : lengths[b]].all() and not batch["attention_mask"][b, lengths[b]:].any()
        assert (batch["labels"][b, lengths[b]:] == IGNORE_INDEX).all()
        assert (batch["mm_token_type_ids"][b, lengths[b]:] == 0).all()
    assert ((batch["mm_token_type_ids"] == 2) == (batch["input_ids"] == proc.video_token_id)).all()
    model = tiny_model(tok)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for b, it in enumerate(items):
            one = col([it])
            single = model(**{k: v for k, v in one.items() if k != "labels"}).logits[0]
            torch.testing.assert_close(logits[b, : lengths[b]], single, atol=1e-4, rtol=1e-4)


def test_frames_cache_indices_are_used(proc, data, tmp_path):
    root, path, _ = data
    assert frames_cache_keys("synthetic/s0/video.mp4") == ["synthetic/s0/video.mp4", "synthetic/s0/video",
                                                          "synthetic/s0"]
    cache = {"videos/v0": [0, 3, 5, 7], "videos/v1.mp4": [1, 2, 4, 6], "videos/v2": [0, 1, 2, 5]}
    (tmp_path / "cache.json").write_text(json.dumps(cache))
    ds = SFTDataset(path, frames_cache=tmp_path / "cache.json", num_frames=4)
    assert ds[0]["frame_indices"] == [0, 3, 5, 7] and ds[2]["frame_indices"] == [1, 2, 4, 6]
    col = SFTCollator(proc, num_frames=4, video_cache_size=4)
    assert col._load_video(ds[2]).indices == [1, 2, 4, 6]
    assert col._load_video(ds[2]) is col._load_video(ds[3])  # the LRU cache serves rows of one video
    with pytest.raises(BadRowError, match=r"train.jsonl:5: the frames cache has no entry for video 'videos/v2.mp4'"):
        SFTDataset(path, frames_cache={"videos/v0": [0, 1], "videos/v1": [0, 1]}, num_frames=4)
    with pytest.raises(BadVideoError, match=r"train.jsonl:1: .*too few frames: 8 frames, 10 needed"):
        SFTDataset(path, frames_cache={**cache, "videos/v0": [0, 9]}, num_frames=4)


def test_missing_and_unreadable_videos_raise_naming_the_row_or_are_skipped(proc, data, tmp_path):
    root, _, recs = data
    bad = [dict(recs[0]), dict(recs[1], video="videos/nope.mp4"), dict(recs[2], video="videos/broken.mp4")]
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    formats.write_jsonl(bad, tmp_path / "bad.jsonl")
    with pytest.raises(BadVideoError, match=r"bad.jsonl:2: video .*nope.mp4: missing: file not found"):
        SFTDataset(tmp_path / "bad.jsonl", video_root=root, num_frames=4)
    formats.write_jsonl([bad[0], bad[2]], tmp_path / "bad2.jsonl")
    with pytest.raises(BadVideoError, match=r"bad2.jsonl:2: video .*broken.mp4"):
        SFTDataset(tmp_path / "bad2.jsonl", video_root=root, num_frames=4)
    with pytest.raises(BadVideoError, match=r"bad2.jsonl:1: video .*v0.mp4: too few frames: 8 frames, 10 needed"):
        SFTDataset(tmp_path / "bad2.jsonl", video_root=root, num_frames=10)
    ds = SFTDataset(tmp_path / "bad.jsonl", video_root=root, num_frames=4, on_bad_video="skip")
    assert len(ds) == 1 and dict(ds.skipped) == {"missing": 1, "unreadable": 1}
    assert [s.rsplit(":", 1)[1] for s in ds.skipped_rows] == ["2", "3"]
    # a video that goes bad after the dataset was checked: the collator names the row, or skips and counts
    video = root / "videos" / "gone.mp4"
    video.write_bytes((root / "videos" / "v0.mp4").read_bytes())
    formats.write_jsonl([dict(recs[0], video="videos/gone.mp4"), recs[1]], tmp_path / "late.jsonl")
    ds = SFTDataset(tmp_path / "late.jsonl", video_root=root, num_frames=4)
    video.unlink()
    with pytest.raises(BadVideoError, match=r"late.jsonl:1: video .*gone.mp4"):
        SFTCollator(proc, num_frames=4)([ds[0], ds[1]])
    col = SFTCollator(proc, num_frames=4, on_bad_video="skip")
    batch = col([ds[0], ds[1]])
    assert batch["input_ids"].shape[0] == 1 and col.stats["skipped_bad_video"] == 1 and col.stats["samples"] == 1


def test_malformed_conversation_names_the_row(data):
    _, _, recs = data
    two_videos = dict(recs[0], conversations=[{"from": "human", "value": "<video><video>q"},
                                              {"from": "gpt", "value": "2"}])
    with pytest.raises(BadRowError, match=r"row 1: the human turn must hold exactly one <video>"):
        SFTDataset([recs[0], two_videos], check_videos=False)
    with pytest.raises(BadRowError, match=r"row 0: expected one human and one gpt turn"):
        SFTDataset([dict(recs[0], conversations=recs[0]["conversations"] * 2)], check_videos=False)


def test_over_long_samples_are_truncated_and_counted(proc, data):
    _, path, _ = data
    ds = SFTDataset(path, num_frames=4)
    full = SFTCollator(proc, num_frames=4).encode(ds[2])  # "150": 3 digit tokens + <|im_end|> + "\n"
    n = len(full["input_ids"])
    n_prompt = int((full["labels"] != IGNORE_INDEX).nonzero().min())  # first answer token
    assert n - n_prompt == 5
    col = SFTCollator(proc, num_frames=4, max_length=n - 3)
    batch = col([ds[2], ds[0]])
    assert batch["input_ids"].shape[1] == n - 3 and col.stats["truncated"] == 1
    assert int((batch["labels"][0] != IGNORE_INDEX).sum()) == 2  # "1", "5" survive; "0", <|im_end|> cut
    col = SFTCollator(proc, num_frames=4, max_length=n_prompt)
    col([ds[2]])
    assert col.stats["truncated"] == 1 and col.stats["truncated_no_labels"] == 1
    with pytest.raises(BadRowError, match=r"train.jsonl:3: max_length 20 cuts into the video tokens"):
        SFTCollator(proc, num_frames=4, max_length=20)([ds[2]])


def test_short_videos_use_every_frame_once_under_the_official_training_rule(tok, data):
    """data_qwen.py reads a video shorter than the frames asked for whole (``np.unique(np.linspace(...))``):
    with ``short_videos="all_frames"`` (what SFT passes for the ``official_train`` preset) the 8-frame video
    is a good row and the collator reads each of its frames once; the default still calls it bad."""
    from spatial_mllm.models.processing import SpatialMLLMProcessor

    root, path, _ = data
    with pytest.raises(BadVideoError, match="too few frames: 8 frames, 10 needed"):
        SFTDataset(path, num_frames=10)
    ds = SFTDataset(path, num_frames=10, short_videos="all_frames")
    assert len(ds) == 6
    official = SpatialMLLMProcessor.build(tok, pixel_preset="official_train", num_frames=10)
    video = SFTCollator(official, num_frames=10)._load_video(ds[0])
    assert video.indices == list(range(8))
    with pytest.raises(ValueError, match="short_videos"):
        SFTDataset(path, num_frames=10, short_videos="pad")
