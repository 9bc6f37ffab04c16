"""Rehearse the real data path: copy a SynthAffWild folder into the layout of the real release.

Taught in ``01_data``. A licence holder's s-Aff-Wild2 folder holds ``cropped_aligned/<video>/
<NNNNN>.jpg`` and the two annotation files, nothing else: no ``metadata.json``, no
``ground_truth/`` (the generator's clean labels), no ``audio/`` (s-Aff-Wild2 is a static frame
subset of Aff-Wild2). Its video names look like ``1-30-1280x720``, ``video10_1`` or
``118-30-640x480_left``, and runs of frames are missing where face detection failed, so frame
numbers skip. :func:`export_release_layout` makes such a folder from a generated one, so that
code and notebooks can be run on the real layout before the real data is at hand; with
``per_task=True`` it writes the per-task Aff-Wild2 layout instead (one label file per video and
task, every frame of the video listed, images missing where a run was dropped).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..labels import AU_NAMES, EXPR_NAMES
from .abaw import (FRAMES_FOLDER, SPLIT_FILES, SPLIT_FOLDERS, TASK_COLUMNS, TASK_FOLDERS, TEST_LIST,
                   read_mtl_annotations, read_test_list, write_mtl_annotations, write_test_list)

#: Task folders the per-task export writes (the newer EXPR name).
_PER_TASK_FOLDER = {task: names[0] for task, names in TASK_FOLDERS.items()}
_RESOLUTIONS = ("1280x720", "640x360", "640x480", "1920x1080", "480x360", "960x720")


def real_video_names(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct video names in the patterns of the real release: ``<id>-<fps>-<WxH>``,
    sometimes with ``_left`` / ``_right`` (two faces in one video), and ``video<k>_<j>``."""
    rng = np.random.default_rng(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        kind = rng.integers(0, 4)
        if kind == 0:
            name = f"video{rng.integers(1, 100)}_{rng.integers(1, 4)}"
        else:
            name = f"{rng.integers(1, 450)}-{rng.choice([24, 25, 30, 60])}-{rng.choice(_RESOLUTIONS)}"
            if kind == 3:
                name += str(rng.choice(["_left", "_right"]))
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _dropped_runs(n: int, rng: np.random.Generator, rate: float, max_run: int) -> np.ndarray:
    """Mask of ``n`` frames to drop: runs of 1..max_run consecutive frames, about ``rate`` of them."""
    drop = np.zeros(n, dtype=bool)
    if n < 4 or rate <= 0:
        return drop
    budget = int(round(rate * n))
    while budget > 0:
        length = int(min(budget, rng.integers(1, max_run + 1)))
        start = int(rng.integers(1, max(2, n - length)))  # keep the first frame: a video never starts empty
        drop[start:start + length] = True
        budget -= length
    if drop.all():
        drop[0] = False
    return drop


@dataclass
class ReleaseCopy:
    """What :func:`export_release_layout` wrote: the folder, the name of each video, and the
    number of frames it dropped per split."""

    root: Path
    names: dict[str, str]  # source video -> name in the copy
    dropped: dict[str, int] = field(default_factory=dict)  # split -> frames dropped
    per_task: bool = False


def export_release_layout(source: Path | str, target: Path | str, *, seed: int = 0, drop_rate: float = 0.04,
                          max_run: int = 12, per_task: bool = False, link: bool = True) -> ReleaseCopy:
    """Copy the frames and labels of ``source`` (a SynthAffWild folder, or any folder with the two
    annotation files) into ``target`` in the layout of the real release.

    Videos are renamed (:func:`real_video_names`, ``seed``); in each video, runs of up to
    ``max_run`` frames (about ``drop_rate`` of its frames) are dropped, frame numbers kept, as
    where face detection failed. Nothing else is copied: no metadata, ground truth, audio or test labels.
    ``per_task=False``: ``cropped_aligned/`` and the two multi-task annotation files (the
    s-Aff-Wild2 layout), and the test list with its frames when ``source`` has one.
    ``per_task=True``: ``cropped_aligned/`` and ``<Task>_Challenge/{Train_Set,Validation_Set}/
    <video>.txt`` (the per-task Aff-Wild2 layout), whose label files
    list every frame of the video, dropped ones included (their images are missing, as in the
    real release). ``link``: hard-link the images where the file system allows (else copy).
    ``target`` must not exist.
    """
    source, target = Path(source), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists: choose a new folder for the release-layout copy")
    tables = {split: read_mtl_annotations(source / name) for split, name in SPLIT_FILES.items()
              if (source / name).exists()}
    if not tables:
        raise FileNotFoundError(f"{source} has neither {SPLIT_FILES['train']} nor {SPLIT_FILES['validation']}")
    if not per_task and (source / TEST_LIST).exists():  # the challenge hands out the test images, not their labels
        tables["test"] = read_test_list(source / TEST_LIST)
    videos = list(dict.fromkeys(v for t in tables.values() for v in t["video"]))
    names = dict(zip(videos, real_video_names(len(videos), seed)))
    rng = np.random.default_rng(seed + 1)
    tmp = target.with_name(target.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    copy = ReleaseCopy(root=target, names=names, per_task=per_task)
    for split, table in tables.items():
        table = table.sort_values(["video", "frame"], kind="stable", ignore_index=True)
        keep = np.ones(len(table), dtype=bool)
        for _, rows in table.groupby("video", sort=False).indices.items():
            keep[rows] = ~_dropped_runs(len(rows), rng, drop_rate, max_run)
        copy.dropped[split] = int((~keep).sum())
        renamed = table.assign(video=table["video"].map(names))
        renamed["image"] = renamed["video"] + "/" + renamed["frame"].map("{:05d}.jpg".format)
        for old, new in zip(table["image"][keep], renamed["image"][keep]):
            _place(source / FRAMES_FOLDER / old, tmp / FRAMES_FOLDER / new, link)
        if split == "test":
            write_test_list(renamed["image"][keep].tolist(), tmp / TEST_LIST)
        elif per_task:
            _write_per_task(renamed, tmp, split)
        else:
            write_mtl_annotations(renamed[keep], tmp / SPLIT_FILES[split])
    tmp.rename(target)
    return copy


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # another file system, or links not allowed: copy
            pass
    shutil.copyfile(src, dst)


def _write_per_task(table: pd.DataFrame, root: Path, split: str) -> None:
    """One ``<video>.txt`` per task: a header, then line i for frame i (1..the video's last frame;
    frames the source lacks are written unlabelled)."""
    headers = {"au": ",".join(AU_NAMES), "expr": ",".join(EXPR_NAMES),
               "va": "valence,arousal"}
    missing = {"au": -1, "expr": -1, "va": -5}
    for video, rows in table.groupby("video", sort=False):
        last = int(rows["frame"].max())
        for task, columns in TASK_COLUMNS.items():
            values = np.full((last, len(columns)), missing[task], dtype=np.float64)
            values[rows["frame"].to_numpy() - 1] = rows[list(columns)].to_numpy(np.float64)
            if task == "va":
                lines = [",".join(f"{v:g}" for v in line) for line in values]
            else:
                lines = [",".join(str(int(v)) for v in line) for line in values]
            path = root / _PER_TASK_FOLDER[task] / SPLIT_FOLDERS[split] / f"{video}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(headers[task] + "\n" + "\n".join(lines) + "\n")


__all__ = ["ReleaseCopy", "export_release_layout", "real_video_names"]
