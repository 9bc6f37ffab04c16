"""Evaluating a model the way the challenge does.

Taught in ``08_evaluation``. Everything works on a *predictions table*: one row per frame with
the frame's labels (as in the annotation table of :mod:`course_lib.data.abaw`) and the model's
outputs (:func:`predictions_table`). On it:

- :func:`scores`: P_MTL and its parts (:func:`course_lib.metrics.p_mtl`, missing labels left out),
  with one AU threshold or twelve (:func:`threshold_report` tunes them on one split and applies
  them to another);
- :func:`write_submission` / :func:`read_submission`: the challenge's prediction file, and
  :func:`score_submission` / :func:`label_test`: the one look at SynthAffWild's kept test labels;
- :func:`floor_table` / :func:`oracle_table`: the do-nothing floor and the data's oracle reference
  as predictions tables.

How sure the numbers are (bootstrap intervals over videos) is :mod:`course_lib.confidence`; the
ablation of the course's components is :mod:`course_lib.ablation`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data.abaw import LABEL_COLUMNS, TEST_LABELS, TEST_LIST, AnnotationError, read_mtl_annotations, read_test_list
from .data.synth import clean_labels
from .files import atomic_write
from .labels import AU_NAMES, EXPR_NAMES
from .metrics import do_nothing_predictions, p_mtl, tune_au_thresholds, with_missing_markers

N_AU, N_EXPR = len(AU_NAMES), len(EXPR_NAMES)
#: Predicted AU probability columns of a predictions table.
AU_PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{a}" for a in AU_NAMES)
#: Predicted expression probability columns (softmax of the logits).
EXPR_PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{e}" for e in EXPR_NAMES)
PRED_COLUMNS: tuple[str, ...] = ("pred_valence", "pred_arousal", "pred_expression", *EXPR_PROB_COLUMNS,
                                 *AU_PROB_COLUMNS)
#: The metrics :func:`course_lib.confidence.bootstrap` reports, with the names of :func:`course_lib.metrics.p_mtl`.
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


def metric_arrays(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Labels with missing markers (from the ``has_*`` flags) and predictions of a predictions table, as
    :func:`course_lib.metrics.p_mtl` wants them: ``va, va_pred, expr, expr_pred, au, au_pred`` and the
    ``has_va, has_expr, has_au`` flags."""
    need = ["valence", "arousal", "expression", *AU_NAMES, "has_va", "has_expr", "has_au", "pred_valence",
            "pred_arousal", "pred_expression", *AU_PROB_COLUMNS]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"the predictions table lacks {missing}: build it with predictions_table")
    has_va, has_expr, has_au = (df[c].to_numpy(dtype=bool) for c in ("has_va", "has_expr", "has_au"))
    va, expr, au = with_missing_markers(df[["valence", "arousal"]], df["expression"], df[list(AU_NAMES)],
                                        has_va, has_expr, has_au)
    return {"va": va, "va_pred": df[["pred_valence", "pred_arousal"]].to_numpy(dtype=np.float64),
            "expr": expr, "expr_pred": df["pred_expression"].to_numpy(dtype=np.int64),
            "au": au, "au_pred": df[list(AU_PROB_COLUMNS)].to_numpy(dtype=np.float64),
            "has_va": has_va, "has_expr": has_expr, "has_au": has_au}


def scores(df: pd.DataFrame, au_threshold: float | Sequence[float] | np.ndarray = 0.5) -> dict[str, Any]:
    """P_MTL and its parts of a predictions table (:func:`course_lib.metrics.p_mtl`'s dict).

    ``au_threshold``: one threshold for every AU, or 12 (e.g. from :func:`tune_au_thresholds`).
    Frames without a task's label are left out of that task's term.
    """
    a = metric_arrays(df)
    return p_mtl(a["va"], a["va_pred"], a["expr"], a["expr_pred"], a["au"], a["au_pred"], au_threshold=au_threshold)


def _test_labels(root: str | Path) -> tuple[Path, pd.DataFrame]:
    """The path and table of the kept test labels; a folder without them (a real copy) gets a one-line error."""
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
    a = metric_arrays(df)
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
    _, truth = _test_labels(root)
    sub = read_submission(path, images=read_test_list(Path(root) / TEST_LIST)["image"]).set_index("image")
    sub = sub.loc[truth["image"]]
    return p_mtl(truth[["valence", "arousal"]].to_numpy(), sub[["valence", "arousal"]].to_numpy(),
                 truth["expression"].to_numpy(), sub["expression"].to_numpy(),
                 truth[list(AU_NAMES)].to_numpy(), sub[list(AU_NAMES)].to_numpy(dtype=np.float64))


# --------------------------------------------------------------------------- reference tables


def floor_table(train: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """A predictions table of the do-nothing model (:func:`course_lib.metrics.do_nothing_predictions`,
    which :func:`course_lib.metrics.do_nothing_scores` scores).

    The training mean for valence and arousal, the training majority class, every AU present.
    """
    return constant_table(table, *do_nothing_predictions(train, len(table)))


def oracle_table(root: str | Path, table: pd.DataFrame) -> pd.DataFrame:
    """A predictions table that predicts SynthAffWild's clean labels (:func:`course_lib.data.synth.oracle_scores`)."""
    clean = clean_labels(root, table)
    return constant_table(table, clean["va"], clean["expr"], clean["au"].astype(np.float64))


def constant_table(table: pd.DataFrame, va: np.ndarray, expr: np.ndarray, au: np.ndarray) -> pd.DataFrame:
    """A predictions table of given predictions for every row of ``table``: ``va`` (N, 2), ``expr`` (N,)
    class ids (turned into confident logits) and ``au`` (N, 12) probabilities or 0/1 decisions."""
    logits = np.where(np.arange(N_EXPR) == np.asarray(expr)[:, None], 20.0, 0.0)
    pred = {"index": np.arange(len(table)), "va_pred": va, "expr_pred": logits, "au_pred": au}
    return predictions_table(pred, table)


__all__ = ["AU_PROB_COLUMNS", "EXPR_PROB_COLUMNS", "METRICS", "METRIC_LABELS", "SUBMISSION_HEADER",
           "SubmissionError", "constant_table", "floor_table", "label_test", "metric_arrays", "oracle_table",
           "predictions_table", "read_submission", "score_submission", "scores", "threshold_report",
           "tuned_thresholds", "write_submission"]
