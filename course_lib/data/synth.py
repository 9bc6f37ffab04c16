"""SynthAffWild: synthetic face videos with known AUs, written in the s-Aff-Wild2 format.

Taught in ``01_data``. The real s-Aff-Wild2 set is licence-gated, so the course generates
videos that use exactly its layout and annotation format (one loader serves both) and that
know the truth behind every label. :mod:`course_lib.data.plan` decides each video's story
(identity, expression episodes, talking, valence and arousal, clean labels, the annotators'
noisy and partly missing labels, nuisances); this module draws the frames
(:mod:`course_lib.data.face`) and the voice (:mod:`course_lib.data.voice`), writes the folder,
and manages the data set the course uses (:func:`ensure_course_data`, sized by the ``"data"`` row of
:mod:`course_lib.budgets`; the ground truth behind :func:`clean_labels` and :func:`oracle_scores`).

Written under ``root``: ``cropped_aligned/<video>/<NNNNN>.jpg``, the two annotation files,
``audio/<video>.wav`` when asked, ``ground_truth/<video>.npz`` (clean labels, AU intensities,
AU image regions, occlusion flags) and ``metadata.json``. Same seed, same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from ..budgets import budget
from ..config import data_dir
from ..files import atomic_write
from ..labels import AU_NAMES
from ..metrics import p_mtl
from ..progress import progress
from .abaw import (LABEL_COLUMNS, SPLIT_FILES, TEST_LABELS, TEST_LIST, make_table, read_mtl_annotations,
                   write_mtl_annotations, write_test_list)
from .face import AU_THRESHOLD, REGION_VERTICES, Identity, Occluder, Pose, render_face, region_mask, sample_identity
from .plan import EXPR_PROTOTYPES, FPS, MISSING_RATES, VideoPlan, plan_dataset
from .voice import SAMPLE_RATE, wav_bytes

GENERATOR = "SynthAffWild"
VERSION = 2  # 2: every AU active in each split (_ensure_au_coverage)

# --------------------------------------------------------------------------------------
# pixels
# --------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) * 2 - 1
    return yy, xx


def finish_frame(img: Image.Image, light: np.ndarray, blur: float, noise: np.ndarray) -> Image.Image:
    """Lighting gradient, sensor noise and blur on a rendered face."""
    arr = np.asarray(img, dtype=np.float32)
    yy, xx = _grid(img.size[0])
    gain, angle, strength = light
    shade = gain * (1.0 + strength * (np.cos(angle) * xx + np.sin(angle) * yy))
    arr = arr * shade[:, :, None] + noise
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if blur > 0.15:
        out = out.filter(ImageFilter.GaussianBlur(radius=float(blur)))
    return out


def _pack_regions(regions: list[list[np.ndarray]]) -> np.ndarray:
    packed = np.full((12, 2, REGION_VERTICES, 2), np.nan, dtype=np.float32)
    for k, polys in enumerate(regions):
        for j, poly in enumerate(polys[:2]):
            packed[k, j] = poly
    return packed


def _render_video(plan: VideoPlan, root: str, image_size: int, seed: int) -> str:
    """Render and write one video's frames, ground truth and audio (run in a worker)."""
    root_p = Path(root)
    rng = np.random.default_rng([seed, plan.index, 7])
    final = root_p / "cropped_aligned" / plan.name
    partial = root_p / "cropped_aligned" / f".partial-{plan.name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    bank = rng.normal(0, plan.noise, (4, image_size, image_size, 3)).astype(np.float32)
    regions = np.empty((plan.n_frames, 12, 2, REGION_VERTICES, 2), dtype=np.float32)
    for i in range(plan.n_frames):
        img, regs = render_face(plan.identity, plan.au_intensity[i], plan.poses[i], image_size=image_size,
                                occluder=plan.occluders[i])
        noise = np.roll(bank[i % 4], shift=(int(rng.integers(image_size)), int(rng.integers(image_size))), axis=(0, 1))
        img = finish_frame(img, plan.light[i], float(plan.blur[i]), noise)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(plan.jpeg_quality[i]))
        (partial / f"{i + 1:05d}.jpg").write_bytes(buf.getvalue())
        regions[i] = _pack_regions(regs)
    gt_dir = root_p / "ground_truth"
    atomic_write(gt_dir / f"{plan.name}.npz", _npz_bytes(
        valence=plan.valence.astype(np.float32), arousal=plan.arousal.astype(np.float32),
        expression=plan.expression.astype(np.int8), episode_class=plan.episode_class.astype(np.int8),
        au=(plan.au_intensity >= AU_THRESHOLD).astype(np.int8), au_intensity=plan.au_intensity.astype(np.float16),
        regions=regions.astype(np.float16), occluded=plan.occluded, talking=plan.talking,
        pose=np.array([[p.roll, p.scale, p.dx, p.dy, p.yaw] for p in plan.poses], dtype=np.float32),
    ))
    if plan.audio is not None:
        atomic_write(root_p / "audio" / f"{plan.name}.wav", wav_bytes(plan.audio))
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    return plan.name


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# the data set
# --------------------------------------------------------------------------------------

