"""Checkers for ``05_progressive_training``: the learning-rate schedule, seed 001's fusion, DDP arithmetic."""

from __future__ import annotations

import math

import numpy as np

from . import Mismatch, call_answer, exercise


@exercise("05.lr_factor", "Linear warm-up then cosine decay of the learning rate")
def check_lr_factor(fn) -> str:
    from ..train import warmup_cosine

    for total, warm in ((1000, 0.1), (50, 0.3), (10, 0.0)):
        want = warmup_cosine(total, warm)
        for step in sorted({0, 1, max(1, round(total * warm)) - 1, round(total * warm), total // 2, total - 1, total}):
            got = float(call_answer(fn, step, total, warm))
            if math.isclose(got, want(step), abs_tol=1e-6):
                continue
            w = max(1, round(total * warm))
            if step < w and math.isclose(got, step / w, abs_tol=1e-6):
                raise Mismatch(f"at step {step} the warm-up gives {got:.4f}: start at 1/warm-up, (step + 1) / warm-up, "
                               "so the very first step already learns.")
            if step >= w and math.isclose(got, 0.5 * (1 + math.cos(math.pi * step / total)), abs_tol=1e-6):
                raise Mismatch("the cosine should start where the warm-up ends: use (step - warm-up) / (total - warm-up).")
            raise Mismatch(f"step {step} of {total} with warm-up {warm}: expected {want(step):.4f}, got {got:.4f}.")
    return "Right: that is course_lib.train.warmup_cosine, the schedule fit() uses."


@exercise("05.fuse", "Seed 001's feature fusion: sum, then Linear-ReLU-Linear")
def check_fuse(fn) -> str:
    rng = np.random.default_rng()
    b, d = 5, 6
    f = [rng.normal(size=(b, d)) for _ in range(3)]
    w1, w2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    b1, b2 = rng.normal(size=d), rng.normal(size=d)
    got = np.asarray(call_answer(fn, *[x.copy() for x in f], w1.copy(), b1.copy(), w2.copy(), b2.copy()), dtype=float)
    s = f[0] + f[1] + f[2]
    want = np.maximum(s @ w1 + b1, 0) @ w2 + b2
    if got.shape != want.shape:
        raise Mismatch(f"return one fused vector per frame, shape {want.shape}; got {got.shape}")
    if np.allclose(got, want):
        return "Right: the three task features are summed, then fused by Linear-ReLU-(Dropout)-Linear."
    if np.allclose(got, (s @ w1 + b1) @ w2 + b2):
        raise Mismatch("the ReLU between the two linear layers is missing.")
    if np.allclose(got, np.maximum((s / 3) @ w1 + b1, 0) @ w2 + b2):
        raise Mismatch("seed 001 sums the task features; you averaged them.")
    if np.allclose(got, np.maximum(np.concatenate(f, 1)[:, :d] @ w1 + b1, 0) @ w2 + b2):
        raise Mismatch("sum the three features, do not concatenate them.")
    raise Mismatch("expected relu((f_au + f_expr + f_va) @ w1 + b1) @ w2 + b2.")


@exercise("05.ddp_epoch", "Steps per epoch and effective batch under DistributedDataParallel")
def check_ddp_epoch(fn) -> str:
    for frames, gpus, batch in ((12_000, 4, 32), (1000, 3, 16), (50, 2, 8)):
        got = call_answer(fn, frames, gpus, batch)
        try:
            steps, effective = (int(x) for x in got)
        except (TypeError, ValueError):
            raise Mismatch(f"return a pair (steps, batch); got {got!r}") from None
        share = math.ceil(frames / gpus)  # DistributedSampler pads to an equal share per GPU
        want = (share // batch, batch * gpus)
        if (steps, effective) == want:
            continue
        if steps == frames // batch:
            raise Mismatch("each GPU sees only its share of the epoch (frames / GPUs), so it takes fewer steps.")
        if effective == batch:
            raise Mismatch("the gradients are averaged over all GPUs' batches: the effective batch is per-GPU x GPUs.")
        raise Mismatch(f"{frames} frames, {gpus} GPUs, batch {batch}: expected {want}, got {(steps, effective)}.")
    return "Right: each GPU takes ceil(frames / GPUs) // batch steps, and one step averages GPUs x batch frames."
