"""The release-layout copy: what a licence holder's folder looks like, made from SynthAffWild."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from course_lib.data import synth
from course_lib.data.abaw import (SPLIT_FILES, TEST_LABELS, TEST_LIST, read_mtl_annotations, read_per_task_annotations,
                                  read_test_list)
from course_lib.data.contents import PARTS, folder_contents
from course_lib.data.datasets import frames_exist
from course_lib.data.release import export_release_layout, real_video_names
from course_lib.labels import AU_NAMES

NAME = re.compile(r"^(\d+-\d+-\d+x\d+(_left|_right)?|video\d+_\d+)$")
LABELS = ["valence", "arousal", "expression", *AU_NAMES]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return synth.generate_dataset(tmp_path_factory.mktemp("release") / "synth", n_videos=6, frames_per_video=40,
                                  seed=9, audio=True, test_videos=2, progress_bar=False)


def test_real_video_names_are_distinct_and_look_real():
    names = real_video_names(200, seed=3)
    assert len(set(names)) == 200 and all(NAME.match(n) for n in names)
    assert any("_left" in n or "_right" in n for n in names) and any(n.startswith("video") for n in names)
    assert real_video_names(20, seed=3) == names[:20]


def test_release_copy_has_the_real_layout_and_nothing_else(source, tmp_path):
    copy = export_release_layout(source, tmp_path / "release", seed=1)
    root = copy.root
    assert sorted(p.name for p in root.iterdir()) == sorted(["cropped_aligned", *SPLIT_FILES.values(), TEST_LIST])
    listed = read_test_list(root / TEST_LIST)  # the test images without their labels, gaps and names as the rest
    assert frames_exist(listed, root).all() and not listed.has_va.any()
    assert len(listed) == len(read_test_list(source / TEST_LIST)) - copy.dropped["test"]
    assert set(listed.video) == {copy.names[v] for v in read_test_list(source / TEST_LIST).video.unique()}
    assert all(NAME.match(n) for n in copy.names.values())
    assert sorted(p.name for p in (root / "cropped_aligned").iterdir()) == sorted(copy.names.values())
    for split, name in SPLIT_FILES.items():
        theirs, ours = read_mtl_annotations(source / name), read_mtl_annotations(root / name)
        assert frames_exist(ours, root).all()  # every listed frame is there
        assert len(ours) == len(theirs) - copy.dropped[split] and copy.dropped[split] > 0
        back = {new: old for old, new in copy.names.items()}
        ours = ours.assign(video=ours["video"].map(back))
        merged = ours.merge(theirs, on=["video", "frame"], suffixes=("", "_source"), validate="one_to_one")
        assert len(merged) == len(ours)  # the same frames' labels, only renamed
        for column in LABELS:
            np.testing.assert_allclose(merged[column], merged[f"{column}_source"], atol=1e-4)
        gaps = [np.diff(np.sort(g.frame.to_numpy())) for _, g in ours.groupby("video")]
        assert any((d > 1).any() for d in gaps)  # frame numbers skip where a run was dropped
        assert all(g.frame.min() == 1 for _, g in ours.groupby("video"))
    with pytest.raises(FileExistsError, match="release"):
        export_release_layout(source, tmp_path / "release")


def test_per_task_copy_lists_every_frame_and_reads_back(source, tmp_path):
    mtl = export_release_layout(source, tmp_path / "mtl", seed=2)
    per_task = export_release_layout(source, tmp_path / "per_task", seed=2, per_task=True)
    root = per_task.root
    assert sorted(p.name for p in root.iterdir()) == ["AU_Detection_Challenge", "EXPR_Recognition_Challenge",
                                                      "VA_Estimation_Challenge", "cropped_aligned"]
    for split in SPLIT_FILES:
        table = read_per_task_annotations(root, split)
        present = table[frames_exist(table, root)].reset_index(drop=True)
        reference = read_mtl_annotations(mtl.root / SPLIT_FILES[split]).sort_values(["video", "frame"],
                                                                                   ignore_index=True)
        assert len(table) - len(present) == per_task.dropped[split] == mtl.dropped[split]
        np.testing.assert_array_equal(present["image"], reference["image"])
        for column in LABELS:
            np.testing.assert_allclose(present[column], reference[column], atol=1e-4)


def test_folder_contents_says_what_a_release_lacks_in_one_line(source, tmp_path, capsys):
    full = folder_contents(source)
    assert full.synthetic and full.ground_truth and full.audio and full.metadata and len(full.videos) == 6
    assert full.offers("audio", "the audio branch") and full.offers("ground_truth", "the oracle")
    assert capsys.readouterr().out == ""  # nothing to say when the part is there

    copy = export_release_layout(source, tmp_path / "release", seed=4)
    real = folder_contents(copy.root)
    assert not (real.synthetic or real.ground_truth or real.audio or real.metadata)
    test_videos = set(read_test_list(source / TEST_LIST).video)
    assert sorted(real.videos) == sorted(new for old, new in copy.names.items() if old not in test_videos)
    assert full.test_list and full.test_labels and real.test_list and not real.test_labels
    assert not real.offers("test_labels", "the test score")
    assert "organisers keep the test labels" in capsys.readouterr().out
    assert not real.offers("audio", "the '+ audio' step")
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and line.startswith("skipped: the '+ audio' step.")
    assert "audio/<video>.wav" in line and "ffmpeg" in line and "static frame subset" in line
    assert not real.offers("ground_truth", "the oracle reference")
    assert "ground_truth/<video>.npz" in capsys.readouterr().out
    assert PARTS["test_list"][0] == TEST_LIST and PARTS["test_labels"][0] == TEST_LABELS
    with pytest.raises(KeyError, match="unknown part"):
        real.offers("videos", "anything")


def test_folder_contents_counts_videos_without_audio(source, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(source, partial)
    wavs = sorted((partial / "audio").glob("*.wav"))
    wavs[0].unlink()
    contents = folder_contents(partial)
    assert contents.ground_truth and not contents.audio and contents.missing_audio == 1
    with pytest.raises(FileNotFoundError, match="holds neither"):
        folder_contents(tmp_path / "empty")
