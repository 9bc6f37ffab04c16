"""The course backbone: trained once, cached by data fingerprint, reloaded identically; features follow."""

from __future__ import annotations

import pytest
import torch

from course_lib.course_backbone import course_backbone, course_features
from course_lib.data import synth


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return synth.generate_dataset(tmp_path_factory.mktemp("cb") / "data", n_videos=8, frames_per_video=40,
                                  seed=1, progress_bar=False)


def test_trained_once_then_loaded(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    first = course_backbone(tiny_data, "smoke", epochs=1, progress_bar=False, device="cpu")
    assert first.trained_now and first.path.exists() and len(first.history) == 1
    assert first.backbone.frozen and first.backbone.grid_size == (7, 7)
    again = course_backbone(tiny_data, "smoke", epochs=1, progress_bar=False, device="cpu")
    assert not again.trained_now and again.fingerprint == first.fingerprint
    x = torch.rand(2, 3, 112, 112)
    assert torch.equal(first.backbone(x)["tokens"], again.backbone(x)["tokens"])
    cb, feats = course_features(tiny_data, "smoke", progress_bar=False, device="cpu")
    assert not cb.trained_now or cb.settings["epochs"] != 1  # default settings train a new one: keyed by epochs
    assert feats["train"].tokens.shape[1:] == (49, 128) and len(feats["validation"]) > 0
