"""Challenge metrics: the CCC, the F1 scores and the multi-task total P_MTL.

Taught in ``00_welcome_and_setup`` (what P_MTL adds up) and, in full, in
``08`` (evaluating a model the way the challenge does). The formulas are those of
``ABAW_FACTS.md``: population moments, float64, missing labels left out of their task.

Every function accepts NumPy arrays or torch tensors (any device, with or without grad) and
computes in float64. Label conventions are those of :mod:`course_lib.labels`: AUs ``-1``
(a row is missing as soon as one of its 12 AUs is ``-1``; the files mark all 12 at once),
expression ``-1``, valence/arousal ``-5`` (a row is missing if either value is ``-5``).

Zero division: the F1 of a label with no positives in the truth and none predicted is 0
(scikit-learn's ``f1_score(..., zero_division=0)``, and what the ABAW scripts get), so a
class absent from the evaluated frames costs its share of the mean.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from .labels import AU_NAMES, EXPR_NAMES, MISSING_AU, MISSING_EXPR, MISSING_VA

if TYPE_CHECKING:
    import pandas as pd

N_AU: int = len(AU_NAMES)
N_EXPR: int = len(EXPR_NAMES)
#: ABAW2's expression task: the first 7 classes ("Other" did not exist yet).
N_EXPR_ABAW2: int = 7

#: The thresholds :func:`tune_au_thresholds` tries by default: 0.05, 0.10, ..., 0.95.
DEFAULT_THRESHOLD_GRID: np.ndarray = np.round(np.linspace(0.05, 0.95, 19), 10)
DEFAULT_THRESHOLD_GRID.setflags(write=False)


def _to_numpy(x: Any) -> np.ndarray:
    """NumPy view of an array or a torch tensor (detached, on the CPU; no torch import)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point():  # float16/bfloat16 have no NumPy twin
            x = x.double()
        x = x.numpy()
    return np.asarray(x)


