"""Training seed 003's audio-visual temporal model on cached features and audio windows.

Taught in ``07_multimodal_audio`` (section 7, where the loop is written out); used by ``08``'s
ablation (:mod:`course_lib.ablation`) for its "seed 003 assembled" row. The model and its window
dataset live in :mod:`course_lib.models.audiovisual`. :func:`audio_summaries` are the fixed
per-frame audio summaries that the ablation's ``+ audio`` step puts beside each frame's features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .audio import AudioVisualDataset, audio_features, band_stats, normalize_bands
from .losses import weighted_loss
from .models.audiovisual import AudioVisualTemporalModel, AudioVisualWindowDataset
from .recipes import train_on_features
from .train import TrainConfig

#: What the model reads, in the order of ``AudioVisualTemporalModel.forward``.
INPUTS: tuple[str, ...] = ("visual", "audio", "valid")


def audiovisual_windows(root: Path | str, feats: dict, train: pd.DataFrame, val: pd.DataFrame, *,
                        window: int = 30, test: pd.DataFrame | None = None) -> dict[str, AudioVisualWindowDataset]:
    """Windows of ``window`` frames over both splits (and ``test``, the test list's table, when given):
    each frame's pooled visual features (``feats``: :func:`course_lib.course_backbone.course_features`)
    and its log-Mel window, standardised with the training split's band statistics."""
    tables = {"train": train, "validation": val, **({"test": test} if test is not None else {})}
    audio = {split: audio_features(root, table) for split, table in tables.items()}
    mean, std = band_stats(audio["train"])
    return {split: AudioVisualWindowDataset(AudioVisualDataset(feats[split], None, tables[split]).visual,
                                            normalize_bands(audio[split], mean, std), tables[split], window=window)
            for split in tables}


def train_audiovisual(windows: dict[str, AudioVisualWindowDataset], train: pd.DataFrame, *, seed: int,
                      epochs: int, lr: float = 3e-3, batch_size: int = 8, use_audio: bool = True,
                      device: torch.device | str = "cpu", **model_kwargs: Any) -> dict[str, Any]:
    """One :class:`AudioVisualTemporalModel` trained on the training windows with the course's
    weighted loss; returns ``{"model", "result", "predictions", "train_predictions"}`` (validation and
    training frames, window predictions stitched back per frame) and ``"test_predictions"`` when
    ``windows`` has a ``"test"`` split."""
    trained = train_on_features(
        lambda: AudioVisualTemporalModel(windows["train"].visual.shape[1], use_audio=use_audio, **model_kwargs),
        windows["train"], windows["validation"], loss_fn=weighted_loss(train), seed=seed, batch_size=batch_size,
        val_batch_size=32, config=TrainConfig(epochs=epochs, lr=lr, seed=seed), input_key=INPUTS, device=device)
    out = {"model": trained.model, "result": trained.result, "predictions": trained.predict(),
           "train_predictions": trained.predict(windows["train"], batch_size=32)}
    if "test" in windows:
        out["test_predictions"] = trained.predict(windows["test"], batch_size=32)
    return out


def audio_summary(root: str | Path, table: pd.DataFrame, normalize: tuple[torch.Tensor, torch.Tensor]
                  ) -> torch.Tensor:
    """Per frame, the mean and standard deviation over time of each Mel band of its audio window: ``(N, 128)``.

    ``normalize`` is :func:`course_lib.audio.band_stats` of the *training* windows. A fixed summary
    (no CNN): the temporal model of stage 3 learns what to make of it, next to the visual features.
    """
    windows = audio_features(root, table, normalize=normalize)
    return torch.cat([windows.mean(dim=2), windows.std(dim=2)], dim=1)


def audio_summaries(root: str | Path, train: pd.DataFrame, *tables: pd.DataFrame) -> tuple[torch.Tensor, ...]:
    """:func:`audio_summary` of the training frames and of each of ``tables`` (validation, test), all
    normalised with the training split's band statistics: what the ``+ audio`` stage puts beside
    each frame's features."""
    stats = band_stats(audio_features(root, train))
    return tuple(audio_summary(root, table, stats) for table in (train, *tables))


__all__ = ["INPUTS", "audio_summaries", "audio_summary", "audiovisual_windows", "train_audiovisual"]