def _config(n_videos, frames_per_video, image_size, seed, audio, val_fraction, test_videos=0) -> dict:
    config = {"generator": GENERATOR, "version": VERSION, "n_videos": int(n_videos),
              "frames_per_video": int(frames_per_video), "image_size": int(image_size), "seed": int(seed),
              "audio": bool(audio), "val_fraction": float(val_fraction), "fps": FPS,
              "sample_rate": SAMPLE_RATE, "au_threshold": AU_THRESHOLD, "missing": MISSING_RATES}
    if test_videos:  # only then: a data set made without a test split keeps its settings (and caches)
        config["test_videos"] = int(test_videos)
    return config


def _annotation_table(plans: list[VideoPlan]) -> pd.DataFrame:
    """The annotation table of ``plans`` (the columns and dtypes of :func:`abaw.read_mtl_annotations`)."""
    labels = pd.DataFrame(np.concatenate([np.column_stack([p.annotations["va"], p.annotations["expr"],
                                                           p.annotations["au"]]) for p in plans]),
                          columns=list(LABEL_COLUMNS))
    image = [f"{p.name}/{i + 1:05d}.jpg" for p in plans for i in range(p.n_frames)]
    video = [p.name for p in plans for _ in range(p.n_frames)]
    frame = np.concatenate([np.arange(1, p.n_frames + 1) for p in plans])
    return make_table(image, video, frame, labels)


def generate_dataset(root: Path | str, *, n_videos: int, frames_per_video: int, image_size: int = 112,
                     seed: int = 0, audio: bool = False, val_fraction: float = 0.2, test_videos: int = 0,
                     workers: int | None = None, overwrite: bool = False, progress_bar: bool = True) -> Path:
    """Generate SynthAffWild into ``root`` in the s-Aff-Wild2 layout; returns ``root``.

    With ``test_videos``, a test split of new people as the challenge hands it out: the list of its
    images (:data:`~course_lib.data.abaw.TEST_LIST`) and, apart, its labels
    (:data:`~course_lib.data.abaw.TEST_LABELS`), which only the final score may read.

    Reuses a complete data set with the same settings, resumes an interrupted one (finished
    videos are kept), and refuses to replace a different one unless ``overwrite=True``.
    ``workers`` processes render videos in parallel (default: one per core, one if small).
    """
    root = Path(root)
    config = _config(n_videos, frames_per_video, image_size, seed, audio, val_fraction, test_videos)
    meta_path, partial_path = root / "metadata.json", root / ".generating.json"
    if meta_path.exists():
        existing = json.loads(meta_path.read_text())
        if existing.get("config") == config:
            return root
        if not overwrite:
            diff = sorted(k for k in config if existing.get("config", {}).get(k) != config[k])
            raise FileExistsError(f"{root} holds a different data set (differs in {', '.join(diff)}): "
                                  "pass overwrite=True or choose another folder")
    if overwrite or (partial_path.exists() and json.loads(partial_path.read_text()) != config):
        for sub in ("cropped_aligned", "ground_truth", "audio", Path(TEST_LABELS).parent):
            shutil.rmtree(root / sub, ignore_errors=True)
        for f in (*SPLIT_FILES.values(), TEST_LIST, "metadata.json"):
            (root / f).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(partial_path, json.dumps(config).encode())
    plans = plan_dataset(n_videos, frames_per_video, seed=seed, audio=audio, val_fraction=val_fraction,
                         test_videos=test_videos)

    def done(p: VideoPlan) -> bool:
        return ((root / "cropped_aligned" / p.name).is_dir() and (root / "ground_truth" / f"{p.name}.npz").exists()
                and (not audio or (root / "audio" / f"{p.name}.wav").exists()))

    todo = [p for p in plans if not done(p)]
    total_frames = (n_videos + test_videos) * frames_per_video
    if workers is None:
        workers = 1 if total_frames < 1500 else min(os.cpu_count() or 1, len(todo))
    bar = progress(total=sum(p.n_frames for p in todo), desc="rendering frames", unit="frame",
                   disable=not progress_bar)
    if workers <= 1 or len(todo) <= 1:
        for p in todo:
            _render_video(p, str(root), image_size, seed)
            bar.update(p.n_frames)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_render_video, p, str(root), image_size, seed): p for p in todo}
            for fut in futures:
                fut.result()
                bar.update(futures[fut].n_frames)
    bar.close()
    table = _annotation_table(plans)
    split = table["video"].map({p.name: p.split for p in plans})
    for name in ("train", "validation"):
        write_mtl_annotations(table[split == name], root / SPLIT_FILES[name])
    if test_videos:
        (root / TEST_LABELS).parent.mkdir(exist_ok=True)
        write_mtl_annotations(table[split == "test"], root / TEST_LABELS)
        write_test_list(table.loc[split == "test", "image"].tolist(), root / TEST_LIST)
    written = ("train", "validation", "test") if test_videos else ("train", "validation")
    metadata = {"config": config, "fps": FPS, "sample_rate": SAMPLE_RATE if audio else None,
                "image_size": image_size, "splits": {s: [p.name for p in plans if p.split == s] for s in written},
                "frames": {p.name: p.n_frames for p in plans}}
    atomic_write(meta_path, json.dumps(metadata, indent=1).encode())
    partial_path.unlink(missing_ok=True)
    return root


