"""Checkers for ``01_data``: base rates with missing labels, co-occurrence, sequence windows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..labels import AU_NAMES, MISSING_AU
from . import Mismatch, call_answer, exercise


def _au_table(rng: np.random.Generator) -> pd.DataFrame:
    n = int(rng.integers(200, 400))
    rates = rng.uniform(0.05, 0.7, 12)
    au = (rng.random((n, 12)) < rates).astype(np.int64)
    missing = rng.random(n) < rng.uniform(0.2, 0.4)
    au[missing] = MISSING_AU
    table = pd.DataFrame(au, columns=list(AU_NAMES))
    table.insert(0, "image", [f"v/{i + 1:05d}.jpg" for i in range(n)])
    table["has_au"] = ~missing
    return table


@exercise("01.au_base_rates", "AU base rates over the labelled frames only")
def check_au_base_rates(fn) -> str:
    rng = np.random.default_rng()
    for _ in range(3):
        table = _au_table(rng)
        got = np.asarray(call_answer(fn, table.copy()), dtype=float).reshape(-1)
        if got.shape != (12,):
            raise Mismatch(f"return 12 numbers, one per AU in ABAW order; got shape {got.shape}")
        labelled = table[table.has_au][list(AU_NAMES)].to_numpy()
        want = labelled.mean(axis=0)
        if np.allclose(got, want, atol=1e-9):
            continue
        everything = table[list(AU_NAMES)].to_numpy()
        if np.allclose(got, (everything == 1).mean(axis=0)) or np.allclose(got, everything.mean(axis=0)):
            raise Mismatch("your rates include the frames whose AU label is missing (-1): keep only rows with has_au.")
        raise Mismatch(f"AU1 should be {want[0]:.3f}, you gave {got[0]:.3f}: the share of labelled frames where the AU is 1.")
    return "Right: missing labels are left out, exactly as the metric does."


@exercise("01.cooccurrence", "Conditional AU co-occurrence P(AU_j present | AU_i present)")
def check_cooccurrence(fn) -> str:
    rng = np.random.default_rng()
    n = 500
    base = rng.random((n, 1))
    au = (rng.random((n, 12)) < 0.15 + 0.6 * base * rng.uniform(0, 1, 12)).astype(np.int64)
    au[:, 3] = np.maximum(au[:, 3], au[:, 6])  # AU6 whenever AU12, not the other way round
    got = np.asarray(call_answer(fn, au.copy()), dtype=float)
    if got.shape != (12, 12):
        raise Mismatch(f"return a 12 x 12 matrix; got shape {got.shape}")
    joint = (au.T @ au) / n
    present = au.sum(axis=0)
    want = (au.T @ au) / present[:, None]
    if np.allclose(got, want, atol=1e-9):
        return "Right: row i, column j is P(j | i); note P(AU6 | AU12) = 1 while P(AU12 | AU6) is smaller."
    if np.allclose(got, want.T, atol=1e-9):
        raise Mismatch("your matrix is transposed: row i should hold P(AU_j | AU_i), dividing by AU_i's count.")
    if np.allclose(got, joint, atol=1e-9):
        raise Mismatch("that is the joint probability P(i and j); divide by how often AU_i is present instead.")
    raise Mismatch(f"entry [AU12, AU6] should be {want[6, 3]:.3f}, you gave {got[6, 3]:.3f}.")


@exercise("01.count_windows", "How many windows fit without crossing videos")
def check_count_windows(fn) -> str:
    rng = np.random.default_rng()
    cases = [([10, 3, 7], 5, 1), ([60, 60], 30, 15), ([4], 5, 1)]
    cases += [(list(rng.integers(1, 50, rng.integers(2, 6))), int(rng.integers(2, 12)), int(rng.integers(1, 5)))
              for _ in range(4)]
    for lengths, window, stride in cases:
        lengths = [int(x) for x in lengths]
        got = call_answer(fn, list(lengths), window, stride)
        want = sum(max(0, (n - window) // stride + 1) for n in lengths)
        if got == want:
            continue
        crossing = max(0, (sum(lengths) - window) // stride + 1)
        hint = f"for videos of {lengths} frames, window {window}, stride {stride}: expected {want}, got {got}."
        if got == crossing:
            hint += " You let windows run from one video into the next; count per video."
        elif got == sum(max(0, (n - window) // stride) for n in lengths):
            hint += " Off by one: a video of exactly `window` frames holds one window."
        raise Mismatch(hint)
    return "Right: windows are counted per video, so short videos contribute none."
