"""A correct answer and typical wrong answers for every exercise checker (used by test_exercises)."""

from __future__ import annotations

import numpy as np


def _ccc_right(x, y):
    mx, my = x.mean(), y.mean()
    return 2 * ((x - mx) * (y - my)).mean() / (x.var() + y.var() + (mx - my) ** 2)


def _ccc_pearson(x, y):
    return np.corrcoef(x, y)[0, 1]


def _ccc_sample_moments(x, y):
    return 2 * np.cov(x, y)[0, 1] / (x.var(ddof=1) + y.var(ddof=1) + (x.mean() - y.mean()) ** 2)


def _base_rates_right(table):
    from course_lib.labels import AU_NAMES

    return table[table.has_au][list(AU_NAMES)].mean().to_numpy()


def _base_rates_with_missing(table):
    from course_lib.labels import AU_NAMES

    return (table[list(AU_NAMES)] == 1).mean().to_numpy()


def _cooc_right(au):
    return (au.T @ au) / au.sum(axis=0)[:, None]


def _windows_right(lengths, window, stride):
    return sum(max(0, (n - window) // stride + 1) for n in lengths)


def _attention_right(q, k, v):
    import torch

    w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return w @ v, w


def _attention_unscaled(q, k, v):
    import torch

    w = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
    return w @ v, w


def _attention_wrong_axis(q, k, v):
    import torch

    w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-2)
    return w @ v, w


def _norm_right(a):
    a_hat = a + np.eye(len(a))
    d = a_hat.sum(axis=1)
    return a_hat / np.sqrt(np.outer(d, d))


def _norm_rows(a):
    a_hat = a + np.eye(len(a))
    return a_hat / a_hat.sum(axis=1, keepdims=True)


ANSWERS = {
    "00.ccc": (_ccc_right, [_ccc_pearson, _ccc_sample_moments, lambda x, y: 1.0]),
    "00.always_on_f1": (lambda p: 2 * p / (1 + p), [lambda p: p, lambda p: 1.0, lambda p: p / 2]),
    "01.au_base_rates": (_base_rates_right, [_base_rates_with_missing, lambda t: np.full(12, 0.5)]),
    "01.cooccurrence": (_cooc_right, [lambda au: _cooc_right(au).T, lambda au: (au.T @ au) / len(au)]),
    "02.count_patch_tokens": (lambda size, patch: (size // patch) ** 2,
                              [lambda size, patch: (size // patch) ** 2 + 1, lambda size, patch: size // patch]),
    "02.tokens_to_map": (lambda t, h, w: t.T.reshape(t.shape[1], h, w),
                         [lambda t, h, w: t.reshape(t.shape[1], h, w), lambda t, h, w: t.T.reshape(-1, w, h).transpose(0, 2, 1)]),
    "03.attention": (_attention_right, [_attention_unscaled, _attention_wrong_axis]),
    "03.region_ratio": (lambda w, m: w[m].sum() / m.mean(), [lambda w, m: w[m].sum(), lambda w, m: w[m].mean()]),
    "04.normalize_adjacency": (_norm_right, [_norm_rows, lambda a: a]),
    "04.gcn_layer": (lambda a, h, w: np.maximum(a @ h @ w, 0), [lambda a, h, w: a @ h @ w, lambda a, h, w: np.maximum(h @ w, 0)]),
    "01.count_windows": (_windows_right, [
        lambda lengths, w, s: max(0, (sum(lengths) - w) // s + 1),
        lambda lengths, w, s: sum(max(0, (n - w) // s) for n in lengths),
    ]),
}
