"""PyTorch datasets over an ABAW table and its ``cropped_aligned/`` frames.

Taught in ``01_data``. :class:`FrameDataset` gives one frame per item, for per-frame models;
:class:`SequenceDataset` gives windows of consecutive frames of one video, for temporal models.
Both take a table of :mod:`course_lib.data.abaw` (one row per frame, labels with their missing
markers and ``has_*`` flags) and turn it into tensors. The label side lives in two base classes,
:class:`FrameLabels` and :class:`WindowedLabels`, which the datasets over cached features
(:mod:`course_lib.features`), audio (:mod:`course_lib.audio`) and temporal features
(:mod:`course_lib.models.temporal`) share, so that every dataset gives the same labels for the
same row. :func:`frames_exist` and :func:`decode_frame` are the frame helpers underneath.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

try:  # torchvision's JPEG decoder is fast; it is deprecated since torchvision 0.29 (for TorchCodec)
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
except ImportError:  # pragma: no cover - a torchvision without image ops: decode_frame uses PIL
    decode_jpeg = None

from ..labels import AU_NAMES
from ..progress import progress
from .abaw import FRAMES_FOLDER, VA_COLUMNS, checked_table


def frames_exist(table: pd.DataFrame, root: str | os.PathLike) -> np.ndarray:
    """Boolean mask: which rows' frames exist as ``root/cropped_aligned/<image>``.

    One directory listing per video, so it is quick for the whole data set. Use it to drop
    frames deliberately, e.g. ``table[frames_exist(table, root)]`` (the datasets never skip
    a missing frame silently: they raise).
    """
    base = Path(root) / FRAMES_FOLDER
    parts = [str(image).rpartition("/") for image in table["image"].tolist()]
    rows_of: dict[str, list[int]] = {}
    for row, (folder, _, _) in enumerate(parts):
        rows_of.setdefault(folder, []).append(row)
    exists = np.zeros(len(parts), dtype=bool)
    for folder, rows in rows_of.items():
        try:
            names = set(os.listdir(base / folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        exists[rows] = [parts[row][2] in names for row in rows]
    return exists


def decode_frame(path: str | os.PathLike) -> torch.Tensor:
    """Decode one JPEG frame to a uint8 RGB tensor (3, H, W).

    The one place that decodes frames: ``torchvision.io.decode_jpeg`` (fast), or PIL where a
    torchvision without image decoding is installed.
    """
    try:
        if decode_jpeg is None:  # pragma: no cover

            with Image.open(path) as image:
                return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
        return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot decode {path}: {exc}") from None


class _Frames:
    """The frames of a table, decoded from disk on demand or all at once into RAM (``preload``).

    Shared by :class:`FrameDataset` and :class:`SequenceDataset`. Names are kept in a NumPy
    bytes array, not a list of str, so DataLoader workers do not copy them page by page.
    """

    def __init__(self, table: pd.DataFrame, root: Path, preload: bool) -> None:
        self.folder = root / FRAMES_FOLDER
        exists = frames_exist(table, root)
        if not exists.all():
            missing = np.flatnonzero(~exists)
            hint = (f"; is {root} the folder that holds {FRAMES_FOLDER}/?" if missing.size == len(table)
                    else "; drop them with table[frames_exist(table, root)] if that is intended")
            raise FileNotFoundError(
                errno.ENOENT,
                f"{missing.size} of {len(table)} frames are missing, the first is {table['image'].iloc[missing[0]]}"
                + hint, str(self.folder / table["image"].iloc[missing[0]]))
        self._names = np.char.encode(table["image"].to_numpy(dtype=str), "utf-8")
        self.data: torch.Tensor | None = self._decode_all() if preload else None

    def __len__(self) -> int:
        return len(self._names)

    def path(self, row: int) -> str:
        return os.path.join(self.folder, self._names[row].decode("utf-8"))

    def _decode_all(self) -> torch.Tensor:
        n = len(self)
        if n == 0:
            return torch.empty((0, 3, 0, 0), dtype=torch.uint8)
        first = decode_frame(self.path(0))
        gib = n * first.numel() / 2**30
        data = torch.empty((n, *first.shape), dtype=torch.uint8)
        for row in progress(range(n), desc=f"decoding {n} frames ({gib:.2f} GiB)", unit="frame"):
            image = first if row == 0 else decode_frame(self.path(row))
            if image.shape != first.shape:
                raise ValueError(f"preload needs frames of one size: {self.path(row)} is {tuple(image.shape)}, "
                                 f"{self.path(0)} is {tuple(first.shape)}; use preload=False")
            data[row] = image
        return data

    def one(self, row: int) -> torch.Tensor:
        """Frame ``row`` as uint8 (3, H, W)."""
        return self.data[row] if self.data is not None else decode_frame(self.path(row))

    def many(self, rows: np.ndarray) -> torch.Tensor:
        """Frames ``rows`` (repeats allowed) stacked as uint8 (T, 3, H, W)."""
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        if self.data is not None:
            return self.data[index]
        unique, inverse = np.unique(rows, return_inverse=True)
        images = [decode_frame(self.path(int(r))) for r in unique]
        for r, image in zip(unique, images):
            if image.shape != images[0].shape:
                raise ValueError(f"frames of one window differ in size: {self.path(int(r))} is "
                                 f"{tuple(image.shape)}, {self.path(int(unique[0]))} is {tuple(images[0].shape)}")
        return torch.stack(images)[torch.from_numpy(inverse.reshape(-1))]


def _to_model_input(images: torch.Tensor, transform: Callable | None) -> torch.Tensor:
    """Apply ``transform`` to uint8 image(s) (..., 3, H, W); uint8 results become float32 in [0, 1]."""
    x = tv_tensors.Image(images)
    if transform is not None:
        x = transform(x)
    x = x.as_subclass(torch.Tensor)
    return x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x.to(torch.float32)


def label_tensors(table: pd.DataFrame) -> dict[str, torch.Tensor]:
    """The labels and masks of every row of a table as tensors: ``va`` float32 (N, 2), ``expr`` int64 (N,),
    ``au`` float32 (N, 12), ``has_va``/``has_expr``/``has_au`` bool (N,). Missing labels keep their markers."""
    return {
        "va": torch.from_numpy(table[list(VA_COLUMNS)].to_numpy(np.float32, copy=True)),
        "expr": torch.from_numpy(table["expression"].to_numpy(np.int64, copy=True)),
        "au": torch.from_numpy(table[list(AU_NAMES)].to_numpy(np.float32, copy=True)),
        **{k: torch.from_numpy(table[k].to_numpy(bool, copy=True)) for k in ("has_va", "has_expr", "has_au")},
    }


class FrameLabels(Dataset):
    """One frame per item with its labels and masks; a subclass adds the inputs.

    Shared by :class:`FrameDataset` (images) and :class:`course_lib.features.CachedFrameDataset`
    (cached features), so both give the same labels for the same row. Subclasses call
    :meth:`_init_labels` and implement :meth:`_inputs`.
    """

    def _init_labels(self, table: pd.DataFrame) -> None:
        self.table = checked_table(table)
        self._labels = label_tensors(self.table)

    def _inputs(self, i: int) -> dict[str, Any]:
        """The model inputs of row ``i``."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames")
        item: dict[str, Any] = self._inputs(i)
        item.update({k: v[i] for k, v in self._labels.items()})
        item["index"] = i
        return item


