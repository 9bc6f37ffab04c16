"""Evaluating a model the way the challenge does, and saying how sure the numbers are.

Taught in ``08_evaluation``. Everything works on a *predictions table*: one row per frame with
the frame's labels (as in the annotation table of :mod:`course_lib.data.abaw`) and the model's
outputs (:func:`predictions_table`). On it:

- :func:`scores`: P_MTL and its parts (:func:`course_lib.metrics.p_mtl`, missing labels left out),
  with one AU threshold or twelve (:func:`threshold_report` tunes them on one split and applies
  them to another);
- :func:`bootstrap`: confidence intervals that resample whole **videos**. Frames of one video are
  strongly correlated (the same person, light and episode), so resampling frames pretends there
  is far more independent evidence than there is and gives intervals that are too narrow;
- :func:`write_submission` / :func:`read_submission`: the challenge's prediction file;
- :func:`run_ablation`: the course's components switched on one at a time, on the same data
  and budget, each with its interval, next to the do-nothing floor and the data's oracle reference;
  :func:`step_gains`: what each step adds, with a paired interval (:func:`bootstrap_difference`).

The bootstrap is exact and fast because every term of P_MTL is a function of sums that add up
over videos: CCC needs ``n, sum x, sum y, sum x^2, sum y^2, sum xy``; an F1 needs TP, FP, FN.
Each video's sums are computed once; a resample is a vector of counts per video, and its sums
are one matrix product.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .data.abaw import LABEL_COLUMNS, AnnotationError
from .labels import AU_NAMES, EXPR_NAMES, MISSING_AU, MISSING_EXPR, MISSING_VA
from .metrics import p_mtl, tune_au_thresholds

if TYPE_CHECKING:
    import torch

N_AU, N_EXPR = len(AU_NAMES), len(EXPR_NAMES)
#: Predicted AU probability columns of a predictions table.
AU_PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{a}" for a in AU_NAMES)
#: Predicted expression probability columns (softmax of the logits).
EXPR_PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{e}" for e in EXPR_NAMES)
PRED_COLUMNS: tuple[str, ...] = ("pred_valence", "pred_arousal", "pred_expression", *EXPR_PROB_COLUMNS,
                                 *AU_PROB_COLUMNS)
#: The metrics :func:`bootstrap` reports, with the names of :func:`course_lib.metrics.p_mtl`.
METRICS: tuple[str, ...] = ("total", "va", "expr", "au")
#: Column names of the ablation table for each metric.
METRIC_LABELS: dict[str, str] = {"total": "P_MTL", "va": "VA CCC", "expr": "EXPR F1", "au": "AU F1"}

#: Header of the challenge's prediction file (ABAW_FACTS.md). Each data line is
#: ``image,valence,arousal,expression,AU1,...,AU26``: the ``aus`` field is 12 comma-separated
#: 0/1 decisions in AU order (so a data line has 16 fields while the header has 5). That layout
#: of ``aus`` is what the organisers' example files show; it is not confirmed in ABAW_FACTS.md,
#: so change it here (and in :func:`read_submission`) if the organisers say otherwise.
SUBMISSION_HEADER = "image,valence,arousal,expression,aus"
SUBMISSION_FIELDS = 4 + N_AU
_IMAGE = re.compile(r"^[^/,\s]+/\d+\.jpg$")


# --------------------------------------------------------------------------- the predictions table


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predictions_table(predictions: dict[str, np.ndarray], table: pd.DataFrame) -> pd.DataFrame:
    """One row per predicted frame: its annotation row plus every output of the model.

    ``predictions`` is the output of :func:`course_lib.train.predict` (on frames or on stitched
    windows: either way its ``index`` holds the table rows); ``table`` the annotation table the
    loader was built on (:func:`course_lib.data.abaw.read_mtl_annotations`). Columns: the table's
    (``image, video, frame``, the labels with their missing markers, ``has_va/has_expr/has_au``),
    then ``pred_valence, pred_arousal``, ``pred_expression`` (argmax class id), ``prob_<class>``
    (softmax of the 8 logits) and ``prob_<AU>`` (12 sigmoid probabilities). Rows are in table order,
    indexed by the table row. Where the predictions carry labels too, they are checked against the
    table, so a loader built on another table (or a shuffled ``index``) is caught.
    """
    missing = [k for k in ("index", "au_pred", "expr_pred", "va_pred") if k not in predictions]
    if missing:
        raise ValueError(f"predictions lack {missing}: pass the output of course_lib.train.predict")
    index = np.asarray(predictions["index"]).astype(np.int64).reshape(-1)
    n = len(index)
    au = np.asarray(predictions["au_pred"], dtype=np.float64)
    expr = np.asarray(predictions["expr_pred"], dtype=np.float64)
    va = np.asarray(predictions["va_pred"], dtype=np.float64)
    for name, arr, width in (("au_pred", au, N_AU), ("expr_pred", expr, N_EXPR), ("va_pred", va, 2)):
        if arr.shape != (n, width):
            raise ValueError(f"{name} has shape {arr.shape}, expected ({n}, {width}) for {n} index rows")
    if n and (index.min() < 0 or index.max() >= len(table)):
        raise ValueError(f"index holds rows {index.min()}..{index.max()} but the table has {len(table)} rows: "
                         "the predictions belong to another table")
    if len(np.unique(index)) != n:
        raise ValueError("index holds a table row more than once: stitch window predictions first "
                         "(course_lib.train.predict does)")
    rows = table.reset_index(drop=True).iloc[index]
    _check_labels(predictions, rows)
    probs = _softmax(expr)
    out = rows.copy()
    out["pred_valence"], out["pred_arousal"] = va[:, 0], va[:, 1]
    out["pred_expression"] = probs.argmax(axis=1)
    for j, col in enumerate(EXPR_PROB_COLUMNS):
        out[col] = probs[:, j]
    for j, col in enumerate(AU_PROB_COLUMNS):
        out[col] = au[:, j]
    out.index = pd.Index(index, name="row")
    return out.sort_index()


def _check_labels(predictions: dict[str, np.ndarray], rows: pd.DataFrame) -> None:
    """The labels ``predict`` carried must be the table's on every labelled row."""
    checks = (("va", "has_va", ["valence", "arousal"]), ("expr", "has_expr", ["expression"]),
              ("au", "has_au", list(AU_NAMES)))
    for key, flag, cols in checks:
        if key not in predictions:
            continue
        got = np.asarray(predictions[key], dtype=np.float64).reshape(len(rows), -1)
        want = rows[cols].to_numpy(dtype=np.float64)
        labelled = rows[flag].to_numpy(dtype=bool)
        if not np.allclose(got[labelled], want[labelled], atol=1e-4):
            bad = int(np.flatnonzero(~np.all(np.isclose(got, want, atol=1e-4), axis=1) & labelled)[0])
            raise ValueError(f"the {key} labels of the predictions differ from the table at table row "
                             f"{rows.index[bad]} ({rows['image'].iloc[bad]}): was the loader built on this table, "
                             "in this order?")


