"""course_lib.recipes.train_on_features and config.seeded: a result that follows its seed alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from course_lib.config import seeded
from course_lib.losses import MultiTaskLoss
from course_lib.recipes import train_on_features
from course_lib.train import TrainConfig, fit, predict
from tests.test_train import TokenSet


class Dropped(nn.Module):
    """A small model with dropout, so that the training run draws random numbers every step."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(0.3))
        self.au, self.expr, self.va = nn.Linear(32, 12), nn.Linear(32, 8), nn.Linear(32, 2)

    def forward(self, tokens):
        h = self.body(tokens).mean(dim=1)
        return {"au": self.au(h), "expr": self.expr(h), "va": torch.tanh(self.va(h))}


CONFIG = TrainConfig(epochs=3, lr=3e-3)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def test_seeded_draws_from_the_seed_and_gives_the_callers_stream_back():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream goes on as if nothing happened
    with seeded(7):
        assert torch.equal(torch.rand(3), inside)
    with seeded(8):
        assert not torch.equal(torch.rand(3), inside)


def test_the_recipe_is_the_hand_written_loop_and_spares_the_callers_stream():
    train_set, val_set = TokenSet(256, 0), TokenSet(128, 1)
    torch.manual_seed(5)  # what the old library code did: reseed the global stream, then build, load and fit
    by_hand = Dropped()
    loader = DataLoader(train_set, batch_size=32, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(5))
    result = fit(by_hand, loader, DataLoader(val_set, batch_size=64), config=CONFIG, loss_fn=MultiTaskLoss(),
                 progress_bar=False)

    torch.manual_seed(99)
    expected_next = torch.rand(4)
    torch.manual_seed(99)
    trained = train_on_features(Dropped, train_set, val_set, loss_fn=MultiTaskLoss(), seed=5, config=CONFIG,
                                batch_size=32, val_batch_size=64)
    assert torch.equal(torch.rand(4), expected_next)
    assert all(torch.equal(a, b) for a, b in zip(_weights(by_hand), _weights(trained.model)))
    assert trained.result.best_epoch == result.best_epoch
    np.testing.assert_array_equal(trained.result.history["val_total"], result.history["val_total"])
    ours, theirs = trained.predict(), predict(by_hand, DataLoader(val_set, batch_size=64))
    np.testing.assert_array_equal(ours["au_pred"], theirs["au_pred"])
    again = train_on_features(Dropped, train_set, val_set, loss_fn=MultiTaskLoss(), seed=5, config=CONFIG,
                              batch_size=32, val_batch_size=64)
    assert all(torch.equal(a, b) for a, b in zip(_weights(again.model), _weights(trained.model)))


def test_the_loader_seed_moves_only_the_batch_order():
    train_set, val_set = TokenSet(256, 0), TokenSet(128, 1)
    initial = {}

    def recorded(name):
        def make():
            model = Dropped()
            initial[name] = _weights(model)
            return model
        return make

    runs = {name: train_on_features(recorded(name), train_set, val_set, loss_fn=MultiTaskLoss(), config=CONFIG, **kw)
            for name, kw in {"base": dict(seed=5), "order": dict(seed=5, loader_seed=6), "seed": dict(seed=6)}.items()}
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a, b))  # noqa: E731
    assert same(initial["base"], initial["order"]) and not same(initial["base"], initial["seed"])
    assert not same(_weights(runs["base"].model), _weights(runs["order"].model))


def test_predict_without_a_validation_set_needs_a_dataset():
    trained = train_on_features(Dropped, TokenSet(64, 0), None, loss_fn=MultiTaskLoss(), seed=0,
                                config=TrainConfig(epochs=1))
    assert trained.result.best_epoch == 1
    with pytest.raises(ValueError, match="without a validation set"):
        trained.predict()
    assert trained.predict(TokenSet(10, 3))["au_pred"].shape == (10, 12)
