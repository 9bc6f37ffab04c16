"""Checkers for ``03_cross_attention``: attention from scratch, attention inside a region, and one
task-adaptive block assembled in PyTorch from its parts."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import Mismatch, call_answer, exercise, private_torch_rng


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


def _block_variants(block, q: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Typical wrong orders of one task-adaptive block, from the block's own parts."""
    sa = lambda x: block.self_attn(x)[0]  # noqa: E731
    ca = lambda x, y: block.cross_attn(x, y)[0]  # noqa: E731
    no_res = block.ffn(block.norm_ffn(ca(block.norm_cross(sa(block.norm_self(q))), block.norm_tokens(t))))
    post = block.norm_self(q + sa(q))
    post = block.norm_cross(post + ca(post, t))
    post = block.norm_ffn(post + block.ffn(post))
    raw_tokens = q + sa(block.norm_self(q))
    raw_tokens = raw_tokens + ca(block.norm_cross(raw_tokens), t)
    raw_tokens = raw_tokens + block.ffn(block.norm_ffn(raw_tokens))
    swapped = q + ca(block.norm_cross(q), block.norm_tokens(t))
    swapped = swapped + sa(block.norm_self(swapped))
    swapped = swapped + block.ffn(block.norm_ffn(swapped))
    return {"no residuals": no_res, "post-norm": post, "raw tokens": raw_tokens, "swapped": swapped}


@exercise("03.task_adaptive_block", "One task-adaptive block in PyTorch, from its parts")
def check_task_adaptive_block(fn) -> str:
    from ..models import TaskAdaptiveBlock  # when checked: `import course_lib` stays light

    with private_torch_rng():
        block = TaskAdaptiveBlock(16, heads=2).eval()
        with torch.no_grad():
            for norm in (block.norm_self, block.norm_cross, block.norm_tokens, block.norm_ffn):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.normal_(0, 0.3)
            q, t = torch.randn(3, 22, 16), torch.randn(3, 9, 16)
            want = block(q, t)[0]
            got = call_answer(fn, block, q.clone(), t.clone())
            if isinstance(got, tuple):
                got = got[0]
            got = torch.as_tensor(got, dtype=torch.float32)
            if got.shape != want.shape:
                raise Mismatch(f"return the updated queries, shape (B, 22, dim) = {tuple(want.shape)}; got {tuple(got.shape)}")
            if torch.allclose(got, want, atol=1e-5):
                return "Right: self-attention, cross-attention, FFN, each pre-normed with a residual around it."
            hints = {"no residuals": "add each step's output to the queries (residual connections): q = q + step(norm(q)).",
                     "post-norm": "normalise *before* each step (pre-norm, as ViTs do), not after the residual sum.",
                     "raw tokens": "the tokens get their own LayerNorm (block.norm_tokens) before the cross-attention.",
                     "swapped": "the queries talk to each other first (self-attention), then read the tokens."}
            for name, wrong in _block_variants(block, q, t).items():
                if torch.allclose(got, wrong, atol=1e-5):
                    raise Mismatch(hints[name])
        raise Mismatch("expected q + SA(LN(q)), then q + CA(LN(q), LN(tokens)), then q + FFN(LN(q)).")