class FrameDataset(FrameLabels):
    """One frame per item, for per-frame models (``01_data``).

    Item ``i`` (row ``i`` of ``table``, index reset) is a dict: ``image`` float32 (3, H, W) in
    [0, 1], ``va`` float32 (2,), ``expr`` int64 (), ``au`` float32 (12,), ``has_va``,
    ``has_expr``, ``has_au`` bool (), ``index`` int. Missing labels keep their markers (-5, -1):
    mask losses with ``has_*``. ``transform`` (torchvision.transforms.v2) receives the uint8
    image as ``tv_tensors.Image``; a uint8 result is scaled to [0, 1], a float result (after
    ``ToDtype``/``Normalize``) is kept. ``preload=True`` decodes every frame once into one
    uint8 tensor (N, 3, H, W) in RAM: the fast path for CPU training on small sets.
    Every frame must exist under ``root/cropped_aligned/``, else ``FileNotFoundError``.
    """

    def __init__(self, table: pd.DataFrame, root: str | os.PathLike, transform: Callable | None = None,
                 preload: bool = False) -> None:
        self._init_labels(table)
        self.root = Path(root)
        self.transform = transform
        self.frames = _Frames(self.table, self.root, preload)

    def _inputs(self, i: int) -> dict[str, Any]:
        return {"image": _to_model_input(self.frames.one(i), self.transform)}


class Window(NamedTuple):
    """One window of :class:`SequenceDataset`: its video, table rows and which are real frames."""

    video: str
    rows: np.ndarray  # (T,) rows of the dataset's table; padding repeats the last frame
    valid: np.ndarray  # (T,) False for padding


