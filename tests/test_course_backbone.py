"""The course backbone: the shipped pretrained one by default; from scratch, trained once, cached by data
fingerprint and reloaded identically; features follow."""

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
    first = course_backbone(tiny_data, "smoke", epochs=1, progress_bar=False, device="cpu", from_scratch=True)
    assert first.trained_now and first.path.exists() and len(first.history) == 1
    assert first.backbone.frozen and first.backbone.grid_size == (7, 7) and not first.pretrained
    assert "from scratch" in first.summary()
    again = course_backbone(tiny_data, "smoke", epochs=1, progress_bar=False, device="cpu", from_scratch=True)
    assert not again.trained_now and again.fingerprint == first.fingerprint
    x = torch.rand(2, 3, 112, 112)
    assert torch.equal(first.backbone(x)["tokens"], again.backbone(x)["tokens"])
    other = course_backbone(tiny_data, "smoke", epochs=1, progress_bar=False, device="cpu", from_scratch=True, seed=1)
    assert other.trained_now and other.path != first.path  # another seed, another backbone
    cb, feats = course_features(tiny_data, "smoke", progress_bar=False, device="cpu")
    if cb.pretrained:  # the shipped weights: nothing trained, 256-dim tokens of course_face
        assert not cb.trained_now and feats["train"].tokens.shape[1:] == (49, 256)
    else:  # a checkout without them falls back to training from scratch with the default settings
        assert feats["train"].tokens.shape[1:] == (49, 128)
    assert len(feats["validation"]) > 0
