"""course_lib.data.abaw and .datasets: annotation files (MTL and per-task), datasets over real JPEGs, label statistics."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from course_lib.data.abaw import (
    TABLE_COLUMNS, AnnotationError, read_mtl_annotations, read_per_task_annotations, write_mtl_annotations,
)
from course_lib.data.label_stats import au_cooccurrence, au_pos_weights, expr_class_weights, label_counts
from course_lib.data.datasets import FrameDataset, SequenceDataset, frames_exist
from course_lib.labels import AU_NAMES, EXPR_NAMES, MTL_HEADER

# torchvision >= 0.29 deprecates its JPEG decoder (for TorchCodec); the warning is not ours to test.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

NO_AU = ",".join(["-1"] * 12)
LINES = [
    "341/00001.jpg,-0.0023,0.0,7,0,0,0,0,0,0,1,0,0,0,1,0",
    "341/00002.jpg,0.5,-1,0,1,1,1,1,1,1,1,1,1,1,1,1",
    "video45_1/00012.jpg,-5,-5,-1," + NO_AU,
    "video45_1/00013.jpg,1,0.1234567,4,0,1,0,1,0,1,0,1,0,1,0,1",
]


def write_file(path, lines, newline="\n", header=MTL_HEADER, end="\n"):
    path.write_bytes((newline.join([header, *lines]) + end.replace("\n", newline)).encode())
    return path


# --------------------------------------------------------------------------- MTL files


def test_read_parses_columns_dtypes_and_names(tmp_path):
    table = read_mtl_annotations(write_file(tmp_path / "a.txt", LINES))
    assert tuple(table.columns) == TABLE_COLUMNS
    assert table["image"].tolist() == [line.split(",")[0] for line in LINES]
    assert table["video"].tolist() == ["341", "341", "video45_1", "video45_1"]
    assert table["frame"].tolist() == [1, 2, 12, 13]
    assert table["valence"].dtype == np.float32 and table["arousal"].dtype == np.float32
    assert table["valence"].iloc[0] == np.float32(-0.0023)
    assert table["arousal"].iloc[3] == np.float32(0.1234567)
    assert table["expression"].tolist() == [7, 0, -1, 4]
    assert table[list(AU_NAMES)].iloc[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    assert all(np.issubdtype(table[c].dtype, np.integer) for c in ("frame", "expression", *AU_NAMES))
    assert table["has_va"].tolist() == [True, True, False, True]
    assert table["has_expr"].tolist() == [True, True, False, True]
    assert table["has_au"].tolist() == [True, True, False, True]
    assert table[["has_va", "has_expr", "has_au"]].dtypes.eq(bool).all()


def test_missing_labels_are_flagged_per_task(tmp_path):
    lines = ["v/00001.jpg,-5,-5,3,0,0,0,0,0,0,0,0,0,0,0,1",
             "v/00002.jpg,0.2,0.3,-1,0,0,0,0,0,0,0,0,0,0,0,0",
             "v/00003.jpg,0.2,0.3,5," + NO_AU]
    table = read_mtl_annotations(write_file(tmp_path / "a.txt", lines))
    assert table["has_va"].tolist() == [False, True, True]
    assert table["has_expr"].tolist() == [True, False, True]
    assert table["has_au"].tolist() == [True, True, False]
    assert table["valence"].iloc[0] == -5 and table["expression"].iloc[1] == -1 and (table.loc[2, AU_NAMES] == -1).all()


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("end", ["", "\n", "\n\n"], ids=["no-final-newline", "final-newline", "trailing-empty-line"])
def test_line_endings_and_trailing_lines(tmp_path, newline, end):
    reference = read_mtl_annotations(write_file(tmp_path / "ref.txt", LINES))
    table = read_mtl_annotations(write_file(tmp_path / "a.txt", LINES, newline=newline, end=end))
    pd.testing.assert_frame_equal(table, reference)


def test_round_trip_and_written_format(tmp_path):
    table = read_mtl_annotations(write_file(tmp_path / "a.txt", LINES))
    out = write_mtl_annotations(table, tmp_path / "out" / "b.txt")
    pd.testing.assert_frame_equal(read_mtl_annotations(out), table)
    raw = out.read_bytes().decode()
    assert "\r" not in raw and raw.endswith("\n")
    lines = raw.split("\n")
    assert lines[0] == MTL_HEADER
    assert lines[1] == "341/00001.jpg,-0.0023,0,7,0,0,0,0,0,0,1,0,0,0,1,0"
    assert lines[2] == "341/00002.jpg,0.5,-1,0,1,1,1,1,1,1,1,1,1,1,1,1"
    assert lines[3] == "video45_1/00012.jpg,-5,-5,-1," + NO_AU
    assert lines[4].split(",")[1:3] == ["1", "0.1234567"]  # more than 4 decimals: kept exactly
    assert sorted(p.name for p in out.parent.iterdir()) == ["b.txt"]  # no temporary file left


def test_round_trip_of_a_filtered_random_table(tmp_path):
    rng = np.random.default_rng(0)
    n = 500
    lines = []
    for i in range(n):
        va = "-5,-5" if i % 7 == 0 else f"{rng.uniform(-1, 1)},{rng.uniform(-1, 1):.3f}"
        aus = NO_AU if i % 5 == 0 else ",".join(map(str, rng.integers(0, 2, 12)))
        lines.append(f"vid{i % 3}/{i:05d}.jpg,{va},{rng.integers(-1, 8)},{aus}")
    table = read_mtl_annotations(write_file(tmp_path / "a.txt", lines))
    subset = table[table["has_expr"]]  # a non-contiguous index must not matter
    back = read_mtl_annotations(write_mtl_annotations(subset, tmp_path / "b.txt"))
    pd.testing.assert_frame_equal(back, subset.reset_index(drop=True))


def test_header_only_gives_an_empty_typed_table(tmp_path):
    reference = read_mtl_annotations(write_file(tmp_path / "ref.txt", LINES))
    for end in ("", "\n"):
        table = read_mtl_annotations(write_file(tmp_path / "h.txt", [], end=end))
        assert len(table) == 0 and tuple(table.columns) == TABLE_COLUMNS
        pd.testing.assert_series_equal(table.dtypes, reference.dtypes)
    empty = read_mtl_annotations(write_mtl_annotations(reference.iloc[:0], tmp_path / "e.txt"))
    pd.testing.assert_frame_equal(empty, table)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        read_mtl_annotations(tmp_path / "nowhere.txt")


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n\r\n"], ids=["zero-bytes", "LF", "CRLF"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "training_set_annotations.txt"
    path.write_bytes(content)
    with pytest.raises(AnnotationError, match="empty file") as info:
        read_mtl_annotations(path)
    assert info.value.line == 1 and info.value.path == path


GOOD = "v/00009.jpg,0.1,0.2,3,0,1,0,1,0,1,0,1,0,1,0,1"
BAD_LINES = {  # name: (bad line, phrase expected in the message)
    "15-fields": ("v/00009.jpg,0.1,0.2,3,0,1,0,1,0,1,0,1,0,1,0", "expected 16 comma-separated fields, got 15"),
    "17-fields": (GOOD + ",1", "expected 16 comma-separated fields, got 17"),
    "one-field": ("v/00009.jpg", "expected 16 comma-separated fields, got 1"),
    "text-valence": ("v/00009.jpg,abc,0.2,3,0,1,0,1,0,1,0,1,0,1,0,1", "valence is not a number: 'abc'"),
    "nan-arousal": ("v/00009.jpg,0.1,nan,3,0,1,0,1,0,1,0,1,0,1,0,1", "arousal is not a number: 'nan'"),
    "empty-AU4": ("v/00009.jpg,0.1,0.2,3,0,1,,1,0,1,0,1,0,1,0,1", "AU4 is empty"),
    "text-expression": ("v/00009.jpg,0.1,0.2,happy,0,1,0,1,0,1,0,1,0,1,0,1", "expression is not a number: 'happy'"),
    "expression-8": ("v/00009.jpg,0.1,0.2,8,0,1,0,1,0,1,0,1,0,1,0,1", "expression must be an integer in -1..7"),
    "expression-minus-2": ("v/00009.jpg,0.1,0.2,-2,0,1,0,1,0,1,0,1,0,1,0,1", "in -1..7 (-1 = missing), got -2"),
    "expression-fraction": ("v/00009.jpg,0.1,0.2,2.5,0,1,0,1,0,1,0,1,0,1,0,1", "expression must be an integer"),
    "AU6-is-2": ("v/00009.jpg,0.1,0.2,3,0,1,0,2,0,1,0,1,0,1,0,1", "AU6 must be 0, 1 or -1 (missing), got 2"),
    "AU26-is-0.5": ("v/00009.jpg,0.1,0.2,3,0,1,0,1,0,1,0,1,0,1,0,0.5", "AU26 must be 0, 1 or -1"),
    "valence-1.5": ("v/00009.jpg,1.5,0.2,3,0,1,0,1,0,1,0,1,0,1,0,1", "valence must be in [-1, 1] or exactly -5"),
    "arousal-minus-1.01": ("v/00009.jpg,0.1,-1.01,3,0,1,0,1,0,1,0,1,0,1,0,1", "arousal must be in [-1, 1]"),
    "arousal-minus-4": ("v/00009.jpg,-5,-4,3,0,1,0,1,0,1,0,1,0,1,0,1", "arousal must be in [-1, 1] or exactly -5"),
    "valence-inf": ("v/00009.jpg,inf,0.2,3,0,1,0,1,0,1,0,1,0,1,0,1", "valence must be in [-1, 1]"),
    "valence-only-missing": ("v/00009.jpg,-5,0.3,3,0,1,0,1,0,1,0,1,0,1,0,1",
                             "valence is -5 (missing) but arousal is 0.3: both must be -5 or neither"),
    "arousal-only-missing": ("v/00009.jpg,0.3,-5,3,0,1,0,1,0,1,0,1,0,1,0,1", "arousal is -5 (missing) but valence"),
    "AUs-partly-missing": ("v/00009.jpg,0.1,0.2,3,-1,-1,0,1,0,1,0,1,0,1,0,1", "AUs partly missing (AU1, AU2"),
    "image-png": ("v/00009.png,0.1,0.2,3,0,1,0,1,0,1,0,1,0,1,0,1", "is not of the form <video>/<digits>.jpg"),
    "image-no-video": ("00009.jpg,0.1,0.2,3,0,1,0,1,0,1,0,1,0,1,0,1", "image name '00009.jpg' is not of the form"),
    "image-nested": ("a/v/00009.jpg,0.1,0.2,3,0,1,0,1,0,1,0,1,0,1,0,1", "is not of the form"),
    "image-letters": ("v/0000a.jpg,0.1,0.2,3,0,1,0,1,0,1,0,1,0,1,0,1", "is not of the form"),
    "duplicate": ("v/00002.jpg,0.1,0.2,3,0,1,0,1,0,1,0,1,0,1,0,1", "duplicate image 'v/00002.jpg' (first on line 3)"),
    "blank-line": ("", "blank line"),
    "spaces-line": ("   ", "blank line"),
}


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("case", list(BAD_LINES))
def test_malformed_line_names_file_line_and_problem(tmp_path, case, newline):
    bad, phrase = BAD_LINES[case]
    good = [f"v/{i:05d}.jpg,0.1,0.2,3,0,1,0,1,0,1,0,1,0,1,0,1" for i in range(1, 6)]
    lines = good[:3] + [bad] + good[3:]  # the bad line is line 5 of the file (header = line 1)
    path = write_file(tmp_path / "training_set_annotations.txt", lines, newline=newline)
    with pytest.raises(AnnotationError) as info:
        read_mtl_annotations(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.line == 5 and err.path == path
    assert str(err).startswith(f"{path} line 5: ") and phrase in str(err)


def test_carriage_return_line_endings_are_refused(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(("\n".join([MTL_HEADER, *LINES[:2]]) + "\r" + LINES[2] + "\n").encode())
    with pytest.raises(AnnotationError, match=r"a.txt line 3: stray carriage return") as info:
        read_mtl_annotations(path)
    assert info.value.line == 3
    path.write_bytes("\r".join([MTL_HEADER, *LINES]).encode())  # classic Mac: must not read as header-only
    with pytest.raises(AnnotationError, match="line 1: stray carriage return"):
        read_mtl_annotations(path)


def test_header_that_looks_like_data_is_refused(tmp_path):
    path = write_file(tmp_path / "a.txt", LINES[1:], header=LINES[0])
    with pytest.raises(AnnotationError, match="a.txt line 1: looks like data, not a header") as info:
        read_mtl_annotations(path)
    assert info.value.line == 1


@pytest.mark.parametrize("first, second, line, phrase", [
    ("v/00002.jpg,abc,0,0," + NO_AU, "v/00004.jpg,2,0,0," + NO_AU, 3, "valence is not a number"),
    ("v/00002.jpg,2,0,0," + NO_AU, "v/00004.jpg,abc,0,0," + NO_AU, 3, "valence must be in"),
    ("v/00002.jpg,0,0,9," + NO_AU, "v/00004.jpg,-5,0,0," + NO_AU, 3, "expression must be"),
    ("v/00002.jpg,-5,0,0," + NO_AU, "v/00004.jpg,0,0,9," + NO_AU, 3, "valence is -5 (missing)"),
])
def test_the_earliest_bad_line_is_reported(tmp_path, first, second, line, phrase):
    lines = ["v/00001.jpg,0,0,0," + NO_AU, first, "v/00003.jpg,0,0,0," + NO_AU, second]
    with pytest.raises(AnnotationError, match=None) as info:
        read_mtl_annotations(write_file(tmp_path / "a.txt", lines))
    assert info.value.line == line and phrase in str(info.value)


def test_writer_refuses_what_the_reader_would_refuse(tmp_path):
    table = read_mtl_annotations(write_file(tmp_path / "a.txt", LINES))
    bad = table.copy()
    bad.loc[1, "expression"] = 9
    with pytest.raises(ValueError, match=r"row 1: expression must be an integer in -1\.\.7"):
        write_mtl_annotations(bad, tmp_path / "b.txt")
    bad = table.copy()
    bad.loc[3, "image"] = bad.loc[0, "image"]
    with pytest.raises(ValueError, match=r"row 3: duplicate image '341/00001.jpg' \(first on row 0\)"):
        write_mtl_annotations(bad, tmp_path / "b.txt")
    with pytest.raises(ValueError, match="lacks the columns"):
        write_mtl_annotations(table.drop(columns=["AU4"]), tmp_path / "b.txt")
    assert not (tmp_path / "b.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


# --------------------------------------------------------------------------- per-task release


def per_task_tree(root, expr_folder="EXPR_Recognition_Challenge"):
    """AU covers vidA frames 1-3 and vidB 1-2; EXPR vidA 1-4 and vidC 1; VA vidB 1-3 (CRLF)."""
    au_header = ",".join(AU_NAMES)
    files = {
        "AU_Detection_Challenge/Train_Set/vidA.txt": (au_header, ["1,0,0,0,0,0,0,0,0,0,0,0", NO_AU,
                                                                  "0,1,0,0,0,0,0,0,0,0,0,1"]),
        "AU_Detection_Challenge/Train_Set/vidB.txt": (au_header, ["0,0,1,0,0,0,0,0,0,0,0,0"] * 2),
        f"{expr_folder}/Train_Set/vidA.txt": (",".join(EXPR_NAMES), ["0", "-1", "4", "7"]),
        f"{expr_folder}/Train_Set/vidC.txt": (",".join(EXPR_NAMES), ["2"]),
        "VA_Estimation_Challenge/Train_Set/vidB.txt": ("valence,arousal", ["0.5,-0.25", "-5,-5", "0,1"]),
        "VA_Estimation_Challenge/Validation_Set/vidZ.txt": ("valence,arousal", ["0.1,0.1"]),
        "AU_Detection_Challenge/Validation_Set/vidZ.txt": (au_header, [NO_AU, "0,0,0,0,0,0,0,0,0,0,0,0"]),
        f"{expr_folder}/Validation_Set/vidY.txt": (",".join(EXPR_NAMES), ["1"]),
    }
    for name, (header, lines) in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, lines, header=header, newline="\r\n" if "VA_" in name else "\n")
    return root


@pytest.mark.parametrize("expr_folder", ["EXPR_Recognition_Challenge", "EXPR_Classification_Challenge"])
def test_per_task_merge(tmp_path, expr_folder):
    table = read_per_task_annotations(per_task_tree(tmp_path, expr_folder), "train")
    assert tuple(table.columns) == TABLE_COLUMNS
    assert table["image"].tolist() == ["vidA/00001.jpg", "vidA/00002.jpg", "vidA/00003.jpg", "vidA/00004.jpg",
                                       "vidB/00001.jpg", "vidB/00002.jpg", "vidB/00003.jpg", "vidC/00001.jpg"]
    assert table["video"].tolist() == ["vidA"] * 4 + ["vidB"] * 3 + ["vidC"]
    assert table["frame"].tolist() == [1, 2, 3, 4, 1, 2, 3, 1]
    assert table["expression"].tolist() == [0, -1, 4, 7, -1, -1, -1, 2]
    assert table["has_expr"].tolist() == [True, False, True, True, False, False, False, True]
    assert table["has_au"].tolist() == [True, False, True, False, True, True, False, False]
    assert table["AU1"].tolist() == [1, -1, 0, -1, 0, 0, -1, -1]
    assert table["AU26"].tolist() == [0, -1, 1, -1, 0, 0, -1, -1]
    assert table["valence"].tolist() == [-5, -5, -5, -5, 0.5, -5, 0, -5]
    assert table["arousal"].tolist() == [-5, -5, -5, -5, -0.25, -5, 1, -5]
    assert table["has_va"].tolist() == [False] * 4 + [True, False, True, False]
    reference = read_mtl_annotations(write_file(tmp_path / "ref.txt", LINES))
    pd.testing.assert_series_equal(table.dtypes, reference.dtypes)
    pd.testing.assert_frame_equal(read_mtl_annotations(write_mtl_annotations(table, tmp_path / "m.txt")), table)

    val = read_per_task_annotations(tmp_path, "validation")
    assert val["image"].tolist() == ["vidY/00001.jpg", "vidZ/00001.jpg", "vidZ/00002.jpg"]
    assert val["has_au"].tolist() == [False, False, True]
    assert val["has_va"].tolist() == [False, True, False]
    assert val["expression"].tolist() == [1, -1, -1]


def test_per_task_absent_tasks_and_errors(tmp_path):
    per_task_tree(tmp_path)
    shutil.rmtree(tmp_path / "AU_Detection_Challenge")
    shutil.rmtree(tmp_path / "VA_Estimation_Challenge")
    table = read_per_task_annotations(tmp_path, "train")
    assert table["image"].tolist() == ["vidA/00001.jpg", "vidA/00002.jpg", "vidA/00003.jpg", "vidA/00004.jpg",
                                       "vidC/00001.jpg"]
    assert not table["has_au"].any() and not table["has_va"].any() and (table[list(AU_NAMES)] == -1).all().all()
    with pytest.raises(ValueError, match="unknown split 'test'"):
        read_per_task_annotations(tmp_path, "test")
    (tmp_path / "EXPR_Classification_Challenge").mkdir()
    with pytest.raises(ValueError, match="keep only one"):
        read_per_task_annotations(tmp_path, "train")
    (tmp_path / "EXPR_Classification_Challenge").rmdir()
    shutil.rmtree(tmp_path / "EXPR_Recognition_Challenge" / "Validation_Set")
    with pytest.raises(FileNotFoundError, match="Validation_Set"):
        read_per_task_annotations(tmp_path, "validation")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no per-task annotation folder") as info:
        read_per_task_annotations(empty, "train")
    assert str(empty) in str(info.value)


@pytest.mark.parametrize("file, lines, line, phrase", [
    ("VA_Estimation_Challenge/Train_Set/vidB.txt", ["0.5,-0.25", "0.1,2"], 3, "arousal must be in [-1, 1]"),
    ("VA_Estimation_Challenge/Train_Set/vidB.txt", ["0.5,-0.25", "-5,0.1"], 3, "valence is -5 (missing) but"),
    ("VA_Estimation_Challenge/Train_Set/vidB.txt", ["0.5"], 2, "expected 2 comma-separated fields, got 1"),
    ("EXPR_Recognition_Challenge/Train_Set/vidA.txt", ["0", "1,2"], 3, "expected 1 comma-separated field, got 2"),
    ("EXPR_Recognition_Challenge/Train_Set/vidA.txt", ["0", "", "1"], 3, "blank line"),
    ("EXPR_Recognition_Challenge/Train_Set/vidA.txt", ["0", "1", "8"], 4, "expression must be an integer"),
    ("AU_Detection_Challenge/Train_Set/vidB.txt", ["0,0,0,0,0,0,0,0,0,0,0,-1"], 2, "AUs partly missing (AU26"),
    ("AU_Detection_Challenge/Train_Set/vidB.txt", ["0,0,0,0,0,0,0,0,0,0,0,x"], 2, "AU26 is not a number: 'x'"),
])
def test_per_task_errors_name_the_file_and_line(tmp_path, file, lines, line, phrase):
    per_task_tree(tmp_path)
    path = tmp_path / file
    header = path.read_text().splitlines()[0]
    write_file(path, lines, header=header, newline="\r\n")
    with pytest.raises(AnnotationError) as info:
        read_per_task_annotations(tmp_path, "train")
    assert info.value.path == path and info.value.line == line
    assert f"{path} line {line}: {phrase}" in str(info.value)


# --------------------------------------------------------------------------- datasets over real JPEGs

VIDEOS = {"v0": 5, "v1": 7, "v2": 2}


def colours(video: str, frame: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The left-half and right-half RGB colours of frame ``frame`` of ``video``."""
    v = int(video[1:])
    return (40 * v + 20, 25 * frame, 200), (200, 100, 20 * frame + 10)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/cropped_aligned/<video>/<NNNNN>.jpg (32x32) plus its table, rows in a scrambled order."""
    root = tmp_path_factory.mktemp("frames")
    lines = []
    for video, n in VIDEOS.items():
        (root / "cropped_aligned" / video).mkdir(parents=True)
        for f in range(1, n + 1):
            left, right = colours(video, f)
            pixels = np.zeros((32, 32, 3), np.uint8)
            pixels[:, :16], pixels[:, 16:] = left, right
            Image.fromarray(pixels).save(root / "cropped_aligned" / video / f"{f:05d}.jpg", quality=95, subsampling=0)
            va = "-5,-5" if f == 2 else f"{f / 10},{-int(video[1:]) / 10}"
            aus = NO_AU if f == 3 else ",".join(str((f + k) % 2) for k in range(12))
            lines.append(f"{video}/{f:05d}.jpg,{va},{f % 8 if f != 4 else -1},{aus}")
    order = np.random.default_rng(1).permutation(len(lines))
    path = write_file(root / "training_set_annotations.txt", [lines[i] for i in order])
    return root, read_mtl_annotations(path)


def assert_frame_image(image: torch.Tensor, video: str, frame: int, flipped: bool = False) -> None:
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert 0 <= image.min() and image.max() <= 1
    left, right = colours(video, frame)
    if flipped:
        left, right = right, left
    got_left = image[:, :, :16].mean(dim=(1, 2)) * 255
    got_right = image[:, :, 16:].mean(dim=(1, 2)) * 255
    assert torch.allclose(got_left, torch.tensor(left, dtype=torch.float32), atol=3), (video, frame, got_left)
    assert torch.allclose(got_right, torch.tensor(right, dtype=torch.float32), atol=3), (video, frame, got_right)


def test_frame_dataset_returns_the_right_frame_and_labels(tree):
    root, table = tree
    ds = FrameDataset(table, root)
    assert len(ds) == sum(VIDEOS.values())
    for i in range(len(ds)):
        item = ds[i]
        row = table.iloc[i]
        assert_frame_image(item["image"], row["video"], row["frame"])
        assert item["index"] == i
        assert item["va"].dtype == torch.float32 and item["va"].shape == (2,)
        assert item["va"].tolist() == [row["valence"], row["arousal"]]
        assert item["expr"].dtype == torch.int64 and item["expr"].shape == () and item["expr"] == row["expression"]
        assert item["au"].dtype == torch.float32 and item["au"].tolist() == row[list(AU_NAMES)].tolist()
        for key in ("has_va", "has_expr", "has_au"):
            assert item[key].dtype == torch.bool and item[key].shape == () and bool(item[key]) == row[key]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_frame_dataset_preload_equals_lazy_and_batches(tree):
    root, table = tree
    lazy, preloaded = FrameDataset(table, root), FrameDataset(table, root, preload=True)
    assert preloaded.frames.data.shape == (len(table), 3, 32, 32) and preloaded.frames.data.dtype == torch.uint8
    for i in range(len(lazy)):
        a, b = lazy[i], preloaded[i]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    batch = next(iter(DataLoader(preloaded, batch_size=4, shuffle=False)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["au"].shape == (4, 12) and batch["expr"].shape == (4,) and batch["has_au"].dtype == torch.bool


def test_frame_dataset_applies_v2_transforms(tree):
    root, table = tree
    flipped = FrameDataset(table, root, transform=v2.RandomHorizontalFlip(p=1))
    for i in (0, 5):
        assert_frame_image(flipped[i]["image"], table["video"].iloc[i], table["frame"].iloc[i], flipped=True)
    resized = FrameDataset(table, root, transform=v2.Resize((16, 8)), preload=True)
    image = resized[0]["image"]
    assert image.shape == (3, 16, 8) and image.dtype == torch.float32 and image.max() <= 1
    normalised = FrameDataset(table, root, transform=v2.Compose([
        v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]))
    plain = FrameDataset(table, root)
    assert torch.allclose(normalised[0]["image"], plain[0]["image"] * 2 - 1, atol=1e-6)


@pytest.mark.parametrize("dataset", ["frame", "sequence"])
def test_missing_frame_raises_naming_it(tree, dataset):
    root, table = tree
    extra = table.iloc[[0, 0]].copy()
    extra["image"] = ["v1/00099.jpg", "v1/00098.jpg"]
    extra["frame"] = [99, 98]
    bigger = pd.concat([table, extra], ignore_index=True)
    assert frames_exist(bigger, root).tolist() == [True] * len(table) + [False, False]
    make = (lambda: FrameDataset(bigger, root)) if dataset == "frame" else (lambda: SequenceDataset(bigger, root, 3))
    with pytest.raises(FileNotFoundError, match=r"2 of 16 frames are missing, the first is v1/00099.jpg") as info:
        make()
    assert info.value.filename == str(root / "cropped_aligned" / "v1" / "00099.jpg")
    with pytest.raises(FileNotFoundError, match="16 of 16 frames are missing"):
        FrameDataset(bigger, root / "cropped_aligned")


def check_windows(ds: SequenceDataset, table: pd.DataFrame) -> None:
    """Every window: one video, consecutive frames in order, images and labels of the rows it names."""
    for i, window in enumerate(ds.windows):
        item = ds[i]
        rows = item["indices"].numpy()
        assert np.array_equal(rows, window.rows) and np.array_equal(item["valid"].numpy(), window.valid)
        frames = table["frame"].to_numpy()[rows]
        assert set(table["video"].to_numpy()[rows]) == {window.video}
        real = window.valid.sum()
        assert np.array_equal(frames[:real], np.arange(frames[0], frames[0] + real))
        assert (frames[real:] == frames[real - 1]).all()  # padding repeats the last real frame
        assert item["image"].shape == (ds.window, 3, 32, 32)
        for t, row in enumerate(rows):
            assert_frame_image(item["image"][t], window.video, frames[t])
            assert item["expr"][t] == table["expression"].iloc[row]
            assert bool(item["has_au"][t]) == (bool(table["has_au"].iloc[row]) and window.valid[t])


@pytest.mark.parametrize("window, stride, pad, starts", [
    (3, 1, False, {"v0": [1, 2, 3], "v1": [1, 2, 3, 4, 5]}),
    (3, 2, False, {"v0": [1, 3], "v1": [1, 3, 5]}),
    (3, 2, True, {"v0": [1, 3, 5], "v1": [1, 3, 5, 7], "v2": [1]}),
    (4, 4, True, {"v0": [1, 5], "v1": [1, 5], "v2": [1]}),
    (4, 1, True, {"v0": [1, 2, 3], "v1": [1, 2, 3, 4, 5], "v2": [1]}),  # only the first partial window
    (7, 1, False, {"v1": [1]}),
    (8, 1, False, {}),
    (1, 1, False, {v: list(range(1, n + 1)) for v, n in VIDEOS.items()}),
])
def test_sequence_windows(tree, window, stride, pad, starts):
    root, table = tree
    ds = SequenceDataset(table, root, window=window, stride=stride, pad=pad)
    got: dict[str, list[int]] = {}
    for w in ds.windows:
        got.setdefault(w.video, []).append(int(table["frame"].iloc[w.rows[0]]))
    assert {v: sorted(s) for v, s in got.items()} == starts
    assert len(ds) == sum(map(len, starts.values()))
    check_windows(ds, table)


@pytest.mark.parametrize("window, stride, pad, starts", [
    (3, 1, False, [1, 2, 3]),  # runs 1-5 and 9-10: the second is shorter than a window
    (2, 1, False, [1, 2, 3, 4, 9]),
    (3, 3, True, [1, 4, 9]),  # each run tiled on its own; partial windows padded within their run
    (4, 1, True, [1, 2, 3, 9]),
])
def test_windows_never_join_frames_across_a_gap(tree, tmp_path, window, stride, pad, starts):
    root, table = tree
    v1 = table[table.video == "v1"].sort_values("frame").reset_index(drop=True)  # frames 1..7
    new_numbers = np.where(v1.frame > 5, v1.frame + 3, v1.frame)  # 6, 7 -> 9, 10: no face in 6-8
    (tmp_path / "cropped_aligned" / "v1").mkdir(parents=True)
    for old, new in zip(v1.frame, new_numbers):
        (tmp_path / "cropped_aligned" / "v1" / f"{new:05d}.jpg").write_bytes(
            (root / "cropped_aligned" / "v1" / f"{old:05d}.jpg").read_bytes())
    v1["frame"], v1["image"] = new_numbers, [f"v1/{f:05d}.jpg" for f in new_numbers]
    ds = SequenceDataset(v1, tmp_path, window=window, stride=stride, pad=pad)
    frames = ds.table["frame"].to_numpy()
    assert sorted(int(frames[w.rows[0]]) for w in ds.windows) == starts
    for w in ds.windows:
        real = frames[w.rows[w.valid]]
        assert np.array_equal(real, np.arange(real[0], real[0] + len(real)))  # consecutive: no gap inside
        assert (frames[w.rows[~w.valid]] == real[-1]).all()  # padding repeats the run's last frame
    if pad and stride <= window:
        covered = np.zeros(len(ds.table), bool)
        for w in ds.windows:
            covered[w.rows[w.valid]] = True
        assert covered.all()


def test_sequence_tiling_covers_every_frame_once_and_stitches_back(tree):
    root, table = tree
    ds = SequenceDataset(table, root, window=4, stride=4, pad=True)
    predictions = np.full(len(table), np.nan)
    seen = np.zeros(len(table), int)
    for batch in DataLoader(ds, batch_size=2):
        rows = batch["indices"][batch["valid"]].numpy()
        np.add.at(seen, rows, 1)
        predictions[rows] = batch["va"][batch["valid"]][:, 0].numpy()  # "predict" the label itself
    assert (seen == 1).all()
    np.testing.assert_array_equal(predictions, table["valence"].to_numpy())
    v2_window = ds[len(ds) - 1] if ds.windows[-1].video == "v2" else next(ds[i] for i, w in enumerate(ds.windows)
                                                                          if w.video == "v2")
    assert v2_window["valid"].tolist() == [True, True, False, False]
    assert not v2_window["has_va"][2:].any() and not v2_window["has_expr"][2:].any()


def test_sequence_preload_equals_lazy(tree):
    root, table = tree
    lazy = SequenceDataset(table, root, window=3, stride=2, pad=True)
    preloaded = SequenceDataset(table, root, window=3, stride=2, pad=True, preload=True)
    assert len(lazy) == len(preloaded)
    for i in range(len(lazy)):
        a, b = lazy[i], preloaded[i]
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key


def test_sequence_transform_is_the_same_for_every_frame(tree):
    root, table = tree
    ds = SequenceDataset(table, root, window=3, stride=1, transform=v2.RandomHorizontalFlip(p=0.5))
    plain = SequenceDataset(table, root, window=3, stride=1)
    torch.manual_seed(0)
    outcomes = set()
    for _ in range(4):
        for i in range(len(ds)):
            images, reference = ds[i]["image"], plain[i]["image"]
            flipped = [torch.equal(images[t], reference[t].flip(-1)) for t in range(3)]
            same = [torch.equal(images[t], reference[t]) for t in range(3)]
            assert all(flipped) or all(same), (i, flipped, same)
            outcomes.add(all(flipped))
    assert outcomes == {True, False}
    resized = SequenceDataset(table, root, window=2, stride=3, transform=v2.Resize((8, 8)), preload=True)
    assert resized[0]["image"].shape == (2, 3, 8, 8)


def test_sequence_rejects_bad_arguments(tree):
    root, table = tree
    with pytest.raises(ValueError, match="window and stride must be >= 1"):
        SequenceDataset(table, root, window=0)
    with pytest.raises(ValueError, match="lacks the columns"):
        SequenceDataset(table.drop(columns=["video"]), root, window=2)


# --------------------------------------------------------------------------- statistics


@pytest.fixture
def stats_table(tmp_path):
    #           AU order: 1 2 4 6 7 10 12 15 23 24 25 26
    lines = ["v/00001.jpg,0.1,0.1,0,1,1,0,0,0,0,0,0,0,0,1,0",
             "v/00002.jpg,-5,-5,0,1,0,1,0,0,0,0,0,0,0,1,0",
             "v/00003.jpg,0.2,0.2,4,0,1,0,0,0,0,0,0,0,0,1,0",
             "v/00004.jpg,0.3,0.3,-1," + NO_AU,
             "v/00005.jpg,0.4,0.4,7,0,0,0,0,0,0,0,0,0,0,1,0"]
    return read_mtl_annotations(write_file(tmp_path / "s.txt", lines))


def test_label_counts(stats_table):
    counts = label_counts(stats_table)
    assert counts["rows"] == 5
    assert counts["labelled"] == {"va": 4, "expr": 4, "au": 4}
    assert counts["expr_counts"] == dict(zip(EXPR_NAMES, [2, 0, 0, 0, 1, 0, 0, 1]))
    assert counts["au_positives"] == dict(zip(AU_NAMES, [2, 2, 1, 0, 0, 0, 0, 0, 0, 0, 4, 0]))


def test_expr_class_weights(stats_table):
    with pytest.warns(UserWarning, match="Anger, Disgust, Fear, Sadness, Surprise: weight 0"):
        weights = expr_class_weights(stats_table)
    # counts 2, 1, 1 -> 1/2, 1, 1 with mean 5/6 -> 0.6, 1.2, 1.2
    expected = np.array([0.6, 0, 0, 0, 1.2, 0, 0, 1.2], np.float32)
    assert weights.dtype == np.float32 and weights.shape == (8,)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    full = pd.concat([stats_table] * 2, ignore_index=True)
    full["expression"] = np.arange(10) % 8
    full["has_expr"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balanced = expr_class_weights(full)  # counts 2,2,1,1,1,1,1,1: inverse 1/2 twice, 1 six times
    np.testing.assert_allclose(balanced, np.array([0.5, 0.5, 1, 1, 1, 1, 1, 1]) / 0.875, rtol=1e-6)
    with pytest.raises(ValueError, match="no frame has an expression label"):
        expr_class_weights(stats_table.assign(has_expr=False))


def test_au_pos_weights(stats_table):
    weights = au_pos_weights(stats_table)
    # 4 labelled frames: AU1 2/2, AU2 2/2, AU4 3/1, never-present AUs -> 50, AU25 always present -> 1/50
    expected = np.array([1, 1, 3, 50, 50, 50, 50, 50, 50, 50, 1 / 50, 50], np.float32)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    np.testing.assert_allclose(au_pos_weights(stats_table, max_weight=2)[:4], [1, 1, 2, 2])
    with pytest.raises(ValueError, match="no frame has AU labels"):
        au_pos_weights(stats_table.assign(has_au=False))


def test_au_cooccurrence(stats_table):
    co = au_cooccurrence(stats_table)
    assert list(co.index) == list(AU_NAMES) and list(co.columns) == list(AU_NAMES)
    # present: AU1 in frames {1, 2}, AU2 in {1, 3}, AU4 in {2}, AU25 in {1, 2, 3, 5}
    expected = {
        "AU1": {"AU1": 1, "AU2": 0.5, "AU4": 0.5, "AU25": 1},
        "AU2": {"AU1": 0.5, "AU2": 1, "AU4": 0, "AU25": 1},
        "AU4": {"AU1": 1, "AU2": 0, "AU4": 1, "AU25": 1},
        "AU25": {"AU1": 0.5, "AU2": 0.5, "AU4": 0.25, "AU25": 1},
    }
    for given, row in expected.items():
        for present in AU_NAMES:
            assert co.loc[given, present] == pytest.approx(row.get(present, 0)), (given, present)
    never = [au for au in AU_NAMES if au not in expected]
    assert co.loc[never].isna().all().all()


def test_test_list_round_trip_and_errors_name_the_line(tmp_path):
    from course_lib.data.abaw import TEST_LIST_HEADER, read_test_list, write_test_list

    images = ["video5_1/00001.jpg", "video5_1/00002.jpg", "12/00010.jpg"]
    path = write_test_list(images, tmp_path / "test_set_images.txt")
    assert path.read_text().splitlines()[0] == TEST_LIST_HEADER
    table = read_test_list(path)
    assert table.image.tolist() == images and table.video.tolist() == ["video5_1", "video5_1", "12"]
    assert table.frame.tolist() == [1, 2, 10] and list(table.columns) == list(TABLE_COLUMNS)
    assert not table[["has_va", "has_expr", "has_au"]].to_numpy().any()
    assert (table.valence == -5).all() and (table.expression == -1).all() and (table.AU12 == -1).all()
    path.write_text(TEST_LIST_HEADER + "\n12/00001.jpg\n12/frame.png\n")
    with pytest.raises(AnnotationError, match=r"line 3: expected an image name"):
        read_test_list(path)
    path.write_text(TEST_LIST_HEADER + "\n12/00001.jpg\n13/00001.jpg\n12/00001.jpg\n")
    with pytest.raises(AnnotationError, match=r"line 4: image '12/00001.jpg' already listed on line 2"):
        read_test_list(path)