def _make_windows(table: pd.DataFrame, window: int, stride: int, pad: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Window rows (W, T), valid mask (W, T), video code per window (W,), video names."""
    codes, videos = pd.factorize(table["video"], sort=False)
    frames = table["frame"].to_numpy(np.int64)
    order = np.lexsort((frames, codes))
    # a run ends where the video changes or frame numbers skip (no face was cropped there):
    # a window never joins frames that are not consecutive in the video
    edges = np.flatnonzero((np.diff(codes[order]) != 0) | (np.diff(frames[order]) != 1)) + 1
    offsets = np.arange(window)
    rows, valid, video_of = [], [], []
    for a, b in zip(np.r_[0, edges], np.r_[edges, len(order)]):
        n = int(b - a)
        if n == 0:
            continue
        grid = np.arange(0, n, stride)
        starts = grid[grid + window <= n]
        if pad:
            partial = grid[grid + window > n]
            starts = np.append(starts, partial[:1])
        if not starts.size:
            continue
        position = starts[:, None] + offsets
        valid.append(position < n)
        rows.append(order[a + np.minimum(position, n - 1)])
        video_of.append(np.full(len(starts), codes[order[a]]))
    if not rows:
        return (np.zeros((0, window), np.int64), np.zeros((0, window), bool), np.zeros(0, np.int64),
                np.asarray(videos, dtype=object))
    return (np.concatenate(rows).astype(np.int64), np.concatenate(valid), np.concatenate(video_of),
            np.asarray(videos, dtype=object))


class WindowedLabels(Dataset):
    """Windows of consecutive frames of one video with their labels; a subclass adds the inputs.

    The windowing rules (see :class:`SequenceDataset`) and the per-window labels and masks live
    here once, so that windows over images and windows over cached features
    (:class:`course_lib.features.CachedWindowDataset`) can never disagree. Subclasses call
    :meth:`_init_windows` and implement :meth:`_inputs`.
    """

    def _init_windows(self, table: pd.DataFrame, window: int, stride: int, pad: bool) -> None:
        if int(window) < 1 or int(stride) < 1:
            raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
        self.table = checked_table(table)
        self.window, self.stride, self.pad = int(window), int(stride), bool(pad)
        self.rows, self.valid, self._video_of, self._videos = _make_windows(self.table, self.window,
                                                                            self.stride, self.pad)
        self._labels = label_tensors(self.table)

    def _inputs(self, rows: np.ndarray) -> dict[str, Any]:
        """The model inputs of the frames ``rows`` of one window."""
        raise NotImplementedError

    @cached_property
    def windows(self) -> list[Window]:
        """Every window: ``Window(video, rows, valid)``."""
        return [Window(self._videos[c], r, v) for c, r, v in zip(self._video_of, self.rows, self.valid)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} windows")
        rows = self.rows[i]
        index = torch.from_numpy(rows)
        valid = torch.from_numpy(self.valid[i])
        item: dict[str, Any] = self._inputs(rows)
        item.update({k: v[index] for k, v in self._labels.items()})
        for k in ("has_va", "has_expr", "has_au"):
            item[k] = item[k] & valid
        item.update(valid=valid, indices=index, index=i)
        return item


class SequenceDataset(WindowedLabels):
    """Windows of ``window`` consecutive frames of one video, for temporal models (``01_data``).

    Frames of a video are taken in frame-number order and cut into runs of consecutive frame
    numbers: where numbers skip (no face was cropped there, as in the real release) a new run
    starts, so a window never joins frames across a gap, nor across videos. Windows start every
    ``stride`` frames of a run. A window that would run past the run's end is dropped, so a run
    shorter than ``window`` gives none; with ``pad=True`` the first such window is kept, padded
    by repeating the run's last frame (so with ``stride <= window`` every frame is in some window).

    Item ``i``: ``image`` float32 (T, 3, H, W), ``va`` (T, 2), ``expr`` (T,), ``au`` (T, 12),
    ``has_va``/``has_expr``/``has_au`` (T,) (False on padding, so masked losses count a frame
    once), ``valid`` (T,) (False on padding), ``indices`` (T,) int64 rows of ``self.table``
    for stitching predictions back per frame, ``index`` int. The same ``transform`` call (same
    random parameters) is applied to the whole window. :attr:`windows` lists every window.
    """

    def __init__(self, table: pd.DataFrame, root: str | os.PathLike, window: int, stride: int = 1,
                 transform: Callable | None = None, preload: bool = False, pad: bool = False) -> None:
        self._init_windows(table, window, stride, pad)
        self.root = Path(root)
        self.transform = transform
        self.frames = _Frames(self.table, self.root, preload)

    def _inputs(self, rows: np.ndarray) -> dict[str, Any]:
        return {"image": _to_model_input(self.frames.many(rows), self.transform)}
