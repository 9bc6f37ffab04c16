"""The quality benchmark's reference points: HOG + linear models, and the frame-reading ceiling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage.feature import hog

from course_lib import baselines
from course_lib.data import synth
from course_lib.data.abaw import read_mtl_annotations
from course_lib.labels import AU_NAMES
from course_lib.metrics import do_nothing_scores


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = synth.generate_dataset(tmp_path_factory.mktemp("baselines") / "data", n_videos=10, frames_per_video=40,
                                  seed=4, audio=False, progress_bar=False)
    return (root, read_mtl_annotations(root / "training_set_annotations.txt"),
            read_mtl_annotations(root / "validation_set_annotations.txt"))


def test_hog_features_are_skimage_hog_of_the_grey_frame(data):
    root, train, _ = data
    x = baselines.hog_features(train.iloc[:3], root)
    assert x.shape == (3, 13 * 13 * 2 * 2 * 9) and x.dtype == np.float32  # 112 px: 13 x 13 blocks of 2 x 2 cells
    grey = np.asarray(Image.open(root / "cropped_aligned" / train["image"].iloc[1]).convert("L"), dtype=np.float32)
    np.testing.assert_allclose(x[1], hog(grey, **baselines.HOG_SETTINGS), rtol=1e-5, atol=1e-6)
    assert not np.allclose(x[0], x[2])


def test_hog_features_name_a_missing_frame(data):
    root, train, _ = data
    table = train.iloc[:2].copy()
    table.loc[table.index[1], "image"] = "nowhere/00001.jpg"
    with pytest.raises(FileNotFoundError, match="nowhere/00001.jpg"):
        baselines.hog_features(table, root)


def _label_features(table) -> np.ndarray:
    expr = np.zeros((len(table), 8))
    has = table["has_expr"].to_numpy()
    expr[has, table["expression"].to_numpy()[has]] = 1
    return np.concatenate([table[["valence", "arousal"]].to_numpy() * table[["has_va"]].to_numpy(), expr,
                           table[list(AU_NAMES)].clip(lower=0).to_numpy()], axis=1)


def test_linear_probe_reads_informative_features_and_not_noise(data):
    _, train, val = data
    rng = np.random.default_rng(0)
    informative = baselines.score(val, baselines.linear_probe(
        _label_features(train) + rng.normal(0, 0.05, (len(train), 22)), train,
        _label_features(val) + rng.normal(0, 0.05, (len(val), 22)), components=22, c=1.0))
    noise = baselines.score(val, baselines.linear_probe(rng.normal(size=(len(train), 22)), train,
                                                        rng.normal(size=(len(val), 22)), components=22, c=1.0))
    present_aus = [au for au in AU_NAMES if (val[au] == 1).any()]
    present_classes = set(val.loc[val["has_expr"], "expression"])
    assert informative["va"] > 0.85
    assert all(informative["au_f1_per_au"][au] > 0.9 for au in present_aus)  # one miss among 7 positives is 0.92; an absent AU scores 0
    assert all(f1 > 0.9 for k, f1 in enumerate(informative["expr_f1_per_class"].values()) if k in present_classes)
    assert noise["total"] < informative["total"] - 1.5
    with pytest.raises(ValueError, match="differ in rows"):
        baselines.linear_probe(np.zeros((3, 2)), train, np.zeros((len(val), 2)))


def test_reading_ceiling_reads_aus_from_their_intensities(data):
    root, train, val = data
    ceiling = baselines.reading_ceiling(root, train, val)
    floor = do_nothing_scores(train, val)
    present = [au for au in AU_NAMES if (val[au] == 1).any()]  # an AU absent from val scores 0 whatever
    read = np.mean([ceiling["au_f1_per_au"][au] for au in present])
    guess = np.mean([floor["au_f1_per_au"][au] for au in present])
    assert read > 0.75 and read > guess + 0.3  # annotations are the intensities past a jittered threshold
    assert ceiling["total"] > floor["total"] + 0.5
