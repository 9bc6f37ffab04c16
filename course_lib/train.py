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

import contextlib
import copy
import io
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from .files import atomic_write
from .losses import MultiTaskLoss
from .metrics import p_mtl, with_missing_markers
from .models.temporal import stitch_windows
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
    amp: bool | None = None  # mixed precision: None = bf16 autocast on CUDA, off elsewhere
    channels_last: bool | None = None  # None = on CUDA (image inputs)
    compile: bool = False  # torch.compile the model for training
    checkpoint: str | None = None  # file written atomically every epoch; resumed from when it exists
    seed: int = 0  # seeds the distributed sampler's shuffling under torchrun


@dataclass
class TrainResult:
    """What :func:`fit` returns: the history table, the best epoch and its scores."""

    history: pd.DataFrame
    best_epoch: int
    best_scores: dict[str, Any] | None
    seconds: float
    steps: int
    frames_per_second: float
    extra: dict[str, Any] = field(default_factory=dict)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """The learning-rate factor of steps ``0 .. total_steps - 1``: linear warm-up from 1/warm-up to 1
    over ``round(total_steps * warmup_fraction)`` steps (at least 1), then half a cosine that reaches 0
    at step ``total_steps``, one past the last, so the last step still learns a little."""
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


InputKey = str | tuple[str, ...]


def model_inputs(batch: dict[str, Any], input_key: InputKey) -> tuple[torch.Tensor, ...]:
    """The positional model inputs of a batch: ``batch[input_key]``, or one per key of a tuple."""
    keys = (input_key,) if isinstance(input_key, str) else tuple(input_key)
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"the batch has no {missing} (it has {sorted(batch)}): pass input_key= one of those")
    return tuple(batch[k] for k in keys)


@torch.no_grad()
def predict(model: nn.Module, loader, *, input_key: InputKey = "tokens", device: torch.device | str | None = None,
            progress_bar: bool = False) -> dict[str, np.ndarray]:
    """Run ``model`` over ``loader``: AU probabilities, EXPR logits, VA, the labels and row indices.

    For windows (batches with ``valid`` and ``indices``, outputs (B, T, C)) the overlapping
    window predictions are averaged back to one per frame (:func:`course_lib.models.temporal.stitch_windows`),
    so the result is per frame either way and ``index`` holds the table rows.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out: dict[str, list[np.ndarray]] = {**{f"{k}_pred": [] for k in ("au", "expr", "va")},
                                        **{k: [] for k in ("index", "indices", "valid", *LABEL_KEYS)}}
    for batch in progress(loader, desc="predicting", disable=not progress_bar, leave=False):
        pred = model(*(x.to(device) for x in model_inputs(batch, input_key)))
        out["au_pred"].append(torch.sigmoid(pred["au"]).float().cpu().numpy())
        out["expr_pred"].append(pred["expr"].float().cpu().numpy())
        out["va_pred"].append(pred["va"].float().cpu().numpy())
        for key in ("index", "indices", "valid", *LABEL_KEYS):
            if key in batch:
                out[key].append(batch[key].cpu().numpy())
    result = {k: np.concatenate(v) for k, v in out.items() if v}
    if "valid" not in result:
        return result
    rows, valid = result.pop("indices"), result.pop("valid")
    stitched: dict[str, np.ndarray] = {}
    for key in ("au_pred", "expr_pred", "va_pred"):
        value = result[key]
        per_row, covered = stitch_windows(rows, valid, value.reshape(*value.shape[:2], -1).astype(np.float64))
        stitched[key] = per_row.reshape(len(per_row), *value.shape[2:])
    keep = np.flatnonzero(covered)
    stitched = {k: v[keep] for k, v in stitched.items()}
    for key in LABEL_KEYS:  # a frame has the same labels in every window: take them from any one
        if key in result:
            labels = np.zeros((len(covered), *result[key].shape[2:]), dtype=result[key].dtype)
            labels[rows[valid]] = result[key][valid]
            stitched[key] = labels[keep]
    stitched["index"] = keep
    return stitched


def score(predictions: dict[str, np.ndarray], au_threshold: float | np.ndarray = 0.5) -> dict[str, Any]:
    """P_MTL of :func:`predict`'s output, leaving out missing labels (markers or ``has_*`` masks)."""
    va, expr, au = with_missing_markers(*(predictions[k] for k in ("va", "expr", "au")),
                                        *(predictions.get(f"has_{k}") for k in ("va", "expr", "au")))
    return p_mtl(va, predictions["va_pred"], expr, predictions["expr_pred"], au,
                 predictions["au_pred"], au_threshold=au_threshold)


