"""SynthAffWild: format, determinism, the generative story, regions, audio, resume, oracle."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from course_lib.data import synth
from course_lib.data.abaw import read_mtl_annotations
from course_lib.data.face import Identity, render_face
from course_lib.data.voice import read_wav
from course_lib.labels import AU_NAMES, EXPR_NAMES

SMALL = {"n_videos": 10, "frames_per_video": 60}


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return synth.generate_dataset(tmp_path_factory.mktemp("synth") / "small", **SMALL, audio=True,
                                  progress_bar=False)


def test_layout_and_format(small):
    meta = json.loads((small / "metadata.json").read_text())
    videos = meta["splits"]["train"] + meta["splits"]["validation"]
    assert len(videos) == 10 and len(meta["splits"]["validation"]) == 2
    lines = (small / "training_set_annotations.txt").read_text().splitlines()
    assert lines[0] == "image,valence,arousal,expression," + ",".join(AU_NAMES)
    assert all(len(line.split(",")) == 16 for line in lines[1:])
    for video in videos:
        frames = sorted((small / "cropped_aligned" / video).glob("*.jpg"))
        assert [f.name for f in frames] == [f"{i:05d}.jpg" for i in range(1, 61)]
    from PIL import Image

    with Image.open(small / "cropped_aligned" / videos[0] / "00001.jpg") as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (112, 112)
    assert not list(small.rglob(".partial-*")) and not (small / ".generating.json").exists()


def test_annotations_round_trip_against_ground_truth(small):
    for split, name in (("train", "training_set_annotations.txt"), ("validation", "validation_set_annotations.txt")):
        table = read_mtl_annotations(small / name)
        clean = synth.clean_labels(small, table)
        va = table[["valence", "arousal"]].to_numpy()[table.has_va]
        # annotations are noisy versions of the truth: close, not equal
        diff = np.abs(va - clean["va"][table.has_va])
        assert 0 < diff.mean() < 0.15
        au = table[list(AU_NAMES)].to_numpy()[table.has_au]
        agreement = (au == clean["au"][table.has_au]).mean()
        assert 0.85 < agreement < 1.0
        expr = table.expression.to_numpy()[table.has_expr]
        assert 0.6 < (expr == clean["expr"][table.has_expr]).mean() < 1.0
        assert set(table.video) == set(json.loads((small / "metadata.json").read_text())["splits"][split])


def test_every_class_in_training_and_real_like_missing_rates(tmp_path):
    plans = synth.plan_dataset(10, 60, seed=3)
    table = synth._annotation_table(plans)
    train = table[table.video.isin([p.name for p in plans if p.split == "train"])]
    assert set(train.expression[train.has_expr]) == set(range(len(EXPR_NAMES)))
    big = synth._annotation_table(synth.plan_dataset(40, 150, seed=1))
    big_train = big[big.video.isin([p.name for p in synth.plan_dataset(40, 150, seed=1) if p.split == "train"])]
    for flag, rate in (("has_va", 0.27), ("has_expr", 0.36), ("has_au", 0.27)):
        assert abs((1 - big_train[flag].mean()) - rate) < 0.12, flag
    rates = big_train[big_train.has_au][list(AU_NAMES)].mean()
    assert rates["AU25"] > 0.4 and rates["AU15"] < 0.2 and rates["AU25"] == rates.max()


def test_every_au_active_in_each_split():
    """Small sets too (the smoke size): an AU that no episode switched on gets an activation of its own."""
    from course_lib.data.face import AU_THRESHOLD

    for seed in range(6):
        plans = synth.plan_dataset(32, 45, seed=seed, test_videos=6)
        for split in ("train", "validation", "test"):
            intensity = np.concatenate([p.au_intensity for p in plans if p.split == split])
            active = (intensity >= AU_THRESHOLD).any(axis=0)
            assert active.all(), (seed, split, [a for a, on in zip(AU_NAMES, active) if not on])


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = dict(n_videos=3, frames_per_video=40, val_fraction=0.34, audio=True, progress_bar=False)
    with pytest.raises(ValueError, match="expression episodes"):
        synth.generate_dataset(tmp_path / "too-small", **kwargs)
    kwargs.update(n_videos=6, frames_per_video=60)
    a = synth.generate_dataset(tmp_path / "a", seed=5, **kwargs)
    b = synth.generate_dataset(tmp_path / "b", seed=5, workers=2, **kwargs)
    c = synth.generate_dataset(tmp_path / "c", seed=6, **kwargs)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


class PowerCut(Exception):
    """Stands in for a run killed half way."""


def test_resume_reuse_and_refuse(tmp_path, monkeypatch):
    kwargs = dict(n_videos=6, frames_per_video=60, val_fraction=0.34, progress_bar=False)
    calls = []
    real = synth._render_video
    armed = [True]

    def flaky(plan, root, size, seed):
        calls.append(plan.name)
        if armed[0] and len(calls) == 3:
            armed[0] = False
            raise PowerCut  # interrupted half way
        return real(plan, root, size, seed)

    monkeypatch.setattr(synth, "_render_video", flaky)
    with pytest.raises(PowerCut):
        synth.generate_dataset(tmp_path / "r", **kwargs, workers=1)
    assert not (tmp_path / "r" / "metadata.json").exists()
    calls.clear()
    synth.generate_dataset(tmp_path / "r", **kwargs, workers=1)
    assert len(calls) == 4, "the two finished videos are kept, the other four rendered"
    reference = synth.generate_dataset(tmp_path / "ref", **kwargs)
    assert _digest(tmp_path / "r") == _digest(reference)
    calls.clear()
    synth.generate_dataset(tmp_path / "r", **kwargs)
    assert calls == [], "a complete data set with the same settings is reused"
    with pytest.raises(FileExistsError, match="differs in seed"):
        synth.generate_dataset(tmp_path / "r", **{**kwargs, "seed": 9})
    synth.generate_dataset(tmp_path / "r", **{**kwargs, "seed": 9}, overwrite=True)
    assert json.loads((tmp_path / "r" / "metadata.json").read_text())["config"]["seed"] == 9


@pytest.mark.parametrize("au", AU_NAMES)
def test_each_au_moves_pixels_inside_its_region(au):
    """An AU alone changes the face mostly where its ground-truth region says it acts."""
    identity = Identity()
    neutral, _ = render_face(identity, np.zeros(12))
    active = np.zeros(12)
    active[AU_NAMES.index(au)] = 1.0
    face, regions = render_face(identity, active)
    change = np.abs(np.asarray(face, float) - np.asarray(neutral, float)).sum(axis=2)
    from course_lib.data.face import region_mask

    mask = region_mask(regions[AU_NAMES.index(au)], 112)
    assert change.sum() > 500, f"{au} changes almost nothing"
    inside = change[mask].sum() / change.sum()
    share = mask.mean()
    assert inside / share > 2.0, f"{au}: {inside:.0%} of the change in {share:.0%} of the image"


def test_regions_follow_the_pose_and_stay_in_the_image(small):
    meta = json.loads((small / "metadata.json").read_text())
    gt = synth.load_ground_truth(small, meta["splits"]["train"][0])
    masks = synth.au_region_masks(gt, 0, 112)
    assert masks.shape == (12, 112, 112) and all(m.any() for m in masks)
    regions = gt["regions"].astype(float)
    assert np.nanmin(regions) > -20 and np.nanmax(regions) < 132
    assert np.nanstd(regions[:, 0, 0, 0, 0]) > 0.2, "regions move with the head"
    assert gt["au_intensity"].shape == (60, 12) and gt["occluded"].shape == (60, 2)


def test_audio_is_aligned_and_follows_arousal(small):
    meta = json.loads((small / "metadata.json").read_text())
    video = meta["splits"]["train"][0]
    audio, rate = read_wav(small / "audio" / f"{video}.wav")
    assert rate == 16_000 and abs(audio.size - 60 / meta["fps"] * rate) <= 1
    # louder while talking than while silent, across the whole set
    talk_rms, quiet_rms = [], []
    for v in meta["splits"]["train"]:
        a, _ = read_wav(small / "audio" / f"{v}.wav")
        talking = synth.load_ground_truth(small, v)["talking"]
        per_frame = np.sqrt((a[: 60 * 533].reshape(60, 533) ** 2).mean(axis=1))
        talk_rms += list(per_frame[talking])
        quiet_rms += list(per_frame[~talking])
    assert np.mean(talk_rms) > 3 * np.mean(quiet_rms)


def test_voice_prosody_follows_arousal():
    from course_lib.data.voice import synthesize_voice

    n = 16_000
    talk = np.ones(n)
    calm, _ = synthesize_voice(np.zeros(n), np.full(n, -0.8), talk, pitch=150, rng=np.random.default_rng(0))
    excited, _ = synthesize_voice(np.zeros(n), np.full(n, 0.8), talk, pitch=150, rng=np.random.default_rng(0))
    assert np.sqrt((excited**2).mean()) > 1.3 * np.sqrt((calm**2).mean())

    def pitch(x):
        spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
        freqs = np.fft.rfftfreq(x.size, 1 / 16_000)
        band = (freqs > 60) & (freqs < 400)
        return freqs[band][np.argmax(spectrum[band])]

    assert pitch(excited) > 1.2 * pitch(calm)


def test_oracle_is_a_ceiling(small):
    for split in ("train", "validation"):
        scores = synth.oracle_scores(small, split)
        assert 2.0 < scores["total"] < 3.0
        assert scores["total"] == pytest.approx(scores["va"] + scores["expr"] + scores["au"])


def test_render_face_rejects_wrong_au_count():
    with pytest.raises(ValueError, match="12 values"):
        render_face(Identity(), np.zeros(11))


def test_ensure_course_data_prefers_a_real_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    (tmp_path / "cropped_aligned").mkdir()
    (tmp_path / "training_set_annotations.txt").write_text("image,valence\n")
    assert synth.ensure_course_data("smoke") == tmp_path.resolve()
    assert synth.dataset_fingerprint(tmp_path) != synth.dataset_fingerprint(tmp_path / "nothing")


def test_test_videos_are_new_people_and_leave_training_and_validation_unchanged():
    without = synth.plan_dataset(32, 45, seed=2)
    plans = synth.plan_dataset(32, 45, seed=2, test_videos=6)
    assert [p.split for p in plans] == [p.split for p in without] + ["test"] * 6
    for a, b in zip(without, plans):  # the test split draws from its own streams
        assert a.name == b.name and a.identity == b.identity
        np.testing.assert_array_equal(a.au_intensity, b.au_intensity)
        for key in a.annotations:
            np.testing.assert_array_equal(a.annotations[key], b.annotations[key])
    test = plans[32:]
    assert len({p.name for p in plans}) == 38
    assert all(t.identity != p.identity for t in test for p in without)
    assert "test_videos" not in synth._config(32, 45, 112, 2, False, 0.2)  # old data sets keep their settings
    labelled = np.concatenate([p.annotations["expr"] for p in test])
    assert set(labelled[labelled >= 0]) == set(range(len(EXPR_NAMES)))  # every class in the test split too
