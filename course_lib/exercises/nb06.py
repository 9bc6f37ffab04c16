"""Checkers for ``06_temporal_modeling``: stitching overlapping windows, a TCN's receptive field, and a
causal dilated convolution (in PyTorch)."""

from __future__ import annotations

import numpy as np

from . import Mismatch, call_answer, exercise, private_torch_rng


def _random_windows(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Overlapping, padded windows over a few videos, some rows never valid; rows (W, T), valid, values, n_rows."""
    window, stride = int(rng.integers(3, 6)), int(rng.integers(1, 3))
    rows, valid, start = [], [], 0
    for n in rng.integers(2, 12, size=4):
        for s in range(0, n, stride):
            position = s + np.arange(window)
            rows.append(start + np.minimum(position, n - 1))
            valid.append(position < n)
            if s + window >= n:
                break
        start += n
    rows, valid = np.array(rows), np.array(valid)
    n_rows = start + 2  # two rows that no window holds
    values = rng.normal(size=rows.shape)
    return rows, valid, values, n_rows


def _stitch(rows, valid, values, n_rows, use_valid=True, mean=True, nan=True):
    sums, counts = np.zeros(n_rows), np.zeros(n_rows)
    keep = valid if use_valid else np.ones_like(valid)
    np.add.at(sums, rows[keep], values[keep])
    np.add.at(counts, rows[keep], 1)
    out = sums / np.maximum(counts, 1) if mean else sums
    if nan:
        out[counts == 0] = np.nan
    return out


@exercise("06.stitch", "Average overlapping window predictions back to one per frame")
def check_stitch(fn) -> str:
    rng = np.random.default_rng()
    for _ in range(3):
        rows, valid, values, n_rows = _random_windows(rng)
        got = call_answer(fn, rows.copy(), valid.copy(), values.copy(), n_rows)
        got = np.asarray(got, dtype=float).reshape(-1) if got is not None else None
        want = _stitch(rows, valid, values, n_rows)
        if got is None or got.shape != want.shape:
            raise Mismatch(f"return one value per table row, shape ({n_rows},); got "
                           f"{None if got is None else got.shape}")
        if np.allclose(got, want, equal_nan=True):
            continue
        seen = ~np.isnan(want)
        if np.allclose(got[seen], want[seen]):
            raise Mismatch("the rows no window holds should be NaN (there is no prediction for them), not a number.")
        if np.allclose(got, _stitch(rows, valid, values, n_rows, use_valid=False), equal_nan=True):
            raise Mismatch("the padding positions (valid False) were counted: they repeat the last frame and "
                           "must not vote.")
        if np.allclose(got[seen], _stitch(rows, valid, values, n_rows, mean=False)[seen]):
            raise Mismatch("those are sums: divide by how many valid windows hold each row.")
        last = np.full(n_rows, np.nan)
        last[rows[valid]] = values[valid]
        if np.allclose(got[seen], last[seen]):
            raise Mismatch("each row kept only one window's value (out[rows] = values overwrites): average over "
                           "all windows that hold it, e.g. with np.add.at or np.bincount.")
        raise Mismatch("entry r should be the mean of values[w, t] over all (w, t) with rows[w, t] == r and "
                       "valid[w, t], NaN where there is none.")
    return "Right: every frame gets the mean of its overlapping windows' predictions, padding left out."


def _rf(kernel_size: int, layers: int) -> int:
    return 1 + (kernel_size - 1) * (2 ** layers - 1)


@exercise("06.receptive_field", "Receptive field of a dilated TCN (dilations 1, 2, 4, ...)")
def check_receptive_field(fn) -> str:
    cases = [(3, 1), (3, 2), (3, 4), (5, 3), (7, 2), (2, 5)]
    for k, layers in cases:
        got = call_answer(fn, k, layers)
        try:
            got = int(got)
        except (TypeError, ValueError):
            raise Mismatch(f"return a whole number of frames; got {got!r}") from None
        want = _rf(k, layers)
        if got == want:
            continue
        if got == 1 + (k - 1) * layers:
            raise Mismatch(f"for kernel {k} and {layers} layers you ignored the dilation: block i has dilation "
                           "2**i, so it reaches (k - 1) * 2**i frames further.")
        if got == 1 + 2 * (k - 1) * (2 ** layers - 1):
            raise Mismatch("the course's TCN block has one dilated convolution, not two (Bai et al.'s blocks have two).")
        if got == (k - 1) * (2 ** layers - 1):
            raise Mismatch("almost: count the frame itself too (+1).")
        if got == _rf(k, layers + 1) or got == _rf(k, layers - 1):
            raise Mismatch(f"off by one layer for kernel {k} and {layers} layers: the dilations are 1, 2, ..., "
                           f"2**{layers - 1}.")
        raise Mismatch(f"kernel {k}, {layers} layers: {got} frames is not it. Add up how far each block reaches: "
                       "a convolution of kernel k and dilation d widens the view by (k - 1) * d frames.")
    return "Right: 1 + (k - 1)(2^L - 1) frames, doubling with each layer; half of it on each side of the frame."


@exercise("06.causal_conv", "A causal dilated convolution in PyTorch")
def check_causal_conv(fn) -> str:
    # lazy: when checked: `import course_lib` stays light
    import torch
    import torch.nn.functional as F

    from ..models.temporal import TCNBlock  # when checked: `import course_lib` stays light

    with private_torch_rng():
        for k, d in ((3, 2), (2, 4), (5, 1)):
            block = TCNBlock(6, kernel_size=k, dilation=d, dropout=0.0, causal=True)
            h = torch.randn(2, 6, 20)
            w, b = block.conv.weight.detach(), block.conv.bias.detach()
            with torch.no_grad():
                want = block.convolve(h)
                got = call_answer(fn, h.clone(), w.clone(), b.clone(), d)
            got = torch.as_tensor(got, dtype=torch.float32)
            if got.shape != want.shape:
                raise Mismatch(f"keep every time step: the output should have shape (B, C, T) = {tuple(want.shape)}, got "
                               f"{tuple(got.shape)}. Pad dilation * (k - 1) zeros, all on the left.")
            if torch.allclose(got, want, atol=1e-5):
                continue
            pad = d * (k - 1)
            if torch.allclose(got, F.conv1d(F.pad(h, (0, pad)), w, b, dilation=d), atol=1e-5):
                raise Mismatch("you padded on the right: frame t then reads frames t .. t + (k - 1) d, the future.")
            if pad % 2 == 0 and torch.allclose(got, F.conv1d(h, w, b, dilation=d, padding=pad // 2), atol=1e-5):
                raise Mismatch("that is the centred convolution: put all dilation * (k - 1) zeros on the left.")
            if torch.allclose(got, F.conv1d(F.pad(h, (k - 1, 0)), w, b), atol=1e-5):
                raise Mismatch("the dilation is missing: taps sit dilation frames apart (pass dilation= to conv1d).")
            raise Mismatch("expected conv1d(pad(h, (dilation * (k - 1), 0)), weight, bias, dilation=dilation).")
        return "Right: frame t now reads t, t - d, ..., t - (k - 1) d, and a live system can run it frame by frame."