def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(_to_numpy(x), dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def ccc(x: ArrayLike, y: ArrayLike) -> float:
    """Concordance correlation coefficient of two equally long sequences.

    ``CCC = 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)`` with population moments.
    Unlike Pearson's r it also punishes a shift or a rescaling of the predictions, so a
    prediction must agree with the labels, not merely move with them. Returns 0.0 when both
    inputs are constant and different (and 1.0 when they are identical constants).
    """
    a, b = _as_1d(x, "x"), _as_1d(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x and y differ in length: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError("ccc of empty sequences is undefined")
    mx, my = a.mean(), b.mean()
    sxy = np.mean((a - mx) * (b - my))
    denom = a.var() + b.var() + (mx - my) ** 2
    if denom == 0.0:
        return 1.0
    return float(2.0 * sxy / denom)


def always_positive_f1(base_rate: float) -> float:
    """F1 of predicting "present" on every frame for a label present on ``base_rate`` of them.

    Precision is the base rate and recall is 1, so F1 = 2p / (1 + p): the score a model
    that learned nothing gets on one AU, which is why rare AUs pull the AU term down.
    """
    if not 0.0 <= base_rate <= 1.0:
        raise ValueError(f"base_rate must be in [0, 1], got {base_rate}")
    return 2.0 * base_rate / (1.0 + base_rate)


# --------------------------------------------------------------------------- input checks


def _array(x: Any, name: str, shape: tuple[int | None, ...], shape_text: str) -> np.ndarray:
    """``x`` as float64 with the given shape (``None``: any length), or a clear ValueError."""
    arr = np.asarray(_to_numpy(x), dtype=np.float64)
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {shape_text}")
    return arr


def _same_rows(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{a_name} has {a.shape[0]} rows but {b_name} has {b.shape[0]}")


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values on labelled rows")


def _au_rows(au_true: Any, au_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """The labelled AU rows of truth and scores, validated: ``(n, 12)`` each."""
    t = _array(au_true, "au_true", (None, N_AU), f"(N, {N_AU})")
    p = _array(au_pred, "au_pred", (None, N_AU), f"(N, {N_AU})")
    _same_rows(t, "au_true", p, "au_pred")
    _check_finite(t, "au_true")
    if not np.all(np.isin(t, (0.0, 1.0, MISSING_AU))):
        raise ValueError(f"au_true must hold 0, 1 or {MISSING_AU} (missing)")
    keep = ~np.any(t == MISSING_AU, axis=1)
    t, p = t[keep], p[keep]
    _check_finite(p, "au_pred")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("au_pred must be probabilities in [0, 1] or 0/1 decisions; "
                         "apply a sigmoid to logits first")
    return t, p


def _thresholds(threshold: float | ArrayLike) -> np.ndarray:
    th = np.asarray(_to_numpy(threshold), dtype=np.float64)
    if th.ndim == 0:
        th = np.full(N_AU, float(th))
    if th.shape != (N_AU,):
        raise ValueError(f"threshold has shape {tuple(th.shape)}, expected a float or ({N_AU},)")
    _check_finite(th, "threshold")
    return th


def _binary_f1(truth: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """Column-wise binary F1 = 2 TP / (2 TP + FP + FN); 0 where that is 0 / 0."""
    truth, decision = truth.astype(bool), decision.astype(bool)
    tp = np.sum(truth & decision, axis=0, dtype=np.float64)
    fp = np.sum(~truth & decision, axis=0, dtype=np.float64)
    fn = np.sum(truth & ~decision, axis=0, dtype=np.float64)
    denom = 2.0 * tp + fp + fn
    return np.divide(2.0 * tp, denom, out=np.zeros_like(denom), where=denom > 0)


def _expr_rows(expr_true: Any, expr_pred: Any, n_classes: int = N_EXPR) -> tuple[np.ndarray, np.ndarray]:
    """Labelled expression rows as integer class ids ``(n,)``; scores are argmaxed."""
    t = _array(expr_true, "expr_true", (None,), "(N,) class ids")
    p = np.asarray(_to_numpy(expr_pred), dtype=np.float64)
    widths = sorted({n_classes, N_EXPR})
    if p.ndim == 2 and p.shape[1] in widths:
        scores = True
    elif p.ndim == 1:
        scores = False
    else:
        cols = " or ".join(f"(N, {w})" for w in widths)
        raise ValueError(f"expr_pred has shape {tuple(p.shape)}, expected (N,) class ids or {cols} scores")
    _same_rows(t, "expr_true", p, "expr_pred")
    _check_finite(t, "expr_true")
    if not np.all(np.isin(t, np.arange(MISSING_EXPR, N_EXPR))):
        raise ValueError(f"expr_true must hold class ids 0..{N_EXPR - 1} or {MISSING_EXPR} (missing)")
    keep = t != MISSING_EXPR
    t, p = t[keep], p[keep]
    _check_finite(p, "expr_pred")
    if scores:
        p = np.argmax(p[:, :n_classes], axis=1).astype(np.float64)
    elif not np.all(np.isin(p, np.arange(N_EXPR))):
        raise ValueError(f"expr_pred class ids must be integers 0..{N_EXPR - 1}")
    return t.astype(np.int64), p.astype(np.int64)


def _macro_f1(t: np.ndarray, p: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class one-vs-rest F1 for classes ``0..n_classes-1`` (sklearn's macro F1 parts)."""
    classes = np.arange(n_classes)
    return _binary_f1(t[:, None] == classes, p[:, None] == classes)


# --------------------------------------------------------------------------- public metrics


def au_f1(au_true: ArrayLike, au_pred: ArrayLike, threshold: float | ArrayLike = 0.5
          ) -> tuple[float, np.ndarray]:
    """Mean binary F1 over the 12 AUs, and the 12 per-AU F1 scores.

    ``au_pred`` holds probabilities (or 0/1 decisions); an AU counts as present where
    ``au_pred >= threshold``, with one threshold for all AUs or an array of 12 (tuned per AU
    on validation data, see :func:`tune_au_thresholds`). Rows whose labels are missing
    (``-1``) are left out; an AU with no positives in truth nor prediction scores 0.
    Raises ValueError when no row is labelled.
    """
    t, p = _au_rows(au_true, au_pred)
    if t.shape[0] == 0:
        raise ValueError("no labelled AU rows: the AU F1 is undefined")
    per_au = _binary_f1(t, p >= _thresholds(threshold))
    return float(per_au.mean()), per_au


def expr_f1(expr_true: ArrayLike, expr_pred: ArrayLike) -> tuple[float, np.ndarray]:
    """Macro F1 over the 8 expression classes, and the 8 per-class F1 scores.

    ``expr_pred`` is class ids ``(N,)`` or logits/probabilities ``(N, 8)`` (argmax). Rows
    labelled ``-1`` are left out. Every class counts in the mean, even one absent from both
    truth and prediction (it scores 0), as ``f1_score(labels=range(8), average="macro",
    zero_division=0)`` does. Raises ValueError when no row is labelled.
    """
    t, p = _expr_rows(expr_true, expr_pred)
    if t.size == 0:
        raise ValueError("no labelled expression rows: the expression F1 is undefined")
    per_class = _macro_f1(t, p, N_EXPR)
    return float(per_class.mean()), per_class


def _va_rows(va_true: Any, va_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _array(va_true, "va_true", (None, 2), "(N, 2) valence, arousal")
    p = _array(va_pred, "va_pred", (None, 2), "(N, 2) valence, arousal")
    _same_rows(t, "va_true", p, "va_pred")
    _check_finite(t, "va_true")
    keep = ~np.any(t == MISSING_VA, axis=1)
    t, p = t[keep], p[keep]
    _check_finite(p, "va_pred")
    return t, p


def with_missing_markers(va: ArrayLike, expr: ArrayLike, au: ArrayLike, has_va: ArrayLike | None = None,
                         has_expr: ArrayLike | None = None, has_au: ArrayLike | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels as :func:`p_mtl` reads them: the files' missing markers wherever a ``has_*`` flag says a
    frame lacks that task's label (no flag: the labels as they are). Returns float VA, int EXPR, int AU."""
    va, expr, au = (np.asarray(x, dtype=np.float64) for x in (va, expr, au))
    if has_va is not None:
        va = np.where(np.asarray(has_va, dtype=bool).reshape(-1, 1), va, MISSING_VA)
    if has_expr is not None:
        expr = np.where(np.asarray(has_expr, dtype=bool).reshape(-1), expr, MISSING_EXPR)
    if has_au is not None:
        au = np.where(np.asarray(has_au, dtype=bool).reshape(-1, 1), au, MISSING_AU)
    return va, expr.astype(np.int64), au.astype(np.int64)


def p_mtl(va_true: ArrayLike, va_pred: ArrayLike, expr_true: ArrayLike, expr_pred: ArrayLike,
          au_true: ArrayLike, au_pred: ArrayLike, *, au_threshold: float | ArrayLike = 0.5
          ) -> dict[str, Any]:
    """The ABAW3/4/7 multi-task score ``P_MTL = (CCC_V + CCC_A)/2 + F1_expr(8) + F1_AU(12)``.

    Each task is scored on its own labelled frames (missing labels are left out of that
    term only). Returns ``total, va, expr, au, ccc_valence, ccc_arousal``, the per-label
    F1s ``au_f1_per_au`` / ``expr_f1_per_class`` (name -> F1) and ``n_va, n_expr, n_au``,
    the frames each term used. A task with no labelled frame gets NaN terms and a
    RuntimeWarning, and ``total`` is the sum of the other terms (then not comparable to a
    full P_MTL); no labelled frame for any task raises ValueError.
    """
    vt, vp = _va_rows(va_true, va_pred)
    et, ep = _expr_rows(expr_true, expr_pred)
    at, ap = _au_rows(au_true, au_pred)
    rows = {len(_to_numpy(va_true)), len(_to_numpy(expr_true)), len(_to_numpy(au_true))}
    if len(rows) != 1:
        raise ValueError(f"va, expr and au inputs must have the same number of rows, got {sorted(rows)}")
    nan = float("nan")

    ccc_v = ccc(vt[:, 0], vp[:, 0]) if len(vt) else nan
    ccc_a = ccc(vt[:, 1], vp[:, 1]) if len(vt) else nan
    per_class = _macro_f1(et, ep, N_EXPR) if len(et) else np.full(N_EXPR, nan)
    per_au = _binary_f1(at, ap >= _thresholds(au_threshold)) if len(at) else np.full(N_AU, nan)
    terms = {"va": (ccc_v + ccc_a) / 2.0, "expr": float(per_class.mean()), "au": float(per_au.mean())}

    missing = [k for k, v in terms.items() if np.isnan(v)]
    if len(missing) == len(terms):
        raise ValueError("no labelled frames for any task: P_MTL is undefined")
    if missing:
        warnings.warn(f"P_MTL total leaves out {', '.join(missing)}: no labelled frames",
                      RuntimeWarning, stacklevel=2)
    return {
        "total": float(sum(v for v in terms.values() if not np.isnan(v))),
        **terms,
        "ccc_valence": ccc_v,
        "ccc_arousal": ccc_a,
        "au_f1_per_au": dict(zip(AU_NAMES, per_au.tolist())),
        "expr_f1_per_class": dict(zip(EXPR_NAMES, per_class.tolist())),
        "n_va": int(len(vt)),
        "n_expr": int(len(et)),
        "n_au": int(len(at)),
    }


def abaw2_expr_score(expr_true: ArrayLike, expr_pred: ArrayLike) -> float:
    """ABAW2's expression score: ``0.67 * macro F1 over 7 classes + 0.33 * accuracy``.

    ABAW2 had no class 7 ("Other"), so rows labelled 7 are left out, as are missing rows.
    Scores ``(N, 7)`` or ``(N, 8)`` are argmaxed over the first 7 columns; a predicted id 7
    simply counts as wrong. Raises ValueError when no row is left.
    """
    t, p = _expr_rows(expr_true, expr_pred, n_classes=N_EXPR_ABAW2)
    keep = t < N_EXPR_ABAW2
    t, p = t[keep], p[keep]
    if t.size == 0:
        raise ValueError("no expression rows labelled 0..6: the ABAW2 score is undefined")
    f1 = float(_macro_f1(t, p, N_EXPR_ABAW2).mean())
    return 0.67 * f1 + 0.33 * float(np.mean(t == p))


def abaw2_au_score(au_true: ArrayLike, au_pred: ArrayLike, threshold: float | ArrayLike = 0.5
                   ) -> float:
    """ABAW2's AU score: ``0.5 * mean F1 over 12 AUs + 0.5 * accuracy``.

    The accuracy is over all flattened AU decisions of the labelled rows (``N x 12`` of
    them); thresholds and missing rows as in :func:`au_f1`.
    """
    t, p = _au_rows(au_true, au_pred)
    if t.shape[0] == 0:
        raise ValueError("no labelled AU rows: the ABAW2 AU score is undefined")
    decision = p >= _thresholds(threshold)
    f1 = float(_binary_f1(t, decision).mean())
    return 0.5 * f1 + 0.5 * float(np.mean(decision == t.astype(bool)))


def tune_au_thresholds(au_true: ArrayLike, au_prob: ArrayLike,
                       grid: ArrayLike = DEFAULT_THRESHOLD_GRID) -> np.ndarray:
    """Per AU, the threshold in ``grid`` that maximises that AU's F1 on the given data.

    Tune on validation data, then apply the 12 thresholds with :func:`au_f1` on other data:
    scoring on the data they were tuned on flatters the model. Ties go to the threshold
    closest to 0.5 (then to the lower one). Missing rows are left out.
    """
    t, p = _au_rows(au_true, au_prob)
    if t.shape[0] == 0:
        raise ValueError("no labelled AU rows: nothing to tune thresholds on")
    g = np.asarray(_to_numpy(grid), dtype=np.float64).reshape(-1)
    if g.size == 0:
        raise ValueError("grid is empty")
    _check_finite(g, "grid")
    order = np.lexsort((g, np.abs(g - 0.5)))  # closest to 0.5 first, then lower
    g = g[order]
    best = np.empty(N_AU)
    for k in range(N_AU):
        f1 = _binary_f1(np.repeat(t[:, k : k + 1], g.size, axis=1), p[:, k : k + 1] >= g)
        best[k] = g[int(np.argmax(f1 >= f1.max() - 1e-12))]
    return best


def do_nothing_predictions(train_table: pd.DataFrame, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a model that learned nothing predicts for ``n`` frames: ``(va (n, 2), expression (n,), au (n, 12))``.

    The training mean for valence and arousal, the training majority class and every AU present,
    from the labelled rows of ``train_table`` (an annotation table). The one definition of the
    floor: :func:`do_nothing_scores` scores it, :func:`course_lib.evaluate.floor_table` tabulates it.
    """
    va_mean = train_table.loc[train_table["has_va"], ["valence", "arousal"]].mean().to_numpy()
    majority = int(train_table.loc[train_table["has_expr"], "expression"].mode()[0])
    return np.tile(va_mean, (n, 1)), np.full(n, majority), np.ones((n, N_AU))


def do_nothing_scores(train_table: pd.DataFrame, eval_table: pd.DataFrame, *, au_threshold: float = 0.5
                      ) -> dict[str, Any]:
    """P_MTL of a model that learned nothing: the floor every result is read against.

    Taught in ``01_data``. It predicts the training mean for valence and arousal (a constant,
    so CCC 0), the training majority class for every frame, and every AU present (the best
    constant for F1, which scores 2p / (1 + p) per AU): :func:`do_nothing_predictions`. Both
    arguments are annotation tables (:func:`course_lib.data.abaw.read_mtl_annotations`); missing
    labels are left out as usual.
    """
    va, expr, au = do_nothing_predictions(train_table, len(eval_table))
    return p_mtl(eval_table[["valence", "arousal"]].to_numpy(), va, eval_table["expression"].to_numpy(), expr,
                 eval_table[list(AU_NAMES)].to_numpy(), au, au_threshold=au_threshold)
