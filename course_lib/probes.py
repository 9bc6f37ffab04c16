"""What a frozen backbone encodes: linear probes on its pooled features.

Taught in ``02_backbones_and_features`` (transfer). A probe freezes the backbone, extracts one
pooled vector per face, and fits the simplest possible read-out on them: ridge regression to
the AU intensities (:func:`au_probe`, scored by R² on faces of *other* people), and a logistic
classifier to the person (:func:`identity_probe`, scored on other frames of the same people).
A backbone that reads what the face does scores high on the first; one that learned who is in
the video scores high on the second only. ``python -m course_lib.pretrain`` logs the AU probe
as it trains; the model card records it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .data.abaw import SPLIT_FILES, read_mtl_annotations
from .data.datasets import decode_frame
from .data.synth import load_ground_truth
from .labels import AU_NAMES


@torch.no_grad()
def pooled_features(backbone: torch.nn.Module, pixels: np.ndarray, *, batch_size: int = 256,
                    device: torch.device | str | None = None) -> np.ndarray:
    """Pooled features (N, C) of uint8 frames (N, H, W, 3), in eval mode, without gradients, on
    ``device`` (default: where the backbone's weights are)."""
    if device is None:
        device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    out = []
    for start in range(0, len(pixels), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch_size])).to(device)
        x = x.permute(0, 3, 1, 2).float().div_(255)
        out.append(backbone(x)["pooled"].float().cpu().numpy())
    backbone.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _ridge(cv) -> "object":
    """Standardised features -> ridge -> standardised AU intensities, its strength chosen by ``cv``."""
    # lazy: scikit-learn takes about 2 s to import; the pretraining loop imports this module
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # squared error on standardised targets: every AU counts alike, and a fold in which an AU
    # barely varies cannot dominate the choice (a per-fold R² can, by thousands)
    scoring = "neg_mean_squared_error" if cv is not None else None
    return TransformedTargetRegressor(
        make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15), cv=cv, scoring=scoring)),
        transformer=StandardScaler())


def _scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    # lazy: scikit-learn takes about 2 s to import; the pretraining loop imports this module
    from sklearn.metrics import r2_score

    return {name: float(r2_score(truth[:, k], pred[:, k])) for k, name in enumerate(AU_NAMES)}


def _fit_probe(train_x: np.ndarray, train_y: np.ndarray, groups: np.ndarray | None) -> "object":
    """:func:`_ridge` fitted on the training rows, its strength chosen across ``groups`` (5 folds) when
    there are at least 5 of them, by leave-one-out otherwise; refitted on all rows at that strength."""
    # lazy: scikit-learn takes about 2 s to import; the pretraining loop imports this module
    from sklearn.model_selection import GroupKFold

    # lazy: scikit-learn takes about 2 s to import; the pretraining loop imports this module
    from scipy.linalg import LinAlgWarning

    cv = None
    if groups is not None and len(np.unique(groups)) >= 5:
        cv = list(GroupKFold(n_splits=5).split(train_x, train_y, groups))
    with warnings.catch_warnings():
        # the weakest candidate ridges are ill-conditioned on nearly collinear features (a random
        # backbone's): scipy warns for each, and the cross-validation rejects them anyway
        warnings.simplefilter("ignore", LinAlgWarning)
        return _ridge(cv).fit(train_x, train_y)


def au_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
             groups: np.ndarray | None = None) -> dict:
    """Ridge from standardised features to the 12 AU intensities; R² on the validation rows.

    The ridge strength is chosen on the training rows only (scikit-learn's ``RidgeCV``): by
    5-fold cross-validation across ``groups`` (the video, i.e. the person, of each row) when
    given, so that the choice is scored on people it was not fitted on, as the validation rows
    will be; by leave-one-out otherwise, which on video frames favours too weak a ridge (a left-out
    frame has near-twins of the same person in the fit). Returns
    ``{"mean": float, "per_au": {AU: R²}, "alpha": float}``.
    """
    model = _fit_probe(train_x, train_y, groups)
    per_au = _scores(val_y, model.predict(val_x))
    return {"mean": float(np.mean(list(per_au.values()))), "per_au": per_au,
            "alpha": float(model.regressor_[-1].alpha_)}


