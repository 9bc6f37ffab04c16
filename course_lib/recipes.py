"""One recipe for every small model of the course: train it on cached features, from a seed.

First used in ``02_backbones_and_features`` (linear heads on frozen features) and taught in
``03_cross_attention``; notebooks 04, 06 and 07 and the library (the progressive stages, the
ablations, the explanation heads, the audio-visual model) use it too. The frozen backbone's
features are computed once and cached (:mod:`course_lib.features`), so a model trained on them
takes seconds, and a comparison of two designs is a comparison of two ``make_model`` functions.

:func:`train_on_features` builds the model, a seeded shuffling loader and the validation loader,
and calls :func:`course_lib.train.fit`, all inside :func:`course_lib.config.seeded`: the initial
weights, the batch order and the dropout masks follow ``seed`` alone, and the caller's random
stream is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .config import seeded
from .train import InputKey, TrainConfig, TrainResult, fit, predict


@dataclass
class Trained:
    """A model trained by :func:`train_on_features`, its :class:`~course_lib.train.TrainResult`
    (history, best epoch and its validation scores), and how to run it."""

    model: nn.Module
    result: TrainResult
    input_key: InputKey
    device: torch.device | str | None
    val_loader: DataLoader | None

    def predict(self, dataset: Dataset | None = None, *, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Predictions on ``dataset`` (default: the validation set it was trained with)."""
        if dataset is None:
            if self.val_loader is None:
                raise ValueError("trained without a validation set: pass the dataset to predict on")
            loader = self.val_loader
        else:
            loader = DataLoader(dataset, batch_size=batch_size)
        return predict(self.model, loader, input_key=self.input_key, device=self.device)


def train_on_features(make_model: Callable[[], nn.Module], train_set: Dataset, val_set: Dataset | None, *,
                      loss_fn: nn.Module, seed: int, config: TrainConfig | None = None, batch_size: int = 64,
                      loader_seed: int | None = None, drop_last: bool = True, val_batch_size: int = 256,
                      input_key: InputKey = "tokens", device: torch.device | str | None = None,
                      progress_bar: bool = False, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> Trained:
    """Train ``make_model()`` on ``train_set`` with :func:`~course_lib.train.fit` and keep its best epoch.

    Inside ``seeded(seed)``: the model is built (its initial weights), the training loader
    shuffles with its own generator seeded by ``loader_seed`` (default ``seed``), and the
    dropout masks of training are drawn. ``drop_last`` drops the last, smaller batch of each
    epoch; ``val_batch_size`` batches the validation set, which :func:`fit` scores after
    every epoch to pick the best one. The other arguments go to :func:`fit`.
    """
    with seeded(seed):
        model = make_model()
        generator = torch.Generator().manual_seed(seed if loader_seed is None else loader_seed)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=drop_last, generator=generator)
        val_loader = DataLoader(val_set, batch_size=val_batch_size) if val_set is not None else None
        result = fit(model, loader, val_loader, config=config, loss_fn=loss_fn, input_key=input_key, device=device,
                     progress_bar=progress_bar, on_epoch=on_epoch)
    return Trained(model=model, result=result, input_key=input_key, device=device, val_loader=val_loader)


__all__ = ["Trained", "train_on_features"]
