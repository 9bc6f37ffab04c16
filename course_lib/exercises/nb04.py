"""Checkers for ``04_au_graph``: normalising an adjacency, and one graph convolution."""

from __future__ import annotations

import numpy as np

from . import Mismatch, call_answer, exercise


def _reference_norm(a: np.ndarray) -> np.ndarray:
    a_hat = a + np.eye(len(a))
    d = a_hat.sum(axis=1)
    return a_hat / np.sqrt(np.outer(d, d))


@exercise("04.normalize_adjacency", "Symmetric normalisation with self-loops, D^-1/2 (A + I) D^-1/2")
def check_normalize_adjacency(fn) -> str:
    rng = np.random.default_rng()
    for n in (12, 5):
        a = (rng.random((n, n)) < 0.3).astype(float)
        a = np.triu(a, 1)
        a = a + a.T
        got = np.asarray(call_answer(fn, a.copy()), dtype=float)
        want = _reference_norm(a)
        if got.shape == want.shape and np.allclose(got, want):
            continue
        d = a.sum(axis=1)
        if np.allclose(got, a / np.sqrt(np.outer(np.maximum(d, 1e-12), np.maximum(d, 1e-12)))):
            raise Mismatch("add the self-loops (A + I) first, so each node keeps its own features.")
        if np.allclose(got, (a + np.eye(n)) / (a + np.eye(n)).sum(axis=1, keepdims=True)):
            raise Mismatch("that is the row normalisation D^-1 (A + I); divide by sqrt(d_i d_j) instead.")
        raise Mismatch("entry (i, j) should be (A + I)_ij / sqrt(d_i d_j) with d the degrees of A + I.")
    return "Right: the Kipf & Welling normalisation; the matrix stays symmetric and its eigenvalues stay in [-1, 1]."


@exercise("04.gcn_layer", "One graph convolution: H' = ReLU(A_hat H W)")
def check_gcn_layer(fn) -> str:
    rng = np.random.default_rng()
    n, d_in, d_out = 12, 6, 4
    a_hat = _reference_norm(np.triu((rng.random((n, n)) < 0.3).astype(float), 1) + 0)
    a_hat = (a_hat + a_hat.T) / 2
    h = rng.normal(size=(n, d_in))
    w = rng.normal(size=(d_in, d_out))
    got = np.asarray(call_answer(fn, a_hat.copy(), h.copy(), w.copy()), dtype=float)
    want = np.maximum(a_hat @ h @ w, 0)
    if got.shape != want.shape:
        raise Mismatch(f"return the new node features, shape (nodes, out) = {want.shape}; got {got.shape}")
    if np.allclose(got, want):
        return "Right: each AU node now mixes its neighbours' features, weighted by the graph."
    if np.allclose(got, a_hat @ h @ w):
        raise Mismatch("almost: apply the ReLU.")
    if np.allclose(got, np.maximum(h @ w, 0)):
        raise Mismatch("the graph is missing: multiply by A_hat to mix each node with its neighbours.")
    raise Mismatch("expected ReLU(A_hat @ H @ W).")
