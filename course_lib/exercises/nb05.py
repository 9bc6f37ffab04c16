"""Checkers for ``05_progressive_training``: the learning-rate schedule, seed 001's fusion, DDP arithmetic."""

from __future__ import annotations

import math

import numpy as np

from . import Mismatch, call_answer, exercise, private_torch_rng


@exercise("05.lr_factor", "Linear warm-up then cosine decay of the learning rate")
def check_lr_factor(fn) -> str:
    from ..train import warmup_cosine  # when checked: `import course_lib` stays light

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


@exercise("05.fusion_correction", "Seed 001's stage-2 fusion in PyTorch: fuse, then correct each task's output")
def check_fusion_correction(fn) -> str:
    # lazy: when checked: `import course_lib` stays light
    import torch

    from ..models import MTLConfig, MultiTaskModel  # when checked: `import course_lib` stays light
    from ..progressive import TASKS, FusionModel  # when checked: `import course_lib` stays light

    with private_torch_rng():
        dim = 8
        model = FusionModel({t: MultiTaskModel(MTLConfig(token_dim=6, dim=dim, cross_attention=False, gcn=False))
                             for t in TASKS}).eval()
        with torch.no_grad():
            for head in model.correct.values():  # stage 2 starts at zero; random weights make every term count
                torch.nn.init.normal_(head.weight, std=0.3)
                torch.nn.init.normal_(head.bias, std=0.3)
            tokens = torch.randn(4, 5, 6)
            own = {t: m(tokens, return_features=True) for t, m in model.task_models.items()}
            feats = {t: own[t]["features"][t] for t in TASKS}
            stage1 = {t: own[t][t] for t in TASKS}
            want = model(tokens)
            got = call_answer(fn, model, {t: f.clone() for t, f in feats.items()}, {t: o.clone() for t, o in stage1.items()})
        if not isinstance(got, dict) or set(got) != set(TASKS):
            raise Mismatch("return a dict with the corrected outputs of the three tasks: {'au', 'expr', 'va'}")
        got = {t: torch.as_tensor(v, dtype=torch.float32) for t, v in got.items()}
        for t in TASKS:
            if got[t].shape != want[t].shape:
                raise Mismatch(f"'{t}' should keep the stage-1 shape {tuple(want[t].shape)}; got {tuple(got[t].shape)}")
        if all(torch.allclose(got[t], want[t], atol=1e-5) for t in TASKS):
            return "Right: one fused vector for all tasks, and each task corrects its own stage-1 output with it."
        with torch.no_grad():
            fused = model.fuse(feats["au"] + feats["expr"] + feats["va"])
            delta = {t: model.correct[t](torch.cat([feats[t], fused], -1)) for t in TASKS}
        if torch.allclose(got["va"], stage1["va"] + delta["va"], atol=1e-5):
            raise Mismatch("VA lives in [-1, 1]: add the correction before the tanh, tanh(atanh(va) + delta), "
                           "clamping va to +-0.999 first.")
        if all(torch.allclose(got[t], delta[t], atol=1e-5) for t in ("au", "expr")):
            raise Mismatch("the correction is added to the stage-1 output (a residual), not returned on its own.")
        raise Mismatch("expected fused = model.fuse(sum of the three features); delta_t = model.correct[t]([f_t ; fused]); "
                       "AU and EXPR: stage1 + delta; VA: tanh(atanh(stage1) + delta).")
