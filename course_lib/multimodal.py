"""Training seed 003's audio-visual temporal model on cached features and audio windows.

Taught in ``07_multimodal_audio`` (section 7, where the loop is written out); used by ``08``'s
ablation for its "seed 003 assembled" row. The model and its window dataset live in
:mod:`course_lib.models.audiovisual`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from .audio import AudioVisualDataset, audio_features, band_stats, normalize_bands
from .losses import weighted_loss
from .models.audiovisual import AudioVisualTemporalModel, AudioVisualWindowDataset
from .train import TrainConfig, fit, predict

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
    torch.manual_seed(seed)
    model = AudioVisualTemporalModel(windows["train"].visual.shape[1], use_audio=use_audio, **model_kwargs)
    loader = DataLoader(windows["train"], batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(windows["validation"], batch_size=32)
    result = fit(model, loader, val_loader, config=TrainConfig(epochs=epochs, lr=lr, seed=seed),
                 loss_fn=weighted_loss(train), input_key=INPUTS, device=device, progress_bar=False)
    out = {"model": model, "result": result,
           "predictions": predict(model, val_loader, input_key=INPUTS, device=device),
           "train_predictions": predict(model, DataLoader(windows["train"], batch_size=32), input_key=INPUTS,
                                        device=device)}
    if "test" in windows:
        out["test_predictions"] = predict(model, DataLoader(windows["test"], batch_size=32), input_key=INPUTS,
                                          device=device)
    return out


__all__ = ["INPUTS", "audiovisual_windows", "train_audiovisual"]
