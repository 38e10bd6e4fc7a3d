"""Build the spatial-QA datasets: synthetic scenes → videos → QA rows → train/val/test files.

This is the data-construction stage of the paper (Section 4.1, "Spatial-MLLM-120k"): the paper collects
ScanNet (and ScanNet++ / ARKitScenes) videos with their 3D annotations and generates ~120k QA pairs of
VSI-Bench's task types from them, then fine-tunes on them. :func:`build_datasets` does the same with
our procedural scenes (``tiny``: a handful of rooms, minutes on a CPU) and, optionally, with real layouts:
VSI-Bench's meta-info (boxes of its 288 validation scenes) and ScanNet scene folders.

Layout written under ``<output_dir>/data/``::

    synthetic/<scene_id>/video.mp4, frames.npz, scene.json      (see spatial_mllm.data.render)
    qa_rows.jsonl                all synthetic QA rows (VSI-Bench fields + answer, slots, split)
    <split>_sft.jsonl            Qwen/Spatial-MLLM training conversations, split ∈ train / val / test
    <split>_vsibench.jsonl       VSI-Bench rows (the benchmark's 7 columns)
    splits.json                  scene ids per split
    summary.json                 counts per type / split, skip reasons, timings
    meta_info_vsibench.jsonl     VSI-Bench rows for the meta-info layouts (when ``meta_info_path``)
    scannet_vsibench.jsonl,      rows and conversations for ScanNet layouts (when ``scannet_root``)
    scannet_sft.jsonl

Video paths in the training files are relative to ``<output_dir>/data`` (``synthetic/<id>/video.mp4``)
for synthetic scenes and VSI-Bench's ``scannet/<scene>.mp4`` layout (relative to the user's video root)
for ScanNet.

Deviations from the paper:
1. Scenes are synthetic by default (the paper has no synthetic data); real layouts only feed QA
   generation here (ScanNet videos must be exported by the user; meta-info has no videos, so
   appearance order and route planning are not generated for it).
2. Splits are by scene with fixed fractions (the paper trains on ScanNet train scenes and evaluates on
   VSI-Bench, whose ScanNet scenes are the validation split).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spatial_mllm.config import StageConfig, register_params, resolve_path
from spatial_mllm.data import formats, qa
from spatial_mllm.data.render import RenderConfig, render_scene, save_rendered
from spatial_mllm.data.scene import SceneMeta, load_vsibench_meta
from spatial_mllm.data.synthetic import SyntheticSceneConfig, generate_scene

__all__ = ["DataConfig", "BuildResult", "build_datasets", "split_scenes", "load_meta_info"]

SPLITS = ("train", "val", "test")


@register_params("01_data_construction")
@dataclass
class DataConfig(StageConfig):
    """Parameters of notebook 01 (data construction). Defaults are the ``tiny`` preset."""

    output_dir: str = field(
        default="outputs/tiny", metadata={"help": "run folder; data goes to <output_dir>/data"}
    )
    seed: int = field(default=0, metadata={"help": "seed of scenes, camera paths, QA and splits"})
    num_scenes: int = field(default=8, metadata={"help": "synthetic scenes to generate and render"})
    min_area: float = field(
        default=8.0, metadata={"help": "smallest room floor area, m² (VSI-Bench rooms: ~8-60)"}
    )
    max_area: float = field(default=30.0, metadata={"help": "largest room floor area, m²"})
    l_shape_prob: float = field(default=0.35, metadata={"help": "probability that a room is L-shaped"})
    instance_counts: list[int] | None = field(default=None, metadata={
        "help": "instance counts drawn uniformly for categories that may repeat (chairs, stools, plants...); "
                "null = the catalog's own (mostly 1-2, so counting truths are mostly 2); e.g. [1, 2, 3, 4, 5, 6]"})
    width: int = field(default=112, metadata={"help": "rendered frame width, pixels (even)"})
    height: int = field(default=84, metadata={"help": "rendered frame height, pixels (even)"})
    num_frames: int = field(default=48, metadata={"help": "frames per rendered video"})
    fps: float = field(
        default=2.0,
        metadata={"help": "frame rate of the rendered videos (appearance-order times are frame / fps)"},
    )
    render_threads: int = field(default=1, metadata={"help": "Embree threads per scene (0 = all cores)"})
    crf: int = field(default=18, metadata={"help": "H.264 constant rate factor of video.mp4"})
    question_types: list[str] = field(
        default_factory=lambda: list(qa.QUESTION_TYPES),
        metadata={"help": "VSI-Bench task types to generate (plus route_planning)"},
    )
    max_questions_per_type: int = field(
        default=10, metadata={"help": "cap per scene and type (room size is always 1 per scene)"}
    )
    train_fraction: float = field(default=0.7, metadata={"help": "fraction of scenes in the train split"})
    val_fraction: float = field(
        default=0.15, metadata={"help": "fraction of scenes in val; test gets the rest"}
    )
    meta_info_path: str | None = field(
        default=None,
        metadata={
            "help": "VSI-Bench *_meta_info_val.json file or folder; QA for its real layouts (optional)"
        },
    )
    scannet_root: str | None = field(
        default=None, metadata={"help": "folder of ScanNet scene folders (scans/<scene_id>/...); optional"}
    )
    scannet_scenes: list[str] = field(
        default_factory=list,
        metadata={"help": "ScanNet scene ids to use; empty = every folder under the root"},
    )

    def __post_init__(self):
        if self.num_scenes < 1:
            raise ValueError(f"num_scenes must be >= 1, got {self.num_scenes}")
        if not (
            0 < self.train_fraction <= 1
            and 0 <= self.val_fraction
            and self.train_fraction + self.val_fraction <= 1
        ):
            raise ValueError("need 0 < train_fraction, 0 <= val_fraction, train_fraction + val_fraction <= 1")
        bad = [t for t in self.question_types if t not in qa.QUESTION_TYPES]
        if bad:
            raise ValueError(f"unknown question types {bad}; choose from {list(qa.QUESTION_TYPES)}")
        if self.max_questions_per_type < 1:
            raise ValueError("max_questions_per_type must be >= 1")
        if self.instance_counts is not None and (not self.instance_counts or min(self.instance_counts) < 1):
            raise ValueError(f"instance_counts must be a non-empty list of positive ints, got {self.instance_counts}")
        # the scene and render configs validate the rest (area range, even frame size, ...)
        self.scene_config()
        self.render_config()

    def scene_config(self) -> SyntheticSceneConfig:
        return SyntheticSceneConfig(
            seed=self.seed, min_area=self.min_area, max_area=self.max_area, l_shape_prob=self.l_shape_prob,
            **({} if self.instance_counts is None else {"instance_counts": tuple(self.instance_counts),
                                                        "max_instances": max(self.instance_counts)}),
        )

    def render_config(self) -> RenderConfig:
        return RenderConfig(
            width=self.width,
            height=self.height,
            num_frames=self.num_frames,
            fps=self.fps,
            nthreads=self.render_threads,
            crf=self.crf,
        )

    def qa_config(self) -> qa.QAConfig:
        base = qa.QAConfig()
        return qa.QAConfig(
            max_per_scene={k: min(v, self.max_questions_per_type) for k, v in base.max_per_scene.items()}
        )


@dataclass
class BuildResult:
    """What :func:`build_datasets` made (paths are absolute)."""

    data_dir: Path  # <output_dir>/data
    scene_dirs: dict[str, Path]  # synthetic scene id → folder with video.mp4, frames.npz, scene.json
    splits: dict[str, list[str]]  # split → scene ids
    rows: list[dict]  # synthetic QA rows (with "split")
    skipped: Counter  # "<question_type>/<reason>" → count, synthetic scenes
    placement_skipped: Counter  # "<category>/<reason>" → objects the generator could not place
    meta_info_rows: list[dict] | None  # QA rows for the meta-info layouts (None when not requested)
    meta_info_skipped: Counter | None
    scannet_rows: list[dict] | None  # QA rows for ScanNet layouts (None when not requested)
    summary: dict  # JSON-able counts and timings (also written to summary.json)


def split_scenes(scene_ids: list[str], train: float, val: float, seed: int) -> dict[str, list[str]]:
    """Shuffle scene ids with ``seed`` and cut into train / val / test (at least one train scene)."""
    ids = sorted(scene_ids)
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n_train = max(1, int(round(train * len(ids))))
    n_val = min(len(ids) - n_train, int(round(val * len(ids))))
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def load_meta_info(path: str | Path) -> dict[str, SceneMeta]:
    """VSI-Bench meta-info: one ``*_meta_info_val.json`` or a folder of them → ``{scene_id: SceneMeta}``."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*_meta_info_val.json")) or sorted(p.glob("*.json"))
        if not files:
            raise FileNotFoundError(f"no *_meta_info_val.json files in {p}")
    elif p.is_file():
        files = [p]
    else:
        raise FileNotFoundError(f"VSI-Bench meta-info path not found: {p}")
    scenes: dict[str, SceneMeta] = {}
    for f in files:
        scenes.update(load_vsibench_meta(f))
    return scenes


