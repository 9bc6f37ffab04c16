"""One readable training loop for every model of the course (nanoGPT-style, not a framework).

First used in ``02_backbones_and_features`` and ``03_cross_attention``; ``05_progressive_training``
takes it apart. :func:`fit` trains a multi-task model with AdamW, a linear warm-up then cosine
learning-rate schedule, gradient clipping and early stopping on the validation P_MTL, and
returns a history table (one row per epoch) and the best weights. :func:`predict` and
:func:`evaluate` run a model over a loader and score it with the challenge metric.

Batches are dicts as produced by the course's datasets: the model input under ``input_key``
(``"image"``, ``"tokens"`` or ``"pooled"``) and the labels ``va``, ``expr``, ``au`` with their
``has_*`` masks.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .labels import MISSING_AU, MISSING_EXPR, MISSING_VA
from .losses import MultiTaskLoss
from .metrics import p_mtl
from .progress import progress

LABEL_KEYS = ("va", "expr", "au", "has_va", "has_expr", "has_au")


@dataclass
class TrainConfig:
    """How to train: epochs, optimiser, schedule, clipping, early stopping."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1  # share of all steps spent warming up
    grad_clip: float | None = 1.0
    patience: int | None = None  # epochs without a better validation P_MTL before stopping
    au_threshold: float = 0.5


