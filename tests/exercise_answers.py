"""A correct answer and typical wrong answers for every exercise checker (used by test_exercises)."""

from __future__ import annotations

import numpy as np


def _published_scores(au, ex, w_q, w_k, w_v):
    import torch

    return (torch.tanh((au @ w_q.T).unsqueeze(1) + ex.unsqueeze(-1) @ w_k.T) @ w_v.T).squeeze(-1)


def _published_right(au, ex, w_q, w_k, w_v):
    return _published_scores(au, ex, w_q, w_k, w_v).softmax(-1) * ex


def _published_weights_only(au, ex, w_q, w_k, w_v):
    return _published_scores(au, ex, w_q, w_k, w_v).softmax(-1)


def _published_residual(au, ex, w_q, w_k, w_v):
    return ex + _published_scores(au, ex, w_q, w_k, w_v).softmax(-1) * ex


def _published_batch_softmax(au, ex, w_q, w_k, w_v):
    return _published_scores(au, ex, w_q, w_k, w_v).softmax(0) * ex


def _published_reversed(au, ex, w_q, w_k, w_v):
    """the expression side as the query over the 12 AU logits: the course's direction, not 000's"""
    import torch

    return torch.tanh(au.unsqueeze(-1) @ w_k.T + ex.mean(-1, keepdim=True).unsqueeze(1)) @ w_v.T


def _block_right(block, q, t):
    q = q + block.self_attn(block.norm_self(q))[0]
    q = q + block.cross_attn(block.norm_cross(q), block.norm_tokens(t))[0]
    return q + block.ffn(block.norm_ffn(q))


def _block_no_token_norm(block, q, t):
    q = q + block.self_attn(block.norm_self(q))[0]
    q = q + block.cross_attn(block.norm_cross(q), t)[0]
    return q + block.ffn(block.norm_ffn(q))


def _block_no_residual(block, q, t):
    q = block.self_attn(block.norm_self(q))[0]
    q = block.cross_attn(block.norm_cross(q), block.norm_tokens(t))[0]
    return block.ffn(block.norm_ffn(q))


def _assisted_right(heads, au_nodes, expr):
    import torch

    g = au_nodes.mean(1, keepdim=True).expand(-1, expr.shape[1], -1)
    return (torch.cat([expr, g], -1) * heads.expr.weight).sum(-1) + heads.expr.bias


def _assisted_max(heads, au_nodes, expr):
    import torch

    g = au_nodes.max(1, keepdim=True).values.expand(-1, expr.shape[1], -1)
    return (torch.cat([expr, g], -1) * heads.expr.weight).sum(-1) + heads.expr.bias


def _assisted_no_graph(heads, au_nodes, expr):
    return (expr * heads.expr.weight[:, : expr.shape[-1]]).sum(-1) + heads.expr.bias


def _causal_right(h, w, b, d):
    import torch.nn.functional as F

    return F.conv1d(F.pad(h, (d * (w.shape[-1] - 1), 0)), w, b, dilation=d)


def _causal_right_pad(h, w, b, d):
    import torch.nn.functional as F

    return F.conv1d(F.pad(h, (0, d * (w.shape[-1] - 1))), w, b, dilation=d)


def _causal_no_dilation(h, w, b, d):
    import torch.nn.functional as F

    return F.conv1d(F.pad(h, (w.shape[-1] - 1, 0)), w, b)


def _fusion_parts(model, feats):
    import torch

    fused = model.fuse(feats["au"] + feats["expr"] + feats["va"])
    return {t: model.correct[t](torch.cat([feats[t], fused], -1)) for t in ("au", "expr", "va")}


def _fusion_right(model, feats, stage1):
    import torch

    delta = _fusion_parts(model, feats)
    return {"au": stage1["au"] + delta["au"], "expr": stage1["expr"] + delta["expr"],
            "va": torch.tanh(torch.atanh(stage1["va"].clamp(-0.999, 0.999)) + delta["va"])}


def _fusion_va_outside_tanh(model, feats, stage1):
    delta = _fusion_parts(model, feats)
    return {t: stage1[t] + delta[t] for t in delta}


