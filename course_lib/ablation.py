"""The ablation: the course's components switched on one at a time, each with its interval.

Taught in ``08_evaluation``. :func:`run_ablation` trains the course's configurations
(:data:`ABLATION_STEPS`) on the same data and budget and scores each with a video-level
bootstrap interval (:func:`course_lib.confidence.bootstrap_many`), next to the do-nothing floor
and the data's oracle reference (:func:`course_lib.evaluate.floor_table`,
:func:`course_lib.evaluate.oracle_table`); :func:`step_gains`: what each step adds, with a paired
interval (:func:`course_lib.confidence.bootstrap_difference`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from .baselines import hog_predictions, reading_predictions
from .confidence import bootstrap_difference, bootstrap_many, interval_columns
from .config import get_device
from .course_backbone import course_features
from .data.abaw import read_split
from .evaluate import METRIC_LABELS, METRICS, constant_table, floor_table, oracle_table, predictions_table, scores
from .features import CachedFrameDataset
from .losses import weighted_loss
from .models import MTLConfig, build_model
from .multimodal import audio_summaries, audiovisual_windows, train_audiovisual
from .progressive import ProgressiveConfig, progressive_config, run_progressive, stage_features, temporal_stage
from .recipes import train_on_features
from .train import TrainConfig, predict

#: The ablation table's row for seed 003 assembled (:mod:`course_lib.multimodal`), trained when there is audio.
SEED003_ROW = "seed 003 assembled"
#: The ablation's configurations, in order, and what each adds.
ABLATION_STEPS: dict[str, str] = {
    "baseline": "mean-pooled tokens, linear heads (MTLConfig(cross_attention=False, gcn=False))",
    "+ cross-attention": "22 task queries attend over the patch tokens",
    "+ AU-GCN": "graph over the 12 AU nodes assists EXPR and VA",
    "+ progressive fusion": "stage 1 (one model per task) then stage 2 (joint, fused features)",
    "+ temporal": "stage 3: a temporal model per task over windows of stage-2 features",
    "+ audio": "stage 3 with each frame's log-Mel summary concatenated to its features",
}


@dataclass
class AblationResult:
    """What :func:`run_ablation` measured on the validation split."""

    table: pd.DataFrame  # one row per configuration, then floor and oracle; metrics with low/high
    per_seed: pd.DataFrame  # one row per configuration and training seed (point scores)
    predictions: dict[str, list[pd.DataFrame]]  # configuration -> one predictions table per seed
    budget: Any  # the ProgressiveConfig every run used
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def run_ablation(root: str | Path, mode: str = "smoke", *, feats: dict | None = None, seeds: Sequence[int] = (0,),
                 budget: Any = None, device: "torch.device | str | None" = None, audio: bool = True,
                 n_boot: int = 1000, level: float = 0.95, progress_bar: bool = False,
                 on_row: Any = None, references: bool = True, test: bool = False) -> AblationResult:
    """Switch the course's components on one at a time, on the same data and budget, and score each.

    Configurations (:data:`ABLATION_STEPS`): ``baseline``, ``+ cross-attention``, ``+ AU-GCN``
    (each one :class:`~course_lib.models.MultiTaskModel` trained on all three losses),
    ``+ progressive fusion`` (stages 1 and 2 of :func:`course_lib.progressive.run_progressive`,
    whose stage-1 models are the ``+ AU-GCN`` architecture), ``+ temporal`` (stage 3 on the
    stage-2 features, :func:`course_lib.progressive.temporal_stage`) and ``+ audio`` (the same stage 3 with
    :func:`~course_lib.multimodal.audio_summary` concatenated to each frame's stage-2 features; needs
    ``<root>/audio``, left out with ``audio=False``).

    ``budget``: a :class:`~course_lib.progressive.ProgressiveConfig` or a dict of overrides of
    :func:`~course_lib.progressive.progressive_config` (sizes, batch size, epochs per stage). The
    single models train ``stage1_epochs + stage2_epochs`` epochs at ``stage1_lr``, as many epochs
    as the weights of the stage-2 model went through (its stage 1 trains three models: the
    ``seconds`` column, training time up to that configuration, shows the extra compute). Every
    configuration is trained once per seed in ``seeds``; the table reports the mean over seeds with
    a video-level bootstrap interval (``n_boot`` resamples, drawing the same videos for every
    seed), then the do-nothing floor and the oracle reference (SynthAffWild only) with theirs.
    ``references=True`` adds two rows from :mod:`course_lib.baselines` before the oracle: HOG +
    linear models (no deep learning) and, on SynthAffWild, the reference of reading each frame's AU
    intensities exactly. ``on_row(row)`` is called as each configuration is measured.

    ``test=True`` also predicts the frames of the test list (:data:`~course_lib.data.abaw.TEST_LIST`;
    ``feats`` must then hold the ``"test"`` split) with every trained model, into
    ``extra["test_predictions"][configuration]`` (one table per seed, labels missing). Nothing here
    scores them: choose on validation, then score the chosen one once
    (:func:`~course_lib.evaluate.score_submission`, :func:`~course_lib.evaluate.label_test`).
    """
    start = time.perf_counter()
    root = Path(root)
    device = torch.device(device) if device is not None else get_device()
    base = budget if isinstance(budget, ProgressiveConfig) else progressive_config(mode, **dict(budget or {}))
    if feats is None:
        _, feats = course_features(root, mode, device=device, progress_bar=progress_bar, test=test)
    if test and "test" not in feats:
        raise ValueError("test=True needs the test split's features: pass feats=course_features(root, mode, "
                         "test=True)[1]")
    train = read_split(root, "train")
    val = read_split(root, "validation")
    train_set = CachedFrameDataset(feats["train"], train, what="tokens")
    train_plain = DataLoader(train_set, batch_size=256)
    val_set = CachedFrameDataset(feats["validation"], val, what="tokens")
    val_loader = DataLoader(val_set, batch_size=256)
    if test:
        test_table = read_split(root, "test")
        test_loader = DataLoader(CachedFrameDataset(feats["test"], test_table, what="tokens"), batch_size=256)
    names = [n for n in ABLATION_STEPS if audio or n != "+ audio"]
    preds: dict[str, list[pd.DataFrame]] = {n: [] for n in names}
    train_preds: dict[str, list[pd.DataFrame]] = {n: [] for n in names}
    test_preds: dict[str, list[pd.DataFrame]] = {n: [] for n in names}
    seconds: dict[str, list[float]] = {n: [] for n in names}
    per_seed: list[dict[str, Any]] = []

    def predict_test(model: Any) -> dict | None:
        return predict(model, test_loader, device=device) if test else None

    def measured(name: str, seed: int, on_val: dict, on_train: dict, spent: float, on_test: dict | None) -> None:
        preds[name].append(predictions_table(on_val, val))
        train_preds[name].append(predictions_table(on_train, train))
        if on_test is not None:
            test_preds[name].append(predictions_table(on_test, test_table))
        seconds[name].append(spent)
        s = scores(preds[name][-1])
        per_seed.append({"configuration": name, "seed": seed, **{METRIC_LABELS[m]: s[m] for m in METRICS},
                         "seconds": spent})
        if on_row is not None:
            on_row(per_seed[-1])

    if audio:
        audio_train, audio_val, *audio_test = audio_summaries(root, train, val, *([test_table] if test else []))

    for seed in seeds:
        config = ProgressiveConfig(**{**base.__dict__, "seed": int(seed)})
        single = {"baseline": dict(cross_attention=False, gcn=False),
                  "+ cross-attention": dict(cross_attention=True, gcn=False),
                  "+ AU-GCN": dict(cross_attention=True, gcn=True)}
        for i, (name, switches) in enumerate(single.items()):
            tick = time.perf_counter()
            mtl = MTLConfig(token_dim=feats["train"].dim, n_tokens=feats["train"].n_tokens, dim=config.dim,
                            depth=config.depth, heads=config.heads, dropout=config.dropout, **switches)
            model = train_on_features(
                lambda: build_model(mtl, train), train_set, val_set, loss_fn=weighted_loss(train),
                seed=config.seed + 100 + i, loader_seed=config.seed + 100, batch_size=config.batch_size,
                config=TrainConfig(epochs=config.stage1_epochs + config.stage2_epochs, lr=config.stage1_lr,
                                   amp=config.amp, compile=config.compile, seed=config.seed),
                device=device, progress_bar=progress_bar).model
            spent = time.perf_counter() - tick
            measured(name, seed, predict(model, val_loader, device=device),
                     predict(model, train_plain, device=device), spent, predict_test(model))

        tick = time.perf_counter()
        progressive = run_progressive(root, mode, config=ProgressiveConfig(**{**config.__dict__, "gcn": True}),
                                      feats=feats, device=device, stages=("stage1", "stage2"),
                                      progress_bar=progress_bar)
        fusion = progressive.models["stage2"]
        spent12 = time.perf_counter() - tick
        measured("+ progressive fusion", seed, progressive.predictions["stage2"],
                 predict(fusion, train_plain, device=device), spent12, predict_test(fusion))
        f_train, f_val = stage_features(fusion, train_plain, device), stage_features(fusion, val_loader, device)
        f_test = stage_features(fusion, test_loader, device) if test else None
        variants = {"+ temporal": (f_train, f_val, f_test)}
        if audio:
            variants["+ audio"] = (torch.cat([f_train, audio_train], dim=1), torch.cat([f_val, audio_val], dim=1),
                                   torch.cat([f_test, audio_test[0]], dim=1) if test else None)
        for name, (ft, fv, fte) in variants.items():
            tick = time.perf_counter()
            out = temporal_stage(ft, fv, train, val, config, device, train_predictions=True,
                                 test=(fte, test_table) if test else None)
            measured(name, seed, out["validation"], out["train"], spent12 + time.perf_counter() - tick,
                     out.get("test"))

    rows = [_table_row(name, ABLATION_STEPS[name], preds[name], n_boot, level, float(np.mean(seconds[name])))
            for name in names]
    if audio:  # seed 003's model, assembled (07): beside the chain, not a step of it
        tick = time.perf_counter()
        windows = audiovisual_windows(root, feats, train, val, test=test_table if test else None)
        epochs = base.stage1_epochs + base.stage2_epochs + base.stage3_epochs
        runs003 = [train_audiovisual(windows, train, seed=int(seed), epochs=epochs, lr=base.stage1_lr, dim=base.dim,
                                     device=device) for seed in seeds]
        preds[SEED003_ROW] = [predictions_table(r["predictions"], val) for r in runs003]
        train_preds[SEED003_ROW] = [predictions_table(r["train_predictions"], train) for r in runs003]
        if test:
            test_preds[SEED003_ROW] = [predictions_table(r["test_predictions"], test_table) for r in runs003]
        rows.append(_table_row(SEED003_ROW, "seed 003: visual features, a Transformer over 30 frames and the audio "
                               f"CNN, concatenated per frame ({epochs} epochs)", preds[SEED003_ROW], n_boot, level,
                               (time.perf_counter() - tick) / len(seeds)))
    rows.append(_table_row("floor: do nothing", "training means, majority class, every AU on",
                           [floor_table(train, val)], n_boot, level, np.nan))
    try:
        oracle = oracle_table(root, val)
    except FileNotFoundError:  # a real copy has no clean labels
        oracle = None
    if references:
        made = [("reference: HOG + linear", "gradient histograms of the face, linear models (no deep learning)",
                 hog_predictions)]
        if oracle is not None:  # the reading reference needs SynthAffWild's ground truth
            made.append(("reference: reading each frame", "each frame's true AU intensities, gradient boosting",
                         reading_predictions))
        for name, what, make in made:
            tick = time.perf_counter()
            p = make(root, train, val)
            table = constant_table(val, p["va"], p["expr"], p["au"].astype(np.float64))
            rows.append(_table_row(name, what, [table], n_boot, level, time.perf_counter() - tick))
    if oracle is not None:
        rows.append(_table_row("reference: oracle", "the generator's clean labels vs the noisy annotations", [oracle],
                               n_boot, level, np.nan))
    extra = {"device": str(device), "seeds": list(seeds), "n_boot": n_boot, "level": level,
             "videos": int(val["video"].nunique()), "frames": len(val), "train_predictions": train_preds}
    if test:
        extra["test_predictions"] = test_preds
    return AblationResult(table=pd.DataFrame(rows), per_seed=pd.DataFrame(per_seed), predictions=preds,
                          budget=base, seconds=time.perf_counter() - start, extra=extra)


def _table_row(name: str, what: str, dfs: list[pd.DataFrame], n_boot: int, level: float, seconds: float
               ) -> dict[str, Any]:
    ci = bootstrap_many(dfs, n=n_boot, seed=0, level=level, by="video", au_threshold=0.5)
    return {"configuration": name, "what it adds": what, **interval_columns(ci), "seconds": seconds}


def step_gains(result: "AblationResult", n_boot: int = 1000, level: float = 0.95) -> pd.DataFrame:
    """What each ablation step adds to the one before it: :func:`~course_lib.confidence.bootstrap_difference` of P_MTL
    (and its parts) between consecutive configurations of ``result``, over its seeds and videos."""
    names = [n for n in ABLATION_STEPS if result.predictions.get(n)]
    rows = []
    for before, after in zip(names, names[1:]):
        d = bootstrap_difference(result.predictions[before], result.predictions[after], n=n_boot, level=level)
        row: dict[str, Any] = {"step": after, "over": before}
        for m in METRICS:
            label = METRIC_LABELS[m]
            row[f"{label} gain"], row[f"{label} low"], row[f"{label} high"] = d.loc[m, ["difference", "low", "high"]]
        row["verdict"] = ("helps" if row["P_MTL low"] > 0 else "hurts" if row["P_MTL high"] < 0
                          else "no clear effect")
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["ABLATION_STEPS", "AblationResult", "SEED003_ROW", "run_ablation", "step_gains"]
