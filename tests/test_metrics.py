"""course_lib.metrics against independent references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from course_lib.metrics import always_positive_f1, ccc


def _ccc_from_pearson(x, y):
    """CCC = 2 r s_x s_y / (s_x^2 + s_y^2 + (mean difference)^2), computed another way."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    r = np.corrcoef(x, y)[0, 1]
    sx, sy = x.std(), y.std()
    return 2 * r * sx * sy / (sx**2 + sy**2 + (x.mean() - y.mean()) ** 2)


@pytest.mark.parametrize("seed", range(5))
def test_ccc_matches_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, 500)
    y = 0.6 * x + rng.normal(0.1, 0.3, 500)
    assert ccc(x, y) == pytest.approx(_ccc_from_pearson(x, y), abs=1e-12)
    assert ccc(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(ccc(x, y), abs=1e-6)


def test_ccc_punishes_shift_and_scale_unlike_pearson():
    x = np.linspace(-1, 1, 101)
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, -x) == pytest.approx(-1.0)
    assert ccc(x, x + 0.5) < 0.8 and np.corrcoef(x, x + 0.5)[0, 1] == pytest.approx(1.0)
    assert ccc(x, x / 3) == pytest.approx(2 * (1 / 3) * x.var() / (x.var() + x.var() / 9))
    assert ccc(x, np.zeros_like(x)) == 0.0
    assert ccc(x, x[::-1] * 0 + 0.3) == 0.0
    assert ccc(np.ones(4), np.ones(4)) == 1.0


def test_ccc_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        ccc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        ccc([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        ccc([], [])


@pytest.mark.parametrize("positives, n", [(1, 50), (10, 100), (683, 1000), (100, 100)])
def test_always_positive_f1_matches_sklearn(positives, n):
    truth = np.arange(n) < positives
    assert always_positive_f1(positives / n) == pytest.approx(f1_score(truth, np.ones(n, bool)))
    with pytest.raises(ValueError):
        always_positive_f1(1.5)
