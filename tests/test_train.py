"""course_lib.train: schedule, learning, best-epoch restore, early stopping, prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from course_lib.metrics import p_mtl
from course_lib.train import TrainConfig, evaluate, fit, predict, score, warmup_cosine


class TokenSet(Dataset):
    """Random token sets whose labels depend on the tokens (learnable), with missing labels."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, 8, generator=g)
        m = self.x.mean(dim=1)
        self.au = (torch.cat([m, m[:, :4]], dim=1) > 0).float()
        self.expr = m[:, :8].argmax(dim=1)
        self.va = torch.tanh(m[:, :2])
        self.has = torch.rand(n, 3, generator=g) > 0.2

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"tokens": self.x[i], "au": self.au[i], "expr": self.expr[i], "va": self.va[i],
                "has_au": self.has[i, 0], "has_expr": self.has[i, 1], "has_va": self.has[i, 2], "index": i}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.GELU())
        self.au, self.expr, self.va = nn.Linear(32, 12), nn.Linear(32, 8), nn.Linear(32, 2)

    def forward(self, tokens):
        h = self.body(tokens).mean(dim=1)
        return {"au": self.au(h), "expr": self.expr(h), "va": torch.tanh(self.va(h))}


def _loaders(seed=0):
    train = DataLoader(TokenSet(256, seed), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    val = DataLoader(TokenSet(128, seed + 1), batch_size=64)
    return train, val


def test_warmup_then_cosine():
    f = warmup_cosine(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5, abs=0.02) and f(100) == pytest.approx(0.0)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_fit_learns_and_restores_the_best_epoch():
    torch.manual_seed(0)
    model, (train, val) = Tiny(), _loaders()
    before = evaluate(model, val)["total"]
    result = fit(model, train, val, config=TrainConfig(epochs=12, lr=1e-2), progress_bar=False)
    history = result.history
    assert list(history.epoch) == list(range(1, 13))
    assert history.loss.iloc[-1] < 0.5 * history.loss.iloc[0]
    assert result.best_scores["total"] == pytest.approx(history.val_total.max())
    assert evaluate(model, val)["total"] == pytest.approx(history.val_total.max(), abs=1e-9)
    assert history.val_total.max() > before + 1.0
    assert result.frames_per_second > 0 and result.steps == 12 * len(train)


def test_early_stopping_stops():
    torch.manual_seed(0)
    model, (train, val) = Tiny(), _loaders()
    result = fit(model, train, val, config=TrainConfig(epochs=40, lr=0.0, patience=2), progress_bar=False)
    assert len(result.history) == 3 and result.best_epoch == 1  # lr 0: nothing improves after epoch 1


def test_predict_and_score_agree_with_p_mtl():
    model, (_, val) = Tiny(), _loaders()
    out = predict(model, val)
    assert out["au_pred"].shape == (128, 12) and out["expr_pred"].shape == (128, 8) and out["va_pred"].shape == (128, 2)
    assert np.all((out["au_pred"] >= 0) & (out["au_pred"] <= 1))
    assert sorted(out["index"].tolist()) == list(range(128))
    ds = val.dataset
    va = np.where(ds.has[:, 2:3].numpy(), ds.va.numpy(), -5.0)
    expr = np.where(ds.has[:, 1].numpy(), ds.expr.numpy(), -1)
    au = np.where(ds.has[:, 0:1].numpy(), ds.au.numpy(), -1)
    want = p_mtl(va, out["va_pred"], expr, out["expr_pred"], au, out["au_pred"])
    assert score(out)["total"] == pytest.approx(want["total"], abs=1e-9)
