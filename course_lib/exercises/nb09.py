"""Checkers for ``09_explanations``: the localisation ratio, Integrated Gradients, rank correlation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import Mismatch, call_answer, exercise


def _ratio(attribution: np.ndarray, region: np.ndarray) -> float:
    positive = np.clip(attribution, 0, None)
    return float(positive[region].sum() / positive.sum() / region.mean())


@exercise("09.localization_ratio", "How much more positive attribution falls inside the AU's region than chance?")
def check_localization_ratio(fn) -> str:
    rng = np.random.default_rng()
    for _ in range(4):
        h, w = (int(v) for v in rng.integers(12, 40, size=2))
        attribution = rng.normal(0.2, 1.0, (h, w))
        region = np.zeros((h, w), dtype=bool)
        top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        region[top:top + h // 3, left:left + w // 3] = True
        attribution[region] += rng.uniform(0.5, 2.0)
        got = float(call_answer(fn, attribution.copy(), region.copy()))
        want = _ratio(attribution, region)
        if abs(got - want) < 1e-6 * max(1.0, abs(want)):
            continue
        positive = np.clip(attribution, 0, None)
        if abs(got - positive[region].sum() / positive.sum()) < 1e-6:
            raise Mismatch("that is the share inside the region; divide by the region's share of the image, "
                           "so that chance gives 1.")
        if abs(got - attribution[region].sum() / attribution.sum() / region.mean()) < 1e-6:
            raise Mismatch("negative attribution must not count: only evidence *for* the output is localised. "
                           "Keep the positive part before summing.")
        if abs(got - _ratio(np.abs(attribution), region)) < 1e-6:
            raise Mismatch("the magnitude counts negative evidence as if it were positive: keep the positive part "
                           "(set negatives to 0) instead.")
        raise Mismatch(f"expected {want:.4f}, got {got:.4f}: (share of the positive attribution inside) / "
                       "(share of the image inside).")
    region = np.zeros((8, 8), dtype=bool)
    region[:2] = True
    if abs(float(call_answer(fn, np.ones((8, 8)), region)) - 1.0) > 1e-9:
        raise Mismatch("a uniform map should give exactly 1 (chance).")
    return "Right: 1 is chance, 1 / share is a map entirely inside the region, 0 one entirely outside."


def _mlp(generator: torch.Generator, d: int):
    w1, b1 = torch.randn(d, 16, generator=generator), torch.randn(16, generator=generator)
    w2 = torch.randn(16, generator=generator)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ w1 + b1) @ w2

    return f


def _reference_ig(f, x: torch.Tensor, baseline: torch.Tensor, steps: int = 4000) -> torch.Tensor:
    alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    path = (baseline + alphas[:, None] * (x - baseline)).requires_grad_()
    (grads,) = torch.autograd.grad(f(path).sum(), path)
    return (x - baseline) * grads.mean(0)


@exercise("09.integrated_gradients", "Integrated Gradients from scratch, and its completeness")
def check_integrated_gradients(fn) -> str:
    g = torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 30)))
    for d in (5, 9):
        f = _mlp(g, d)
        f64 = lambda z, f=f: f(z.float()).double()  # noqa: E731
        x = torch.randn(d, generator=g) * 1.5
        baseline = torch.randn(d, generator=g) * 0.5
        got = call_answer(fn, f, x.clone(), baseline.clone(), 200)
        got = torch.as_tensor(got.detach() if torch.is_tensor(got) else got, dtype=torch.float64)
        if got.shape != x.shape:
            raise Mismatch(f"return one attribution per input feature, shape {tuple(x.shape)}; got {tuple(got.shape)}")
        want = _reference_ig(f64, x.double(), baseline.double())
        with torch.no_grad():
            gap = float(f(x[None])[0] - f(baseline[None])[0])
        scale = float(want.abs().max()) + 1e-6
        if torch.allclose(got, want, atol=0.03 * scale + 1e-4, rtol=0):
            continue
        xr = x.clone().requires_grad_()
        (grad_x,) = torch.autograd.grad(f(xr[None]).sum(), xr)
        if torch.allclose(got, (grad_x * (x - baseline)).double(), atol=1e-4) or \
                torch.allclose(got, (grad_x * x).double(), atol=1e-4):
            raise Mismatch("that uses the gradient at x only: average the gradient over points along the straight "
                           "path from the baseline to x.")
        if abs(float(got.sum()) - gap) > 0.05 * abs(gap) + 1e-3:
            ratio = float(got.sum()) / gap if gap else float("nan")
            hint = " (it is off by a factor of about the number of steps: average, do not sum)" \
                if abs(ratio) > 20 else ""
            raise Mismatch(f"completeness fails: your attributions sum to {float(got.sum()):.4f} but f(x) - "
                           f"f(baseline) = {gap:.4f}{hint}. Did you multiply by (x - baseline)?")
        raise Mismatch("the attributions sum correctly but differ from Integrated Gradients feature by feature: "
                       "check the points of the path, baseline + alpha (x - baseline) for alpha in (0, 1].")
    return "Right: your attributions add up to f(x) - f(baseline), as Integrated Gradients promises."


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    x = pd.Series(np.ravel(a)).rank().to_numpy()
    y = pd.Series(np.ravel(b)).rank().to_numpy()
    return float(np.corrcoef(x, y)[0, 1])


@exercise("09.rank_correlation", "Spearman rank correlation of two attribution maps (the sanity check's measure)")
def check_rank_correlation(fn) -> str:
    rng = np.random.default_rng()
    for _ in range(4):
        a = np.clip(rng.normal(0, 1, (10, 12)), 0, None) ** 2  # a positive-part map: many ties at 0
        b = np.exp(3 * a) + np.clip(rng.normal(0, 1, a.shape), 0, None)
        got = float(call_answer(fn, a.copy(), b.copy()))
        want = _spearman(a, b)
        if abs(got - want) < 1e-6:
            continue
        if abs(got - np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 1e-6:
            raise Mismatch("that is Pearson's correlation of the values: Spearman's correlates their ranks, so a "
                           "monotone but curved relation still gives 1.")
        raise Mismatch(f"expected {want:.4f}, got {got:.4f}. Hints: rank each map's values (1 = smallest), give "
                       "tied values the average of their ranks, then correlate the ranks.")
    a = np.arange(30.0)
    if abs(float(call_answer(fn, a, a ** 3)) - 1.0) > 1e-9:
        raise Mismatch("a monotone relation (b = a^3) should give exactly 1.")
    return "Right: a rank correlation, robust to how the two methods scale their maps."