def au_probe_by_video(features: np.ndarray, au: np.ndarray, video: np.ndarray, folds: int = 5) -> dict:
    """:func:`au_probe` in ``folds`` rounds, each holding out a fifth of the videos (people): every
    frame is predicted once by a probe that never saw its person, and R² is taken over all of
    them. Steadier than one validation split, where a rare AU may occur in a handful of frames.
    Returns ``{"mean", "per_au", "alpha"}`` (``alpha``: the median choice over the rounds)."""
    # lazy: scikit-learn takes about 2 s to import; the pretraining loop imports this module
    from sklearn.model_selection import GroupKFold

    if len(np.unique(video)) < 2 * folds:
        raise ValueError(f"{len(np.unique(video))} videos: need at least {2 * folds} for {folds} rounds")
    pred, alphas = np.zeros_like(au, dtype=np.float64), []
    for fit, held in GroupKFold(n_splits=folds).split(features, au, video):
        model = _fit_probe(features[fit], au[fit], video[fit])
        pred[held] = model.predict(features[held])
        alphas.append(float(model.regressor_[-1].alpha_))
    per_au = _scores(au, pred)
    return {"mean": float(np.mean(list(per_au.values()))), "per_au": per_au, "alpha": float(np.median(alphas))}


def identity_probe(features: np.ndarray, identity: np.ndarray, *, seed: int = 0) -> float:
    """Accuracy of a logistic classifier telling people apart, trained on half of each person's
    frames and tested on the other half (chance: 1 / number of people)."""
    # lazy: scikit-learn takes about 2 s to import; the pretraining loop imports this module
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    test = np.zeros(len(identity), dtype=bool)
    for person in np.unique(identity):
        rows = np.flatnonzero(identity == person)
        test[rng.permutation(rows)[: len(rows) // 2]] = True
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    model.fit(features[~test], identity[~test])
    return float((model.predict(features[test]) == identity[test]).mean())


def true_au_intensities(root: Path | str, table) -> np.ndarray:
    """The generator's AU intensities (N, 12) for the rows of an annotation ``table`` (SynthAffWild only)."""
    out = np.zeros((len(table), len(AU_NAMES)), dtype=np.float32)
    for video, rows in table.groupby("video", sort=False).indices.items():
        gt = load_ground_truth(root, video)
        out[rows] = gt["au_intensity"][table["frame"].to_numpy()[rows] - 1]
    return out


def course_probe_set(root: Path | str) -> dict[str, dict[str, np.ndarray]]:
    """Frames, true AU intensities and video of each split of a generated SynthAffWild folder.

    SynthAffWild splits by video (each video one person), so the validation faces are of
    people the probe never saw. Returns ``{"train": {...}, "validation": {...}}`` with keys
    ``pixels`` (uint8), ``au`` (intensities) and ``video``.
    """
    root = Path(root)
    out = {}
    for split, name in SPLIT_FILES.items():
        table = read_mtl_annotations(root / name)
        pixels = np.stack([decode_frame(root / "cropped_aligned" / image).permute(1, 2, 0).numpy()
                           for image in table["image"]])
        out[split] = {"pixels": pixels, "au": true_au_intensities(root, table), "video": table["video"].to_numpy()}
    return out


def course_au_probe(backbone: torch.nn.Module, probe_set: dict, *, device: torch.device | str | None = None) -> dict:
    """:func:`au_probe` of ``backbone`` on a :func:`course_probe_set` (train -> validation; the
    ridge strength chosen across the training videos)."""
    fx = {s: pooled_features(backbone, probe_set[s]["pixels"], device=device) for s in probe_set}
    return au_probe(fx["train"], probe_set["train"]["au"], fx["validation"], probe_set["validation"]["au"],
                    groups=probe_set["train"]["video"])


def plot_au_probes(results: dict[str, dict], title: str = "AU probe: R² per AU on faces of unseen people"):
    """Grouped bars of per-AU R² for several backbones (``{name: au_probe(...) result}``); a static
    matplotlib figure, so that the slides can show it."""
    # lazy: matplotlib takes about 1 s to import, for this one figure
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.6))
    colors = ["#adb5bd", "#e9c46a", "#2a9d8f", "#264653", "#e76f51"]
    width = 0.8 / max(1, len(results))
    x = np.arange(len(AU_NAMES))
    for k, ((name, result), color) in enumerate(zip(results.items(), colors)):
        values = np.clip([result["per_au"][a] for a in AU_NAMES], -0.5, None)
        ax.bar(x + (k - (len(results) - 1) / 2) * width, values, width, color=color,
               label=f"{name} (mean {result['mean']:.2f})")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, AU_NAMES)
    ax.set_ylim(-0.5, 1)
    ax.set_ylabel("R² (clipped at -0.5)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", ncol=len(results), frameon=False)
    fig.tight_layout()
    return fig


__all__ = ["plot_au_probes", "true_au_intensities", "au_probe", "au_probe_by_video", "course_au_probe", "course_probe_set", "identity_probe", "pooled_features"]
