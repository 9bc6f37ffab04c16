"""Checkers for ``04_au_graph``: normalising an adjacency, one graph convolution, the AU-assisted
expression head and seed 000's attention between the tasks (the last two in PyTorch)."""

from __future__ import annotations

import numpy as np

from . import Mismatch, call_answer, exercise, private_torch_rng


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


@exercise("04.published_attention", "Seed 000's attention in PyTorch: the AU logits query the expression logits")
def check_published_attention(fn) -> str:
    # lazy: when checked: `import course_lib` stays light
    import torch

    from ..models import AUQueryExprAttention  # when checked: `import course_lib` stays light

    with private_torch_rng(), torch.no_grad():
        module = AUQueryExprAttention(hidden=16)
        for linear in (module.query, module.key, module.score):
            torch.nn.init.normal_(linear.weight)
        au, ex = torch.randn(5, 12), 3 * torch.randn(5, 8)
        want, alpha = module(au, ex)
        got = call_answer(fn, au.clone(), ex.clone(), module.query.weight.clone(), module.key.weight.clone(),
                          module.score.weight.clone())
    got = torch.as_tensor(got, dtype=want.dtype)
    if got.shape != want.shape:
        raise Mismatch(f"return refined expression logits of shape (batch, 8) = {tuple(want.shape)}; got "
                       f"{tuple(got.shape)}. The AU logits are the one query per frame; the 8 expression logits "
                       "are the keys and values.")
    if torch.allclose(got, want, atol=1e-5):
        return "Right: the AU predictions decide how much of each expression logit is kept."
    if torch.allclose(got, alpha, atol=1e-5):
        raise Mismatch("those are the attention weights; 000 returns them times the expression logits.")
    if torch.allclose(got, ex + alpha, atol=1e-5) or torch.allclose(got, ex + alpha * ex, atol=1e-5):
        raise Mismatch("000 has no residual: the output is alpha_j * e_j, not added to the logits.")
    scores = torch.tanh((au @ module.query.weight.T).unsqueeze(1) + ex.unsqueeze(-1) @ module.key.weight.T)
    scores = (scores @ module.score.weight.T).squeeze(-1)
    if torch.allclose(got, scores.softmax(0) * ex, atol=1e-5):
        raise Mismatch("the softmax runs over the batch; take it over the 8 classes of each frame (dim=-1).")
    if torch.allclose(got, scores * ex, atol=1e-5) or torch.allclose(got, torch.sigmoid(scores) * ex, atol=1e-5):
        raise Mismatch("normalise the scores with a softmax over the 8 classes, so the weights sum to 1.")
    raise Mismatch("expected alpha_j * e_j with alpha = softmax_j(w_v tanh(W_q a + W_k e_j)).")


@exercise("04.au_assisted_expr", "AU-assisted expression logits in PyTorch")
def check_au_assisted_expr(fn) -> str:
    # lazy: when checked: `import course_lib` stays light
    import torch

    from ..models import AUAssistedHeads  # when checked: `import course_lib` stays light

    with private_torch_rng():
        dim = 8
        heads = AUAssistedHeads(dim)
        au_nodes, expr, va = torch.randn(4, 12, dim), torch.randn(4, 8, dim), torch.randn(4, 2, dim)
        with torch.no_grad():
            want = heads(au_nodes, expr, va)["expr"]
            got = call_answer(fn, heads, au_nodes.clone(), expr.clone())
        got = torch.as_tensor(got, dtype=torch.float32)
        if got.shape != want.shape:
            raise Mismatch(f"return one logit per expression and frame, shape (B, 8) = {tuple(want.shape)}; got "
                           f"{tuple(got.shape)}. heads.expr is a PerQueryLinear over (B, 8, 2 * dim).")
        if torch.allclose(got, want, atol=1e-5):
            return "Right: every expression query now carries the pooled AU graph into its own linear read-out."

        def per_query(x):
            return (x * heads.expr.weight).sum(-1) + heads.expr.bias

        with torch.no_grad():
            g_max = au_nodes.max(1).values
            if torch.allclose(got, per_query(torch.cat([expr, g_max[:, None].expand(-1, 8, -1)], -1)), atol=1e-5):
                raise Mismatch("pool the 12 AU nodes with their mean, not their maximum.")
            g = au_nodes.mean(1)[:, None].expand(-1, 8, -1)
            if torch.allclose(got, per_query(torch.cat([g, expr], -1)), atol=1e-5):
                raise Mismatch("the order of the concatenation matters: the query's own features first, then the graph.")
        raise Mismatch("expected heads.expr applied to [expr query ; mean of the AU nodes] for each of the 8 queries.")
