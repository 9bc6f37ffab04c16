"""Reference points between the do-nothing floor and the oracle: a classic baseline and the
frame-reading ceiling.

Used by ``benchmarks/quality.py`` to read the course pipeline's score against two numbers
computed on the same data:

- :func:`hog_baseline`: what face analysis did before deep learning (OpenFace's AU detectors:
  histograms of oriented gradients on the aligned face, then linear classifiers). HOG from
  scikit-image, PCA, and per task a linear model from scikit-learn, fitted on the training
  split. Nothing is learned from pixels, so it needs no GPU and no epochs: the bar a small CNN
  trained for minutes on a CPU has to clear.
- :func:`reading_ceiling` (SynthAffWild only): the score of a model that read every AU's
  intensity (and the occlusion and talking flags) *exactly* from each frame, with gradient
  boosting from those numbers to the labels. What a single frame cannot show (a person's mood,
  the annotators' drift, where an expression episode is heading) stays out of reach, so this
  lies below :func:`course_lib.data.synth.oracle_scores`, which scores the clean labels.

Both return the dict of :func:`course_lib.metrics.p_mtl`; :func:`hog_predictions` and
:func:`reading_predictions` return the predictions behind them (``va``, ``expr``, ``au``), which
``08_evaluation``'s ablation table scores with intervals next to the course's models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from skimage.feature import hog
from threadpoolctl import threadpool_limits

from .data.abaw import FRAMES_FOLDER
from .data.datasets import label_tensors
from .data.synth import load_ground_truth
from .labels import AU_NAMES
from .metrics import N_AU, p_mtl

#: HOG layout on a 112 px face: 8 px cells, 2 x 2 cells per block, 9 orientations (OpenFace's choice).
HOG_SETTINGS: dict[str, Any] = {"orientations": 9, "pixels_per_cell": (8, 8), "cells_per_block": (2, 2)}


def hog_features(table: pd.DataFrame, root: str | os.PathLike) -> np.ndarray:
    """HOG descriptors (N, D) of the grey-level frames of ``table`` under ``root/cropped_aligned``."""
    folder = Path(root) / FRAMES_FOLDER
    out = []
    for image in table["image"]:
        path = folder / image
        if not path.exists():
            raise FileNotFoundError(f"{path}: frame listed in the annotations is missing")
        with Image.open(path) as im:
            out.append(hog(np.asarray(im.convert("L"), dtype=np.float32), **HOG_SETTINGS))
    return np.stack(out).astype(np.float32)


def _predict_tasks(make_classifier, make_regressor, x_train: np.ndarray, train: pd.DataFrame,
                   x_eval: np.ndarray) -> dict[str, np.ndarray]:
    """Fit one model per output on the labelled training rows; predict VA, EXPR and the AUs."""
    lab = {k: v.numpy() for k, v in label_tensors(train).items()}
    va = np.stack([np.clip(make_regressor().fit(x_train[lab["has_va"]], lab["va"][lab["has_va"], k])
                           .predict(x_eval), -1, 1) for k in range(2)], axis=1)
    expr = make_classifier().fit(x_train[lab["has_expr"]], lab["expr"][lab["has_expr"]]).predict(x_eval)
    au = np.zeros((len(x_eval), N_AU), dtype=np.int64)
    for k in range(N_AU):
        y = lab["au"][lab["has_au"], k]
        if np.unique(y).size < 2:  # an AU never (or always) present in training: predict that constant
            au[:, k] = y[0] if y.size else 0
            continue
        au[:, k] = make_classifier().fit(x_train[lab["has_au"]], y).predict(x_eval)
    return {"va": va, "expr": expr, "au": au}


def score(table: pd.DataFrame, predictions: dict[str, np.ndarray]) -> dict[str, Any]:
    """P_MTL of ``predictions`` (``va`` (N, 2), ``expr`` (N,) class ids, ``au`` (N, 12) 0/1) on ``table``."""
    return p_mtl(table[["valence", "arousal"]].to_numpy(), predictions["va"], table["expression"].to_numpy(),
                 predictions["expr"], table[list(AU_NAMES)].to_numpy(), predictions["au"])


def linear_probe(x_train: np.ndarray, train: pd.DataFrame, x_eval: np.ndarray, *, components: int = 256,
                 c: float = 0.01, seed: int = 0) -> dict[str, np.ndarray]:
    """Predictions for ``x_eval`` of linear models on fixed features fitted to ``train``'s labels:
    standardise, PCA to ``components``, then class-balanced logistic regression per AU and for
    EXPR, ridge regression for VA."""
    # lazy: scikit-learn takes about 2 s to import, and only the baselines need it
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(x_train) != len(train):
        raise ValueError(f"features and table differ in rows: {len(x_train)} vs {len(train)}")
    reduce = make_pipeline(StandardScaler(), PCA(min(components, *x_train.shape), random_state=seed)).fit(x_train)
    a, b = reduce.transform(x_train), reduce.transform(x_eval)
    return _predict_tasks(lambda: LogisticRegression(C=c, class_weight="balanced", max_iter=2000),
                          lambda: Ridge(alpha=0.1 / c), a, train, b)


def hog_predictions(root: str | os.PathLike, train: pd.DataFrame, evaluate: pd.DataFrame, **probe: Any
                    ) -> dict[str, np.ndarray]:
    """Predictions for ``evaluate`` of HOG + :func:`linear_probe` fitted on ``train`` (frames under ``root``)."""
    return linear_probe(hog_features(train, root), train, hog_features(evaluate, root), **probe)


def hog_baseline(root: str | os.PathLike, train: pd.DataFrame, evaluate: pd.DataFrame, **probe: Any
                 ) -> dict[str, Any]:
    """P_MTL on ``evaluate`` of :func:`hog_predictions`."""
    return score(evaluate, hog_predictions(root, train, evaluate, **probe))


def _reading_features(root: str | os.PathLike, table: pd.DataFrame) -> np.ndarray:
    x = np.zeros((len(table), N_AU + 3), dtype=np.float64)
    frames = table["frame"].to_numpy() - 1
    for video, rows in table.groupby("video", sort=False).indices.items():
        gt = load_ground_truth(root, video)
        f = frames[rows]
        x[rows] = np.concatenate([gt["au_intensity"][f].astype(np.float64), gt["occluded"][f],
                                  gt["talking"][f, None]], axis=1)
    return x


def reading_predictions(root: str | os.PathLike, train: pd.DataFrame, evaluate: pd.DataFrame, *, seed: int = 0
                        ) -> dict[str, np.ndarray]:
    """Predictions for ``evaluate`` of gradient boosting from each frame's true AU intensities
    (and occlusion and talking flags, from SynthAffWild's ground truth) to ``train``'s annotations."""
    # lazy: scikit-learn takes about 2 s to import, and only the baselines need it
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    # One thread: on tables of this size the threaded binning waits on joblib longer than it
    # works (28.6 s -> 21.4 s for the smoke split on 2 cores, the same predictions).
    with threadpool_limits(1, user_api="openmp"):
        return _predict_tasks(
            lambda: HistGradientBoostingClassifier(max_iter=150, class_weight="balanced", random_state=seed),
            lambda: HistGradientBoostingRegressor(max_iter=150, random_state=seed),
            _reading_features(root, train), train, _reading_features(root, evaluate))


def reading_ceiling(root: str | os.PathLike, train: pd.DataFrame, evaluate: pd.DataFrame, *, seed: int = 0
                    ) -> dict[str, Any]:
    """P_MTL on ``evaluate`` of :func:`reading_predictions`."""
    return score(evaluate, reading_predictions(root, train, evaluate, seed=seed))
