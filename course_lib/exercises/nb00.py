"""Checkers for ``00_welcome_and_setup``: the CCC, and the F1 of a model that learned nothing."""

from __future__ import annotations

import numpy as np

from ..metrics import always_positive_f1, ccc
from . import Mismatch, call_answer, exercise


def _ccc_cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray]]:
    n = int(rng.integers(50, 200))
    x = rng.uniform(-1, 1, n)
    noise = rng.normal(0, 0.3, n)
    return [
        ("noisy predictions", x, np.clip(0.7 * x + noise, -1, 1)),
        ("predictions shifted by a constant", x, x + rng.uniform(0.2, 0.6)),
        ("predictions scaled by a factor", x, x * rng.uniform(0.3, 0.6)),
        ("perfect predictions", x, x.copy()),
        ("anti-correlated predictions", x, -x + rng.normal(0, 0.1, n)),
    ]


def _ccc_sample_moments(x: np.ndarray, y: np.ndarray) -> float:
    """The CCC computed with sample (n - 1) moments: a common slip."""
    sxy = np.cov(x, y, ddof=1)[0, 1]
    return float(2 * sxy / (x.var(ddof=1) + y.var(ddof=1) + (x.mean() - y.mean()) ** 2))


@exercise("00.ccc", "Implement the concordance correlation coefficient")
def check_ccc(fn) -> str:
    rng = np.random.default_rng()
    for name, x, y in _ccc_cases(rng):
        got = call_answer(fn, x.copy(), y.copy())
        want = ccc(x, y)
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise Mismatch(f"return one number (a float); got {type(got).__name__}") from None
        if abs(got - want) <= 1e-6:
            continue
        pearson = float(np.corrcoef(x, y)[0, 1])
        hint = f"on {name} you returned {got:.4f}, which is not the CCC."
        if abs(got - pearson) <= 1e-6:
            hint += (" That is Pearson's r: the CCC also punishes a difference of means and of "
                     "spreads, (mean_x - mean_y)^2 belongs in the denominator.")
        elif abs(got - _ccc_sample_moments(x, y)) <= 1e-6:
            hint += " Use population moments (divide by n, numpy's default ddof=0), not n - 1."
        else:
            hint += " Check the formula: 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)."
        raise Mismatch(hint)
    return "Your CCC matches on noisy, shifted, scaled, perfect and anti-correlated predictions."


@exercise("00.always_on_f1", "F1 of always predicting an AU as present")
def check_always_on_f1(fn) -> str:
    rng = np.random.default_rng()
    rates = [0.02, 0.1, 0.5, 1.0, float(rng.uniform(0.05, 0.95))]
    for p in rates:
        got = call_answer(fn, p)
        want = always_positive_f1(p)
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise Mismatch(f"return one number (a float); got {type(got).__name__}") from None
        if abs(got - want) <= 1e-9:
            continue
        hint = f"for a base rate of {p:.3f} you returned {got:.4f}."
        if abs(got - p) <= 1e-9:
            hint += " That is the precision only; recall is 1 when you always say yes. F1 = 2PR/(P+R)."
        else:
            hint += " Work out precision and recall of 'always present' first, then F1 = 2PR/(P+R)."
        raise Mismatch(hint)
    return "Right: F1 = 2p / (1 + p), so a rare AU (p = 0.02) gives a trivial F1 of only 0.04."
