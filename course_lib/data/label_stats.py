"""Statistics of a label table: how many labels each task has, loss weights, AU co-occurrence.

Taught in ``01_data`` (how unbalanced the labels are) and used by ``04_au_graph`` (the
co-occurrence graph) and the losses (:func:`course_lib.losses.weighted_loss`). Every count is
over the frames labelled for that task (the ``has_*`` flags of a table read by
:mod:`course_lib.data.abaw`), so a missing label is never counted as a negative.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from ..labels import AU_NAMES, EXPR_NAMES


def _labelled(table: pd.DataFrame, flag: str) -> pd.DataFrame:
    return table[table[flag].to_numpy(bool)]


def label_counts(table: pd.DataFrame) -> dict[str, Any]:
    """Counts for a table: rows, labelled frames per task, frames per expression, AU positives.

    Returns ``{"rows": n, "labelled": {"va", "expr", "au"}, "expr_counts": {class name: n},
    "au_positives": {AU: n}}``, counts over the frames labelled for that task.
    """
    expr = _labelled(table, "has_expr")["expression"].to_numpy(np.int64)
    au = _labelled(table, "has_au")[list(AU_NAMES)].to_numpy() == 1
    return {
        "rows": len(table),
        "labelled": {task: int(table[f"has_{task}"].sum()) for task in ("va", "expr", "au")},
        "expr_counts": dict(zip(EXPR_NAMES, np.bincount(expr, minlength=len(EXPR_NAMES)).tolist())),
        "au_positives": dict(zip(AU_NAMES, au.sum(axis=0).astype(int).tolist())),
    }


def expr_class_weights(table: pd.DataFrame) -> np.ndarray:
    """Inverse-frequency weights of the 8 expression classes, for ``CrossEntropyLoss(weight=...)``.

    ``w_c = 1 / n_c``, scaled so the classes that occur have mean weight 1. A class with no
    labelled frame gets weight 0 (it cannot be learned from this table) and a warning.
    float32 (8,). No expression label at all raises ``ValueError``.
    """
    counts = np.asarray(list(label_counts(table)["expr_counts"].values()), dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("no frame has an expression label: class weights are undefined")
    if not present.all():
        absent = ", ".join(np.asarray(EXPR_NAMES)[~present])
        warnings.warn(f"no labelled frame of expression class(es) {absent}: weight 0", stacklevel=2)
    weights = np.zeros(len(EXPR_NAMES))
    weights[present] = 1.0 / counts[present]
    weights /= weights[present].mean()
    return weights.astype(np.float32)


def au_pos_weights(table: pd.DataFrame, max_weight: float = 50.0) -> np.ndarray:
    """Per-AU ``negatives / positives``, for ``BCEWithLogitsLoss(pos_weight=...)``.

    Counted over frames with AU labels and clipped to ``[1 / max_weight, max_weight]``: an AU
    never present gets ``max_weight``, an AU always present ``1 / max_weight`` (a weight of 0
    would silence its positives). float32 (12,). No AU label at all raises ``ValueError``.
    """
    au = _labelled(table, "has_au")[list(AU_NAMES)].to_numpy() == 1
    if not len(au):
        raise ValueError("no frame has AU labels: positive weights are undefined")
    positives = au.sum(axis=0).astype(np.float64)
    negatives = len(au) - positives
    with np.errstate(divide="ignore"):
        ratio = np.where(positives > 0, negatives / np.maximum(positives, 1), np.inf)
    return np.clip(ratio, 1.0 / max_weight, max_weight).astype(np.float32)


def au_cooccurrence(table: pd.DataFrame) -> pd.DataFrame:
    """P(AU_j present | AU_i present) over frames with AU labels: row i, column j (12 x 12).

    The diagonal is 1; the row of an AU that is never present is NaN (nothing to condition
    on). This is the statistic behind the AU relation graphs of the source papers.
    """
    au = (_labelled(table, "has_au")[list(AU_NAMES)].to_numpy() == 1).astype(np.float64)
    both = au.T @ au
    with np.errstate(divide="ignore", invalid="ignore"):
        conditional = both / np.diag(both)[:, None]
    conditional[np.diag(both) == 0] = np.nan
    return pd.DataFrame(conditional, index=pd.Index(AU_NAMES, name="given"),
                        columns=pd.Index(AU_NAMES, name="present"))


__all__ = ["au_cooccurrence", "au_pos_weights", "expr_class_weights", "label_counts"]