def _fusion_no_residual(model, feats, stage1):
    import torch

    delta = _fusion_parts(model, feats)
    return {"au": delta["au"], "expr": delta["expr"], "va": torch.tanh(delta["va"])}


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
    "03.task_adaptive_block": (_block_right, [_block_no_token_norm, _block_no_residual]),
    "03.region_ratio": (lambda w, m: w[m].sum() / m.mean(), [lambda w, m: w[m].sum(), lambda w, m: w[m].mean()]),
    "04.normalize_adjacency": (_norm_right, [_norm_rows, lambda a: a]),
    "04.gcn_layer": (lambda a, h, w: np.maximum(a @ h @ w, 0), [lambda a, h, w: a @ h @ w, lambda a, h, w: np.maximum(h @ w, 0)]),
    "04.au_assisted_expr": (_assisted_right, [_assisted_max, _assisted_no_graph]),
    "04.published_attention": (_published_right, [_published_weights_only, _published_residual,
                                                  _published_batch_softmax, _published_reversed]),
    "01.count_windows": (_windows_right, [
        lambda lengths, w, s: max(0, (sum(lengths) - w) // s + 1),
        lambda lengths, w, s: sum(max(0, (n - w) // s) for n in lengths),
    ]),
}


def _stitch_right(rows, valid, values, n_rows):
    sums = np.bincount(rows[valid], weights=values[valid], minlength=n_rows)
    counts = np.bincount(rows[valid], minlength=n_rows)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _stitch_with_padding(rows, valid, values, n_rows):
    return _stitch_right(rows, np.ones_like(valid), values, n_rows)


def _stitch_last_wins(rows, valid, values, n_rows):
    out = np.full(n_rows, np.nan)
    out[rows[valid]] = values[valid]
    return out


def _stitch_zero_uncovered(rows, valid, values, n_rows):
    return np.nan_to_num(_stitch_right(rows, valid, values, n_rows))


ANSWERS.update({
    "06.stitch": (_stitch_right, [_stitch_with_padding, _stitch_last_wins, _stitch_zero_uncovered,
                                  lambda rows, valid, values, n_rows: np.bincount(rows[valid], values[valid], n_rows)]),
    "06.receptive_field": (lambda k, n: 1 + (k - 1) * (2 ** n - 1), [
        lambda k, n: 1 + (k - 1) * n,
        lambda k, n: 1 + 2 * (k - 1) * (2 ** n - 1),
        lambda k, n: k * 2 ** n,
    ]),
    "06.causal_conv": (_causal_right, [_causal_right_pad, _causal_no_dilation]),
})


def _log_mel_right(wave, sr):
    import librosa

    spec = librosa.stft(wave, n_fft=512, hop_length=160, win_length=320, window="hann")
    mel = librosa.filters.mel(sr=sr, n_fft=512, n_mels=64) @ (np.abs(spec) ** 2)
    return 10 * np.log10(np.maximum(mel, 1e-10))


def _log_mel_amplitude_db(wave, sr):
    return 2 * _log_mel_right(wave, sr)


def _log_mel_magnitude(wave, sr):
    import librosa

    spec = librosa.stft(wave, n_fft=512, hop_length=160, win_length=320, window="hann")
    return 10 * np.log10(np.maximum(librosa.filters.mel(sr=sr, n_fft=512, n_mels=64) @ np.abs(spec), 1e-10))


def _log_mel_no_filters(wave, sr):
    import librosa

    spec = librosa.stft(wave, n_fft=512, hop_length=160, win_length=320, window="hann")
    return 10 * np.log10(np.maximum(np.abs(spec) ** 2, 1e-10))


def _log_mel_not_centred(wave, sr):
    import librosa

    spec = librosa.stft(wave, n_fft=512, hop_length=160, win_length=320, window="hann", center=False)
    return 10 * np.log10(np.maximum(librosa.filters.mel(sr=sr, n_fft=512, n_mels=64) @ (np.abs(spec) ** 2), 1e-10))


def _log_mel_long_window(wave, sr):
    import librosa

    spec = librosa.stft(wave, n_fft=512, hop_length=160, win_length=512, window="hann")
    return 10 * np.log10(np.maximum(librosa.filters.mel(sr=sr, n_fft=512, n_mels=64) @ (np.abs(spec) ** 2), 1e-10))


ANSWERS.update({
    "07.n_hops": (lambda n, hop: 1 + n // hop, [lambda n, hop: n // hop, lambda n, hop: -(-n // hop),
                                                lambda n, hop: 1 + (n - 512) // hop]),
    "07.hop_of_frame": (lambda i, fps, hop_ms: round((i + 0.5) * 1000 / (fps * hop_ms)), [
        lambda i, fps, hop_ms: round(i * 1000 / (fps * hop_ms)),
        lambda i, fps, hop_ms: round((i + 1.5) * 1000 / (fps * hop_ms)),
        lambda i, fps, hop_ms: int((i + 0.5) * 1000 / (fps * hop_ms)),
        lambda i, fps, hop_ms: round((i + 0.5) * 16_000 / fps),
    ]),
    "07.log_mel": (_log_mel_right, [_log_mel_amplitude_db, _log_mel_magnitude, _log_mel_no_filters,
                                    _log_mel_not_centred, _log_mel_long_window]),
})


def _lr_right(step, total, warmup):
    import math

    w = max(1, round(total * warmup))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - w) / max(1, total - w))))


