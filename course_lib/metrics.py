"""Challenge metrics: the concordance correlation coefficient (CCC) and friends.

Taught in ``00_welcome_and_setup`` (what P_MTL adds up) and, in full, in
``02``-``08``. The formulas are those of ``ABAW_FACTS.md``: population moments, float64.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
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
