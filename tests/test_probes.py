"""Linear probes: they read what the features hold, and nothing they do not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib.labels import AU_NAMES
from course_lib.probes import au_probe, au_probe_by_video, identity_probe, pooled_features, true_au_intensities


def test_au_probe_reads_informative_features_and_not_noise():
    rng = np.random.default_rng(0)
    au = rng.uniform(0, 1, (600, 12))
    mixing = rng.normal(0, 1, (12, 64))
    informative = au @ mixing + rng.normal(0, 0.05, (600, 64))
    good = au_probe(informative[:400], au[:400], informative[400:], au[400:])
    assert set(good["per_au"]) == set(AU_NAMES) and min(good["per_au"].values()) > 0.95
    noise = rng.normal(0, 1, (600, 64))
    bad = au_probe(noise[:400], au[:400], noise[400:], au[400:])
    assert bad["mean"] < 0.05
    assert np.isclose(good["mean"], np.mean(list(good["per_au"].values())))
    grouped = au_probe(informative[:400], au[:400], informative[400:], au[400:], groups=np.arange(400) // 40)
    assert min(grouped["per_au"].values()) > 0.95  # the strength chosen across groups (people) reads them too


def test_probe_by_video_scores_only_on_people_it_never_saw():
    rng = np.random.default_rng(2)
    video = np.repeat(np.arange(30), 20)
    person_au = rng.uniform(0, 1, (30, 12))  # each person's own AU values, not readable from the face
    identity = rng.normal(0, 1, (30, 48))[video] + rng.normal(0, 0.05, (600, 48))
    memorised = au_probe(identity[::2], person_au[video][::2], identity[1::2], person_au[video][1::2])
    assert memorised["mean"] > 0.8  # other frames of the same people: a lookup of who it is scores high
    held_out = au_probe_by_video(identity, person_au[video], video)
    assert held_out["mean"] < 0.1  # unseen people: who it is says nothing
    au = rng.uniform(0, 1, (600, 12))
    face = np.concatenate([au @ rng.normal(0, 1, (12, 24)), identity], axis=1)
    read = au_probe_by_video(face, au, video)
    assert min(read["per_au"].values()) > 0.9 and read["alpha"] > 0
    with pytest.raises(ValueError, match="6 videos"):
        au_probe_by_video(face[:120], au[:120], video[:120])


def test_identity_probe_tells_people_apart_only_when_features_do():
    rng = np.random.default_rng(1)
    people = np.repeat(np.arange(20), 10)
    faces = rng.normal(0, 1, (20, 32))[people] + rng.normal(0, 0.3, (200, 32))
    assert identity_probe(faces, people) > 0.95
    assert identity_probe(rng.normal(0, 1, (200, 32)), people) < 0.25  # chance: 0.05


def test_pooled_features_in_eval_mode_without_changing_the_mode():
    from course_lib.models import create_backbone

    bb = create_backbone("lcnet_050", token_stride=16)
    bb.train()
    pixels = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    out = pooled_features(bb, pixels, batch_size=2)
    assert out.shape == (5, bb.num_features) and bb.training
    bb.eval()
    with torch.no_grad():
        ref = bb(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255)["pooled"].numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_true_au_intensities_follow_the_table_rows(tmp_path):
    from course_lib.data import synth
    from course_lib.data.abaw import read_mtl_annotations

    root = synth.generate_dataset(tmp_path / "d", n_videos=6, frames_per_video=40, seed=5, progress_bar=False)
    table = read_mtl_annotations(root / "training_set_annotations.txt").sample(frac=1.0, random_state=0)
    got = true_au_intensities(root, table)
    for i in (0, 7, len(table) - 1):
        row = table.iloc[i]
        gt = synth.load_ground_truth(root, row["video"])
        np.testing.assert_allclose(got[i], gt["au_intensity"][row["frame"] - 1].astype(np.float32))
