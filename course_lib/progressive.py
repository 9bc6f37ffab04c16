"""Progressive multi-task training, after seed 001 (ABAW7 winner): separate, joint, temporal.

Taught in ``05_progressive_training``; ``python -m course_lib.progressive --config ...`` runs the same
stages outside notebooks (and under ``torchrun`` on several GPUs).

- **Stage 1, separate**: one :class:`~course_lib.models.MultiTaskModel` per task, each trained
  on its own task's loss only (the other two weights are 0). Each model learns the features
  its task needs (AU: local muscle movements; EXPR: the whole configuration; VA: intensity).
- **Stage 2, joint**: :class:`FusionModel` starts from the three stage-1 models. Each model's
  own-task feature vector ``f_t`` is summed, ``s = f_au + f_expr + f_va``, and fused by
  Linear-ReLU-Dropout-Linear (seed 001's module). Each task's output is its stage-1 model's
  output plus a correction read from ``[f_t, fused]`` by a head that starts at zero, so stage 2
  begins exactly where stage 1 ended and joint training (all tasks' losses, all weights) can
  only move on from there. VA is corrected before its ``tanh`` (``atanh`` of the stage-1 value).
- **Stage 3, temporal**: the stage-2 model's per-frame features (the three task features,
  the fused vector and its outputs) are computed once; then for each task a
  :class:`~course_lib.models.temporal.TemporalModel` runs over windows of consecutive frames,
  with a window length per task (seed 001: 1 for AU, 5 for EXPR, 30 for VA), and its
  predictions are stitched back to one per frame. The final prediction takes each task from
  its own temporal model.

:func:`run_progressive` runs all three on the course backbone's cached tokens and returns every
stage's validation scores measured in that run (:class:`ProgressiveResult`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader

from .budgets import budget
from .config import get_device, repo_root, seed_everything
from .course_backbone import course_features
from .data.abaw import read_split
from .data.synth import ensure_course_data
from .features import CachedFrameDataset
from .losses import weighted_loss
from .models import MTLConfig, MultiTaskModel, build_model
from .models.cross_attention import N_AU, N_EXPR, N_QUERIES, N_VA
from .models.temporal import FeatureWindowDataset, TemporalModel, per_task_predictions
from .recipes import train_on_features
from .train import TrainConfig, TrainResult, score

TASKS = ("au", "expr", "va")
STAGES = ("stage1", "stage2", "stage3")


@dataclass
class ProgressiveConfig:
    """Sizes and budgets of the three stages (:func:`progressive_config` gives the course's per mode)."""

    dim: int = 64
    depth: int = 1
    heads: int = 4
    gcn: bool = True
    dropout: float = 0.1
    batch_size: int = 64
    stage1_epochs: int = 8
    stage1_lr: float = 3e-3
    stage2_epochs: int = 4
    stage2_lr: float = 1e-3
    stage3_epochs: int = 10
    stage3_lr: float = 2e-3
    temporal_kind: str = "transformer"
    temporal_dim: int = 64
    temporal_layers: int = 2
    windows: dict[str, int] = field(default_factory=lambda: {"au": 1, "expr": 5, "va": 30})
    amp: bool | None = None
    compile: bool = False
    seed: int = 0


def progressive_config(mode: str = "smoke", **overrides: Any) -> ProgressiveConfig:
    """The course's :class:`ProgressiveConfig` for ``mode`` (the ``"progressive"`` budget), with overrides."""
    return ProgressiveConfig(**{**budget("progressive", mode), **overrides})


def task_loss(train_table: pd.DataFrame, task: str | None = None) -> nn.Module:
    """The weighted multi-task loss (course backbone's weights); with ``task``, that task only."""
    loss = weighted_loss(train_table)
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: use one of {TASKS}")
        loss.weights = {t: float(t == task) for t in TASKS}
    return loss


class FusionModel(nn.Module):
    """Stage 2: three stage-1 task models joined by seed 001's feature fusion.

    ``forward(tokens)`` returns ``{"au", "expr", "va"}`` like a :class:`MultiTaskModel`;
    ``return_features=True`` adds ``"features"``: ``(B, 4 * dim + 22)`` per frame, the three
    task features, the fused vector and the three outputs (stage 3's input).
    """

    def __init__(self, task_models: dict[str, MultiTaskModel], dropout: float = 0.1) -> None:
        super().__init__()
        missing = [t for t in TASKS if t not in task_models]
        if missing:
            raise ValueError(f"FusionModel needs a stage-1 model for every task; missing {missing}")
        self.task_models = nn.ModuleDict({t: task_models[t] for t in TASKS})
        dim = task_models["au"].config.dim
        self.dim = dim
        self.fuse = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        outputs = {"au": N_AU, "expr": N_EXPR, "va": N_VA}
        self.correct = nn.ModuleDict({t: nn.Linear(2 * dim, outputs[t]) for t in TASKS})
        for head in self.correct.values():  # start exactly at the stage-1 outputs
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    @property
    def feature_dim(self) -> int:
        return 4 * self.dim + N_QUERIES  # three task features, the fused vector, 12 + 8 + 2 outputs

    def forward(self, tokens: torch.Tensor, return_features: bool = False) -> dict[str, Any]:
        own = {t: m(tokens, return_features=True) for t, m in self.task_models.items()}
        feats = {t: own[t]["features"][t] for t in TASKS}
        fused = self.fuse(feats["au"] + feats["expr"] + feats["va"])
        out: dict[str, Any] = {}
        for t in TASKS:
            delta = self.correct[t](torch.cat([feats[t], fused], dim=-1))
            if t == "va":
                base = torch.atanh(own[t]["va"].clamp(-0.999, 0.999))
                out[t] = torch.tanh(base + delta)
            else:
                out[t] = own[t][t] + delta
        if return_features:
            out["features"] = torch.cat([feats["au"], feats["expr"], feats["va"], fused,
                                         out["au"], out["expr"], out["va"]], dim=-1)
        return out


@dataclass
class ProgressiveResult:
    """What :func:`run_progressive` measured: per-stage scores, histories, models, predictions."""

    scores: pd.DataFrame  # one row per stage (and per task model in stage 1)
    histories: dict[str, pd.DataFrame]
    models: dict[str, nn.Module]
    predictions: dict[str, dict[str, np.ndarray]]  # per stage, validation predictions per frame
    config: ProgressiveConfig
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _row(stage: str, scores: dict[str, Any], seconds: float, result: TrainResult | None = None,
         model: str = "") -> dict[str, Any]:
    return {"stage": stage, "model": model, "P_MTL": scores["total"], "VA CCC": scores["va"],
            "EXPR F1": scores["expr"], "AU F1": scores["au"], "seconds": seconds,
            "frames/s": result.frames_per_second if result is not None else np.nan,
            "best epoch": result.best_epoch if result is not None else np.nan}


def _checkpoint(out_dir: Path | None, name: str) -> str | None:
    return str(out_dir / f"{name}.pt") if out_dir is not None else None


def stage_features(model: FusionModel, loader, device: torch.device | str) -> torch.Tensor:
    """Stage 3's input: the stage-2 model's per-frame features, in the loader's (unshuffled) order."""
    device = torch.device(device)
    model.eval()
    chunks = []
    with torch.no_grad():
        for batch in loader:
            chunks.append(model(batch["tokens"].to(device), return_features=True)["features"].float().cpu())
    return torch.cat(chunks)


def temporal_stage(f_train: torch.Tensor, f_val: torch.Tensor, train: pd.DataFrame, val: pd.DataFrame,
                   config: ProgressiveConfig, device: torch.device | str, *, out_dir: Path | str | None = None,
                   progress_bar: bool = False, on_epoch: Callable[[str, dict], None] | None = None,
                   train_predictions: bool = False,
                   test: "tuple[torch.Tensor, pd.DataFrame] | None" = None) -> dict[str, Any]:
    """Stage 3 on any per-frame features (rows aligned with ``train`` / ``val``): one temporal model per task.

    The features are standardised with training statistics; each task gets a
    :class:`~course_lib.models.temporal.TemporalModel` (``config.temporal_kind``; the per-frame
    ``"none"`` for a window of 1) over windows of ``config.windows[task]`` frames, trained on
    that task's loss; its validation predictions are stitched back per frame and each task is
    taken from its own model. Returns ``{"validation": combined predictions, "per_task": {task:
    predictions}, "runs": {task: {"model", "result", "seconds", "kind", "window"}}}`` and, with
    ``train_predictions``, ``"train"`` (the same on the training windows, e.g. to tune thresholds);
    ``test=(features, table)`` adds ``"test"``, the same on the test list's frames. Used by
    :func:`run_progressive` and by the ablations of :mod:`course_lib.ablation` (+ audio).
    """
    out_dir = Path(out_dir) if out_dir is not None else None
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
    f_train, f_val = (f_train - mean) / std, (f_val - mean) / std
    f_test = (test[0] - mean) / std if test is not None else None
    per_task, on_train, on_test, runs = {}, {}, {}, {}
    for i, task in enumerate(TASKS):
        window = int(config.windows[task])
        stride = max(1, window // 2)
        tr = FeatureWindowDataset(f_train, train, window=window, stride=stride, pad=True)
        va = FeatureWindowDataset(f_val, val, window=window, stride=stride, pad=True)
        kind = config.temporal_kind if window > 1 else "none"
        batch = max(4, config.batch_size // max(1, window // 2))
        tick = time.perf_counter()
        name = f"stage3_{task}"
        trained = train_on_features(
            lambda: TemporalModel(f_train.shape[1], kind=kind, dim=config.temporal_dim,
                                  layers=config.temporal_layers, dropout=config.dropout),
            tr, va, loss_fn=task_loss(train, task), seed=config.seed + 20 + i, batch_size=batch,
            drop_last=len(tr) > batch, val_batch_size=64,
            config=TrainConfig(epochs=config.stage3_epochs, lr=config.stage3_lr, amp=config.amp, compile=config.compile,
                               checkpoint=_checkpoint(out_dir, name), seed=config.seed),
            input_key=("features", "valid"), device=device, progress_bar=progress_bar,
            on_epoch=None if on_epoch is None else (lambda row, n=name: on_epoch(n, row)))
        per_task[task] = trained.predict()
        if train_predictions:
            on_train[task] = trained.predict(tr, batch_size=64)
        if test is not None:
            te = FeatureWindowDataset(f_test, test[1], window=window, stride=stride, pad=True)
            on_test[task] = trained.predict(te, batch_size=64)
        runs[task] = {"model": trained.model, "result": trained.result, "seconds": time.perf_counter() - tick,
                      "kind": kind, "window": window}
    out = {"validation": per_task_predictions(per_task), "per_task": per_task, "runs": runs}
    if train_predictions:
        out["train"] = per_task_predictions(on_train)
    if test is not None:
        out["test"] = per_task_predictions(on_test)
    return out


def run_progressive(root: Path | str, mode: str = "smoke", *, config: ProgressiveConfig | None = None,
                    feats: dict | None = None, device: torch.device | str | None = None,
                    stages: tuple[str, ...] = STAGES, out_dir: Path | str | None = None,
                    progress_bar: bool = True, on_stage: Callable[[str, dict], None] | None = None,
                    on_epoch: Callable[[str, dict], None] | None = None) -> ProgressiveResult:
    """Run the progressive stages on ``root``'s cached course-backbone tokens and score each on validation.

    ``feats`` are the cached features of :func:`course_lib.course_backbone.course_features`
    (computed when missing). ``stages`` picks a prefix of ``("stage1", "stage2", "stage3")``.
    With ``out_dir`` every training run checkpoints there (and a rerun resumes or reuses it).
    ``on_stage(stage, row)`` is called after each measured row and ``on_epoch(run, row)`` after
    each epoch of each training run (``run`` is e.g. ``"stage1_au"``): live tables and curves.
    With stage 3, ``extra["stage3_inputs"]`` holds its input, the stage-2 model's features of the
    training and validation frames (:func:`stage_features`), for further stage-3 variants.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown or list(stages) != list(STAGES[:len(stages)]):
        raise ValueError(f"stages must be a prefix of {STAGES}, got {tuple(stages)}")
    config = config or progressive_config(mode)
    root = Path(root)
    device = torch.device(device) if device is not None else get_device()
    out_dir = Path(out_dir) if out_dir is not None else None
    if feats is None:
        _, feats = course_features(root, mode, device=device, progress_bar=progress_bar)
    train = read_split(root, "train")
    val = read_split(root, "validation")
    train_set = CachedFrameDataset(feats["train"], train, what="tokens")
    val_set = CachedFrameDataset(feats["validation"], val, what="tokens")
    val_loader = DataLoader(val_set, batch_size=256)

    def epoch_hook(name: str) -> Callable[[dict], None] | None:
        return None if on_epoch is None else (lambda row: on_epoch(name, row))

    def train_config(stage: str, name: str) -> TrainConfig:
        return TrainConfig(epochs=getattr(config, f"{stage}_epochs"), lr=getattr(config, f"{stage}_lr"),
                           amp=config.amp, compile=config.compile, checkpoint=_checkpoint(out_dir, name),
                           seed=config.seed)

    rows, histories, models, predictions = [], {}, {}, {}

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_stage is not None:
            on_stage(row["stage"], row)

    start = time.perf_counter()
    # ---- stage 1: one model per task
    task_models: dict[str, MultiTaskModel] = {}
    per_task: dict[str, dict[str, np.ndarray]] = {}
    mtl = MTLConfig(token_dim=feats["train"].dim, n_tokens=feats["train"].n_tokens, dim=config.dim, depth=config.depth,
                    heads=config.heads, gcn=config.gcn, dropout=config.dropout)
    for i, task in enumerate(TASKS):
        tick = time.perf_counter()
        trained = train_on_features(lambda: build_model(mtl, train), train_set, val_set, loss_fn=task_loss(train, task),
                                    seed=config.seed + i, batch_size=config.batch_size,
                                    config=train_config("stage1", f"stage1_{task}"), device=device,
                                    progress_bar=progress_bar, on_epoch=epoch_hook(f"stage1_{task}"))
        model, result = trained.model, trained.result
        per_task[task] = trained.predict()
        task_models[task], histories[f"stage1_{task}"] = model, result.history
        record(_row("stage 1: separate", score(per_task[task]), time.perf_counter() - tick, result, f"{task} model"))
    stage1 = per_task_predictions(per_task)
    predictions["stage1"] = stage1
    record(_row("stage 1: separate", score(stage1), sum(r["seconds"] for r in rows), None, "each task from its model"))
    models.update({f"stage1_{t}": m for t, m in task_models.items()})

    if "stage2" in stages:
        # ---- stage 2: joint training with feature fusion, from the stage-1 weights
        tick = time.perf_counter()
        trained = train_on_features(
            lambda: FusionModel({t: copy.deepcopy(m) for t, m in task_models.items()}, dropout=config.dropout),
            train_set, val_set, loss_fn=task_loss(train), seed=config.seed + 10, batch_size=config.batch_size,
            config=train_config("stage2", "stage2_joint"), device=device, progress_bar=progress_bar,
            on_epoch=epoch_hook("stage2_joint"))
        fusion, result = trained.model, trained.result
        predictions["stage2"] = trained.predict()
        models["stage2"], histories["stage2"] = fusion, result.history
        record(_row("stage 2: joint + fusion", score(predictions["stage2"]), time.perf_counter() - tick, result,
                    "fusion model"))

        if "stage3" in stages:
            # ---- stage 3: a temporal model per task over the stage-2 features
            tick = time.perf_counter()
            plain_train = DataLoader(train_set, batch_size=256)
            f_train, f_val = stage_features(fusion, plain_train, device), stage_features(fusion, val_loader, device)
            stage3_inputs = {"train": f_train, "validation": f_val}
            stage3 = temporal_stage(f_train, f_val, train, val, config, device, out_dir=out_dir,
                                    progress_bar=progress_bar, on_epoch=on_epoch)
            for task, run in stage3["runs"].items():
                models[f"stage3_{task}"], histories[f"stage3_{task}"] = run["model"], run["result"].history
                record(_row("stage 3: temporal", score(stage3["per_task"][task]), run["seconds"], run["result"],
                            f"{task} model, {run['kind']}, window {run['window']}"))
            predictions["stage3"] = stage3["validation"]
            record(_row("stage 3: temporal", score(predictions["stage3"]), time.perf_counter() - tick, None,
                        "each task from its model"))
    table = pd.DataFrame(rows)
    return ProgressiveResult(scores=table, histories=histories, models=models, predictions=predictions,
                             config=config, seconds=time.perf_counter() - start,
                             extra={"device": str(device), "train_frames": len(train_set),
                                    "val_frames": len(val_set), "config": asdict(config),
                                    **({"stage3_inputs": stage3_inputs} if "stage3" in stages else {})})


__all__ = ["STAGES", "TASKS", "FusionModel", "ProgressiveConfig", "ProgressiveResult",
           "progressive_config", "run_progressive", "stage_features", "task_loss", "temporal_stage"]


# --------------------------------------------------------------------------- command line

RUN_KEYS = {"data": "smoke", "mode": None, "stages": ["stage1", "stage2", "stage3"], "out": None, "device": "auto",
            "progressive": {}, "seed": 0}


def read_run_config(path: str | os.PathLike) -> dict[str, Any]:
    """A run configuration (YAML) for :func:`main`, checked: unknown keys and bad values name the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such run configuration (see configs/ for examples)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    lines = {key: i + 1 for i, line in enumerate(path.read_text().splitlines())
             for key in [line.split(":", 1)[0].strip()] if ":" in line}

    def fail(key: str, problem: str) -> None:
        raise ValueError(f"{path}, line {lines.get(key, '?')}: {problem}")

    for key in raw:
        if key not in RUN_KEYS:
            fail(key, f"unknown setting {key!r}; known: {', '.join(RUN_KEYS)}")
    run = {**RUN_KEYS, **raw}
    fields = set(ProgressiveConfig.__dataclass_fields__)
    for key in run["progressive"] or {}:
        if key not in fields:
            fail(key, f"unknown progressive setting {key!r}; known: {', '.join(sorted(fields))}")
    stages = list(run["stages"])
    if stages != list(STAGES[:len(stages)]) or not stages:
        fail("stages", f"stages must be a prefix of {list(STAGES)}, got {stages}")
    mode = run["mode"] or (run["data"] if run["data"] in ("smoke", "full") else "smoke")
    if mode not in ("smoke", "full"):
        fail("mode", f"mode must be smoke or full, got {mode!r}")
    run.update(mode=mode, stages=stages, progressive=dict(run["progressive"] or {}))
    run["out"] = run["out"] or f"build/runs/{path.stem}"
    return run


def main(argv: list[str] | None = None) -> int:
    """``python -m course_lib.progressive --config CONFIG.yaml``: progressive training outside notebooks.

    Under ``torchrun --nproc_per_node=N -m course_lib.progressive ...`` every process trains with
    DistributedDataParallel (NCCL on GPUs, gloo on CPU); rank 0 prepares the data, the course
    backbone and the cached features first, and writes the checkpoints and the scores.
    """
    parser = argparse.ArgumentParser(prog="python -m course_lib.progressive", description=main.__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a YAML run configuration (see configs/)")
    args = parser.parse_args(argv)
    try:
        run = read_run_config(args.config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if run["device"] == "auto":
        device = get_device()
    else:
        device = torch.device(run["device"])
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    seed_everything(run["seed"])
    out = Path(run["out"])
    out = out if out.is_absolute() else repo_root() / out
    say = print if rank == 0 else (lambda *a, **k: None)
    try:
        def prepare():
            data = run["data"]
            root = ensure_course_data(data, progress_bar=rank == 0) if data in ("smoke", "full") else Path(data)
            _, feats = course_features(root, run["mode"], device=device, progress_bar=rank == 0)
            return root, feats

        if rank == 0:
            root, feats = prepare()
        if world > 1:
            dist.barrier()
        if rank != 0:
            root, feats = prepare()  # everything is cached now: only loads
        config = progressive_config(run["mode"], **run["progressive"], seed=run["seed"])
        say(f"training {', '.join(run['stages'])} on {root} ({run['mode']} settings), {world} process(es) on "
            f"{device}; checkpoints in {out}")
        result = run_progressive(root, run["mode"], config=config, feats=feats, device=device,
                                 stages=tuple(run["stages"]), out_dir=out, progress_bar=rank == 0)
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            result.scores.to_csv(out / "scores.csv", index=False)
            (out / "scores.json").write_text(json.dumps({"scores": result.scores.to_dict("records"),
                                                         "seconds": result.seconds, **result.extra}, indent=1,
                                                        default=str))
            say(result.scores.round(3).to_string(index=False))
            say(f"scores written to {out / 'scores.csv'} ({result.seconds:.1f} s)")
    finally:
        if world > 1:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
