"""Temporal models over windows of per-frame features, and stitching window outputs back per frame.

Taught in ``06_temporal_modeling``; used by ``05_progressive_training`` (stage 3 of seed 001's
progressive learning). A frame model sees one face at a time, so its predictions jitter from
frame to frame while the labels (valence, arousal, an expression episode, an AU) change
smoothly over time. A temporal model reads a *window* of consecutive frames' features and
predicts every frame of it from its neighbours too:

    features (B, T, D) -> TemporalEncoder (TCN | GRU | Transformer | none) -> (B, T, dim)
                       -> heads: AU logits (B, T, 12), EXPR logits (B, T, 8), VA (B, T, 2) in [-1, 1]

Windows overlap (stride < window), so a frame gets one prediction per window it is in:
:func:`stitch_windows` averages them back to one per frame (``course_lib.train.predict`` calls
it for every window loader). Seed 001 chose a window length *per task* (:data:`WINDOWS`);
:func:`per_task_predictions` combines three such models into one per-frame prediction.

Padding frames (``valid`` False, at the end of a video's last window) never change the
outputs of valid frames, for every encoder: the TCN zeroes them before each convolution, the
GRU packs the sequences to their valid length and the Transformer masks them as keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import WindowedLabels
from .au_gcn import N_AU
from .cross_attention import N_EXPR, N_VA

Kind = Literal["none", "tcn", "gru", "transformer"]
#: The temporal encoders; ``"none"`` is the per-frame baseline (no mixing over time).
KINDS: tuple[str, ...] = ("none", "tcn", "gru", "transformer")
#: Seed 001's window length per task (frames): AU from single frames, EXPR from 5, VA from 30.
WINDOWS: dict[str, int] = {"au": 1, "expr": 5, "va": 30}
#: The prediction keys of :func:`course_lib.train.predict` that belong to each task.
TASK_KEYS: dict[str, tuple[str, ...]] = {"au": ("au_pred",), "expr": ("expr_pred",), "va": ("va_pred",)}


# --------------------------------------------------------------------------- encoders


def tcn_receptive_field(kernel_size: int, layers: int) -> int:
    """Frames one output of :class:`TemporalEncoder` ``"tcn"`` sees: ``1 + (k - 1)(2^L - 1)``.

    Block ``i`` is one convolution of kernel ``k`` and dilation ``2^i``, which widens the view
    by ``(k - 1) 2^i`` frames; centred, so half of it lies on each side of the frame.
    """
    return 1 + (int(kernel_size) - 1) * (2 ** int(layers) - 1)


class TCNBlock(nn.Module):
    """One residual block of a TCN: ``x + Drop(Linear(GELU(DilatedConv(LayerNorm(x)))))``.

    The convolution is centred by default ("same" padding, zeros beyond the window's ends), so
    frame t sees ``dilation * (k - 1) / 2`` frames on each side. ``causal=True`` pads
    ``dilation * (k - 1)`` zeros on the left only, so frame t sees frames t, t - d, ..., t - (k - 1) d
    and never the future (what a live, frame-by-frame system needs). Frames where ``valid`` is
    False are zeroed before the convolution, so they act exactly like the zero padding.
    """

    def __init__(self, dim: int, kernel_size: int, dilation: int, dropout: float, causal: bool = False) -> None:
        super().__init__()
        self.left = dilation * (kernel_size - 1) if causal else 0  # zeros padded on the left (causal only)
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, dilation=dilation,
                              padding=0 if causal else dilation * (kernel_size - 1) // 2)
        self.act = nn.GELU()
        self.mix = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def convolve(self, h: torch.Tensor) -> torch.Tensor:
        """The block's dilated convolution of ``h`` (B, dim, T) -> (B, dim, T), causal or centred."""
        return self.conv(F.pad(h, (self.left, 0)) if self.left else h)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        if valid is not None:
            h = h * valid.unsqueeze(-1).to(h.dtype)
        h = self.convolve(h.transpose(1, 2)).transpose(1, 2)
        return x + self.drop(self.mix(self.act(h)))


class SinusoidalPosition(nn.Module):
    """Adds the sinusoidal position encoding of "Attention is all you need" to (B, T, dim).

    Computed for any T on the fly, so a model trained on windows of 30 runs on windows of 60.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("inv_freq", torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2).float() / dim),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], device=x.device, dtype=self.inv_freq.dtype)
        angle = t[:, None] * self.inv_freq[None, :]
        pe = torch.zeros(x.shape[1], self.dim, device=x.device, dtype=self.inv_freq.dtype)
        pe[:, 0::2] = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle)[:, : self.dim // 2]
        return x + pe.to(x.dtype)


def _prefix_lengths(valid: torch.Tensor) -> torch.Tensor:
    """Valid frames per window (at least 1); ``valid`` must be a prefix (padding at the end)."""
    lengths = valid.sum(1)
    prefix = torch.arange(valid.shape[1], device=valid.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, valid):
        raise ValueError("the GRU encoder needs the valid frames first and the padding at the end of each "
                         "window (as the course's window datasets make them)")
    return lengths.clamp(min=1).cpu()


class TemporalEncoder(nn.Module):
    """Per-frame features (B, T, in_dim) -> temporally mixed features (B, T, dim).

    ``kind``:

    - ``"tcn"``: a linear projection, then ``layers`` residual blocks of centred dilated 1-D
      convolutions (dilation 1, 2, 4, ...; :class:`TCNBlock`). :attr:`receptive_field` frames
      around each frame are seen, whatever T is; ``causal=True`` makes every convolution look
      back only (the same number of frames, all in the past).
    - ``"gru"``: a bidirectional ``nn.GRU`` (``layers`` deep, hidden size ``dim``) over the
      window, both directions projected to ``dim``: every frame sees the whole window.
    - ``"transformer"``: a linear projection, sinusoidal positions and a pre-norm
      ``nn.TransformerEncoder`` (``heads`` heads): every frame attends to every valid frame.
    - ``"none"``: the per-frame baseline, a TCN with kernel size 1 (a residual MLP per frame),
      so nothing is mixed over time.

    Every kind ends with a LayerNorm. ``valid`` (B, T) bool marks real frames; padding frames
    (False) do not change the outputs of valid frames.
    """

    def __init__(self, kind: Kind, in_dim: int, dim: int = 128, layers: int = 2, dropout: float = 0.1,
                 kernel_size: int = 3, heads: int = 4, causal: bool = False) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown temporal encoder {kind!r}: use one of {', '.join(map(repr, KINDS))}")
        if causal and kind not in ("tcn", "none"):
            raise ValueError(f"causal=True is for the TCN; a {kind} encoder sees the whole window")
        if int(layers) < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.kind, self.in_dim, self.dim, self.layers = kind, int(in_dim), int(dim), int(layers)
        self.kernel_size = 1 if kind == "none" else int(kernel_size)
        if kind in ("tcn", "none"):
            if self.kernel_size < 1 or self.kernel_size % 2 == 0:
                raise ValueError(f"kernel_size must be odd (a centred convolution), got {kernel_size}")
            self.proj = nn.Linear(in_dim, dim)
            self.blocks = nn.ModuleList(TCNBlock(dim, self.kernel_size, 2 ** i, dropout, causal=causal)
                                        for i in range(layers))
        elif kind == "gru":
            self.gru = nn.GRU(in_dim, dim, num_layers=layers, batch_first=True, bidirectional=True,
                              dropout=dropout if layers > 1 else 0.0)
            self.proj = nn.Linear(2 * dim, dim)
        else:
            if dim % heads:
                raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
            self.proj = nn.Linear(in_dim, dim)
            self.position = SinusoidalPosition(dim)
            self.drop = nn.Dropout(dropout)
            layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout,
                                               activation="gelu", batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    @property
    def receptive_field(self) -> int | None:
        """Frames each output depends on (TCN and ``"none"``); ``None`` (the whole window) otherwise."""
        if self.kind in ("tcn", "none"):
            return tcn_receptive_field(self.kernel_size, self.layers)
        return None

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (B, T, {self.in_dim})")
        if valid is not None:
            valid = torch.as_tensor(valid, device=x.device).bool()
            if valid.shape != x.shape[:2]:
                raise ValueError(f"valid has shape {tuple(valid.shape)}, expected {tuple(x.shape[:2])}")
            if bool(valid.all()):
                valid = None
        if self.kind in ("tcn", "none"):
            h = self.proj(x)
            for block in self.blocks:
                h = block(h, valid)
        elif self.kind == "gru":
            if valid is None:
                h, _ = self.gru(x)
            else:
                packed = nn.utils.rnn.pack_padded_sequence(x, _prefix_lengths(valid), batch_first=True,
                                                           enforce_sorted=False)
                h, _ = self.gru(packed)
                h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])
            h = self.proj(h)
        else:
            h = self.drop(self.position(self.proj(x)))
            mask = None
            if valid is not None:  # a window without any valid frame attends to all (its outputs are unused)
                mask = ~(valid | ~valid.any(1, keepdim=True))
            h = self.transformer(h, src_key_padding_mask=mask)
        return self.norm(h)


# --------------------------------------------------------------------------- the model


class TemporalModel(nn.Module):
    """A temporal encoder plus the three task heads: AU, EXPR and VA for every frame of a window.

    ``forward(x, valid=None)`` takes features (B, T, in_dim) (or one frame each, (B, in_dim))
    and returns ``{"au": (B, T, 12) logits, "expr": (B, T, 8) logits, "va": (B, T, 2) in
    [-1, 1]}`` (without the T axis for (B, in_dim) input), the conventions of
    :class:`course_lib.models.MultiTaskModel`; ``return_features=True`` adds ``"features"``
    (B, T, dim), the encoder's output. ``kind="none"`` is the per-frame baseline: the same
    model with no mixing over time (window 1 in effect, whatever the window length).
    Extra keyword arguments (``kernel_size``, ``heads``) go to :class:`TemporalEncoder`.
    """

    def __init__(self, in_dim: int, kind: Kind = "transformer", dim: int = 128, layers: int = 2,
                 dropout: float = 0.1, **encoder_kwargs: Any) -> None:
        super().__init__()
        self.kind = kind
        self.encoder = TemporalEncoder(kind, in_dim, dim, layers, dropout, **encoder_kwargs)
        self.drop = nn.Dropout(dropout)
        self.au = nn.Linear(dim, N_AU)
        self.expr = nn.Linear(dim, N_EXPR)
        self.va = nn.Linear(dim, N_VA)

    @property
    def receptive_field(self) -> int | None:
        """Frames each output depends on (``"tcn"``, ``"none"``); ``None`` for the whole window (GRU, Transformer)."""
        return self.encoder.receptive_field

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None, return_features: bool = False
                ) -> dict[str, torch.Tensor]:
        single = x.ndim == 2
        if single:
            x = x.unsqueeze(1)
            valid = None if valid is None else torch.as_tensor(valid).reshape(-1, 1)
        features = self.encoder(x, valid)
        h = self.drop(features)
        out = {"au": self.au(h), "expr": self.expr(h), "va": torch.tanh(self.va(h))}
        if return_features:
            out["features"] = features
        if single:
            out = {k: v.squeeze(1) for k, v in out.items()}
        return out


# --------------------------------------------------------------------------- data


class FeatureWindowDataset(WindowedLabels):
    """Windows over an in-memory per-row feature matrix, for temporal models on any features.

    ``features`` (N_rows, D) is aligned with the rows of ``table`` (row i of the features is
    row i of the table, index reset): features of a stage-2 model, pooled backbone features,
    pooled features concatenated with audio features, ... The windows are those of
    :class:`course_lib.data.datasets.SequenceDataset` and
    :class:`course_lib.features.CachedWindowDataset` for the same ``table``, ``window``,
    ``stride`` and ``pad``. Item ``i``: ``features`` float32 (T, D) plus what
    :class:`~course_lib.data.datasets.WindowedLabels` gives (``va``, ``expr``, ``au``, ``has_*``,
    ``valid``, ``indices``, ``index``). Train with ``fit(..., input_key=("features", "valid"))``
    so the model knows the padding frames (``input_key="features"`` works too).
    """

    def __init__(self, features: torch.Tensor | np.ndarray, table, window: int, stride: int = 1,
                 pad: bool = False) -> None:
        if torch.is_tensor(features):
            features = features.detach().to("cpu", torch.float32)
        else:
            features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        if features.ndim != 2:
            raise ValueError(f"features must be (rows, dim), got shape {tuple(features.shape)}")
        if len(features) != len(table):
            raise ValueError(f"features has {len(features)} rows but the table has {len(table)}: "
                             "row i of the features must belong to row i of the table")
        self._init_windows(table, window, stride, pad)
        self.features = features

    @property
    def dim(self) -> int:
        """D, the width of the features."""
        return int(self.features.shape[1])

    def _inputs(self, rows: np.ndarray) -> dict[str, Any]:
        return {"features": self.features[torch.from_numpy(rows)]}


# --------------------------------------------------------------------------- stitching


def stitch_windows(rows: np.ndarray, valid: np.ndarray, values: np.ndarray, n_rows: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Average window outputs back to one value per table row.

    ``rows`` (W, T) int: the table row of each window position (a dataset's ``indices``),
    ``valid`` (W, T) bool: False for padding, ``values`` (W, T, C) (or (W, T)): what the
    model said there. Returns ``(per_row, covered)``: ``per_row`` (R, C) (or (R,)) float64,
    the mean of ``values`` over every valid occurrence of each row (NaN for a row that never
    occurs validly), and ``covered`` (R,) bool. ``R = n_rows`` or ``rows.max() + 1``.
    """
    rows, valid, values = np.asarray(rows), np.asarray(valid, dtype=bool), np.asarray(values, dtype=np.float64)
    if rows.ndim != 2 or valid.shape != rows.shape or values.shape[:2] != rows.shape or values.ndim not in (2, 3):
        raise ValueError(f"expected rows (W, T), valid (W, T) and values (W, T, C); got {rows.shape}, "
                         f"{valid.shape} and {values.shape}")
    flat = values.ndim == 2
    if flat:
        values = values[..., None]
    r = rows[valid].astype(np.int64)
    n = int(n_rows) if n_rows is not None else (int(rows.max()) + 1 if rows.size else 0)
    if r.size and (r.min() < 0 or r.max() >= n):
        raise ValueError(f"rows must lie in [0, {n}) (n_rows), got {r.min()}..{r.max()}")
    c = values.shape[-1]
    counts = np.bincount(r, minlength=n)
    sums = np.bincount((r[:, None] * c + np.arange(c)).ravel(), weights=values[valid].ravel(),
                       minlength=n * c).reshape(n, c)
    covered = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_row = np.where(covered[:, None], sums / counts[:, None], np.nan)
    return (per_row[:, 0] if flat else per_row), covered


def per_task_predictions(predictions: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One per-frame prediction dict from one model per task (seed 001's per-task windows).

    ``predictions`` maps ``"au"``, ``"expr"``, ``"va"`` to the output of
    :func:`course_lib.train.predict` of the model trained for that task (on windows of
    ``WINDOWS[task]`` frames, say). The result has the format of ``predict``'s output: each
    task's prediction from its own model, the labels and masks from the AU model's dict (they are
    the same in all three), on the table
    rows (``index``) that every model covered, sorted. Build the window datasets with
    ``pad=True`` and ``stride <= window`` so that every model covers every frame::

        models = {}
        for task, window in WINDOWS.items():
            ds = FeatureWindowDataset(features, train_table, window, stride=max(1, window // 2), pad=True)
            models[task] = TemporalModel(ds.dim, "transformer")
            fit(models[task], DataLoader(ds, batch_size=..., shuffle=True), ..., input_key=("features", "valid"))
        val_sets = {t: FeatureWindowDataset(val_features, val_table, w, pad=True) for t, w in WINDOWS.items()}
        combined = per_task_predictions({t: predict(models[t], DataLoader(val_sets[t], batch_size=64),
                                                    input_key=("features", "valid")) for t in WINDOWS})
        score(combined)
    """
    missing = [t for t in TASK_KEYS if t not in predictions]
    if missing:
        raise ValueError(f"per_task_predictions needs one prediction dict per task; missing {missing}")
    for task, pred in predictions.items():
        if task not in TASK_KEYS:
            raise ValueError(f"unknown task {task!r}: use {list(TASK_KEYS)}")
        if "index" not in pred:
            raise ValueError(f"predictions[{task!r}] has no 'index': pass the output of course_lib.train.predict")
    common = None
    for pred in predictions.values():
        index = np.asarray(pred["index"])
        common = index if common is None else np.intersect1d(common, index)
    common = np.unique(common)
    first = predictions["au"]
    combined: dict[str, np.ndarray] = {}
    for task, keys in TASK_KEYS.items():
        pred = predictions[task]
        where = _positions(np.asarray(pred["index"]), common)
        for key in keys:
            combined[key] = np.asarray(pred[key])[where]
    where = _positions(np.asarray(first["index"]), common)
    for key, value in first.items():
        if key not in combined and key != "index" and len(np.asarray(value)) == len(first["index"]):
            combined[key] = np.asarray(value)[where]
    combined["index"] = common
    return combined


def _positions(index: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions in ``index`` (unique values) of each value of ``wanted`` (all present)."""
    order = np.argsort(index, kind="stable")
    return order[np.searchsorted(index[order], wanted)]


__all__ = ["FeatureWindowDataset", "KINDS", "SinusoidalPosition", "TCNBlock", "TemporalEncoder", "TemporalModel",
           "WINDOWS", "per_task_predictions", "stitch_windows", "tcn_receptive_field"]