def _counts(rows: list[dict]) -> dict[str, int]:
    c = Counter(r["question_type"] for r in rows)
    return {t: c.get(t, 0) for t in qa.QUESTION_TYPES if c.get(t, 0)}


def _write_split_files(rows: list[dict], data_dir: Path, prefix: str, video_path) -> dict[str, str]:
    files = {}
    sft = formats.write_training_jsonl(rows, data_dir / f"{prefix}_sft.jsonl", video_path=video_path)
    vsi = formats.write_vsibench_rows(rows, data_dir / f"{prefix}_vsibench.jsonl")
    files[f"{prefix}_sft"] = str(sft)
    files[f"{prefix}_vsibench"] = str(vsi)
    return files


def build_datasets(cfg: DataConfig, progress: bool = False) -> BuildResult:
    """Generate ``cfg.num_scenes`` synthetic scenes, render their videos, generate QA of every requested
    type, split by scene and write the files listed in the module docstring. Deterministic in ``cfg``."""
    t0 = time.perf_counter()
    data_dir = resolve_path(cfg.output_dir) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    scfg, rcfg, qcfg = cfg.scene_config(), cfg.render_config(), cfg.qa_config()

    # 1. scenes and videos
    scene_dirs: dict[str, Path] = {}
    metas: list[SceneMeta] = []
    videos: dict[str, tuple[np.ndarray, float]] = {}
    placement_skipped: Counter = Counter()
    t_render = 0.0
    for i in range(cfg.num_scenes):
        scene = generate_scene(scfg, i)
        placement_skipped.update(f"{cat}/{why}" for cat, why in scene.skipped)
        t = time.perf_counter()
        frames = render_scene(scene, rcfg, seed=cfg.seed)
        t_render += time.perf_counter() - t
        sid = scene.meta.scene_id
        scene.meta.video_path = f"synthetic/{sid}/video.mp4"
        scene_dirs[sid] = save_rendered(data_dir / "synthetic", scene.meta, frames, crf=cfg.crf)
        metas.append(scene.meta)
        videos[sid] = (frames.instance_ids, frames.fps)
        if progress:
            print(
                f"scene {i + 1}/{cfg.num_scenes}: {sid}, {scene.meta.room_size:.1f} m², "
                f"{len(scene.meta.objects)} objects"
            )
    t_scenes = time.perf_counter() - t0

    # 2. questions, 3. splits
    t = time.perf_counter()
    rows, skipped = qa.generate_for_scenes(
        metas, cfg.question_types, seed=cfg.seed, config=qcfg, videos=videos
    )
    splits = split_scenes(list(scene_dirs), cfg.train_fraction, cfg.val_fraction, cfg.seed)
    split_of = {sid: s for s, ids in splits.items() for sid in ids}
    for r in rows:
        r["split"] = split_of[r["scene_name"]]
    t_qa = time.perf_counter() - t

    # 4. files
    files = {"qa_rows": str(formats.write_jsonl(rows, data_dir / "qa_rows.jsonl"))}
    for s in SPLITS:
        files.update(
            _write_split_files(
                [r for r in rows if r["split"] == s],
                data_dir,
                s,
                lambda r: f"synthetic/{r['scene_name']}/video.mp4",
            )
        )
    (data_dir / "splits.json").write_text(json.dumps(splits, indent=2) + "\n")

    # 5. real layouts (optional)
    meta_rows = meta_skipped = scannet_rows = None
    extra: dict = {}
    if cfg.meta_info_path is not None:
        layouts = load_meta_info(resolve_path(cfg.meta_info_path))
        types = [t for t in cfg.question_types if t in qa.META_INFO_TYPES]
        meta_rows, meta_skipped = qa.generate_for_scenes(layouts, types, seed=cfg.seed, config=qcfg)
        files["meta_info_vsibench"] = str(
            formats.write_vsibench_rows(meta_rows, data_dir / "meta_info_vsibench.jsonl")
        )
        extra["meta_info"] = {
            "scenes": len(layouts),
            "qa_counts": _counts(meta_rows),
            "skipped": dict(sorted(meta_skipped.items())),
        }
    if cfg.scannet_root is not None:
        from spatial_mllm.data.scannet import VSIBENCH_LABEL_MAP, load_scannet_scene

        root = resolve_path(cfg.scannet_root)
        if not root.is_dir():
            raise FileNotFoundError(f"ScanNet root not found: {root}")
        ids = cfg.scannet_scenes or sorted(p.name for p in root.iterdir() if p.is_dir())
        layouts = [
            load_scannet_scene(root / sid, label_map=VSIBENCH_LABEL_MAP, with_frames=False).scene
            for sid in ids
        ]
        types = [t for t in cfg.question_types if t in qa.META_INFO_TYPES]
        scannet_rows, sc_skipped = qa.generate_for_scenes(layouts, types, seed=cfg.seed, config=qcfg)
        files.update(_write_split_files(scannet_rows, data_dir, "scannet", formats.default_video_path))
        extra["scannet"] = {
            "scenes": len(layouts),
            "qa_counts": _counts(scannet_rows),
            "skipped": dict(sorted(sc_skipped.items())),
        }

    summary = {
        "scenes": {s: len(ids) for s, ids in splits.items()},
        "objects": int(sum(len(m.objects) for m in metas)),
        "categories": sorted({o.category for m in metas for o in m.objects}),
        "qa_counts": _counts(rows),
        "qa_counts_by_split": {s: _counts([r for r in rows if r["split"] == s]) for s in SPLITS},
        "skipped": dict(sorted(skipped.items())),
        "placement_skipped": dict(sorted(placement_skipped.items())),
        "seconds": {
            "scenes_and_videos": round(t_scenes, 2),
            "render": round(t_render, 2),
            "qa": round(t_qa, 2),
            "total": round(time.perf_counter() - t0, 2),
        },
        "files": {k: str(Path(v).relative_to(data_dir)) for k, v in files.items()},
        **extra,
    }
    (data_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return BuildResult(
        data_dir=data_dir,
        scene_dirs=scene_dirs,
        splits=splits,
        rows=rows,
        skipped=skipped,
        placement_skipped=placement_skipped,
        meta_info_rows=meta_rows,
        meta_info_skipped=meta_skipped,
        scannet_rows=scannet_rows,
        summary=summary,
    )