def evaluate(model: nn.Module, loader, *, input_key: InputKey = "tokens", au_threshold: float = 0.5,
             device: torch.device | str | None = None) -> dict[str, Any]:
    """Score ``model`` on ``loader`` with the challenge metric (see :func:`course_lib.metrics.p_mtl`)."""
    return score(predict(model, loader, input_key=input_key, device=device), au_threshold)


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) outside ``torchrun``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def distributed_loader(loader, *, seed: int = 0):
    """``loader`` with a :class:`~torch.utils.data.distributed.DistributedSampler` (each rank a share).

    Outside a process group, or when the loader already has one, it is returned as it is.
    Shuffling follows the original loader (``shuffle=True`` stays shuffled, re-seeded per epoch).
    """
    rank, world = _distributed()
    if world == 1 or isinstance(loader.sampler, DistributedSampler):
        return loader
    sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=rank, seed=seed,
                                 shuffle=isinstance(loader.sampler, RandomSampler), drop_last=loader.drop_last)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last)


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if k not in ("checkpoint", "compile")}


def _rng_state(loader) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "loader": loader.generator.get_state() if getattr(loader, "generator", None) is not None else None}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], loader) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("loader") is not None and getattr(loader, "generator", None) is not None:
        loader.generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically: a temporary file, then a rename.

    An interruption (power cut, Colab disconnect, Ctrl-C) leaves the previous checkpoint
    intact, never half a file.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit`; a clear error names a damaged file."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise RuntimeError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc}); "
                           "delete it to start this run from scratch") from None


@dataclass
class StepPrecision:
    """How the training step runs on this device (reported in :attr:`TrainResult.extra`)."""

    amp_dtype: torch.dtype | None
    channels_last: bool
    note: str


def native_bf16() -> bool:
    """Whether the GPU computes bf16 natively (Ampere and newer); a T4 only emulates it, slowly."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before 2.3 has no including_emulation and counts native support only
        return torch.cuda.is_bf16_supported()


def step_precision(config: TrainConfig, device: torch.device) -> StepPrecision:
    """How :func:`fit` runs its step on ``device``: autocast dtype, channels-last, and why (taught in ``05``)."""
    cuda = device.type == "cuda"
    amp = config.amp if config.amp is not None else cuda
    notes = []
    if amp and not cuda:
        notes.append(f"mixed precision skipped on {device.type}: bf16 autocast is used on CUDA only")
        amp = False
    dtype = None
    if amp:
        dtype = torch.bfloat16 if native_bf16() else torch.float16
    channels_last = bool(config.channels_last if config.channels_last is not None else cuda)
    return StepPrecision(dtype, channels_last, "; ".join(notes))


@dataclass
class _Run:
    """What :func:`fit` carries from epoch to epoch, all of it written into a checkpoint."""

    epoch: int = 0  # the last finished epoch
    rows: list[dict[str, Any]] = field(default_factory=list)  # the history, one row per epoch
    step: int = 0
    frames: int = 0
    train_seconds: float = 0.0
    best_score: float = -math.inf
    best_epoch: int = 0
    best_scores: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stopped: bool = False  # early stopping fired


def _adamw(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices only (not on biases, norms and embeddings' 1-D parts)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)


def _resume(checkpoint: Path, config: TrainConfig, model: nn.Module, optimizer, scheduler, loader) -> _Run:
    """The run saved in ``checkpoint``: weights, optimiser, schedule and random streams restored."""
    saved, settings = load_checkpoint(checkpoint), _config_dict(config)
    if saved["config"] != settings:
        differ = sorted(k for k in settings if saved["config"].get(k) != settings[k])
        raise ValueError(f"{checkpoint}: this checkpoint was written with other settings ({', '.join(differ)}); "
                         "delete it or pass another checkpoint path")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(saved["rng"], loader)
    return _Run(epoch=saved["epoch"], rows=saved["history"], step=saved["step"], frames=saved["frames"],
                train_seconds=saved["train_seconds"], best_score=saved["best_score"], best_epoch=saved["best_epoch"],
                best_scores=saved["best_scores"], best_state=saved["best_state"], stopped=saved["stopped"])


def _save(checkpoint: Path, run: _Run, config: TrainConfig, model: nn.Module, optimizer, scheduler, loader) -> None:
    save_checkpoint(checkpoint, {
        "config": _config_dict(config), "epoch": run.epoch, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "history": run.rows,
        "step": run.step, "frames": run.frames, "train_seconds": run.train_seconds, "best_score": run.best_score,
        "best_epoch": run.best_epoch, "best_scores": run.best_scores, "best_state": run.best_state,
        "stopped": run.stopped, "rng": _rng_state(loader)})


def _mean_over_ranks(value: float, world: int, device: torch.device) -> float:
    """The mean of ``value`` over every rank of the process group (``value`` itself on one process)."""
    if world == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / world


def fit(model: nn.Module, train_loader, val_loader=None, *, config: TrainConfig | None = None,
        loss_fn: nn.Module | None = None, input_key: InputKey = "tokens", device: torch.device | str | None = None,
        progress_bar: bool = True, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``model`` and keep the weights of its best validation epoch (loaded back at the end).

    Without ``val_loader`` the last epoch counts as the best. ``on_epoch`` is called with each
    history row (e.g. :class:`course_lib.curves.LiveCurves` in notebooks). Returns a :class:`TrainResult`.

    On CUDA the step runs under bf16 autocast (fp16 with a gradient scaler where bf16 is not
    supported) with channels-last image inputs; elsewhere in fp32 (``config.amp`` /
    ``config.channels_last`` override, ``config.compile`` wraps the model in ``torch.compile``).
    With ``config.checkpoint`` the whole state (weights, optimiser, schedule, history, best
    weights, random generators) is written atomically after every epoch, and a later call with
    the same file continues after the last finished epoch: the result equals an uninterrupted
    run (on CPU, bit for bit). Under ``torchrun`` the model is wrapped in
    DistributedDataParallel, the loader gets a DistributedSampler, every rank evaluates the
    whole validation set (so all take the same decisions) and only rank 0 prints, plots and
    writes the checkpoint.
    """
    # ---- set-up: device and precision, optimiser and schedule, a resumed run
    config = config or TrainConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rank, world = _distributed()
    is_main = rank == 0
    precision = step_precision(config, device)
    model.to(device)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = (loss_fn or MultiTaskLoss()).to(device)
    optimizer = _adamw(model, config)
    train_loader = distributed_loader(train_loader, seed=config.seed)
    total_steps = max(1, config.epochs * len(train_loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, config.warmup_fraction))
    scaler = torch.amp.GradScaler("cuda") if precision.amp_dtype == torch.float16 else None  # fp16 only
    checkpoint = Path(config.checkpoint) if config.checkpoint else None
    resumed = checkpoint is not None and checkpoint.exists()
    run = _resume(checkpoint, config, model, optimizer, scheduler, train_loader) if resumed else _Run()
    resumed_from = run.epoch

    train_model: nn.Module = model  # what the step calls: the model, wrapped for DDP and compiled if asked
    if world > 1:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)
    autocast = (torch.autocast(device.type, dtype=precision.amp_dtype) if precision.amp_dtype is not None
                else contextlib.nullcontext())

    # ---- the loop: an epoch of steps, then validation, the best weights kept, a checkpoint written
    start = time.perf_counter() - (run.rows[-1]["seconds"] if run.rows else 0.0)  # a resumed run keeps its clock
    epochs = range(run.epoch + 1, config.epochs + 1) if not run.stopped else range(0)
    epochs_bar = progress(epochs, desc="epochs", disable=not (progress_bar and is_main))
    for epoch in epochs_bar:
        train_model.train()
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)  # a new shuffle per epoch under DDP
        tick, losses, parts_sum = time.perf_counter(), [], {}
        for batch in train_loader:
            batch = to_device(batch, device)
            inputs = model_inputs(batch, input_key)
            if precision.channels_last:
                inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in inputs)
            with autocast:
                outputs = train_model(*inputs)
            # the loss in float32 whatever the autocast; frames without a task's label leave that task's term
            loss, parts = loss_fn({k: v.float() for k, v in outputs.items() if torch.is_tensor(v)}, batch)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:  # fp16: scale the loss up so small gradients survive, unscale before clipping
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)  # skips the step when a gradient overflowed
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            run.step += 1
            run.frames += int(batch["valid"].sum()) if "valid" in batch else len(inputs[0])  # windows: real frames
            losses.append(float(loss.detach()))
            for k, v in parts.items():
                v = float(v)
                if not math.isnan(v):  # nan: a task absent from the whole batch
                    parts_sum.setdefault(k, []).append(v)
        run.train_seconds += time.perf_counter() - tick

        epoch_loss = _mean_over_ranks(float(np.mean(losses)) if losses else math.nan, world, device)
        row = {"epoch": epoch, "loss": epoch_loss, "lr": scheduler.get_last_lr()[0],
               **{f"loss_{k}": float(np.mean(v)) for k, v in parts_sum.items()}}
        scores, current = None, float(epoch)  # without validation the last epoch is the best
        if val_loader is not None:
            with autocast:
                scores = evaluate(model, val_loader, input_key=input_key, au_threshold=config.au_threshold,
                                  device=device)
            row.update({f"val_{k}": scores[k] for k in ("total", "va", "expr", "au")})
            current = scores["total"]
        row["seconds"] = time.perf_counter() - start
        run.rows.append(row)
        run.epoch = epoch
        if current > run.best_score:
            run.best_score, run.best_epoch, run.best_scores = current, epoch, scores
            run.best_state = copy.deepcopy({k: v.detach().clone() for k, v in model.state_dict().items()})
        elif config.patience is not None and epoch - run.best_epoch >= config.patience:
            run.stopped = True
        if checkpoint is not None and is_main:
            _save(checkpoint, run, config, model, optimizer, scheduler, train_loader)
        if world > 1:
            dist.barrier()  # no rank runs ahead of the checkpoint
        if on_epoch is not None and is_main:
            on_epoch(row)
        if progress_bar and is_main and hasattr(epochs_bar, "set_postfix"):
            epochs_bar.set_postfix(loss=f"{row['loss']:.3f}", **({"val": f"{current:.3f}"} if scores else {}))
        if run.stopped:
            break

    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    extra = {"device": str(device), "world_size": world, "amp": str(precision.amp_dtype).replace("torch.", "")
             if precision.amp_dtype else "off", "channels_last": precision.channels_last,
             "compiled": bool(config.compile), "resumed_from_epoch": resumed_from, "note": precision.note}
    return TrainResult(history=pd.DataFrame(run.rows), best_epoch=run.best_epoch, best_scores=run.best_scores,
                       seconds=time.perf_counter() - start, steps=run.step,
                       frames_per_second=run.frames * world / max(run.train_seconds, 1e-9), extra=extra)

