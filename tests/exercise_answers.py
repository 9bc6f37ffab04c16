"""A correct answer and typical wrong answers for every exercise checker (used by test_exercises)."""

from __future__ import annotations

import numpy as np


def _ccc_right(x, y):
    mx, my = x.mean(), y.mean()
    return 2 * ((x - mx) * (y - my)).mean() / (x.var() + y.var() + (mx - my) ** 2)


def _ccc_pearson(x, y):
    return np.corrcoef(x, y)[0, 1]


def _ccc_sample_moments(x, y):
    return 2 * np.cov(x, y)[0, 1] / (x.var(ddof=1) + y.var(ddof=1) + (x.mean() - y.mean()) ** 2)


ANSWERS = {
    "00.ccc": (_ccc_right, [_ccc_pearson, _ccc_sample_moments, lambda x, y: 1.0]),
    "00.always_on_f1": (lambda p: 2 * p / (1 + p), [lambda p: p, lambda p: 1.0, lambda p: p / 2]),
}