@dataclass
class TrainResult:
    """What :func:`fit` returns: the history table, the best epoch and its scores."""

    history: "pandas.DataFrame"  # noqa: F821
    best_epoch: int
    best_scores: dict[str, Any] | None
    seconds: float
    steps: int
    frames_per_second: float
    extra: dict[str, Any] = field(default_factory=dict)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """The learning-rate factor per step: linear from 0 to 1, then a cosine down to 0."""
    warmup = max(1, int(round(total_steps * warmup_fraction)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    return factor


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch to ``device`` (other entries stay as they are)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def predict(model: nn.Module, loader, *, input_key: str = "tokens", device: torch.device | str | None = None,
            progress_bar: bool = False) -> dict[str, np.ndarray]:
    """Run ``model`` over ``loader``: AU probabilities, EXPR logits, VA, the labels and row indices."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out: dict[str, list[np.ndarray]] = {**{f"{k}_pred": [] for k in ("au", "expr", "va")},
                                        **{k: [] for k in ("index", *LABEL_KEYS)}}
    for batch in progress(loader, desc="predicting", disable=not progress_bar, leave=False):
        pred = model(batch[input_key].to(device))
        out["au_pred"].append(torch.sigmoid(pred["au"]).float().cpu().numpy())
        out["expr_pred"].append(pred["expr"].float().cpu().numpy())
        out["va_pred"].append(pred["va"].float().cpu().numpy())
        for key in ("index", *LABEL_KEYS):
            if key in batch:
                out[key].append(batch[key].cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items() if v}


def score(predictions: dict[str, np.ndarray], au_threshold: float | np.ndarray = 0.5) -> dict[str, Any]:
    """P_MTL of :func:`predict`'s output, leaving out missing labels (markers or ``has_*`` masks)."""
    va, expr, au = (np.asarray(predictions[k], dtype=np.float64) for k in ("va", "expr", "au"))
    if "has_va" in predictions:
        va = np.where(predictions["has_va"].reshape(-1, 1), va, MISSING_VA)
    if "has_expr" in predictions:
        expr = np.where(predictions["has_expr"].reshape(-1), expr, MISSING_EXPR)
    if "has_au" in predictions:
        au = np.where(predictions["has_au"].reshape(-1, 1), au, MISSING_AU)
    return p_mtl(va, predictions["va_pred"], expr.astype(np.int64), predictions["expr_pred"], au.astype(np.int64),
                 predictions["au_pred"], au_threshold=au_threshold)


def evaluate(model: nn.Module, loader, *, input_key: str = "tokens", au_threshold: float = 0.5,
             device: torch.device | str | None = None) -> dict[str, Any]:
    """Score ``model`` on ``loader`` with the challenge metric (see :func:`course_lib.metrics.p_mtl`)."""
    return score(predict(model, loader, input_key=input_key, device=device), au_threshold)


def fit(model: nn.Module, train_loader, val_loader=None, *, config: TrainConfig | None = None,
        loss_fn: nn.Module | None = None, input_key: str = "tokens", device: torch.device | str | None = None,
        progress_bar: bool = True, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``model`` and keep the weights of its best validation epoch (loaded back at the end).

    Without ``val_loader`` the last epoch counts as the best. ``on_epoch`` is called with each
    history row (live plots in notebooks). Returns a :class:`TrainResult`.
    """
    import pandas as pd

    config = config or TrainConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    loss_fn = (loss_fn or MultiTaskLoss()).to(device)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    total_steps = max(1, config.epochs * len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, config.warmup_fraction))
    rows, best_score, best_epoch, best_scores, best_state = [], -math.inf, 0, None, None
    frames, train_seconds, step, start = 0, 0.0, 0, time.perf_counter()
    epochs_bar = progress(range(1, config.epochs + 1), desc="epochs", disable=not progress_bar)
    for epoch in epochs_bar:
        model.train()
        tick, losses, parts_sum = time.perf_counter(), [], {}
        for batch in train_loader:
            batch = to_device(batch, device)
            outputs = model(batch[input_key])
            loss, parts = loss_fn(outputs, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            frames += len(batch[input_key])
            losses.append(float(loss.detach()))
            for k, v in parts.items():
                v = float(v)
                if not math.isnan(v):
                    parts_sum.setdefault(k, []).append(v)
        train_seconds += time.perf_counter() - tick
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": scheduler.get_last_lr()[0],
               **{f"loss_{k}": float(np.mean(v)) for k, v in parts_sum.items()}}
        if val_loader is not None:
            scores = evaluate(model, val_loader, input_key=input_key, au_threshold=config.au_threshold, device=device)
            row.update({f"val_{k}": scores[k] for k in ("total", "va", "expr", "au")})
            current = scores["total"]
        else:
            scores, current = None, float(epoch)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if progress_bar and hasattr(epochs_bar, "set_postfix"):
            epochs_bar.set_postfix(loss=f"{row['loss']:.3f}", **({"val": f"{current:.3f}"} if scores else {}))
        if current > best_score:
            best_score, best_epoch, best_scores = current, epoch, scores
            best_state = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
        elif config.patience is not None and epoch - best_epoch >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    seconds = time.perf_counter() - start
    return TrainResult(history=pd.DataFrame(rows), best_epoch=best_epoch, best_scores=best_scores,
                       seconds=seconds, steps=step, frames_per_second=frames / max(train_seconds, 1e-9))


def plot_history(history: "pandas.DataFrame", title: str = "training"):  # noqa: F821
    """A plotly figure: training loss per epoch and, when present, validation P_MTL and its parts."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    has_val = "val_total" in history
    fig = make_subplots(rows=1, cols=2 if has_val else 1,
                        subplot_titles=("training loss", "validation P_MTL") if has_val else ("training loss",))
    fig.add_trace(go.Scatter(x=history.epoch, y=history.loss, name="loss", mode="lines+markers"), row=1, col=1)
    for key in ("loss_au", "loss_expr", "loss_va"):
        if key in history:
            fig.add_trace(go.Scatter(x=history.epoch, y=history[key], name=key, mode="lines", line=dict(dash="dot")),
                          row=1, col=1)
    if has_val:
        for key, color in (("val_total", "#1d2731"), ("val_va", "#457b9d"), ("val_expr", "#e76f51"),
                           ("val_au", "#2a9d8f")):
            fig.add_trace(go.Scatter(x=history.epoch, y=history[key], name=key, mode="lines+markers",
                                     line=dict(color=color)), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=340, title=title)
    return fig