def _arrays(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Labels with missing markers (from the ``has_*`` flags) and predictions, as p_mtl wants them."""
    need = ["valence", "arousal", "expression", *AU_NAMES, "has_va", "has_expr", "has_au", "pred_valence",
            "pred_arousal", "pred_expression", *AU_PROB_COLUMNS]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"the predictions table lacks {missing}: build it with predictions_table")
    has_va, has_expr, has_au = (df[c].to_numpy(dtype=bool) for c in ("has_va", "has_expr", "has_au"))
    va = np.where(has_va[:, None], df[["valence", "arousal"]].to_numpy(dtype=np.float64), MISSING_VA)
    expr = np.where(has_expr, df["expression"].to_numpy(dtype=np.float64), MISSING_EXPR).astype(np.int64)
    au = np.where(has_au[:, None], df[list(AU_NAMES)].to_numpy(dtype=np.float64), MISSING_AU).astype(np.int64)
    return {"va": va, "va_pred": df[["pred_valence", "pred_arousal"]].to_numpy(dtype=np.float64),
            "expr": expr, "expr_pred": df["pred_expression"].to_numpy(dtype=np.int64),
            "au": au, "au_pred": df[list(AU_PROB_COLUMNS)].to_numpy(dtype=np.float64),
            "has_va": has_va, "has_expr": has_expr, "has_au": has_au}


def scores(df: pd.DataFrame, au_threshold: float | Sequence[float] | np.ndarray = 0.5) -> dict[str, Any]:
    """P_MTL and its parts of a predictions table (:func:`course_lib.metrics.p_mtl`'s dict).

    ``au_threshold``: one threshold for every AU, or 12 (e.g. from :func:`tune_au_thresholds`).
    Frames without a task's label are left out of that task's term.
    """
    a = _arrays(df)
    return p_mtl(a["va"], a["va_pred"], a["expr"], a["expr_pred"], a["au"], a["au_pred"], au_threshold=au_threshold)


def _test_labels(root: str | Path) -> tuple[Path, pd.DataFrame]:
    """The path and table of the kept test labels; a folder without them (a real copy) gets a one-line error."""
    from .data.abaw import TEST_LABELS, read_mtl_annotations

    path = Path(root) / TEST_LABELS
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: only SynthAffWild keeps its test labels; on the real data "
                                "the organisers score the submission")
    return path, read_mtl_annotations(path)


def label_test(predictions: pd.DataFrame, root: str | Path) -> pd.DataFrame:
    """The predictions table of the test list's frames with the test labels filled in, ready for :func:`scores`.

    The labels come from :data:`~course_lib.data.abaw.TEST_LABELS`, which only SynthAffWild
    stores (the organisers keep the real ones). Open them once, for the model chosen on
    validation: a choice made after looking at them makes the test score a validation score.
    The predictions must cover exactly the labelled test images.
    """
    path, truth = _test_labels(root)
    truth = truth.set_index("image")
    images = predictions["image"].astype(str)
    unknown = images[~images.isin(truth.index)]
    if len(unknown):
        raise ValueError(f"{len(unknown)} predicted frames are not in {path}, e.g. {unknown.iloc[0]!r}")
    if len(truth) != len(images) or images.duplicated().any():
        raise ValueError(f"the predictions hold {images.nunique()} distinct frames; {path} labels {len(truth)}")
    labels = [*LABEL_COLUMNS, "has_va", "has_expr", "has_au"]
    out = predictions.copy()
    out[labels] = truth.loc[images, labels].to_numpy()
    return out.astype({c: truth[c].dtype for c in labels})


# --------------------------------------------------------------------------- thresholds


def tuned_thresholds(df: pd.DataFrame) -> np.ndarray:
    """The 12 per-AU thresholds that maximise each AU's F1 on ``df`` (:func:`course_lib.metrics.tune_au_thresholds`)."""
    a = _arrays(df)
    return tune_au_thresholds(a["au"], a["au_pred"])


def threshold_report(tune_on: pd.DataFrame, evaluate_on: pd.DataFrame) -> pd.DataFrame:
    """AU F1 and P_MTL on ``evaluate_on`` with fixed 0.5, thresholds tuned on ``tune_on``, and tuned on itself.

    The last row is optimistic (the thresholds saw the answers they are scored on) and is labelled so;
    the middle row is the honest use of tuning. Columns: ``thresholds``, ``AU F1``, ``P_MTL``,
    and the 12 thresholds as a list in ``values``.
    """
    honest, cheat = tuned_thresholds(tune_on), tuned_thresholds(evaluate_on)
    rows = []
    for label, th in (("fixed 0.5", np.full(N_AU, 0.5)), ("tuned on the tuning split, applied here", honest),
                      ("tuned on this split itself (optimistic)", cheat)):
        s = scores(evaluate_on, au_threshold=th)
        rows.append({"thresholds": label, "AU F1": s["au"], "P_MTL": s["total"], "values": np.round(th, 2).tolist()})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- bootstrap over videos


def _stats(df: pd.DataFrame, by: str, au_threshold) -> tuple[np.ndarray, dict[str, slice], np.ndarray]:
    """Per group (video): the additive sums every P_MTL term is a function of. ``(G, K)``, layout, groups."""
    a = _arrays(df)
    groups, g = np.unique(df[by].to_numpy(), return_inverse=True)
    n_groups = len(groups)
    th = np.asarray(au_threshold, dtype=np.float64)
    th = np.full(N_AU, float(th)) if th.ndim == 0 else th.reshape(N_AU)
    parts: list[np.ndarray] = []
    layout: dict[str, slice] = {}

    def add(name: str, per_row: np.ndarray) -> None:
        per_row = per_row.reshape(len(df), -1).astype(np.float64)
        sums = np.zeros((n_groups, per_row.shape[1]))
        np.add.at(sums, g, per_row)
        start = sum(p.shape[1] for p in parts)
        layout[name] = slice(start, start + per_row.shape[1])
        parts.append(sums)

    w = a["has_va"].astype(np.float64)
    x, y = a["va"] * w[:, None], a["va_pred"] * w[:, None]  # truth and prediction, zero where unlabelled
    add("va_n", w)
    add("va", np.concatenate([x, y, x * x, y * y, x * y], axis=1))  # per dimension (valence, arousal)
    t, p = a["expr"], a["expr_pred"]
    he = a["has_expr"][:, None]
    truth_c, pred_c = (t[:, None] == np.arange(N_EXPR)) & he, (p[:, None] == np.arange(N_EXPR)) & he
    add("expr", np.concatenate([truth_c & pred_c, ~truth_c & pred_c, truth_c & ~pred_c], axis=1))
    ha = a["has_au"][:, None]
    truth_a, pred_a = (a["au"] == 1) & ha, (a["au_pred"] >= th) & ha
    add("au", np.concatenate([truth_a & pred_a, ~truth_a & pred_a, truth_a & ~pred_a], axis=1))
    add("au_n", a["has_au"])
    add("expr_n", a["has_expr"])
    return np.concatenate(parts, axis=1), layout, groups


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def _metrics_from_sums(s: np.ndarray, layout: dict[str, slice]) -> dict[str, np.ndarray]:
    """P_MTL and its parts from summed statistics ``(B, K)``, as :func:`course_lib.metrics.p_mtl` computes them."""
    n = s[:, layout["va_n"]][:, 0]
    va = s[:, layout["va"]]
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = va[:, 0:2] / n[:, None], va[:, 2:4] / n[:, None]
        vx = va[:, 4:6] / n[:, None] - mx ** 2
        vy = va[:, 6:8] / n[:, None] - my ** 2
        cov = va[:, 8:10] / n[:, None] - mx * my
        denom = vx + vy + (mx - my) ** 2
        ccc = np.where(np.abs(denom) < 1e-12, 1.0, 2 * cov / denom)
    ccc[n == 0] = np.nan
    e = s[:, layout["expr"]]
    expr = _f1(e[:, :N_EXPR], e[:, N_EXPR:2 * N_EXPR], e[:, 2 * N_EXPR:]).mean(axis=1)
    expr[s[:, layout["expr_n"]][:, 0] == 0] = np.nan
    u = s[:, layout["au"]]
    au = _f1(u[:, :N_AU], u[:, N_AU:2 * N_AU], u[:, 2 * N_AU:]).mean(axis=1)
    au[s[:, layout["au_n"]][:, 0] == 0] = np.nan
    va_term = ccc.mean(axis=1)
    total = np.nansum(np.stack([va_term, expr, au]), axis=0)
    return {"total": total, "va": va_term, "expr": expr, "au": au}


def resample_counts(n_groups: int, n: int, seed: int = 0) -> np.ndarray:
    """``(n, n_groups)``: how often each group (video) is drawn in each of ``n`` bootstrap resamples.

    A resample draws ``n_groups`` videos with replacement; a video drawn twice counts twice.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n, n_groups))
    counts = np.zeros((n, n_groups), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(n), n_groups), draws.ravel()), 1.0)
    return counts


def _resampled_means(sides: Sequence[Sequence[pd.DataFrame]], *, n: int, seed: int, level: float, by: str,
                     au_threshold, mismatch: str) -> tuple[list[dict[str, np.ndarray]], list[dict[str, float]], int]:
    """For each side (a list of tables, e.g. several training seeds on the same frames): the mean
    over its tables of every metric on ``n`` resamples, all drawing the same videos for every table
    of every side, and its point estimate. Returns ``(boot per side, point per side, n_groups)``;
    ``mismatch`` ends the error raised when the tables cover different ``by`` values."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    stats, groups = [], None
    for dfs in sides:
        side = []
        for df in dfs:
            s, layout, g = _stats(df, by, au_threshold)
            if groups is not None and not np.array_equal(g, groups):
                raise ValueError(f"the tables cover different {by} values: {mismatch}")
            groups = g
            side.append(s)
        stats.append(side)
    counts = resample_counts(len(groups), n, seed)
    boots = []
    for side in stats:
        mean = {m: np.zeros(n) for m in METRICS}
        for s in side:
            for m, v in _metrics_from_sums(counts @ s, layout).items():
                mean[m] += v / len(side)
        boots.append(mean)
    points = [{m: float(np.mean([scores(df, au_threshold)[m] for df in dfs])) for m in METRICS} for dfs in sides]
    return boots, points, len(groups)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite ``values`` (NaN, NaN when none is)."""
    alpha = (1.0 - level) / 2.0
    v = values[np.isfinite(values)]
    low, high = np.quantile(v, [alpha, 1 - alpha]) if v.size else (np.nan, np.nan)
    return float(low), float(high)


def _bootstrap_many(dfs: Sequence[pd.DataFrame], *, n: int, seed: int, level: float, by: str,
                    au_threshold) -> pd.DataFrame:
    """Intervals of the mean over ``dfs`` (e.g. several training seeds on the same frames), each
    resample drawing the same videos for every df."""
    (boot,), (point,), n_groups = _resampled_means([dfs], n=n, seed=seed, level=level, by=by,
                                                   au_threshold=au_threshold, mismatch="bootstrap them separately")
    rows = {m: dict(zip(("estimate", "low", "high"), (point[m], *_interval(boot[m], level)))) for m in METRICS}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "metric"
    out.attrs.update(n=n, level=level, by=by, groups=n_groups)
    return out


def bootstrap_difference(before: Sequence[pd.DataFrame], after: Sequence[pd.DataFrame], n: int = 1000,
                         seed: int = 0, level: float = 0.95, *, by: str = "video",
                         au_threshold: float | Sequence[float] | np.ndarray = 0.5) -> pd.DataFrame:
    """Paired interval of ``mean(after) - mean(before)`` for P_MTL and its parts.

    Each resample draws the same videos for both sides (and every seed's table on each side), so
    what the two have in common (which videos are hard) cancels: a component "helps" when the
    interval of its gain lies above 0, which two overlapping per-row intervals cannot tell.
    """
    boots, points, n_groups = _resampled_means([before, after], n=n, seed=seed, level=level, by=by,
                                               au_threshold=au_threshold, mismatch="they cannot be paired")
    rows = {}
    for m in METRICS:
        d = boots[1][m] - boots[0][m]
        finite = d[np.isfinite(d)]
        low, high = _interval(d, level)
        rows[m] = {"difference": points[1][m] - points[0][m], "low": low, "high": high,
                   "share_above_0": float((finite > 0).mean()) if finite.size else np.nan}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "metric"
    out.attrs.update(n=n, level=level, by=by, groups=n_groups)
    return out


def step_gains(result: "AblationResult", n_boot: int = 1000, level: float = 0.95) -> pd.DataFrame:
    """What each ablation step adds to the one before it: :func:`bootstrap_difference` of P_MTL
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


def bootstrap(df: pd.DataFrame, n: int = 1000, seed: int = 0, level: float = 0.95, *, by: str = "video",
              au_threshold: float | Sequence[float] | np.ndarray = 0.5) -> pd.DataFrame:
    """Percentile bootstrap intervals of P_MTL and its three parts, resampling whole videos.

    Each of ``n`` resamples draws as many videos as ``df`` has, with replacement, and scores all
    their frames. Returns a DataFrame indexed by ``total, va, expr, au`` with ``estimate`` (the
    score of ``df`` itself), ``low`` and ``high`` (the ``level`` interval); ``attrs`` record ``n``,
    ``level``, ``by`` and the number of groups. ``by="image"`` resamples single frames, which is
    only right if frames were independent (they are not: notebook 08 shows how much too narrow
    that interval is). A resample without a labelled frame for a task is left out of that
    task's interval.
    """
    return _bootstrap_many([df], n=n, seed=seed, level=level, by=by, au_threshold=au_threshold)


def per_video_scores(df: pd.DataFrame, au_threshold: float | Sequence[float] | np.ndarray = 0.5) -> pd.DataFrame:
    """P_MTL and its parts computed on each video alone (NaN where a video has no label of a task).

    Per-video scores are noisy (a short video may show two expressions) but show which people,
    poses or conditions the model fails on.
    """
    s, layout, groups = _stats(df, "video", au_threshold)
    m = _metrics_from_sums(s, layout)
    frames = df.groupby("video").size().reindex(groups).to_numpy()
    return pd.DataFrame({"video": groups, "frames": frames, **{METRIC_LABELS[k]: v for k, v in m.items()}})


# --------------------------------------------------------------------------- submission files


class SubmissionError(AnnotationError):
    """A malformed prediction file: ``path`` and ``line`` (1-based, the header is line 1) say where."""


def write_submission(df: pd.DataFrame, path: str | Path,
                     au_threshold: float | Sequence[float] | np.ndarray = 0.5) -> Path:
    """Write the challenge's prediction file for the frames of ``df``, atomically; returns ``path``.

    Header :data:`SUBMISSION_HEADER`, then per frame ``image,valence,arousal,expression`` and the
    12 AU decisions (``prob_<AU> >= threshold``) as 0/1. Valence and arousal are clipped to
    [-1, 1]; the expression is the predicted class id.
    """
    from .files import atomic_write

    path = Path(path)
    need = ["image", "pred_valence", "pred_arousal", "pred_expression", *AU_PROB_COLUMNS]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"cannot write {path}: the table lacks {missing} (build it with predictions_table)")
    th = np.asarray(au_threshold, dtype=np.float64)
    th = np.full(N_AU, float(th)) if th.ndim == 0 else th.reshape(N_AU)
    va = np.clip(df[["pred_valence", "pred_arousal"]].to_numpy(dtype=np.float64), -1.0, 1.0)
    if not np.all(np.isfinite(va)):
        raise ValueError(f"cannot write {path}: valence/arousal hold NaN or infinite values")
    aus = (df[list(AU_PROB_COLUMNS)].to_numpy(dtype=np.float64) >= th).astype(int)
    lines = [SUBMISSION_HEADER]
    for image, (v, a), e, row in zip(df["image"].astype(str), va, df["pred_expression"].astype(int), aus):
        lines.append(f"{image},{v:.6g},{a:.6g},{e}," + ",".join(map(str, row)))
    atomic_write(path, "\n".join(lines) + "\n")
    return path


def read_submission(path: str | Path, images: Sequence[str] | None = None) -> pd.DataFrame:
    """Read and check a prediction file; raises :class:`SubmissionError` naming the file and line.

    Checks: the header, 16 fields per line, image names ``<video>/<digits>.jpg`` without
    duplicates, valence/arousal numbers in [-1, 1], an expression id 0..7 and 12 AU decisions
    0/1. With ``images`` (the test list), every listed image must be there and no other.
    Returns a DataFrame: ``image, valence, arousal, expression, AU1 ... AU26``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such prediction file") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != SUBMISSION_HEADER:
        got = lines[0].strip() if lines else "an empty file"
        raise SubmissionError(path, 1, f"the header must be {SUBMISSION_HEADER!r}, got {got!r}")
    rows, seen = [], {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise SubmissionError(path, number, "empty line")
        fields = line.strip().split(",")
        if len(fields) != SUBMISSION_FIELDS:
            raise SubmissionError(path, number, f"expected {SUBMISSION_FIELDS} fields (image, valence, arousal, "
                                  f"expression and {N_AU} AU decisions), got {len(fields)}")
        image = fields[0]
        if not _IMAGE.match(image):
            raise SubmissionError(path, number, f"image {image!r} is not <video>/<digits>.jpg")
        if image in seen:
            raise SubmissionError(path, number, f"image {image!r} already on line {seen[image]}")
        seen[image] = number
        values = []
        for name, value in zip(("valence", "arousal"), fields[1:3]):
            try:
                x = float(value)
            except ValueError:
                raise SubmissionError(path, number, f"{name} {value!r} is not a number") from None
            if not (math.isfinite(x) and -1.0 <= x <= 1.0):
                raise SubmissionError(path, number, f"{name} {value!r} is outside [-1, 1]")
            values.append(x)
        if fields[3] not in {str(i) for i in range(N_EXPR)}:
            raise SubmissionError(path, number, f"expression {fields[3]!r} is not a class id 0..{N_EXPR - 1}")
        bad = [(au, v) for au, v in zip(AU_NAMES, fields[4:]) if v not in ("0", "1")]
        if bad:
            raise SubmissionError(path, number, f"{bad[0][0]} is {bad[0][1]!r}: AU decisions must be 0 or 1")
        rows.append([image, *values, int(fields[3]), *map(int, fields[4:])])
    if images is not None:
        wanted = list(images)
        absent = [i for i in wanted if i not in seen]
        if absent:
            raise SubmissionError(path, len(lines) + 1, f"{len(absent)} listed images have no prediction, "
                                  f"e.g. {absent[0]!r}")
        extra = set(seen) - set(wanted)
        if extra:
            first = min(extra, key=seen.__getitem__)
            raise SubmissionError(path, seen[first], f"image {first!r} is not in the test list")
    return pd.DataFrame(rows, columns=["image", "valence", "arousal", "expression", *AU_NAMES])


def score_submission(path: str | Path, root: str | Path) -> dict[str, Any]:
    """Score a submission file the way the organisers do: checked against the test list of ``root``
    (:func:`read_submission`), its decisions against the kept test labels (:data:`~course_lib.data.abaw.TEST_LABELS`,
    SynthAffWild only). Returns :func:`course_lib.metrics.p_mtl`'s dict."""
    from .data.abaw import TEST_LIST, read_test_list

    _, truth = _test_labels(root)
    sub = read_submission(path, images=read_test_list(Path(root) / TEST_LIST)["image"]).set_index("image")
    sub = sub.loc[truth["image"]]
    return p_mtl(truth[["valence", "arousal"]].to_numpy(), sub[["valence", "arousal"]].to_numpy(),
                 truth["expression"].to_numpy(), sub["expression"].to_numpy(),
                 truth[list(AU_NAMES)].to_numpy(), sub[list(AU_NAMES)].to_numpy(dtype=np.float64))


# --------------------------------------------------------------------------- reference tables


def floor_table(train: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """A predictions table of the do-nothing model (:func:`course_lib.metrics.do_nothing_scores`).

    The training mean for valence and arousal, the training majority class, every AU present.
    """
    va_mean = train.loc[train["has_va"], ["valence", "arousal"]].mean().to_numpy()
    majority = int(train.loc[train["has_expr"], "expression"].mode()[0])
    return _constant_table(table, np.tile(va_mean, (len(table), 1)), np.full(len(table), majority),
                           np.ones((len(table), N_AU)))


def oracle_table(root: str | Path, table: pd.DataFrame) -> pd.DataFrame:
    """A predictions table that predicts SynthAffWild's clean labels (:func:`course_lib.data.synth.oracle_scores`)."""
    from .data.synth import clean_labels

    clean = clean_labels(root, table)
    return _constant_table(table, clean["va"], clean["expr"], clean["au"].astype(np.float64))


def _constant_table(table: pd.DataFrame, va: np.ndarray, expr: np.ndarray, au: np.ndarray) -> pd.DataFrame:
    logits = np.where(np.arange(N_EXPR) == np.asarray(expr)[:, None], 20.0, 0.0)
    pred = {"index": np.arange(len(table)), "va_pred": va, "expr_pred": logits, "au_pred": au}
    return predictions_table(pred, table)


# --------------------------------------------------------------------------- ablation


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


def audio_summary(root: str | Path, table: pd.DataFrame, normalize: tuple["torch.Tensor", "torch.Tensor"]
                  ) -> "torch.Tensor":
    """Per frame, the mean and standard deviation over time of each Mel band of its audio window: ``(N, 128)``.

    ``normalize`` is :func:`course_lib.audio.band_stats` of the *training* windows. A fixed summary
    (no CNN): the temporal model of stage 3 learns what to make of it, next to the visual features.
    """
    import torch

    from .audio import audio_features

    windows = audio_features(root, table, normalize=normalize)
    return torch.cat([windows.mean(dim=2), windows.std(dim=2)], dim=1)


def audio_summaries(root: str | Path, train: pd.DataFrame, *tables: pd.DataFrame) -> tuple["torch.Tensor", ...]:
    """:func:`audio_summary` of the training frames and of each of ``tables`` (validation, test), all
    normalised with the training split's band statistics: what the ``+ audio`` stage puts beside
    each frame's features."""
    from .audio import audio_features, band_stats

    stats = band_stats(audio_features(root, train))
    return tuple(audio_summary(root, table, stats) for table in (train, *tables))


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
    :func:`audio_summary` concatenated to each frame's stage-2 features; needs ``<root>/audio``,
    left out with ``audio=False``).

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
    scores them: choose on validation, then score the chosen one once (:func:`score_submission`, :func:`label_test`).
    """
    import torch
    from torch.utils.data import DataLoader

    from .config import get_device
    from .losses import weighted_loss
    from .data.abaw import read_mtl_annotations
    from .features import CachedFrameDataset
    from .models import MTLConfig, build_model
    from .progressive import (ProgressiveConfig, progressive_config, run_progressive, stage_features,
                              temporal_stage)
    from .train import TrainConfig, fit, predict

    start = time.perf_counter()
    root = Path(root)
    device = torch.device(device) if device is not None else get_device()
    base = budget if isinstance(budget, ProgressiveConfig) else progressive_config(mode, **dict(budget or {}))
    if feats is None:
        from .course_backbone import course_features

        _, feats = course_features(root, mode, device=device, progress_bar=progress_bar, test=test)
    if test and "test" not in feats:
        raise ValueError("test=True needs the test split's features: pass feats=course_features(root, mode, "
                         "test=True)[1]")
    train = read_mtl_annotations(root / "training_set_annotations.txt")
    val = read_mtl_annotations(root / "validation_set_annotations.txt")
    train_set = CachedFrameDataset(feats["train"], train, what="tokens")
    train_plain = DataLoader(train_set, batch_size=256)
    val_loader = DataLoader(CachedFrameDataset(feats["validation"], val, what="tokens"), batch_size=256)
    if test:
        from .features import split_table

        test_table = split_table(root, "test")
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
            torch.manual_seed(config.seed + 100 + i)
            model = build_model(MTLConfig(token_dim=feats["train"].dim, n_tokens=feats["train"].n_tokens,
                                          dim=config.dim, depth=config.depth, heads=config.heads,
                                          dropout=config.dropout, **switches), train)
            loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                generator=torch.Generator().manual_seed(config.seed + 100))
            fit(model, loader, val_loader, config=TrainConfig(epochs=config.stage1_epochs + config.stage2_epochs,
                                                              lr=config.stage1_lr, amp=config.amp,
                                                              compile=config.compile, seed=config.seed),
                loss_fn=weighted_loss(train), device=device, progress_bar=progress_bar)
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
        from .multimodal import audiovisual_windows, train_audiovisual

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
        from .baselines import hog_predictions, reading_predictions

        made = [("reference: HOG + linear", "gradient histograms of the face, linear models (no deep learning)",
                 hog_predictions)]
        if oracle is not None:  # the reading reference needs SynthAffWild's ground truth
            made.append(("reference: reading each frame", "each frame's true AU intensities, gradient boosting",
                         reading_predictions))
        for name, what, make in made:
            tick = time.perf_counter()
            p = make(root, train, val)
            table = _constant_table(val, p["va"], p["expr"], p["au"].astype(np.float64))
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
    ci = _bootstrap_many(dfs, n=n_boot, seed=0, level=level, by="video", au_threshold=0.5)
    return {"configuration": name, "what it adds": what, **_interval_columns(ci), "seconds": seconds}


def _interval_columns(ci: pd.DataFrame) -> dict[str, float]:
    """A bootstrap's estimate and bounds as table columns: ``P_MTL``, ``P_MTL low``, ``P_MTL high``, ... per metric."""
    columns: dict[str, float] = {}
    for m in METRICS:
        label = METRIC_LABELS[m]
        columns[label], columns[f"{label} low"], columns[f"{label} high"] = ci.loc[m, ["estimate", "low", "high"]]
    return columns


def format_intervals(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The ablation table with each metric as ``estimate [low, high]`` text, for display."""
    out = table[["configuration"]].copy()
    for label in METRIC_LABELS.values():
        out[label] = [f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                      for e, lo, hi in zip(table[label], table[f"{label} low"], table[f"{label} high"])]
    if "seconds" in table:
        out["seconds"] = table["seconds"].round(1)
    return out


def interval_table(tables: dict[str, pd.DataFrame], n: int = 1000, seed: int = 0, level: float = 0.95, *,
                   au_threshold: float | Sequence[float] | np.ndarray = 0.5, digits: int = 3) -> pd.DataFrame:
    """P_MTL and its parts of each predictions table as ``estimate [low, high]`` text (:func:`bootstrap`
    over videos), one row per name: for showing a few models or splits side by side (``08_evaluation``)."""
    rows = [{"configuration": name,
             **_interval_columns(bootstrap(df, n=n, seed=seed, level=level, au_threshold=au_threshold))}
            for name, df in tables.items()]
    return format_intervals(pd.DataFrame(rows), digits).set_index("configuration").rename_axis(None)


__all__ = ["ABLATION_STEPS", "AU_PROB_COLUMNS", "AblationResult", "EXPR_PROB_COLUMNS", "METRICS", "METRIC_LABELS",
           "SEED003_ROW", "SUBMISSION_HEADER", "SubmissionError", "audio_summaries", "audio_summary", "bootstrap",
           "bootstrap_difference", "floor_table", "format_intervals", "interval_table", "label_test", "oracle_table",
           "per_video_scores", "predictions_table", "read_submission", "resample_counts", "run_ablation",
           "score_submission", "scores", "step_gains", "threshold_report", "tuned_thresholds", "write_submission"]
