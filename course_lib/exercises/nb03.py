"""Checkers for ``03_cross_attention``: attention from scratch, and attention inside a region."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import Mismatch, call_answer, exercise


@exercise("03.attention", "Scaled dot-product attention from scratch")
def check_attention(fn) -> str:
    g = torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 30)))
    for b, nq, nk, d in ((2, 22, 49, 16), (1, 3, 5, 8)):
        q, k, v = (torch.randn(b, n, d, generator=g) for n in (nq, nk, nk))
        result = call_answer(fn, q.clone(), k.clone(), v.clone())
        if not (isinstance(result, tuple) and len(result) == 2):
            raise Mismatch("return a pair: (output, attention weights)")
        out, weights = (torch.as_tensor(r, dtype=torch.float32) for r in result)
        if weights.shape != (b, nq, nk):
            raise Mismatch(f"the weights should have shape (B, queries, keys) = {(b, nq, nk)}; got {tuple(weights.shape)}")
        if not torch.allclose(weights.sum(-1), torch.ones(b, nq), atol=1e-4):
            raise Mismatch("each query's weights must sum to 1: the softmax runs over the keys (the last axis).")
        want = F.scaled_dot_product_attention(q, k, v)
        if torch.allclose(out, want, atol=1e-5):
            continue
        unscaled = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        if torch.allclose(out, unscaled, atol=1e-5):
            raise Mismatch("close: divide the scores by sqrt(d) before the softmax, or it saturates for large d.")
        raise Mismatch("the output differs from F.scaled_dot_product_attention: out = softmax(QK^T / sqrt(d)) V.")
    return "Right: identical to torch.nn.functional.scaled_dot_product_attention, and you have the weights too."


@exercise("03.region_ratio", "How much more attention falls inside an AU's region than chance?")
def check_region_ratio(fn) -> str:
    rng = np.random.default_rng()
    for _ in range(4):
        n = int(rng.integers(16, 80))
        weights = rng.random(n) ** 3
        weights /= weights.sum()
        mask = rng.random(n) < rng.uniform(0.1, 0.5)
        mask[0] = True
        got = float(call_answer(fn, weights.copy(), mask.copy()))
        want = weights[mask].sum() / mask.mean()
        if abs(got - want) < 1e-9:
            continue
        if abs(got - weights[mask].sum()) < 1e-9:
            raise Mismatch("that is the share inside; divide by the region's share of the grid, so chance gives 1.")
        raise Mismatch(f"expected {want:.4f}, got {got:.4f}: (attention inside) / (fraction of cells inside).")
    uniform = np.full(10, 0.1)
    if abs(float(call_answer(fn, uniform, np.arange(10) < 3)) - 1.0) > 1e-9:
        raise Mismatch("uniform attention should give exactly 1 (chance).")
    return "Right: 1 means chance, 3 means three times more attention inside the region than its size explains."
