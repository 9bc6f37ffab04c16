"""The pretraining corpus, the pretraining command (tiny scale, resume included) and the
shipped course_face weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from course_lib.data import corpus as corpus_mod
from course_lib.data.corpus import CorpusSpec, build_corpus, render_identity, sample_au_intensities
from course_lib.data.face import AU_THRESHOLD
from course_lib.labels import AU_NAMES
from course_lib.models import create_backbone
from course_lib.models.backbones import COURSE_FACE, COURSE_FACE_WEIGHTS


def test_au_sampling_covers_every_au_and_decorrelates_them():
    rng = np.random.default_rng(0)
    au = np.stack([sample_au_intensities(rng) for _ in range(4000)])
    present = (au >= AU_THRESHOLD).mean(0)
    assert present.min() > 0.2, dict(zip(AU_NAMES, present.round(2)))  # the rare AU15, AU23, AU24 too
    corr = np.corrcoef(au.T)
    off = np.abs(corr[~np.eye(12, dtype=bool)])
    assert off.max() < 0.5  # no pair is tied together as in expression prototypes (AU1-AU2: > 0.8 there)
    assert np.all((au >= 0) & (au <= 1))


def test_corpus_is_deterministic_disjoint_and_resumable(tmp_path):
    spec = CorpusSpec(n_identities=3, frames_per_identity=4)
    one = build_corpus(tmp_path / "a", spec, workers=1, progress_bar=False)
    assert len(one) == 12 and one.pixels(np.arange(12)).shape == (12, 112, 112, 3)
    assert sorted(set(one.identity)) == [corpus_mod.CORPUS_SEED + k for k in range(3)]
    assert one.identity.min() >= 1_000_000  # SynthAffWild data sets use small seeds; the corpus its own range
    again = render_identity(corpus_mod.CORPUS_SEED + 1, 4)
    np.testing.assert_array_equal(one.pixels(np.arange(4, 8)), again["pixels"])
    np.testing.assert_allclose(one.au[4:8], again["au"])
    # an interrupted build (a shard missing) resumes and gives the same bytes
    stem = next((tmp_path / "a").glob("shard-*.npz"))
    before = one.pixels(np.arange(12)).copy()
    stem.unlink()
    resumed = build_corpus(tmp_path / "a", spec, workers=1, progress_bar=False)
    np.testing.assert_array_equal(resumed.pixels(np.arange(12)), before)


def test_visible_mask_hides_occluded_regions():
    from course_lib.pretrain import visible_mask

    mask = visible_mask(np.array([[True, False], [False, True], [False, False]]))
    assert mask[0, AU_NAMES.index("AU1")] == 0 and mask[0, AU_NAMES.index("AU12")] == 1
    assert mask[1, AU_NAMES.index("AU25")] == 0 and mask[1, AU_NAMES.index("AU4")] == 1
    assert mask[2].sum() == 12


def test_batches_are_a_function_of_the_step():
    from course_lib.pretrain import batch_indices, learning_rate

    a = batch_indices(7, 100, 16, seed=0)
    np.testing.assert_array_equal(a, batch_indices(7, 100, 16, seed=0))
    epoch = np.concatenate([batch_indices(s, 100, 16, seed=0) for s in range(6)])
    assert len(set(epoch)) == 96  # one epoch: no frame twice
    assert learning_rate(0, 1000, 1.0) < learning_rate(29, 1000, 1.0) == pytest.approx(1.0)
    assert learning_rate(999, 1000, 1.0) == pytest.approx(0.05, abs=1e-3)


def test_tiny_pretraining_writes_release_and_resumes_exactly(tmp_path, one_thread):
    from course_lib.pretrain import pretrain

    corpus_dir = tmp_path / "corpus"
    card = pretrain(tmp_path / "whole", "tiny", device="cpu", corpus_dir=corpus_dir, progress_bar=False)
    for name in ("weights.safetensors", "model_card.json", "MODEL_CARD.md"):
        assert (tmp_path / "whole" / name).exists()
    assert card["frames_seen"] == 4 * 8 and card["data"]["identities"] == 6
    assert set(card["probe_held_out_identities"]) == set(AU_NAMES)
    assert "python -m course_lib.pretrain" in card["command"]
    assert json.loads((tmp_path / "whole" / "model_card.json").read_text())["wall_seconds"] > 0
    assert "| AU1 |" in (tmp_path / "whole" / "MODEL_CARD.md").read_text()

    # interrupted after step 2, then rerun: the same weights as the run in one go
    assert pretrain(tmp_path / "split", "tiny", device="cpu", corpus_dir=corpus_dir, progress_bar=False,
                    until=2) is None
    assert not (tmp_path / "split" / "weights.safetensors").exists()
    pretrain(tmp_path / "split", "tiny", device="cpu", corpus_dir=corpus_dir, progress_bar=False)
    whole = create_backbone(COURSE_FACE, pretrained=True, weights=tmp_path / "whole" / "weights.safetensors")
    split = create_backbone(COURSE_FACE, pretrained=True, weights=tmp_path / "split" / "weights.safetensors")
    assert whole.pretrained_loaded and split.pretrained_loaded
    for (k, a), b in zip(whole.state_dict().items(), split.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="other settings"):
        pretrain(tmp_path / "split", "tiny", device="cpu", corpus_dir=corpus_dir, progress_bar=False, lr=1e-2)

    # a second stage continues from the first one's weights; the card adds both up
    more = pretrain(tmp_path / "more", "tiny", device="cpu", corpus_dir=corpus_dir, progress_bar=False,
                    init=tmp_path / "whole", steps=2, lr=1e-3, command="second")
    assert more["frames_seen"] == 4 * 8 + 2 * 8 and more["history"][-1]["step"] == 6
    assert more["wall_seconds"] > card["wall_seconds"] and more["command"] == card["command"] + " && second"
    assert [st["steps"] for st in more["stages"]] == [4, 2] and more["stages"][1]["lr"] == 1e-3
    assert "4 steps of 8 frames (peak learning rate 0.002) then 2 steps" in (tmp_path / "more" / "MODEL_CARD.md").read_text()
    continued = create_backbone(COURSE_FACE, pretrained=True, weights=tmp_path / "more" / "weights.safetensors")
    assert not all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), continued.state_dict().values()))
    still = pretrain(tmp_path / "still", "tiny", device="cpu", corpus_dir=corpus_dir, progress_bar=False,
                     init=tmp_path / "whole", steps=1, lr=1e-12)  # starts from the first stage's weights
    still = create_backbone(COURSE_FACE, pretrained=True, weights=tmp_path / "still" / "weights.safetensors")
    for (k, a), b in zip(whole.named_parameters(), dict(still.named_parameters()).values()):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(FileNotFoundError, match="finished run"):
        pretrain(tmp_path / "other", "tiny", device="cpu", corpus_dir=corpus_dir, progress_bar=False, init=tmp_path / "split2")


def test_course_face_loads_the_timm_way_and_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    random = create_backbone(COURSE_FACE, pretrained=False)
    assert random.grid_size == (7, 7) and not random.pretrained_loaded
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in random.model.state_dict().items()}, str(path))
    loaded = create_backbone(COURSE_FACE, pretrained=True, weights=path)
    assert loaded.pretrained_loaded
    x = torch.rand(2, 3, 112, 112)
    random.eval(), loaded.eval()
    assert torch.equal(random(x)["tokens"], loaded(x)["tokens"])
    save_file({"conv1.0.weight": torch.zeros(24, 3, 3, 3)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="lacks"):
        create_backbone(COURSE_FACE, pretrained=True, weights=tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="cut at stride 16"):
        create_backbone(COURSE_FACE, output_stride=8)


@pytest.mark.skipif(not COURSE_FACE_WEIGHTS.exists(), reason="the shipped weights are not in this checkout")
def test_shipped_weights_are_small_documented_and_load_fast(tmp_path, monkeypatch):
    import time

    from course_lib.course_backbone import course_backbone

    assert COURSE_FACE_WEIGHTS.stat().st_size < 25 * 2**20
    card = json.loads(COURSE_FACE_WEIGHTS.with_name("model_card.json").read_text())
    for key in ("data", "objective", "architecture", "hardware", "wall_seconds", "frames_seen", "command",
                "course_probe", "probe_held_out_identities"):
        assert key in card, key
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    start = time.perf_counter()
    cb = course_backbone(tmp_path / "no-data-needed", "smoke", device="cpu")
    assert time.perf_counter() - start < 60
    assert not cb.trained_now and cb.backbone.pretrained_loaded and cb.backbone.frozen
    assert cb.settings["name"] == COURSE_FACE and cb.backbone.grid_size == (7, 7)


def test_augment_shifts_and_flips_the_frames():
    from course_lib.pretrain import augment

    pixels = np.random.default_rng(0).integers(0, 256, (16, 112, 112, 3), dtype=np.uint8)
    a = augment(pixels, torch.Generator().manual_seed(1))
    b = augment(pixels, torch.Generator().manual_seed(1))
    assert a.shape == (16, 3, 112, 112) and a.dtype == torch.float32 and torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    # grey frames with a column ramp (colour changes keep grey frames grey): a shift keeps the ramp's
    # direction, a flip reverses it, and about half the frames are flipped
    ramp = np.linspace(0, 255, 112).astype(np.uint8)
    grey = np.broadcast_to(ramp[None, None, :, None], (64, 112, 112, 3)).copy()
    out = augment(grey, torch.Generator().manual_seed(2)).mean(dim=(1, 2))  # (B, W) column profiles
    slope = (out[:, -20:].mean(1) - out[:, :20].mean(1))
    assert torch.all(slope.abs() > 0.2)
    assert 16 < int((slope < 0).sum()) < 48


def test_a_smaller_corpus_does_not_reuse_a_bigger_ones_shard(tmp_path):
    big = build_corpus(tmp_path, CorpusSpec(n_identities=3, frames_per_identity=2), workers=1, progress_bar=False)
    small = build_corpus(tmp_path, CorpusSpec(n_identities=2, frames_per_identity=2), workers=1, progress_bar=False)
    assert len(big) == 6 and len(small) == 4 and set(small.identity) == set(big.identity[:4])