def _lr_zero_start(step, total, warmup):
    w = max(1, round(total * warmup))
    return step / w if step < w else _lr_right(step, total, warmup)


def _lr_cosine_from_zero(step, total, warmup):
    import math

    w = max(1, round(total * warmup))
    return (step + 1) / w if step < w else 0.5 * (1 + math.cos(math.pi * step / total))


def _fuse_right(a, b, c, w1, b1, w2, b2):
    return np.maximum((a + b + c) @ w1 + b1, 0) @ w2 + b2


ANSWERS.update({
    "05.lr_factor": (_lr_right, [_lr_zero_start, _lr_cosine_from_zero, lambda s, t, w: 1.0]),
    "05.fusion_correction": (_fusion_right, [_fusion_va_outside_tanh, _fusion_no_residual]),
    "05.fuse": (_fuse_right, [lambda a, b, c, w1, b1, w2, b2: ((a + b + c) @ w1 + b1) @ w2 + b2,
                              lambda a, b, c, w1, b1, w2, b2: _fuse_right(a / 3, b / 3, c / 3, w1, b1, w2, b2),
                              lambda a, b, c, w1, b1, w2, b2: a]),
    "05.ddp_epoch": (lambda f, g, b: (-(-f // g) // b, b * g), [lambda f, g, b: (f // b, b * g),
                                                                lambda f, g, b: (-(-f // g) // b, b),
                                                                lambda f, g, b: None]),
})


# --------------------------------------------------------------------------- 08_evaluation


def _f1_at_right(truth, prob, threshold):
    truth, decision = np.asarray(truth).astype(bool), np.asarray(prob) >= threshold
    tp = np.sum(truth & decision)
    denom = 2 * tp + np.sum(~truth & decision) + np.sum(truth & ~decision)
    return 2 * tp / denom if denom else 0.0


def _f1_at_strict(truth, prob, threshold):
    return _f1_at_right(truth, np.asarray(prob) - 1e-9, threshold)  # prob > threshold


def _f1_at_nan(truth, prob, threshold):
    truth, decision = np.asarray(truth).astype(bool), np.asarray(prob) >= threshold
    tp = np.sum(truth & decision)
    with np.errstate(invalid="ignore"):
        return 2 * tp / (2 * tp + np.sum(~truth & decision) + np.sum(truth & ~decision))


def _macro_right(truth, pred):
    return float(np.mean([_f1_at_right(truth == c, (pred == c).astype(float), 0.5) for c in range(8)]))


def _macro_present_only(truth, pred):
    classes = sorted(set(truth) | set(pred))
    return float(np.mean([_f1_at_right(truth == c, (pred == c).astype(float), 0.5) for c in classes]))


def _video_bootstrap_right(videos, rng):
    names = np.unique(videos)
    drawn = rng.choice(names, size=len(names), replace=True)
    return np.concatenate([np.flatnonzero(videos == v) for v in drawn])


def _video_bootstrap_frames(videos, rng):
    return rng.integers(0, len(videos), size=len(videos))


def _video_bootstrap_no_replacement(videos, rng):
    names = rng.permutation(np.unique(videos))
    return np.concatenate([np.flatnonzero(videos == v) for v in names])


def _capstone_data():
    """A small SynthAffWild with a test split, the floor's submission (the score to beat) and the oracle's."""
    import tempfile
    from pathlib import Path

    from course_lib import evaluate as ev
    from course_lib.data import synth
    from course_lib.data.abaw import TEST_LIST, read_mtl_annotations, read_test_list

    if not _CAPSTONE:
        root = synth.generate_dataset(Path(tempfile.mkdtemp()) / "data", n_videos=10, frames_per_video=40, seed=5,
                                      test_videos=3, progress_bar=False)
        listed = read_test_list(root / TEST_LIST)
        train = read_mtl_annotations(root / "training_set_annotations.txt")
        floor = ev.write_submission(ev.floor_table(train, listed), root.parent / "floor.txt")
        oracle = ev.write_submission(ev.oracle_table(root, listed), root.parent / "oracle.txt")
        lines = oracle.read_text().splitlines()
        broken = root.parent / "broken.txt"
        broken.write_text("\n".join(lines[:5] + lines[6:]) + "\n")  # one test image left out
        _CAPSTONE.update(root=root, floor=floor, oracle=oracle, broken=broken,
                         to_beat=ev.score_submission(floor, root)["total"])
    return _CAPSTONE


_CAPSTONE: dict = {}


def _capstone(name):
    def answer():
        data = _capstone_data()
        return dict(submission=data[name], root=data["root"], to_beat=data["to_beat"])
    return answer


ANSWERS.update({
    "08.capstone": (_capstone("oracle"), [_capstone("floor"), _capstone("broken"),
                                          lambda: dict(submission="predictions.txt")]),
    "08.f1_at": (_f1_at_right, [_f1_at_strict, _f1_at_nan,
                                lambda t, p, th: float(np.mean(np.asarray(t).astype(bool) == (np.asarray(p) >= th)))]),
    "08.macro_f1": (_macro_right, [_macro_present_only, lambda t, p: float(np.mean(t == p))]),
    "08.video_bootstrap": (_video_bootstrap_right, [_video_bootstrap_frames, _video_bootstrap_no_replacement]),
})


def _loc_ratio_right(attribution, region):
    positive = np.clip(attribution, 0, None)
    return positive[region].sum() / positive.sum() / region.mean()


def _ig_right(f, x, baseline, steps):
    import torch

    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps
    path = (baseline + alphas[:, None] * (x - baseline)).requires_grad_()
    (grads,) = torch.autograd.grad(f(path).sum(), path)
    return (x - baseline) * grads.mean(0)


def _ig_gradient_at_x(f, x, baseline, steps):
    import torch

    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(f(x[None]).sum(), x)
    return grad * (x - baseline).detach()


def _ig_no_difference(f, x, baseline, steps):
    return _ig_right(f, x, baseline, steps) / (x - baseline)


def _ig_summed(f, x, baseline, steps):
    return _ig_right(f, x, baseline, steps) * steps


def _ig_times_x(f, x, baseline, steps):
    return _ig_right(f, x, baseline, steps) / (x - baseline) * x


def _spearman_right(a, b):
    import pandas as pd

    return float(np.corrcoef(pd.Series(np.ravel(a)).rank(), pd.Series(np.ravel(b)).rank())[0, 1])


def _spearman_no_ties(a, b):
    ra, rb = np.argsort(np.argsort(np.ravel(a))), np.argsort(np.argsort(np.ravel(b)))
    return float(np.corrcoef(ra, rb)[0, 1])


ANSWERS.update({
    "09.localization_ratio": (_loc_ratio_right, [
        lambda a, m: np.clip(a, 0, None)[m].sum() / np.clip(a, 0, None).sum(),
        lambda a, m: a[m].sum() / a.sum() / m.mean(),
        lambda a, m: np.abs(a)[m].sum() / np.abs(a).sum() / m.mean(),
        lambda a, m: np.clip(a, 0, None)[m].mean() / np.clip(a, 0, None).max(),
    ]),
    "09.integrated_gradients": (_ig_right, [_ig_gradient_at_x, _ig_no_difference, _ig_summed, _ig_times_x]),
    "09.rank_correlation": (_spearman_right, [lambda a, b: float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]),
                                              _spearman_no_ties,
                                              lambda a, b: float(np.corrcoef(np.argsort(np.ravel(a)),
                                                                             np.argsort(np.ravel(b)))[0, 1])]),
})