def read_metadata(root: Path | str) -> dict:
    """The ``metadata.json`` of a generated data set (raises FileNotFoundError for real data)."""
    path = Path(root) / "metadata.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {root} is not a complete SynthAffWild data set")
    return json.loads(path.read_text())


def dataset_fingerprint(root: Path | str) -> str:
    """A short hash identifying the data in ``root`` (cache keys for features and checkpoints)."""
    root = Path(root)
    h = hashlib.sha256()
    meta = root / "metadata.json"
    if meta.exists():
        h.update(meta.read_bytes())
    for name in SPLIT_FILES.values():
        path = root / name
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def load_ground_truth(root: Path | str, video: str) -> dict[str, np.ndarray]:
    """The clean labels, AU intensities, AU regions and flags of one generated video."""
    path = Path(root) / "ground_truth" / f"{video}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: ground truth exists only for SynthAffWild data")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def au_region_masks(ground_truth: dict[str, np.ndarray], frame_index: int, image_size: int) -> np.ndarray:
    """Boolean masks (12, H, W): where each AU acts in frame ``frame_index`` (0-based)."""
    regions = ground_truth["regions"][frame_index].astype(np.float64)
    return np.stack([region_mask([poly for poly in regions[k] if np.all(np.isfinite(poly))], image_size)
                     for k in range(12)])


def clean_labels(root: Path | str, table) -> dict[str, np.ndarray]:
    """Clean (noise-free, never missing) labels for the rows of an annotation ``table``."""
    va = np.zeros((len(table), 2), dtype=np.float64)
    expr = np.zeros(len(table), dtype=np.int64)
    au = np.zeros((len(table), 12), dtype=np.int64)
    for video, rows in table.groupby("video", sort=False).indices.items():
        gt = load_ground_truth(root, video)
        frames = table["frame"].to_numpy()[rows] - 1
        va[rows] = np.stack([gt["valence"][frames], gt["arousal"][frames]], axis=1)
        expr[rows] = gt["expression"][frames]
        au[rows] = gt["au"][frames]
    return {"va": va, "expr": expr, "au": au}


def oracle_scores(root: Path | str, split: str = "validation") -> dict:
    """P_MTL (and its parts) of the clean labels scored against the noisy annotations.

    What a model that recovered the truth perfectly would score: a scale for the gap a model
    closes, not a proven ceiling (CCC and F1 reward matching the annotators' mean, spread and
    thresholds, which a prediction can do better than the truth; ``01_data`` tests it for VA).
    """
    name = {**SPLIT_FILES, "test": TEST_LABELS}[split]
    table = read_mtl_annotations(Path(root) / name)
    clean = clean_labels(root, table)
    return p_mtl(table[["valence", "arousal"]].to_numpy(), clean["va"], table["expression"].to_numpy(),
                 clean["expr"], table[list(AU_NAMES)].to_numpy(), clean["au"])


def ensure_course_data(mode: str = "smoke", *, audio: bool = True, seed: int = 0,
                       progress_bar: bool = True) -> Path:
    """The data folder the notebooks use: a real copy if ``COURSE_DATA`` holds one, else SynthAffWild.

    A folder with ``training_set_annotations.txt`` and ``cropped_aligned/`` but no
    SynthAffWild metadata is taken as a real s-Aff-Wild2 copy and used as it is. Otherwise the
    synthetic set for ``mode`` is generated under ``<data>/synth-<mode>`` (reused when present;
    regenerated when it was made by another generator version or with other settings).
    """
    base = data_dir(create=True)
    if (base / "training_set_annotations.txt").exists() and (base / "cropped_aligned").is_dir() \
            and not (base / "metadata.json").exists():
        return base
    return synthetic_course_data(mode, audio=audio, seed=seed, progress_bar=progress_bar)


def synthetic_course_data(mode: str = "smoke", *, audio: bool = True, seed: int = 0,
                          progress_bar: bool = True) -> Path:
    """SynthAffWild for ``mode`` under ``<data>/synth-<mode>``, even when ``COURSE_DATA`` holds a real copy
    (``07_multimodal_audio`` uses it when the real copy has no audio).

    Reused when present; regenerated when it was made by another generator version or with other settings.
    """
    return generate_dataset(data_dir(create=True) / f"synth-{mode}", **budget("data", mode), seed=seed,
                            audio=audio, progress_bar=progress_bar, overwrite=True)


__all__ = ["AU_THRESHOLD", "EXPR_PROTOTYPES", "Identity", "Occluder", "Pose", "VideoPlan",
           "au_region_masks", "clean_labels", "dataset_fingerprint", "ensure_course_data", "generate_dataset",
           "load_ground_truth", "oracle_scores", "plan_dataset", "read_metadata", "render_face",
           "sample_identity", "synthetic_course_data"]
