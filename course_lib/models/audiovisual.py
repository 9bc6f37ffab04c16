"""Seed 003 assembled: per-frame visual features, a Transformer over 30 frames and an audio CNN.

Taught in ``07_multimodal_audio`` (section 7). Seed 003 (ABAW2, multimodal) reads every frame of a
window three ways and concatenates them before its AU and EXPR heads:

- the frame's own visual features (projected),
- the same features after a Transformer encoder over the window (what the neighbouring frames add),
- the frame's audio: its 64-band log-Mel window through a small CNN (:class:`course_lib.audio.AudioCNN`).

:class:`AudioVisualWindowDataset` cuts the annotated frames into windows (the windowing rules of
:class:`course_lib.data.datasets.WindowedLabels`: never across a gap or a video) and serves the visual
features and audio windows of each frame; :class:`AudioVisualTemporalModel` is the model. The
course adds a VA head, so that P_MTL can be compared with the other notebooks; ``07`` also scores
it with the ABAW2 metrics seed 003 was ranked by (:func:`course_lib.metrics.abaw2_expr_score`,
:func:`course_lib.metrics.abaw2_au_score`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..audio import CONTEXT, N_MELS, AudioCNN
from ..data.datasets import WindowedLabels
from .cross_attention import N_AU, N_EXPR, N_VA
from .temporal import TemporalEncoder


class AudioVisualWindowDataset(WindowedLabels):
    """Windows of ``window`` frames, each frame with its visual features and its audio window.

    ``visual`` (N_rows, C) and ``audio`` (N_rows, n_mels, context) are aligned with the rows of
    ``table`` (:func:`course_lib.audio.audio_features` of the same table gives the audio). Item
    ``i``: ``visual`` (T, C), ``audio`` (T, n_mels, context), plus the labels, masks, ``valid``
    and ``indices`` of :class:`~course_lib.data.datasets.WindowedLabels`. Train with
    ``fit(..., input_key=("visual", "audio", "valid"))``.
    """

    def __init__(self, visual: torch.Tensor | np.ndarray, audio: torch.Tensor, table: pd.DataFrame, window: int = 30,
                 stride: int | None = None, pad: bool = True) -> None:
        visual = torch.as_tensor(visual, dtype=torch.float32)
        if visual.ndim != 2 or len(visual) != len(table):
            raise ValueError(f"visual features have shape {tuple(visual.shape)}, expected ({len(table)}, C): "
                             "row i must belong to row i of the table")
        if audio.ndim != 3 or len(audio) != len(table):
            raise ValueError(f"audio has shape {tuple(audio.shape)}, expected ({len(table)}, n_mels, context): "
                             "make it with course_lib.audio.audio_features(root, table) of the same table")
        self._init_windows(table, window, stride or max(1, window // 2), pad)
        self.visual, self.audio = visual, audio.float()

    def _inputs(self, rows: np.ndarray) -> dict[str, Any]:
        index = torch.from_numpy(rows)
        return {"visual": self.visual[index], "audio": self.audio[index]}


class AudioVisualTemporalModel(nn.Module):
    """Seed 003's model: ``forward(visual (B, T, C), audio (B, T, n_mels, context), valid (B, T))``.

    Per frame: ``v`` = the projected visual features (LayerNorm, Linear to ``dim``, GELU);
    ``t`` = :class:`~course_lib.models.temporal.TemporalEncoder` (``"transformer"``) over the
    window of ``v`` (padding frames masked); ``a`` = :class:`~course_lib.audio.AudioCNN` of the
    frame's audio window. The heads read the concatenation ``[v, t, a]`` of each frame and return
    ``{"au": (B, T, 12) logits, "expr": (B, T, 8) logits, "va": (B, T, 2) in [-1, 1]}``.
    ``use_audio=False`` leaves ``a`` out (the visual-temporal part alone).
    """

    def __init__(self, visual_dim: int, *, dim: int = 64, audio_dim: int = 32, layers: int = 1, heads: int = 4,
                 dropout: float = 0.1, n_mels: int = N_MELS, context: int = CONTEXT, audio_channels: int = 8,
                 use_audio: bool = True) -> None:
        super().__init__()
        self.visual_dim = int(visual_dim)
        self.project = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, dim), nn.GELU())
        self.temporal = TemporalEncoder("transformer", dim, dim, layers, dropout, heads=heads)
        self.audio = AudioCNN(n_mels, context, audio_dim, audio_channels) if use_audio else None
        fused = 2 * dim + (audio_dim if use_audio else 0)
        self.drop = nn.Dropout(dropout)
        self.au, self.expr, self.va = nn.Linear(fused, N_AU), nn.Linear(fused, N_EXPR), nn.Linear(fused, N_VA)

    def forward(self, visual: torch.Tensor, audio: torch.Tensor | None = None, valid: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        if visual.ndim != 3 or visual.shape[-1] != self.visual_dim:
            raise ValueError(f"visual features have shape {tuple(visual.shape)}, expected (B, T, {self.visual_dim})")
        b, t, _ = visual.shape
        v = self.project(visual)
        parts = [v, self.temporal(v, valid)]
        if self.audio is not None:
            if audio is None or audio.shape[:2] != (b, t):
                raise ValueError(f"audio has shape {None if audio is None else tuple(audio.shape)}, "
                                 f"expected ({b}, {t}, n_mels, context)")
            parts.append(self.audio(audio.flatten(0, 1)).view(b, t, -1))
        h = self.drop(torch.cat(parts, dim=-1))
        return {"au": self.au(h), "expr": self.expr(h), "va": torch.tanh(self.va(h))}


__all__ = ["AudioVisualTemporalModel", "AudioVisualWindowDataset"]
