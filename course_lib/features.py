"""Frozen backbone features, extracted once and cached on disk, and datasets over them.

Taught in ``02_backbones_and_features``. Later notebooks train small heads on a frozen
backbone; running the backbone once per frame and caching what it returns is what makes that
training fast on a CPU. A *backbone* is any ``torch.nn.Module`` whose forward takes images
(B, 3, H, W) float32 in [0, 1] and returns a dict with ``tokens`` (B, N, C) and ``pooled``
(B, C).

One split of one cache lives in ``cache_dir("features", key)`` as

    {split}_tokens.npy   float16 (F, N, C), a NumPy memmap (``numpy.lib.format``)
    {split}_pooled.npy   float16 (F, C)
    {split}_images.txt   the F image names, in row order
    {split}_meta.json    shapes, dtype, key, frames ``done``, backbone class, seconds taken
    {split}_ready        written last, when every frame is done

Extraction is resumable: rows are written batch by batch and ``done`` in the meta file is
replaced atomically after each batch, so an interrupted run continues where it stopped and a
finished one is reused without running the backbone. Not safe for two processes writing the
same key and split at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.transforms.v2 import functional as F

from .config import cache_dir, get_device
from .data.abaw import SPLIT_FILES, checked_table, read_split
from .data.datasets import FrameDataset, FrameLabels, WindowedLabels
from .data.synth import dataset_fingerprint
from .files import atomic_write
from .progress import progress

What = Literal["tokens", "pooled", "both"]


_DTYPES: dict[torch.dtype, np.dtype] = {torch.float16: np.dtype(np.float16), torch.float32: np.dtype(np.float32)}
_PARTS = ("tokens", "pooled", "images", "meta", "ready")
_SUFFIX = {"tokens": "_tokens.npy", "pooled": "_pooled.npy", "images": "_images.txt", "meta": "_meta.json",
           "ready": "_ready"}
_FORMAT = 1
#: ``preload=None`` copies a split's features into RAM (float32) up to this size, else reads the memmaps.
PRELOAD_LIMIT = 2 * 2**30


# --------------------------------------------------------------------------- keys and files


def feature_key(backbone_fingerprint: str, data_fingerprint: str, image_size: int) -> str:
    """A short, filesystem-safe cache key, e.g. ``vit_small-abc123-112px-9f2c41d07e5a``.

    The key ties a cache to one backbone's *weights* (``backbone_fingerprint``: a name plus a
    hash of its state dict, say), one data set (``data_fingerprint``, e.g.
    :func:`course_lib.data.synth.dataset_fingerprint`) and one input size: change any of them
    and the features are extracted anew under another key. A readable prefix of the backbone
    fingerprint is kept; the final hash covers all three exactly.
    """
    digest = hashlib.sha256(f"{backbone_fingerprint}\0{data_fingerprint}\0{int(image_size)}".encode()).hexdigest()
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", backbone_fingerprint).strip("-.")[:32].rstrip("-.") or "backbone"
    return f"{readable}-{int(image_size)}px-{digest[:12]}"


def _paths(folder: Path, split: str) -> dict[str, Path]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", split):
        raise ValueError(f"split {split!r} is not a plain name (letters, digits, '_', '-', '.')")
    return {part: folder / f"{split}{_SUFFIX[part]}" for part in _PARTS}


def _read_images(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text else []


def _image_mismatch(cached: list[str], wanted: list[str]) -> str:
    if len(cached) != len(wanted):
        return f"{len(cached)} cached frames vs {len(wanted)} in the table"
    row = next(i for i, (a, b) in enumerate(zip(cached, wanted)) if a != b)
    return f"row {row} is {cached[row]!r} in the cache but {wanted[row]!r} in the table"


# --------------------------------------------------------------------------- one cached split


class CachedFeatures:
    """The cached features of one split: ``tokens`` (F, N, C) and ``pooled`` (F, C) read-only memmaps.

    ``images`` lists the F image names in row order, ``meta`` is the meta file's dict. Use
    :meth:`load` to open a finished cache, :meth:`to_tensor` to read rows as float32 tensors
    and :meth:`rows_of` to find the rows of image names. Pickles without its arrays (they are
    reopened), so DataLoader workers do not copy them.
    """

    def __init__(self, folder: str | os.PathLike, split: str) -> None:
        self.folder = Path(folder)
        self.split = split
        paths = _paths(self.folder, split)
        if not (paths["ready"].exists() and paths["meta"].exists()):
            raise FileNotFoundError(f"no finished features for split {split!r} in {self.folder}: "
                                    "run extract_features (it resumes an interrupted run)")
        self.meta: dict[str, Any] = json.loads(paths["meta"].read_text(encoding="utf-8"))
        self.images: list[str] = _read_images(paths["images"])
        self._open()
        if self.meta.get("done") != len(self.images) or self.tokens.shape[0] != len(self.images) \
                or self.pooled.shape[0] != len(self.images):
            raise ValueError(f"inconsistent feature cache {self.folder} split {split!r}: delete it and extract again")
        self._row_of: pd.Index | None = None

    def _open(self) -> None:
        paths = _paths(self.folder, self.split)
        self.tokens: np.memmap = np.load(paths["tokens"], mmap_mode="r")
        self.pooled: np.memmap = np.load(paths["pooled"], mmap_mode="r")

    @classmethod
    def load(cls, key: str, split: str) -> "CachedFeatures":
        """Open the finished features of ``split`` under ``cache_dir("features", key)``."""
        return cls(cache_dir("features", key, create=False), split)

    @property
    def key(self) -> str:
        return str(self.meta.get("key", self.folder.name))

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def dim(self) -> int:
        return int(self.pooled.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the split's files."""
        return sum(p.stat().st_size for p in _paths(self.folder, self.split).values() if p.exists())

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"CachedFeatures({describe(self)})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("tokens", None)
        state.pop("pooled", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def rows_of(self, images: Iterable[str]) -> np.ndarray:
        """Rows (int64) of the given image names; names not in the cache raise ``KeyError``."""
        if self._row_of is None:
            self._row_of = pd.Index(self.images)
        names = pd.Index(list(images), dtype=object)
        rows = self._row_of.get_indexer(names)
        if (rows < 0).any():
            missing = names[rows < 0]
            raise KeyError(f"{len(missing)} image(s) are not in the cached split {self.split!r} "
                           f"({self.folder}), the first is {missing[0]!r}")
        return rows.astype(np.int64)

    def to_tensor(self, rows: Sequence[int] | np.ndarray | slice | None = None,
                  what: Literal["tokens", "pooled"] = "tokens") -> torch.Tensor:
        """Rows ``rows`` (all when ``None``) of ``tokens`` or ``pooled`` as a float32 tensor."""
        if what not in ("tokens", "pooled"):
            raise ValueError(f"what must be 'tokens' or 'pooled', got {what!r}")
        array = self.tokens if what == "tokens" else self.pooled
        if rows is None:
            rows = slice(None)
        elif not isinstance(rows, slice):
            rows = np.asarray(rows, dtype=np.int64)
        return torch.from_numpy(np.asarray(array[rows], dtype=np.float32))


def describe(features: CachedFeatures) -> str:
    """One line: frames, tokens x dim, MB on disk, seconds the extraction took."""
    return (f"{features.split}: {len(features)} frames, {features.n_tokens} tokens x {features.dim} dims "
            f"({features.meta.get('dtype')}), {features.nbytes / 2**20:.1f} MB on disk, "
            f"extracted in {features.meta.get('seconds', float('nan')):.1f} s [{features.key}]")


# --------------------------------------------------------------------------- extraction


class _Resize:
    """Resize images to ``size`` x ``size`` (antialiased, in float); images of that size pass unchanged."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[-2:]) == (self.size, self.size):
            return image

        image = F.to_dtype(image, torch.float32, scale=True)
        return F.resize(image, [self.size, self.size], antialias=True).clamp_(0, 1)


def _outputs(out: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(out, dict) or "tokens" not in out or "pooled" not in out:
        raise TypeError("the backbone must return a dict with 'tokens' (B, N, C) and 'pooled' (B, C), "
                        f"got {type(out).__name__}")
    tokens, pooled = out["tokens"], out["pooled"]
    if tokens.ndim != 3 or pooled.ndim != 2 or tokens.shape[0] != n or pooled.shape[0] != n:
        raise ValueError(f"backbone output shapes tokens {tuple(tokens.shape)}, pooled {tuple(pooled.shape)} "
                         f"do not match a batch of {n}: expected (B, N, C) and (B, C)")
    return tokens, pooled


def _remove(paths: dict[str, Path]) -> None:
    for part in ("ready", "meta", "tokens", "pooled", "images"):  # the flags first: never a stale 'ready'
        paths[part].unlink(missing_ok=True)


def extract_features(backbone: nn.Module, table: pd.DataFrame, root: str | os.PathLike, *, key: str, split: str,
                     batch_size: int = 64, device: str | torch.device | None = None,
                     dtype: torch.dtype = torch.float16, num_workers: int = 0, progress_bar: bool = True,
                     image_size: int | None = None, overwrite: bool = False) -> CachedFeatures:
    """Run ``backbone`` over the frames of ``table`` (in table order) and cache what it returns.

    Writes ``{split}_*`` files to ``cache_dir("features", key)`` (see the module docstring) and
    returns the :class:`CachedFeatures`. The backbone runs in eval mode under
    ``torch.inference_mode`` on ``device`` (default :func:`course_lib.config.get_device`; the
    module is moved there, its train/eval mode is restored afterwards). Frames come from
    :class:`course_lib.data.datasets.FrameDataset` without augmentation, resized to
    ``image_size`` when given. Features are stored as ``dtype`` (float16 or float32).

    Resumable: a finished cache returns at once without running the backbone; an interrupted
    one continues from its ``done`` count. A cache made for another image list (or dtype)
    raises ``ValueError``; ``overwrite=True`` rebuilds it.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be torch.float16 or torch.float32, got {dtype}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    np_dtype = _DTYPES[dtype]
    table = checked_table(table)
    images = table["image"].astype(str).tolist()
    n = len(images)
    if n == 0:
        raise ValueError("the table has no frames: nothing to extract")
    folder = cache_dir("features", key)
    paths = _paths(folder, split)
    if overwrite:
        _remove(paths)

    meta: dict[str, Any] | None = None
    if paths["images"].exists():
        cached = _read_images(paths["images"])
        if cached != images:
            raise ValueError(f"the cached features {folder} (split {split!r}) were extracted for other frames: "
                             f"{_image_mismatch(cached, images)}. Pass overwrite=True to rebuild, use another "
                             "key, or extract the full split once and select rows with CachedFrameDataset")
        if paths["meta"].exists():
            meta = json.loads(paths["meta"].read_text(encoding="utf-8"))
            if meta.get("dtype") != np_dtype.name:
                raise ValueError(f"the cached features {folder} (split {split!r}) are {meta.get('dtype')}, "
                                 f"not {np_dtype.name}: pass overwrite=True to rebuild or the cached dtype")
            if meta.get("done") == n and paths["ready"].exists():
                return CachedFeatures(folder, split)
            if meta.get("backbone") != type(backbone).__name__:
                warnings.warn(f"resuming features extracted by {meta.get('backbone')} with a "
                              f"{type(backbone).__name__}: is the key right?", stacklevel=2)
    else:
        _remove(paths)
        atomic_write(paths["images"], "".join(f"{name}\n" for name in images))

    tokens_out = pooled_out = None
    if meta is not None:  # resume: the arrays exist with the shapes recorded in the meta file
        tokens_out = np.load(paths["tokens"], mmap_mode="r+")
        pooled_out = np.load(paths["pooled"], mmap_mode="r+")
        if list(tokens_out.shape) != meta["tokens_shape"] or list(pooled_out.shape) != meta["pooled_shape"]:
            raise ValueError(f"inconsistent feature cache {folder} split {split!r}: pass overwrite=True")
    done = int(meta["done"]) if meta is not None else 0
    seconds = float(meta.get("seconds", 0.0)) if meta is not None else 0.0

    device = torch.device(device) if device is not None else get_device()
    was_training = backbone.training
    backbone.to(device).eval()
    transform = _Resize(image_size) if image_size is not None else None
    frames = Subset(FrameDataset(table, root, transform=transform), range(done, n))
    loader = DataLoader(frames, batch_size=int(batch_size), shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    bar = progress(total=n, initial=done, desc=f"features {split}", unit="frame", disable=not progress_bar)
    overflow_warned = False
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for batch in loader:
                x = batch["image"].to(device, non_blocking=True)
                tokens, pooled = _outputs(backbone(x), len(x))
                tokens = tokens.to(dtype).cpu().numpy()
                pooled = pooled.to(dtype).cpu().numpy()
                if tokens_out is None:  # the first batch of a new cache tells the shapes
                    meta = {"format": _FORMAT, "key": key, "split": split, "frames": n, "done": 0,
                            "tokens_shape": [n, *tokens.shape[1:]], "pooled_shape": [n, *pooled.shape[1:]],
                            "dtype": np_dtype.name, "backbone": type(backbone).__name__,
                            "image_size": image_size, "seconds": 0.0}
                    tokens_out = np.lib.format.open_memmap(paths["tokens"], "w+", np_dtype, tuple(meta["tokens_shape"]))
                    pooled_out = np.lib.format.open_memmap(paths["pooled"], "w+", np_dtype, tuple(meta["pooled_shape"]))
                if tokens.shape[1:] != tokens_out.shape[1:] or pooled.shape[1:] != pooled_out.shape[1:]:
                    raise ValueError(f"backbone output tokens {tokens.shape[1:]}, pooled {pooled.shape[1:]} per frame "
                                     f"differ from the cache's {tokens_out.shape[1:]}, {pooled_out.shape[1:]}")
                if not overflow_warned and not (np.isfinite(tokens).all() and np.isfinite(pooled).all()):
                    warnings.warn(f"non-finite features (overflow in {np_dtype.name}?): consider dtype=torch.float32",
                                  stacklevel=2)
                    overflow_warned = True
                end = done + len(tokens)
                tokens_out[done:end] = tokens
                pooled_out[done:end] = pooled
                tokens_out.flush()
                pooled_out.flush()
                done = end
                meta.update(done=done, seconds=round(seconds + time.perf_counter() - start, 3))
                atomic_write(paths["meta"], json.dumps(meta, indent=1))
                bar.update(len(tokens))
    finally:
        bar.close()
        backbone.train(was_training)
        del tokens_out, pooled_out  # close the memmaps
    if done != n:  # pragma: no cover - the loader yields every remaining frame
        raise RuntimeError(f"extraction stopped at {done} of {n} frames")
    atomic_write(paths["ready"], time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    return CachedFeatures(folder, split)


def ensure_features(backbone: nn.Module, root: str | os.PathLike, *, backbone_fingerprint: str, image_size: int,
                    splits: Sequence[str] = ("train", "validation"), batch_size: int = 64,
                    device: str | torch.device | None = None, dtype: torch.dtype = torch.float16,
                    num_workers: int = 0, progress_bar: bool = True) -> dict[str, CachedFeatures]:
    """The cached features of each split of the data set in ``root``, extracting what is missing.

    Reads each split's table with :func:`~course_lib.data.abaw.read_split` (the annotation files; ``"test"``: the
    test list) and keys the cache with :func:`feature_key` (``backbone_fingerprint``,
    :func:`~course_lib.data.synth.dataset_fingerprint` of ``root``, ``image_size``); frames are
    resized to ``image_size``. Returns ``{split: CachedFeatures}``.
    """
    root = Path(root)
    unknown = [s for s in splits if s not in (*SPLIT_FILES, "test")]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}: use {[*SPLIT_FILES, 'test']}")
    key = feature_key(backbone_fingerprint, dataset_fingerprint(root), image_size)
    return {split: extract_features(backbone, read_split(root, split), root, key=key,
                                    split=split, batch_size=batch_size, device=device, dtype=dtype,
                                    num_workers=num_workers, progress_bar=progress_bar, image_size=image_size)
            for split in splits}


# --------------------------------------------------------------------------- datasets


class FeatureRows:
    """The cached features of a table's rows: in RAM as float32 tensors (``preload``) or read from the memmaps.

    The input side of the datasets over cached features (:class:`CachedFrameDataset`,
    :class:`CachedWindowDataset`, :class:`course_lib.audio.AudioVisualDataset`): rows are matched
    to ``features`` by image name (a frame missing from the cache raises ``ValueError``), ``parts``
    names ``"tokens"`` and/or ``"pooled"``, ``preload=None`` preloads up to :data:`PRELOAD_LIMIT`.
    """

    def __init__(self, features: CachedFeatures, table: pd.DataFrame, parts: tuple[str, ...],
                 preload: bool | None) -> None:
        try:
            self.positions = features.rows_of(table["image"].astype(str))
        except KeyError as exc:
            raise ValueError(f"the table does not match the cached features: {exc.args[0]}") from None
        self.features, self.parts = features, parts
        if preload is None:  # auto: copy into RAM only what fits comfortably
            preload = self.float32_bytes() <= PRELOAD_LIMIT
        self.data = {p: features.to_tensor(self.positions, p) for p in parts} if preload else None

    def float32_bytes(self) -> int:
        """What a preload would take: the rows' parts as float32."""
        per_row = {"tokens": int(np.prod(self.features.tokens.shape[1:])), "pooled": self.features.dim}
        return 4 * len(self.positions) * sum(per_row[p] for p in self.parts)

    def get(self, rows: int | np.ndarray) -> dict[str, torch.Tensor]:
        """Features of table row(s) ``rows``: (N, C)/(C,) for one row, (T, N, C)/(T, C) for an array."""
        if self.data is not None:
            index = rows if isinstance(rows, int) else torch.from_numpy(np.asarray(rows, dtype=np.int64))
            return {p: self.data[p][index] for p in self.parts}
        return {p: self.features.to_tensor(self.positions[rows], p) for p in self.parts}


def _parts(what: str) -> tuple[str, ...]:
    if what not in ("tokens", "pooled", "both"):
        raise ValueError(f"what must be 'tokens', 'pooled' or 'both', got {what!r}")
    return ("tokens", "pooled") if what == "both" else (what,)


class CachedFrameDataset(FrameLabels):
    """One frame per item, like :class:`~course_lib.data.datasets.FrameDataset`, with features instead of images.

    Item ``i`` (row ``i`` of ``table``, index reset): ``tokens`` float32 (N, C) and/or
    ``pooled`` (C,) (``what``), ``va``, ``expr``, ``au``, ``has_va``, ``has_expr``, ``has_au``
    and ``index`` exactly as in ``FrameDataset``. Rows are matched to the cache **by image
    name**, so ``table`` may be any subset of the cached split in any order; a frame missing
    from the cache raises ``ValueError``. ``preload=True`` copies the rows into RAM as float32
    tensors (fast, for small sets); ``preload=False`` reads the memmaps per item (RAM stays flat
    at any size: the real training split's tokens are gigabytes); ``None`` (the default) preloads
    up to :data:`PRELOAD_LIMIT`.
    """

    def __init__(self, features: CachedFeatures, table: pd.DataFrame, what: What = "tokens",
                 preload: bool | None = None) -> None:
        self._init_labels(table)
        self.features = features
        self.what = what
        self._rows = FeatureRows(features, self.table, _parts(what), preload)

    def _inputs(self, i: int) -> dict[str, Any]:
        return self._rows.get(i)


class CachedWindowDataset(WindowedLabels):
    """Windows of consecutive frames of one video over cached features, for temporal heads.

    The windows are those of :class:`~course_lib.data.datasets.SequenceDataset` with the same
    ``table``, ``window``, ``stride`` and ``pad`` (the same code builds them): frame order
    within a video, never crossing videos, padding repeats the last frame. Rows are matched to
    the cache by image name, and preloaded (or not) as in :class:`CachedFrameDataset`.

    Item ``i``: ``pooled`` float32 (T, C) and/or ``tokens`` (T, N, C) (``what``), ``va``
    (T, 2), ``expr`` (T,), ``au`` (T, 12), ``has_*`` (T,) (False on padding), ``valid`` (T,),
    ``indices`` (T,) int64 rows of ``self.table`` for stitching predictions back, ``index``.
    """

    def __init__(self, features: CachedFeatures, table: pd.DataFrame, window: int, stride: int = 1,
                 pad: bool = False, what: What = "pooled", preload: bool | None = None) -> None:
        self._init_windows(table, window, stride, pad)
        self.features = features
        self.what = what
        self._rows = FeatureRows(features, self.table, _parts(what), preload)

    def _inputs(self, rows: np.ndarray) -> dict[str, Any]:
        return self._rows.get(rows)


__all__ = ["CachedFeatures", "CachedFrameDataset", "CachedWindowDataset", "FeatureRows", "PRELOAD_LIMIT", "SPLIT_FILES",
           "describe", "ensure_features", "extract_features", "feature_key"]
